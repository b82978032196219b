package forwarders

import (
	"context"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// This file holds the destinations' test modes: "postback destinations test
// NAME" and the console's "Send test event" send one test event through
// the destination's own validation path (GA4's /debug/mp/collect, Meta's
// and TikTok's test_event_code, Adjust's environment=sandbox, Branch's
// key_test_ key, the separate test app or key of AppsFlyer, Singular and
// Kochava) with the configured credentials, and show the vendor's answer
// verbatim. A test that reached no validation path is never a pass.

// TestReport is a destination's answer to a test event.
type TestReport struct {
	// Tested is true only when the vendor's validation path received the
	// test request and answered. A test that sent nothing (no test
	// credentials configured, or the test event was skipped) is false.
	Tested bool `json:"tested"`
	// Path names the validation path, e.g. "GA4 /debug/mp/collect".
	Path string `json:"path"`
	// Where says where the test shows in the vendor's own UI.
	Where string `json:"where"`
	// Event is the test event sent, nil when none was (or, for GA4, when
	// the validation server got a sample payload).
	Event *mapping.Event `json:"event,omitempty"`
	// Result is the attempt: outcome, HTTP status, request summary (secrets
	// masked) and the vendor's answer verbatim (first KiB) in Response.
	Result
}

// Passed reports a test the vendor really ran and accepted.
func (r TestReport) Passed() bool {
	return r.Tested && (r.Outcome == Delivered || r.Outcome == Duplicate)
}

// Tester is implemented by forwarders whose destination has a validation
// path for test events. Test sends one test event there with the
// configured test credentials; it never sends to production data.
type Tester interface {
	Test(ctx context.Context) TestReport
}

// Test values: the documentation ranges and examples, never a real user.
const (
	testIP        = "192.0.2.1" // RFC 5737 TEST-NET-1
	testIDFA      = "D2CADB5F-410F-4963-AC0C-2A78534BDF1E"
	testIDFV      = "95C9BD22-4A4C-41C8-9548-ED07C5C8C145"
	testGAID      = "660e1d86-6796-463a-be86-897993136018"
	testAppsFlyer = "1234567890123-1234567"
	testUserAgent = "Postback-Test/1.0"
	testPageURL   = "https://example.com/postback-test"
)

// TestEvent returns the sandbox test event a destination's test mode sends
// for platform "ios", "android" or "web": a 0.99 USD purchase carrying
// documentation test identifiers for every destination type, so that no
// destination skips it for a missing identifier.
func TestEvent(now time.Time, platform string) *mapping.Event {
	now = now.UTC()
	e := &mapping.Event{
		ID:   mapping.EventID("test", platform, now.Format(time.RFC3339Nano)),
		Type: mapping.Purchase, Environment: mapping.Sandbox,
		AppID: "com.example.postback.test", ProductID: "postback_test",
		TransactionID: "postback_test_" + now.Format("20060102T150405"),
		Revenue:       &mapping.Revenue{AmountMicros: 990_000, Currency: "USD"},
		OccurredAt:    now, ReceivedAt: now, SourceEventID: "postback-test",
		User: mapping.User{AppUserID: "postback-test-user", Identifiers: map[string]string{
			mapping.IDIP: testIP, mapping.IDUserAgent: testUserAgent, mapping.IDAppsFlyer: testAppsFlyer,
			mapping.IDKochava: "KApostbacktest", mapping.IDFirebase: "0123456789abcdef0123456789abcdef",
			mapping.IDGAClient: "1234567890.1234567890", mapping.IDExternalID: "postback-test-user",
		}},
		Attributes: map[string]string{"test": "true", "app_version": "1.0"},
	}
	ids := e.User.Identifiers
	switch platform {
	case "web":
		e.Source = mapping.SourceStripe
		e.Attributes["page_url"] = testPageURL
	case "android":
		e.Source = mapping.SourceGoogle
		ids[mapping.IDOS], ids[mapping.IDOSVersion], ids[mapping.IDDeviceModel] = "android", "14", "Pixel 8"
		ids[mapping.IDGAID] = testGAID
	default:
		e.Source = mapping.SourceApple
		ids[mapping.IDOS], ids[mapping.IDOSVersion], ids[mapping.IDDeviceModel] = "ios", "17.5", "iPhone15,2"
		ids[mapping.IDIDFA], ids[mapping.IDIDFV], ids[mapping.IDATTStatus] = testIDFA, testIDFV, "3"
	}
	return e
}

// untested is the report of a test that could not reach a validation path.
func untested(path, where, reason string) TestReport {
	return TestReport{Path: path, Where: where, Result: Result{Outcome: Skipped, Reason: "not_tested: " + reason}}
}

// sendTest sends e through send and reports it: tested when the vendor
// answered at all (any HTTP status), whatever the outcome.
func sendTest(ctx context.Context, send func(context.Context, []Item) []Result, e *mapping.Event, path, where string) TestReport {
	res := send(ctx, []Item{{Key: e.ID + "|test", Attempt: 1, Event: e}})
	rep := TestReport{Path: path, Where: where, Event: e}
	if len(res) == 1 {
		rep.Result = res[0]
	}
	rep.Tested = rep.Status != 0
	return rep
}

var (
	_ Tester = (*AppsFlyer)(nil)
	_ Tester = (*Adjust)(nil)
	_ Tester = (*Singular)(nil)
	_ Tester = (*Branch)(nil)
	_ Tester = (*Kochava)(nil)
	_ Tester = (*Meta)(nil)
	_ Tester = (*TikTok)(nil)
	_ Tester = (*GA4)(nil)
)

// Test implements Tester: AppsFlyer has no sandbox, so the test goes to the
// separate test app of the sandbox: block, with its key.
func (a *AppsFlyer) Test(ctx context.Context) TestReport {
	const path = "AppsFlyer S2S API, the sandbox: test app"
	where := "AppsFlyer dashboard of the test app (sandbox.app_id): raw data export of in-app events. AppsFlyer answers OK after minimal validation and records events of known AppsFlyer ids only"
	if a.sandbox == nil {
		return untested(path, where, "AppsFlyer has no test mode: add sandbox: {app_id: <a separate test app>} to test without touching production data")
	}
	where = "AppsFlyer dashboard of " + a.sandbox.appID + ": raw data export of in-app events. AppsFlyer answers OK after minimal validation and records events of known AppsFlyer ids only"
	return sendTest(ctx, a.Send, TestEvent(a.now(), a.sandbox.platform), path, where)
}

// Test implements Tester: Adjust keeps test data apart by
// environment=sandbox on the same app, so the test uses the sandbox: block,
// or the production tokens with environment=sandbox.
func (a *Adjust) Test(ctx context.Context) TestReport {
	const path = "Adjust S2S events API, environment=sandbox"
	where := "Adjust dashboard: Testing Console (look up the test IDFA " + testIDFA + ") and Datascape with the Sandbox environment. Adjust answers \"Device not found\" for a device it never saw install: the app and event tokens were still checked"
	t := a.sandbox
	if t == nil {
		sb := a.prod
		sb.environment = "sandbox"
		t = &sb
	}
	e := TestEvent(a.now(), "ios")
	if adjustToken(e, t.tokens) == "" {
		for k, tok := range t.tokens {
			if tok != "" && mapping.Type(k).Valid() {
				e.Type = mapping.Type(k)
				break
			}
		}
	}
	if adjustToken(e, t.tokens) == "" {
		return untested(path, where, "no event token is configured to send a test event with")
	}
	return sendTest(ctx, func(ctx context.Context, b []Item) []Result {
		return []Result{a.sendTo(ctx, b[0], t)}
	}, e, path, where)
}

// Test implements Tester: the test goes to the sandbox: SDK key (a
// separate Singular app or account).
func (g *Singular) Test(ctx context.Context) TestReport {
	const path = "Singular S2S EVENT endpoint, the sandbox: SDK key"
	const where = "Singular: Developer Tools > Testing Console of the sandbox app (register the test IDFA " + testIDFA + " first), or Export Logs about three hours later"
	if g.sandbox == nil {
		return untested(path, where, "Singular has no test mode: add sandbox: {sdk_key: <the SDK key of a separate test app or account>}")
	}
	return sendTest(ctx, g.Send, TestEvent(g.now(), "ios"), path, where)
}

// Test implements Tester: the test goes with the key_test_ key of the
// sandbox: block.
func (b *Branch) Test(ctx context.Context) TestReport {
	const path = "Branch Events API with the test key (key_test_...)"
	const where = "Branch dashboard switched to Test mode: Liveview, Events"
	if b.sandbox == nil {
		return untested(path, where, "add sandbox: {branch_key: key_test_...} (the dashboard's Test mode key)")
	}
	return sendTest(ctx, b.Send, TestEvent(b.now(), "ios"), path, where)
}

// Test implements Tester: the test goes to the Test App GUID of the
// sandbox: block.
func (k *Kochava) Test(ctx context.Context) TestReport {
	const path = "Kochava post-install event API, the Test App GUID"
	const where = "Kochava dashboard of the Test App: Apps & Assets > Install Feed Validation (post-install events)"
	if k.sandbox == nil {
		return untested(path, where, "add sandbox: {app_guid: <the Test App GUID>}")
	}
	return sendTest(ctx, k.Send, TestEvent(k.now(), "ios"), path, where)
}

// Test implements Tester: a website test event with test_event_code (of
// the sandbox: block, else of the destination), or to the separate test
// dataset of the sandbox: block.
func (m *Meta) Test(ctx context.Context) TestReport {
	const path = "Meta Conversions API with test_event_code"
	const where = "Meta Events Manager > Data sources > the dataset > Test events (events with a test_event_code show there within seconds and are not counted)"
	e := TestEvent(m.now(), "web")
	if m.pageURL != "" {
		e.Attributes["page_url"] = m.pageURL
	}
	c := m.creds(e)
	if c == nil {
		return untested(path, where, "set test_event_code (Events Manager > Test events), or sandbox: {test_event_code: ...}")
	}
	if c.TestEventCode == "" {
		return sendTest(ctx, m.Send, e, "Meta Conversions API, the sandbox: dataset "+c.DatasetID,
			"Meta Events Manager > Data sources > dataset "+c.DatasetID+" > Overview (up to 24 hours later); set test_event_code to see it in Test events at once")
	}
	return sendTest(ctx, m.Send, e, path, where)
}

// Test implements Tester: an app test event when the App ID and a store id
// are configured, else a web one, with test_event_code or to the separate
// ids of the sandbox: block.
func (t *TikTok) Test(ctx context.Context) TestReport {
	const path = "TikTok Events API with test_event_code"
	const where = "TikTok Events Manager > the app or pixel > Test events"
	var platform string
	switch {
	case t.prod.AppID != "" && t.storeIDs["ios"] != "":
		platform = "ios"
	case t.prod.AppID != "" && t.storeIDs["android"] != "":
		platform = "android"
	case t.prod.PixelCode != "":
		platform = "web"
	default:
		return untested(path, where, "app events need app_store_ids (ios or android) for the app object of a test event")
	}
	e := TestEvent(t.now(), platform)
	if platform == "android" {
		e.AppID = t.storeIDs["android"]
	}
	c := t.creds(e)
	if c == nil {
		return untested(path, where, "set test_event_code (Events Manager > Test events), or sandbox: {test_event_code: ...}")
	}
	if c.TestEventCode == "" {
		return sendTest(ctx, t.Send, e, "TikTok Events API, the sandbox: app or pixel",
			"TikTok Events Manager > the sandbox app or pixel > Overview; set test_event_code to see it in Test events")
	}
	return sendTest(ctx, t.Send, e, path, where)
}

// Test implements Tester: GA4's validation server, /debug/mp/collect,
// checks a test purchase for every configured stream and answers with its
// validation messages (none: valid). It records nothing, and it checks the
// payload and the stream id, not the api_secret.
func (g *GA4) Test(ctx context.Context) TestReport {
	const path = "GA4 Measurement Protocol validation server, /debug/mp/collect"
	const where = "nothing is recorded in GA4: the validation messages in the answer are the result (an empty list is valid)"
	streams := g.prod.streams()
	if g.sandbox != nil {
		streams = append(streams, g.sandbox.streams()...)
	}
	rep := TestReport{Path: path, Where: where, Tested: true, Result: Result{Outcome: Delivered}}
	var requests, answers []string
	for _, c := range streams {
		body := ga4Sample(c)
		body.ValidationBehavior = "ENFORCE_RECOMMENDATIONS"
		r := g.debug(ctx, c, body)
		requests = append(requests, r.Request)
		answers = append(answers, "stream "+c.FirebaseAppID+c.MeasurementID+": "+r.Response)
		if r.Status == 0 {
			rep.Tested = false // this stream's validation server never answered
		}
		if r.Outcome != Delivered && rep.Outcome == Delivered {
			rep.Outcome, rep.Status, rep.Reason, rep.Err = r.Outcome, r.Status, r.Reason, r.Err
		}
		if rep.Status == 0 {
			rep.Status = r.Status
		}
	}
	rep.Request = strings.Join(requests, "; ")
	rep.Response = strings.Join(answers, "\n")
	return rep
}
