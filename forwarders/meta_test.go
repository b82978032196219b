package forwarders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

const (
	metaTestToken   = "EAAtestTOKENsecret123"
	metaTestDataset = "1234567890123456"
)

var metaTestBlock = "dataset_id: \"" + metaTestDataset + "\"\naccess_token: " + metaTestToken + "\n"

func newTestMeta(t *testing.T, rec *adRecorder, block string, names map[string]string) *Meta {
	t.Helper()
	f, err := NewMeta(adSettings(t, "meta", rec.srv.URL, block, names, rec.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	return f.(*Meta)
}

// metaForm decodes a Conversions API request: its form fields and events.
func metaForm(t *testing.T, r adRequest) (url.Values, []map[string]any) {
	t.Helper()
	form, err := url.ParseQuery(string(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	var data []map[string]any
	if err := json.Unmarshal([]byte(form.Get("data")), &data); err != nil {
		t.Fatalf("data is not a JSON array: %v", err)
	}
	return form, data
}

func metaEventIDs(data []map[string]any) map[string]bool {
	ids := map[string]bool{}
	for _, d := range data {
		ids[d["event_id"].(string)] = true
	}
	return ids
}

func TestMetaGolden(t *testing.T) {
	for _, name := range adGoldenNames {
		t.Run(name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) {
				return 200, `{"events_received":1,"messages":[],"fbtrace_id":"AbCdEf"}`
			})
			// refund has no Meta standard event: the destination names it.
			m := newTestMeta(t, rec, metaTestBlock+"test_event_code: TEST4821\n", map[string]string{"refund": "Refund"})
			res := m.Send(context.Background(), []Item{{Key: "d1", Attempt: 1, Event: adFixture(name)}})
			if res[0].Outcome != Delivered {
				t.Fatalf("outcome = %s (%s, %v)", res[0].Outcome, res[0].Reason, res[0].Err)
			}
			reqs := rec.all()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			form, _ := metaForm(t, r)
			data := json.RawMessage(form.Get("data")) // the exact bytes sent, re-indented
			if got := form.Get("access_token"); got != metaTestToken {
				t.Errorf("access_token = %q, want the configured token", got)
			}
			if r.Query != "" {
				t.Errorf("query = %q, want none (the token travels in the body)", r.Query)
			}
			if strings.Contains(res[0].Request, metaTestToken) {
				t.Errorf("request summary leaks the token: %s", res[0].Request)
			}
			checkGolden(t, "meta/"+name+".json", indentJSON(t, map[string]any{
				"method": r.Method, "path": r.Path, "content_type": r.Header.Get("Content-Type"),
				"form": map[string]any{"access_token": "[checked, not stored]", "test_event_code": form.Get("test_event_code"), "data": data},
			}))
		})
	}
}

func TestMetaBatchOf2500IsThreeRequests(t *testing.T) {
	rec := newAdRecorder(t, nil)
	m := newTestMeta(t, rec, metaTestBlock, nil)
	items := make([]Item, 2500)
	for i := range items {
		e := adFixture("trial_started")
		e.ID = fmt.Sprintf("evt_%04d", i)
		items[i] = Item{Key: e.ID, Attempt: 1, Event: e}
	}
	var delivered int
	for _, chunk := range Chunk(items, m.Limits().BatchSize) {
		for _, r := range m.Send(context.Background(), chunk) {
			if r.Outcome == Delivered {
				delivered++
			}
		}
	}
	reqs := rec.all()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, want := range []int{1000, 1000, 500} {
		if _, data := metaForm(t, reqs[i]); len(data) != want {
			t.Errorf("request %d holds %d events, want %d", i, len(data), want)
		}
	}
	if delivered != 2500 {
		t.Errorf("delivered %d, want 2500", delivered)
	}
}

func TestMetaTooOldNeverBatched(t *testing.T) {
	rec := newAdRecorder(t, nil)
	m := newTestMeta(t, rec, metaTestBlock, nil)
	fresh, old := adFixture("trial_started"), adFixture("trial_converted")
	old.OccurredAt = adNow.Add(-8 * 24 * time.Hour)
	res := m.Send(context.Background(), []Item{{Key: "a", Event: fresh}, {Key: "b", Event: old}})
	if res[0].Outcome != Delivered {
		t.Errorf("fresh event: %s", res[0].Outcome)
	}
	if res[1].Outcome != Skipped || !strings.HasPrefix(res[1].Reason, "too_old") {
		t.Errorf("8-day-old event: %s %q, want skipped too_old", res[1].Outcome, res[1].Reason)
	}
	reqs := rec.all()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	if _, data := metaForm(t, reqs[0]); len(data) != 1 || data[0]["event_id"] != fresh.ID {
		t.Errorf("batch = %v, want only the fresh event", metaEventIDs(data))
	}
	t.Run("only old events: no request", func(t *testing.T) {
		rec := newAdRecorder(t, nil)
		m := newTestMeta(t, rec, metaTestBlock, nil)
		res := m.Send(context.Background(), []Item{{Key: "b", Event: old}})
		if res[0].Outcome != Skipped || len(rec.all()) != 0 {
			t.Errorf("outcome %s, %d requests; want skipped and none", res[0].Outcome, len(rec.all()))
		}
	})
}

func TestMetaBisectsRejectedBatch(t *testing.T) {
	const bad = "evt_bad_0031"
	rec := newAdRecorder(t, func(r adRequest) (int, string) {
		form, _ := url.ParseQuery(string(r.Body))
		if strings.Contains(form.Get("data"), bad) {
			return 400, `{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804009,"is_transient":false,"error_user_title":"Missing Value for Purchase Event","fbtrace_id":"Ax1"}}`
		}
		return 200, `{"events_received":1}`
	})
	m := newTestMeta(t, rec, metaTestBlock, nil)
	items := make([]Item, 50)
	for i := range items {
		e := adFixture("trial_started")
		e.ID = fmt.Sprintf("evt_ok_%04d", i)
		if i == 31 {
			e.ID = bad
		}
		items[i] = Item{Key: e.ID, Event: e}
	}
	res := m.Send(context.Background(), items)
	for i, r := range res {
		want := Delivered
		if i == 31 {
			want = Dead
		}
		if r.Outcome != want {
			t.Errorf("item %d: %s (%s), want %s", i, r.Outcome, r.Reason, want)
		}
	}
	if r := res[31]; r.Status != 400 || !strings.HasPrefix(r.Reason, "meta_invalid") || !errors.Is(r.Err, ErrAdNetwork) {
		t.Errorf("bad event result = %+v", r)
	}
	// Delivered exactly once each: no good event is sent twice successfully.
	seen := map[string]int{}
	for _, r := range rec.all() {
		_, data := metaForm(t, r)
		if len(data) == 1 || !metaEventIDs(data)[bad] {
			for id := range metaEventIDs(data) {
				seen[id]++
			}
		}
	}
	for i := range items {
		if id := items[i].Event.ID; id != bad && seen[id] != 1 {
			t.Errorf("%s delivered %d times, want 1", id, seen[id])
		}
	}
	if n := len(rec.all()); n > 2*6+1 {
		t.Errorf("%d requests to isolate one bad event in 50, want at most %d", n, 2*6+1)
	}
}

func TestMetaClassifiesGraphErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		header   map[string]string
		outcome  Outcome
		throttle bool
		reason   string
		after    time.Duration
	}{
		{"ok", 200, `{"events_received":1}`, nil, Delivered, false, "", 0},
		{"user throttled", 400, `{"error":{"code":17,"message":"User request limit reached"}}`, nil, Retry, true, "meta_throttled", throttleDelay},
		{"app throttled with retry-after", 400, `{"error":{"code":4}}`, map[string]string{"Retry-After": "120"}, Retry, true, "meta_throttled", 2 * time.Minute},
		{"ad account throttled", 400, `{"error":{"code":80003}}`, nil, Retry, true, "meta_throttled", throttleDelay},
		{"transient flag", 400, `{"error":{"code":100,"is_transient":true}}`, nil, Retry, false, "meta_transient", 0},
		{"unknown error", 500, `{"error":{"code":1,"message":"An unknown error occurred"}}`, nil, Retry, false, "meta_transient", 0},
		{"service unavailable", 503, `{"error":{"code":2}}`, nil, Retry, false, "meta_transient", 0},
		{"expired token", 400, `{"error":{"code":190,"error_subcode":463,"message":"Error validating access token"}}`, nil, Pause, false, "meta_auth", 0},
		{"permission", 403, `{"error":{"code":200,"message":"Permissions error"}}`, nil, Pause, false, "meta_auth", 0},
		{"dataset missing", 400, `{"error":{"code":100,"error_subcode":33,"message":"Unsupported post request"}}`, nil, Pause, false, "meta_auth", 0},
		{"invalid parameter", 400, `{"error":{"code":100,"error_subcode":2804003,"error_user_title":"Event Timestamp Too Old"}}`, nil, Dead, false, "meta_invalid", 0},
		{"unknown code on 5xx", 502, `{"error":{"code":12345}}`, nil, Retry, false, "meta_transient", 0},
		{"html 502", 502, `<html>Bad Gateway</html>`, nil, Retry, false, "http_502", 0},
		{"plain 429", 429, ``, map[string]string{"Retry-After": "30"}, Retry, true, "http_429", 30 * time.Second},
		{"plain 404", 404, `not found`, nil, Dead, false, "http_404", 0},
		{"plain 401", 401, ``, nil, Pause, false, "http_401", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			r := classifyMeta(adResponse{Status: tt.status, Header: h, Body: []byte(tt.body)}, adNow, metaTestToken)
			if r.Outcome != tt.outcome || r.Throttle != tt.throttle || r.RetryAfter != tt.after {
				t.Errorf("got %s throttle=%v after=%s, want %s throttle=%v after=%s", r.Outcome, r.Throttle, r.RetryAfter, tt.outcome, tt.throttle, tt.after)
			}
			if reasonLabelOf(r.Reason) != tt.reason {
				t.Errorf("reason = %q, want label %q", r.Reason, tt.reason)
			}
			if tt.outcome != Delivered && !errors.Is(r.Err, ErrAdNetwork) {
				t.Errorf("err = %v, want ErrAdNetwork", r.Err)
			}
		})
	}
}

