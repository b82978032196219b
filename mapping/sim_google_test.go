package mapping

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// googleSimNote is one RTDN of a simulated Google lifecycle, enriched with
// the subscriptionsv2 and orders answers the Play API gives at its moment.
type googleSimNote struct {
	n        *Notification
	moment   int
	charged  string // an order whose amount this notification reports
	amount   int64  // micros charged by that order
	refunded string // an order this notification refunds
	convert  bool   // renews or recovers out of a free trial
	recovers bool   // SUBSCRIPTION_RECOVERED
	expires  bool   // SUBSCRIPTION_EXPIRED of a token that was not replaced
	trial    bool   // SUBSCRIPTION_PURCHASED of a free trial
	tok      *googleToken
	enriched GoogleEnrichment // what the enricher read at the notification's moment
}

// googleToken is one purchase token of a simulated subscription.
type googleToken struct {
	token, product, plan string
	orderBase            string
	orders               []string // order ids in charge order
	linked               string
}

type googleLife struct {
	id        int
	cur       simCurrency
	price     int64 // micros per period
	trial     bool  // the current period is a free trial
	intro     bool  // the current period is at an introductory price
	tok       *googleToken
	tokens    int
	notes     []googleSimNote
	moment    int
	t0        time.Time
	totals    map[string]int64 // order id -> micros charged
	phases    map[string]string
	cancelled bool
}

func (l *googleLife) money(micros int64) map[string]any {
	return map[string]any{"currencyCode": l.cur.code, "units": fmt.Sprint(micros / 1_000_000), "nanos": (micros % 1_000_000) * 1000}
}

func (l *googleLife) newToken(product, plan, linked string) {
	l.tokens++
	l.tok = &googleToken{token: fmt.Sprintf("tok-%d-%d", l.id, l.tokens), product: product, plan: plan,
		orderBase: fmt.Sprintf("GPA.%d-%d", l.id, l.tokens), linked: linked}
}

// charge records a new order of the current token.
func (l *googleLife) charge(micros int64, phase string) string {
	id := l.tok.orderBase
	if n := len(l.tok.orders); n > 0 {
		id = fmt.Sprintf("%s..%d", l.tok.orderBase, n-1)
	}
	l.tok.orders = append(l.tok.orders, id)
	l.totals[id], l.phases[id] = micros, phase
	return id
}

func (l *googleLife) order(id string, refunded bool) map[string]any {
	phase := l.phases[id]
	details := map[string]string{"BASE": "baseDetails", "FREE_TRIAL": "freeTrialDetails", "PRORATION": "prorationPeriodDetails", "INTRODUCTORY": "introductoryPriceDetails"}[phase]
	o := map[string]any{"orderId": id, "state": "PROCESSED", "total": l.money(l.totals[id]), "createTime": "2026-01-01T00:00:00Z",
		"lineItems": []any{map[string]any{"productId": l.tok.product, "total": l.money(l.totals[id]),
			"subscriptionDetails": map[string]any{"basePlanId": l.tok.plan, "offerPhase": phase, "offerPhaseDetails": map[string]any{details: map[string]any{}}}}}}
	if refunded {
		o["state"] = "REFUNDED"
		o["orderHistory"] = map[string]any{"refundEvent": map[string]any{"eventTime": "2026-01-01T00:00:00Z", "refundDetails": map[string]any{"total": l.money(l.totals[id])}}}
	}
	return o
}

// subscription is subscriptionsv2.get for tok now.
func (l *googleLife) subscription(tok *googleToken, state string, autoRenew bool, cancel string) map[string]any {
	latest := ""
	if n := len(tok.orders); n > 0 {
		latest = tok.orders[n-1]
	}
	phase := "basePrice"
	switch {
	case l.trial && tok == l.tok:
		phase = "freeTrial"
	case l.intro && tok == l.tok:
		phase = "introductoryPrice"
	}
	s := map[string]any{"kind": "androidpublisher#subscriptionPurchaseV2", "regionCode": "DE", "subscriptionState": state,
		"externalAccountIdentifiers": map[string]any{"obfuscatedExternalAccountId": fmt.Sprintf("user-%d", l.id)},
		"lineItems": []any{map[string]any{"productId": tok.product, "expiryTime": "2026-12-01T00:00:00Z", "latestSuccessfulOrderId": latest,
			"autoRenewingPlan": map[string]any{"autoRenewEnabled": autoRenew, "recurringPrice": l.money(l.price)},
			"offerDetails":     map[string]any{"basePlanId": tok.plan}, "offerPhase": map[string]any{phase: map[string]any{}}}}}
	if tok.linked != "" {
		s["linkedPurchaseToken"] = tok.linked
	}
	if cancel != "" {
		s["canceledStateContext"] = map[string]any{cancel: map[string]any{}}
	}
	return s
}

