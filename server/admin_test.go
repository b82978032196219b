package server_test

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
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/config"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/server"
	"github.com/postback/postback/store"
)

const (
	adminToken   = "admin-token-for-tests-0123456789"
	adminStripe  = "whsec_admin_tests_stripe_secret"
	adminUser    = "user-1"
	adminAppID   = "com.example.app"
	adminOtherID = "com.example.other"
)

var adminHookSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))

// sink is a destination receiver whose answer the test switches.
type sink struct {
	srv    *httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	ids    []string // webhook-id of each request
	bodies [][]byte
}

func newSink(t *testing.T, status int) *sink { return newSinkRetryAfter(t, status, "") }

// newSinkRetryAfter answers with a Retry-After header when retryAfter is set.
func newSinkRetryAfter(t *testing.T, status int, retryAfter string) *sink {
	s := &sink{}
	s.status.Store(int32(status))
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.ids = append(s.ids, r.Header.Get("webhook-id"))
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(int(s.status.Load()))
		fmt.Fprintf(w, `{"answer":%d}`, s.status.Load())
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

type adminHarness struct {
	g     *server.Gateway
	url   string // public listener
	admin string // admin listener (== url unless separate)
}

type harnessOpts struct {
	token    string
	separate bool
	dsn      string // PostgreSQL database; BoltDB in a temporary folder when empty
	dests    string // more destinations, appended to the YAML list
	reload   func() (*config.Config, error)
}

// eachBackend runs an admin test on BoltDB and on PostgreSQL: the admin
// API, console and CLI behave the same on both.
func eachBackend(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("bolt", func(t *testing.T) { fn(t, "") })
	t.Run("postgres", func(t *testing.T) { fn(t, pgtest.Database(t)) })
}

// storageYAML is the storage block of a test gateway.
func storageYAML(t *testing.T, dsn string) string {
	if dsn != "" {
		return fmt.Sprintf("{driver: postgres, dsn: %q, pool_size: 8}", dsn)
	}
	return fmt.Sprintf("{path: %q}", t.TempDir()+"/pb.db")
}

func startAdmin(t *testing.T, a, b *sink, o harnessOpts) *adminHarness {
	t.Helper()
	tok := o.token
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 2s}
storage: %s
admin: {token: %q}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: %s}
destinations:
  - name: backend
    type: webhook
    endpoint: %q
    secret: %q
    match: {environments: [production, sandbox]}
    retry: {max_attempts: 3}
  - name: mmp
    type: webhook
    endpoint: %q
    secret: %q
    match: {environments: [production, sandbox]}
    retry: {max_attempts: 3}
