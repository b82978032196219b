package mapping

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Apple test fixtures. The decoded bodies built here are also written to
// testdata/apple/in/ (golden, -update) so that the webhook tests can sign
// them and check that the full HTTP path stores exactly these bodies.
const (
	appleBundle  = "com.example.app"
	appleAppID   = int64(1234567890)
	appleUser    = "6f1c2a9e-5b7d-4c3e-9a1f-2b8d7e6c5a40"
	appleOrigTxn = "2000000000000001"
)

var appleReceived = time.Date(2026, 11, 29, 12, 0, 5, 0, time.UTC)

func ams(s string) int64 {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

// override applies over to m: a nil value deletes the key.
func override(m, over map[string]any) map[string]any {
	for k, v := range over {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func appleTxn(over map[string]any) map[string]any {
	return override(map[string]any{
		"transactionId": "2000000000000002", "originalTransactionId": appleOrigTxn, "webOrderLineItemId": "2000000000000003",
		"bundleId": appleBundle, "productId": "pro_monthly", "subscriptionGroupIdentifier": "21000001",
		"purchaseDate": ams("2026-11-28T10:00:00Z"), "originalPurchaseDate": ams("2026-11-21T10:00:00Z"),
		"expiresDate": ams("2026-12-28T10:00:00Z"), "quantity": 1, "type": "Auto-Renewable Subscription",
		"appAccountToken": appleUser, "inAppOwnershipType": "PURCHASED", "signedDate": ams("2026-11-29T12:00:00Z"),
		"environment": "Production", "transactionReason": "RENEWAL", "storefront": "USA", "storefrontId": "143441",
		"price": 9990, "currency": "USD", "appTransactionId": "704289572311559744",
	}, over)
}

func appleTrialTxn(over map[string]any) map[string]any {
	return appleTxn(override(map[string]any{
		"transactionId": appleOrigTxn, "purchaseDate": ams("2026-11-21T10:00:00Z"), "expiresDate": ams("2026-11-28T10:00:00Z"),
		"transactionReason": "PURCHASE", "offerType": 1, "offerDiscountType": "FREE_TRIAL", "offerPeriod": "P1W", "price": 0,
	}, over))
}

func appleRenewal(over map[string]any) map[string]any {
	return override(map[string]any{
		"originalTransactionId": appleOrigTxn, "productId": "pro_monthly", "autoRenewProductId": "pro_monthly",
		"autoRenewStatus": 1, "signedDate": ams("2026-11-29T12:00:00Z"), "environment": "Production",
		"recentSubscriptionStartDate": ams("2026-11-21T10:00:00Z"), "renewalDate": ams("2026-12-28T10:00:00Z"),
		"renewalPrice": 9990, "currency": "USD", "appAccountToken": appleUser, "appTransactionId": "704289572311559744",
	}, over)
}

func appleData(txn, ren map[string]any) map[string]any {
	d := map[string]any{"appAppleId": appleAppID, "bundleId": appleBundle, "bundleVersion": "42", "environment": "Production", "status": 1}
	if txn != nil {
		d["transactionInfo"] = txn
	}
	if ren != nil {
		d["renewalInfo"] = ren
	}
	return d
}

// appleUUID derives a stable notificationUUID from a case name.
func appleUUID(name string) string {
	h := sha256.Sum256([]byte(name))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func appleBody(name, typ, sub string, obj string, v map[string]any) map[string]any {
	b := map[string]any{"notificationType": typ, "notificationUUID": appleUUID(name), "version": "2.0", "signedDate": ams("2026-11-29T12:00:00Z")}
	if sub != "" {
		b["subtype"] = sub
	}
	if v != nil {
		b[obj] = v
	}
	return b
}

// appleCase is one notification of the type x subtype table.
type appleCase struct {
	name  string
	body  map[string]any
	state *State            // prior state; nil for none
	meta  map[string]string // Meta set by the webhook
}

// appleCases covers every notificationType and subtype. Names ending in
// "_with_state" map against a prior state; the others are stateless, which
// is what a fresh gateway sees.
func appleCases() []appleCase {
	trialState := &State{Key: AppleStateKey(appleOrigTxn), Status: "active", ProductID: "pro_monthly", InTrial: true, TrialUsed: true,
		AppUserID: appleUser, Values: map[string]string{"period_txn": appleOrigTxn, "period_type": "trial_started", "period_purchase": fmt.Sprint(ams("2026-11-21T10:00:00Z")), "offer": "free_trial", "auto_renew": "on", "auto_renew_at": fmt.Sprint(ams("2026-11-21T10:00:00Z"))}}
	paidState := &State{Key: AppleStateKey(appleOrigTxn), Status: "active", ProductID: "pro_monthly", AppUserID: appleUser,
		Values: map[string]string{"period_txn": "2000000000000000", "period_type": "subscription_started", "period_purchase": fmt.Sprint(ams("2026-10-28T10:00:00Z")), "auto_renew": "on", "auto_renew_at": fmt.Sprint(ams("2026-10-28T10:00:00Z"))}}
	data := func(txn, ren map[string]any) map[string]any { return appleData(txn, ren) }
	c := func(name, typ, sub string, d map[string]any) appleCase {
		return appleCase{name: name, body: appleBody(name, typ, sub, "data", d)}
	}
	cases := []appleCase{
		c("subscribed_initial_buy_free_trial", "SUBSCRIBED", "INITIAL_BUY", data(appleTrialTxn(nil), appleRenewal(nil))),
		c("subscribed_initial_buy_paid", "SUBSCRIBED", "INITIAL_BUY", data(appleTxn(map[string]any{"transactionId": appleOrigTxn, "transactionReason": "PURCHASE"}), appleRenewal(nil))),
		c("subscribed_initial_buy_pay_up_front", "SUBSCRIBED", "INITIAL_BUY", data(appleTxn(map[string]any{"transactionId": appleOrigTxn, "transactionReason": "PURCHASE", "offerType": 1, "offerDiscountType": "PAY_UP_FRONT", "offerPeriod": "P3M", "price": 19990}), appleRenewal(nil))),
		c("subscribed_initial_buy_family_shared", "SUBSCRIBED", "INITIAL_BUY", data(appleTxn(map[string]any{"transactionId": appleOrigTxn, "transactionReason": "PURCHASE", "inAppOwnershipType": "FAMILY_SHARED", "appAccountToken": nil}), appleRenewal(map[string]any{"appAccountToken": nil}))),
		c("subscribed_initial_buy_jpy", "SUBSCRIBED", "INITIAL_BUY", data(appleTxn(map[string]any{"transactionId": appleOrigTxn, "transactionReason": "PURCHASE", "price": 1200000, "currency": "JPY", "storefront": "JPN"}), appleRenewal(nil))),
		c("subscribed_resubscribe", "SUBSCRIBED", "RESUBSCRIBE", data(appleTxn(map[string]any{"transactionReason": "PURCHASE", "offerType": 4, "offerDiscountType": "PAY_AS_YOU_GO", "offerIdentifier": "winback_50", "offerPeriod": "P1M", "price": 4990}), appleRenewal(nil))),
		{name: "did_renew_after_trial_with_state", body: appleBody("did_renew_after_trial_with_state", "DID_RENEW", "", "data", data(appleTxn(nil), appleRenewal(nil))), state: trialState},
		{name: "did_renew_with_state", body: appleBody("did_renew_with_state", "DID_RENEW", "", "data", data(appleTxn(nil), appleRenewal(nil))), state: paidState},
		c("did_renew_without_state", "DID_RENEW", "", data(appleTxn(nil), appleRenewal(nil))),
		{name: "did_renew_history_says_trial", body: appleBody("did_renew_history_says_trial", "DID_RENEW", "", "data", data(appleTxn(nil), appleRenewal(nil))), meta: map[string]string{AppleMetaPreviousOffer: "free_trial"}},
		{name: "did_renew_history_says_paid", body: appleBody("did_renew_history_says_paid", "DID_RENEW", "", "data", data(appleTxn(nil), appleRenewal(nil))), meta: map[string]string{AppleMetaPreviousOffer: "paid"}},
		c("did_renew_billing_recovery", "DID_RENEW", "BILLING_RECOVERY", data(appleTxn(nil), appleRenewal(nil))),
		c("did_change_renewal_status_auto_renew_disabled_in_trial", "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED", data(appleTrialTxn(map[string]any{"expiresDate": ams("2026-12-01T10:00:00Z")}), appleRenewal(map[string]any{"autoRenewStatus": 0}))),
		c("did_change_renewal_status_auto_renew_disabled", "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED", data(appleTxn(nil), appleRenewal(map[string]any{"autoRenewStatus": 0}))),
		{name: "did_change_renewal_status_auto_renew_disabled_trial_with_state", body: appleBody("did_change_renewal_status_auto_renew_disabled_trial_with_state", "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED", "data", data(appleTrialTxn(nil), appleRenewal(map[string]any{"autoRenewStatus": 0}))), state: trialState},
		c("did_change_renewal_status_auto_renew_enabled", "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_ENABLED", data(appleTxn(nil), appleRenewal(nil))),
		c("did_fail_to_renew", "DID_FAIL_TO_RENEW", "", data(appleTxn(nil), appleRenewal(map[string]any{"isInBillingRetryPeriod": true, "expirationIntent": 2}))),
		c("did_fail_to_renew_grace_period", "DID_FAIL_TO_RENEW", "GRACE_PERIOD", data(appleTxn(nil), appleRenewal(map[string]any{"isInBillingRetryPeriod": true, "gracePeriodExpiresDate": ams("2026-12-04T10:00:00Z")}))),
		c("expired_voluntary", "EXPIRED", "VOLUNTARY", data(appleTxn(nil), appleRenewal(map[string]any{"autoRenewStatus": 0, "expirationIntent": 1}))),
		c("expired_billing_retry", "EXPIRED", "BILLING_RETRY", data(appleTxn(nil), appleRenewal(map[string]any{"autoRenewStatus": 0, "expirationIntent": 2}))),
		c("expired_price_increase", "EXPIRED", "PRICE_INCREASE", data(appleTxn(nil), appleRenewal(map[string]any{"autoRenewStatus": 0, "expirationIntent": 3}))),
		c("expired_product_not_for_sale", "EXPIRED", "PRODUCT_NOT_FOR_SALE", data(appleTxn(nil), appleRenewal(map[string]any{"autoRenewStatus": 0, "expirationIntent": 4}))),
		c("grace_period_expired", "GRACE_PERIOD_EXPIRED", "", data(appleTxn(nil), appleRenewal(nil))),
		c("refund", "REFUND", "", data(appleTxn(map[string]any{"revocationDate": ams("2026-11-29T11:00:00Z"), "revocationReason": 1, "revocationType": "REFUND_FULL", "revocationPercentage": 100000}), appleRenewal(nil))),
		c("refund_prorated", "REFUND", "", data(appleTxn(map[string]any{"revocationDate": ams("2026-11-29T11:00:00Z"), "revocationReason": 0, "revocationType": "REFUND_PRORATED", "revocationPercentage": 67932}), appleRenewal(nil))),
		c("revoke", "REVOKE", "", data(appleTxn(map[string]any{"inAppOwnershipType": "FAMILY_SHARED", "revocationDate": ams("2026-11-29T11:00:00Z"), "revocationType": "FAMILY_REVOKE", "appAccountToken": nil}), appleRenewal(map[string]any{"appAccountToken": nil}))),
		c("did_change_renewal_pref_upgrade", "DID_CHANGE_RENEWAL_PREF", "UPGRADE", data(appleTxn(map[string]any{"transactionId": "2000000000000009", "productId": "pro_yearly", "transactionReason": "PURCHASE", "price": 59990, "expiresDate": ams("2027-11-28T10:00:00Z")}), appleRenewal(map[string]any{"productId": "pro_yearly", "autoRenewProductId": "pro_yearly"}))),
		c("did_change_renewal_pref_downgrade", "DID_CHANGE_RENEWAL_PREF", "DOWNGRADE", data(appleTxn(nil), appleRenewal(map[string]any{"autoRenewProductId": "basic_monthly"}))),
		c("did_change_renewal_pref", "DID_CHANGE_RENEWAL_PREF", "", data(appleTxn(nil), appleRenewal(nil))),
		c("one_time_charge", "ONE_TIME_CHARGE", "", data(appleTxn(map[string]any{"transactionId": "2000000000000100", "originalTransactionId": "2000000000000100", "productId": "coins_500", "type": "Consumable", "quantity": 2, "transactionReason": "PURCHASE", "price": 4990, "currency": "EUR", "storefront": "DEU", "expiresDate": nil, "webOrderLineItemId": nil, "subscriptionGroupIdentifier": nil}), nil)),
		c("offer_redeemed_initial_buy", "OFFER_REDEEMED", "INITIAL_BUY", data(appleTxn(map[string]any{"transactionId": appleOrigTxn, "transactionReason": "PURCHASE", "offerType": 3, "offerDiscountType": "FREE_TRIAL", "offerIdentifier": "SPRING", "offerPeriod": "P1M", "price": 0}), appleRenewal(nil))),
		c("offer_redeemed_resubscribe", "OFFER_REDEEMED", "RESUBSCRIBE", data(appleTxn(map[string]any{"transactionReason": "PURCHASE", "offerType": 2, "offerDiscountType": "PAY_AS_YOU_GO", "offerIdentifier": "promo_half", "offerPeriod": "P1M", "price": 4990}), appleRenewal(nil))),
		c("offer_redeemed_upgrade", "OFFER_REDEEMED", "UPGRADE", data(appleTxn(map[string]any{"transactionId": "2000000000000010", "productId": "pro_yearly", "transactionReason": "PURCHASE", "offerType": 3, "offerDiscountType": "PAY_UP_FRONT", "offerIdentifier": "YEAR50", "price": 29990}), appleRenewal(map[string]any{"autoRenewProductId": "pro_yearly"}))),
		c("offer_redeemed_downgrade", "OFFER_REDEEMED", "DOWNGRADE", data(appleTxn(nil), appleRenewal(map[string]any{"autoRenewProductId": "basic_monthly", "offerType": 3, "offerIdentifier": "BASIC"}))),
		c("offer_redeemed", "OFFER_REDEEMED", "", data(appleTxn(nil), appleRenewal(map[string]any{"offerType": 2, "offerIdentifier": "promo_half"}))),
		{name: "test", body: appleBody("test", "TEST", "", "data", map[string]any{"bundleId": appleBundle, "environment": "Production", "appAppleId": appleAppID})},
		c("consumption_request", "CONSUMPTION_REQUEST", "", override(data(appleTxn(nil), nil), map[string]any{"consumptionRequestReason": "UNINTENDED_PURCHASE"})),
		c("price_increase_pending", "PRICE_INCREASE", "PENDING", data(appleTxn(nil), appleRenewal(map[string]any{"priceIncreaseStatus": 0, "renewalPrice": 12990}))),
		c("price_increase_accepted", "PRICE_INCREASE", "ACCEPTED", data(appleTxn(nil), appleRenewal(map[string]any{"priceIncreaseStatus": 1, "renewalPrice": 12990}))),
		c("renewal_extended", "RENEWAL_EXTENDED", "", data(appleTxn(map[string]any{"expiresDate": ams("2027-01-04T10:00:00Z")}), appleRenewal(nil))),
		{name: "renewal_extension_summary", body: appleBody("renewal_extension_summary", "RENEWAL_EXTENSION", "SUMMARY", "summary", map[string]any{
			"environment": "Production", "appAppleId": appleAppID, "bundleId": appleBundle, "productId": "pro_monthly",
			"requestIdentifier": "8a4b7d1e-1d0c-4b6e-9d7a-3c2f1e0d9b8a", "storefrontCountryCodes": []string{"USA", "CAN"}, "succeededCount": 120, "failedCount": 2})},
		c("renewal_extension_failure", "RENEWAL_EXTENSION", "FAILURE", data(appleTxn(nil), appleRenewal(nil))),
		c("refund_declined", "REFUND_DECLINED", "", data(appleTxn(nil), nil)),
		c("refund_reversed", "REFUND_REVERSED", "", data(appleTxn(nil), appleRenewal(nil))),
		{name: "external_purchase_token_unreported", body: appleBody("external_purchase_token_unreported", "EXTERNAL_PURCHASE_TOKEN", "UNREPORTED", "externalPurchaseToken", map[string]any{
			"externalPurchaseId": "b2158121-7af9-49d4-9561-1f588205523e", "tokenCreationDate": ams("2026-11-29T09:00:00Z"), "appAppleId": appleAppID, "bundleId": appleBundle})},
		c("metadata_update", "METADATA_UPDATE", "", data(appleTxn(nil), appleRenewal(nil))),
		c("migration", "MIGRATION", "", data(appleTxn(nil), appleRenewal(nil))),
		c("price_change", "PRICE_CHANGE", "", data(appleTxn(nil), appleRenewal(nil))),
		{name: "rescind_consent", body: appleBody("rescind_consent", "RESCIND_CONSENT", "", "appData", map[string]any{
			"appAppleId": appleAppID, "bundleId": appleBundle, "environment": "Production",
			"appTransactionInfo": map[string]any{"bundleId": appleBundle, "receiptType": "Production", "appTransactionId": "704289572311559744", "receiptCreationDate": ams("2026-11-20T10:00:00Z")}})},
		c("unknown_type_kept", "SOMETHING_NEW", "SOMEHOW", override(data(appleTxn(map[string]any{"brandNewField": "kept"}), nil), map[string]any{"futureField": 7})),
	}
	return cases
}

// memStates is an in-memory States that applies results like the store.
type memStates map[string]State

func (m memStates) State(key string) (State, bool) {
	s, ok := m[key]
	return s, ok
}

func (m memStates) apply(r Result) {
	for _, s := range r.States {
		m[s.Key] = s
	}
}

func appleNotification(t *testing.T, name string, body map[string]any, meta map[string]string) *Notification {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	var p AppleNotification
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	env := AppleCanonicalEnvironment(p.AppleEnvironment())
	return &Notification{Source: SourceApple, Key: p.NotificationUUID, Type: p.TypeKey(), AppID: appleBundle, Environment: env, ReceivedAt: appleReceived, Body: b, Meta: meta}
}

// TestAppleMapping maps one notification of every type and subtype and
// compares the canonical output with testdata/apple/<name>.golden.
func TestAppleMapping(t *testing.T) {
	for _, tc := range appleCases() {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, "apple/in/"+tc.name, tc.body)
			st := memStates{}
			if tc.state != nil {
				st[tc.state.Key] = *tc.state
			}
			n := appleNotification(t, tc.name, tc.body, tc.meta)
			res, err := Map(n, st)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			for _, e := range res.Events {
				if !e.Type.Valid() {
					t.Errorf("event type %q is not canonical", e.Type)
				}
				if e.Revenue != nil && e.Type == Refund && e.Revenue.AmountMicros >= 0 {
					t.Errorf("refund revenue %d is not negative", e.Revenue.AmountMicros)
				}
			}
			golden(t, "apple/"+tc.name, res)
		})
	}
}

// TestAppleEveryTypeCovered fails when a documented type or subtype has no
// fixture.
func TestAppleEveryTypeCovered(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range appleCases() {
		seen[fmt.Sprint(tc.body["notificationType"])] = true
		if s, ok := tc.body["subtype"]; ok {
			seen[fmt.Sprint(tc.body["notificationType"])+"/"+fmt.Sprint(s)] = true
		}
	}
	want := []string{
		"SUBSCRIBED/INITIAL_BUY", "SUBSCRIBED/RESUBSCRIBE", "DID_RENEW", "DID_RENEW/BILLING_RECOVERY",
		"DID_CHANGE_RENEWAL_STATUS/AUTO_RENEW_DISABLED", "DID_CHANGE_RENEWAL_STATUS/AUTO_RENEW_ENABLED",
		"DID_FAIL_TO_RENEW", "DID_FAIL_TO_RENEW/GRACE_PERIOD", "EXPIRED/VOLUNTARY", "EXPIRED/BILLING_RETRY",
		"EXPIRED/PRICE_INCREASE", "EXPIRED/PRODUCT_NOT_FOR_SALE", "GRACE_PERIOD_EXPIRED", "REFUND", "REVOKE",
		"DID_CHANGE_RENEWAL_PREF/UPGRADE", "DID_CHANGE_RENEWAL_PREF/DOWNGRADE", "DID_CHANGE_RENEWAL_PREF",
		"ONE_TIME_CHARGE", "OFFER_REDEEMED/INITIAL_BUY", "OFFER_REDEEMED/RESUBSCRIBE", "OFFER_REDEEMED/UPGRADE",
		"OFFER_REDEEMED/DOWNGRADE", "OFFER_REDEEMED", "TEST", "CONSUMPTION_REQUEST", "PRICE_INCREASE/PENDING",
		"PRICE_INCREASE/ACCEPTED", "RENEWAL_EXTENDED", "RENEWAL_EXTENSION/SUMMARY", "RENEWAL_EXTENSION/FAILURE",
		"REFUND_DECLINED", "REFUND_REVERSED", "EXTERNAL_PURCHASE_TOKEN/UNREPORTED", "METADATA_UPDATE", "MIGRATION",
		"PRICE_CHANGE", "RESCIND_CONSENT",
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no fixture for %s", w)
		}
	}
}

