package forwarders

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// testModeCase is one destination's test mode against a stand-in vendor.
type testModeCase struct {
	name    string
	typ     string
	block   string
	respond func(mmpCaptured) (int, string)
	// check inspects the one request the vendor received.
	check      func(t *testing.T, c mmpCaptured)
	wantTested bool
	wantPassed bool
	reason     string // prefix of the reason when not passed
}

func runTestMode(t *testing.T, tc testModeCase) TestReport {
	t.Helper()
	srv := newMMPServer(t, tc.respond)
	f := mmpNew(t, tc.typ, srv.URL, tc.block, nil)
	tester, ok := f.(Tester)
	if !ok {
		t.Fatalf("%s is not a Tester", tc.typ)
	}
	rep := tester.Test(context.Background())
	if rep.Tested != tc.wantTested || rep.Passed() != tc.wantPassed {
		t.Fatalf("report tested=%v passed=%v (%+v), want tested=%v passed=%v", rep.Tested, rep.Passed(), rep, tc.wantTested, tc.wantPassed)
	}
	if tc.reason != "" && !strings.HasPrefix(rep.Reason, tc.reason) {
		t.Errorf("reason = %q, want prefix %q", rep.Reason, tc.reason)
	}
	if rep.Path == "" || rep.Where == "" {
		t.Errorf("report without path or where: %+v", rep)
	}
	reqs := srv.requests()
	if !tc.wantTested {
		if len(reqs) != 0 && rep.Status == 0 {
			t.Errorf("an untested report made %d requests", len(reqs))
		}
		return rep
	}
	if len(reqs) == 0 {
		t.Fatal("tested, but the vendor got no request")
	}
	if tc.check != nil {
		tc.check(t, reqs[0])
	}
	return rep
}

func jsonBody(t *testing.T, c mmpCaptured) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(c.Body, &m); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	return m
}

