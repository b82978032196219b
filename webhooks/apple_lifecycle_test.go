package webhooks

import (
	"testing"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/webhooks/appletest"
)

// Found by the lifecycle simulator: a free trial whose first renewal
// failed (billing retry or grace period) and was then recovered
// (DID_RENEW/BILLING_RECOVERY) was billing_recovered, so the trial never
// converted; and a subscription first seen through DID_FAIL_TO_RENEW kept
// no period, so its recovery could not tell. The recovery out of a trial is
// trial_converted with the recovered price and recovered=true.
func TestAppleTrialRecoveredIsConversion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sent   []map[string]any
		starts int
	}{
		{"with the trial's start", []map[string]any{
			testNotification("uuid-sub", "SUBSCRIBED", "INITIAL_BUY", testTrialTxn(), nil),
			testNotification("uuid-fail", "DID_FAIL_TO_RENEW", "GRACE_PERIOD", testTrialTxn(), nil),
			testNotification("uuid-recovered", "DID_RENEW", "BILLING_RECOVERY", testTxn(nil), nil),
		}, 1},
		{"first seen through the billing failure", []map[string]any{
			testNotification("uuid-fail", "DID_FAIL_TO_RENEW", "", testTrialTxn(), nil),
			testNotification("uuid-recovered", "DID_RENEW", "BILLING_RECOVERY", testTxn(nil), nil),
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := appletest.NewPKI(t)
			db := boltForTest(t)
			a := newAppleForTest(t, db, appleVerifierConfig(pki))
			for _, n := range tc.sent {
				if rec := post(t, a.Handle, appleRequest(signApple(pki, n)), nil); rec.Code != 200 {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			var conv []mapping.Event
			n := map[mapping.Type]int{}
			for _, e := range countEvents(t, db, mapping.SourceApple) {
				n[e.Type]++
				if e.Type == mapping.TrialConverted {
					conv = append(conv, e)
				}
			}
			if n[mapping.BillingRecovered] != 0 || n[mapping.TrialStarted] != tc.starts || n[mapping.BillingIssue] != 1 {
				t.Errorf("events %v; want no billing_recovered, %d trial_started, one billing_issue", n, tc.starts)
			}
			if len(conv) != 1 || conv[0].Revenue == nil || *conv[0].Revenue != (mapping.Revenue{AmountMicros: 9_990_000, Currency: "USD"}) || conv[0].Attributes["recovered"] != "true" {
				t.Errorf("trial_converted %+v; want one of USD 9.99 with recovered=true", conv)
			}
		})
	}
}
