package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/config"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/server"
)

const (
	admToken  = "cli-admin-token-0123456789"
	admStripe = "whsec_cli_tests_stripe_secret"
)

// admSink is a destination whose HTTP answer the test switches.
type admSink struct {
	srv    *httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	n      int
}

func newAdmSink(t *testing.T, status int) *admSink {
	s := &admSink{}
	s.status.Store(int32(status))
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.n++
		s.mu.Unlock()
		w.WriteHeader(int(s.status.Load()))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// admGateway runs a real gateway in-process with destinations "backend"
// (answering 200) and "mmp" (answering mmpStatus) and returns its address.
func admGateway(t *testing.T, mmp *admSink) string {
	t.Helper()
	backend := newAdmSink(t, 200)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 2s}
storage: {path: %q}
admin: {token: %q}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
destinations:
  - {name: backend, type: webhook, endpoint: %q, secret: %q, match: {environments: [production, sandbox]}}
  - {name: mmp, type: webhook, endpoint: %q, secret: %q, match: {environments: [production, sandbox]}}
`, t.TempDir()+"/pb.db", admToken, admStripe, backend.srv.URL, secret, mmp.srv.URL, secret)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := server.New(cfg, server.Options{
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Listener: ln,
		Dispatch: dispatch.Options{BackoffBase: time.Millisecond, Poll: 20 * time.Millisecond, BreakerFailures: 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := ln.Addr().String()
	admWait(t, "ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return addr
}

func admWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func admPost(t *testing.T, addr, id, user string) {
	t.Helper()
	body := fmt.Appendf(nil, `{"id":%q,"object":"event","created":%d,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_%s","object":"subscription","status":"active","customer":"cus_1","currency":"usd","metadata":{"app_user_id":%q},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month"}}}]}}}}`, id, time.Now().Unix(), id, user)
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: admStripe, Timestamp: time.Now()}).Header
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stripe: HTTP %d", resp.StatusCode)
	}
}

// admRun runs Main in-process with the admin token in its environment (or
// tok when not empty, "-" for none).
func admRun(tok string, args ...string) (int, string, string) {
	if tok == "" {
		tok = admToken
	}
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) {
		if k == "POSTBACK_ADMIN_TOKEN" && tok != "-" {
			return tok, true
		}
		return "", false
	}}
	code := Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func TestAdminCommands(t *testing.T) {
	mmp := newAdmSink(t, 400)
	addr := admGateway(t, mmp)
	admPost(t, addr, "evt_a", "user-a")
	admPost(t, addr, "evt_b", "user-b")
	admWait(t, "mmp dead", func() bool {
		code, out, _ := admRun("", "deliveries", "--addr", addr, "--state", "dead", "--json")
		return code == 0 && strings.Count(out, `"state": "dead"`) == 2
	})

	// Event ids for the detail commands.
	code, out, stderr := admRun("", "events", "--addr", addr, "--json", "--user", "user-a")
	if code != 0 {
		t.Fatalf("events --json: exit %d %s", code, stderr)
	}
	var list struct {
		Events []apiEvent `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Events) != 1 {
		t.Fatalf("events --json: %v %s", err, out)
	}
	evID := list.Events[0].ID

	tests := []struct {
		name     string
		tok      string
		args     []string
		code     int
		contains []string
	}{
		{"events table", "", []string{"events", "--addr", addr}, 0, []string{"RECEIVED", "subscription_started", "user-a", "user-b", "9.99 USD", "DELIVERIES", "backend:delivered"}},
		{"events filter", "", []string{"events", "--addr", addr, "--user", "user-b"}, 0, []string{"user-b"}},
		{"events limit pages", "", []string{"events", "--addr", addr, "--limit", "1"}, 0, []string{"SUBSCRIPTION"}},
		{"event detail", "", []string{"events", evID, "--addr", addr}, 0, []string{evID, "backend  delivered", "mmp  dead", "HTTP 400"}},
		{"event detail json", "", []string{"events", "--addr", addr, "--json", evID}, 0, []string{`"attempt_log"`, `"notification"`}},
		{"event not found", "", []string{"events", "--addr", addr, "evt_missing"}, 5, nil},
		{"events bad type", "", []string{"events", "--addr", addr, "--type", "bogus"}, 2, nil},
		{"events two ids", "", []string{"events", "--addr", addr, "a", "b"}, 2, nil},
		{"deliveries table", "", []string{"deliveries", "--addr", addr, "--destination", "mmp"}, 0, []string{"DESTINATION", "mmp", "dead", "http_400"}},
		{"deliveries bad state", "", []string{"deliveries", "--addr", addr, "--state", "lost"}, 2, nil},
		{"deliveries stray argument", "", []string{"deliveries", "--addr", addr, "dead"}, 2, nil},
		{"destinations table", "", []string{"destinations", "--addr", addr}, 0, []string{"NAME", "backend", "mmp", "webhook", "closed"}},
		{"destinations json", "", []string{"destinations", "--addr", addr, "--json"}, 0, []string{`"success_5m"`, `"queue"`}},
		{"destination test ok", "", []string{"destinations", "--addr", addr, "test", "backend"}, 0, []string{"backend: PASSED: delivered (HTTP 200)", "see:      the receiving service's own logs"}},
		{"destination test refused", "", []string{"destinations", "--addr", addr, "test", "mmp"}, 1, []string{"mmp: FAILED: dead (HTTP 400)"}},
		{"destination test unknown", "", []string{"destinations", "--addr", addr, "test", "nowhere"}, 5, nil},
		{"destinations bad usage", "", []string{"destinations", "--addr", addr, "frobnicate"}, 2, nil},
		{"replay needs a filter", "", []string{"replay", "--addr", addr}, 2, nil},
		{"replay keys and filters", "", []string{"replay", "--addr", addr, "--destination", "mmp", "x|mmp"}, 2, nil},
		{"replay dry run", "", []string{"replay", "--addr", addr, "--destination", "mmp", "--dry-run"}, 0, []string{"2 deliveries would be replayed"}},
		{"replay unknown key", "", []string{"replay", "--addr", addr, "evt_missing|mmp"}, 5, nil},
		{"no token", "-", []string{"events", "--addr", addr}, 2, nil},
		{"wrong token", "wrong-token", []string{"events", "--addr", addr}, 4, nil},
		{"unreachable", "", []string{"events", "--addr", "127.0.0.1:1"}, 3, nil},
		{"bad flag", "", []string{"events", "--colour"}, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := admRun(tc.tok, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, stderr)
			}
			for _, s := range tc.contains {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
		})
	}

	t.Run("replay one key then bulk", func(t *testing.T) {
		mmp.status.Store(200)
		code, out, stderr := admRun("", "replay", "--addr", addr, evID+"|mmp")
		if code != 0 || !strings.Contains(out, "queued "+evID+"|mmp") {
			t.Fatalf("exit %d %s %s", code, out, stderr)
		}
		admWait(t, "replayed delivered", func() bool {
			_, out, _ := admRun("", "deliveries", "--addr", addr, "--destination", "mmp", "--state", "delivered", "--json")
			return strings.Count(out, `"key"`) == 1
		})
		code, out, stderr = admRun("", "replay", "--addr", addr, "--destination", "mmp", "--dry-run", "--json")
		if code != 0 || !strings.Contains(out, `"count": 1`) {
			t.Fatalf("dry run: exit %d %s %s", code, out, stderr)
		}
		code, out, stderr = admRun("", "replay", "--addr", addr, "--destination", "mmp", "--rate", "100", "--poll", "20ms")
		if code != 0 || !strings.Contains(out, "1 of 1 deliveries queued again") {
			t.Fatalf("bulk: exit %d %s %s", code, out, stderr)
		}
		admWait(t, "all mmp delivered", func() bool {
			_, out, _ := admRun("", "deliveries", "--addr", addr, "--destination", "mmp", "--state", "delivered", "--json")
			return strings.Count(out, `"key"`) == 2
		})
		code, out, _ = admRun("", "replay", "--addr", addr, "--all", "--dry-run")
		if code != 0 || !strings.Contains(out, "0 deliveries would be replayed") {
			t.Errorf("nothing left dead: exit %d %s", code, out)
		}
	})
}

