package forwarders

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

const afBlock = "app_id: id123456789\ns2s_token: af-token-SECRET\nsandbox: {app_id: id987654321, dev_key: af-devkey-SANDBOX}"

func TestAppsFlyerGolden(t *testing.T) {
	mmpGolden(t, "appsflyer", afBlock, func(mmpCaptured) (int, string) { return 200, "ok" }, "af-token-SECRET")
}

func TestAppsFlyerClassify(t *testing.T) {
	mmpClassify(t, "appsflyer", afBlock, "subscription_renewed", []mmpClassifyCase{
		{name: "200 ok", status: 200, body: "ok", want: Delivered},
		{name: "400 failed to authenticate", status: 400, body: "Failed to authenticate", want: Pause, reason: ReasonAuth},
		{name: "400 mandatory field", status: 400, body: "appsflyer_id is a mandatory field", want: Dead, reason: ReasonValidation},
		{name: "401 unauthorized", status: 401, body: "Unauthorized", want: Pause, reason: ReasonAuth},
		{name: "403 forbidden", status: 403, body: "Forbidden", want: Pause, reason: ReasonConfig},
		{name: "404 unknown app", status: 404, body: "Not Found", want: Pause, reason: ReasonConfig},
		{name: "429 throttled with retry-after", status: 429, header: map[string]string{"Retry-After": "30"}, want: Retry, throttle: true, retryAfter: 30 * time.Second},
		{name: "500", status: 500, body: "Internal Server Error", want: Retry, reason: "http_500"},
		{name: "302 redirect is not followed", status: 302, want: Dead, reason: "http_302"},
	})
}

func TestAppsFlyerLateTimestamp(t *testing.T) {
	srv := newMMPServer(t, nil)
	f := mmpNew(t, "appsflyer", srv.URL, afBlock, nil)
	e := mmpEvent("subscription_renewed")
	e.OccurredAt = time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC) // next day 02:00 has passed at mmpNow
	r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]
	if r.Outcome != Delivered || r.Reason != ReasonLateTimestamp {
		t.Errorf("result = %+v, want delivered late_timestamp", r)
	}
	e.OccurredAt = time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	if r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Reason != "" {
		t.Errorf("same-day event reason = %q", r.Reason)
	}
}

func TestAppsFlyerRouting(t *testing.T) {
	srv := newMMPServer(t, nil)
	f := mmpNew(t, "appsflyer", srv.URL, afBlock, nil)
	cases := []struct {
		name   string
		edit   func(e *mapping.Event)
		want   Outcome
		reason string
		path   string
		key    string
	}{
		{"production", func(*mapping.Event) {}, Delivered, "", "/inappevent/id123456789", "af-token-SECRET"},
		{"sandbox goes to the sandbox app with its key", func(e *mapping.Event) { e.Environment = mapping.Sandbox }, Delivered, "", "/inappevent/id987654321", "af-devkey-SANDBOX"},
		{"no appsflyer_id", func(e *mapping.Event) { delete(e.User.Identifiers, mapping.IDAppsFlyer) }, Skipped, "missing appsflyer_id", "", ""},
		{"android event for the iOS app", func(e *mapping.Event) { e.User.Identifiers[mapping.IDOS] = "android" }, Skipped, "platform_mismatch", "", ""},
		{"type without a name", func(e *mapping.Event) { e.Type = mapping.SubscriptionExpired }, Skipped, ReasonNoEventName, "", ""},
		{"future", func(e *mapping.Event) { e.OccurredAt = mmpNow.Add(time.Hour) }, Skipped, ReasonFutureTimestamp, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.requests())
			e := mmpEvent("subscription_renewed")
			tc.edit(e)
			r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]
			if r.Outcome != tc.want || r.Reason != tc.reason {
				t.Fatalf("result = %+v, want %s %q", r, tc.want, tc.reason)
			}
			reqs := srv.requests()
			if tc.path == "" {
				if len(reqs) != before {
					t.Error("a skipped event reached the server")
				}
				return
			}
			got := reqs[len(reqs)-1]
			if got.Path != tc.path || got.Header.Get("Authentication") != tc.key {
				t.Errorf("sent to %s with key %q, want %s %q", got.Path, got.Header.Get("Authentication"), tc.path, tc.key)
			}
		})
	}
	t.Run("sandbox without a sandbox block is skipped", func(t *testing.T) {
		f := mmpNew(t, "appsflyer", srv.URL, "app_id: id123456789\ns2s_token: t0ken", nil)
		e := mmpEvent("subscription_renewed")
		e.Environment = mapping.Sandbox
		if r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Outcome != Skipped || r.Reason != ReasonSandboxNoCreds {
			t.Errorf("result = %+v", r)
		}
	})
}

