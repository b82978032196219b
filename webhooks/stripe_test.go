package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/store"
)

// fakeIngester records what would be stored.
type fakeIngester struct {
	mu   sync.Mutex
	got  []*mapping.Notification
	err  error
	seen map[string]bool
}

func (f *fakeIngester) Ingest(_ context.Context, n *mapping.Notification) (store.IngestResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return store.IngestResult{}, f.err
	}
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	if f.seen[n.Key] {
		return store.IngestResult{Duplicate: true, Existing: n, Status: mapping.StatusMapped}, nil
	}
	f.seen[n.Key] = true
	cp := *n
	f.got = append(f.got, &cp)
	return store.IngestResult{Status: mapping.StatusMapped}, nil
}

func (f *fakeIngester) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

var testNow = time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

func testDeps(st Ingester, logs io.Writer) Deps {
	if logs == nil {
		logs = io.Discard
	}
	return Deps{
		Store:   st,
		Metrics: metrics.New(),
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
		Now:     func() time.Time { return testNow },
		MaxBody: 64 << 10,
	}
}

const (
	secretA = "whsec_test_secret_aaaaaaaaaaaaaaaaaaaa"
	secretB = "whsec_test_secret_bbbbbbbbbbbbbbbbbbbb"
)

func stripeBody(id string, livemode bool, apiVersion string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","api_version":%q,"created":1764471600,"livemode":%t,"type":"customer.subscription.created","data":{"object":{"id":"sub_1","object":"subscription","status":"trialing","customer":"cus_1","customer_email":"Someone@Example.com","items":{"data":[]}}}}`, id, apiVersion, livemode))
}

func sign(body []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: at}).Header
}

// upperHex upper-cases the v1= values of a Stripe-Signature header.
func upperHex(header string) string {
	parts := strings.Split(header, ",")
	for i, p := range parts {
		if v, ok := strings.CutPrefix(p, "v1="); ok {
			parts[i] = "v1=" + strings.ToUpper(v)
		}
	}
	return strings.Join(parts, ",")
}

// post sends a request through a real echo instance with the server's error
// shape, so status codes are what a client sees.
func post(t *testing.T, h echo.HandlerFunc, body []byte, headers map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		we := AsError(err)
		_ = c.JSON(we.Status, map[string]any{"error": map[string]string{"code": we.Code, "message": we.Message}})
	}
	e.POST("/hook", h)
	req := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func errCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var b struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("error body is not JSON: %q", rec.Body.String())
	}
	return b.Error.Code
}

func TestStripeSignatures(t *testing.T) {
	body := stripeBody("evt_1", true, "2023-10-16")
	tampered := bytes.Replace(body, []byte(`"trialing"`), []byte(`"active"`), 1)
	tests := []struct {
		name     string
		body     []byte
		header   string
		secrets  []string
		status   int
		code     string
		accepted bool
	}{
		{name: "valid", body: body, header: sign(body, secretA, testNow), secrets: []string{secretA}, status: 200, accepted: true},
		{name: "second secret during rotation", body: body, header: sign(body, secretB, testNow), secrets: []string{secretA, secretB}, status: 200, accepted: true},
		{name: "tampered body", body: tampered, header: sign(body, secretA, testNow), secrets: []string{secretA}, status: 400, code: CodeSignature},
		{name: "wrong secret", body: body, header: sign(body, secretB, testNow), secrets: []string{secretA}, status: 400, code: CodeSignature},
		{name: "stale timestamp", body: body, header: sign(body, secretA, testNow.Add(-6*time.Minute)), secrets: []string{secretA}, status: 400, code: CodeStale},
		{name: "future timestamp", body: body, header: sign(body, secretA, testNow.Add(6*time.Minute)), secrets: []string{secretA}, status: 400, code: CodeStale},
		{name: "within tolerance", body: body, header: sign(body, secretA, testNow.Add(-4*time.Minute)), secrets: []string{secretA}, status: 200, accepted: true},
		{name: "missing header", body: body, header: "", secrets: []string{secretA}, status: 400, code: CodeUnauthorized},
		{name: "garbled header", body: body, header: "t=abc,v1=zz", secrets: []string{secretA}, status: 400, code: CodeUnauthorized},
		{name: "header without t", body: body, header: "v1=" + strings.Repeat("a", 64), secrets: []string{secretA}, status: 400, code: CodeUnauthorized},
		// A captured old header with a fresh t= put in front: stripe-go
		// checks the signature against the last t=, so two are refused.
		{name: "second timestamp replays an old signature", body: body, header: fmt.Sprintf("t=%d,", testNow.Unix()) + sign(body, secretA, testNow.Add(-time.Hour)), secrets: []string{secretA}, status: 400, code: CodeUnauthorized},
		{name: "two timestamps both fresh", body: body, header: sign(body, secretA, testNow) + fmt.Sprintf(",t=%d", testNow.Unix()), secrets: []string{secretA}, status: 400, code: CodeUnauthorized},
		{name: "upper-case hex is the same signature", body: body, header: upperHex(sign(body, secretA, testNow)), secrets: []string{secretA}, status: 200, accepted: true},
		{name: "header with spaces", body: body, header: strings.Replace(sign(body, secretA, testNow), ",", ", ", 1), secrets: []string{secretA}, status: 400, code: CodeSignature},
		{name: "signed but not an event", body: []byte(`{"hello":1}`), header: sign([]byte(`{"hello":1}`), secretA, testNow), secrets: []string{secretA}, status: 400, code: CodeMalformed},
		{name: "signed but not JSON", body: []byte(`not json`), header: sign([]byte(`not json`), secretA, testNow), secrets: []string{secretA}, status: 400, code: CodeMalformed},
		{name: "newer API version accepted", body: stripeBody("evt_2", true, "2025-03-31.basil"), header: sign(stripeBody("evt_2", true, "2025-03-31.basil"), secretA, testNow), secrets: []string{secretA}, status: 200, accepted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeIngester{}
			s := &Stripe{Deps: testDeps(st, nil), Secrets: tt.secrets, Tolerance: 5 * time.Minute, AppID: "com.example.app"}
			rec := post(t, s.Handle, tt.body, map[string]string{"Stripe-Signature": tt.header})
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.status, rec.Body)
			}
			if tt.code != "" {
				if got := errCode(t, rec); got != tt.code {
					t.Errorf("code = %q, want %q", got, tt.code)
				}
			}
			if got, want := st.count(), map[bool]int{true: 1, false: 0}[tt.accepted]; got != want {
				t.Errorf("stored %d notifications, want %d", got, want)
			}
		})
	}
}