`, storageYAML(t, o.dsn), tok, adminStripe, adminAppID, a.srv.URL, adminHookSecret, b.srv.URL, adminHookSecret) + o.dests
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := server.Options{
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Listener: ln,
		// The breaker is kept out of the way: tests fail deliveries on purpose.
		Dispatch: dispatch.Options{BackoffBase: time.Millisecond, BackoffCap: 5 * time.Millisecond, Poll: 20 * time.Millisecond, BreakerFailures: 1000},
		Reload:   o.reload,
	}
	h := &adminHarness{url: "http://" + ln.Addr().String()}
	h.admin = h.url
	if o.separate {
		aln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		opts.AdminListener = aln
		h.admin = "http://" + aln.Addr().String()
	}
	g, err := server.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.g = g
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway stopped with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("gateway did not stop")
		}
	})
	waitUntil(t, "gateway ready", func() bool {
		resp, err := http.Get(h.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return h
}

func waitUntil(t *testing.T, what string, cond func() bool) {
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

// stripeSub is one subscription event of the test story.
type stripeSub struct {
	id, sub, user, app, status, prevStatus string
	live                                   bool
	name                                   string // customer name, personal data
}

func (s stripeSub) body() []byte {
	typ := "customer.subscription.created"
	prev := ""
	if s.prevStatus != "" {
		typ = "customer.subscription.updated"
		prev = fmt.Sprintf(`,"previous_attributes":{"status":%q}`, s.prevStatus)
	}
	md := fmt.Sprintf(`"app_user_id":%q,"email":"Jane.Doe@example.com","shipping_name":%q`, s.user, s.name)
	if s.app != "" {
		md += fmt.Sprintf(`,"app_id":%q`, s.app)
	}
	return fmt.Appendf(nil, `{"id":%q,"object":"event","api_version":"2023-10-16","created":%d,"livemode":%t,"type":%q,"data":{"object":{"id":%q,"object":"subscription","status":%q,"customer":"cus_%s","currency":"usd","trial_end":1765000000,"metadata":{%s},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}%s}}`,
		s.id, time.Now().Unix(), s.live, typ, s.sub, s.status, s.user, md, prev)
}

func (h *adminHarness) post(t *testing.T, s stripeSub) {
	t.Helper()
	body := s.body()
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: adminStripe, Timestamp: time.Now()}).Header
	req, _ := http.NewRequest(http.MethodPost, h.url+"/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stripe %s: HTTP %d %s", s.id, resp.StatusCode, b)
	}
}

// call performs an admin request with tok ("" for none) and decodes a JSON
// answer into out when out is not nil.
func (h *adminHarness) call(t *testing.T, tok, method, path string, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.admin+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	if resp.StatusCode >= 400 {
		var eb struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(data, &eb); err != nil || eb.Error.Code == "" {
			t.Errorf("%s %s: HTTP %d body is not the JSON error shape: %s", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode
}

func (h *adminHarness) get(t *testing.T, path string, out any) int {
	t.Helper()
	return h.call(t, adminToken, http.MethodGet, path, "", out)
}

type eventList struct {
	Events []struct {
		ID             string `json:"id"`
		Type           string `json:"type"`
		AppID          string `json:"app_id"`
		Environment    string `json:"environment"`
		SubscriptionID string `json:"subscription_id"`
		User           struct {
			AppUserID string `json:"app_user_id"`
		} `json:"user"`
		ReceivedAt time.Time `json:"received_at"`
	} `json:"events"`
	Next string `json:"next"`
}

func (l eventList) ids() []string {
	var out []string
	for _, e := range l.Events {
		out = append(out, e.ID)
	}
	return out
}

func (h *adminHarness) deliveries(t *testing.T, q string) []store.Delivery {
	t.Helper()
	var out struct {
		Deliveries []store.Delivery `json:"deliveries"`
	}
	if code := h.get(t, "/admin/api/deliveries?"+q, &out); code != http.StatusOK {
		t.Fatalf("GET deliveries?%s: HTTP %d", q, code)
	}
	return out.Deliveries
}

func TestAdminAuth(t *testing.T) {
	a, b := newSink(t, 200), newSink(t, 200)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken})
	endpoints := []struct{ method, path, body string }{
		{"GET", "/admin/api/events", ""},
		{"GET", "/admin/api/events/evt_x", ""},
		{"GET", "/admin/api/deliveries", ""},
		{"GET", "/admin/api/deliveries/evt_x%7Cbackend", ""},
		{"POST", "/admin/api/deliveries/replay", `{"key":"evt_x|backend"}`},
		{"POST", "/admin/api/replay?dry_run=true", ""},
		{"GET", "/admin/api/replay", ""},
		{"GET", "/admin/api/replay/1", ""},
		{"POST", "/admin/api/reprocess?dry_run=true", ""},
		{"GET", "/admin/api/destinations", ""},
		{"POST", "/admin/api/destinations/backend/test", ""},
		{"GET", "/admin/api/nothing-here", ""},
	}
	for _, e := range endpoints {
		t.Run(e.method+" "+e.path, func(t *testing.T) {
			for _, c := range []struct {
				name, header string
				unauth       bool
			}{
				{"no token", "", true},
				{"wrong token", "Bearer " + adminToken + "x", true},
				{"prefix of token", "Bearer " + adminToken[:10], true},
				{"basic scheme", "Basic " + adminToken, true},
				{"right token", "Bearer " + adminToken, false},
			} {
				req, _ := http.NewRequest(e.method, h.admin+e.path, strings.NewReader(e.body))
				if c.header != "" {
					req.Header.Set("Authorization", c.header)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if got := resp.StatusCode == http.StatusUnauthorized; got != c.unauth {
					t.Errorf("%s: HTTP %d, want unauthorized=%v", c.name, resp.StatusCode, c.unauth)
				}
			}
		})
	}
}

func TestAdminOffWithoutToken(t *testing.T) {
	a, b := newSink(t, 200), newSink(t, 200)
	h := startAdmin(t, a, b, harnessOpts{token: ""})
	for _, p := range []string{"/admin/api/events", "/admin/", "/admin/login"} {
		t.Run(p, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, h.admin+p, nil)
			req.Header.Set("Authorization", "Bearer ")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("HTTP %d, want 404 (admin off)", resp.StatusCode)
			}
		})
	}
}

func TestAdminSeparateListener(t *testing.T) {
	a, b := newSink(t, 200), newSink(t, 200)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, separate: true})
	if code := h.get(t, "/admin/api/events", nil); code != http.StatusOK {
		t.Errorf("admin listener: HTTP %d, want 200", code)
	}
	req, _ := http.NewRequest(http.MethodGet, h.url+"/admin/api/events", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("public listener serves the admin API: HTTP %d, want 404", resp.StatusCode)
	}
	resp, err = http.Get(h.admin + "/admin/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("console on the admin listener: HTTP %d", resp.StatusCode)
	}
}

// story posts five events with known attributes and returns the time
// between the second and the third (for time-range filters).
func story(t *testing.T, h *adminHarness) (mid time.Time) {
	t.Helper()
	h.post(t, stripeSub{id: "evt_1", sub: "sub_A", user: "user-1", status: "trialing", live: true})
	h.post(t, stripeSub{id: "evt_2", sub: "sub_B", user: "user-2", status: "active", live: true})
	time.Sleep(5 * time.Millisecond)
	mid = time.Now()
	time.Sleep(5 * time.Millisecond)
	h.post(t, stripeSub{id: "evt_3", sub: "sub_A", user: "user-1", status: "active", prevStatus: "trialing", live: true})
	h.post(t, stripeSub{id: "evt_4", sub: "sub_C", user: "user-3", status: "trialing", live: false})
	h.post(t, stripeSub{id: "evt_5", sub: "sub_D", user: "user-4", status: "active", live: true, app: adminOtherID})
	return mid
}

func TestAdminEventFilters(t *testing.T) { eachBackend(t, testAdminEventFilters) }

func testAdminEventFilters(t *testing.T, dsn string) {
	a, b := newSink(t, 200), newSink(t, 200)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	mid := story(t, h)

	var all eventList
	if code := h.get(t, "/admin/api/events", &all); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if len(all.Events) != 5 {
		t.Fatalf("%d events, want 5", len(all.Events))
	}
	for i := 1; i < len(all.Events); i++ {
		// The index orders by millisecond, then id.
		if all.Events[i].ReceivedAt.Truncate(time.Millisecond).After(all.Events[i-1].ReceivedAt.Truncate(time.Millisecond)) {
			t.Errorf("events not newest first: %v after %v", all.Events[i].ReceivedAt, all.Events[i-1].ReceivedAt)
		}
	}
	tests := []struct {
		name  string
		query string
		check func(e eventList) bool
		want  int
	}{
		{"source", "source=stripe", nil, 5},
		{"other source", "source=apple", nil, 0},
		{"type", "type=trial_started", func(l eventList) bool { return l.Events[0].Type == "trial_started" }, 2},
		{"type converted", "type=trial_converted", func(l eventList) bool { return l.Events[0].SubscriptionID == "sub_A" }, 1},
		{"app", "app=" + adminOtherID, func(l eventList) bool { return l.Events[0].AppID == adminOtherID }, 1},
		{"environment", "environment=sandbox", func(l eventList) bool { return l.Events[0].Environment == "sandbox" }, 1},
		{"user", "user=user-1", func(l eventList) bool { return l.Events[0].User.AppUserID == "user-1" }, 2},
		{"subscription", "subscription=sub_B", func(l eventList) bool { return l.Events[0].SubscriptionID == "sub_B" }, 1},
		{"combined", "user=user-1&type=trial_started", nil, 1},
		{"since", "since=" + url.QueryEscape(mid.UTC().Format(time.RFC3339Nano)), nil, 3},
		{"until", "until=" + url.QueryEscape(mid.UTC().Format(time.RFC3339Nano)), nil, 2},
		{"since duration", "since=1h", nil, 5},
		{"no match", "user=nobody", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l eventList
			if code := h.get(t, "/admin/api/events?"+tc.query, &l); code != http.StatusOK {
				t.Fatalf("HTTP %d", code)
			}
			if len(l.Events) != tc.want {
				t.Fatalf("got %d events, want %d", len(l.Events), tc.want)
			}
			if tc.check != nil && !tc.check(l) {
				t.Errorf("wrong events: %+v", l.Events)
			}
		})
	}

	t.Run("cursor pagination", func(t *testing.T) {
		var got []string
		q := "limit=2"
		pages := 0
		for {
			var l eventList
			if code := h.get(t, "/admin/api/events?"+q, &l); code != http.StatusOK {
				t.Fatalf("HTTP %d", code)
			}
			pages++
			got = append(got, l.ids()...)
			if l.Next == "" {
				break
			}
			q = "limit=2&cursor=" + l.Next
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
		}
		if pages != 3 || strings.Join(got, ",") != strings.Join(all.ids(), ",") {
			t.Errorf("pages %d, ids %v, want 3 pages of %v", pages, got, all.ids())
		}
	})

	for _, bad := range []struct{ name, query string }{
		{"unknown type", "type=bogus"},
		{"limit zero", "limit=0"},
		{"limit too big", "limit=501"},
		{"limit not a number", "limit=ten"},
		{"bad since", "since=yesterday"},
		{"bad until", "until=2026-13-45"},
	} {
		t.Run("bad "+bad.name, func(t *testing.T) {
			if code := h.get(t, "/admin/api/events?"+bad.query, nil); code != http.StatusBadRequest {
				t.Errorf("HTTP %d, want 400", code)
			}
		})
	}
}

type eventView struct {
	Event struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"event"`
	Notification json.RawMessage `json:"notification"`
	Deliveries   []struct {
		store.Delivery
		Attempts []store.Attempt `json:"attempt_log"`
	} `json:"deliveries"`
}