// TestAppleTrialConversionState: a free trial, then its renewal, is
// trial_started then trial_converted with revenue; the same renewal re-sent
// under a new notificationUUID yields the same event id and the same type.
func TestAppleTrialConversionState(t *testing.T) {
	st := memStates{}
	run := func(name, typ, sub string, txn map[string]any) Result {
		t.Helper()
		res, err := Apple(appleNotification(t, name, appleBody(name, typ, sub, "data", appleData(txn, appleRenewal(nil))), nil), st)
		if err != nil {
			t.Fatal(err)
		}
		st.apply(res)
		return res
	}
	r1 := run("sub", "SUBSCRIBED", "INITIAL_BUY", appleTrialTxn(nil))
	if len(r1.Events) != 1 || r1.Events[0].Type != TrialStarted || r1.Events[0].Revenue != nil {
		t.Fatalf("SUBSCRIBED: got %+v, want one trial_started without revenue", r1.Events)
	}
	r2 := run("renew", "DID_RENEW", "", appleTxn(nil))
	if len(r2.Events) != 1 || r2.Events[0].Type != TrialConverted {
		t.Fatalf("DID_RENEW: got %+v, want trial_converted", r2.Events)
	}
	if got := r2.Events[0].Revenue; got == nil || *got != (Revenue{AmountMicros: 9990000, Currency: "USD"}) {
		t.Errorf("trial_converted revenue = %+v, want 9.99 USD", got)
	}
	r3 := run("renew-again-under-new-uuid", "DID_RENEW", "", appleTxn(nil))
	if len(r3.Events) != 1 || r3.Events[0].ID != r2.Events[0].ID || r3.Events[0].Type != TrialConverted {
		t.Fatalf("re-sent DID_RENEW: got %+v, want the same trial_converted id %s", r3.Events, r2.Events[0].ID)
	}
	r4 := run("next-renewal", "DID_RENEW", "", appleTxn(map[string]any{"transactionId": "2000000000000005", "purchaseDate": ams("2026-12-28T10:00:00Z")}))
	if len(r4.Events) != 1 || r4.Events[0].Type != SubscriptionRenewed {
		t.Fatalf("second renewal: got %+v, want subscription_renewed", r4.Events)
	}
	// An old period delivered late maps to its own id and never rolls the
	// state back into the trial.
	r5 := run("late-initial-buy", "SUBSCRIBED", "INITIAL_BUY", appleTrialTxn(nil))
	if len(r5.Events) != 1 || r5.Events[0].ID != r1.Events[0].ID {
		t.Fatalf("late SUBSCRIBED: got %+v, want the first trial_started id", r5.Events)
	}
	if s := st[AppleStateKey(appleOrigTxn)]; s.InTrial || s.Value("period_txn") != "2000000000000005" {
		t.Errorf("state after a late old period: in_trial=%v period_txn=%s, want false and the newest", s.InTrial, s.Value("period_txn"))
	}
}

