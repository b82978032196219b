package forwarders

import (
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

// The tests in this file rebuild each vendor's documented example request:
// an event carrying the example's own values is sent through the forwarder,
// and what the stand-in server receives must be exactly the documented
// request (same parameter names, same forms), with no parameter the
// reference does not list. Each test names its source page.

// docSend builds a forwarder of typ from block whose clock reads now, sends
// e and returns the one request the stand-in server received.
func docSend(t *testing.T, typ, block string, now time.Time, e *mapping.Event, respond func(mmpCaptured) (int, string)) (Result, mmpCaptured) {
	t.Helper()
	srv := newMMPServer(t, respond)
	s := mmpSettingsFor(t, typ, srv.URL, block, nil)
	s.Now = func() time.Time { return now }
	f, err := New(s)
	if err != nil {
		t.Fatalf("New(%s): %v", typ, err)
	}
	r := f.Send(context.Background(), []Item{{Key: "doc", Attempt: 1, Event: e}})[0]
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("server got %d requests, want 1 (result %+v)", len(reqs), r)
	}
	return r, reqs[0]
}

// docEvent is an event with no identifiers of its own: each test sets the
// documented example's values.
func docEvent(typ mapping.Type, src string, at time.Time, ids map[string]string) *mapping.Event {
	return &mapping.Event{
		ID: "evt_doc", Type: typ, Source: src, Environment: mapping.Production,
		User:       mapping.User{Identifiers: ids},
		OccurredAt: at, ReceivedAt: at, Attributes: map[string]string{},
	}
}

// jsonEqual compares a JSON body with the documented one, key order aside.
func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("test's documented body is not JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		gb, _ := json.MarshalIndent(g, "", "  ")
		wb, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("request body differs from the documented example:\n--- want\n%s\n--- got\n%s", wb, gb)
	}
}