func TestStripeNotification(t *testing.T) {
	st := &fakeIngester{}
	s := &Stripe{Deps: testDeps(st, nil), Secrets: []string{secretA}, AppID: "com.example.app"}
	body := stripeBody("evt_sandbox", false, "2023-10-16")
	rec := post(t, s.Handle, body, map[string]string{"Stripe-Signature": sign(body, secretA, testNow)})
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	n := st.got[0]
	if n.Source != "stripe" || n.Key != "evt_sandbox" || n.Type != "customer.subscription.created" || n.Environment != mapping.Sandbox || n.AppID != "com.example.app" {
		t.Errorf("notification = %+v", n)
	}
	if bytes.Contains(n.Body, []byte("Someone@Example.com")) || !bytes.Contains(n.Body, []byte(mapping.SHA256Hex("someone@example.com"))) {
		t.Errorf("raw email reached the store: %s", n.Body)
	}
	// A retry of the same event is acknowledged as a duplicate.
	rec = post(t, s.Handle, body, map[string]string{"Stripe-Signature": sign(body, secretA, testNow)})
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"duplicate"`) {
		t.Errorf("retry: %d %s", rec.Code, rec.Body)
	}
}

func TestStripeStoreFailureIs503(t *testing.T) {
	var logs bytes.Buffer
	st := &fakeIngester{err: errors.New("disk full")}
	s := &Stripe{Deps: testDeps(st, &logs), Secrets: []string{secretA}}
	body := stripeBody("evt_1", true, "2023-10-16")
	rec := post(t, s.Handle, body, map[string]string{"Stripe-Signature": sign(body, secretA, testNow)})
	if rec.Code != http.StatusServiceUnavailable || errCode(t, rec) != CodeUnavailable {
		t.Fatalf("status %d body %s, want 503 store_unavailable", rec.Code, rec.Body)
	}
	if strings.Contains(logs.String(), secretA) {
		t.Error("secret in logs")
	}
}

func TestStripeOversizeBody(t *testing.T) {
	st := &fakeIngester{}
	s := &Stripe{Deps: testDeps(st, nil), Secrets: []string{secretA}}
	s.MaxBody = 1024
	body := append(stripeBody("evt_1", true, "2023-10-16"), bytes.Repeat([]byte(" "), 2048)...)
	rec := post(t, s.Handle, body, map[string]string{"Stripe-Signature": sign(body, secretA, testNow)})
	if rec.Code != http.StatusRequestEntityTooLarge || errCode(t, rec) != CodeTooLarge {
		t.Fatalf("status %d body %s, want 413", rec.Code, rec.Body)
	}
	if st.count() != 0 {
		t.Error("oversize body stored")
	}
}

func BenchmarkStripeVerify(b *testing.B) {
	s := &Stripe{Secrets: []string{secretA}}
	body := stripeBody("evt_1", true, "2023-10-16")
	h := sign(body, secretA, testNow)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Verify(body, h, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
