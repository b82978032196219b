package forwarders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

const tiktokTestToken = "ttTOKENsecret0987"

var tiktokTestBlock = "access_token: " + tiktokTestToken + "\napp_id: \"7123456789012345678\"\npixel_code: C4ABCDEFGHIJ1234\napp_store_ids: {ios: \"1234567890\"}\napp_name: Example\n"

func newTestTikTok(t *testing.T, rec *adRecorder, block string, names map[string]string) *TikTok {
	t.Helper()
	f, err := NewTikTok(adSettings(t, "tiktok", rec.srv.URL, block, names, rec.srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	return f.(*TikTok)
}

func tiktokBody(t *testing.T, r adRequest) tiktokRequest {
	t.Helper()
	var body tiktokRequest
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	return body
}

func TestTikTokGolden(t *testing.T) {
	for _, name := range adGoldenNames {
		t.Run(name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) {
				return 200, `{"code":0,"message":"OK","request_id":"2026113012000001"}`
			})
			// refund has no TikTok standard event: the destination names it.
			tk := newTestTikTok(t, rec, tiktokTestBlock+"test_event_code: TEST31337\n", map[string]string{"refund": "Refund"})
			res := tk.Send(context.Background(), []Item{{Key: "d1", Attempt: 1, Event: adFixture(name)}})
			if res[0].Outcome != Delivered {
				t.Fatalf("outcome = %s (%s, %v)", res[0].Outcome, res[0].Reason, res[0].Err)
			}
			reqs := rec.all()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if got := r.Header.Get("Access-Token"); got != tiktokTestToken {
				t.Errorf("Access-Token = %q, want the configured token", got)
			}
			if strings.Contains(string(r.Body), tiktokTestToken) || strings.Contains(res[0].Request, tiktokTestToken) {
				t.Error("token in the body or the request summary")
			}
			checkGolden(t, "tiktok/"+name+".json", indentJSON(t, map[string]any{
				"method": r.Method, "path": r.Path, "content_type": r.Header.Get("Content-Type"),
				"access_token_header": "[checked, not stored]", "body": json.RawMessage(r.Body),
			}))
		})
	}
}

func TestTikTokClassifiesCodes(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		outcome  Outcome
		throttle bool
		reason   string
	}{
		{"ok", 200, `{"code":0,"message":"OK"}`, Delivered, false, ""},
		{"partial success", 200, `{"code":20001,"message":"Partial success"}`, Delivered, false, ""},
		{"throttled", 200, `{"code":40100,"message":"Too many requests"}`, Retry, true, "tiktok_throttled"},
		{"invalid parameters", 200, `{"code":40002,"message":"Invalid value for event"}`, Dead, false, "tiktok_invalid"},
		{"other validation code", 200, `{"code":40006,"message":"bad"}`, Dead, false, "tiktok_invalid"},
		{"no permission", 200, `{"code":40001,"message":"No permission"}`, Pause, false, "tiktok_auth"},
		{"token invalid", 200, `{"code":40105,"message":"Access token is incorrect"}`, Pause, false, "tiktok_auth"},
		{"token missing", 200, `{"code":40104,"message":"Access token empty"}`, Pause, false, "tiktok_auth"},
		{"request timeout", 200, `{"code":40700,"message":"timeout"}`, Retry, false, "tiktok_transient"},
		{"system error", 200, `{"code":50000,"message":"System error"}`, Retry, false, "tiktok_transient"},
		{"2xx without code", 200, `<html></html>`, Retry, false, "tiktok_unreadable"},
		{"http 500", 500, ``, Retry, false, "http_500"},
		{"http 429", 429, ``, Retry, true, "http_429"},
		{"http 403", 403, ``, Pause, false, "http_403"},
		{"http 400", 400, `{"code":40002}`, Dead, false, "http_400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := classifyTikTok(adResponse{Status: tt.status, Header: http.Header{}, Body: []byte(tt.body)}, adNow, tiktokTestToken)
			if r.Outcome != tt.outcome || r.Throttle != tt.throttle || reasonLabelOf(r.Reason) != tt.reason {
				t.Errorf("got %s throttle=%v %q, want %s throttle=%v %q", r.Outcome, r.Throttle, r.Reason, tt.outcome, tt.throttle, tt.reason)
			}
			if tt.outcome != Delivered && !errors.Is(r.Err, ErrAdNetwork) {
				t.Errorf("err = %v, want ErrAdNetwork", r.Err)
			}
			if tt.throttle && tt.status == 200 && r.RetryAfter <= 0 { // 429 without Retry-After: the dispatcher's minimum applies
				t.Error("throttled without a delay")
			}
		})
	}
}