// reasonLabelOf is the bounded part of a reason, before ':'.
func reasonLabelOf(reason string) string {
	l, _, _ := strings.Cut(reason, ":")
	return l
}

func TestMetaNeverLeaksToken(t *testing.T) {
	rec := newAdRecorder(t, func(adRequest) (int, string) {
		return 400, `{"error":{"code":190,"message":"Malformed access token ` + metaTestToken + `"}}`
	})
	m := newTestMeta(t, rec, metaTestBlock, nil)
	r := m.Send(context.Background(), []Item{{Key: "a", Event: adFixture("trial_started")}})[0]
	for what, s := range map[string]string{"request": r.Request, "response": r.Response, "reason": r.Reason, "err": fmt.Sprint(r.Err)} {
		if strings.Contains(s, metaTestToken) {
			t.Errorf("%s leaks the access token: %s", what, s)
		}
	}
	if r.Outcome != Pause {
		t.Errorf("outcome = %s, want pause", r.Outcome)
	}
}

func TestMetaNetworkError(t *testing.T) {
	rec := newAdRecorder(t, nil)
	m := newTestMeta(t, rec, metaTestBlock, nil)
	rec.srv.Close()
	r := m.Send(context.Background(), []Item{{Key: "a", Event: adFixture("trial_started")}})[0]
	if r.Outcome != Retry || r.Reason != "network" {
		t.Errorf("got %s %q, want retry network", r.Outcome, r.Reason)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := m.Send(ctx, []Item{{Key: "a", Event: adFixture("trial_started")}})[0]; r.Outcome != Retry {
		t.Errorf("cancelled: %s, want retry", r.Outcome)
	}
}

func TestMetaSkipsAndRejectsBeforeSending(t *testing.T) {
	sandboxEvt := adFixture("trial_started")
	sandboxEvt.Environment = mapping.Sandbox
	noValue := adFixture("purchase")
	noValue.Revenue = nil
	noOS := adFixture("trial_started")
	noOS.Source = mapping.SourceCustom
	delete(noOS.User.Identifiers, mapping.IDOS)
	tests := []struct {
		name    string
		event   *mapping.Event
		names   map[string]string
		outcome Outcome
		reason  string
	}{
		{"refund has no default name", adFixture("refund"), nil, Skipped, "no_event_name"},
		{"type disabled by override", adFixture("trial_started"), map[string]string{"trial_started": ""}, Skipped, "no_event_name"},
		{"sandbox without test config", sandboxEvt, nil, Skipped, "sandbox_not_configured"},
		{"purchase without value", noValue, nil, Dead, "purchase_without_value"},
		{"app event without platform", noOS, nil, Skipped, "missing os"},
		{"nil event", nil, nil, Dead, "no_event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, nil)
			m := newTestMeta(t, rec, metaTestBlock, tt.names)
			r := m.Send(context.Background(), []Item{{Key: "a", Event: tt.event}})[0]
			if r.Outcome != tt.outcome || !strings.HasPrefix(r.Reason, tt.reason) {
				t.Errorf("got %s %q, want %s %q", r.Outcome, r.Reason, tt.outcome, tt.reason)
			}
			if n := len(rec.all()); n != 0 {
				t.Errorf("%d requests, want none", n)
			}
		})
	}
}