// add renders one RTDN with its enrichment.
func (l *googleLife) add(tok *googleToken, code int, sub, order, prev map[string]any, note googleSimNote) {
	at := l.t0.Add(time.Duration(l.moment)*30*24*time.Hour + time.Duration(len(l.notes))*time.Second)
	body := mustJSON(map[string]any{"version": "1.0", "packageName": "com.example.app", "eventTimeMillis": fmt.Sprint(at.UnixMilli()),
		"subscriptionNotification": map[string]any{"version": "1.0", "notificationType": code, "purchaseToken": tok.token, "subscriptionId": tok.product}})
	en := GoogleEnrichment{Subscription: mustJSON(sub)}
	if order != nil {
		en.Order = mustJSON(order)
	}
	if prev != nil {
		en.PreviousOrder = mustJSON(prev)
	}
	g, err := ParseGoogleNotification(body)
	if err != nil {
		panic(err)
	}
	note.n = &Notification{Source: SourceGoogle, Key: fmt.Sprintf("msg-%d-%d", l.id, len(l.notes)), Type: g.TypeName(), AppID: "com.example.app",
		ReceivedAt: at.Add(time.Second), Body: body, Enriched: mustJSON(en), Deferred: true, AltKeys: []string{g.DedupeKey()}}
	note.moment, note.tok, note.enriched = l.moment, tok, en
	l.notes = append(l.notes, note)
}

// late re-enriches the order-bearing notifications as a backlog read after
// the whole lifecycle: subscriptionsv2 answers with each token's final
// state (its latest order), while the enricher has walked back the order
// chain to the order of the notification's time (webhooks' orderAt).
func (l *googleLife) late() {
	final := map[*googleToken]json.RawMessage{}
	for i := range l.notes {
		n := &l.notes[i]
		if n.tok == nil || len(n.enriched.Order) == 0 {
			continue
		}
		if final[n.tok] == nil {
			state := "SUBSCRIPTION_STATE_ACTIVE"
			if n.tok != l.tok {
				state = "SUBSCRIPTION_STATE_EXPIRED"
			}
			trial, intro := l.trial, l.intro
			if n.tok != l.tok {
				l.trial, l.intro = false, false
			}
			final[n.tok] = mustJSON(l.subscription(n.tok, state, true, ""))
			l.trial, l.intro = trial, intro
		}
		en := n.enriched
		en.Subscription = final[n.tok]
		cp := *n.n
		cp.Enriched = mustJSON(en)
		n.n = &cp
	}
}

func (l *googleLife) addVoided(tok *googleToken, orderID string) {
	at := l.t0.Add(time.Duration(l.moment)*30*24*time.Hour + time.Duration(len(l.notes))*time.Second)
	body := mustJSON(map[string]any{"version": "1.0", "packageName": "com.example.app", "eventTimeMillis": fmt.Sprint(at.UnixMilli()),
		"voidedPurchaseNotification": map[string]any{"purchaseToken": tok.token, "orderId": orderID, "productType": 1, "refundType": 1}})
	en := GoogleEnrichment{Order: mustJSON(l.order(orderID, true)), Subscription: mustJSON(l.subscription(tok, "SUBSCRIPTION_STATE_EXPIRED", false, "systemInitiatedCancellation"))}
	g, _ := ParseGoogleNotification(body)
	l.notes = append(l.notes, googleSimNote{moment: l.moment, refunded: orderID, n: &Notification{Source: SourceGoogle, Key: fmt.Sprintf("msg-%d-%d", l.id, len(l.notes)),
		Type: g.TypeName(), AppID: "com.example.app", ReceivedAt: at.Add(time.Second), Body: body, Enriched: mustJSON(en), Deferred: true, AltKeys: []string{g.DedupeKey()}}})
}

