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

const ga4TestSecret = "ga4SECRETxyz789"

var (
	// An iOS and an Android Firebase app of one project: each event goes to
	// its own platform's app.
	ga4AppBlock = "firebase_app_ids: {ios: \"1:1234567890:ios:321abc456def7890\", android: \"1:1234567890:android:fedcba0987654321\"}\napi_secret: " + ga4TestSecret + "\n"
	ga4IOSBlock = "firebase_app_id: \"1:1234567890:ios:321abc456def7890\"\napi_secret: " + ga4TestSecret + "\n"
	ga4WebBlock = "measurement_id: G-ABC123XYZ\napi_secret: " + ga4TestSecret + "\n"
)

func newTestGA4(t *testing.T, rec *adRecorder, block string, names map[string]string) *GA4 {
	t.Helper()
	f, err := NewGA4(adSettings(t, "ga4", rec.srv.URL, block, names, rec.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	return f.(*GA4)
}

func TestGA4Golden(t *testing.T) {
	for _, name := range adGoldenNames {
		t.Run(name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) { return 204, "" })
			e := adFixture(name)
			block := ga4AppBlock
			if adChannel(e) == channelWeb {
				block = ga4WebBlock
			}
			g := newTestGA4(t, rec, block, nil)
			res := g.Send(context.Background(), []Item{{Key: "d1", Attempt: 1, Event: e}})
			if res[0].Outcome != Delivered {
				t.Fatalf("outcome = %s (%s, %v)", res[0].Outcome, res[0].Reason, res[0].Err)
			}
			reqs := rec.all()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			q, err := url.ParseQuery(r.Query)
			if err != nil {
				t.Fatal(err)
			}
			if q.Get("api_secret") != ga4TestSecret {
				t.Errorf("api_secret = %q, want the configured secret", q.Get("api_secret"))
			}
			if strings.Contains(res[0].Request, ga4TestSecret) {
				t.Errorf("request summary leaks the secret: %s", res[0].Request)
			}
			q.Set("api_secret", "[checked, not stored]")
			checkGolden(t, "ga4/"+name+".json", indentJSON(t, map[string]any{
				"method": r.Method, "path": r.Path, "query": q, "content_type": r.Header.Get("Content-Type"),
				"body": json.RawMessage(r.Body),
			}))
		})
	}
}

func TestGA4OneUserPerRequest(t *testing.T) {
	rec := newAdRecorder(t, func(adRequest) (int, string) { return 204, "" })
	g := newTestGA4(t, rec, ga4AppBlock, nil)
	var items []Item
	for u := range 3 {
		for k := range u + 1 {
			e := adFixture("trial_converted")
			e.ID = fmt.Sprintf("evt_%d_%d", u, k)
			e.User.AppUserID = fmt.Sprintf("user-%d", u)
			e.User.Identifiers[mapping.IDFirebase] = fmt.Sprintf("%032d", u)
			items = append(items, Item{Key: e.ID, Event: e})
		}
	}
	for i, r := range g.Send(context.Background(), items) {
		if r.Outcome != Delivered {
			t.Errorf("item %d: %s", i, r.Outcome)
		}
	}
	reqs := rec.all()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (one per user)", len(reqs))
	}
	for _, r := range reqs {
		var b ga4Request
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatal(err)
		}
		want := int(b.AppInstanceID[31]-'0') + 1
		if len(b.Events) != want || b.UserID != "user-"+b.AppInstanceID[31:] {
			t.Errorf("request for %s holds %d events of user %s, want %d", b.AppInstanceID, len(b.Events), b.UserID, want)
		}
	}
}

func TestGA4SkipsAndRejects(t *testing.T) {
	old := adFixture("trial_converted")
	old.OccurredAt = adNow.Add(-73 * time.Hour)
	sandboxEvt := adFixture("trial_started")
	sandboxEvt.Environment = mapping.Sandbox
	noInstance := adFixture("renewal")
	delete(noInstance.User.Identifiers, mapping.IDFirebase)
	custom := adFixture("trial_started")
	custom.Type, custom.Name = mapping.Custom, "first_open"
	tests := []struct {
		name    string
		event   *mapping.Event
		names   map[string]string
		outcome Outcome
		reason  string
	}{
		{"older than 72 hours", old, nil, Skipped, "too_old"},
		{"sandbox without sandbox stream", sandboxEvt, nil, Skipped, "sandbox_not_configured"},
		{"disabled type", adFixture("trial_started"), map[string]string{"trial_started": ""}, Skipped, "no_event_name"},
		{"reserved custom name", custom, nil, Dead, "invalid_event_name"},
		{"no app instance id", noInstance, nil, Skipped, "missing firebase_app_instance_id"},
		{"nil event", nil, nil, Dead, "no_event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, nil)
			g := newTestGA4(t, rec, ga4AppBlock, tt.names)
			r := g.Send(context.Background(), []Item{{Key: "a", Event: tt.event}})[0]
			if r.Outcome != tt.outcome || !strings.HasPrefix(r.Reason, tt.reason) {
				t.Errorf("got %s %q, want %s %q", r.Outcome, r.Reason, tt.outcome, tt.reason)
			}
			if len(rec.all()) != 0 {
				t.Error("a request was made")
			}
		})
	}
}

