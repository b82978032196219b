package mapping

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The fuzz targets below run every source mapping on arbitrary bodies. A
// mapping sees only verified notifications, but "verified" says who sent a
// body, not that it is well formed: a mapping must return an error or a
// result, never panic, and never produce an event that breaks the canonical
// contract. Seeds are the committed fixtures plus f.Add cases; they run as
// ordinary tests in `go test ./...`.

var fuzzReceived = time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

// addFixtures seeds f with every *.json under testdata/<dir>.
func addFixtures(f *testing.F, dir string, add func(body []byte)) {
	f.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

// fuzzStates is a States that answers every key with a prior state when
// full is set, so the paths that depend on history are reached too.
type fuzzStates struct{ full bool }

func (s fuzzStates) State(key string) (State, bool) {
	if !s.full {
		return State{}, false
	}
	return State{Key: key, Status: "active", ProductID: "pro_monthly", PriceID: "price_1", InTrial: true, TrialUsed: true,
		AppUserID: "u1", Identifiers: map[string]string{"idfa": "x"},
		Values:    map[string]string{"order": "GPA.1", "price_micros": "9990000", "currency": "USD", "auto_renew": "false"},
		UpdatedAt: fuzzReceived.Add(-time.Hour)}, true
}

// checkResult asserts the canonical contract on whatever a mapping produced.
func checkResult(t *testing.T, r Result, err error) {
	t.Helper()
	if err != nil {
		if len(r.Events) != 0 {
			t.Fatalf("error %v with %d events", err, len(r.Events))
		}
		return
	}
	if x := r.Erase; x != nil && x.IDKey == "" && (x.EventAttr == "" || x.EventAttrValue == "" || x.StatePrefix == "") {
		t.Fatalf("an erasure without identifier or scope: %+v", *x)
	}
	if x := r.Erase; x != nil && x.IDKey != "" && x.IDValue == "" {
		t.Fatalf("an erasure of an empty identifier: %+v", *x)
	}
	for _, e := range r.Events {
		if e.ID == "" || !e.Type.Valid() {
			t.Fatalf("event without id or with invalid type: %+v", e)
		}
		if e.Revenue != nil {
			if e.Revenue.Currency == "" {
				t.Fatalf("revenue without currency: %+v", e)
			}
			if e.Type == Refund && e.Revenue.AmountMicros > 0 {
				t.Fatalf("positive refund: %+v", e.Revenue)
			}
		}
	}
}

func fuzzMapping(f *testing.F, source string, fn Func, meta func(aux string) map[string]string) {
	f.Fuzz(func(t *testing.T, body []byte, aux string, full bool) {
		n := &Notification{Source: source, Key: "fuzz", ReceivedAt: fuzzReceived, Body: body, Meta: meta(aux), AppID: "com.example.app", Environment: Production}
		r, err := fn(n, fuzzStates{full: full})
		checkResult(t, r, err)
	})
}

// FuzzStripe maps arbitrary Stripe event bodies.
func FuzzStripe(f *testing.F) {
	addFixtures(f, "stripe", func(b []byte) { f.Add(b, "", false); f.Add(b, "", true) })
	f.Add([]byte(`{"id":"evt_1","type":"invoice.paid","data":{"object":{"amount_paid":-5,"currency":"bhd","lines":{"data":[{}]}}}}`), "", true)
	f.Add([]byte(`{"id":"evt_1","type":"charge.refunded","data":{"object":{"amount_refunded":99999999999999999999}}}`), "", false)
	f.Add([]byte(`null`), "", false)
	f.Add([]byte("\xff"), "", false)
	fuzzMapping(f, SourceStripe, Stripe, func(string) map[string]string { return nil })
}

// FuzzShopify maps arbitrary Shopify bodies under arbitrary topics.
func FuzzShopify(f *testing.F) {
	topics := []string{"orders/paid", "orders/cancelled", "refunds/create", "app_subscriptions/update",
		"subscription_billing_attempts/success", "subscription_billing_attempts/failure",
		"subscription_contracts/create", "subscription_contracts/update", "customers/redact", "shop/redact", "products/update"}
	addFixtures(f, "shopify", func(b []byte) {
		for _, tp := range topics {
			f.Add(b, tp, false)
		}
	})
	f.Add([]byte(`{"id":1,"total_price":"1e309","currency":"USD"}`), "orders/paid", true)
	f.Add([]byte(`{"app_subscription":{"status":"ACTIVE","admin_graphql_api_id":1}}`), "app_subscriptions/update", true)
	fuzzMapping(f, SourceShopify, Shopify, func(topic string) map[string]string {
		return map[string]string{ShopifyMetaTopic: topic, ShopifyMetaShop: "fuzz.myshopify.com", ShopifyMetaTriggered: "2026-11-30T02:00:00Z", ShopifyMetaCurrency: ShopifyCurrencyPresentment}
	})
}

// FuzzApple maps arbitrary decoded App Store notification payloads.
func FuzzApple(f *testing.F) {
	addFixtures(f, filepath.Join("apple", "in"), func(b []byte) { f.Add(b, "", false); f.Add(b, "free_trial", true) })
	f.Add([]byte(`{"notificationType":"DID_RENEW","data":{"transactionInfo":{"price":-1,"currency":"JPY","offerDiscountType":"FREE_TRIAL"}}}`), "", true)
	f.Add([]byte(`{"notificationType":"REFUND","data":{"transactionInfo":{"price":1e30,"revocationPercentage":200000}}}`), "", true)
	f.Add([]byte(`{"notificationType":"SUBSCRIBED","data":null}`), "", false)
	fuzzMapping(f, SourceApple, Apple, func(prev string) map[string]string {
		return map[string]string{AppleMetaPreviousOffer: prev}
	})
}

// FuzzGoogle maps arbitrary RTDN bodies with arbitrary Play API
// enrichments.
func FuzzGoogle(f *testing.F) {
	rtdn := `{"version":"1.0","packageName":"com.example.app","eventTimeMillis":"1764471600000","subscriptionNotification":{"version":"1.0","notificationType":4,"purchaseToken":"tok","subscriptionId":"pro_monthly"}}`
	en := `{"subscription":{"lineItems":[{"productId":"pro_monthly","latestSuccessfulOrderId":"GPA.1","offerDetails":{"offerTags":["trial"]}}],"subscriptionState":"SUBSCRIPTION_STATE_ACTIVE"},"order":{"orderId":"GPA.1","total":{"currencyCode":"USD","units":"9","nanos":990000000}}}`
	f.Add([]byte(rtdn), en, false)
	f.Add([]byte(rtdn), en, true)
	f.Add([]byte(`{"packageName":"com.example.app","voidedPurchaseNotification":{"purchaseToken":"tok","orderId":"GPA.2","productType":1,"refundType":2}}`), `{"order":{"orderId":"GPA.2","total":{"currencyCode":"EUR","units":-3,"nanos":-500000000}}}`, true)
	f.Add([]byte(`{"packageName":"com.example.app","oneTimeProductNotification":{"notificationType":1,"purchaseToken":"t","sku":"coins"}}`), `{}`, false)
	f.Add([]byte(`{"testNotification":{"version":"1.0"}}`), "", false)
	f.Add([]byte(`{}`), "null", false)
	f.Fuzz(func(t *testing.T, body []byte, enriched string, full bool) {
		if _, err := ParseGoogleNotification(body); err != nil {
			return
		}
		n := &Notification{Source: SourceGoogle, Key: "fuzz", ReceivedAt: fuzzReceived, Body: body, Meta: map[string]string{}}
		if enriched != "" {
			n.Enriched = []byte(enriched)
		}
		r, err := Google(n, fuzzStates{full: full})
		checkResult(t, r, err)
	})
}

// FuzzCustom validates and maps arbitrary POST /v1/events bodies.
func FuzzCustom(f *testing.F) {
	f.Add([]byte(`{"type":"purchase","app_user_id":"u1","app_id":"com.example.app","revenue":{"amount":"9.99","currency":"USD"}}`))
	f.Add([]byte(`{"events":[{"type":"refund","app_user_id":"u1","revenue":{"amount":-1.5,"currency":"KWD"}},{"type":"custom","name":"x"}]}`))
	f.Add([]byte(`{"type":"custom","name":"n","occurred_at":"1969-01-01T00:00:00Z","attributes":{"a":[1]}}`))
	f.Add([]byte(`{"type":"purchase","revenue":{"amount":"99999999999999999999.999999","currency":"USD"}}`))
	f.Add([]byte(`{"type":"custom","user":{"identifiers":{"email":" A@B.C ","phone":"+1 (555) 000"}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, fields := ParseCustom(body, fuzzReceived, 720*time.Hour)
		if fields != nil {
			if req != nil && len(req.Events) > 0 {
				t.Logf("field errors with events: %v", fields)
			}
			return
		}
		if req == nil || len(req.Events) == 0 {
			t.Fatalf("no field errors and no events for %q", body)
		}
		canonical, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		n := &Notification{Source: SourceCustom, Key: "fuzz-key", ReceivedAt: fuzzReceived, Body: ScrubPII(canonical)}
		r, err := MapCustom(n, nil)
		checkResult(t, r, err)
		if err != nil {
			t.Fatalf("a request that validated does not map: %v", err)
		}
	})
}

// FuzzMicrosFromDecimal parses arbitrary decimal amounts.
func FuzzMicrosFromDecimal(f *testing.F) {
	for _, s := range []string{"9.99", "-0.5", "1e3", "", ".", "0.0000001", "99999999999999999999", "+1", "1,5"} {
		f.Add(s, "USD")
	}
	f.Add("1.234", "KWD")
	f.Add("1", "xx")
	f.Fuzz(func(t *testing.T, s, cur string) {
		r, err := MicrosFromDecimal(s, cur)
		if err != nil {
			return
		}
		back, err := MicrosFromDecimal(r.Decimal(), r.Currency)
		if err != nil || back.AmountMicros != r.AmountMicros {
			t.Fatalf("%q %s -> %d -> %q -> %d, %v", s, cur, r.AmountMicros, r.Decimal(), back.AmountMicros, err)
		}
	})
}
