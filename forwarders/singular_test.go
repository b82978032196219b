package forwarders

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/postback/postback/mapping"
)

const sngBlock = "sdk_key: singular-SECRET-key\nsandbox: {sdk_key: singular-SANDBOX-key}"

func TestSingularGolden(t *testing.T) {
	mmpGolden(t, "singular", sngBlock, func(mmpCaptured) (int, string) { return 200, `{"status":"ok"}` }, "singular-SECRET-key")
}

func TestSingularClassify(t *testing.T) {
	mmpClassify(t, "singular", sngBlock, "subscription_renewed", []mmpClassifyCase{
		{name: "200 ok", status: 200, body: `{"status":"ok"}`, want: Delivered},
		{name: "200 error missing argument", status: 200, body: `{"status":"error","reason":"missing argument: ve"}`, want: Dead, reason: ReasonValidation},
		{name: "200 error no device id", status: 200, body: `{"status":"error","reason":"no device ID supplied"}`, want: Dead, reason: ReasonValidation},
		{name: "200 error invalid key", status: 200, body: `{"status":"error","reason":"Invalid SDK key"}`, want: Pause, reason: ReasonAuth},
		{name: "200 unreadable body", status: 200, body: `<html>`, want: Retry, reason: "unreadable_response"},
		{name: "200 unknown status", status: 200, body: `{"status":"queued?"}`, want: Retry, reason: "unreadable_response"},
		{name: "401", status: 401, want: Pause, reason: ReasonAuth},
		{name: "400 is retried as Singular asks", status: 400, want: Retry, reason: "http_400"},
		{name: "429", status: 429, want: Retry, throttle: true, reason: "http_429"},
		{name: "500", status: 500, want: Retry, reason: "http_500"},
	})
}

func TestSingularRouting(t *testing.T) {
	srv := newMMPServer(t, func(mmpCaptured) (int, string) { return 200, `{"status":"ok"}` })
	f := mmpNew(t, "singular", srv.URL, sngBlock+"\nbundle_id: com.example.override", nil)
	send := func(e *mapping.Event) Result {
		return f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]
	}
	last := func() mmpCaptured { r := srv.requests(); return r[len(r)-1] }

	t.Run("v2 with sdid", func(t *testing.T) {
		e := mmpEvent("trial_converted")
		e.User.Identifiers[mapping.IDSingular] = "40009df0-d618-4d81-9da1-cbb3337b8dec"
		if r := send(e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		c := last()
		if c.Path != "/api/v2/evt" || c.Query.Get("sdid") == "" || c.Query.Has("idfa") || c.Query.Get("i") != "com.example.override" {
			t.Errorf("%s %v", c.Path, c.Query)
		}
	})
	t.Run("android v1 ids", func(t *testing.T) {
		e := mmpEvent("refund")
		e.Source = mapping.SourceGoogle
		e.User.Identifiers = map[string]string{mapping.IDGAID: "660e1d86", mapping.IDAppSetID: "asid-1", mapping.IDIP: "203.0.113.9", mapping.IDOSVersion: "14", mapping.IDATTStatus: "3"}
		if r := send(e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		q := last().Query
		if q.Get("p") != "Android" || q.Get("aifa") != "660e1d86" || q.Get("asid") != "asid-1" || q.Has("att_authorization_status") || q.Get("amt") != "-9.99" || q.Get("is_revenue_event") != "true" {
			t.Errorf("%v", q)
		}
	})
	t.Run("sandbox key", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Environment = mapping.Sandbox
		if r := send(e); r.Outcome != Delivered || last().Query.Get("a") != "singular-SANDBOX-key" {
			t.Errorf("%+v %v", r, last().Query)
		}
	})
	missing := []struct {
		name string
		edit func(e *mapping.Event)
		want string
	}{
		{"unknown platform", func(e *mapping.Event) { e.Source = mapping.SourceStripe; delete(e.User.Identifiers, mapping.IDOS) }, mapping.IDOS},
		{"ios without idfv or idfa", func(e *mapping.Event) {
			delete(e.User.Identifiers, mapping.IDIDFV)
			delete(e.User.Identifiers, mapping.IDIDFA)
		}, mapping.IDIDFV},
		{"android without ids", func(e *mapping.Event) { e.User.Identifiers = map[string]string{mapping.IDOS: "android"} }, mapping.IDGAID},
		{"no ip", func(e *mapping.Event) { delete(e.User.Identifiers, mapping.IDIP) }, mapping.IDIP},
		{"ipv6 only: waits for an IPv4 address", func(e *mapping.Event) { e.User.Identifiers[mapping.IDIP] = "2001:db8::7" }, "ipv4"},
		{"garbage ip", func(e *mapping.Event) { e.User.Identifiers[mapping.IDIP] = "localhost" }, "ipv4"},
		{"no os version", func(e *mapping.Event) { delete(e.User.Identifiers, mapping.IDOSVersion) }, mapping.IDOSVersion},
		{"sdid needs nothing else", func(e *mapping.Event) {
			e.User.Identifiers = map[string]string{mapping.IDOS: "ios", mapping.IDSingular: "s"}
		}, ""},
	}
	for _, tc := range missing {
		t.Run("missing "+tc.name, func(t *testing.T) {
			e := mmpEvent("purchase")
			tc.edit(e)
			if got := f.(Requirer).Missing(e); got != tc.want {
				t.Errorf("Missing = %q, want %q", got, tc.want)
			}
			if tc.want != "" {
				if r := send(e); r.Outcome != Skipped || r.Reason != "missing "+tc.want {
					t.Errorf("%+v", r)
				}
			}
		})
	}
	t.Run("no name", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Type = mapping.SubscriptionPaused
		if r := send(e); r.Outcome != Skipped || r.Reason != ReasonNoEventName {
			t.Errorf("%+v", r)
		}
	})
}

func TestSingularConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, endpoint, block, key string }{
		{"no key", "", "bundle_id: com.x", "sdk_key"},
		{"sandbox without key", "", "sdk_key: k\nsandbox: {}", "sandbox.sdk_key"},
		{"sandbox same key", "", "sdk_key: k\nsandbox: {sdk_key: k}", "sandbox.sdk_key"},
		{"bad bundle", "", "sdk_key: k\nbundle_id: \"a b\"", "bundle_id"},
		{"bad endpoint", "mailto:x", "sdk_key: k", "endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(mmpSettingsFor(t, "singular", tc.endpoint, tc.block, nil))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "."+tc.key+":") {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tc.key)
			}
		})
	}
}

// TestSingularIPv4 checks what reaches Singular for each kind of address:
// v1 never goes out without an IPv4 ip (Missing holds it), v2 (sdid) leaves
// an IPv6 address out, and an IPv4-mapped address is sent dotted.
func TestSingularIPv4(t *testing.T) {
	srv := newMMPServer(t, func(mmpCaptured) (int, string) { return 200, `{"status":"ok"}` })
	f := mmpNew(t, "singular", srv.URL, sngBlock, nil)
	send := func(e *mapping.Event) (Result, mmpCaptured) {
		before := len(srv.requests())
		r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]
		reqs := srv.requests()
		if len(reqs) == before {
			return r, mmpCaptured{}
		}
		return r, reqs[len(reqs)-1]
	}
	t.Run("v1 ipv6 is skipped, never sent", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.User.Identifiers[mapping.IDIP] = "2001:db8::7"
		r, c := send(e)
		if r.Outcome != Skipped || r.Reason != "missing ipv4" || c.Path != "" {
			t.Errorf("result %+v, request %q", r, c.Path)
		}
	})
	t.Run("v1 ipv4-mapped", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.User.Identifiers[mapping.IDIP] = "::ffff:198.51.100.7"
		if r, c := send(e); r.Outcome != Delivered || c.Query.Get("ip") != "198.51.100.7" {
			t.Errorf("result %+v, ip %q", r, c.Query.Get("ip"))
		}
	})
	t.Run("v2 ipv6 left out", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.User.Identifiers = map[string]string{mapping.IDOS: "ios", mapping.IDSingular: "40009df0-d618-4d81-9da1-cbb3337b8dec", mapping.IDIP: "2001:db8::7"}
		r, c := send(e)
		if r.Outcome != Delivered || c.Path != "/api/v2/evt" || c.Query.Has("ip") {
			t.Errorf("result %+v, %s %v", r, c.Path, c.Query)
		}
	})
}
