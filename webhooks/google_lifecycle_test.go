package webhooks

import (
	"testing"
	"time"

	"google.golang.org/api/androidpublisher/v3"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/webhooks/googletest"
)

// planSubscription is a paid, active subscription on basePlan of product,
// with the given order, optionally replacing linked.
func planSubscription(product, basePlan, orderID, linked string, price int64) *androidpublisher.SubscriptionPurchaseV2 {
	s := subscription(orderID, false)
	s.LinkedPurchaseToken = linked
	li := s.LineItems[0]
	li.ProductId = product
	li.OfferDetails = &androidpublisher.OfferDetails{BasePlanId: basePlan}
	li.AutoRenewingPlan.RecurringPrice = money(price, "EUR")
	return s
}

// replacedSubscription is what subscriptionsv2.get answers for a token that a
// plan change replaced: expired, canceled by replacement.
func replacedSubscription(product, basePlan, orderID string) *androidpublisher.SubscriptionPurchaseV2 {
	s := planSubscription(product, basePlan, orderID, "", 4_990_000)
	s.SubscriptionState = "SUBSCRIPTION_STATE_EXPIRED"
	s.CanceledStateContext = &androidpublisher.CanceledStateContext{ReplacementCancellation: &androidpublisher.ReplacementCancellation{}}
	s.LineItems[0].AutoRenewingPlan.AutoRenewEnabled = false
	return s
}

func planOrder(orderID, product, basePlan string, total int64) *androidpublisher.Order {
	o := order(orderID, "BASE", money(total, "EUR"))
	o.LineItems[0].ProductId = product
	o.LineItems[0].SubscriptionDetails.BasePlanId = basePlan
	return o
}

func countTypes(evs []mapping.Event) map[mapping.Type]int {
	n := map[mapping.Type]int{}
	for _, e := range evs {
		n[e.Type]++
	}
	return n
}

// Issue 13, item 3: after a plan change Google expires the replaced token
// (SUBSCRIPTION_EXPIRED, 13) and subscriptionsv2 shows
// canceledStateContext.replacementCancellation. That was subscription_expired:
// false churn at every destination for every plan change. Both orders of the
// new token's purchase and the old token's expiry are covered, and so is a
// gateway that never saw the old token.
func TestGoogleReplacedTokenExpiryIsNotChurn(t *testing.T) {
	for _, tc := range []struct {
		name          string
		knowOld       bool
		expiryFirst   bool
		wantChanged   int
		wantReactived int
	}{
		{"purchase then expiry", true, false, 1, 0},
		{"expiry then purchase", true, true, 1, 0},
		// Without the old token's state the new purchase cannot tell a
		// plan change from a re-signup; the expiry is still no churn.
		{"old token unknown", false, false, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newE2E(t)
			x.pub.SetOrder(gPackage, "GPA.1", planOrder("GPA.1", "pro_monthly", "monthly", 4_990_000))
			if tc.knowOld {
				x.pub.SetSubscription(gPackage, "tok-old", planSubscription("pro_monthly", "monthly", "GPA.1", "", 4_990_000))
				x.push("1", googletest.SubscriptionNotification(gPackage, "tok-old", "pro_monthly", 4, testNow))
				x.drain()
			}
			x.pub.SetSubscription(gPackage, "tok-old", replacedSubscription("pro_monthly", "monthly", "GPA.1"))
			x.pub.SetSubscription(gPackage, "tok-new", planSubscription("pro_yearly", "yearly", "GPA.2", "tok-old", 49_990_000))
			x.pub.SetOrder(gPackage, "GPA.2", planOrder("GPA.2", "pro_yearly", "yearly", 49_990_000))
			purchase := func() {
				x.push("2", googletest.SubscriptionNotification(gPackage, "tok-new", "pro_yearly", 4, testNow.Add(time.Hour)))
				x.drain()
			}
			expiry := func() {
				x.push("3", googletest.SubscriptionNotification(gPackage, "tok-old", "pro_monthly", 13, testNow.Add(time.Hour+time.Second)))
				x.drain()
			}
			if tc.expiryFirst {
				expiry()
				purchase()
			} else {
				purchase()
				expiry()
			}
			n := countTypes(x.events())
			if n[mapping.SubscriptionExpired] != 0 {
				t.Errorf("got %d subscription_expired for a replaced token, want 0: %v", n[mapping.SubscriptionExpired], n)
			}
			if n[mapping.ProductChanged] != tc.wantChanged || n[mapping.SubscriptionReactivated] != tc.wantReactived {
				t.Errorf("got %v, want %d product_changed and %d subscription_reactivated", n, tc.wantChanged, tc.wantReactived)
			}
			nt, err := x.db.Notification(mapping.SourceGoogle, "3")
			if err != nil || nt.Status != mapping.StatusIgnored || nt.Reason == "" {
				t.Errorf("expiry notification: %v; want ignored with a reason", err)
			} else if nt.Status != mapping.StatusIgnored {
				t.Errorf("expiry notification status %q (%s), want ignored", nt.Status, nt.Reason)
			}
		})
	}
	t.Run("a real expiry is still churn", func(t *testing.T) {
		x := newE2E(t)
		x.pub.SetOrder(gPackage, "GPA.1", planOrder("GPA.1", "pro_monthly", "monthly", 4_990_000))
		x.pub.SetSubscription(gPackage, "tok-1", planSubscription("pro_monthly", "monthly", "GPA.1", "", 4_990_000))
		x.push("1", googletest.SubscriptionNotification(gPackage, "tok-1", "pro_monthly", 4, testNow))
		x.drain()
		expired := planSubscription("pro_monthly", "monthly", "GPA.1", "", 4_990_000)
		expired.SubscriptionState = "SUBSCRIPTION_STATE_EXPIRED"
		expired.CanceledStateContext = &androidpublisher.CanceledStateContext{UserInitiatedCancellation: &androidpublisher.UserInitiatedCancellation{}}
		x.pub.SetSubscription(gPackage, "tok-1", expired)
		x.push("2", googletest.SubscriptionNotification(gPackage, "tok-1", "pro_monthly", 13, testNow.Add(time.Hour)))
		x.drain()
		if n := countTypes(x.events()); n[mapping.SubscriptionExpired] != 1 {
			t.Errorf("got %v, want one subscription_expired", n)
		}
	})
}