func TestGA4StatusAndSecrets(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		outcome  Outcome
		throttle bool
	}{
		{"204", 204, Delivered, false},
		{"429", 429, Retry, true},
		{"500", 500, Retry, false},
		{"403", 403, Pause, false},
		{"400", 400, Dead, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) { return tt.status, `{"echo":"` + ga4TestSecret + `"}` })
			g := newTestGA4(t, rec, ga4WebBlock, nil)
			r := g.Send(context.Background(), []Item{{Key: "a", Event: adFixture("purchase")}})[0]
			if r.Outcome != tt.outcome || r.Throttle != tt.throttle || r.Status != tt.status {
				t.Errorf("got %s throttle=%v status=%d", r.Outcome, r.Throttle, r.Status)
			}
			for what, s := range map[string]string{"request": r.Request, "response": r.Response, "err": fmt.Sprint(r.Err)} {
				if strings.Contains(s, ga4TestSecret) {
					t.Errorf("%s leaks api_secret: %s", what, s)
				}
			}
		})
	}
	t.Run("network error", func(t *testing.T) {
		rec := newAdRecorder(t, nil)
		g := newTestGA4(t, rec, ga4WebBlock, nil)
		rec.srv.Close()
		r := g.Send(context.Background(), []Item{{Key: "a", Event: adFixture("purchase")}})[0]
		if r.Outcome != Retry || strings.Contains(fmt.Sprint(r.Err), ga4TestSecret) {
			t.Errorf("got %s, err %v", r.Outcome, r.Err)
		}
	})
}