// previousOrder is what the enricher reads as the order a renewal follows.
func (l *googleLife) previousOrder(orderID string) map[string]any {
	if p := PreviousGoogleOrderID(orderID); p != "" {
		if _, ok := l.totals[p]; ok {
			return l.order(p, false)
		}
	}
	return nil
}

// genGoogleLife draws a lifecycle: free-trial or paid start; then renewals,
// grace periods or account holds that recover (with a new order), a
// cancellation and its restart, upgrades, downgrades, crossgrades and
// base-plan changes (a new token with linkedPurchaseToken; the replaced one
// is canceled and expired with replacementCancellation), and an end by
// expiry or by a refund (SUBSCRIPTION_REVOKED plus its voided purchase).
func genGoogleLife(rt *rapid.T, id int) *googleLife {
	l := &googleLife{id: id, t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), totals: map[string]int64{}, phases: map[string]string{}}
	l.cur = rapid.SampledFrom(simCurrencies).Draw(rt, "currency")
	l.price = l.cur.micros(rapid.Int64Range(1, 2_000_000).Draw(rt, "price"))
	start := rapid.SampledFrom([]string{"free_trial", "intro", "full"}).Draw(rt, "start")
	l.trial, l.intro = start == "free_trial", start == "intro"
	l.newToken("pro_monthly", "monthly", "")
	switch {
	case l.trial:
		o := l.charge(0, "FREE_TRIAL")
		l.add(l.tok, 4, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), l.order(o, false), nil, googleSimNote{trial: true})
	case l.intro:
		intro := l.cur.micros(1) + l.price/2/l.cur.micros(1)*l.cur.micros(1)
		o := l.charge(intro, "INTRODUCTORY")
		l.add(l.tok, 4, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), l.order(o, false), nil, googleSimNote{charged: o, amount: intro})
	default:
		o := l.charge(l.price, "BASE")
		l.add(l.tok, 4, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), l.order(o, false), nil, googleSimNote{charged: o, amount: l.price})
	}
	steps := rapid.SliceOfN(rapid.SampledFrom([]string{"renew", "renew", "grace", "hold", "pause", "cancel_restart", "plan_change", "base_plan_change"}), 0, 6).Draw(rt, "steps")
	for i, step := range steps {
		l.moment++
		switch step {
		case "renew":
			o := l.charge(l.price, "BASE")
			conv := l.trial
			l.trial, l.intro = false, false
			l.add(l.tok, 2, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), l.order(o, false), l.previousOrder(o), googleSimNote{charged: o, amount: l.price, convert: conv})
		case "grace", "hold":
			code, state := 6, "SUBSCRIPTION_STATE_IN_GRACE_PERIOD"
			if step == "hold" {
				code, state = 5, "SUBSCRIPTION_STATE_ON_HOLD"
			}
			l.add(l.tok, code, l.subscription(l.tok, state, true, ""), nil, nil, googleSimNote{})
			l.moment++
			o := l.charge(l.price, "BASE")
			conv := l.trial
			l.trial, l.intro = false, false
			l.add(l.tok, 1, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), l.order(o, false), l.previousOrder(o), googleSimNote{charged: o, amount: l.price, convert: conv, recovers: true})
		case "pause":
			if l.trial {
				continue // a pause is scheduled for after a paid period
			}
			// The pause starts at the period's end; when it ends the
			// subscription is charged again (reported as a renewal or a
			// recovery: both are generated).
			l.add(l.tok, 10, l.subscription(l.tok, "SUBSCRIPTION_STATE_PAUSED", true, ""), nil, nil, googleSimNote{})
			l.moment++
			l.intro = false
			o := l.charge(l.price, "BASE")
			code := rapid.SampledFrom([]int{2, 1}).Draw(rt, fmt.Sprintf("resume-%d", i))
			l.add(l.tok, code, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), l.order(o, false), l.previousOrder(o), googleSimNote{charged: o, amount: l.price})
		case "cancel_restart":
			l.add(l.tok, 3, l.subscription(l.tok, "SUBSCRIPTION_STATE_CANCELED", false, "userInitiatedCancellation"), nil, nil, googleSimNote{})
			if rapid.Bool().Draw(rt, fmt.Sprintf("restart-%d", i)) {
				l.add(l.tok, 7, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), nil, nil, googleSimNote{})
			} else {
				l.cancelled = true
			}
		case "plan_change", "base_plan_change":
			if l.trial || l.cancelled {
				continue // plan changes out of a trial or after a cancellation are not generated
			}
			old := l.tok
			product, plan := []string{"pro_yearly", "lite_monthly", "pro_monthly"}[i%3], old.plan
			if step == "base_plan_change" || product == old.product {
				product, plan = old.product, map[string]string{"monthly": "quarterly", "quarterly": "monthly"}[old.plan]
			}
			l.newToken(product, plan, old.token)
			l.intro = false
			proration := rapid.Int64Range(0, l.price).Draw(rt, fmt.Sprintf("proration-%d", i))
			o := l.charge(proration, "PRORATION")
			note := googleSimNote{}
			if proration > 0 {
				note = googleSimNote{charged: o, amount: proration}
			}
			l.add(l.tok, 4, l.subscription(l.tok, "SUBSCRIPTION_STATE_ACTIVE", true, ""), l.order(o, false), nil, note)
			l.add(old, 3, l.subscription(old, "SUBSCRIPTION_STATE_EXPIRED", false, "replacementCancellation"), nil, nil, googleSimNote{})
			l.add(old, 13, l.subscription(old, "SUBSCRIPTION_STATE_EXPIRED", false, "replacementCancellation"), nil, nil, googleSimNote{})
		}
	}
	l.moment++
	switch rapid.SampledFrom([]string{"active", "expires", "revoked"}).Draw(rt, "end") {
	case "expires":
		l.add(l.tok, 13, l.subscription(l.tok, "SUBSCRIPTION_STATE_EXPIRED", false, "userInitiatedCancellation"), nil, nil, googleSimNote{expires: true})
	case "revoked":
		o := l.tok.orders[len(l.tok.orders)-1]
		if l.totals[o] == 0 {
			break
		}
		l.add(l.tok, 12, l.subscription(l.tok, "SUBSCRIPTION_STATE_EXPIRED", false, "systemInitiatedCancellation"), l.order(o, true), nil, googleSimNote{refunded: o})
		l.addVoided(l.tok, o)
	}
	return l
}