// onlyDocumented fails for every key of got that the reference does not
// list.
func onlyDocumented(t *testing.T, got []string, documented ...string) {
	t.Helper()
	known := map[string]bool{}
	for _, k := range documented {
		known[k] = true
	}
	var extra []string
	for _, k := range got {
		if !known[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("parameters the reference does not document: %v", extra)
	}
}

// jsonKeys returns the top-level keys of a JSON object.
func jsonKeys(t *testing.T, body []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v", err)
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestAppsFlyerDocumentedExample rebuilds the iOS example of AppsFlyer's
// "Send Event" reference, https://dev.appsflyer.com/hc/reference/s2s-events-api3-post
// (example values of the iOS Ids schema: appsflyer_id 1234567890123-1234567,
// idfa 9876F1AA-..., idfv 95C9BD22-..., ip 192.0.2.1, os 14.5.1,
// bundleIdentifier com.myapp, eventTime "2019-05-15 12:17:01.123",
// eventValue {"af_revenue":"6","af_content_id":"15854",...}).
func TestAppsFlyerDocumentedExample(t *testing.T) {
	at := time.Date(2019, 5, 15, 12, 17, 1, 123_000_000, time.UTC)
	e := docEvent(mapping.Purchase, mapping.SourceApple, at, map[string]string{
		mapping.IDAppsFlyer: "1234567890123-1234567",
		mapping.IDIDFA:      "9876F1AA-2983-3855-27BB-2C626772EFAB",
		mapping.IDIDFV:      "95C9BD22-4A4C-41C8-9548-ED07C5C8C145",
		mapping.IDIP:        "192.0.2.1",
		mapping.IDOS:        "ios",
		mapping.IDOSVersion: "14.5.1",
		mapping.IDATTStatus: "3",
	})
	e.User.AppUserID = "customer_user_id"
	e.AppID = "com.myapp"
	e.ProductID = "15854"
	e.Revenue = &mapping.Revenue{AmountMicros: 6_000_000, Currency: "USD"}
	e.Attributes["app_version"] = "my_app_version"
	r, got := docSend(t, "appsflyer", "app_id: id123456789\ns2s_token: s2s-KEY-123\nbundle_id: com.myapp", at.Add(time.Minute), e, nil)
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if got.Method != "POST" || got.Path != "/inappevent/id123456789" || got.Header.Get("authentication") != "s2s-KEY-123" {
		t.Errorf("request line %s %s with authentication %q", got.Method, got.Path, got.Header.Get("authentication"))
	}
	jsonEqual(t, got.Body, `{
		"appsflyer_id": "1234567890123-1234567",
		"customer_user_id": "customer_user_id",
		"eventName": "af_purchase",
		"eventValue": "{\"af_content_id\":\"15854\",\"af_currency\":\"USD\",\"af_quantity\":\"1\",\"af_revenue\":\"6.00\",\"app_version\":\"my_app_version\",\"event_id\":\"evt_doc\",\"store\":\"apple\"}",
		"eventTime": "2019-05-15 12:17:01.123",
		"eventCurrency": "USD",
		"bundleIdentifier": "com.myapp",
		"idfa": "9876F1AA-2983-3855-27BB-2C626772EFAB",
		"idfv": "95C9BD22-4A4C-41C8-9548-ED07C5C8C145",
		"att": 3,
		"os": "14.5.1",
		"ip": "192.0.2.1",
		"app_version_name": "my_app_version",
		"af_events_api": "true"
	}`)
	// The iOS Ids schema of the reference, plus af_events_api (help center
	// article 207034486).
	onlyDocumented(t, jsonKeys(t, got.Body), "idfa", "idfv", "appsflyer_id", "customer_user_id", "att", "ip",
		"eventName", "eventValue", "app_version_name", "app_store", "eventTime", "eventCurrency", "bundleIdentifier",
		"sharing_filter", "custom_dimension", "app_type", "custom_data", "os", "ua", "aie", "consent_data", "af_events_api")
}

// TestSingularDocumentedExample rebuilds the EVENT request from the example
// values of Singular's S2S endpoint reference,
// https://support.singular.net/hc/en-us/articles/360048588672 (a
// your_org_name_sh868sdjv, p Android, i com.singular.app, ip 172.58.29.235,
// "IPV4 only; IPV6 not supported", ve 9.2) and the parameter list of
// https://support.singular.net/hc/en-us/articles/31496864868635.
func TestSingularDocumentedExample(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e := docEvent(mapping.TrialStarted, mapping.SourceGoogle, at, map[string]string{
		mapping.IDOS: "android", mapping.IDOSVersion: "9.2", mapping.IDIP: "172.58.29.235",
		mapping.IDGAID: "9c9a82fb-d5de-4cd1-90c3-527441c11828",
	})
	e.AppID = "com.singular.app"
	r, got := docSend(t, "singular", "sdk_key: your_org_name_sh868sdjv", at.Add(time.Minute), e,
		func(mmpCaptured) (int, string) { return 200, `{"status":"ok"}` })
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if got.Method != "GET" || got.Path != "/api/v1/evt" {
		t.Errorf("request line %s %s", got.Method, got.Path)
	}
	want := map[string]string{
		"a": "your_org_name_sh868sdjv", "p": "Android", "i": "com.singular.app", "ip": "172.58.29.235", "ve": "9.2",
		"n": "sng_start_trial", "aifa": "9c9a82fb-d5de-4cd1-90c3-527441c11828", "umilisec": "1796032800000",
		"e": `{"event_id":"evt_doc","store":"google"}`,
	}
	var keys []string
	for k := range got.Query {
		keys = append(keys, k)
		if got.Query.Get(k) != want[k] {
			t.Errorf("%s = %q, want %q", k, got.Query.Get(k), want[k])
		}
	}
	if len(got.Query) != len(want) {
		t.Errorf("query %v, want %v", got.Query, want)
	}
	onlyDocumented(t, keys, "a", "n", "p", "i", "ip", "ve", "idfa", "idfv", "att_authorization_status", "aifa", "andi", "asid",
		"sdid", "utime", "umilisec", "amt", "cur", "is_revenue_event", "purchase_product_id", "purchase_transaction_id",
		"purchase_receipt", "receipt_signature", "custom_user_id", "e", "data_sharing_options", "partner")
}

// TestBranchDocumentedExample rebuilds the example of Branch's "Logging
// Custom Events" reference, https://help.branch.io/apidocs/logcustomevents
// (branch_key key_live_xxxx, name CustomEventTest, user_data os Android,
// os_version 12.4.0, environment FULL_APP, aaid
// abcdabcd-0123-0123-00f0-000000000000, android_id a12300000000,
// limit_ad_tracking false as the example's "False", user_agent
// "Mozilla/5.0 (Macintosh; ...)").
func TestBranchDocumentedExample(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e := docEvent(mapping.Custom, mapping.SourceGoogle, at, map[string]string{
		mapping.IDOS: "android", mapping.IDOSVersion: "12.4.0",
		mapping.IDGAID: "abcdabcd-0123-0123-00f0-000000000000", mapping.IDAndroidID: "a12300000000",
		mapping.IDUserAgent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
	})
	e.Name = "CustomEventTest"
	r, got := docSend(t, "branch", "branch_key: key_live_xxxx", at.Add(time.Minute), e, func(mmpCaptured) (int, string) { return 200, `{}` })
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if got.Method != "POST" || got.Path != "/v2/event/custom" {
		t.Errorf("request line %s %s", got.Method, got.Path)
	}
	jsonEqual(t, got.Body, `{
		"branch_key": "key_live_xxxx",
		"name": "CustomEventTest",
		"user_data": {
			"os": "Android",
			"os_version": "12.4.0",
			"environment": "FULL_APP",
			"aaid": "abcdabcd-0123-0123-00f0-000000000000",
			"android_id": "a12300000000",
			"user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
		},
		"custom_data": {"event_id": "evt_doc", "store": "google"}
	}`)
	onlyDocumented(t, jsonKeys(t, got.Body), "branch_key", "name", "customer_event_alias", "user_data", "custom_data", "event_data", "content_items")
}

// TestKochavaDocumentedExample rebuilds the example values of Kochava's
// post-install event reference,
// https://support.kochava.com/server-to-server-integration/post-install-event-setup/
// (kochava_app_id kogamerdna114e9bb3481258, app_version 24.0.0.0.8,
// device_ids idfa 07F5A855-1375-4E51-9F15-0EFD4E5C84F4, action "event",
// origination_ip 8.8.8.8, device_ver "iPhone Simulator-iOS-8.1", device_ua
// URL-encoded, usertime in epoch seconds), with the event keys of
// https://support.kochava.com/reference-information/post-install-event-examples
// (Purchase: name, content_id, user_id, sum as a number, currency).
func TestKochavaDocumentedExample(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e := docEvent(mapping.Purchase, mapping.SourceApple, at, map[string]string{
		mapping.IDKochava: "KA1234", mapping.IDIDFA: "07F5A855-1375-4E51-9F15-0EFD4E5C84F4",
		mapping.IDIP: "8.8.8.8", mapping.IDOS: "ios", mapping.IDOSVersion: "8.1", mapping.IDDeviceModel: "iPhone Simulator",
		mapping.IDUserAgent: "Mozilla/5.0 (iPhone; U; CPU iPhone OS 5_0 like Mac OS X; en-us)",
	})
	e.Attributes["app_version"] = "24.0.0.0.8"
	e.ProductID = "premium_monthly"
	e.User.AppUserID = "u_1"
	e.Revenue = &mapping.Revenue{AmountMicros: 9_990_000, Currency: "USD"}
	r, got := docSend(t, "kochava", "app_guid: kogamerdna114e9bb3481258", at.Add(time.Minute), e, func(mmpCaptured) (int, string) { return 200, `{"success":"1"}` })
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if got.Method != "POST" || got.Path != "/track/json" {
		t.Errorf("request line %s %s", got.Method, got.Path)
	}
	jsonEqual(t, got.Body, `{
		"action": "event",
		"kochava_app_id": "kogamerdna114e9bb3481258",
		"kochava_device_id": "KA1234",
		"data": {
			"event_name": "Purchase",
			"app_version": "24.0.0.0.8",
			"usertime": 1796032800,
			"origination_ip": "8.8.8.8",
			"device_ver": "iPhone Simulator-iOS-8.1",
			"device_ua": "Mozilla%2F5.0%20%28iPhone%3B%20U%3B%20CPU%20iPhone%20OS%205_0%20like%20Mac%20OS%20X%3B%20en-us%29",
			"os_version": "8.1",
			"device_ids": {"idfa": "07F5A855-1375-4E51-9F15-0EFD4E5C84F4"},
			"currency": "USD",
			"event_data": {"app_version": "24.0.0.0.8", "name": "premium_monthly", "content_id": "premium_monthly", "user_id": "u_1", "sum": 9.99, "currency": "USD", "event_id": "evt_doc", "store": "apple"}
		}
	}`)
	onlyDocumented(t, jsonKeys(t, got.Body), "action", "kochava_app_id", "kochava_device_id", "data")
}

// TestGA4DocumentedExample rebuilds the Firebase (app stream) example of
// Google's "Send Measurement Protocol events" guide,
// https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events?client_type=firebase
// (POST /mp/collect?firebase_app_id=1:1234567890:android:321abc456def7890
// &api_secret=..., body {"app_instance_id": ..., "events": [{"name":
// "tutorial_begin", "params": {}}]}). Postback adds timestamp_micros, a
// documented field, so that the event keeps its own time, and leaves out an
// empty params.
func TestGA4DocumentedExample(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e := docEvent(mapping.Custom, mapping.SourceGoogle, at, map[string]string{
		mapping.IDOS: "android", mapping.IDFirebase: "app_instance_id",
	})
	e.Name = "tutorial_begin"
	r, got := docSend(t, "ga4", "firebase_app_ids: {android: \"1:1234567890:android:321abc456def7890\"}\napi_secret: doc-SECRET",
		at.Add(time.Minute), e, func(mmpCaptured) (int, string) { return 204, "" })
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if got.Method != "POST" || got.Path != "/mp/collect" || got.Query.Get("firebase_app_id") != "1:1234567890:android:321abc456def7890" || got.Query.Get("api_secret") != "doc-SECRET" {
		t.Errorf("request line %s %s %v", got.Method, got.Path, got.Query)
	}
	jsonEqual(t, got.Body, `{
		"app_instance_id": "app_instance_id",
		"timestamp_micros": 1796032800000000,
		"events": [{"name": "tutorial_begin", "timestamp_micros": 1796032800000000}]
	}`)
	// Top-level fields of the Measurement Protocol reference.
	onlyDocumented(t, jsonKeys(t, got.Body), "app_instance_id", "client_id", "user_id", "timestamp_micros",
		"user_properties", "consent", "user_data", "user_location", "device", "ip_override", "validation_behavior", "events")
}

// TestTikTokDocumentedExample rebuilds an app Purchase the way TikTok's
// Events API 2.0 app-event integration builds it: the request shape of
// TikTok's own Segment destination (segmentio/action-destinations,
// tiktok-app-events/reportAppEvent: event_source "app", event_source_id the
// TikTok App ID, data[].user with idfa upper-case, idfv, att_status,
// external_id lower-cased then SHA-256, data[].app {app_id (App Store id),
// app_name, app_version}, data[].properties with contents[] {content_id,
// price, quantity}, content_type, currency, value), and the event names of
// https://business-api.tiktok.com/portal/docs?id=1771101186666498.
func TestTikTokDocumentedExample(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e := docEvent(mapping.Purchase, mapping.SourceApple, at, map[string]string{
		mapping.IDOS: "ios", mapping.IDIDFA: "6d92078a-8246-4ba4-ae5b-76104861e7dc",
		mapping.IDIDFV: "95C9BD22-4A4C-41C8-9548-ED07C5C8C145", mapping.IDATTStatus: "3",
		mapping.IDIP: "203.0.113.9",
	})
	e.User.AppUserID = "User_1"
	e.ProductID = "premium_monthly"
	e.Revenue = &mapping.Revenue{AmountMicros: 9_990_000, Currency: "USD"}
	e.Attributes["app_version"] = "1.2.3"
	r, got := docSend(t, "tiktok", "access_token: tt-TOKEN-1\napp_id: \"7123456789012345678\"\napp_store_ids: {ios: \"1234567890\"}\napp_name: Example",
		at.Add(time.Minute), e, func(mmpCaptured) (int, string) { return 200, `{"code":0,"message":"OK"}` })
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if got.Method != "POST" || got.Path != "/open_api/v1.3/event/track/" || got.Header.Get("Access-Token") != "tt-TOKEN-1" {
		t.Errorf("request line %s %s", got.Method, got.Path)
	}
	jsonEqual(t, got.Body, `{
		"event_source": "app",
		"event_source_id": "7123456789012345678",
		"data": [{
			"event": "Purchase",
			"event_time": 1796032800,
			"event_id": "evt_doc",
			"user": {
				"external_id": "`+mapping.SHA256Hex("user_1")+`",
				"idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
				"idfv": "95C9BD22-4A4C-41C8-9548-ED07C5C8C145",
				"att_status": "AUTHORIZED",
				"ip": "203.0.113.9"
			},
			"properties": {
				"value": 9.99,
				"currency": "USD",
				"content_type": "product",
				"contents": [{"content_id": "premium_monthly", "price": 9.99, "quantity": 1}]
			},
			"app": {"app_id": "1234567890", "app_name": "Example", "app_version": "1.2.3"}
		}]
	}`)
	onlyDocumented(t, jsonKeys(t, got.Body), "event_source", "event_source_id", "partner_name", "test_event_code", "data")
}

// TestMetaDocumentedExample rebuilds the website Purchase of Meta's
// Conversions API guide,
// https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api
// (event_name Purchase, event_source_url http://jaspers-market.com/product/123,
// action_source website, user_data client_ip_address 192.19.9.9,
// client_user_agent "test ua", em and ph as SHA-256 arrays, fbc, fbp,
// custom_data value 100.2, currency USD, content_ids, content_type product),
// sent as the form variant the guide allows (data=<JSON array>,
// access_token). The example's em is the hash of joe@eg.com.
func TestMetaDocumentedExample(t *testing.T) {
	at := time.Unix(1633552688, 0).UTC()
	em := "309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"
	ph := "254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4"
	e := docEvent(mapping.Purchase, mapping.SourceStripe, at, map[string]string{
		mapping.IDIP: "192.19.9.9", mapping.IDUserAgent: "test ua", mapping.IDEmailSHA256: em, mapping.IDPhoneSHA256: ph,
		mapping.IDFBC: "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890", mapping.IDFBP: "fb.1.1558571054389.1098115397",
	})
	e.ID = "event.id.123"
	e.ProductID = "product.id.123"
	e.Revenue = &mapping.Revenue{AmountMicros: 100_200_000, Currency: "USD"}
	e.Attributes["event_source_url"] = "http://jaspers-market.com/product/123"
	r, got := docSend(t, "meta", "dataset_id: \"123456789012345\"\naccess_token: META-TOKEN-1", at.Add(time.Minute), e,
		func(mmpCaptured) (int, string) { return 200, `{"events_received":1,"messages":[],"fbtrace_id":"x"}` })
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	form, err := url.ParseQuery(string(got.Body))
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != "/v25.0/123456789012345/events" || form.Get("access_token") != "META-TOKEN-1" {
		t.Errorf("path %s, token %q", got.Path, form.Get("access_token"))
	}
	data := form.Get("data")
	jsonEqual(t, []byte(data), `[{
		"event_name": "Purchase",
		"event_time": 1633552688,
		"event_id": "event.id.123",
		"event_source_url": "http://jaspers-market.com/product/123",
		"action_source": "website",
		"user_data": {
			"client_ip_address": "192.19.9.9",
			"client_user_agent": "test ua",
			"em": ["`+em+`"],
			"ph": ["`+ph+`"],
			"fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
			"fbp": "fb.1.1558571054389.1098115397"
		},
		"custom_data": {"value": 100.2, "currency": "USD", "content_ids": ["product.id.123"], "content_type": "product"}
	}]`)
	onlyDocumented(t, keysOf(form), "data", "access_token", "test_event_code")
}

// keysOf lists a form's keys.
func keysOf(v url.Values) []string {
	out := make([]string, 0, len(v))
	for k := range v {
		out = append(out, k)
	}
	return out
}

// TestAdjustDocumentedExample rebuilds the example of Adjust's S2S events
// reference, https://dev.adjust.com/en/api/s2s-api/events (source:
// adjust/dev-docs src/content/docs/en/api/s2s-api/events.mdx, "POST with
// body": s2s=1, event_token f0ob4r, app_token 4w565xzmb54d, idfa
// D2CADB5F-410F-4963-AC0C-2A78534BDF1E, currency EUR, revenue 123.4,
// environment sandbox, callback_params a URL-encoded JSON object of
// strings), with created_at_unix, the timestamp the reference recommends,
// and ip_address (IPv4 only).
func TestAdjustDocumentedExample(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e := docEvent(mapping.Purchase, mapping.SourceApple, at, map[string]string{
		mapping.IDOS: "ios", mapping.IDIDFA: "D2CADB5F-410F-4963-AC0C-2A78534BDF1E", mapping.IDIP: "192.0.0.1",
	})
	e.Environment = mapping.Sandbox
	e.Revenue = &mapping.Revenue{AmountMicros: 123_400_000, Currency: "EUR"}
	r, got := docSend(t, "adjust", "app_token: 4w565xzmb54d\nevent_tokens: {purchase: f0ob4r}\nsandbox: {}", at.Add(time.Minute), e,
		func(mmpCaptured) (int, string) { return 200, `{"status":"OK"}` })
	if r.Outcome != Delivered {
		t.Fatalf("result = %+v", r)
	}
	if got.Method != "POST" || got.Path != "/event" || got.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("request line %s %s %s", got.Method, got.Path, got.Header.Get("Content-Type"))
	}
	form, err := url.ParseQuery(string(got.Body))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"s2s": "1", "event_token": "f0ob4r", "app_token": "4w565xzmb54d", "idfa": "D2CADB5F-410F-4963-AC0C-2A78534BDF1E",
		"currency": "EUR", "revenue": "123.40", "environment": "sandbox", "created_at_unix": "1796032800", "ip_address": "192.0.0.1",
		"callback_params": `{"environment":"sandbox","event_id":"evt_doc","store":"apple"}`,
	}
	for k, v := range want {
		if form.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, form.Get(k), v)
		}
	}
	if len(form) != len(want) {
		t.Errorf("form %v, want exactly %v", form, want)
	}
	var cb map[string]string
	if err := json.Unmarshal([]byte(form.Get("callback_params")), &cb); err != nil {
		t.Errorf("callback_params is not a flat JSON object of strings: %v", err)
	}
	onlyDocumented(t, keysOf(form), "s2s", "event_token", "app_token", "idfa", "gps_adid", "fire_adid", "oaid", "idfv", "android_id",
		"adid", "ip_address", "created_at_unix", "created_at", "user_agent", "callback_params", "partner_params", "revenue", "currency",
		"environment", "att_status", "tracking_enabled")
}
