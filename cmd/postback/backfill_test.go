package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/appstore"
	"github.com/postback/postback/webhooks/appletest"
)

// appleBackfillSetup writes a config whose Apple source trusts a test PKI
// and whose App Store Server API is a fake serving n signed notifications.
func appleBackfillSetup(t *testing.T, n int, withAPI bool) (cfgPath string) {
	t.Helper()
	pki := appletest.NewPKI(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root.cer")
	keyFile := filepath.Join(dir, "AuthKey_KEY123.p8")
	p8, _, err := appletest.P8()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, pki.RootDER(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	signed := time.Now().Add(-time.Hour).UnixMilli()
	var history []appstore.NotificationHistoryItem
	for i := range n {
		orig := fmt.Sprintf("40000000000000%02d", i)
		txn := map[string]any{"transactionId": orig, "originalTransactionId": orig, "bundleId": "com.example.app", "productId": "pro_monthly",
			"purchaseDate": signed, "type": "Auto-Renewable Subscription", "environment": "Production", "signedDate": signed, "price": 9990, "currency": "USD"}
		payload := map[string]any{"notificationType": "SUBSCRIBED", "subtype": "INITIAL_BUY", "notificationUUID": fmt.Sprintf("cli-%d", i), "version": "2.0", "signedDate": signed,
			"data": map[string]any{"appAppleId": 1234567890, "bundleId": "com.example.app", "environment": "Production", "signedTransactionInfo": pki.SignJWS(txn)}}
		history = append(history, appstore.NotificationHistoryItem{SignedPayload: pki.SignJWS(payload)})
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/inApps/v1/notifications/history" || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(appstore.NotificationHistoryPage{NotificationHistory: history})
	}))
	t.Cleanup(srv.Close)
	api := ""
	if withAPI {
		api = fmt.Sprintf("    api: {issuer_id: issuer-1, key_id: KEY123, private_key: %s, endpoint: %q}\n", keyFile, srv.URL)
	}
	cfg := `storage: {path: ` + filepath.Join(dir, "postback.db") + `}
sources:
  apple:
    enabled: true
    apps: [{bundle_id: com.example.app, app_apple_id: 1234567890}]
    environments: [production]
    root_certificates: [` + root + `]
` + api
	cfgPath = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath
}

func TestBackfillCommand(t *testing.T) {
	cfgPath := appleBackfillSetup(t, 4, true)
	code, out, errOut := runMain("backfill", "apple", "--since", "2h", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "new         4") || !strings.Contains(out, "duplicates  0") {
		t.Fatalf("first run: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runMain("backfill", "apple", "--since", "2h", "--config", cfgPath, "--json")
	var res struct{ Total appstore.BackfillResult }
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Total.New != 0 || res.Total.Duplicates != 4 {
		t.Fatalf("second run: exit %d %v\n%s%s", code, err, out, errOut)
	}
}

func TestBackfillCommandToRunningGateway(t *testing.T) {
	cfgPath := appleBackfillSetup(t, 3, true)
	var calls atomic.Int32
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		if r.URL.Path != "/webhooks/apple" || json.NewDecoder(r.Body).Decode(&body) != nil || body["signedPayload"] == "" {
			http.NotFound(w, r)
			return
		}
		switch calls.Add(1) {
		case 1:
			_, _ = w.Write([]byte(`{"status":"accepted","event_ids":["evt_1"]}`))
		case 2:
			_, _ = w.Write([]byte(`{"status":"duplicate","duplicate":true}`))
		default:
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"untrusted_chain"}}`))
		}
	}))
	defer gw.Close()
	code, out, errOut := runMain("backfill", "apple", "--since", "2h", "--config", cfgPath, "--addr", gw.URL+"/", "--json")
	var res struct{ Total appstore.BackfillResult }
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Total != (appstore.BackfillResult{Fetched: 3, New: 1, Duplicates: 1, Rejected: 1, Pages: 1}) {
		t.Fatalf("exit %d %v: %+v\n%s", code, err, res.Total, errOut)
	}
	gw.Close()
	if code, _, errOut := runMain("backfill", "apple", "--since", "2h", "--config", cfgPath, "--addr", gw.URL); code != 1 || !strings.Contains(errOut, "post to the gateway") {
		t.Errorf("gateway down: exit %d, %s", code, errOut)
	}
}

func TestBackfillCommandErrors(t *testing.T) {
	noAPI := appleBackfillSetup(t, 0, false)
	withAPI := appleBackfillSetup(t, 0, true)
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no source name", []string{"backfill"}, 2, "usage"},
		{"other source", []string{"backfill", "google"}, 2, "usage"},
		{"bad --since", []string{"backfill", "apple", "--since", "yesterday", "--config", withAPI}, 2, "--since"},
		{"bad --until", []string{"backfill", "apple", "--until", "later", "--config", withAPI}, 2, "--until"},
		{"bad flag", []string{"backfill", "apple", "--nope"}, 2, ""},
		{"missing config", []string{"backfill", "apple", "--config", filepath.Join(t.TempDir(), "none.yaml")}, 1, "config"},
		{"no credentials", []string{"backfill", "apple", "--config", noAPI}, 1, "issuer_id"},
		{"environment not accepted", []string{"backfill", "apple", "--config", withAPI, "--environment", "sandbox"}, 2, "not one of"},
		{"empty window", []string{"backfill", "apple", "--config", withAPI, "--since", "2026-01-02", "--until", "2026-01-01"}, 1, "after"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runMain(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d, want %d; stderr %q should mention %q", code, tc.code, errOut, tc.msg)
			}
		})
	}
	disabled := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(disabled, []byte("sources: {apple: {enabled: false}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runMain("backfill", "apple", "--config", disabled); code != 1 || !strings.Contains(errOut, "not enabled") {
		t.Errorf("disabled source: exit %d, %s", code, errOut)
	}
}
