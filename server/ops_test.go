package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/config"
)

const (
	opsAdminToken = "ops-admin-token-0123456789abcdef"
	opsStripe     = "whsec_ops_tests_stripe_secret"
	opsAPIKey     = "ops-api-key-0123456789abcdef"
)

// opsGateway runs a gateway with Stripe, the /v1 API and the admin API, its
// logs (text) in logs.
func opsGateway(t *testing.T, logs io.Writer, extra string) *testGateway {
	t.Helper()
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 1s}
storage: {path: %q}
admin: {token: %q}
api_keys: [%q]
sources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: true, secrets: [%q], app_id: com.ops.app}}
%s`, t.TempDir()+"/pb.db", opsAdminToken, opsAPIKey, opsStripe, extra)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{Logger: NewLogger(logs, cfg.Log, cfg.Secrets()), Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{g: g, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx, nil) }()
	t.Cleanup(tg.stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get(tg.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("gateway not ready")
		}
	}
	return tg
}

func opsStripeBody(id, typ string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"object":"event","created":%d,"livemode":true,"type":%q,"data":{"object":{"id":"sub_%s","object":"subscription","status":"active","customer":"cus_1","currency":"usd","metadata":{"app_user_id":"u-1"},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month"}}}]}}}}`, id, time.Now().Unix(), typ, id)
}

func opsPostStripe(t *testing.T, base string, body []byte, secret string, hdr map[string]string) *http.Response {
	t.Helper()
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: time.Now()}).Header
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", sig)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func logLines(logs *safeBuffer, msg string) []string {
	var out []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "msg=\""+msg) || strings.Contains(l, "msg="+msg+" ") {
			out = append(out, l)
		}
	}
	return out
}

