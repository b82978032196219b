package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/postback/postback/store/pgstore/pgtest"
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
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/store"
)

const (
	e2eStripeSecret = "whsec_e2e_test_secret_0123456789"
	e2eAdminToken   = "admin-token-e2e-0123456789"
)

var e2eHookSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

// receiver is an httptest destination that answers with a script and
// verifies every request's Standard Webhooks signature.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	script []func(w http.ResponseWriter) // one per request; the last repeats
	got    []receivedReq
	calls  atomic.Int32
}

type receivedReq struct {
	at   time.Time
	id   string
	body []byte
}

func newReceiver(t *testing.T, script ...func(w http.ResponseWriter)) *receiver {
	r := &receiver{t: t, script: script}
	key, _ := forwarders.DecodeWebhookSecret(e2eHookSecret)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
		var tsi int64
		fmt.Sscan(ts, &tsi)
		if want := forwarders.SignWebhook(key, id, tsi, body); req.Header.Get("webhook-signature") != want {
			t.Errorf("bad webhook signature for %s", id)
		}
		r.mu.Lock()
		n := len(r.got)
		r.got = append(r.got, receivedReq{at: time.Now(), id: id, body: body})
		var f func(http.ResponseWriter)
		if len(r.script) > 0 {
			f = r.script[min(n, len(r.script)-1)]
		}
		r.mu.Unlock()
		r.calls.Add(1)
		if f == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		f(w)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []receivedReq {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedReq(nil), r.got...)
}

func status(code int) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) { w.WriteHeader(code) }
}

type testGateway struct {
	g      *Gateway
	url    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func e2eConfig(t *testing.T, dbPath, hookURL, extra string) *config.Config {
	t.Helper()
	cfg, err := e2eParse(dbPath, hookURL, extra)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// e2eConfigB is e2eConfig for benchmarks: no destination traffic matters,
// so the webhook points at a closed port and only ingest is measured.
func e2eConfigB(b *testing.B, dbPath string) *config.Config {
	cfg, err := e2eParse(dbPath, "http://127.0.0.1:9/", "")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Destinations = nil
	return cfg
}

// e2eStorage is the storage block for a BoltDB path or a PostgreSQL DSN.
func e2eStorage(dbPath string) string {
	if strings.HasPrefix(dbPath, "postgres://") {
		return fmt.Sprintf("{driver: postgres, dsn: %q, pool_size: 8}", dbPath)
	}
	return fmt.Sprintf("{path: %q}", dbPath)
}

// e2eDB returns a BoltDB path ("bolt") or a fresh PostgreSQL database.
func e2eDB(t *testing.T, backend string) string {
	if backend == "postgres" {
		return pgtest.Database(t)
	}
	return t.TempDir() + "/db"
}

// bothBackends runs an end-to-end test on BoltDB and on PostgreSQL.
func bothBackends(t *testing.T, fn func(t *testing.T, backend string)) {
	for _, b := range []string{"bolt", "postgres"} {
		t.Run(b, func(t *testing.T) { fn(t, b) })
	}
}

func e2eParse(dbPath, hookURL, extra string) (*config.Config, error) {
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 1s}
storage: %s
admin: {token: %q}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
destinations:
  - name: hook
    type: webhook
    endpoint: %q
    secret: %q
    match: {environments: [production, sandbox]}
    retry: {max_attempts: 5}
%s`, e2eStorage(dbPath), e2eAdminToken, e2eStripeSecret, hookURL, e2eHookSecret, extra)
	return config.Parse([]byte(y), func(string) (string, bool) { return "", false })
}

func startGateway(t *testing.T, cfg *config.Config, logs io.Writer) *testGateway {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{
		Logger:   NewLogger(logs, config.Log{Level: "debug"}, cfg.Secrets()),
		Listener: ln,
		Dispatch: dispatch.Options{BackoffBase: 5 * time.Millisecond, BackoffCap: 20 * time.Millisecond, Poll: 10 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{g: g, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx, nil) }()
	t.Cleanup(tg.stop)
	return tg
}

func (tg *testGateway) stop() {
	tg.once.Do(func() {
		tg.cancel()
		select {
		case <-tg.done:
		case <-time.After(10 * time.Second):
		}
	})
}

func stripeEvent(id string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2023-10-16","created":%d,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_%s","object":"subscription","status":"trialing","customer":"cus_1","trial_end":1765000000,"metadata":{"app_user_id":"user-%s"},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}}}`, id, time.Now().Unix(), id, id))
}

func postStripe(t *testing.T, url string, body []byte) int {
	t.Helper()
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: e2eStripeSecret, Timestamp: time.Now()}).Header
	req, _ := http.NewRequest(http.MethodPost, url+"/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func onlyDelivery(t *testing.T, g *Gateway) store.Delivery {
	t.Helper()
	ds, err := g.Store.Deliveries(store.DeliveryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("%d deliveries, want 1", len(ds))
	}
	return ds[0]
}

func TestStripeRetriedFiveTimesIsOneEventOneDelivery(t *testing.T) {
	bothBackends(t, testStripeRetriedFiveTimesIsOneEventOneDelivery)
}

