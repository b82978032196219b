package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/config"
	"github.com/postback/postback/server"
)

const (
	sendShopify = "shpss_send_tests_shopify_secret"
	sendAPIKey  = "send-tests-api-key-0123456789"
)

// sendGateway runs a gateway with Stripe, Shopify and the /v1 API on.
func sendGateway(t *testing.T) (string, *server.Gateway) {
	t.Helper()
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 2s}
storage: {path: %q}
admin: {token: %q}
api_keys: [%q]
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: true, secret: %q}
  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
`, t.TempDir()+"/pb.db", admToken, sendAPIKey, sendShopify, admStripe)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
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
	t.Cleanup(func() { cancel(); <-done })
	addr := ln.Addr().String()
	admWait(t, "ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return "http://" + addr, g
}

// Issue 16, item 12: every sample of every source is accepted by a real
// gateway (signature, shape), maps to an event or is stored as the vendor's
// would be, and shows on the inbound log; unknown values list the valid ones.
func TestSendEverySample(t *testing.T) {
	base, g := sendGateway(t)
	env := map[string]string{"STRIPE_WEBHOOK_SECRET": admStripe, "SHOPIFY_WEBHOOK_SECRET": sendShopify, "POSTBACK_API_KEY": sendAPIKey}
	n := 0
	for _, src := range sortedKeys(sampleBuilders) {
		for _, typ := range sortedKeys(sampleBuilders[src]) {
			code, out, errOut := runWithEnv(env, "send", src, typ, "--to", base, "--user", "send-user")
			if code != 0 || !strings.Contains(out, "HTTP 20") {
				t.Errorf("send %s %s: exit %d\n%s%s", src, typ, code, out, errOut)
			}
			if strings.Contains(out, `"ignored"`) && src != "custom" {
				t.Errorf("send %s %s: the gateway ignored the sample: %s", src, typ, out)
			}
			n++
		}
	}
	reqs, _ := g.InboundRequests(server.InboundFilter{})
	if len(reqs) != n {
		t.Errorf("inbound log has %d requests, want %d", len(reqs), n)
	}
	for _, r := range reqs {
		if r.Outcome == server.OutcomeRejected || r.Outcome == server.OutcomeFailed {
			t.Errorf("%s %s: %s %s", r.Source, r.Type, r.Outcome, r.Reason)
		}
	}
	// The same id twice is a duplicate.
	runWithEnv(env, "send", "stripe", "invoice.paid", "--to", base, "--id", "twice")
	if _, out, _ := runWithEnv(env, "send", "stripe", "invoice.paid", "--to", base, "--id", "twice"); !strings.Contains(out, `"duplicate"`) {
		t.Errorf("second send of one id: %s", out)
	}
	// A wrong secret is the gateway's 400, exit 1.
	if code, out, _ := runWithEnv(nil, "send", "stripe", "invoice.paid", "--to", base, "--secret", "whsec_wrong"); code != 1 || !strings.Contains(out, "invalid_signature") {
		t.Errorf("wrong secret: exit %d %s", code, out)
	}
}

func TestSendUsage(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"send", "stripe", "invoice.payed"}, 2, `stripe type "invoice.payed" is not one of: charge.refunded, customer.subscription.created, customer.subscription.deleted, customer.subscription.updated, invoice.paid`},
		{[]string{"send", "paddle", "x"}, 2, `source "paddle" is not one of: custom, shopify, stripe`},
		{[]string{"send", "apple", "TEST"}, 2, `Request a Test Notification`},
		{[]string{"send", "google", "x"}, 2, `Send test notification`},
		{[]string{"send", "stripe", "invoice.paid"}, 2, `set STRIPE_WEBHOOK_SECRET`},
	}
	for _, tc := range cases {
		code, _, errOut := runWithEnv(nil, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d %q, want %d with %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
	// --print shows the signed request, sends nothing.
	code, out, _ := runWithEnv(map[string]string{"SHOPIFY_WEBHOOK_SECRET": "s"}, "send", "shopify", "orders/paid", "--print", "--to", "https://gw.example.com", "--id", "fixed")
	if code != 0 || !strings.HasPrefix(out, "POST https://gw.example.com/webhooks/shopify\n") || !strings.Contains(out, "X-Shopify-Hmac-Sha256: ") {
		t.Errorf("--print: exit %d\n%s", code, out)
	}
	_ = time.Second
}

// Issue 16, item 6: `postback requests` lists what the gateway received,
// rejected ones with their reason code; --outcome filters; golden output.
func TestRequestsCommand(t *testing.T) {
	base, _ := sendGateway(t)
	env := map[string]string{"STRIPE_WEBHOOK_SECRET": admStripe, "POSTBACK_ADDR": base, "POSTBACK_ADMIN_TOKEN": admToken}
	runWithEnv(env, "send", "stripe", "invoice.paid", "--id", "req1")
	runWithEnv(env, "send", "stripe", "invoice.paid", "--id", "req2", "--secret", "whsec_wrong")
	code, out, errOut := runWithEnv(env, "requests")
	if code != 0 {
		t.Fatalf("exit %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "RECEIVED") || !strings.Contains(lines[1], "rejected") || !strings.Contains(lines[1], "invalid_signature") ||
		!strings.Contains(lines[2], "accepted") || !strings.Contains(lines[2], "invoice.paid") || !strings.Contains(errOut, "2 requests seen") {
		t.Errorf("requests:\n%s%s", out, errOut)
	}
	_, out, _ = runWithEnv(env, "requests", "--outcome", "rejected")
	if strings.Contains(out, "accepted") {
		t.Errorf("--outcome rejected:\n%s", out)
	}
	if code, _, errOut := runWithEnv(env, "requests", "--outcome", "refused"); code != 2 || !strings.Contains(errOut, "accepted, duplicate, ignored, failed, rejected, client_closed") {
		t.Errorf("bad outcome: exit %d %s", code, errOut)
	}
}

func TestHealthcheck(t *testing.T) {
	base, _ := sendGateway(t)
	if code, out, errOut := runWithEnv(nil, "healthcheck", "--addr", base); code != 0 || out != "ready\n" {
		t.Errorf("ready gateway: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := runWithEnv(map[string]string{"POSTBACK_ADDR": "127.0.0.1:1"}, "healthcheck"); code != 1 || !strings.Contains(errOut, "not reachable") {
		t.Errorf("no gateway: exit %d %q", code, errOut)
	}
}