func TestTikTokThrottleRetriedValidationNot(t *testing.T) {
	// Through Send: the throttling code keeps every event for a slow retry;
	// a validation code on a one-event request kills that event only.
	tests := []struct {
		name    string
		answer  string
		outcome Outcome
	}{
		{"throttling code is retried", `{"code":40100,"message":"Too many requests"}`, Retry},
		{"validation code is not", `{"code":40002,"message":"Invalid value for user.email"}`, Dead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, func(adRequest) (int, string) { return 200, tt.answer })
			tk := newTestTikTok(t, rec, tiktokTestBlock, nil)
			res := tk.Send(context.Background(), []Item{{Key: "a", Event: adFixture("trial_started")}})
			if res[0].Outcome != tt.outcome {
				t.Errorf("outcome = %s (%s), want %s", res[0].Outcome, res[0].Reason, tt.outcome)
			}
			if tt.outcome == Retry && (!res[0].Throttle || res[0].RetryAfter < time.Second) {
				t.Errorf("throttle=%v after=%s, want a slow retry", res[0].Throttle, res[0].RetryAfter)
			}
			if len(rec.all()) != 1 {
				t.Errorf("%d requests, want 1", len(rec.all()))
			}
		})
	}
	t.Run("validation code in a batch is bisected", func(t *testing.T) {
		const bad = "evt_bad_7"
		rec := newAdRecorder(t, func(r adRequest) (int, string) {
			if strings.Contains(string(r.Body), bad) {
				return 200, `{"code":40002,"message":"Invalid value"}`
			}
			return 200, `{"code":0}`
		})
		tk := newTestTikTok(t, rec, tiktokTestBlock, nil)
		items := make([]Item, 10)
		for i := range items {
			e := adFixture("trial_started")
			e.ID = fmt.Sprintf("evt_ok_%d", i)
			if i == 7 {
				e.ID = bad
			}
			items[i] = Item{Key: e.ID, Event: e}
		}
		for i, r := range tk.Send(context.Background(), items) {
			want := Delivered
			if i == 7 {
				want = Dead
			}
			if r.Outcome != want {
				t.Errorf("item %d: %s, want %s", i, r.Outcome, want)
			}
		}
	})
}

func TestTikTokGroupsBySource(t *testing.T) {
	rec := newAdRecorder(t, func(adRequest) (int, string) { return 200, `{"code":0}` })
	tk := newTestTikTok(t, rec, tiktokTestBlock, nil)
	res := tk.Send(context.Background(), []Item{
		{Key: "1", Event: adFixture("trial_started")}, {Key: "2", Event: adFixture("purchase")},
		{Key: "3", Event: adFixture("renewal")},
	})
	for i, r := range res {
		if r.Outcome != Delivered {
			t.Errorf("item %d: %s %s", i, r.Outcome, r.Reason)
		}
	}
	got := map[string]int{}
	for _, r := range rec.all() {
		b := tiktokBody(t, r)
		got[b.EventSource+" "+b.EventSourceID] = len(b.Data)
	}
	want := map[string]int{"app 7123456789012345678": 2, "web C4ABCDEFGHIJ1234": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
}

func TestTikTokSkips(t *testing.T) {
	sandboxEvt := adFixture("trial_started")
	sandboxEvt.Environment = mapping.Sandbox
	tests := []struct {
		name    string
		block   string
		event   *mapping.Event
		names   map[string]string
		outcome Outcome
		reason  string
	}{
		{"refund has no default name", tiktokTestBlock, adFixture("refund"), nil, Skipped, "no_event_name"},
		{"web event without pixel", "access_token: x\napp_id: \"1\"\n", adFixture("purchase"), nil, Skipped, "no_event_source"},
		{"app event without app id", "access_token: x\npixel_code: P1\n", adFixture("trial_started"), nil, Skipped, "no_event_source"},
		{"sandbox without test config", tiktokTestBlock, sandboxEvt, nil, Skipped, "sandbox_not_configured"},
		{"nil event", tiktokTestBlock, nil, nil, Dead, "no_event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, nil)
			tk := newTestTikTok(t, rec, tt.block, tt.names)
			r := tk.Send(context.Background(), []Item{{Key: "a", Event: tt.event}})[0]
			if r.Outcome != tt.outcome || !strings.HasPrefix(r.Reason, tt.reason) {
				t.Errorf("got %s %q, want %s %q", r.Outcome, r.Reason, tt.outcome, tt.reason)
			}
			if len(rec.all()) != 0 {
				t.Error("a request was made")
			}
		})
	}
	t.Run("sandbox goes to the sandbox test code", func(t *testing.T) {
		rec := newAdRecorder(t, func(adRequest) (int, string) { return 200, `{"code":0}` })
		tk := newTestTikTok(t, rec, tiktokTestBlock+"sandbox: {test_event_code: TESTSB}\n", nil)
		if r := tk.Send(context.Background(), []Item{{Key: "a", Event: sandboxEvt}})[0]; r.Outcome != Delivered {
			t.Fatalf("outcome %s", r.Outcome)
		}
		if b := tiktokBody(t, rec.all()[0]); b.TestEventCode != "TESTSB" || b.EventSourceID != "7123456789012345678" {
			t.Errorf("sandbox request = %+v", b)
		}
	})
}