// TestAppleRenewalStatusOncePerChange: auto-renew off twice is one
// cancellation; a change older than the recorded one is ignored.
func TestAppleRenewalStatusOncePerChange(t *testing.T) {
	st := memStates{}
	send := func(name, sub string, signed string) Result {
		t.Helper()
		b := appleBody(name, "DID_CHANGE_RENEWAL_STATUS", sub, "data", appleData(appleTxn(nil), appleRenewal(map[string]any{"autoRenewStatus": map[bool]int{true: 1, false: 0}[sub == "AUTO_RENEW_ENABLED"], "signedDate": ams(signed)})))
		b["signedDate"] = ams(signed)
		res, err := Apple(appleNotification(t, name, b, nil), st)
		if err != nil {
			t.Fatal(err)
		}
		st.apply(res)
		return res
	}
	tests := []struct {
		name, sub, at string
		want          Type // "" = ignored
	}{
		{"off", "AUTO_RENEW_DISABLED", "2026-11-29T10:00:00Z", SubscriptionCancelled},
		{"off-again", "AUTO_RENEW_DISABLED", "2026-11-29T10:05:00Z", ""},
		{"on", "AUTO_RENEW_ENABLED", "2026-11-29T11:00:00Z", SubscriptionUncancelled},
		{"on-again", "AUTO_RENEW_ENABLED", "2026-11-29T11:01:00Z", ""},
		{"stale-off", "AUTO_RENEW_DISABLED", "2026-11-29T10:30:00Z", ""},
	}
	for _, tc := range tests {
		res := send(tc.name, tc.sub, tc.at)
		switch {
		case tc.want == "" && len(res.Events) != 0:
			t.Errorf("%s: got %v, want no event", tc.name, res.Events[0].Type)
		case tc.want != "" && (len(res.Events) != 1 || res.Events[0].Type != tc.want):
			t.Errorf("%s: got %+v, want %s", tc.name, res.Events, tc.want)
		}
	}
}