func TestAdminEventDetail(t *testing.T) { eachBackend(t, testAdminEventDetail) }

func testAdminEventDetail(t *testing.T, dsn string) {
	a, b := newSink(t, 200), newSink(t, 400)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	h.post(t, stripeSub{id: "evt_pii", sub: "sub_P", user: "user-p", status: "active", live: true, name: "Jane Doe"})
	var l eventList
	h.get(t, "/admin/api/events", &l)
	if len(l.Events) != 1 {
		t.Fatalf("%d events", len(l.Events))
	}
	id := l.Events[0].ID
	waitUntil(t, "both deliveries final", func() bool {
		return len(h.deliveries(t, "state=delivered,dead")) == 2
	})
	var v eventView
	if code := h.get(t, "/admin/api/events/"+id, &v); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if v.Event.ID != id || v.Event.Type != "subscription_started" {
		t.Errorf("event %+v", v.Event)
	}
	n := string(v.Notification)
	for _, leak := range []string{"Jane", "jane.doe@example.com", "Jane.Doe@example.com", adminStripe} {
		if strings.Contains(n, leak) {
			t.Errorf("notification shows %q: %s", leak, n)
		}
	}
	if !strings.Contains(n, `"key":"evt_pii"`) || !strings.Contains(n, "[redacted]") {
		t.Errorf("notification lacks its key or redaction marker: %s", n)
	}
	if len(v.Deliveries) != 2 {
		t.Fatalf("%d deliveries, want 2", len(v.Deliveries))
	}
	for _, d := range v.Deliveries {
		if len(d.Attempts) != 1 {
			t.Fatalf("%s: %d attempts, want 1", d.Destination, len(d.Attempts))
		}
		at := d.Attempts[0]
		wantState, wantStatus := "delivered", 200
		if d.Destination == "mmp" {
			wantState, wantStatus = "dead", 400
		}
		if d.State != wantState || at.Status != wantStatus {
			t.Errorf("%s: state %s status %d, want %s %d", d.Destination, d.State, at.Status, wantState, wantStatus)
		}
		if !strings.HasPrefix(at.Request, "POST http://127.0.0.1") || at.Latency <= 0 || !strings.Contains(at.Response, `"answer"`) {
			t.Errorf("%s: attempt lacks request summary, latency or response excerpt: %+v", d.Destination, at)
		}
	}
	t.Run("one delivery", func(t *testing.T) {
		var d struct {
			store.Delivery
			Attempts []store.Attempt `json:"attempt_log"`
		}
		if code := h.get(t, "/admin/api/deliveries/"+url.PathEscape(id+"|mmp"), &d); code != http.StatusOK {
			t.Fatalf("HTTP %d", code)
		}
		if d.Destination != "mmp" || d.State != "dead" || len(d.Attempts) != 1 {
			t.Errorf("delivery %+v", d)
		}
	})
	t.Run("unknown event", func(t *testing.T) {
		if code := h.get(t, "/admin/api/events/evt_nope", nil); code != http.StatusNotFound {
			t.Errorf("HTTP %d, want 404", code)
		}
	})
	t.Run("unknown delivery", func(t *testing.T) {
		if code := h.get(t, "/admin/api/deliveries/evt_nope%7Cmmp", nil); code != http.StatusNotFound {
			t.Errorf("HTTP %d, want 404", code)
		}
	})
}

