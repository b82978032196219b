package appstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/postback/postback/config"
)

var testNow = time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

func p8(t *testing.T, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newClient(t *testing.T, endpoint string) (*Client, *ecdsa.PrivateKey) {
	t.Helper()
	k := newKey(t)
	c, err := New(config.AppleAPI{IssuerID: "issuer-1", KeyID: "KEY123", PrivateKey: p8(t, k), Endpoint: endpoint}, Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestToken(t *testing.T) {
	c, k := newClient(t, "")
	tok, err := c.Token("com.example.app")
	if err != nil {
		t.Fatal(err)
	}
	var claims tokenClaims
	parsed, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return &k.PublicKey, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(func() time.Time { return testNow }), jwt.WithAudience(Audience), jwt.WithIssuer("issuer-1"))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["kid"] != "KEY123" || parsed.Header["typ"] != "JWT" {
		t.Errorf("header %v", parsed.Header)
	}
	if claims.BundleID != "com.example.app" || !claims.IssuedAt.Time.Equal(testNow) || claims.ExpiresAt.Sub(testNow) != tokenLifetime {
		t.Errorf("claims %+v", claims)
	}
	if tokenLifetime > time.Hour {
		t.Error("Apple refuses tokens valid for more than 60 minutes")
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	good := p8(t, newKey(t))
	file := filepath.Join(dir, "AuthKey_KEY123.p8")
	if err := os.WriteFile(file, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		name, in string
		want     error
	}{
		{"PEM text", good, nil},
		{"file path", file, nil},
		{"missing file", filepath.Join(dir, "nope.p8"), os.ErrNotExist},
		{"not PEM", "-----BEGIN nothing", ErrKey},
		{"not PKCS #8", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", ErrKey},
		{"RSA key", p8(t, rk), ErrKey},
		{"P-384 key", p8(t, p384), ErrKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadKey(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "AAAA") {
				t.Errorf("key material in error: %v", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	key := p8(t, newKey(t))
	for _, cfg := range []config.AppleAPI{{KeyID: "k", PrivateKey: key}, {IssuerID: "i", PrivateKey: key}, {IssuerID: "i", KeyID: "k"}} {
		if _, err := New(cfg, Options{}); !errors.Is(err, ErrNotConfigured) {
			t.Errorf("New(%+v): %v, want ErrNotConfigured", cfg, err)
		}
	}
	if _, err := New(config.AppleAPI{IssuerID: "i", KeyID: "k", PrivateKey: "-----BEGIN x"}, Options{}); !errors.Is(err, ErrKey) {
		t.Errorf("bad key: %v", err)
	}
	c, err := New(config.AppleAPI{IssuerID: "i", KeyID: "k", PrivateKey: key}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for env, want := range map[string]string{"production": ProductionURL, "sandbox": SandboxURL} {
		if got, err := c.baseURL(env); err != nil || got != want {
			t.Errorf("baseURL(%s) = %s, %v", env, got, err)
		}
	}
	if _, err := c.baseURL("Xcode"); !errors.Is(err, ErrEnvironment) {
		t.Errorf("baseURL(Xcode): %v", err)
	}
	if _, err := c.NotificationHistory(context.Background(), "staging", "b", NotificationHistoryRequest{}, ""); !errors.Is(err, ErrEnvironment) {
		t.Errorf("NotificationHistory(staging): %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		code      int64
		retryable bool
	}{
		{"rate limited", 429, `{"errorCode":4290000,"errorMessage":"Rate limit exceeded."}`, 4290000, true},
		{"server error", 500, `oops`, 0, true},
		{"bad request", 400, `{"errorCode":4000012,"errorMessage":"Invalid request."}`, 4000012, false},
		{"unauthorized", 401, ``, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c, _ := newClient(t, srv.URL)
			_, err := c.TransactionHistory(context.Background(), "production", "b", "1", TransactionQuery{})
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code || ae.Retryable() != tc.retryable {
				t.Fatalf("err %#v", err)
			}
			if !strings.Contains(ae.Error(), fmt.Sprint(tc.status)) {
				t.Errorf("message %q", ae.Error())
			}
		})
	}
	t.Run("body not JSON", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<html>")) }))
		defer srv.Close()
		c, _ := newClient(t, srv.URL)
		if _, err := c.TransactionHistory(context.Background(), "production", "b", "1", TransactionQuery{}); err == nil || !strings.Contains(err.Error(), "decode") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		c, _ := newClient(t, srv.URL)
		if _, err := c.NotificationHistory(context.Background(), "production", "b", NotificationHistoryRequest{StartDate: 1, EndDate: 2}, ""); err == nil {
			t.Fatal("no error from a closed server")
		}
	})
}

func TestTransactionHistoryRequest(t *testing.T) {
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		_ = json.NewEncoder(w).Encode(TransactionHistoryPage{Revision: "rev-2", HasMore: true, SignedTransactions: []string{"a.b.c"}})
	}))
	defer srv.Close()
	c, _ := newClient(t, srv.URL+"/")
	page, err := c.TransactionHistory(context.Background(), "sandbox", "com.example.app", "2000/1", TransactionQuery{
		Revision: "rev-1", Sort: "DESCENDING", ProductTypes: []string{"AUTO_RENEWABLE", "NON_RENEWABLE"}, StartDate: 5, EndDate: 9,
	})
	if err != nil {
		t.Fatal(err)
	}
	if page.Revision != "rev-2" || !page.HasMore || len(page.SignedTransactions) != 1 {
		t.Errorf("page %+v", page)
	}
	if got.Method != http.MethodGet || got.URL.EscapedPath() != "/inApps/v2/history/2000%2F1" {
		t.Errorf("request %s %s", got.Method, got.URL.EscapedPath())
	}
	q := got.URL.Query()
	if q.Get("revision") != "rev-1" || q.Get("sort") != "DESCENDING" || len(q["productType"]) != 2 || q.Get("startDate") != "5" || q.Get("endDate") != "9" {
		t.Errorf("query %v", q)
	}
	if !strings.HasPrefix(got.Header.Get("Authorization"), "Bearer ey") {
		t.Errorf("authorization %q", got.Header.Get("Authorization"))
	}
}

// fakeHistory serves pages of notification history.
func fakeHistory(t *testing.T, pages [][]string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req NotificationHistoryRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request body: %v", err)
		}
		i := 0
		if tok := r.URL.Query().Get("paginationToken"); tok != "" {
			fmt.Sscanf(tok, "p%d", &i)
		}
		page := NotificationHistoryPage{HasMore: i+1 < len(pages)}
		for _, s := range pages[i] {
			page.NotificationHistory = append(page.NotificationHistory, NotificationHistoryItem{SignedPayload: s})
		}
		if page.HasMore {
			page.PaginationToken = fmt.Sprintf("p%d", i+1)
		}
		_ = json.NewEncoder(w).Encode(page)
	}))
}

func TestBackfill(t *testing.T) {
	srv := fakeHistory(t, [][]string{{"new-1", "dup-1", ""}, {"bad-1", "new-2"}})
	defer srv.Close()
	c, _ := newClient(t, srv.URL)
	var seen []string
	recv := func(_ context.Context, s string) (Outcome, error) {
		seen = append(seen, s)
		switch {
		case strings.HasPrefix(s, "new"):
			return OutcomeNew, nil
		case strings.HasPrefix(s, "dup"):
			return OutcomeDuplicate, nil
		}
		return OutcomeRejected, nil
	}
	since := testNow.Add(-24 * time.Hour)
	res, err := Backfill(context.Background(), c, "production", "b", since, testNow, recv)
	if err != nil {
		t.Fatal(err)
	}
	want := BackfillResult{Fetched: 4, New: 2, Duplicates: 1, Rejected: 1, Pages: 2}
	if res != want || len(seen) != 4 {
		t.Errorf("result %+v (seen %v), want %+v", res, seen, want)
	}
	if _, err := Backfill(context.Background(), c, "production", "b", testNow, testNow, recv); !errors.Is(err, ErrRange) {
		t.Errorf("empty window: %v", err)
	}
	stop := errors.New("store down")
	if _, err := Backfill(context.Background(), c, "production", "b", since, testNow, func(context.Context, string) (Outcome, error) { return OutcomeRejected, stop }); !errors.Is(err, stop) {
		t.Errorf("receiver failure: %v", err)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer down.Close()
	cd, _ := newClient(t, down.URL)
	var ae *APIError
	if _, err := Backfill(context.Background(), cd, "production", "b", since, testNow, recv); !errors.As(err, &ae) || !ae.Retryable() {
		t.Errorf("API down: %v", err)
	}
}