// Issue 16, item 9: a request id joins the request line and the
// notification line (and is answered in X-Request-Id); durations are human;
// the start-up line prints the console URL; no err=<nil>.
func TestLogsRequestIDAndHumanDurations(t *testing.T) {
	logs := &safeBuffer{}
	tg := opsGateway(t, logs, "")
	resp := opsPostStripe(t, tg.url, opsStripeBody("evt_log_1", "customer.subscription.created"), opsStripe, map[string]string{"X-Request-Id": "caller-chosen-id-1"})
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") != "caller-chosen-id-1" {
		t.Fatalf("HTTP %d, X-Request-Id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	resp = opsPostStripe(t, tg.url, opsStripeBody("evt_log_2", "customer.subscription.created"), opsStripe, nil)
	gen := resp.Header.Get("X-Request-Id")
	if len(gen) != 16 {
		t.Fatalf("generated X-Request-Id %q", gen)
	}
	for _, id := range []string{"caller-chosen-id-1", gen} {
		var req, notif string
		for _, l := range logLines(logs, "request") {
			if strings.Contains(l, "request_id="+id) {
				req = l
			}
		}
		for _, l := range logLines(logs, "notification accepted") {
			if strings.Contains(l, "request_id="+id) {
				notif = l
			}
		}
		if req == "" || notif == "" {
			t.Fatalf("request id %s: request line %q, notification line %q\n%s", id, req, notif, logs.String())
		}
		if !regexp.MustCompile(` duration=[0-9.]+(µs|ms|s) `).MatchString(req) || strings.Contains(req, "duration_ms") {
			t.Errorf("request line without a human duration: %s", req)
		}
	}
	// A rejected request: its reason code on the request line, no err=<nil>.
	resp = opsPostStripe(t, tg.url, opsStripeBody("evt_log_3", "customer.subscription.created"), "whsec_wrong_secret_value", nil)
	if resp.StatusCode != 400 && resp.StatusCode != 401 {
		t.Fatalf("bad signature: HTTP %d", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), "reason=invalid_signature") {
		t.Errorf("no reason on the request line:\n%s", logs.String())
	}
	start := logLines(logs, "postback listening")
	if len(start) != 1 || !strings.Contains(start[0], "console="+strings.Replace(tg.url, "127.0.0.1", "127.0.0.1", 1)+"/admin/") {
		t.Errorf("start-up line without the console URL: %q", start)
	}
	if strings.Contains(logs.String(), "<nil>") {
		t.Errorf("a log line prints <nil>:\n%s", logs.String())
	}
}

func TestLoggerDropsNilErrors(t *testing.T) {
	var b bytes.Buffer
	log := NewLogger(&b, config.Log{Level: "info", Format: "text"}, nil)
	var err error
	log.Info("x", "err", err, "n", 1)
	if strings.Contains(b.String(), "err=") || !strings.Contains(b.String(), "n=1") {
		t.Errorf("log line %q", b.String())
	}
	b.Reset()
	jlog := NewLogger(&b, config.Log{Level: "info", Format: "json"}, nil)
	jlog.Info("x", "took", 1500*time.Millisecond, "cooldown", 250*time.Microsecond)
	if !strings.Contains(b.String(), `"took":"1.5s"`) || !strings.Contains(b.String(), `"cooldown":"250µs"`) {
		t.Errorf("json durations: %s", b.String())
	}
	if got := ConsoleURL("[::]:8080", false); got != "http://localhost:8080/admin/" {
		t.Errorf("ConsoleURL = %q", got)
	}
	if got := ConsoleURL("0.0.0.0:443", true); got != "https://localhost:443/admin/" {
		t.Errorf("ConsoleURL = %q", got)
	}
}

// Issue 16, item 9: a client that hangs up mid-request is neither logged
// nor counted as a store failure.
func TestClientDisconnectIsNotStoreUnavailable(t *testing.T) {
	logs := &safeBuffer{}
	tg := opsGateway(t, logs, "")
	body := opsStripeBody("evt_hangup", "customer.subscription.created")
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: opsStripe, Timestamp: time.Now()}).Header
	conn, err := net.Dial("tcp", strings.TrimPrefix(tg.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", sig, len(body), body[:len(body)/2])
	time.Sleep(50 * time.Millisecond)
	conn.Close()
	var line string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, l := range logLines(logs, "request") {
			if strings.Contains(l, "/webhooks/stripe") {
				line = l
			}
		}
		if line != "" {
			break
		}
	}
	if !strings.Contains(line, "status=499") || !strings.Contains(line, "reason=client_closed") || !strings.Contains(line, "level=INFO") {
		t.Errorf("request line %q", line)
	}
	if strings.Contains(logs.String(), "store_unavailable") || strings.Contains(logs.String(), "store failed") {
		t.Errorf("logged as a store failure:\n%s", logs.String())
	}
	if l := metricLine(t, tg.url, `postback_notifications_rejected_total{reason="store_unavailable",source="stripe"}`); l != "" && !strings.HasSuffix(l, " 0") {
		t.Errorf("counted as store_unavailable: %s", l)
	}
	reqs, _ := tg.g.InboundRequests(InboundFilter{})
	if len(reqs) != 1 || reqs[0].Outcome != OutcomeClientClosed {
		t.Errorf("inbound log: %+v", reqs)
	}
}

