package webhooks

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// stripeFixture reads a Stripe event fixture of the mapping tests.
func stripeFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "mapping", "testdata", "stripe", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stripeEvents posts each fixture, signed, to the real Stripe handler on a
// real BoltDB and returns the stored Stripe events by type.
func stripeEvents(t *testing.T, fixtures ...string) map[mapping.Type][]mapping.Event {
	t.Helper()
	db := boltForTest(t)
	s := &Stripe{Deps: testDeps(db, nil), Secrets: []string{secretA}, AppID: "com.example.app"}
	for _, f := range fixtures {
		body := stripeFixture(t, f)
		rec := post(t, s.Handle, body, map[string]string{"Stripe-Signature": sign(body, secretA, testNow)})
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: got %d %s, want 200", f, rec.Code, rec.Body)
		}
	}
	p, err := db.Events(store.EventFilter{Source: mapping.SourceStripe, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	out := map[mapping.Type][]mapping.Event{}
	for _, e := range p.Events {
		out[e.Type] = append(out[e.Type], e)
	}
	return out
}

// revenueOf sums the revenue of events, in micros, requiring USD.
func revenueOf(t *testing.T, evs map[mapping.Type][]mapping.Event) (int64, int) {
	t.Helper()
	var sum int64
	n := 0
	for _, list := range evs {
		for _, e := range list {
			if e.Revenue == nil {
				continue
			}
			if e.Revenue.Currency != "USD" {
				t.Fatalf("%s in %s, want USD", e.Type, e.Revenue.Currency)
			}
			sum += e.Revenue.AmountMicros
			n++
		}
	}
	return sum, n
}

// Issue 13, item 1: without the subscription's state (gateway installed
// mid-trial), the conversion invoice arriving before the trialing -> active
// update was one subscription_renewed and one trial_converted, each with the
// amount: twice the money for one payment.
func TestStripeNoStateConversionCountedOnce(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fixtures  []string
		converted int
	}{
		// Nothing tells the invoice that a trial ended: a renewal with
		// previous_period=unknown, and the update adds nothing.
		{"invoice first", []string{"invoice_a_paid_cycle", "sub_a_updated_trial_active", "invoice_a_paid_cycle2"}, 0},
		{"update first", []string{"sub_a_updated_trial_active", "invoice_a_paid_cycle", "invoice_a_paid_cycle2"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := stripeEvents(t, tc.fixtures...)
			if sum, n := revenueOf(t, evs); sum != 2*9_990_000 || n != 2 {
				t.Errorf("%d revenue events summing %d micros, want 2 (one per paid invoice) summing %d: %+v", n, sum, 2*9_990_000, evs)
			}
			if got := len(evs[mapping.TrialConverted]); got != tc.converted {
				t.Errorf("%d trial_converted, want %d", got, tc.converted)
			}
			if tc.converted == 0 {
				r := evs[mapping.SubscriptionRenewed]
				unknown := 0
				for _, e := range r {
					if e.Attributes["previous_period"] == "unknown" {
						unknown++
					}
				}
				if len(r) != 2 || unknown != 1 {
					t.Errorf("renewals %+v; want two, the first with previous_period=unknown", r)
				}
			}
		})
	}
}

// Issue 13, item 2: a trial that converts on a 0-amount invoice (100 %
// coupon) left the conversion marker set, so the first paid renewal was
// dropped as a repeat of the conversion. The coupon on the subscription
// also makes its list price wrong, so the invoice reports the conversion.
func TestStripeFreeConversionThenPaidRenewal(t *testing.T) {
	for _, order := range [][]string{
		{"sub_a_created_trialing", "sub_a_updated_trial_active_coupon", "invoice_a_paid_cycle_free", "invoice_a_paid_cycle2"},
		{"sub_a_created_trialing", "invoice_a_paid_cycle_free", "sub_a_updated_trial_active_coupon", "invoice_a_paid_cycle2"},
	} {
		t.Run(order[1]+" first", func(t *testing.T) {
			evs := stripeEvents(t, order...)
			conv, ren := evs[mapping.TrialConverted], evs[mapping.SubscriptionRenewed]
			if len(conv) != 1 || conv[0].Revenue != nil {
				t.Errorf("trial_converted %+v, want one without revenue (nothing was charged)", conv)
			}
			if len(ren) != 1 || ren[0].Revenue == nil || *ren[0].Revenue != (mapping.Revenue{AmountMicros: 9_990_000, Currency: "USD"}) {
				t.Errorf("subscription_renewed %+v, want one with USD 9.99", ren)
			}
		})
	}
}

// A 0-amount conversion invoice without a coupon on the subscription (a
// credit balance paid it): the update reported the list amount, and the
// paid renewal after it must still reach the store.
func TestStripeCreditBalanceConversionThenPaidRenewal(t *testing.T) {
	evs := stripeEvents(t, "sub_a_created_trialing", "sub_a_updated_trial_active", "invoice_a_paid_cycle_free", "invoice_a_paid_cycle2")
	if conv, ren := evs[mapping.TrialConverted], evs[mapping.SubscriptionRenewed]; len(conv) != 1 || len(ren) != 1 || ren[0].Revenue == nil {
		t.Errorf("trial_converted %+v, subscription_renewed %+v; want one of each, the renewal with revenue", conv, ren)
	}
}