// TestTestModes: every ad network's test mode sends the test event through
// its validation path with the test credentials, shows the vendor's answer
// verbatim, passes only when the vendor accepted it, and reports "not
// tested" (never a pass) when no test path is configured.
func TestTestModes(t *testing.T) {
	ok200 := func(mmpCaptured) (int, string) { return 200, "ok" }
	cases := []testModeCase{
		{name: "appsflyer to the sandbox test app", typ: "appsflyer", block: afBlock, respond: ok200,
			check: func(t *testing.T, c mmpCaptured) {
				if c.Path != "/inappevent/id987654321" || c.Header.Get("Authentication") != "af-devkey-SANDBOX" {
					t.Errorf("sent to %s with %q, want the sandbox app and key", c.Path, c.Header.Get("Authentication"))
				}
			}, wantTested: true, wantPassed: true},
		{name: "appsflyer without a test app", typ: "appsflyer", block: "app_id: id123456789\ns2s_token: t0ken", reason: "not_tested"},
		{name: "appsflyer refuses the key", typ: "appsflyer", block: afBlock,
			respond: func(mmpCaptured) (int, string) { return 400, "Failed to authenticate" }, wantTested: true, reason: ReasonAuth},
		{name: "adjust environment=sandbox with production tokens", typ: "adjust", block: "app_token: 4w565xzmb54d\nevent_tokens: {subscription_renewed: f0ob4r}",
			respond: func(mmpCaptured) (int, string) { return 200, `{"status":"OK"}` },
			check: func(t *testing.T, c mmpCaptured) {
				f, _ := url.ParseQuery(string(c.Body))
				if f.Get("environment") != "sandbox" || f.Get("app_token") != "4w565xzmb54d" || f.Get("event_token") != "f0ob4r" || f.Get("idfa") != testIDFA {
					t.Errorf("form = %v", f)
				}
			}, wantTested: true, wantPassed: true},
		{name: "adjust device not found is tested, not passed", typ: "adjust", block: "app_token: 4w565xzmb54d\nevent_tokens: {purchase: f0ob4r}\nsandbox: {}",
			respond: func(mmpCaptured) (int, string) { return 404, `{"error":"Device not found"}` }, wantTested: true, reason: ReasonDeviceNotFound},
		{name: "singular sandbox key", typ: "singular", block: sngBlock,
			respond: func(mmpCaptured) (int, string) { return 200, `{"status":"ok"}` },
			check: func(t *testing.T, c mmpCaptured) {
				if c.Query.Get("a") != "singular-SANDBOX-key" || c.Query.Get("ip") != testIP {
					t.Errorf("query = %v", c.Query)
				}
			}, wantTested: true, wantPassed: true},
		{name: "singular error status is shown", typ: "singular", block: sngBlock,
			respond: func(mmpCaptured) (int, string) { return 200, `{"status":"error","reason":"Invalid platform"}` }, wantTested: true, reason: ReasonValidation},
		{name: "singular without sandbox key", typ: "singular", block: "sdk_key: k3y", reason: "not_tested"},
		{name: "branch test key", typ: "branch", block: brBlock, respond: func(mmpCaptured) (int, string) { return 200, `{}` },
			check: func(t *testing.T, c mmpCaptured) {
				if jsonBody(t, c)["branch_key"] != "key_test_SANDBOXbranch" {
					t.Errorf("branch_key = %v", jsonBody(t, c)["branch_key"])
				}
			}, wantTested: true, wantPassed: true},
		{name: "branch without test key", typ: "branch", block: "branch_key: key_live_x1", reason: "not_tested"},
		{name: "kochava test app guid", typ: "kochava", block: koBlock, respond: func(mmpCaptured) (int, string) { return 200, `{"success":"1"}` },
			check: func(t *testing.T, c mmpCaptured) {
				if jsonBody(t, c)["kochava_app_id"] != "koexample-test-SANDBOX" {
					t.Errorf("kochava_app_id = %v", jsonBody(t, c)["kochava_app_id"])
				}
			}, wantTested: true, wantPassed: true},
		{name: "kochava without test app", typ: "kochava", block: "app_guid: koapp-1", reason: "not_tested"},
		{name: "meta test_event_code", typ: "meta", block: "dataset_id: \"123456789012345\"\naccess_token: META-T0KEN\ntest_event_code: TEST4821",
			respond: func(mmpCaptured) (int, string) { return 200, `{"events_received":1,"messages":[],"fbtrace_id":"Ab"}` },
			check: func(t *testing.T, c mmpCaptured) {
				f, _ := url.ParseQuery(string(c.Body))
				if f.Get("test_event_code") != "TEST4821" || !strings.Contains(f.Get("data"), `"action_source":"website"`) || !strings.Contains(f.Get("data"), testPageURL) {
					t.Errorf("form = %v", f)
				}
			}, wantTested: true, wantPassed: true},
		{name: "meta token refused", typ: "meta", block: "dataset_id: \"123456789012345\"\naccess_token: META-T0KEN\ntest_event_code: TEST4821",
			respond: func(mmpCaptured) (int, string) {
				return 400, `{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190}}`
			}, wantTested: true, reason: "meta_auth"},
		{name: "meta without test code", typ: "meta", block: "dataset_id: \"123456789012345\"\naccess_token: META-T0KEN", reason: "not_tested"},
		{name: "tiktok app test with test_event_code", typ: "tiktok", block: "access_token: TT-T0KEN\napp_id: \"7123\"\napp_store_ids: {ios: \"1234567890\"}\ntest_event_code: TEST31337",
			respond: func(mmpCaptured) (int, string) { return 200, `{"code":0,"message":"OK","request_id":"r1"}` },
			check: func(t *testing.T, c mmpCaptured) {
				b := jsonBody(t, c)
				if b["test_event_code"] != "TEST31337" || b["event_source"] != "app" {
					t.Errorf("body = %v", b)
				}
			}, wantTested: true, wantPassed: true},
		{name: "tiktok web test", typ: "tiktok", block: "access_token: TT-T0KEN\npixel_code: C4AB\ntest_event_code: TEST31337",
			respond: func(mmpCaptured) (int, string) { return 200, `{"code":40002,"message":"Invalid parameters"}` }, wantTested: true, reason: "tiktok_invalid"},
		{name: "tiktok without test code", typ: "tiktok", block: "access_token: TT-T0KEN\npixel_code: C4AB", reason: "not_tested"},
		{name: "tiktok app without store id", typ: "tiktok", block: "access_token: TT-T0KEN\napp_id: \"7123\"\ntest_event_code: T1", reason: "not_tested"},
		{name: "adjust with every token turned off", typ: "adjust", block: "app_token: 4w565xzmb54d\nevent_tokens: {purchase: \"\"}", reason: "not_tested"},
		{name: "meta sandbox dataset without a test code", typ: "meta", block: "dataset_id: \"123456789012345\"\naccess_token: META-T0KEN\nsandbox: {dataset_id: \"999999999999999\"}",
			respond: func(mmpCaptured) (int, string) { return 200, `{"events_received":1}` },
			check: func(t *testing.T, c mmpCaptured) {
				f, _ := url.ParseQuery(string(c.Body))
				if c.Path != "/v25.0/999999999999999/events" || f.Has("test_event_code") {
					t.Errorf("sent to %s %v, want the sandbox dataset", c.Path, f)
				}
			}, wantTested: true, wantPassed: true},
		{name: "tiktok sandbox app without a test code", typ: "tiktok", block: "access_token: TT-T0KEN\napp_id: \"7123\"\napp_store_ids: {android: com.example.app}\nsandbox: {app_id: \"8000\"}",
			respond: func(mmpCaptured) (int, string) { return 200, `{"code":0}` },
			check: func(t *testing.T, c mmpCaptured) {
				b := jsonBody(t, c)
				data := b["data"].([]any)[0].(map[string]any)
				if b["event_source_id"] != "8000" || data["app"].(map[string]any)["app_id"] != "com.example.app" {
					t.Errorf("body = %v", b)
				}
			}, wantTested: true, wantPassed: true},
		{name: "ga4 validation server, valid", typ: "ga4", block: "firebase_app_ids: {ios: \"1:1:ios:a\"}\napi_secret: GA4-SECRET-1",
			respond: func(mmpCaptured) (int, string) { return 200, `{"validationMessages":[]}` },
			check: func(t *testing.T, c mmpCaptured) {
				if c.Path != "/debug/mp/collect" || c.Query.Get("firebase_app_id") != "1:1:ios:a" {
					t.Errorf("sent to %s %v", c.Path, c.Query)
				}
			}, wantTested: true, wantPassed: true},
		{name: "ga4 validation messages fail the test", typ: "ga4", block: "measurement_id: G-ABC\napi_secret: GA4-SECRET-1",
			respond: func(mmpCaptured) (int, string) {
				return 200, `{"validationMessages":[{"fieldPath":"events","description":"Event name is reserved.","validationCode":"NAME_RESERVED"}]}`
			}, wantTested: true, reason: "ga4_validation"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := runTestMode(t, tc)
			if tc.wantTested && rep.Response == "" {
				t.Errorf("the vendor's answer is not shown: %+v", rep)
			}
			for _, secret := range []string{"af-devkey-SANDBOX", "singular-SANDBOX-key", "META-T0KEN", "TT-T0KEN", "GA4-SECRET-1"} {
				if strings.Contains(rep.Request+rep.Response+rep.Reason, secret) || rep.Err != nil && strings.Contains(rep.Err.Error(), secret) {
					t.Errorf("report leaks %s: %+v", secret, rep)
				}
			}
		})
	}
	t.Run("the vendor's answer is verbatim", func(t *testing.T) {
		rep := runTestMode(t, testModeCase{typ: "singular", block: sngBlock,
			respond: func(mmpCaptured) (int, string) { return 200, `{"status":"error","reason":"no device ID supplied"}` }, wantTested: true})
		if rep.Response != `{"status":"error","reason":"no device ID supplied"}` {
			t.Errorf("response = %q", rep.Response)
		}
	})
	t.Run("unreachable ga4 validation server is not tested", func(t *testing.T) {
		srv := newMMPServer(t, nil)
		f := mmpNew(t, "ga4", srv.URL, "measurement_id: G-ABC\napi_secret: GA4-SECRET-1", nil)
		srv.Close()
		rep := f.(Tester).Test(context.Background())
		if rep.Tested || rep.Passed() || rep.Outcome != Retry {
			t.Errorf("report = %+v, want not tested", rep)
		}
	})
	t.Run("unreachable vendor is not tested", func(t *testing.T) {
		srv := newMMPServer(t, nil)
		f := mmpNew(t, "branch", srv.URL, brBlock, nil)
		srv.Close()
		rep := f.(Tester).Test(context.Background())
		if rep.Tested || rep.Passed() {
			t.Errorf("report = %+v, want not tested", rep)
		}
	})
}