func TestAppsFlyerRevenueRules(t *testing.T) {
	srv := newMMPServer(t, nil)
	block := "app_id: com.example.app\ndev_key: k3y-dev\nrevenue: proceeds\ncommission: {google: 15}\ncurrency: USD\nfx_rates: {EUR: \"1.10\"}"
	f := mmpNew(t, "appsflyer", srv.URL, block, nil)
	e := mmpEvent("refund")
	e.Source = mapping.SourceGoogle
	e.User.Identifiers[mapping.IDOS] = "android"
	e.User.Identifiers[mapping.IDGAID] = "660e1d86-6796-463a-be86-897993136018"
	e.Revenue = &mapping.Revenue{AmountMicros: -10_000_000, Currency: "EUR"}
	if r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	var body struct {
		EventValue    string `json:"eventValue"`
		EventCurrency string `json:"eventCurrency"`
		AdvertisingID string `json:"advertising_id"`
		IDFA          string `json:"idfa"`
	}
	reqs := srv.requests()
	if err := json.Unmarshal(reqs[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	var ev map[string]string
	if err := json.Unmarshal([]byte(body.EventValue), &ev); err != nil {
		t.Fatal(err)
	}
	// -10 EUR, 15% commission kept by Google, 1.10 USD per EUR: -9.35 USD.
	if ev["af_revenue"] != "-9.35" || ev["af_currency"] != "USD" || body.EventCurrency != "USD" {
		t.Errorf("eventValue = %v, currency %q", ev, body.EventCurrency)
	}
	if body.AdvertisingID == "" || body.IDFA != "" || reqs[0].Path != "/inappevent/com.example.app" {
		t.Errorf("android ids wrong: %+v path %s", body, reqs[0].Path)
	}
	t.Run("missing fx rate pauses", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Source = mapping.SourceGoogle
		e.User.Identifiers[mapping.IDOS] = "android"
		e.Revenue = &mapping.Revenue{AmountMicros: 1_000_000, Currency: "BRL"}
		r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]
		if r.Outcome != Pause || r.Reason != ReasonFXRateMissing || !errors.Is(r.Err, ErrNoFXRate) {
			t.Errorf("result = %+v", r)
		}
	})
}

func TestAppsFlyerBodyLimit(t *testing.T) {
	srv := newMMPServer(t, nil)
	f := mmpNew(t, "appsflyer", srv.URL, afBlock, nil)
	e := mmpEvent("purchase")
	e.Attributes["note"] = strings.Repeat("x", 900) // dropped to fit 1 KB
	if r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if b := srv.requests()[0].Body; len(b) > 1024 || strings.Contains(string(b), "xxxx") {
		t.Errorf("body of %d bytes kept the optional attribute", len(b))
	}
	e.User.Identifiers[mapping.IDUserAgent] = strings.Repeat("u", 1100)
	if r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Outcome != Dead || r.Reason != "encode" {
		t.Errorf("oversized = %+v, want dead", r)
	}
}