func testStripeRetriedFiveTimesIsOneEventOneDelivery(t *testing.T, backend string) {
	rcv := newReceiver(t)
	tg := startGateway(t, e2eConfig(t, e2eDB(t, backend), rcv.srv.URL, ""), nil)
	body := stripeEvent("evt_five")
	for i := 0; i < 5; i++ {
		if code := postStripe(t, tg.url, body); code != 200 {
			t.Fatalf("post %d: status %d", i, code)
		}
	}
	waitFor(t, "delivery", func() bool { return rcv.calls.Load() >= 1 })
	time.Sleep(100 * time.Millisecond) // room for a wrong second delivery
	if n := rcv.calls.Load(); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
	p, err := tg.g.Store.Events(store.EventFilter{})
	if err != nil || len(p.Events) != 1 {
		t.Fatalf("events = %d (%v), want 1", len(p.Events), err)
	}
	e := p.Events[0]
	if e.Type != "trial_started" || e.User.AppUserID != "user-evt_five" || e.Source != "stripe" {
		t.Errorf("event = %+v", e)
	}
	var sent map[string]any
	if err := json.Unmarshal(rcv.requests()[0].body, &sent); err != nil || sent["id"] != e.ID {
		t.Errorf("receiver body %s, want the canonical event %s", rcv.requests()[0].body, e.ID)
	}
	if rcv.requests()[0].id != e.ID {
		t.Errorf("webhook-id = %q, want event id %q", rcv.requests()[0].id, e.ID)
	}
	waitFor(t, "delivered state", func() bool { return onlyDelivery(t, tg.g).State == store.StateDelivered })
}

func TestFailThreeTimesThenSucceed(t *testing.T) { bothBackends(t, testFailThreeTimesThenSucceed) }

