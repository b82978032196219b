package forwarders

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

const adjBlock = `app_token: 4w565xzmb54d
s2s_token: adjust-s2s-SECRET
event_tokens:
  trial_started: abc123
  trial_converted: def456
  subscription_renewed: f0ob4r
  refund: rfd789
  purchase: pur012
sandbox: {}
`

func TestAdjustGolden(t *testing.T) {
	mmpGolden(t, "adjust", adjBlock, func(mmpCaptured) (int, string) { return 200, `{"status":"OK"}` }, "adjust-s2s-SECRET")
}

func TestAdjustClassify(t *testing.T) {
	mmpClassify(t, "adjust", adjBlock, "subscription_renewed", []mmpClassifyCase{
		{name: "200 ok", status: 200, body: `{"status":"OK"}`, want: Delivered},
		{name: "202 missing auth token", status: 202, body: `{"error":"Missing authentication token"}`, want: Pause, reason: ReasonAuth},
		{name: "202 wrong auth token", status: 202, body: `{"error":"Wrong authentication token"}`, want: Pause, reason: ReasonAuth},
		{name: "400 earlier unique event", status: 400, body: `{"error":"Event request failed (Ignoring event, earlier unique event tracked)"}`, want: Duplicate, reason: ReasonDuplicate},
		{name: "400 invalid app token", status: 400, body: `{"error":"Event request failed (Invalid app token)"}`, want: Pause, reason: ReasonConfig},
		{name: "400 invalid event token", status: 400, body: `{"error":"Event request failed (Invalid event token)"}`, want: Pause, reason: ReasonConfig},
		{name: "400 bad event state", status: 400, body: `{"error":"Event request failed (Bad event state)"}`, want: Dead, reason: ReasonValidation},
		{name: "401 scopes", status: 401, body: `{"error":"Failed to authorize request"}`, want: Pause, reason: ReasonAuth},
		{name: "403 app inactive", status: 403, body: `{"error":"App is inactive"}`, want: Pause, reason: ReasonConfig},
		{name: "404 device not found retried", status: 404, body: `{"error":"Event request failed (Device not found)"}`, want: Retry, reason: ReasonDeviceNotFound, retryAfter: adjustNotFoundW},
		{name: "404 device not found gives up", status: 404, attempt: adjustNotFoundN, body: `{"error":"Device not found"}`, want: Dead, reason: ReasonDeviceNotFound},
		{name: "404 app token not found", status: 404, body: `{"error":"App token not found"}`, want: Pause, reason: ReasonConfig},
		{name: "413 too large", status: 413, body: `{"error":"Request size too large"}`, want: Dead, reason: ReasonValidation},
		{name: "451 opted out", status: 451, body: `{"error":"Device is opted out"}`, want: Skipped, reason: ReasonOptedOut},
		{name: "429", status: 429, want: Retry, throttle: true, reason: "http_429"},
		{name: "503 retry-after", status: 503, header: map[string]string{"Retry-After": "120"}, want: Retry, reason: "http_503", retryAfter: 2 * time.Minute},
	})
}