// deliver draws an order Pub/Sub allows: any order within a moment, some
// messages twice (same messageId) and some re-sent under a new messageId,
// and nothing before the install moment.
func (l *googleLife) deliver(rt *rapid.T, install int, label string) []googleSimNote {
	var out []googleSimNote
	for m := install; m <= l.moment; m++ {
		var group []googleSimNote
		for _, n := range l.notes {
			if n.moment == m {
				group = append(group, n)
			}
		}
		for _, i := range shuffled(rt, len(group), fmt.Sprintf("%s-m%d", label, m)) {
			out = append(out, group[i])
			switch rapid.IntRange(0, 9).Draw(rt, fmt.Sprintf("%s-dup-%d-%d", label, m, i)) {
			case 0:
				out = append(out, group[i]) // Pub/Sub redelivers the same message
			case 1:
				again := group[i]
				cp := *again.n
				cp.Key += "-resent"
				again.n = &cp
				out = append(out, again) // Google re-publishes under a new messageId
			}
		}
	}
	return out
}

func runGoogleSim(rt *rapid.T, notes []googleSimNote) *simStore {
	s := newSimStore()
	for _, n := range notes {
		if err := s.ingest(n.n); err != nil {
			rt.Fatalf("mapping %s %s: %v", n.n.Type, n.n.Key, err)
		}
	}
	return s
}

var googleSimFigures simFigures

// TestGoogleSimulator checks the Google Play invariants (docs/MAPPING.md)
// on random lifecycles and orderings.
func TestGoogleSimulator(t *testing.T) {
	for round := range simRounds(t) {
		rapid.Check(t, func(rt *rapid.T) { googleProperty(rt, round) })
	}
	googleSimFigures.log(t, "google")
}

