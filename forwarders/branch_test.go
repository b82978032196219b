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

const brBlock = "branch_key: key_live_SECRETbranch\nsandbox: {branch_key: key_test_SANDBOXbranch}"

func TestBranchGolden(t *testing.T) {
	mmpGolden(t, "branch", brBlock, func(mmpCaptured) (int, string) { return 200, `{"branch_view_enabled":false}` }, "key_live_SECRETbranch")
}

func TestBranchClassify(t *testing.T) {
	mmpClassify(t, "branch", brBlock, "subscription_renewed", []mmpClassifyCase{
		{name: "200", status: 200, body: `{}`, want: Delivered},
		{name: "400 invalid key", status: 400, body: `{"error":{"message":"Invalid or missing app id, Branch key, or secret","code":400}}`, want: Pause, reason: ReasonConfig},
		{name: "400 validation", status: 400, body: `{"error":{"message":"name is required","code":400}}`, want: Dead, reason: ReasonValidation},
		{name: "403", status: 403, want: Pause, reason: ReasonAuth},
		{name: "429 rate limit reached", status: 429, body: "Rate Limit Reached", want: Retry, throttle: true, reason: "http_429"},
		{name: "425", status: 425, want: Retry, reason: "http_425"},
		{name: "502", status: 502, want: Retry, reason: "http_502"},
	})
}

func TestBranchRouting(t *testing.T) {
	srv := newMMPServer(t, nil)
	f := mmpNew(t, "branch", srv.URL, brBlock, map[string]string{"subscription_renewed": "renewal"})
	send := func(e *mapping.Event) Result { return f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0] }
	last := func() (mmpCaptured, map[string]any) {
		r := srv.requests()
		var m map[string]any
		if err := json.Unmarshal(r[len(r)-1].Body, &m); err != nil {
			t.Fatal(err)
		}
		return r[len(r)-1], m
	}
	t.Run("custom event carries positive revenue as custom data only", func(t *testing.T) {
		if r := send(mmpEvent("subscription_renewed")); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		c, m := last()
		cd := m["custom_data"].(map[string]any)
		if c.Path != "/v2/event/custom" || m["event_data"] != nil || cd["revenue"] != "9.99" || cd["currency"] != "USD" {
			t.Errorf("%s %v", c.Path, m)
		}
	})
	t.Run("sandbox uses the test key", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Environment = mapping.Sandbox
		if r := send(e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		if _, m := last(); m["branch_key"] != "key_test_SANDBOXbranch" {
			t.Errorf("key %v", m["branch_key"])
		}
	})
	t.Run("android ids and limit_ad_tracking off android", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Source = mapping.SourceGoogle
		e.User.Identifiers = map[string]string{mapping.IDGAID: "660e1d86", mapping.IDATTStatus: "2"}
		e.User.AppUserID = ""
		if r := send(e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		_, m := last()
		ud := m["user_data"].(map[string]any)
		if ud["os"] != "Android" || ud["aaid"] != "660e1d86" || ud["limit_ad_tracking"] != nil || ud["idfa"] != nil {
			t.Errorf("%v", ud)
		}
	})
	t.Run("ATT denied limits ad tracking", func(t *testing.T) {
		e := mmpEvent("trial_started")
		e.User.Identifiers[mapping.IDATTStatus] = "denied"
		send(e)
		c, m := last()
		if c.Path != "/v2/event/standard" || m["user_data"].(map[string]any)["limit_ad_tracking"] != true {
			t.Errorf("%s %v", c.Path, m)
		}
	})
	t.Run("missing", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Source, e.User.Identifiers = mapping.SourceStripe, map[string]string{}
		if got := f.(Requirer).Missing(e); got != mapping.IDOS {
			t.Errorf("Missing = %q", got)
		}
		e.User.Identifiers[mapping.IDOS] = "ios"
		if got := f.(Requirer).Missing(e); got != "" {
			t.Errorf("app user id should do: %q", got)
		}
		e.User.AppUserID = ""
		if got := f.(Requirer).Missing(e); got != mapping.IDIDFV {
			t.Errorf("Missing = %q", got)
		}
		if r := send(e); r.Outcome != Skipped || r.Reason != "missing idfv" {
			t.Errorf("%+v", r)
		}
		e.User.Identifiers[mapping.IDOS] = "android"
		if got := f.(Requirer).Missing(e); got != mapping.IDGAID {
			t.Errorf("Missing = %q", got)
		}
		e.User.Identifiers[mapping.IDBranch] = "dev-id"
		if got := f.(Requirer).Missing(e); got != "" {
			t.Errorf("Missing with developer identity = %q", got)
		}
	})
}

func TestBranchConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, endpoint, block, key string }{
		{"no key", "", "", "branch_key"},
		{"test key in production", "", "branch_key: key_test_abc", "branch_key"},
		{"live key in sandbox", "", "branch_key: key_live_abc\nsandbox: {branch_key: key_live_abc}", "sandbox.branch_key"},
		{"bad endpoint", "api2.branch.io", "branch_key: key_live_abc", "endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(mmpSettingsFor(t, "branch", tc.endpoint, tc.block, nil))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "."+tc.key+":") {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tc.key)
			}
		})
	}
}

// TestBranchTooOld: Branch files events on the day they arrive ("events with
// timestamps in the past will not be backfilled"), so an event older than
// max_event_age (default 24h) is skipped as too_old, never sent, and is not
// held for identifiers.
func TestBranchTooOld(t *testing.T) {
	cases := []struct {
		name  string
		block string
		age   time.Duration
		want  Outcome
	}{
		{"default limit, 23h old is sent", brBlock, 23 * time.Hour, Delivered},
		{"default limit, 25h old is skipped", brBlock, 25 * time.Hour, Skipped},
		{"max_event_age 1h, 2h old is skipped", brBlock + "\nmax_event_age: 1h", 2 * time.Hour, Skipped},
		{"max_event_age 72h, 48h old is sent", brBlock + "\nmax_event_age: 72h", 48 * time.Hour, Delivered},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newMMPServer(t, nil)
			f := mmpNew(t, "branch", srv.URL, tc.block, nil)
			e := mmpEvent("purchase")
			e.OccurredAt = mmpNow.Add(-tc.age)
			r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]
			if r.Outcome != tc.want {
				t.Fatalf("result = %+v, want %s", r, tc.want)
			}
			if tc.want == Skipped {
				if r.Reason != ReasonTooOld || len(srv.requests()) != 0 {
					t.Errorf("reason %q, %d requests; want too_old and none", r.Reason, len(srv.requests()))
				}
				delete(e.User.Identifiers, mapping.IDIDFV)
				delete(e.User.Identifiers, mapping.IDIDFA)
				e.User.AppUserID = ""
				if m := f.(Requirer).Missing(e); m != "" {
					t.Errorf("Missing = %q for a too-old event; want nothing to wait for", m)
				}
			}
		})
	}
	for _, bad := range []string{"yesterday", "-1h", "0s"} {
		t.Run("bad max_event_age "+bad, func(t *testing.T) {
			_, err := New(mmpSettingsFor(t, "branch", "", brBlock+"\nmax_event_age: \""+bad+"\"", nil))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), ".max_event_age:") {
				t.Errorf("err = %v", err)
			}
		})
	}
}