func TestMetaSandboxRouting(t *testing.T) {
	sb := adFixture("trial_started")
	sb.Environment = mapping.Sandbox
	tests := []struct {
		name      string
		block     string
		wantPath  string
		wantCode  string
		wantToken string
		sameBatch bool // a test configuration takes both in one request
	}{
		{"test configuration takes sandbox events", metaTestBlock + "test_event_code: TEST1\n", "/v25.0/" + metaTestDataset + "/events", "TEST1", metaTestToken, true},
		{"sandbox block with its own dataset", metaTestBlock + "sandbox: {dataset_id: \"999999\", access_token: sandboxTOKEN}\n", "/v25.0/999999/events", "", "sandboxTOKEN", false},
		{"sandbox block with a test code inherits credentials", metaTestBlock + "api_version: v24.0\nsandbox: {test_event_code: TEST9}\n", "/v24.0/" + metaTestDataset + "/events", "TEST9", metaTestToken, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, nil)
			m := newTestMeta(t, rec, tt.block, nil)
			res := m.Send(context.Background(), []Item{{Key: "p", Event: adFixture("trial_converted")}, {Key: "s", Event: sb}})
			for i, r := range res {
				if r.Outcome != Delivered {
					t.Errorf("item %d: %s %s", i, r.Outcome, r.Reason)
				}
			}
			var found bool
			for _, r := range rec.all() {
				form, data := metaForm(t, r)
				if !metaEventIDs(data)[sb.ID] {
					continue
				}
				found = true
				want := 1
				if tt.sameBatch {
					want = 2
				}
				if len(data) != want || r.Path != tt.wantPath || form.Get("test_event_code") != tt.wantCode || form.Get("access_token") != tt.wantToken {
					t.Errorf("sandbox request: path %s, %d events, code %q, token ok %v", r.Path, len(data), form.Get("test_event_code"), form.Get("access_token") == tt.wantToken)
				}
			}
			if !found {
				t.Error("sandbox event not sent")
			}
		})
	}
}

