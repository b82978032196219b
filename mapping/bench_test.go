package mapping

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkMap measures the pure mapping of one realistic notification per
// source, built from that source's test fixtures, against an in-memory
// States (memStates) holding what earlier notifications left behind. The
// prior state is produced in setup by mapping the earlier notifications, so
// each op maps the same notification against the same state: what the
// store's mapping step costs per notification, without BoltDB.
func BenchmarkMap(b *testing.B) {
	cases := []struct {
		name  string
		setup func(b *testing.B) (*Notification, memStates)
		want  Type // the event the op must produce, so a fixture change cannot silently bench an ignored path
	}{
		// invoice.paid of the first paid cycle after a trial the state
		// remembers: trial_converted with the invoice's revenue.
		{"stripe", benchStripe, TrialConverted},
		// DID_RENEW after the free trial the state remembers.
		{"apple", benchApple, TrialConverted},
		// SUBSCRIPTION_RENEWED with its Play enrichment, after the
		// free-trial purchase the state remembers.
		{"google", benchGoogle, TrialConverted},
		// orders/paid of a subscription renewal order after its billing
		// attempt linked the order to an active contract.
		{"shopify", benchShopify, SubscriptionRenewed},
		// One canonical custom purchase with hashed identifiers, as the
		// webhook stores it after ParseCustom.
		{"custom", benchCustom, Purchase},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			n, st := tc.setup(b)
			res, err := Map(n, st)
			if err != nil {
				b.Fatalf("Map: %v", err)
			}
			if len(res.Events) != 1 || res.Events[0].Type != tc.want {
				b.Fatalf("Map produced %+v (ignored %q), want one %s", res.Events, res.Ignored, tc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Map(n, st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchMapInto maps n against st and applies its states, as the store does
// for a notification that came before the benchmarked one.
func benchMapInto(b *testing.B, n *Notification, st memStates) {
	b.Helper()
	res, err := Map(n, st)
	if err != nil {
		b.Fatalf("setup %s %s: %v", n.Source, n.Key, err)
	}
	st.apply(res)
}

// benchStripeNote reads testdata/stripe/<name>.json as stripeNotification
// does (which needs a *testing.T).
func benchStripeNote(b *testing.B, name string) *Notification {
	b.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "stripe", name+".json"))
	if err != nil {
		b.Fatal(err)
	}
	var head struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Created int64  `json:"created"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return &Notification{
		Source: SourceStripe, Key: head.ID, Type: head.Type, AppID: stripeAppID,
		ReceivedAt: time.Unix(head.Created+1, 0).UTC(), Body: body,
	}
}

// benchStripe is the golden case trial_converted_by_invoice.
func benchStripe(b *testing.B) (*Notification, memStates) {
	st := memStates{}
	benchMapInto(b, benchStripeNote(b, "sub_a_created_trialing"), st)
	return benchStripeNote(b, "invoice_a_paid_cycle"), st
}

// benchApple is the golden case did_renew_after_trial_with_state, with the
// notification built as appleNotification builds it.
func benchApple(b *testing.B) (*Notification, memStates) {
	b.Helper()
	const name = "did_renew_after_trial_with_state"
	for _, tc := range appleCases() {
		if tc.name != name {
			continue
		}
		body, err := json.Marshal(tc.body)
		if err != nil {
			b.Fatal(err)
		}
		var p AppleNotification
		if err := json.Unmarshal(body, &p); err != nil {
			b.Fatal(err)
		}
		n := &Notification{Source: SourceApple, Key: p.NotificationUUID, Type: p.TypeKey(), AppID: appleBundle,
			Environment: AppleCanonicalEnvironment(p.AppleEnvironment()), ReceivedAt: appleReceived, Body: body, Meta: tc.meta}
		return n, memStates{tc.state.Key: *tc.state}
	}
	b.Fatalf("no Apple case %s", name)
	return nil, nil
}

// benchGoogleNote builds a deferred, enriched notification as gNotification
// and gEnrich do (both need a *testing.T).
func benchGoogleNote(b *testing.B, key string, body, sub, order map[string]any) *Notification {
	b.Helper()
	raw := func(v map[string]any) json.RawMessage {
		out, err := json.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	en, err := json.Marshal(GoogleEnrichment{Subscription: raw(sub), Order: raw(order)})
	if err != nil {
		b.Fatal(err)
	}
	return &Notification{Source: SourceGoogle, Key: key, AppID: gPkg, ReceivedAt: gT0.Add(time.Second),
		Body: raw(body), Enriched: en, Deferred: true}
}

// benchGoogle is the golden case trial_then_renewed: a free-trial purchase,
// then the renewal whose order carries the first payment.
func benchGoogle(b *testing.B) (*Notification, memStates) {
	st := memStates{}
	benchMapInto(b, benchGoogleNote(b, "m-trial", gSubNote("tok-1", "pro_monthly", 4, gT0),
		gSub("pro_monthly", "GPA.1111-2222-3333-44444", "freeTrial", "SUBSCRIPTION_STATE_ACTIVE", nil),
		gOrder("GPA.1111-2222-3333-44444", "pro_monthly", "FREE_TRIAL", usd("0", 0), nil)), st)
	n := benchGoogleNote(b, "m-renew", gSubNote("tok-1", "pro_monthly", 2, gT0.Add(7*24*time.Hour)),
		gSub("pro_monthly", "GPA.1111-2222-3333-44444..0", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", nil),
		gOrder("GPA.1111-2222-3333-44444..0", "pro_monthly", "BASE", usd("9", 990000000), nil))
	return n, st
}

// benchShopifyNote reads testdata/shopify/<file> as shopifyNote does (which
// needs a *testing.T): scrubbed as the webhook stores it, shop currency.
func benchShopifyNote(b *testing.B, topic, file string) *Notification {
	b.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "shopify", file))
	if err != nil {
		b.Fatal(err)
	}
	return &Notification{
		Source: SourceShopify, Key: "wh-" + file, Type: topic, AppID: "shop.example.app",
		ReceivedAt: shopifyReceived, Body: ScrubPII(body),
		Meta: map[string]string{
			ShopifyMetaShop: testShop, ShopifyMetaTopic: topic, ShopifyMetaCurrency: ShopifyCurrencyShop,
			ShopifyMetaAPIVersion: "2026-01", ShopifyMetaTriggered: "2026-11-30T00:00:07Z",
		},
	}
}

// benchShopify is TestShopifyRenewalMoneyOnce's "attempt then order": the
// billing attempt on an active contract, then the renewal order's
// orders/paid, which reports the money.
func benchShopify(b *testing.B) (*Notification, memStates) {
	st := memStates{activeContractState.Key: activeContractState}
	benchMapInto(b, benchShopifyNote(b, "subscription_billing_attempts/success", "billing_attempt_success.json"), st)
	return benchShopifyNote(b, "orders/paid", "order_paid_renewal.json"), st
}

// benchCustom maps the canonical request of ParseCustom's "purchase with
// everything" golden case, compacted as the webhook stores it. Custom
// mappings read no state.
func benchCustom(b *testing.B) (*Notification, memStates) {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "custom", "parse_purchase_with_everything.golden"))
	if err != nil {
		b.Fatal(err)
	}
	var body bytes.Buffer
	if err := json.Compact(&body, raw); err != nil {
		b.Fatal(err)
	}
	return &Notification{Source: SourceCustom, Key: "order-123-conversions", ReceivedAt: customNow.Add(time.Second), Body: body.Bytes()}, memStates{}
}

// BenchmarkScrubPII: a Stripe event (unix times, ids, no email or phone)
// through ScrubPII, whose quick check lets it through without a decode,
// and through the full scrub it would otherwise take.
func BenchmarkScrubPII(b *testing.B) {
	body := []byte(`{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","api_version":"2023-10-16","created":1701945600,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_1NG8Du2eZvKYlo2C","object":"subscription","status":"trialing","customer":"cus_NffrFeUfNV2Hib","trial_end":1702550400,"metadata":{"app_user_id":"user-8f3a"},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}}}`)
	for _, c := range []struct {
		name string
		fn   func([]byte) []byte
	}{{"quick", ScrubPII}, {"full", scrubBody}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if out := c.fn(body); len(out) != len(body) {
					b.Fatal("changed")
				}
			}
		})
	}
}