func TestTikTokMissing(t *testing.T) {
	noIDs := adFixture("trial_started")
	noIDs.User = mapping.User{Identifiers: map[string]string{mapping.IDOS: "ios", mapping.IDIP: "203.0.113.9"}}
	ttclidOnly := adFixture("purchase")
	ttclidOnly.User = mapping.User{Identifiers: map[string]string{mapping.IDTTCLID: "E.C.P.x"}}
	idfaOnly := adFixture("trial_started")
	idfaOnly.User = mapping.User{Identifiers: map[string]string{mapping.IDIDFA: "6D92078A-8246-4BA4-AE5B-76104861E7DC"}}
	refund := adFixture("refund")
	refund.User = mapping.User{}
	tests := []struct {
		name  string
		event *mapping.Event
		want  string
	}{
		{"full", adFixture("trial_started"), ""},
		{"no user id at all", noIDs, "external_id"},
		{"ttclid is enough", ttclidOnly, ""},
		{"idfa is enough", idfaOnly, ""},
		{"not sent: not held", refund, ""},
	}
	tk := newTestTikTok(t, newAdRecorder(t, nil), tiktokTestBlock, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tk.Missing(tt.event); got != tt.want {
				t.Errorf("Missing = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTikTokNeverLeaksToken(t *testing.T) {
	rec := newAdRecorder(t, func(adRequest) (int, string) {
		return 200, `{"code":40105,"message":"Access token ` + tiktokTestToken + ` is incorrect"}`
	})
	tk := newTestTikTok(t, rec, tiktokTestBlock, nil)
	r := tk.Send(context.Background(), []Item{{Key: "a", Event: adFixture("trial_started")}})[0]
	for what, s := range map[string]string{"request": r.Request, "response": r.Response, "reason": r.Reason, "err": fmt.Sprint(r.Err)} {
		if strings.Contains(s, tiktokTestToken) {
			t.Errorf("%s leaks the token: %s", what, s)
		}
	}
	rec.srv.Close()
	if r := tk.Send(context.Background(), []Item{{Key: "a", Event: adFixture("trial_started")}})[0]; r.Outcome != Retry || r.Reason != "network" {
		t.Errorf("closed server: %s %q", r.Outcome, r.Reason)
	}
}

func TestNewTikTokValidates(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		block    string
		key      string
	}{
		{"no token", "", "app_id: \"1\"\n", "access_token"},
		{"no source", "", "access_token: x\n", "app_id"},
		{"bad endpoint", "::", tiktokTestBlock, "endpoint"},
		{"sandbox into production", "", tiktokTestBlock + "sandbox: {access_token: y}\n", "sandbox"},
		{"undecodable", "", "app_id: {a: 1}\n", "destinations[test-tiktok]."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTikTok(adSettings(t, "tiktok", tt.endpoint, tt.block, nil, http.DefaultClient))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("err = %v, want ErrConfig naming %s", err, tt.key)
			}
		})
	}
	t.Run("sandbox with its own app id", func(t *testing.T) {
		if _, err := NewTikTok(adSettings(t, "tiktok", "", tiktokTestBlock+"sandbox: {app_id: \"42\"}\n", nil, nil)); err != nil {
			t.Error(err)
		}
	})
	t.Run("registered", func(t *testing.T) {
		f, err := New(Settings{Name: "t", Type: "tiktok", Decode: adSettings(t, "tiktok", "", tiktokTestBlock, nil, nil).Decode})
		if err != nil {
			t.Fatal(err)
		}
		if l := f.Limits(); l.BatchSize != 1000 {
			t.Errorf("limits = %+v", l)
		}
	})
}