func TestMetaMissing(t *testing.T) {
	web := adFixture("purchase")
	webNoUA := adFixture("purchase")
	delete(webNoUA.User.Identifiers, mapping.IDUserAgent)
	iosNoIDs := adFixture("trial_started")
	delete(iosNoIDs.User.Identifiers, mapping.IDIDFA)
	delete(iosNoIDs.User.Identifiers, mapping.IDFacebookAnon)
	iosAnonOnly := adFixture("trial_started")
	iosAnonOnly.User.Identifiers[mapping.IDIDFA] = "00000000-0000-0000-0000-000000000000"
	android := adFixture("renewal")
	androidNoGAID := adFixture("renewal")
	delete(androidNoGAID.User.Identifiers, mapping.IDGAID)
	noOS := adFixture("trial_started")
	noOS.Source = mapping.SourceCustom
	delete(noOS.User.Identifiers, mapping.IDOS)
	oldNoIDs := adFixture("trial_started")
	oldNoIDs.OccurredAt = adNow.Add(-8 * 24 * time.Hour)
	delete(oldNoIDs.User.Identifiers, mapping.IDIDFA)
	delete(oldNoIDs.User.Identifiers, mapping.IDFacebookAnon)
	refundNoUA := adFixture("refund")
	delete(refundNoUA.User.Identifiers, mapping.IDUserAgent)
	tests := []struct {
		name  string
		event *mapping.Event
		want  string
	}{
		{"web with user agent", web, ""},
		{"web without user agent", webNoUA, "user_agent"},
		{"ios with idfa", adFixture("trial_started"), ""},
		{"ios with anon id only", iosAnonOnly, ""},
		{"ios without ids", iosNoIDs, "idfa or fb_anon_id"},
		{"android with gaid", android, ""},
		{"android without ids", androidNoGAID, "gaid or fb_anon_id"},
		{"unknown platform", noOS, "os"},
		{"too old: not held", oldNoIDs, ""},
		{"not sent: not held", refundNoUA, ""},
	}
	m := newTestMeta(t, newAdRecorder(t, nil), metaTestBlock, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.Missing(tt.event); got != tt.want {
				t.Errorf("Missing = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewMetaValidates(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		block    string
		key      string
	}{
		{"no dataset", "", "access_token: x\n", "dataset_id"},
		{"bad dataset", "", "dataset_id: abc\naccess_token: x\n", "dataset_id"},
		{"no token", "", "dataset_id: \"123456\"\n", "access_token"},
		{"bad version", "", metaTestBlock + "api_version: 25\n", "api_version"},
		{"bad endpoint", "graph.facebook.com", metaTestBlock, "endpoint"},
		{"sandbox into production", "", metaTestBlock + "sandbox: {access_token: other}\n", "sandbox"},
		{"sandbox bad dataset", "", metaTestBlock + "sandbox: {dataset_id: x1, test_event_code: T}\n", "sandbox.dataset_id"},
		{"undecodable", "", "dataset_id: [1, 2]\n", "destinations[test-meta]."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMeta(adSettings(t, "meta", tt.endpoint, tt.block, nil, http.DefaultClient))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tt.key)
			}
			if err != nil && strings.Contains(err.Error(), metaTestToken) {
				t.Errorf("error leaks the token: %v", err)
			}
		})
	}
	t.Run("registered", func(t *testing.T) {
		f, err := New(Settings{Name: "m", Type: "meta", Decode: adSettings(t, "meta", "", metaTestBlock, nil, nil).Decode})
		if err != nil {
			t.Fatal(err)
		}
		if l := f.Limits(); l.BatchSize != 1000 || l.MaxAge <= 6*24*time.Hour || l.MaxAge > 7*24*time.Hour {
			t.Errorf("limits = %+v", l)
		}
	})
}