func TestAdminDeliveryFilters(t *testing.T) { eachBackend(t, testAdminDeliveryFilters) }

func testAdminDeliveryFilters(t *testing.T, dsn string) {
	a, b := newSink(t, 200), newSink(t, 422)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	h.post(t, stripeSub{id: "evt_1", sub: "sub_A", user: "u1", status: "active", live: true})
	time.Sleep(5 * time.Millisecond)
	mid := time.Now()
	time.Sleep(5 * time.Millisecond)
	h.post(t, stripeSub{id: "evt_2", sub: "sub_B", user: "u2", status: "active", live: true})
	waitUntil(t, "all final", func() bool { return len(h.deliveries(t, "state=delivered,dead")) == 4 })
	tests := []struct {
		name, query string
		want        int
	}{
		{"all", "", 4},
		{"dead", "state=dead", 2},
		{"delivered", "state=delivered", 2},
		{"two states", "state=dead,delivered", 4},
		{"pending", "state=pending", 0},
		{"destination", "destination=mmp", 2},
		{"destination and state", "destination=mmp&state=delivered", 0},
		{"reason", "reason=http_422", 2},
		{"reason no match", "reason=http_500", 0},
		{"since", "since=" + url.QueryEscape(mid.UTC().Format(time.RFC3339Nano)), 2},
		{"until", "until=" + url.QueryEscape(mid.UTC().Format(time.RFC3339Nano)), 2},
		{"limit", "limit=1", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.deliveries(t, tc.query); len(got) != tc.want {
				t.Errorf("got %d deliveries, want %d: %+v", len(got), tc.want, got)
			}
		})
	}
	for _, bad := range []string{"state=lost", "limit=0", "limit=1001", "since=soon"} {
		t.Run("bad "+bad, func(t *testing.T) {
			if code := h.get(t, "/admin/api/deliveries?"+bad, nil); code != http.StatusBadRequest {
				t.Errorf("HTTP %d, want 400", code)
			}
		})
	}
}