func TestGA4Check(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		answer  string
		wantErr error
		wantMsg string
	}{
		{"valid", 200, `{"validationMessages":[]}`, nil, ""},
		{"validation messages", 200, `{"validationMessages":[{"fieldPath":"events[0].params.currency","description":"Currency code must be ISO 4217.","validationCode":"VALUE_INVALID"}]}`,
			ErrGA4Invalid, "events[0].params.currency: Currency code must be ISO 4217. (VALUE_INVALID)"},
		{"http error", 500, ``, ErrAdNetwork, "HTTP 500"},
		{"unreadable", 200, `not json`, ErrAdNetwork, "unreadable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) { return tt.status, tt.answer })
			g := newTestGA4(t, rec, ga4IOSBlock, nil)
			err := g.Check(context.Background())
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want %v with %q", err, tt.wantErr, tt.wantMsg)
			}
			if err != nil && strings.Contains(err.Error(), ga4TestSecret) {
				t.Errorf("error leaks api_secret: %v", err)
			}
			reqs := rec.all()
			if len(reqs) != 1 || reqs[0].Path != "/debug/mp/collect" {
				t.Fatalf("requests = %v", reqs)
			}
			var b ga4Request
			if err := json.Unmarshal(reqs[0].Body, &b); err != nil {
				t.Fatal(err)
			}
			if b.ValidationBehavior != "ENFORCE_RECOMMENDATIONS" || b.AppInstanceID == "" || len(b.Events) != 1 || b.Events[0].Name != "purchase" {
				t.Errorf("check payload = %+v", b)
			}
		})
	}
	t.Run("checks the last payload sent, on every stream", func(t *testing.T) {
		rec := newAdRecorder(t, func(r adRequest) (int, string) {
			if r.Path == "/mp/collect" {
				return 204, ""
			}
			return 200, `{"validationMessages":[]}`
		})
		g := newTestGA4(t, rec, ga4AppBlock+"sandbox: {firebase_app_id: \"1:1234567890:ios:999\", api_secret: sb}\n", nil)
		g.Send(context.Background(), []Item{{Key: "a", Event: adFixture("renewal")}})
		if err := g.Check(context.Background()); err != nil {
			t.Fatal(err)
		}
		var checks []ga4Request
		for _, r := range rec.all() {
			if r.Path == "/debug/mp/collect" {
				var b ga4Request
				_ = json.Unmarshal(r.Body, &b)
				checks = append(checks, b)
			}
		}
		if len(checks) != 3 {
			t.Fatalf("%d checks, want 3 (production iOS and Android apps, sandbox)", len(checks))
		}
		if checks[1].AppInstanceID != "0a1b2c3d4e5f60718293a4b5c6d7e8f9" || checks[1].Events[0].Name != "purchase" {
			t.Errorf("production Android check did not replay the last payload: %+v", checks[1])
		}
		if checks[0].AppInstanceID != "0123456789abcdef0123456789abcdef" {
			t.Errorf("production iOS check did not use the sample: %+v", checks[0])
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		rec := newAdRecorder(t, nil)
		g := newTestGA4(t, rec, ga4WebBlock, nil)
		rec.srv.Close()
		if err := g.Check(context.Background()); err == nil || strings.Contains(err.Error(), ga4TestSecret) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestGA4MissingAndLimits(t *testing.T) {
	web := adFixture("purchase")
	webNoClient := adFixture("purchase")
	delete(webNoClient.User.Identifiers, mapping.IDGAClient)
	appNoInstance := adFixture("renewal")
	delete(appNoInstance.User.Identifiers, mapping.IDFirebase)
	rec := newAdRecorder(t, nil)
	app, webg := newTestGA4(t, rec, ga4AppBlock, nil), newTestGA4(t, rec, ga4WebBlock, nil)
	tests := []struct {
		name  string
		g     *GA4
		event *mapping.Event
		want  string
	}{
		{"app stream with instance id", app, adFixture("renewal"), ""},
		{"app stream without instance id", app, appNoInstance, "firebase_app_instance_id"},
		{"web stream with client id", webg, web, ""},
		{"web stream without client id", webg, webNoClient, "ga_client_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.g.Missing(tt.event); got != tt.want {
				t.Errorf("Missing = %q, want %q", got, tt.want)
			}
		})
	}
	if l := app.Limits(); l.BatchSize != 25 || l.MaxAge > 72*time.Hour || l.MaxAge < 71*time.Hour {
		t.Errorf("limits = %+v", l)
	}
	if app.CheckInterval() != 0 {
		t.Errorf("CheckInterval = %s without debug_check, want 0", app.CheckInterval())
	}
	on := newTestGA4(t, rec, ga4WebBlock+"debug_check: {enabled: true}\n", nil)
	if on.CheckInterval() != time.Hour {
		t.Errorf("default interval = %s, want 1h", on.CheckInterval())
	}
	every := newTestGA4(t, rec, ga4WebBlock+"debug_check: {enabled: true, interval: 15m}\n", nil)
	if every.CheckInterval() != 15*time.Minute {
		t.Errorf("interval = %s, want 15m", every.CheckInterval())
	}
}

func TestNewGA4Validates(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		block    string
		names    map[string]string
		key      string
	}{
		{"no stream", "", "api_secret: x\n", nil, "firebase_app_id"},
		{"two streams", "", ga4AppBlock + "measurement_id: G-1\n", nil, "measurement_id"},
		{"bad measurement id", "", "measurement_id: UA-1\napi_secret: x\n", nil, "measurement_id"},
		{"no secret", "", "measurement_id: G-1\n", nil, "api_secret"},
		{"bad endpoint", "https://x.example/?a=b", ga4WebBlock, nil, "endpoint"},
		{"sandbox same stream", "", ga4WebBlock + "sandbox: {measurement_id: G-ABC123XYZ, api_secret: y}\n", nil, "sandbox"},
		{"sandbox without secret", "", ga4WebBlock + "sandbox: {measurement_id: G-SB}\n", nil, "sandbox.api_secret"},
		{"invalid event name", "", ga4WebBlock, map[string]string{"trial_started": "trial started"}, "event_names.trial_started"},
		{"reserved event name", "", ga4WebBlock, map[string]string{"purchase": "in_app_purchase"}, "event_names.purchase"},
		{"reserved prefix", "", ga4WebBlock, map[string]string{"refund": "firebase_refund"}, "event_names.refund"},
		{"bad interval", "", ga4WebBlock + "debug_check: {enabled: true, interval: 5s}\n", nil, "debug_check.interval"},
		{"undecodable", "", "api_secret: [1]\n", nil, "destinations[test-ga4]."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewGA4(adSettings(t, "ga4", tt.endpoint, tt.block, tt.names, http.DefaultClient))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tt.key)
			}
		})
	}
	t.Run("registered", func(t *testing.T) {
		f, err := New(Settings{Name: "g", Type: "ga4", Decode: adSettings(t, "ga4", "", ga4AppBlock, nil, nil).Decode})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := f.(Checker); !ok {
			t.Error("GA4 is not a Checker")
		}
	})
}