func TestAppleMalformed(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"not json", `{"notificationType":`},
		{"no uuid", `{"notificationType":"DID_RENEW"}`},
		{"no type", `{"notificationUUID":"u"}`},
		{"txn without id", `{"notificationType":"DID_RENEW","notificationUUID":"u","data":{"transactionInfo":{"originalTransactionId":"1"}}}`},
		{"renewal without txn", `{"notificationType":"DID_RENEW","notificationUUID":"u","data":{"bundleId":"b"}}`},
		{"bad currency", `{"notificationType":"ONE_TIME_CHARGE","notificationUUID":"u","data":{"transactionInfo":{"transactionId":"1","price":990,"currency":"XXX"}}}`},
		{"bad refund currency", `{"notificationType":"REFUND","notificationUUID":"u","data":{"transactionInfo":{"transactionId":"1","price":990,"currency":"??"}}}`},
		{"bad timestamp", `{"notificationType":"DID_RENEW","notificationUUID":"u","signedDate":"soon"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Apple(&Notification{Source: SourceApple, Key: "u", Body: []byte(tc.body), ReceivedAt: appleReceived}, memStates{})
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	// Every transaction-bearing type needs its transaction.
	for _, typ := range []string{"SUBSCRIBED/INITIAL_BUY", "DID_RENEW", "DID_CHANGE_RENEWAL_STATUS/AUTO_RENEW_DISABLED", "DID_CHANGE_RENEWAL_PREF/UPGRADE", "DID_FAIL_TO_RENEW", "EXPIRED/VOLUNTARY", "REFUND", "REVOKE", "ONE_TIME_CHARGE"} {
		tt, sub, _ := strings.Cut(typ, "/")
		body := fmt.Sprintf(`{"notificationType":%q,"subtype":%q,"notificationUUID":"u","data":{"bundleId":"b"}}`, tt, sub)
		if _, err := Apple(&Notification{Source: SourceApple, Key: "u", Body: []byte(body)}, memStates{}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s without transaction: got %v, want ErrMalformed", typ, err)
		}
	}
}

func TestAppleHelpers(t *testing.T) {
	var m AppleMillis
	if err := json.Unmarshal([]byte(`1697679936049.7297`), &m); err != nil || m != 1697679936049 {
		t.Errorf("fractional ms: got %d, %v", m, err)
	}
	if err := json.Unmarshal([]byte(`null`), &m); err != nil || m != 0 || !m.Time().IsZero() {
		t.Errorf("null ms: got %d, %v", m, err)
	}
	for in, want := range map[string]string{"USA": "US", "deu": "DE", "XKS": "XK", "ZWE": "ZW", "ABW": "AW", "QQQ": "QQQ", "US": "US"} {
		if got := countryAlpha2(in); got != want {
			t.Errorf("countryAlpha2(%q) = %q, want %q", in, got, want)
		}
	}
	for _, tc := range []struct{ micros, pct, want int64 }{{-9990000, 67932, -6786407}, {-9990000, 100000, -9990000}, {1000, 50000, 500}, {-5, 50000, -3}} {
		if got := prorate(tc.micros, tc.pct); got != tc.want {
			t.Errorf("prorate(%d, %d) = %d, want %d", tc.micros, tc.pct, got, tc.want)
		}
	}
	one, zero := 1, int64(0)
	offers := []struct {
		t    AppleTransaction
		want string
	}{
		{AppleTransaction{}, ""},
		{AppleTransaction{OfferType: &one, Price: &zero}, "free_trial"},
		{AppleTransaction{OfferType: &one}, "introductory"},
		{AppleTransaction{OfferDiscountType: "FREE_TRIAL"}, "free_trial"},
		{AppleTransaction{OfferType: new(int)}, "offer_type_0"},
	}
	for _, o := range offers {
		if got := o.t.Offer(); got != o.want {
			t.Errorf("Offer(%+v) = %q, want %q", o.t, got, o.want)
		}
	}
	p := AppleNotification{ExternalPurchaseToken: &AppleExternalPurchaseToken{ExternalPurchaseID: "SANDBOX_1", BundleID: "b", AppAppleID: 3}}
	if p.AppleEnvironment() != "Sandbox" || p.BundleID() != "b" || p.AppAppleID() != 3 {
		t.Errorf("external purchase token: env %q bundle %q id %d", p.AppleEnvironment(), p.BundleID(), p.AppAppleID())
	}
	if (&AppleNotification{}).BundleID() != "" || (&AppleNotification{}).AppAppleID() != 0 {
		t.Error("empty notification has an app")
	}
}

// TestAppleFixturesOnDisk checks that every input fixture on disk belongs to
// a case (stale files would mislead the webhook tests).
func TestAppleFixturesOnDisk(t *testing.T) {
	names := map[string]bool{}
	for _, tc := range appleCases() {
		names[tc.name] = true
	}
	files, err := filepath.Glob(filepath.Join("testdata", "apple", "in", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 && !*update {
		t.Fatal("no fixtures in testdata/apple/in (run go test ./mapping -update)")
	}
	for _, f := range files {
		n := strings.TrimSuffix(filepath.Base(f), ".golden")
		if !names[n] {
			if *update {
				_ = os.Remove(f)
				continue
			}
			t.Errorf("fixture %s has no case", f)
		}
	}
}