// Issue 13, item 4: a base-plan change inside one product (monthly to
// quarterly: a new token with linkedPurchaseToken, same productId) was
// subscription_reactivated; it is product_changed with the new order's
// revenue.
func TestGoogleBasePlanChangeIsProductChanged(t *testing.T) {
	x := newE2E(t)
	x.pub.SetOrder(gPackage, "GPA.1", planOrder("GPA.1", "pro", "monthly", 4_990_000))
	x.pub.SetSubscription(gPackage, "tok-m", planSubscription("pro", "monthly", "GPA.1", "", 4_990_000))
	x.push("1", googletest.SubscriptionNotification(gPackage, "tok-m", "pro", 4, testNow))
	x.drain()
	x.pub.SetOrder(gPackage, "GPA.2", planOrder("GPA.2", "pro", "quarterly", 12_990_000))
	x.pub.SetSubscription(gPackage, "tok-q", planSubscription("pro", "quarterly", "GPA.2", "tok-m", 12_990_000))
	x.push("2", googletest.SubscriptionNotification(gPackage, "tok-q", "pro", 4, testNow.Add(time.Hour)))
	x.drain()
	var changed []mapping.Event
	for _, e := range x.events() {
		switch e.Type {
		case mapping.ProductChanged:
			changed = append(changed, e)
		case mapping.SubscriptionReactivated:
			t.Errorf("base-plan change mapped to subscription_reactivated: %+v", e)
		}
	}
	if len(changed) != 1 {
		t.Fatalf("got %d product_changed, want 1", len(changed))
	}
	e := changed[0]
	if e.Revenue == nil || *e.Revenue != (mapping.Revenue{AmountMicros: 12_990_000, Currency: "EUR"}) || e.Attributes["previous_base_plan_id"] != "monthly" || e.Attributes["base_plan_id"] != "quarterly" {
		t.Errorf("product_changed %+v %v; want EUR 12.99, monthly -> quarterly", e.Revenue, e.Attributes)
	}
	// The same plan again under a new token (a re-signup) stays a
	// reactivation.
	x.pub.SetOrder(gPackage, "GPA.3", planOrder("GPA.3", "pro", "quarterly", 12_990_000))
	x.pub.SetSubscription(gPackage, "tok-q2", planSubscription("pro", "quarterly", "GPA.3", "tok-q", 12_990_000))
	x.push("3", googletest.SubscriptionNotification(gPackage, "tok-q2", "pro", 4, testNow.Add(2*time.Hour)))
	x.drain()
	if n := countTypes(x.events()); n[mapping.SubscriptionReactivated] != 1 || n[mapping.ProductChanged] != 1 {
		t.Errorf("after a re-signup on the same plan: %v, want one reactivation and still one product_changed", n)
	}
}

