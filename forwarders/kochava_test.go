package forwarders

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/postback/postback/mapping"
)

const koBlock = "app_guid: koexample-app-SECRET\nsandbox: {app_guid: koexample-test-SANDBOX}"

func TestKochavaGolden(t *testing.T) {
	mmpGolden(t, "kochava", koBlock, func(mmpCaptured) (int, string) { return 200, `{"success":"1"}` }, "koexample-app-SECRET")
}

func TestKochavaClassify(t *testing.T) {
	mmpClassify(t, "kochava", koBlock, "subscription_renewed", []mmpClassifyCase{
		{name: "200 success", status: 200, body: `{"success":"1"}`, want: Delivered},
		{name: "200 empty body", status: 200, want: Delivered},
		{name: "200 success 0 app error", status: 200, body: `{"success":"0","error":"invalid app id"}`, want: Pause, reason: ReasonConfig},
		{name: "200 success 0", status: 200, body: `{"success":"0","error":"bad data"}`, want: Dead, reason: ReasonValidation},
		{name: "204", status: 204, want: Delivered},
		{name: "400", status: 400, want: Dead, reason: ReasonValidation},
		{name: "401", status: 401, want: Pause, reason: ReasonAuth},
		{name: "429", status: 429, want: Retry, throttle: true, reason: "http_429"},
		{name: "500", status: 500, want: Retry, reason: "http_500"},
	})
}

func TestKochavaRouting(t *testing.T) {
	srv := newMMPServer(t, func(mmpCaptured) (int, string) { return 200, `{"success":"1"}` })
	f := mmpNew(t, "kochava", srv.URL, koBlock, nil)
	send := func(e *mapping.Event) Result { return f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0] }
	last := func() map[string]any {
		r := srv.requests()
		var m map[string]any
		if err := json.Unmarshal(r[len(r)-1].Body, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	t.Run("sandbox goes to the test app guid", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Environment = mapping.Sandbox
		if r := send(e); r.Outcome != Delivered || last()["kochava_app_id"] != "koexample-test-SANDBOX" {
			t.Errorf("%+v %v", r, last())
		}
	})
	t.Run("android ids, reserved keys dropped", func(t *testing.T) {
		e := mmpEvent("purchase")
		e.Source = mapping.SourceGoogle
		e.User.Identifiers = map[string]string{mapping.IDKochava: "KA1", mapping.IDIP: "198.51.100.1", mapping.IDGAID: "660e1d86", mapping.IDDeviceModel: "Pixel 8", mapping.IDOSVersion: "14"}
		e.Attributes = map[string]string{"campaign": "x", "offer": "intro"}
		if r := send(e); r.Outcome != Delivered {
			t.Fatalf("%+v", r)
		}
		d := last()["data"].(map[string]any)
		ed := d["event_data"].(map[string]any)
		if d["device_ver"] != "Pixel 8-Android-14" || d["device_ids"].(map[string]any)["adid"] != "660e1d86" || d["app_tracking_transparency"] != nil || ed["campaign"] != nil || ed["offer"] != "intro" {
			t.Errorf("%v", d)
		}
	})
	t.Run("missing", func(t *testing.T) {
		e := mmpEvent("purchase")
		delete(e.User.Identifiers, mapping.IDIP)
		if got := f.(Requirer).Missing(e); got != mapping.IDIP {
			t.Errorf("Missing = %q", got)
		}
		delete(e.User.Identifiers, mapping.IDKochava)
		if r := send(e); r.Outcome != Skipped || r.Reason != "missing kochava_device_id" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("no sandbox block", func(t *testing.T) {
		g := mmpNew(t, "kochava", srv.URL, "app_guid: koexample-app-1", nil)
		e := mmpEvent("purchase")
		e.Environment = mapping.Sandbox
		if r := g.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Outcome != Skipped || r.Reason != ReasonSandboxNoCreds {
			t.Errorf("%+v", r)
		}
	})
}

func TestKochavaConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, endpoint, block, key string }{
		{"no guid", "", "", "app_guid"},
		{"not a guid", "", "app_guid: example app", "app_guid"},
		{"sandbox same guid", "", "app_guid: koabc-1\nsandbox: {app_guid: koabc-1}", "sandbox.app_guid"},
		{"sandbox bad guid", "", "app_guid: koabc-1\nsandbox: {app_guid: nope}", "sandbox.app_guid"},
		{"bad endpoint", "control.kochava.com", "app_guid: koabc-1", "endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(mmpSettingsFor(t, "kochava", tc.endpoint, tc.block, nil))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "."+tc.key+":") {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tc.key)
			}
		})
	}
}

// TestKochavaDeviceUA: Kochava asks for device_ua URL-encoded; spaces are
// %20, and a value the app already encoded is not encoded twice.
func TestKochavaDeviceUA(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "Example/42 CFNetwork/1410 Darwin/22.6.0", "Example%2F42%20CFNetwork%2F1410%20Darwin%2F22.6.0"},
		{"browser", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)", "Mozilla%2F5.0%20%28iPhone%3B%20CPU%20iPhone%20OS%2017_5%20like%20Mac%20OS%20X%29"},
		{"already encoded", "Mozilla%2F5.0%20%28iPhone%29", "Mozilla%2F5.0%20%28iPhone%29"},
		{"percent sign in a raw value", "Agent 100% (x)", "Agent%20100%25%20%28x%29"},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := kochavaUA(tc.in); got != tc.want {
				t.Errorf("kochavaUA(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	srv := newMMPServer(t, nil)
	f := mmpNew(t, "kochava", srv.URL, "app_guid: kotest-guid-123", nil)
	if r := f.Send(context.Background(), []Item{{Key: "d", Event: mmpEvent("purchase")}})[0]; r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	var body struct {
		Data struct {
			DeviceUA string `json:"device_ua"`
		} `json:"data"`
	}
	if err := json.Unmarshal(srv.requests()[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Data.DeviceUA != cases[0].want {
		t.Errorf("device_ua = %q, want %q", body.Data.DeviceUA, cases[0].want)
	}
}