func TestAppsFlyerConfigErrors(t *testing.T) {
	cases := []struct{ name, block, key string }{
		{"no app id", "s2s_token: t", "app_id"},
		{"ios id without prefix", "app_id: \"123456789\"\ns2s_token: t", "app_id"},
		{"not an app id", "app_id: my app\ns2s_token: t", "app_id"},
		{"no key", "app_id: id1", "s2s_token"},
		{"both keys", "app_id: id1\ns2s_token: t\ndev_key: d", "s2s_token"},
		{"bad bundle id", "app_id: id1\ns2s_token: t\nbundle_id: \"a b\"", "bundle_id"},
		{"sandbox same app", "app_id: id1\ns2s_token: t\nsandbox: {app_id: id1}", "sandbox.app_id"},
		{"sandbox without prefix", "app_id: id1\ns2s_token: t\nsandbox: {app_id: \"2\"}", "sandbox.app_id"},
		{"name too long", "app_id: id1\ns2s_token: t\nevent_names: {}", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			names := map[string]string(nil)
			if tc.key == "" {
				names = map[string]string{"refund": strings.Repeat("n", 46)}
				tc.key = "event_names.refund"
			}
			_, err := New(mmpSettingsFor(t, "appsflyer", "", tc.block, names))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "."+tc.key+":") {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tc.key)
			}
		})
	}
	t.Run("bad endpoint", func(t *testing.T) {
		_, err := New(mmpSettingsFor(t, "appsflyer", "ftp://x", "app_id: id1\ns2s_token: t", nil))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "endpoint") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		f, err := New(mmpSettingsFor(t, "appsflyer", "", "app_id: id1\ndev_key: d", nil))
		if err != nil {
			t.Fatal(err)
		}
		a := f.(*AppsFlyer)
		if a.prod.url != "https://api2.appsflyer.com/inappevent/id1" || f.Limits().BatchSize != 1 {
			t.Errorf("url %s limits %+v", a.prod.url, f.Limits())
		}
		f, _ = New(mmpSettingsFor(t, "appsflyer", "", "app_id: id1\ns2s_token: t", nil))
		if u := f.(*AppsFlyer).prod.url; u != "https://api3.appsflyer.com/inappevent/id1" {
			t.Errorf("url %s", u)
		}
	})
}

// TestAppsFlyerIPv4Only: the reference's ip is an IPv4 address (pattern,
// maxLength 16). An IPv6 address is left out, an IPv4-mapped one is sent in
// dotted form, and the hashed e-mail, phone and app_set_id the reference
// does not list are never sent.
func TestAppsFlyerIPv4Only(t *testing.T) {
	cases := []struct{ name, ip, want string }{
		{"ipv4", "203.0.113.9", "203.0.113.9"},
		{"ipv6 left out", "2001:db8::1", ""},
		{"ipv4-mapped ipv6", "::ffff:198.51.100.7", "198.51.100.7"},
		{"garbage left out", "not-an-ip", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newMMPServer(t, nil)
			f := mmpNew(t, "appsflyer", srv.URL, afBlock, nil)
			e := mmpEvent("subscription_renewed")
			e.User.Identifiers[mapping.IDIP] = tc.ip
			e.User.Identifiers[mapping.IDEmailSHA256] = mapping.SHA256Hex("a@example.com")
			e.User.Identifiers[mapping.IDPhoneSHA256] = mapping.SHA256Hex("16505551212")
			e.User.Identifiers[mapping.IDPhoneE164SHA256] = mapping.SHA256Hex("+16505551212")
			e.User.Identifiers[mapping.IDAppSetID] = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
			if r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Outcome != Delivered {
				t.Fatalf("result = %+v", r)
			}
			var body map[string]any
			if err := json.Unmarshal(srv.requests()[0].Body, &body); err != nil {
				t.Fatal(err)
			}
			got, _ := body["ip"].(string)
			if got != tc.want {
				t.Errorf("ip = %q, want %q", got, tc.want)
			}
			for _, k := range []string{"email_hashed", "phone_number_hashed", "phone_number_e164_hashed", "app_set_id"} {
				if _, ok := body[k]; ok {
					t.Errorf("%s sent; the reference does not list it", k)
				}
			}
		})
	}
}