// Issue 16, item 6: the log of recent inbound requests lists accepted,
// duplicate, ignored and rejected requests with their reason code, never a
// body; the admin API serves it with filters.
func TestInboundRequestLog(t *testing.T) {
	tg := opsGateway(t, io.Discard, "")
	body := opsStripeBody("evt_in_1", "customer.subscription.created")
	opsPostStripe(t, tg.url, body, opsStripe, nil)
	opsPostStripe(t, tg.url, body, opsStripe, nil) // duplicate
	opsPostStripe(t, tg.url, opsStripeBody("evt_in_2", "customer.created"), opsStripe, nil)
	opsPostStripe(t, tg.url, opsStripeBody("evt_in_3", "customer.subscription.created"), "whsec_not_the_secret", nil)
	http.Get(tg.url + "/healthz") // not a notification: not logged

	get := func(q string) (out struct {
		Requests []Inbound `json:"requests"`
		Seen     int64     `json:"seen_since_start"`
		Note     string    `json:"note"`
	}, raw string) {
		req, _ := http.NewRequest(http.MethodGet, tg.url+"/admin/api/requests"+q, nil)
		req.Header.Set("Authorization", "Bearer "+opsAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET requests%s: HTTP %d %s", q, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out, string(b)
	}
	all, raw := get("")
	if all.Seen != 4 || len(all.Requests) != 4 || !strings.Contains(all.Note, "memory") {
		t.Fatalf("seen %d, %d requests: %s", all.Seen, len(all.Requests), raw)
	}
	want := []struct{ outcome, reason string }{
		{OutcomeRejected, "invalid_signature"}, {OutcomeIgnored, ""}, {OutcomeDuplicate, ""}, {OutcomeAccepted, ""},
	}
	for i, w := range want {
		r := all.Requests[i]
		if r.Outcome != w.outcome || (w.reason != "" && r.Reason != w.reason) || r.Source != "stripe" || r.RequestID == "" || r.At.IsZero() {
			t.Errorf("request %d (newest first) = %+v, want %s %s", i, r, w.outcome, w.reason)
		}
	}
	if all.Requests[1].Reason == "" || all.Requests[3].Type != "customer.subscription.created" || len(all.Requests[3].EventIDs) == 0 {
		t.Errorf("ignored reason / accepted type and events missing: %+v", all.Requests)
	}
	if strings.Contains(raw, "sub_evt_in_3") || strings.Contains(raw, "price_1") {
		t.Errorf("a body reached the log: %s", raw)
	}
	rej, _ := get("?outcome=rejected&source=stripe&limit=10")
	if len(rej.Requests) != 1 || rej.Requests[0].Status != 400 && rej.Requests[0].Status != 401 {
		t.Errorf("rejected filter: %+v", rej.Requests)
	}
	// Bounded: the ring keeps the newest InboundLogSize.
	var l inboundLog
	for i := 0; i < InboundLogSize+5; i++ {
		l.add(Inbound{Key: fmt.Sprint(i)})
	}
	got, total := l.list(InboundFilter{})
	if len(got) != InboundLogSize || total != int64(InboundLogSize+5) || got[0].Key != fmt.Sprint(InboundLogSize+4) || got[len(got)-1].Key != "5" {
		t.Errorf("ring: %d kept, total %d, newest %s, oldest %s", len(got), total, got[0].Key, got[len(got)-1].Key)
	}
}

// Issue 16, item 10: a fresh gateway exposes its build, and every series of
// its sources and destinations at zero.
func TestMetricsAtZeroForConfiguredParts(t *testing.T) {
	sink := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	ts := httptest.NewServer(sink)
	t.Cleanup(ts.Close)
	srv := ts.URL
	tg := opsGateway(t, io.Discard, fmt.Sprintf(`destinations:
  - {name: hook, type: webhook, endpoint: %q, secret: "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz", match: {environments: [production, sandbox]}}
`, srv))
	resp, err := http.Get(tg.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for _, want := range []string{
		`postback_build_info{commit=`,
		`postback_notifications_rejected_total{reason="invalid_signature",source="stripe"} 0`,
		`postback_notifications_rejected_total{reason="client_closed",source="custom"} 0`,
		`postback_deliveries_total{destination="hook",outcome="dead"} 0`,
		`postback_circuit_state{destination="hook",state="closed"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, `source="apple"`) {
		t.Error("series for a disabled source")
	}
}

func TestInboundSource(t *testing.T) {
	for _, tc := range []struct{ method, path, want string }{
		{"POST", "/webhooks/stripe", "stripe"}, {"POST", "/v1/events", "custom"}, {"PUT", "/v1/users/u1", ""},
		{"DELETE", "/v1/users/u1", ""}, {"GET", "/webhooks/stripe", ""}, {"POST", "/admin/login", ""}, {"POST", "/webhooks/a/b", ""},
	} {
		if got := inboundSource(tc.method, tc.path); got != tc.want {
			t.Errorf("%s %s = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}
