package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	var liveEvents int
	var replayed string
	sum, err := runDemo(ctx, &out, io.Discard, "127.0.0.1:0", func(s *DemoSummary) {
		// The failing destination's dead letters replay once it is healed.
		env := map[string]string{"POSTBACK_ADMIN_TOKEN": s.Token, "POSTBACK_ADDR": s.ConsoleURL}
		if code, out, errOut := runWithEnv(env, "replay", "--destination", demoDeadDest, "--poll", "20ms"); code != 0 {
			t.Errorf("replay: exit %d %s %s", code, out, errOut)
		}
		admWait(t, "replayed deliveries delivered", func() bool {
			_, out, _ := runWithEnv(env, "deliveries", "--destination", demoDeadDest, "--state", "delivered", "--json")
			return strings.Count(out, `"key"`) == 5
		})
		_, replayed, _ = runWithEnv(env, "deliveries", "--destination", demoDeadDest, "--json")
		// While the demo waits for Ctrl-C its admin API answers.
		req, _ := http.NewRequest(http.MethodGet, s.ConsoleURL+"/admin/api/events", nil)
		req.Header.Set("Authorization", "Bearer "+s.Token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var page struct {
				Events []json.RawMessage `json:"events"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			liveEvents = len(page.Events)
		}
		if resp, err := http.Get(s.ConsoleURL + "/admin/login"); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("console login page: HTTP %d", resp.StatusCode)
			}
		}
		cancel()
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sum.Sources, []string{"apple", "google", "stripe", "shopify", "custom"}) {
		t.Errorf("sources %v", sum.Sources)
	}
	story := []string{"trial_started", "trial_converted", "subscription_renewed", "refund"}
	want := map[string][]string{
		"apple":   story,
		"google":  story,
		"stripe":  story,
		"shopify": {"purchase", "subscription_renewed", "refund"},
		"custom":  {"purchase"},
	}
	got := map[string][]string{}
	var ids []string
	for _, e := range sum.Events {
		got[e.Source] = append(got[e.Source], e.Type)
		ids = append(ids, e.ID)
	}
	for src, types := range want {
		// Events received in the same millisecond list in id order.
		types = slices.Sorted(slices.Values(types))
		slices.Sort(got[src])
		if !slices.Equal(got[src], types) {
			t.Errorf("%s story: events %v, want %v", src, got[src], types)
		}
	}
	if len(got) != len(want) {
		t.Errorf("events from sources %v, want %v", got, want)
	}
	if liveEvents != len(sum.Events) {
		t.Errorf("admin API listed %d events, want %d", liveEvents, len(sum.Events))
	}
	if sum.Unfinished != 0 {
		t.Errorf("%d deliveries unfinished", sum.Unfinished)
	}
	byName := map[string]DemoDestination{}
	for _, d := range sum.Destinations {
		byName[d.Name] = d
	}
	if len(byName) != 6 {
		t.Fatalf("destinations %+v", sum.Destinations)
	}
	for _, d := range sum.Destinations {
		if d.Name == demoDeadDest || d.Name == demoHeldDest {
			continue
		}
		if d.States["dead"] != 0 || d.States["pending"]+d.States["retrying"]+d.States["waiting"] != 0 {
			t.Errorf("%s: states %v, want every delivery final and none dead", d.Name, d.States)
		}
	}

	t.Run("a failing destination: dead letters, replay; a held one", func(t *testing.T) {
		crm := byName[demoDeadDest]
		// Stripe's 4 events and the custom purchase.
		if crm.States["dead"] != 5 || len(crm.Reasons) != 5 || !strings.Contains(crm.Reasons[0], "dead: ") {
			t.Errorf("%s: states %v, reasons %q; want 5 dead letters", demoDeadDest, crm.States, crm.Reasons)
		}
		if strings.Count(replayed, `"state": "delivered"`) != 5 {
			t.Errorf("after the replay:\n%s", replayed)
		}
		held := byName[demoHeldDest]
		if held.States["delivered"] != 0 || held.States["pending"]+held.States["retrying"] != 3 || len(held.Requests) == 0 {
			t.Errorf("%s: states %v, %d requests; want 3 held", demoHeldDest, held.States, len(held.Requests))
		}
		for _, s := range []string{"Failing on purpose: crm-webhook", "crm-webhook (webhook) received 5 requests", "dead: ", "partner-api stays held"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("printed summary lacks %q", s)
			}
		}
	})

	t.Run("my-backend receives every canonical event once", func(t *testing.T) {
		d := byName["my-backend"]
		type money struct {
			Micros   int64  `json:"amount_micros"`
			Currency string `json:"currency"`
		}
		var gotIDs []string
		revenue := map[string]*money{}
		users := map[string]string{}
		for _, r := range d.Requests {
			var e struct {
				ID, Type, Source, Environment string
				Revenue                       *money `json:"revenue"`
				User                          struct {
					AppUserID   string            `json:"app_user_id"`
					Identifiers map[string]string `json:"identifiers"`
				} `json:"user"`
			}
			if err := json.Unmarshal([]byte(r.Body), &e); err != nil {
				t.Fatal(err)
			}
			gotIDs = append(gotIDs, e.ID)
			revenue[e.Source+" "+e.Type] = e.Revenue
			users[e.Source] = e.User.AppUserID
			if e.Environment != "production" {
				t.Errorf("%s %s: environment %q", e.Source, e.Type, e.Environment)
			}
			if e.Source == "apple" && e.User.Identifiers["appsflyer_id"] != "1700000000000-3333333" {
				t.Errorf("apple %s: identifiers %v, want those of PUT /v1/users", e.Type, e.User.Identifiers)
			}
		}
		slices.Sort(gotIDs)
		if want := slices.Sorted(slices.Values(ids)); !slices.Equal(gotIDs, want) {
			t.Errorf("backend received %v, want every event once %v", gotIDs, want)
		}
		usd := func(m int64) *money { return &money{m, "USD"} }
		wantRevenue := map[string]*money{
			"apple trial_started": nil, "apple trial_converted": usd(9_990_000), "apple subscription_renewed": usd(9_990_000), "apple refund": usd(-9_990_000),
			"google trial_started": nil, "google trial_converted": usd(4_990_000), "google subscription_renewed": usd(4_990_000), "google refund": usd(-4_990_000),
			"stripe trial_started": nil, "stripe trial_converted": usd(9_990_000), "stripe subscription_renewed": usd(9_990_000), "stripe refund": usd(-9_990_000),
			"shopify purchase": usd(14_990_000), "shopify subscription_renewed": usd(14_990_000), "shopify refund": usd(-14_990_000),
			"custom purchase": usd(49_990_000),
		}
		for k, w := range wantRevenue {
			g, ok := revenue[k]
			switch {
			case !ok:
				t.Errorf("%s: not received", k)
			case (g == nil) != (w == nil) || g != nil && *g != *w:
				t.Errorf("%s: revenue %+v, want %+v", k, g, w)
			}
		}
		if len(users["apple"]) != 36 || users["google"] != "demo-user-google" || users["custom"] != "demo-user-web" {
			t.Errorf("app user ids %v: want the appAccountToken for apple, obfuscatedExternalAccountId for google", users)
		}
	})

	afNames := func(t *testing.T, d DemoDestination, path, idPrefix string) map[string]int {
		t.Helper()
		names := map[string]int{}
		for i, r := range d.Requests {
			var b struct {
				ID        string `json:"appsflyer_id"`
				EventName string `json:"eventName"`
			}
			if err := json.Unmarshal([]byte(r.Body), &b); err != nil {
				t.Fatal(err)
			}
			if r.Path != path || !strings.HasPrefix(b.ID, idPrefix) {
				t.Errorf("request %d: %s %s", i, r.Path, r.Body)
			}
			names[b.EventName]++
		}
		return names
	}
	t.Run("appsflyer-demo receives the iOS and web events", func(t *testing.T) {
		d := byName["appsflyer-demo"]
		if len(d.Requests) != 12 || d.States["delivered"] != 12 || len(d.States) != 1 {
			t.Fatalf("%d requests, states %v, want 12 delivered", len(d.Requests), d.States)
		}
		names := afNames(t, d, "/inappevent/id1234567890", "1700000000000-")
		want := map[string]int{"af_start_trial": 2, "af_subscribe": 2, "subscription_renewed": 3, "refund": 3, "af_purchase": 2}
		if !maps.Equal(names, want) {
			t.Errorf("event names %v, want %v", names, want)
		}
	})
	t.Run("appsflyer-android receives the Google Play story", func(t *testing.T) {
		d := byName["appsflyer-android"]
		if len(d.Requests) != 4 || d.States["delivered"] != 4 || len(d.States) != 1 {
			t.Fatalf("%d requests, states %v, want 4 delivered", len(d.Requests), d.States)
		}
		names := afNames(t, d, "/inappevent/com.example.app", "1700000000000-4444444")
		want := map[string]int{"af_start_trial": 1, "af_subscribe": 1, "subscription_renewed": 1, "refund": 1}
		if !maps.Equal(names, want) {
			t.Errorf("event names %v, want %v", names, want)
		}
		for _, r := range d.Requests {
			if !strings.Contains(r.Body, `"advertising_id":"38400000-8cf0-11bd-b23e-10b96e40000d"`) {
				t.Errorf("no GAID from PUT /v1/users in %s", r.Body)
			}
		}
	})
	t.Run("tiktok-demo receives app and web events but no refunds", func(t *testing.T) {
		d := byName["tiktok-demo"]
		// TikTok batches; refunds have no TikTok event name.
		if len(d.Requests) == 0 || d.States["delivered"] != 12 || d.States["skipped"] != 4 {
			t.Errorf("%d requests, states %v, want 12 delivered and 4 refunds skipped", len(d.Requests), d.States)
		}
		sent := map[string]int{}
		for _, r := range d.Requests {
			var b struct {
				Source string            `json:"event_source"`
				Data   []json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal([]byte(r.Body), &b); err != nil {
				t.Fatal(err)
			}
			sent[b.Source] += len(b.Data)
		}
		// App: Apple and Google (3 each); web: Stripe 3, Shopify 2, custom 1.
		if want := map[string]int{"app": 6, "web": 6}; !maps.Equal(sent, want) {
			t.Errorf("tiktok got events by source %v, want %v", sent, want)
		}
	})
	for _, s := range []string{"apple    SUBSCRIBED/INITIAL_BUY", "google   VOIDED_PURCHASE", "custom   POST /v1/events", "trial_started",
		"appsflyer-demo (appsflyer) received 12 requests", "appsflyer-android (appsflyer) received 4 requests", "my-backend (webhook) received 16 requests"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("printed summary lacks %q:\n%s", s, out.String())
		}
	}
}

// Issue 16, item 13: --traffic keeps sending until the demo is stopped.
func TestDemoTraffic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out safeWriter
	_, err := runDemoWith(ctx, &out, io.Discard, demoOptions{listen: "127.0.0.1:0", traffic: 100 * time.Millisecond}, func(s *DemoSummary) {
		go func() {
			admWait(t, "traffic", func() bool { return strings.Count(out.String(), "traffic  ") >= 6 })
			cancel()
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "traffic  ") {
			lines++
			if !strings.HasSuffix(l, " accepted") {
				t.Errorf("traffic line %q", l)
			}
		}
	}
	if lines < 6 {
		t.Errorf("%d traffic lines", lines)
	}
}

// safeWriter is a bytes.Buffer for one writer and concurrent readers.
type safeWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *safeWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *safeWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
