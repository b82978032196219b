package mapping

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"
)

const gPkg = "com.example.app"

var gT0 = time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)

// googleStates is an in-memory States that applies each result, like the
// store does in its transaction.
type googleStates map[string]State

func (s googleStates) State(key string) (State, bool) {
	st, ok := s[key]
	return st, ok
}

func (s googleStates) apply(r Result) {
	for _, st := range r.States {
		s[st.Key] = st
	}
}

func gMillis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func gSubNote(token, subID string, code int, at time.Time) map[string]any {
	return map[string]any{
		"version": "1.0", "packageName": gPkg, "eventTimeMillis": gMillis(at),
		"subscriptionNotification": map[string]any{"version": "1.0", "notificationType": code, "purchaseToken": token, "subscriptionId": subID},
	}
}

func gMoney(units string, nanos int64, cur string) map[string]any {
	m := map[string]any{"currencyCode": cur, "units": units}
	if nanos != 0 {
		m["nanos"] = nanos
	}
	return m
}

// gSub builds a SubscriptionPurchaseV2 answer.
func gSub(product, orderID, phase, state string, extra map[string]any) map[string]any {
	li := map[string]any{
		"productId": product, "expiryTime": "2026-12-01T10:00:00Z", "latestSuccessfulOrderId": orderID,
		"autoRenewingPlan": map[string]any{"autoRenewEnabled": true, "recurringPrice": gMoney("9", 990000000, "USD")},
		"offerDetails":     map[string]any{"basePlanId": "monthly", "offerId": map[bool]string{true: "trial-7d"}[phase == "freeTrial"]},
	}
	if phase != "" {
		li["offerPhase"] = map[string]any{phase: map[string]any{}}
	}
	s := map[string]any{
		"kind": "androidpublisher#subscriptionPurchaseV2", "regionCode": "US", "startTime": "2026-11-01T10:00:00Z",
		"subscriptionState": state, "acknowledgementState": "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED",
		"externalAccountIdentifiers": map[string]any{"obfuscatedExternalAccountId": "user-42"},
		"lineItems":                  []any{li},
	}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

// gOrder builds an Order answer; phase is BASE, INTRODUCTORY or FREE_TRIAL.
func gOrder(orderID, product, phase string, total map[string]any, history map[string]any) map[string]any {
	details := map[string]string{"BASE": "baseDetails", "INTRODUCTORY": "introductoryPriceDetails", "FREE_TRIAL": "freeTrialDetails"}[phase]
	o := map[string]any{
		"orderId": orderID, "purchaseToken": "tok", "state": "PROCESSED", "createTime": "2026-11-01T10:00:00Z",
		"total": total, "tax": gMoney("0", 0, total["currencyCode"].(string)),
		"lineItems": []any{map[string]any{
			"productId": product, "total": total,
			"subscriptionDetails": map[string]any{"basePlanId": "monthly", "offerPhase": phase, "offerPhaseDetails": map[string]any{details: map[string]any{}}},
		}},
	}
	if history != nil {
		o["orderHistory"] = history
	}
	return o
}

func gEnrich(t *testing.T, sub, order, prev, product map[string]any) []byte {
	t.Helper()
	en := GoogleEnrichment{}
	raw := func(v map[string]any) json.RawMessage {
		if v == nil {
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	en.Subscription, en.Order, en.PreviousOrder, en.Product = raw(sub), raw(order), raw(prev), raw(product)
	b, err := json.Marshal(en)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gNotification(t *testing.T, key string, body map[string]any, enriched []byte) *Notification {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return &Notification{Source: SourceGoogle, Key: key, AppID: gPkg, ReceivedAt: gT0.Add(time.Second), Body: b, Enriched: enriched, Deferred: enriched != nil}
}

// gStep is one notification of a golden scenario.
type gStep struct {
	key      string
	body     map[string]any
	enriched func(t *testing.T) []byte
	meta     map[string]string
}

type gOutput struct {
	Key     string  `json:"key"`
	Events  []Event `json:"events"`
	States  []State `json:"states,omitempty"`
	Ignored string  `json:"ignored,omitempty"`
}

func usd(units string, nanos int64) map[string]any { return gMoney(units, nanos, "USD") }

func TestGoogleGolden(t *testing.T) {
	t1, t2 := gT0.Add(7*24*time.Hour), gT0.Add(37*24*time.Hour)
	paidSub := func(code int, state string, extra map[string]any) gStep {
		return gStep{key: "m" + strconv.Itoa(code), body: gSubNote("tok-1", "pro_monthly", code, t1), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "basePrice", state, extra), nil, nil, nil)
		}}
	}
	purchasePaid := gStep{key: "m-purchase", body: gSubNote("tok-1", "pro_monthly", 4, gT0), enriched: func(t *testing.T) []byte {
		return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", nil),
			gOrder("GPA.1111-2222-3333-44444", "pro_monthly", "BASE", usd("9", 990000000), nil), nil, nil)
	}}
	purchaseTrial := gStep{key: "m-trial", body: gSubNote("tok-1", "pro_monthly", 4, gT0), enriched: func(t *testing.T) []byte {
		return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "freeTrial", "SUBSCRIPTION_STATE_ACTIVE", nil),
			gOrder("GPA.1111-2222-3333-44444", "pro_monthly", "FREE_TRIAL", usd("0", 0), nil), nil, nil)
	}}
	renewal := func(prevPhase string) gStep {
		return gStep{key: "m-renew", body: gSubNote("tok-1", "pro_monthly", 2, t1), enriched: func(t *testing.T) []byte {
			var prev map[string]any
			if prevPhase != "" {
				prev = gOrder("GPA.1111-2222-3333-44444", "pro_monthly", prevPhase, usd("0", 0), nil)
			}
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444..0", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", nil),
				gOrder("GPA.1111-2222-3333-44444..0", "pro_monthly", "BASE", usd("9", 990000000), nil), prev, nil)
		}}
	}
	ignoredCode := func(code int) []gStep {
		return []gStep{{key: "m" + strconv.Itoa(code), body: gSubNote("tok-1", "pro_monthly", code, t1)}}
	}
	refundedOrder := gOrder("GPA.1111-2222-3333-44444", "pro_monthly", "BASE", usd("9", 990000000),
		map[string]any{"refundEvent": map[string]any{"eventTime": "2026-11-08T10:00:00Z", "refundDetails": map[string]any{"total": usd("9", 990000000)}}})
	voided := func(refundType int, order map[string]any) gStep {
		return gStep{key: "m-voided-" + strconv.Itoa(refundType), body: map[string]any{
			"version": "1.0", "packageName": gPkg, "eventTimeMillis": gMillis(t2),
			"voidedPurchaseNotification": map[string]any{"purchaseToken": "tok-1", "orderId": "GPA.1111-2222-3333-44444", "productType": 1, "refundType": refundType},
		}, enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "basePrice", "SUBSCRIPTION_STATE_EXPIRED", nil), order, nil, nil)
		}}
	}
	oneTime := func(purchaseType *int, state int) gStep {
		prod := map[string]any{"kind": "androidpublisher#productPurchase", "orderId": "GPA.9999-8888-7777-66666", "productId": "coins_100",
			"purchaseState": state, "purchaseTimeMillis": gMillis(gT0), "quantity": 2, "regionCode": "AU", "obfuscatedExternalAccountId": "user-7"}
		if purchaseType != nil {
			prod["purchaseType"] = *purchaseType
		}
		return gStep{key: "m-otp", body: map[string]any{
			"version": "1.0", "packageName": gPkg, "eventTimeMillis": gMillis(gT0),
			"oneTimeProductNotification": map[string]any{"version": "1.0", "notificationType": 1, "purchaseToken": "otp-tok", "sku": "coins_100"},
		}, enriched: func(t *testing.T) []byte {
			order := map[string]any{"orderId": "GPA.9999-8888-7777-66666", "state": "PROCESSED", "total": gMoney("16", 990000000, "AUD"),
				"lineItems": []any{map[string]any{"productId": "coins_100", "total": gMoney("16", 990000000, "AUD"), "oneTimePurchaseDetails": map[string]any{"quantity": 2}}}}
			return gEnrich(t, nil, order, nil, prod)
		}}
	}
	zero := 0
	cases := []struct {
		name  string
		steps []gStep
	}{
		{"subscription_purchased_paid", []gStep{purchasePaid}},
		{"subscription_purchased_free_trial", []gStep{purchaseTrial}},
		{"subscription_purchased_test_purchase", []gStep{{key: "m-test", body: gSubNote("tok-1", "pro_monthly", 4, gT0), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "introductoryPrice", "SUBSCRIPTION_STATE_ACTIVE", map[string]any{"testPurchase": map[string]any{}}),
				gOrder("GPA.1111-2222-3333-44444", "pro_monthly", "INTRODUCTORY", usd("0", 990000000), nil), nil, nil)
		}}}},
		{"trial_then_renewed", []gStep{purchaseTrial, renewal("")}},
		{"subscription_renewed", []gStep{purchasePaid, renewal("")}},
		{"subscription_renewed_after_trial_without_state", []gStep{renewal("FREE_TRIAL")}},
		{"subscription_recovered", []gStep{purchasePaid, {key: "m1", body: gSubNote("tok-1", "pro_monthly", 1, t2), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444..1", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", nil),
				gOrder("GPA.1111-2222-3333-44444..1", "pro_monthly", "BASE", usd("9", 990000000), nil), nil, nil)
		}}}},
		{"subscription_canceled", []gStep{purchasePaid, paidSub(3, "SUBSCRIPTION_STATE_CANCELED", map[string]any{"canceledStateContext": map[string]any{"userInitiatedCancellation": map[string]any{"cancelTime": "2026-11-08T10:00:00Z"}}})}},
		{"subscription_canceled_in_trial", []gStep{purchaseTrial, {key: "m3", body: gSubNote("tok-1", "pro_monthly", 3, t1), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "freeTrial", "SUBSCRIPTION_STATE_CANCELED", map[string]any{"canceledStateContext": map[string]any{"userInitiatedCancellation": map[string]any{}}}), nil, nil, nil)
		}}}},
		{"subscription_canceled_by_replacement", []gStep{paidSub(3, "SUBSCRIPTION_STATE_CANCELED", map[string]any{"canceledStateContext": map[string]any{"replacementCancellation": map[string]any{}}})}},
		{"subscription_on_hold", []gStep{paidSub(5, "SUBSCRIPTION_STATE_ON_HOLD", nil)}},
		{"subscription_in_grace_period", []gStep{paidSub(6, "SUBSCRIPTION_STATE_IN_GRACE_PERIOD", nil)}},
		{"subscription_restarted", []gStep{paidSub(7, "SUBSCRIPTION_STATE_ACTIVE", nil)}},
		{"subscription_price_change_confirmed", ignoredCode(8)},
		{"subscription_deferred", ignoredCode(9)},
		{"subscription_paused", []gStep{paidSub(10, "SUBSCRIPTION_STATE_PAUSED", nil)}},
		{"subscription_pause_schedule_changed", ignoredCode(11)},
		{"subscription_revoked", []gStep{purchasePaid, {key: "m12", body: gSubNote("tok-1", "pro_monthly", 12, t1), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "basePrice", "SUBSCRIPTION_STATE_EXPIRED", nil), refundedOrder, nil, nil)
		}}}},
		{"subscription_revoked_then_voided", []gStep{{key: "m12", body: gSubNote("tok-1", "pro_monthly", 12, t1), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.1111-2222-3333-44444", "basePrice", "SUBSCRIPTION_STATE_EXPIRED", nil), refundedOrder, nil, nil)
		}}, voided(GoogleRefundFull, refundedOrder)}},
		{"subscription_expired", []gStep{paidSub(13, "SUBSCRIPTION_STATE_EXPIRED", nil)}},
		{"subscription_items_changed", []gStep{purchasePaid, {key: "m17", body: gSubNote("tok-1", "pro_yearly", 17, t1), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_yearly", "GPA.1111-2222-3333-44444..0", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", nil), nil, nil, nil)
		}}}},
		{"subscription_cancellation_scheduled", ignoredCode(18)},
		{"subscription_price_change_updated", ignoredCode(19)},
		{"subscription_pending_purchase_canceled", ignoredCode(20)},
		{"subscription_price_step_up_consent_updated", ignoredCode(22)},
		{"subscription_unknown_code", ignoredCode(99)},
		{"upgrade_with_linked_purchase_token", []gStep{purchasePaid, {key: "m-upgrade", body: gSubNote("tok-2", "pro_yearly", 4, t1), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_yearly", "GPA.5555-2222-3333-44444", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", map[string]any{"linkedPurchaseToken": "tok-1"}),
				gOrder("GPA.5555-2222-3333-44444", "pro_yearly", "BASE", usd("49", 990000000), nil), nil, nil)
		}}}},
		{"resubscribe_with_linked_purchase_token", []gStep{purchasePaid, {key: "m-resub", body: gSubNote("tok-2", "pro_monthly", 4, t2), enriched: func(t *testing.T) []byte {
			return gEnrich(t, gSub("pro_monthly", "GPA.6666-2222-3333-44444", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", map[string]any{"linkedPurchaseToken": "tok-1"}),
				gOrder("GPA.6666-2222-3333-44444", "pro_monthly", "BASE", usd("9", 990000000), nil), nil, nil)
		}}}},
		{"one_time_product_purchased", []gStep{oneTime(nil, 0)}},
		{"one_time_product_purchased_test", []gStep{oneTime(&zero, 0)}},
		{"one_time_product_pending", []gStep{oneTime(nil, 2)}},
		{"one_time_product_canceled", []gStep{{key: "m-otc", body: map[string]any{
			"version": "1.0", "packageName": gPkg, "eventTimeMillis": gMillis(gT0),
			"oneTimeProductNotification": map[string]any{"version": "1.0", "notificationType": 2, "purchaseToken": "otp-tok", "sku": "coins_100"},
		}}}},
		{"voided_purchase_full", []gStep{purchasePaid, voided(GoogleRefundFull, refundedOrder)}},
		{"voided_purchase_partial", []gStep{voided(GoogleRefundPartial, gOrder("GPA.1111-2222-3333-44444", "pro_monthly", "BASE", usd("9", 990000000),
			map[string]any{"partialRefundEvents": []any{
				map[string]any{"state": "PROCESSED_SUCCESSFULLY", "refundDetails": map[string]any{"total": usd("3", 330000000)}},
				map[string]any{"state": "PENDING", "refundDetails": map[string]any{"total": usd("1", 0)}},
			}}))}},
		{"voided_purchase_order_missing", []gStep{voided(GoogleRefundFull, nil)}},
		{"test_notification", []gStep{{key: "m-test", body: map[string]any{"version": "1.0", "packageName": gPkg, "eventTimeMillis": gMillis(gT0), "testNotification": map[string]any{"version": "1.0"}}}}},
		{"purchase_not_found", []gStep{{key: "m-404", body: gSubNote("tok-1", "pro_monthly", 4, gT0), enriched: func(t *testing.T) []byte {
			return []byte(`{"not_found":"play: subscriptionsv2.get: HTTP 410: gone"}`)
		}}}},
		{"unknown_package", []gStep{{key: "m-pkg", body: gSubNote("tok-1", "pro_monthly", 4, gT0), meta: map[string]string{"ignore": "package com.other is not in sources.google.packages"}}}},
		{"unknown_shape", []gStep{{key: "m-shape", body: map[string]any{"version": "1.0", "packageName": gPkg, "pendingRefundReviewNotification": map[string]any{}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := googleStates{}
			var out []gOutput
			for _, s := range tc.steps {
				var en []byte
				if s.enriched != nil {
					en = s.enriched(t)
				}
				n := gNotification(t, s.key, s.body, en)
				n.Meta = s.meta
				res, err := Google(n, st)
				if err != nil {
					t.Fatalf("step %s: %v", s.key, err)
				}
				for _, e := range res.Events {
					if !e.Type.Valid() || e.ID == "" {
						t.Errorf("step %s: invalid event %+v", s.key, e)
					}
					if e.Type == Refund && (e.Revenue != nil && e.Revenue.AmountMicros >= 0) {
						t.Errorf("step %s: refund revenue %d is not negative", s.key, e.Revenue.AmountMicros)
					}
				}
				st.apply(res)
				out = append(out, gOutput{Key: s.key, Events: res.Events, States: res.States, Ignored: res.Ignored})
			}
			golden(t, "google/"+tc.name, out)
		})
	}
}

// TestGoogleTrialConversionRevenue spells out the headline case without a
// golden file: a free-trial purchase followed by a renewal is trial_started
// then trial_converted with the renewal order's revenue.
func TestGoogleTrialConversionRevenue(t *testing.T) {
	st := googleStates{}
	n1 := gNotification(t, "a", gSubNote("tok", "pro", 4, gT0), gEnrich(t, gSub("pro", "GPA.1", "freeTrial", "SUBSCRIPTION_STATE_ACTIVE", nil), gOrder("GPA.1", "pro", "FREE_TRIAL", usd("0", 0), nil), nil, nil))
	r1, err := Google(n1, st)
	if err != nil || len(r1.Events) != 1 || r1.Events[0].Type != TrialStarted || r1.Events[0].Revenue != nil {
		t.Fatalf("purchase: got %+v, %v; want one trial_started without revenue", r1.Events, err)
	}
	st.apply(r1)
	n2 := gNotification(t, "b", gSubNote("tok", "pro", 2, gT0.Add(7*24*time.Hour)), gEnrich(t, gSub("pro", "GPA.1..0", "basePrice", "SUBSCRIPTION_STATE_ACTIVE", nil), gOrder("GPA.1..0", "pro", "BASE", gMoney("16", 990000000, "AUD"), nil), nil, nil))
	r2, err := Google(n2, st)
	if err != nil || len(r2.Events) != 1 {
		t.Fatalf("renewal: got %+v, %v", r2.Events, err)
	}
	e := r2.Events[0]
	if e.Type != TrialConverted || e.Revenue == nil || *e.Revenue != (Revenue{AmountMicros: 16_990_000, Currency: "AUD"}) {
		t.Errorf("renewal: got %s %+v, want trial_converted AUD 16.99", e.Type, e.Revenue)
	}
	if e.User.AppUserID != "user-42" || e.SubscriptionID != "GPA.1" || e.TransactionID != "GPA.1..0" {
		t.Errorf("renewal: got user %q subscription %q transaction %q", e.User.AppUserID, e.SubscriptionID, e.TransactionID)
	}
	// The same renewal under another message id is the same event.
	n2b := *n2
	n2b.Key = "c"
	r3, err := Google(&n2b, googleStates{"google:tok": st["google:tok"]})
	if err != nil || len(r3.Events) != 1 || r3.Events[0].ID != e.ID {
		t.Errorf("redelivered renewal: got %+v, %v; want id %s", r3.Events, err, e.ID)
	}
}

func TestParseGoogleNotification(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		wantErr bool
		kind    string
		typ     string
		dedupe  string
	}{
		{"string event time", `{"packageName":"p","eventTimeMillis":"1503349566168","subscriptionNotification":{"notificationType":4,"purchaseToken":"t","subscriptionId":"s"}}`, false, GoogleKindSubscription, "SUBSCRIPTION_PURCHASED", "t|SUBSCRIPTION_PURCHASED|1503349566168"},
		{"number event time", `{"packageName":"p","eventTimeMillis":1503349566168,"subscriptionNotification":{"notificationType":4,"purchaseToken":"t","subscriptionId":"s"}}`, false, GoogleKindSubscription, "SUBSCRIPTION_PURCHASED", "t|SUBSCRIPTION_PURCHASED|1503349566168"},
		{"string notification type", `{"packageName":"p","eventTimeMillis":"1","subscriptionNotification":{"notificationType":"2","purchaseToken":"t"}}`, false, GoogleKindSubscription, "SUBSCRIPTION_RENEWED", "t|SUBSCRIPTION_RENEWED|1"},
		{"large event time stays exact", `{"packageName":"p","eventTimeMillis":9007199254740993,"oneTimeProductNotification":{"notificationType":1,"purchaseToken":"t","sku":"x"}}`, false, GoogleKindOneTime, "ONE_TIME_PRODUCT_PURCHASED", "t|ONE_TIME_PRODUCT_PURCHASED|9007199254740993"},
		{"voided", `{"packageName":"p","eventTimeMillis":"1","voidedPurchaseNotification":{"purchaseToken":"t","orderId":"GPA.1","productType":1,"refundType":2}}`, false, GoogleKindVoided, "VOIDED_PURCHASE", "voided:GPA.1:partial"},
		{"test", `{"version":"1.0","packageName":"p","eventTimeMillis":"1","testNotification":{"version":"1.0"}}`, false, GoogleKindTest, "TEST", ""},
		{"unknown code", `{"packageName":"p","subscriptionNotification":{"notificationType":99,"purchaseToken":"t"}}`, false, GoogleKindSubscription, "SUBSCRIPTION_TYPE_99", "t|SUBSCRIPTION_TYPE_99|"},
		{"two kinds", `{"packageName":"p","testNotification":{},"subscriptionNotification":{"notificationType":4,"purchaseToken":"t"}}`, true, "", "", ""},
		{"no kind", `{"packageName":"p","pendingRefundReviewNotification":{}}`, true, "", "", ""},
		{"not json", `not json`, true, "", "", ""},
		{"array", `[1,2]`, true, "", "", ""},
		{"trailing data", `{"packageName":"p","testNotification":{}} {}`, true, "", "", ""},
		{"no package", `{"testNotification":{}}`, true, "", "", ""},
		{"bad event time", `{"packageName":"p","eventTimeMillis":"soon","testNotification":{}}`, true, "", "", ""},
		{"float event time", `{"packageName":"p","eventTimeMillis":1.5e12,"testNotification":{}}`, true, "", "", ""},
		{"bool notification type", `{"packageName":"p","subscriptionNotification":{"notificationType":true,"purchaseToken":"t"}}`, true, "", "", ""},
		{"no token", `{"packageName":"p","subscriptionNotification":{"notificationType":4}}`, true, "", "", ""},
		{"no notification type", `{"packageName":"p","oneTimeProductNotification":{"purchaseToken":"t"}}`, true, "", "", ""},
		{"voided without order", `{"packageName":"p","voidedPurchaseNotification":{"purchaseToken":"t"}}`, true, "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := ParseGoogleNotification([]byte(tc.body))
			if tc.wantErr {
				if !errors.Is(err, ErrGoogleShape) {
					t.Fatalf("got %v, want ErrGoogleShape", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.Kind() != tc.kind || g.TypeName() != tc.typ || g.DedupeKey() != tc.dedupe {
				t.Errorf("got %s %s %q, want %s %s %q", g.Kind(), g.TypeName(), g.DedupeKey(), tc.kind, tc.typ, tc.dedupe)
			}
		})
	}
}

func TestGoogleMappingErrors(t *testing.T) {
	purchase := gSubNote("tok", "pro", 4, gT0)
	cases := []struct {
		name     string
		body     map[string]any
		enriched []byte
		want     error
	}{
		{"no enrichment", purchase, nil, ErrMalformed},
		{"enrichment not json", purchase, []byte(`{`), ErrMalformed},
		{"subscription wrong type", purchase, []byte(`{"subscription":{"lineItems":"x"}}`), ErrMalformed},
		{"no subscription", purchase, []byte(`{"order":{}}`), ErrMalformed},
		{"no line items", purchase, []byte(`{"subscription":{"lineItems":[]}}`), ErrMalformed},
		{"order wrong type", purchase, []byte(`{"subscription":{"lineItems":[{"productId":"pro"}]},"order":[]}`), ErrMalformed},
		{"previous order wrong type", purchase, []byte(`{"subscription":{"lineItems":[{"productId":"pro"}]},"previous_order":1}`), ErrMalformed},
		{"product wrong type", gSubNote("tok", "pro", 4, gT0), []byte(`{"product":"x"}`), ErrMalformed},
		{"unknown currency", purchase, []byte(`{"subscription":{"lineItems":[{"productId":"pro","offerPhase":{"basePrice":{}}}]},"order":{"orderId":"GPA.1","total":{"currencyCode":"XXX","units":"1"}}}`), ErrCurrency},
		{"nanos finer than micros", purchase, []byte(`{"subscription":{"lineItems":[{"productId":"pro"}]},"order":{"orderId":"GPA.1","total":{"currencyCode":"USD","units":"1","nanos":1}}}`), ErrAmount},
		{"nanos out of range", purchase, []byte(`{"subscription":{"lineItems":[{"productId":"pro"}]},"order":{"orderId":"GPA.1","total":{"currencyCode":"USD","units":"1","nanos":1000000000}}}`), ErrMalformed},
		{"units not a number", purchase, []byte(`{"subscription":{"lineItems":[{"productId":"pro"}]},"order":{"orderId":"GPA.1","total":{"currencyCode":"USD","units":"ten"}}}`), ErrMalformed},
		{"one-time without product", map[string]any{"packageName": gPkg, "oneTimeProductNotification": map[string]any{"notificationType": 1, "purchaseToken": "t", "sku": "x"}}, []byte(`{}`), ErrMalformed},
		{"refunds in two currencies", map[string]any{"packageName": gPkg, "voidedPurchaseNotification": map[string]any{"purchaseToken": "t", "orderId": "GPA.1", "refundType": 2}},
			[]byte(`{"order":{"orderId":"GPA.1","orderHistory":{"partialRefundEvents":[{"refundDetails":{"total":{"currencyCode":"USD","units":"1"}}},{"refundDetails":{"total":{"currencyCode":"EUR","units":"1"}}}]}}}`), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Google(gNotification(t, "k", tc.body, tc.enriched), googleStates{})
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestGoogleMoneyExact(t *testing.T) {
	cases := []struct {
		units string
		nanos int64
		cur   string
		want  int64
	}{
		{"16", 990000000, "AUD", 16_990_000},
		{"0", 990000, "USD", 990},
		{"230000", 0, "JPY", 230_000_000_000},
		{"-3", -500000000, "EUR", -3_500_000},
		{"9223372036854", 775807000, "USD", 9_223_372_036_854_775_807},
	}
	for _, tc := range cases {
		t.Run(tc.units+"_"+tc.cur, func(t *testing.T) {
			var m googleMoney
			if err := json.Unmarshal([]byte(`{"currencyCode":"`+tc.cur+`","units":"`+tc.units+`","nanos":`+strconv.FormatInt(tc.nanos, 10)+`}`), &m); err != nil {
				t.Fatal(err)
			}
			r, err := m.revenue()
			if err != nil || r.AmountMicros != tc.want {
				t.Errorf("got %+v, %v; want %d micros", r, err, tc.want)
			}
		})
	}
}

func TestPreviousGoogleOrderID(t *testing.T) {
	for in, want := range map[string]string{
		"GPA.1-2-3": "", "GPA.1-2-3..0": "GPA.1-2-3", "GPA.1-2-3..7": "GPA.1-2-3..6", "GPA.1..x": "", "": "",
	} {
		if got := PreviousGoogleOrderID(in); got != want {
			t.Errorf("PreviousGoogleOrderID(%q) = %q, want %q", in, got, want)
		}
	}
}
