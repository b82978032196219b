package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/config"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/server"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks/googletest"
)

func reconcileConfig(t *testing.T, endpoint string, enabled bool) (cfgPath, dbPath string) {
	t.Helper()
	dir := t.TempDir()
	dbPath = filepath.Join(dir, "postback.db")
	cfg := `storage: {path: ` + dbPath + `}
sources:
  google:
    enabled: ` + map[bool]string{true: "true", false: "false"}[enabled] + `
    packages: [com.example.app]
    push_audience: https://postback.example.com/webhooks/google
    push_service_account: pubsub-push@project.iam.gserviceaccount.com
    play_api: {endpoint: "` + endpoint + `"}
`
	cfgPath = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, dbPath
}

func runMain(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func TestReconcileCommand(t *testing.T) {
	pub := googletest.NewPublisher()
	defer pub.Close()
	voided := time.Now().Add(-24 * time.Hour).UnixMilli()
	pub.AddVoided("com.example.app", voided, map[string]any{"purchaseToken": "tok-1", "orderId": "GPA.1", "voidedTimeMillis": strconv.FormatInt(voided, 10), "voidedReason": 1})
	pub.SetOrder("com.example.app", "GPA.1", map[string]any{"orderId": "GPA.1", "total": googletest.Money(1_990_000, "USD"),
		"lineItems": []any{map[string]any{"productId": "coins", "oneTimePurchaseDetails": map[string]any{"quantity": 1}}}})
	cfgPath, dbPath := reconcileConfig(t, pub.URL(), true)

	code, out, errOut := runMain("reconcile", "google", "--since", "72h", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res struct {
		Listed, New, Known int
		Complete           bool `json:"enrichment_complete"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Listed != 1 || res.New != 1 || !res.Complete {
		t.Fatalf("got %s (%v), want 1 listed, 1 new, enrichment complete", out, err)
	}
	code, out, _ = runMain("reconcile", "google", "--since", "2020-01-01", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "known    1") || !strings.Contains(out, "new      0") {
		t.Errorf("second run: exit %d, %q; want the refund known", code, out)
	}
	db, err := store.Open(dbPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := db.Events(store.EventFilter{Source: mapping.SourceGoogle, Limit: 10})
	if err != nil || len(p.Events) != 1 || p.Events[0].Type != mapping.Refund || p.Events[0].Revenue.AmountMicros != -1_990_000 {
		t.Fatalf("got %+v, %v; want one refund of USD -1.99", p.Events, err)
	}
	// While another process holds the database, reconcile says so.
	if code, _, errOut := runMain("reconcile", "google", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "--addr") {
		t.Errorf("locked database: exit %d, %q", code, errOut)
	}
}

// TestReconcileThroughRunningGateway reconciles through the admin API of a
// running gateway, whose enrichment worker then makes the refund.
func TestReconcileThroughRunningGateway(t *testing.T) {
	pub := googletest.NewPublisher()
	defer pub.Close()
	voided := time.Now().Add(-24 * time.Hour).UnixMilli()
	pub.AddVoided("com.example.app", voided, map[string]any{"purchaseToken": "tok-2", "orderId": "GPA.2", "voidedTimeMillis": strconv.FormatInt(voided, 10), "voidedReason": 1})
	pub.SetOrder("com.example.app", "GPA.2", map[string]any{"orderId": "GPA.2", "total": googletest.Money(2_990_000, "EUR"),
		"lineItems": []any{map[string]any{"productId": "coins", "oneTimePurchaseDetails": map[string]any{"quantity": 1}}}})
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`storage: {path: `+filepath.Join(dir, "db")+`}
admin: {token: reconcile-admin-token}
sources:
  apple: {enabled: false}
  stripe: {enabled: false}
  shopify: {enabled: false}
  google:
    enabled: true
    packages: [com.example.app]
    push_audience: https://postback.example.com/webhooks/google
    push_service_account: pubsub-push@project.iam.gserviceaccount.com
    play_api: {endpoint: "`+pub.URL()+`"}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := server.New(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()

	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) {
		if k == "POSTBACK_ADMIN_TOKEN" {
			return "reconcile-admin-token", true
		}
		return "", false
	}}
	if code := Main(context.Background(), []string{"reconcile", "google", "--since", "72h", "--addr", "http://" + ln.Addr().String()}, env); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "new      1") {
		t.Fatalf("output %q, want one new refund", out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := g.Store.Events(store.EventFilter{Source: mapping.SourceGoogle, Limit: 10})
		if err == nil && len(p.Events) == 1 && p.Events[0].Type == mapping.Refund && p.Events[0].Revenue.AmountMicros == -2_990_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refund event from the running gateway: %+v %v", p.Events, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wrong token: exit 4.
	env.Getenv = func(k string) (string, bool) { return "wrong", k == "POSTBACK_ADMIN_TOKEN" }
	if code := Main(context.Background(), []string{"reconcile", "google", "--addr", "http://" + ln.Addr().String()}, env); code != 4 {
		t.Errorf("wrong token: exit %d, want 4", code)
	}
}

func TestReconcileCommandErrors(t *testing.T) {
	cfgOff, _ := reconcileConfig(t, "http://127.0.0.1:1/", false)
	cfgOn, _ := reconcileConfig(t, "http://127.0.0.1:1/", true)
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no source", []string{"reconcile"}, 2, "usage"},
		{"other source", []string{"reconcile", "apple"}, 2, "usage"},
		{"bad since", []string{"reconcile", "google", "--since", "yesterday", "--config", cfgOn}, 2, "--since"},
		{"bad until", []string{"reconcile", "google", "--until", "later", "--config", cfgOn}, 2, "--until"},
		{"unknown flag", []string{"reconcile", "google", "--nope"}, 2, ""},
		{"source disabled", []string{"reconcile", "google", "--config", cfgOff}, 1, "not enabled"},
		{"missing config", []string{"reconcile", "google", "--config", filepath.Join(t.TempDir(), "none.yaml")}, 1, ""},
		{"api unreachable", []string{"reconcile", "google", "--config", cfgOn}, 1, "voided purchases"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runMain(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d, %q; want %d containing %q", code, errOut, tc.code, tc.msg)
			}
		})
	}
}