// TestTikTokAppEventRules covers what TikTok's app events require: the app
// object (store id per platform), contents with value and currency on
// Purchase and CompletePayment, and the external id lower-cased before
// hashing.
func TestTikTokAppEventRules(t *testing.T) {
	ok := func(adRequest) (int, string) { return 200, `{"code":0}` }
	noProduct := adFixture("purchase")
	noProduct.ProductID = ""
	skuOnly := adFixture("purchase")
	skuOnly.ProductID = ""
	skuOnly.Attributes["sku"] = "pro-sku"
	appPurchase := adFixture("trial_converted")
	appPurchase.Type = mapping.Purchase
	appNoValue := adFixture("trial_converted")
	appNoValue.Type, appNoValue.Revenue = mapping.Purchase, nil
	noOS := adFixture("trial_started")
	noOS.Source = mapping.SourceCustom
	delete(noOS.User.Identifiers, mapping.IDOS)
	tests := []struct {
		name    string
		block   string
		event   *mapping.Event
		outcome Outcome
		reason  string
	}{
		{"web CompletePayment without a product", tiktokTestBlock, noProduct, Skipped, "missing product_id"},
		{"web CompletePayment with a SKU only", tiktokTestBlock, skuOnly, Delivered, ""},
		{"app Purchase without revenue", tiktokTestBlock, appNoValue, Skipped, "missing revenue"},
		{"ios event without app_store_ids.ios", "access_token: x\napp_id: \"1\"\n", adFixture("trial_started"), Skipped, "no_app_store_id"},
		{"app event without platform", tiktokTestBlock, noOS, Skipped, "missing os"},
		{"app Purchase with everything", tiktokTestBlock, appPurchase, Delivered, ""},
		{"android defaults to the package name", "access_token: x\napp_id: \"1\"\n", adFixture("renewal"), Delivered, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newAdRecorder(t, ok)
			tk := newTestTikTok(t, rec, tt.block, nil)
			r := tk.Send(context.Background(), []Item{{Key: "a", Event: tt.event}})[0]
			if r.Outcome != tt.outcome || !strings.HasPrefix(r.Reason, tt.reason) {
				t.Fatalf("got %s %q, want %s %q", r.Outcome, r.Reason, tt.outcome, tt.reason)
			}
			if tt.outcome != Delivered {
				bare := *tt.event
				bare.User = mapping.User{Identifiers: map[string]string{mapping.IDOS: tt.event.Identifier(mapping.IDOS)}}
				if m := tk.Missing(&bare); m != "" {
					t.Errorf("Missing = %q for an event skipped anyway", m)
				}
				if len(rec.all()) != 0 {
					t.Error("a request was made")
				}
				return
			}
			d := tiktokBody(t, rec.all()[0]).Data[0]
			if adChannel(tt.event) == channelWeb {
				if d.App != nil || d.Properties == nil || len(d.Properties.Contents) != 1 || d.Properties.Contents[0].ContentID != "pro-sku" {
					t.Errorf("web event %+v", d)
				}
				return
			}
			if d.App == nil || d.App.AppID == "" {
				t.Fatalf("app object = %+v", d.App)
			}
			if d.Event == "Purchase" {
				p := d.Properties
				if p == nil || len(p.Contents) != 1 || p.Contents[0].ContentID == "" || p.Contents[0].Quantity != 1 || p.ContentType != "product" || p.Value == "" || p.Currency == "" {
					t.Errorf("Purchase properties = %+v", p)
				}
			}
		})
	}
	t.Run("external id is lower-cased before hashing", func(t *testing.T) {
		rec := newAdRecorder(t, ok)
		tk := newTestTikTok(t, rec, tiktokTestBlock, nil)
		e := adFixture("trial_started")
		e.User.AppUserID = "  User-ABC "
		if r := tk.Send(context.Background(), []Item{{Key: "a", Event: e}})[0]; r.Outcome != Delivered {
			t.Fatal(r.Outcome)
		}
		if got, want := tiktokBody(t, rec.all()[0]).Data[0].User.ExternalID, mapping.SHA256Hex("user-abc"); got != want {
			t.Errorf("external_id = %s, want sha256(\"user-abc\") %s", got, want)
		}
		hashed := mapping.SHA256Hex("x")
		e.User.Identifiers[mapping.IDExternalID] = strings.ToUpper(hashed)
		tk.Send(context.Background(), []Item{{Key: "a", Event: e}})
		if got := tiktokBody(t, rec.all()[1]).Data[0].User.ExternalID; got != hashed {
			t.Errorf("a SHA-256 external id was hashed again: %s", got)
		}
	})
	for _, bad := range []struct{ block, key string }{
		{"app_store_ids: {web: x}", "app_store_ids.web"},
		{"app_store_ids: {ios: com.example.app}", "app_store_ids.ios"},
		{"app_store_ids: {android: \"123\"}", "app_store_ids.android"},
	} {
		t.Run("config "+bad.key, func(t *testing.T) {
			_, err := NewTikTok(adSettings(t, "tiktok", "", "access_token: x\napp_id: \"1\"\n"+bad.block+"\n", nil, nil))
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "."+bad.key+":") {
				t.Errorf("err = %v", err)
			}
		})
	}
}