// TestMetaEventSourceURL: Meta requires event_source_url on website events.
// It comes from the event, then the page its source recorded, then the
// destination's default; without any the event is skipped with a reason,
// never sent without it, and never held for identifiers.
func TestMetaEventSourceURL(t *testing.T) {
	web := func(attrs map[string]string) *mapping.Event {
		e := adFixture("purchase")
		e.Attributes = attrs
		return e
	}
	shop := "https://shop.example.com"
	tests := []struct {
		name   string
		block  string
		event  *mapping.Event
		want   string
		reason string
	}{
		{"event's own page first", metaTestBlock + "event_source_url: https://example.com/default\n",
			web(map[string]string{"event_source_url": "https://example.com/pay", mapping.AttrLandingPageURL: shop + "/land"}), "https://example.com/pay", ""},
		{"shopify landing page", metaTestBlock, web(map[string]string{mapping.AttrLandingPageURL: shop + "/land", mapping.AttrOrderStatusURL: shop + "/status"}), shop + "/land", ""},
		{"shopify order status page", metaTestBlock, web(map[string]string{mapping.AttrOrderStatusURL: shop + "/status"}), shop + "/status", ""},
		{"stripe checkout success page", metaTestBlock, web(map[string]string{mapping.AttrSuccessURL: "https://example.com/success"}), "https://example.com/success", ""},
		{"destination default", metaTestBlock + "event_source_url: https://example.com/default\n", web(nil), "https://example.com/default", ""},
		{"a relative page is not a URL", metaTestBlock + "event_source_url: https://example.com/default\n", web(map[string]string{"page_url": "/checkout"}), "https://example.com/default", ""},
		{"none: skipped", metaTestBlock, web(nil), "", "missing event_source_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) { return 200, `{"events_received":1}` })
			m := newTestMeta(t, rec, tt.block, nil)
			if got := m.Missing(tt.event); got != "" {
				t.Errorf("Missing = %q, want nothing to wait for", got)
			}
			r := m.Send(context.Background(), []Item{{Key: "a", Event: tt.event}})[0]
			if tt.reason != "" {
				if r.Outcome != Skipped || !strings.HasPrefix(r.Reason, tt.reason) || len(rec.all()) != 0 {
					t.Errorf("got %s %q with %d requests, want skipped %q and none", r.Outcome, r.Reason, len(rec.all()), tt.reason)
				}
				return
			}
			if r.Outcome != Delivered {
				t.Fatalf("outcome %s %q", r.Outcome, r.Reason)
			}
			_, data := metaForm(t, rec.all()[0])
			if got := data[0]["event_source_url"]; got != tt.want || data[0]["action_source"] != "website" {
				t.Errorf("event_source_url = %v (action_source %v), want %s", got, data[0]["action_source"], tt.want)
			}
		})
	}
	t.Run("user agent still awaited when a page is known", func(t *testing.T) {
		m := newTestMeta(t, newAdRecorder(t, nil), metaTestBlock+"event_source_url: https://example.com/d\n", nil)
		e := web(nil)
		delete(e.User.Identifiers, mapping.IDUserAgent)
		if got := m.Missing(e); got != mapping.IDUserAgent {
			t.Errorf("Missing = %q, want user_agent", got)
		}
	})
	for _, bad := range []string{"example.com/x", "ftp://example.com/x", "/relative"} {
		t.Run("bad default "+bad, func(t *testing.T) {
			_, err := NewMeta(adSettings(t, "meta", "", metaTestBlock+"event_source_url: \""+bad+"\"\n", nil, nil))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), ".event_source_url:") {
				t.Errorf("err = %v", err)
			}
		})
	}
}