func TestAdjustRules(t *testing.T) {
	srv := newMMPServer(t, func(mmpCaptured) (int, string) { return 200, `{"status":"OK"}` })
	send := func(f Forwarder, e *mapping.Event) Result {
		t.Helper()
		return f.Send(context.Background(), []Item{{Key: "d", Attempt: 1, Event: e}})[0]
	}
	form := func() url.Values {
		t.Helper()
		reqs := srv.requests()
		v, err := url.ParseQuery(string(reqs[len(reqs)-1].Body))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	f := mmpNew(t, "adjust", srv.URL, adjBlock, nil)

	t.Run("sandbox uses environment=sandbox", func(t *testing.T) {
		e := mmpEvent("subscription_renewed")
		e.Environment = mapping.Sandbox
		if r := send(f, e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		if v := form(); v.Get("environment") != "sandbox" || v.Get("app_token") != "4w565xzmb54d" {
			t.Errorf("form = %v", v)
		}
	})
	t.Run("sandbox block overrides the app", func(t *testing.T) {
		g := mmpNew(t, "adjust", srv.URL, "app_token: 4w565xzmb54d\nevent_tokens: {refund: rfd789}\nsandbox: {app_token: sandboxapp01, event_tokens: {refund: sbx111}}", nil)
		e := mmpEvent("refund")
		e.Environment = mapping.Sandbox
		if r := send(g, e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		if v := form(); v.Get("app_token") != "sandboxapp01" || v.Get("event_token") != "sbx111" || srv.requests()[len(srv.requests())-1].Header.Get("Authorization") != "" {
			t.Errorf("form = %v", v)
		}
	})
	t.Run("no sandbox block skips sandbox events", func(t *testing.T) {
		g := mmpNew(t, "adjust", srv.URL, "app_token: 4w565xzmb54d\nevent_tokens: {refund: rfd789}", nil)
		e := mmpEvent("refund")
		e.Environment = mapping.Sandbox
		if r := send(g, e); r.Outcome != Skipped || r.Reason != ReasonSandboxNoCreds {
			t.Errorf("%+v", r)
		}
	})
	t.Run("type without a token is not sent", func(t *testing.T) {
		e := mmpEvent("subscription_renewed")
		e.Type = mapping.BillingIssue
		if r := send(f, e); r.Outcome != Skipped || r.Reason != ReasonNoEventName {
			t.Errorf("%+v", r)
		}
		e.Type, e.Name = mapping.Custom, "level_up" // custom names are never tokens
		if r := send(f, e); r.Outcome != Skipped || r.Reason != ReasonNoEventName {
			t.Errorf("%+v", r)
		}
	})
	t.Run("custom event token", func(t *testing.T) {
		g := mmpNew(t, "adjust", srv.URL, "app_token: 4w565xzmb54d\nevent_tokens: {\"custom:level_up\": lvl123}", nil)
		e := mmpEvent("subscription_renewed")
		e.Type, e.Name = mapping.Custom, "level_up"
		if r := send(g, e); r.Outcome != Delivered || form().Get("event_token") != "lvl123" {
			t.Errorf("%+v %v", r, form())
		}
	})
	t.Run("too old", func(t *testing.T) {
		e := mmpEvent("subscription_renewed")
		e.OccurredAt = mmpNow.Add(-59 * 24 * time.Hour)
		if r := send(f, e); r.Outcome != Skipped || r.Reason != ReasonTooOld {
			t.Errorf("%+v", r)
		}
	})
	t.Run("per device order", func(t *testing.T) {
		e := mmpEvent("subscription_renewed")
		e.User.Identifiers[mapping.IDAdjust] = "orderdevice"
		e.OccurredAt = mmpNow.Add(-time.Hour)
		if r := send(f, e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		e.OccurredAt = mmpNow.Add(-2 * time.Hour)
		if r := send(f, e); r.Outcome != Skipped || r.Reason != ReasonOutOfOrder {
			t.Errorf("older event = %+v, want out_of_order", r)
		}
		e.Type = mapping.Refund // another token has its own order
		if r := send(f, e); r.Outcome != Delivered {
			t.Errorf("other token = %+v", r)
		}
	})
	t.Run("per device order survives a restart through the memory", func(t *testing.T) {
		mem := &fakeMemory{m: map[string]time.Time{}}
		before := mmpNew(t, "adjust", srv.URL, adjBlock, nil)
		before.(Rememberer).SetMemory(mem)
		e := mmpEvent("subscription_renewed")
		e.User.Identifiers[mapping.IDAdjust] = "restartdevice"
		e.OccurredAt = mmpNow.Add(-time.Hour)
		if r := send(before, e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		if len(mem.m) != 1 {
			t.Fatalf("memory after a delivery: %v", mem.m)
		}
		// A new process: its map is empty, the memory is not.
		after := mmpNew(t, "adjust", srv.URL, adjBlock, nil)
		after.(Rememberer).SetMemory(mem)
		n := len(srv.requests())
		e.OccurredAt = mmpNow.Add(-2 * time.Hour)
		if r := send(after, e); r.Outcome != Skipped || r.Reason != ReasonOutOfOrder {
			t.Errorf("older event after a restart = %+v, want out_of_order", r)
		}
		if len(srv.requests()) != n {
			t.Error("the out-of-order event reached Adjust")
		}
		// Without the memory the new process would have sent it.
		fresh := mmpNew(t, "adjust", srv.URL, adjBlock, nil)
		if r := send(fresh, e); r.Outcome != Delivered {
			t.Errorf("control without memory = %+v", r)
		}
		// A failing memory loses only the hint: the event is sent.
		broken := mmpNew(t, "adjust", srv.URL, adjBlock, nil)
		broken.(Rememberer).SetMemory(&fakeMemory{err: errors.New("disk gone")})
		e.User.Identifiers[mapping.IDAdjust] = "brokenmemory"
		if r := send(broken, e); r.Outcome != Delivered {
			t.Errorf("with a failing memory = %+v", r)
		}
	})
	t.Run("missing device id", func(t *testing.T) {
		e := mmpEvent("subscription_renewed")
		for _, k := range []string{mapping.IDAdjust, mapping.IDIDFA, mapping.IDIDFV} {
			delete(e.User.Identifiers, k)
		}
		if got := f.(Requirer).Missing(e); got != mapping.IDAdjust {
			t.Errorf("Missing = %q", got)
		}
		if r := send(f, e); r.Outcome != Skipped || r.Reason != "missing adid" {
			t.Errorf("%+v", r)
		}
		e.User.Identifiers[mapping.IDGAID] = "660e1d86"
		if got := f.(Requirer).Missing(e); got != "" {
			t.Errorf("Missing with gaid = %q", got)
		}
	})
	t.Run("ipv6 is not sent, revenue below 0.001 is not sent", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.User.Identifiers[mapping.IDIP] = "2001:db8::1"
		e.Revenue.AmountMicros = 500
		if r := send(f, e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		if v := form(); v.Has("ip_address") || v.Has("revenue") || v.Has("currency") {
			t.Errorf("form = %v", v)
		}
	})
}

func TestAdjustOrderBound(t *testing.T) {
	o := &adjustOrder{last: map[string]time.Time{}}
	old := mmpNow.Add(-60 * 24 * time.Hour)
	for i := 0; i < adjustOrderCap; i++ {
		o.last[strings.Repeat("k", 1)+time.Duration(i).String()] = old
	}
	o.put("new", mmpNow, mmpNow)
	if len(o.last) != 1 {
		t.Errorf("expired entries kept: %d", len(o.last))
	}
	o.put("new", mmpNow.Add(-time.Hour), mmpNow)
	if got, _ := o.get("new"); !got.Equal(mmpNow) {
		t.Errorf("an older time replaced a newer one: %v", got)
	}
	for i := 0; i < adjustOrderCap; i++ {
		o.last[time.Duration(i).String()] = mmpNow
	}
	o.put("another", mmpNow, mmpNow)
	if len(o.last) > adjustOrderCap {
		t.Errorf("cap exceeded: %d", len(o.last))
	}
}

func TestAdjustConfigErrors(t *testing.T) {
	cases := []struct {
		name, block string
		names       map[string]string
		key         string
	}{
		{"event_names instead of tokens", "app_token: 4w565xzmb54d\nevent_tokens: {refund: abc123}", map[string]string{"refund": "x"}, "event_names"},
		{"preset", "app_token: 4w565xzmb54d\nevent_tokens: {refund: abc123}\npreset: revenuecat", nil, "preset"},
		{"no app token", "event_tokens: {refund: abc123}", nil, "app_token"},
		{"bad app token", "app_token: \"app token!\"\nevent_tokens: {refund: abc123}", nil, "app_token"},
		{"no tokens", "app_token: 4w565xzmb54d", nil, "event_tokens"},
		{"bad token key", "app_token: 4w565xzmb54d\nevent_tokens: {renewal: abc123}", nil, "event_tokens.renewal"},
		{"bad token", "app_token: 4w565xzmb54d\nevent_tokens: {refund: \"ab-12\"}", nil, "event_tokens.refund"},
		{"bad sandbox app token", "app_token: 4w565xzmb54d\nevent_tokens: {refund: abc123}\nsandbox: {app_token: \"x y\"}", nil, "sandbox.app_token"},
		{"bad fx", "app_token: 4w565xzmb54d\nevent_tokens: {refund: abc123}\ncurrency: USD\nfx_rates: {EUR: abc}", nil, "fx_rates.EUR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(mmpSettingsFor(t, "adjust", "", tc.block, tc.names))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "."+tc.key+":") {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tc.key)
			}
		})
	}
	t.Run("bad endpoint", func(t *testing.T) {
		_, err := New(mmpSettingsFor(t, "adjust", "s2s.adjust.com", "app_token: 4w565xzmb54d\nevent_tokens: {refund: abc123}", nil))
		if !errors.Is(err, ErrConfig) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		f, err := New(mmpSettingsFor(t, "adjust", "", "app_token: 4w565xzmb54d\nevent_tokens: {refund: abc123}", nil))
		if err != nil {
			t.Fatal(err)
		}
		if u := f.(*Adjust).prod.url; u != "https://s2s.adjust.com/event" || f.Limits().MaxAge != 58*24*time.Hour {
			t.Errorf("url %s limits %+v", u, f.Limits())
		}
	})
}

// fakeMemory is a forwarders.Memory in a map (advance-only, as the store's).
type fakeMemory struct {
	mu  sync.Mutex
	m   map[string]time.Time
	err error
}

func (f *fakeMemory) Get(k string) (time.Time, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return time.Time{}, false, f.err
	}
	t, ok := f.m[k]
	return t, ok, nil
}

func (f *fakeMemory) Put(k string, at time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if prev, ok := f.m[k]; !ok || at.After(prev) {
		f.m[k] = at
	}
	return nil
}