// TestGA4PlatformRouting: a Firebase app belongs to one platform, so an
// event goes to its own platform's firebase_app_id (with that stream's
// secret), never to the other's.
func TestGA4PlatformRouting(t *testing.T) {
	block := "api_secret: shared-SECRET-1\nfirebase_app_ids: {ios: \"1:42:ios:aaaa\", android: \"1:42:android:bbbb\"}\napi_secrets: {android: android-SECRET-2}\n"
	ios, android := adFixture("trial_converted"), adFixture("renewal")
	noOS := adFixture("trial_converted")
	noOS.Source = mapping.SourceCustom
	delete(noOS.User.Identifiers, mapping.IDOS)
	cases := []struct {
		name           string
		block          string
		event          *mapping.Event
		app, secret    string
		outcome        Outcome
		reason         string
		wantMissingArg string
	}{
		{"ios event to the ios app", block, ios, "1:42:ios:aaaa", "shared-SECRET-1", Delivered, "", ""},
		{"android event to the android app with its secret", block, android, "1:42:android:bbbb", "android-SECRET-2", Delivered, "", ""},
		{"android event and only an ios app", ga4IOSBlock, android, "", "", Skipped, "platform_mismatch", ""},
		{"no platform", block, noOS, "", "", Skipped, "missing os", ""},
		{"legacy id without a platform takes every event", "firebase_app_id: legacy-id\napi_secret: s3cret\n", android, "legacy-id", "s3cret", Delivered, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) { return 204, "" })
			g := newTestGA4(t, rec, tc.block, nil)
			r := g.Send(context.Background(), []Item{{Key: "a", Event: tc.event}})[0]
			if r.Outcome != tc.outcome || !strings.HasPrefix(r.Reason, tc.reason) {
				t.Fatalf("got %s %q, want %s %q", r.Outcome, r.Reason, tc.outcome, tc.reason)
			}
			if m := g.Missing(tc.event); m != "" {
				t.Errorf("Missing = %q, want nothing (the event is skipped or complete)", m)
			}
			reqs := rec.all()
			if tc.app == "" {
				if len(reqs) != 0 {
					t.Errorf("%d requests, want none", len(reqs))
				}
				return
			}
			q, _ := url.ParseQuery(reqs[0].Query)
			if q.Get("firebase_app_id") != tc.app || q.Get("api_secret") != tc.secret {
				t.Errorf("sent to %s with secret %s, want %s %s", q.Get("firebase_app_id"), q.Get("api_secret"), tc.app, tc.secret)
			}
		})
	}
}

func TestGA4PlatformConfigErrors(t *testing.T) {
	cases := []struct{ name, block, key string }{
		{"unknown platform", "api_secret: s\nfirebase_app_ids: {web: \"1:1:web:1\"}\n", "firebase_app_ids.web"},
		{"id of the other platform", "api_secret: s\nfirebase_app_ids: {ios: \"1:1:android:1\"}\n", "firebase_app_ids.ios"},
		{"empty id", "api_secret: s\nfirebase_app_ids: {ios: \"\"}\n", "firebase_app_ids.ios"},
		{"no secret", "firebase_app_ids: {ios: \"1:1:ios:1\"}\n", "api_secrets.ios"},
		{"secret without app", "api_secret: s\nfirebase_app_ids: {ios: \"1:1:ios:1\"}\napi_secrets: {android: x}\n", "api_secrets.android"},
		{"both forms", "api_secret: s\nfirebase_app_id: \"1:1:ios:1\"\nfirebase_app_ids: {ios: \"1:1:ios:1\"}\n", "firebase_app_ids"},
		{"api_secrets alone", "api_secret: s\nfirebase_app_id: \"1:1:ios:1\"\napi_secrets: {ios: x}\n", "api_secrets"},
		{"sandbox shares an app", "api_secret: s\nfirebase_app_ids: {ios: \"1:1:ios:1\"}\nsandbox: {api_secret: t, firebase_app_ids: {ios: \"1:1:ios:1\"}}\n", "sandbox"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewGA4(adSettings(t, "ga4", "", tc.block, nil, nil))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "."+tc.key+":") {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tc.key)
			}
		})
	}
}