func testFailThreeTimesThenSucceed(t *testing.T, backend string) {
	rcv := newReceiver(t, status(500), status(503), status(502), status(200))
	tg := startGateway(t, e2eConfig(t, e2eDB(t, backend), rcv.srv.URL, ""), nil)
	if code := postStripe(t, tg.url, stripeEvent("evt_retry")); code != 200 {
		t.Fatalf("status %d", code)
	}
	waitFor(t, "delivered", func() bool { return onlyDelivery(t, tg.g).State == store.StateDelivered })
	d := onlyDelivery(t, tg.g)
	atts, err := tg.g.Store.Attempts(d.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 4 || d.Attempts != 4 {
		t.Fatalf("attempts logged %d (delivery says %d), want 4", len(atts), d.Attempts)
	}
	for i, want := range []int{500, 503, 502, 200} {
		if atts[i].Status != want || atts[i].N != i+1 {
			t.Errorf("attempt %d: status %d n %d, want %d", i+1, atts[i].Status, atts[i].N, want)
		}
	}
	if atts[3].Outcome != "delivered" || atts[0].Outcome != "retry" || atts[0].Latency <= 0 {
		t.Errorf("attempt outcomes %+v", atts)
	}
	time.Sleep(50 * time.Millisecond)
	if n := rcv.calls.Load(); n != 4 {
		t.Errorf("receiver got %d requests, want 4", n)
	}
}

func TestBadRequestIsDeadWithoutRetry(t *testing.T) {
	rcv := newReceiver(t, func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"bad payload"}`)
	})
	tg := startGateway(t, e2eConfig(t, t.TempDir()+"/db", rcv.srv.URL, ""), nil)
	postStripe(t, tg.url, stripeEvent("evt_400"))
	waitFor(t, "dead", func() bool { return onlyDelivery(t, tg.g).State == store.StateDead })
	time.Sleep(100 * time.Millisecond)
	if n := rcv.calls.Load(); n != 1 {
		t.Errorf("receiver got %d requests, want 1 (no retry)", n)
	}
	d := onlyDelivery(t, tg.g)
	atts, _ := tg.g.Store.Attempts(d.Key)
	if len(atts) != 1 || atts[0].Status != 400 || !strings.Contains(atts[0].Response, "bad payload") {
		t.Errorf("attempts = %+v", atts)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	rcv := newReceiver(t, func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	}, status(200))
	tg := startGateway(t, e2eConfig(t, t.TempDir()+"/db", rcv.srv.URL, ""), nil)
	postStripe(t, tg.url, stripeEvent("evt_429"))
	waitFor(t, "delivered", func() bool { return onlyDelivery(t, tg.g).State == store.StateDelivered })
	reqs := rcv.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < time.Second {
		t.Errorf("second attempt %v after the 429, want at least the 1s Retry-After", gap)
	}
}

func TestStoppedMidDeliveryIsDeliveredAfterRestart(t *testing.T) {
	bothBackends(t, testStoppedMidDeliveryIsDeliveredAfterRestart)
}

func testStoppedMidDeliveryIsDeliveredAfterRestart(t *testing.T, backend string) {
	release := make(chan struct{})
	rcv := newReceiver(t, func(w http.ResponseWriter) {
		<-release // the gateway stops while this delivery is in flight
		w.WriteHeader(http.StatusOK)
	}, status(200))
	db := e2eDB(t, backend)
	cfg := e2eConfig(t, db, rcv.srv.URL, "")
	tg := startGateway(t, cfg, nil)
	postStripe(t, tg.url, stripeEvent("evt_restart"))
	waitFor(t, "first attempt in flight", func() bool { return rcv.calls.Load() == 1 })
	tg.stop() // shutdown_timeout (1s) passes with the delivery unfinished
	close(release)
	tg2 := startGateway(t, e2eConfig(t, db, rcv.srv.URL, ""), nil)
	waitFor(t, "delivered after restart", func() bool { return onlyDelivery(t, tg2.g).State == store.StateDelivered })
	reqs := rcv.requests()
	if len(reqs) != 2 || reqs[0].id != reqs[1].id {
		t.Errorf("requests %d with ids %v, want the same event twice (at least once)", len(reqs), reqs)
	}
}

func TestGracefulShutdownFinishesDeliveryInProgress(t *testing.T) {
	rcv := newReceiver(t, func(w http.ResponseWriter) {
		time.Sleep(200 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	})
	db := t.TempDir() + "/db"
	tg := startGateway(t, e2eConfig(t, db, rcv.srv.URL, ""), nil)
	postStripe(t, tg.url, stripeEvent("evt_graceful"))
	waitFor(t, "attempt in flight", func() bool { return rcv.calls.Load() == 1 })
	tg.stop()
	st, err := store.Open(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ds, _ := st.Deliveries(store.DeliveryFilter{})
	if len(ds) != 1 || ds[0].State != store.StateDelivered {
		t.Fatalf("after graceful stop: %+v, want delivered", ds)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	rcv := newReceiver(t)
	tg := startGateway(t, e2eConfig(t, t.TempDir()+"/db", rcv.srv.URL, ""), nil)
	waitFor(t, "ready", func() bool {
		resp, err := http.Get(tg.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := http.Get(tg.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	postStripe(t, tg.url, stripeEvent("evt_metrics"))
	postStripe(t, tg.url, stripeEvent("evt_metrics"))
	waitFor(t, "delivery", func() bool { return rcv.calls.Load() == 1 })
	resp, err = http.Get(tg.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`postback_notifications_received_total{source="stripe"} 2`,
		`postback_notifications_verified_total{source="stripe"} 2`,
		`postback_notifications_duplicate_total{source="stripe"} 1`,
		`postback_events_total{source="stripe",type="trial_started"} 1`,
		`postback_ingest_seconds_bucket`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	waitFor(t, "delivery metric", func() bool {
		resp, _ := http.Get(tg.url + "/metrics")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), `postback_deliveries_total{destination="hook",outcome="delivered"} 1`) &&
			strings.Contains(string(b), `postback_delivery_seconds_bucket{destination="hook"`)
	})
	// A rejected notification is counted by reason.
	req, _ := http.NewRequest(http.MethodPost, tg.url+"/webhooks/stripe", strings.NewReader(`{}`))
	req.Header.Set("Stripe-Signature", "t=1,v1=00")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	resp, _ = http.Get(tg.url + "/metrics")
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `postback_notifications_rejected_total{reason="invalid_signature",source="stripe"} 1`) {
		t.Errorf("rejection not counted by reason")
	}
}

func TestLogsNeverContainSecretsOrEmails(t *testing.T) {
	var logs safeBuffer
	rcv := newReceiver(t, status(500), status(200))
	cfg := e2eConfig(t, t.TempDir()+"/db", rcv.srv.URL, "")
	tg := startGateway(t, cfg, &logs)
	body := bytes.Replace(stripeEvent("evt_logs"), []byte(`"customer":"cus_1"`), []byte(`"customer":"cus_1","customer_email":"Jane.Doe@example.com"`), 1)
	postStripe(t, tg.url, body)
	req, _ := http.NewRequest(http.MethodPost, tg.url+"/webhooks/stripe?key="+e2eStripeSecret, strings.NewReader(`{}`))
	req.Header.Set("Stripe-Signature", "t=1,v1="+e2eStripeSecret)
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	waitFor(t, "delivered", func() bool { return onlyDelivery(t, tg.g).State == store.StateDelivered })
	tg.stop()
	out := logs.String()
	for _, s := range append(cfg.Secrets(), "Jane.Doe@example.com", "jane.doe@example.com") {
		if strings.Contains(out, s) {
			t.Errorf("logs contain %q", s)
		}
	}
	if !strings.Contains(out, "notification accepted") {
		t.Error("expected request logs")
	}
}

func TestSecondProcessOnSameDatabaseFails(t *testing.T) {
	rcv := newReceiver(t)
	db := t.TempDir() + "/db"
	startGateway(t, e2eConfig(t, db, rcv.srv.URL, ""), nil)
	cfg := e2eConfig(t, db, rcv.srv.URL, "")
	start := time.Now()
	_, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("err = %v, want a clear 'in use' error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v: must fail fast, not hang", time.Since(start))
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