func TestAdminReplayDeadThenDelivered(t *testing.T) { eachBackend(t, testAdminReplayDeadThenDelivered) }

func testAdminReplayDeadThenDelivered(t *testing.T, dsn string) {
	a, b := newSink(t, 200), newSink(t, 400)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	h.post(t, stripeSub{id: "evt_1", sub: "sub_A", user: "u1", status: "active", live: true})
	var dead []store.Delivery
	waitUntil(t, "mmp dead", func() bool {
		dead = h.deliveries(t, "state=dead&destination=mmp")
		return len(dead) == 1
	})
	key := dead[0].Key
	b.status.Store(200)

	var d store.Delivery
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/deliveries/replay", fmt.Sprintf(`{"key":%q}`, key), &d); code != http.StatusAccepted {
		t.Fatalf("replay: HTTP %d", code)
	}
	if d.State != store.StatePending {
		t.Errorf("replayed delivery state %s, want pending", d.State)
	}
	var v struct {
		store.Delivery
		Attempts []store.Attempt `json:"attempt_log"`
	}
	waitUntil(t, "replayed delivery delivered", func() bool {
		h.get(t, "/admin/api/deliveries/"+url.PathEscape(key), &v)
		return v.State == store.StateDelivered
	})
	if len(v.Attempts) != 2 || v.Attempts[0].Status != 400 || v.Attempts[1].Status != 200 {
		t.Errorf("attempt log %+v, want 400 then 200", v.Attempts)
	}
	if b.count() != 2 {
		t.Errorf("mmp received %d requests, want 2", b.count())
	}
	if a.count() != 1 {
		t.Errorf("backend received %d requests, want 1 (not replayed)", a.count())
	}

	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"unknown key", `{"key":"evt_nope|mmp"}`, http.StatusNotFound},
		{"missing key", `{}`, http.StatusBadRequest},
		{"not JSON", `key=1`, http.StatusBadRequest},
		{"unknown field", `{"key":"x","force":true}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := h.call(t, adminToken, http.MethodPost, "/admin/api/deliveries/replay", tc.body, nil); code != tc.want {
				t.Errorf("HTTP %d, want %d", code, tc.want)
			}
		})
	}
}

type replayJob struct {
	ID       string `json:"id"`
	Total    int    `json:"total"`
	Done     int    `json:"done"`
	Finished bool   `json:"finished"`
	Error    string `json:"error"`
}

func TestAdminBulkReplayDryRunEqualsRealRun(t *testing.T) {
	eachBackend(t, testAdminBulkReplayDryRunEqualsRealRun)
}

func testAdminBulkReplayDryRunEqualsRealRun(t *testing.T, dsn string) {
	a, b := newSink(t, 500), newSink(t, 404)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	for i := range 4 {
		h.post(t, stripeSub{id: fmt.Sprintf("evt_%d", i), sub: fmt.Sprintf("sub_%d", i), user: "u", status: "active", live: true})
	}
	// backend: 500 three times (max_attempts) -> dead with max_attempts;
	// mmp: 404 -> dead at once.
	waitUntil(t, "8 dead", func() bool { return len(h.deliveries(t, "state=dead")) == 8 })

	dry := func(q string) int {
		t.Helper()
		var out struct {
			DryRun bool `json:"dry_run"`
			Count  int  `json:"count"`
		}
		if code := h.call(t, adminToken, http.MethodPost, "/admin/api/replay?dry_run=true&"+q, "", &out); code != http.StatusOK || !out.DryRun {
			t.Fatalf("dry run %s: HTTP %d %+v", q, code, out)
		}
		return out.Count
	}
	for _, tc := range []struct {
		name, query string
		want        int
	}{
		{"all dead", "", 8},
		{"destination", "destination=mmp", 4},
		{"reason", "reason=max_attempts", 4},
		{"reason http_404", "reason=http_404", 4},
		{"state delivered", "state=delivered", 0},
		{"since future", "since=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), 0},
	} {
		t.Run("dry run "+tc.name, func(t *testing.T) {
			if got := dry(tc.query); got != tc.want {
				t.Errorf("count %d, want %d", got, tc.want)
			}
		})
	}

	want := dry("destination=mmp")
	before := b.count()
	b.status.Store(200)
	var job replayJob
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/replay?destination=mmp&rate_per_second=200", "", &job); code != http.StatusAccepted {
		t.Fatalf("replay: HTTP %d", code)
	}
	if job.ID == "" || job.Total != want {
		t.Fatalf("job %+v, want total %d", job, want)
	}
	waitUntil(t, "job finished", func() bool {
		h.get(t, "/admin/api/replay/"+job.ID, &job)
		return job.Finished
	})
	if job.Done != want || job.Error != "" {
		t.Errorf("job %+v, want %d done", job, want)
	}
	waitUntil(t, "replayed deliveries delivered", func() bool {
		return len(h.deliveries(t, "state=delivered&destination=mmp")) == want
	})
	if got := b.count() - before; got != want {
		t.Errorf("mmp received %d replays, want %d (the dry-run count)", got, want)
	}
	if got := len(h.deliveries(t, "state=dead&destination=backend")); got != 4 {
		t.Errorf("backend dead %d, want 4 (not in the filter)", got)
	}
	var jobs struct {
		Jobs []replayJob `json:"jobs"`
	}
	if code := h.get(t, "/admin/api/replay", &jobs); code != http.StatusOK || len(jobs.Jobs) != 1 || jobs.Jobs[0].ID != job.ID {
		t.Errorf("job list HTTP %d %+v", code, jobs)
	}
	for _, tc := range []struct {
		name, method, path string
		want               int
	}{
		{"unknown job", "GET", "/admin/api/replay/999", http.StatusNotFound},
		{"rate zero", "POST", "/admin/api/replay?rate_per_second=0", http.StatusBadRequest},
		{"rate not a number", "POST", "/admin/api/replay?rate_per_second=fast", http.StatusBadRequest},
		{"bad state", "POST", "/admin/api/replay?state=gone", http.StatusBadRequest},
		{"bad dry_run", "POST", "/admin/api/replay?dry_run=maybe", http.StatusBadRequest},
		{"bad since", "POST", "/admin/api/replay?since=then", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := h.call(t, adminToken, tc.method, tc.path, "", nil); code != tc.want {
				t.Errorf("HTTP %d, want %d", code, tc.want)
			}
		})
	}
}

func TestAdminDestinationsAndTestEvent(t *testing.T) {
	eachBackend(t, testAdminDestinationsAndTestEvent)
}

func testAdminDestinationsAndTestEvent(t *testing.T, dsn string) {
	// mmp asks to be retried in an hour: its delivery stays queued.
	a, b := newSink(t, 200), newSinkRetryAfter(t, 503, "3600")
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	h.post(t, stripeSub{id: "evt_1", sub: "sub_A", user: "u1", status: "active", live: true})
	waitUntil(t, "backend delivered", func() bool { return len(h.deliveries(t, "state=delivered")) == 1 })
	waitUntil(t, "mmp retrying", func() bool { return len(h.deliveries(t, "state=retrying&destination=mmp")) == 1 })

	var out struct {
		Destinations []struct {
			Name      string                  `json:"name"`
			Type      string                  `json:"type"`
			Circuit   string                  `json:"circuit"`
			Paused    bool                    `json:"paused"`
			LastError string                  `json:"last_error"`
			Success5m struct{ OK, Total int } `json:"success_5m"`
			Success1h struct{ OK, Total int } `json:"success_1h"`
			Queue     struct {
				Depth int `json:"depth"`
			} `json:"queue"`
			OldestPending float64 `json:"oldest_pending_seconds"`
		} `json:"destinations"`
	}
	if code := h.get(t, "/admin/api/destinations", &out); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if len(out.Destinations) != 2 || out.Destinations[0].Name != "backend" || out.Destinations[1].Name != "mmp" {
		t.Fatalf("destinations %+v", out.Destinations)
	}
	be, mm := out.Destinations[0], out.Destinations[1]
	if be.Type != "webhook" || be.Circuit != "closed" || be.Success5m.OK != 1 || be.Success1h.Total != 1 || be.Queue.Depth != 0 {
		t.Errorf("backend %+v", be)
	}
	if mm.Queue.Depth != 1 || mm.OldestPending <= 0 || mm.Success5m.OK != 0 || mm.Success5m.Total < 1 || !strings.Contains(mm.LastError, "503") {
		t.Errorf("mmp (retrying) %+v", mm)
	}

	var res struct {
		Tested  bool   `json:"tested"`
		Passed  bool   `json:"passed"`
		Where   string `json:"where"`
		Outcome string `json:"outcome"`
		Status  int    `json:"status"`
		Event   struct {
			ID          string `json:"id"`
			Environment string `json:"environment"`
		} `json:"event"`
	}
	before := a.count()
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/destinations/backend/test", "", &res); code != http.StatusOK {
		t.Fatalf("test event: HTTP %d", code)
	}
	if res.Outcome != "delivered" || res.Status != 200 || res.Event.Environment != "sandbox" || !res.Tested || !res.Passed || res.Where == "" {
		t.Errorf("test event %+v", res)
	}
	if a.count() != before+1 {
		t.Errorf("backend received %d, want %d", a.count(), before+1)
	}
	a.mu.Lock()
	last := a.ids[len(a.ids)-1]
	a.mu.Unlock()
	if last != res.Event.ID {
		t.Errorf("backend got webhook-id %s, want the test event %s", last, res.Event.ID)
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/destinations/nowhere/test", "", nil); code != http.StatusNotFound {
		t.Errorf("unknown destination: HTTP %d, want 404", code)
	}
	// The test event bypasses the store: no event is listed for it.
	var l eventList
	h.get(t, "/admin/api/events?environment=sandbox", &l)
	if len(l.Events) != 0 {
		t.Errorf("test event was stored: %+v", l.Events)
	}
}

func TestAdminReprocess(t *testing.T) { eachBackend(t, testAdminReprocess) }

func testAdminReprocess(t *testing.T, dsn string) {
	a, b := newSink(t, 200), newSink(t, 200)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	h.post(t, stripeSub{id: "evt_1", sub: "sub_A", user: "u1", status: "active", live: true})
	h.post(t, stripeSub{id: "evt_2", sub: "sub_B", user: "u2", status: "incomplete", live: true}) // ignored
	type result struct {
		DryRun bool `json:"dry_run"`
		Result struct {
			Scanned   int `json:"scanned"`
			Matched   int `json:"matched"`
			NewEvents int `json:"new_events"`
			Existing  int `json:"existing_events"`
		} `json:"result"`
	}
	for _, tc := range []struct {
		name, query       string
		dry               bool
		matched, newEvent int
		existing          int
	}{
		{"dry run default statuses", "dry_run=true", true, 1, 0, 0},
		{"dry run mapped", "dry_run=true&status=mapped", true, 1, 0, 0},
		{"dry run other source", "dry_run=true&source=apple", true, 0, 0, 0},
		{"real run mapped", "status=mapped", false, 1, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r result
			if code := h.call(t, adminToken, http.MethodPost, "/admin/api/reprocess?"+tc.query, "", &r); code != http.StatusOK {
				t.Fatalf("HTTP %d", code)
			}
			if r.DryRun != tc.dry || r.Result.Matched != tc.matched || r.Result.NewEvents != tc.newEvent || r.Result.Existing != tc.existing {
				t.Errorf("got %+v", r)
			}
		})
	}
	for _, bad := range []string{"status=lost", "since=whenever", "until=x"} {
		t.Run("bad "+bad, func(t *testing.T) {
			if code := h.call(t, adminToken, http.MethodPost, "/admin/api/reprocess?"+bad, "", nil); code != http.StatusBadRequest {
				t.Errorf("HTTP %d, want 400", code)
			}
		})
	}
}

// TestAdminTestEventUsesValidationPath: a destination with a validation
// path (Meta's test_event_code) gets the test event there, and the admin
// API reports it tested and passed, with the path, Meta's answer verbatim
// and where to look; without a test code it is not tested and not passed,
// and nothing reaches Meta.
func TestAdminTestEventUsesValidationPath(t *testing.T) {
	var mu sync.Mutex
	var forms []url.Values
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f, _ := url.ParseQuery(string(body))
		mu.Lock()
		forms = append(forms, f)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"events_received":1,"messages":[],"fbtrace_id":"AbCd"}`)
	}))
	defer meta.Close()
	a, b := newSink(t, 200), newSink(t, 200)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dests: fmt.Sprintf(`
  - name: meta-test
    type: meta
    endpoint: %q
    dataset_id: "1234567890123456"
    access_token: meta-admin-token
    test_event_code: TEST4821
    match: {apps: [com.example.none]}
  - name: meta-untested
    type: meta
    endpoint: %q
    dataset_id: "1234567890123456"
    access_token: meta-admin-token
    match: {apps: [com.example.none]}
`, meta.URL, meta.URL)})
	var res struct {
		Tested   bool   `json:"tested"`
		Passed   bool   `json:"passed"`
		Path     string `json:"path"`
		Where    string `json:"where"`
		Outcome  string `json:"outcome"`
		Response string `json:"response"`
		Reason   string `json:"reason"`
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/destinations/meta-test/test", "", &res); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if !res.Tested || !res.Passed || res.Outcome != "delivered" || res.Response != `{"events_received":1,"messages":[],"fbtrace_id":"AbCd"}` ||
		!strings.Contains(res.Path, "test_event_code") || !strings.Contains(res.Where, "Test events") {
		t.Errorf("report %+v", res)
	}
	mu.Lock()
	if len(forms) != 1 || forms[0].Get("test_event_code") != "TEST4821" {
		t.Errorf("Meta got %v", forms)
	}
	mu.Unlock()
	res = struct {
		Tested   bool   `json:"tested"`
		Passed   bool   `json:"passed"`
		Path     string `json:"path"`
		Where    string `json:"where"`
		Outcome  string `json:"outcome"`
		Response string `json:"response"`
		Reason   string `json:"reason"`
	}{}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/destinations/meta-untested/test", "", &res); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if res.Tested || res.Passed || !strings.HasPrefix(res.Reason, "not_tested") {
		t.Errorf("report %+v, want not tested", res)
	}
	mu.Lock()
	if len(forms) != 1 {
		t.Errorf("an untested destination reached Meta: %d requests", len(forms))
	}
	mu.Unlock()
}