// TestDestinationTestVerdicts: the CLI prints the gateway's test report,
// the vendor's answer verbatim and where to look, and exits 0 only when the
// vendor really tested and accepted the event. The admin API is a stand-in
// that checks the request it receives.
func TestDestinationTestVerdicts(t *testing.T) {
	cases := []struct {
		name   string
		answer string
		code   int
		want   []string
	}{
		{"not tested", `{"tested":false,"passed":false,"outcome":"skipped","reason":"not_tested: add sandbox: {branch_key: key_test_...}","path":"Branch Events API with the test key","where":"Branch dashboard in Test mode"}`,
			1, []string{"branch: NOT TESTED: skipped", "reason:   not_tested: add sandbox", "see:      Branch dashboard in Test mode"}},
		{"tested, refused", `{"tested":true,"passed":false,"outcome":"pause","status":400,"response":"{\"error\":{\"code\":190}}","path":"Meta Conversions API with test_event_code"}`,
			1, []string{"branch: FAILED: pause (HTTP 400)", `response: {"error":{"code":190}}`, "path:     Meta Conversions API with test_event_code"}},
		{"tested, accepted", `{"tested":true,"passed":true,"outcome":"delivered","status":200,"response":"{\"events_received\":1}","event":{"id":"evt_t"}}`,
			0, []string{"branch: PASSED: delivered (HTTP 200)", "test event evt_t", `response: {"events_received":1}`}},
		{"delivered but not tested is not a pass", `{"tested":false,"passed":false,"outcome":"delivered"}`, 1, []string{"branch: NOT TESTED: delivered"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/admin/api/destinations/branch/test" || r.Header.Get("Authorization") != "Bearer "+admToken {
					http.Error(w, `{"error":{"code":"not_found","message":"no"}}`, http.StatusNotFound)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, tc.answer)
			}))
			defer srv.Close()
			code, out, errOut := admRun("", "destinations", "--addr", srv.URL, "test", "branch")
			if code != tc.code {
				t.Errorf("exit %d, want %d (%s%s)", code, tc.code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output misses %q:\n%s", w, out)
				}
			}
		})
	}
}