// Found by the lifecycle simulator: a free trial whose first payment failed
// (grace period) and was then recovered was billing_recovered, so the trial
// never converted. The recovery out of a trial is trial_converted with the
// recovered order's revenue, with or without the earlier state (the
// previous order's phase tells).
func TestGoogleTrialRecoveredIsConversion(t *testing.T) {
	for _, withState := range []bool{true, false} {
		t.Run(map[bool]string{true: "with state", false: "without state"}[withState], func(t *testing.T) {
			x := newE2E(t)
			x.pub.SetOrder(gPackage, "GPA.5", order("GPA.5", "FREE_TRIAL", money(0, "EUR")))
			if withState {
				x.pub.SetSubscription(gPackage, "tok-t", subscription("GPA.5", true))
				x.push("1", googletest.SubscriptionNotification(gPackage, "tok-t", "pro_monthly", 4, testNow))
				x.drain()
				grace := subscription("GPA.5", true)
				grace.SubscriptionState = "SUBSCRIPTION_STATE_IN_GRACE_PERIOD"
				x.pub.SetSubscription(gPackage, "tok-t", grace)
				x.push("2", googletest.SubscriptionNotification(gPackage, "tok-t", "pro_monthly", 6, testNow.Add(time.Hour)))
				x.drain()
			}
			x.pub.SetSubscription(gPackage, "tok-t", subscription("GPA.5..0", false))
			x.pub.SetOrder(gPackage, "GPA.5..0", order("GPA.5..0", "BASE", money(4_990_000, "EUR")))
			x.push("3", googletest.SubscriptionNotification(gPackage, "tok-t", "pro_monthly", 1, testNow.Add(2*time.Hour)))
			x.drain()
			var conv []mapping.Event
			for _, e := range x.events() {
				switch e.Type {
				case mapping.TrialConverted:
					conv = append(conv, e)
				case mapping.BillingRecovered:
					t.Errorf("recovery out of a trial mapped to billing_recovered: %+v", e)
				}
			}
			if len(conv) != 1 || conv[0].Revenue == nil || *conv[0].Revenue != (mapping.Revenue{AmountMicros: 4_990_000, Currency: "EUR"}) || conv[0].TransactionID != "GPA.5..0" {
				t.Errorf("trial_converted %+v; want one with EUR 4.99 for GPA.5..0", conv)
			}
		})
	}
}

// A backlog enriched late (after an outage): subscriptionsv2 then names the
// latest order for every notification of the token, so the purchase and
// each renewal reported that one order: one charge counted, the others
// lost, and the trial's start reported as a paid start. The enricher walks
// back the order chain to the order created at each notification's time.
func TestGoogleLateEnrichmentCountsEveryOrder(t *testing.T) {
	x := newE2E(t)
	t0, t1, t2 := testNow.Add(-60*24*time.Hour), testNow.Add(-53*24*time.Hour), testNow.Add(-23*24*time.Hour)
	at := func(o *androidpublisher.Order, when time.Time) *androidpublisher.Order {
		o.CreateTime = when.Format(time.RFC3339)
		return o
	}
	x.pub.SetOrder(gPackage, "GPA.9", at(order("GPA.9", "FREE_TRIAL", money(0, "EUR")), t0))
	x.pub.SetOrder(gPackage, "GPA.9..0", at(order("GPA.9..0", "BASE", money(4_990_000, "EUR")), t1))
	x.pub.SetOrder(gPackage, "GPA.9..1", at(order("GPA.9..1", "BASE", money(4_990_000, "EUR")), t2))
	// Only today's answer exists: the latest order, a base-price period.
	x.pub.SetSubscription(gPackage, "tok-late", subscription("GPA.9..1", false))
	x.push("1", googletest.SubscriptionNotification(gPackage, "tok-late", "pro_monthly", 4, t0))
	x.push("2", googletest.SubscriptionNotification(gPackage, "tok-late", "pro_monthly", 2, t1))
	x.push("3", googletest.SubscriptionNotification(gPackage, "tok-late", "pro_monthly", 2, t2))
	x.drain()
	got := map[mapping.Type][]string{}
	var sum int64
	for _, e := range x.events() {
		got[e.Type] = append(got[e.Type], e.TransactionID)
		if e.Revenue != nil {
			sum += e.Revenue.AmountMicros
		}
	}
	want := map[mapping.Type][]string{mapping.TrialStarted: {"GPA.9"}, mapping.TrialConverted: {"GPA.9..0"}, mapping.SubscriptionRenewed: {"GPA.9..1"}}
	if len(got) != len(want) || sum != 2*4_990_000 {
		t.Fatalf("got %v summing %d micros, want %v summing %d", got, sum, want, 2*4_990_000)
	}
	for typ, ids := range want {
		if len(got[typ]) != 1 || got[typ][0] != ids[0] {
			t.Errorf("%s: %v, want %v", typ, got[typ], ids)
		}
	}
}