func googleProperty(rt *rapid.T, round int) {
	l := genGoogleLife(rt, round)
	if rapid.IntRange(0, 3).Draw(rt, "backlog") == 0 {
		l.late()
	}
	install := 0
	if rapid.IntRange(0, 2).Draw(rt, "install_late") == 0 {
		install = rapid.IntRange(0, l.moment).Draw(rt, "install")
	}
	notes := l.deliver(rt, install, "a")
	s := runGoogleSim(rt, notes)
	evs := s.list()
	var exceptions []string

	want := map[string]int64{}
	charged, refunded := map[string]bool{}, map[string]bool{}
	wantConverted, wantExpired := 0, 0
	for _, n := range notes {
		if n.charged != "" && !charged[n.charged] {
			charged[n.charged] = true
			want[l.cur.code] += n.amount
			if n.convert {
				wantConverted++
			}
		}
		if n.refunded != "" && !refunded[n.refunded] {
			refunded[n.refunded] = true
			want[l.cur.code] -= l.totals[n.refunded]
		}
	}
	expiredKeys, wantStarted := map[string]bool{}, 0
	for _, n := range notes {
		if n.trial && !expiredKeys["start"] {
			expiredKeys["start"] = true
			wantStarted++
		}
		if n.expires && !expiredKeys[n.n.AltKeys[0]] {
			expiredKeys[n.n.AltKeys[0]] = true
			wantExpired++
		}
	}
	if want[l.cur.code] == 0 {
		delete(want, l.cur.code)
	}
	// Revenue conservation, per currency, exactly.
	if got := revenueByCurrency(evs); !equalSums(got, want) {
		rt.Fatalf("revenue %v, want %v (charged minus refunded)\nevents: %s", got, want, simDump(evs))
	}
	// Each charged order and each refund has exactly one revenue event.
	carrying := 0
	for _, e := range evs {
		if e.Revenue != nil {
			carrying++
		}
	}
	if carrying != len(charged)+len(refunded) {
		rt.Fatalf("%d revenue-carrying events, want %d (orders %v, refunds %v)\nevents: %s", carrying, len(charged)+len(refunded), charged, refunded, simDump(evs))
	}
	// One trial_converted per trial followed by a paid period.
	converted, expired := 0, 0
	for _, e := range evs {
		switch e.Type {
		case TrialConverted:
			converted++
		case SubscriptionExpired:
			expired++
		}
	}
	if converted != wantConverted {
		rt.Fatalf("%d trial_converted, want %d (install at moment %d)\nevents: %s", converted, wantConverted, install, simDump(evs))
	}
	// One trial_started per free-trial start, also when the purchase is
	// enriched late (the subscription then shows a later, paid period).
	started := 0
	for _, e := range evs {
		if e.Type == TrialStarted {
			started++
		}
	}
	if started != wantStarted {
		rt.Fatalf("%d trial_started, want %d\nevents: %s", started, wantStarted, simDump(evs))
	}
	// No subscription_expired for a token replaced by a plan change.
	if expired != wantExpired {
		rt.Fatalf("%d subscription_expired, want %d\nevents: %s", expired, wantExpired, simDump(evs))
	}
	// A plan change is product_changed, never a reactivation, when the
	// replaced token's state is known.
	for _, e := range evs {
		if e.Type == SubscriptionReactivated && install == 0 {
			rt.Fatalf("subscription_reactivated with the whole lifecycle known (a plan change)\nevents: %s", simDump(evs))
		}
	}
	// The same facts in another order give the same event ids.
	orderings := 1
	if install == 0 {
		other := runGoogleSim(rt, l.deliver(rt, 0, "b"))
		orderings++
		if a, b := s.ids(), other.ids(); strings.Join(a, ",") != strings.Join(b, ",") {
			rt.Fatalf("another order gave other event ids\nfirst: %s\nsecond: %s", simDump(evs), simDump(other.list()))
		}
	}
	googleSimFigures.add(orderings, len(notes), len(evs), exceptions...)
}
