package mapping

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stripeStates is the in-memory States fake of the Stripe tests. It keeps
// each state as JSON, as the store does, so every read is a fresh copy, and
// apply writes Result.States between steps.
type stripeStates map[string][]byte

func (s stripeStates) State(key string) (State, bool) {
	b, ok := s[key]
	if !ok {
		return State{}, false
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		panic(err) // written by apply; cannot happen
	}
	return st, true
}

func (s stripeStates) apply(r Result) {
	for _, st := range r.States {
		b, err := json.Marshal(st)
		if err != nil {
			panic(err)
		}
		s[st.Key] = b
	}
}

// sharedStates is a States that hands out its own maps, to prove that the
// mapping never writes to what States returns.
type sharedStates map[string]State

func (s sharedStates) State(key string) (State, bool) {
	st, ok := s[key]
	return st, ok
}

// stripeAppID stands for sources.stripe.app_id, which the webhook handler
// copies into Notification.AppID.
const stripeAppID = "com.example.app"

// stripeNotification reads testdata/stripe/<name>.json into a notification
// as the webhook handler builds it, received one second after the event.
func stripeNotification(t *testing.T, name string) *Notification {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "stripe", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var head struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Created int64  `json:"created"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &Notification{
		Source: SourceStripe, Key: head.ID, Type: head.Type, AppID: stripeAppID,
		ReceivedAt: time.Unix(head.Created+1, 0).UTC(), Body: body,
	}
}

// stripeStep is one notification's outcome in a golden file.
type stripeStep struct {
	Fixture string  `json:"fixture"`
	Events  []Event `json:"events"`
	States  []State `json:"states"`
	Ignored string  `json:"ignored,omitempty"`
}

// runStripe maps the fixtures in order against one state store.
func runStripe(t *testing.T, st stripeStates, fixtures ...string) []stripeStep {
	t.Helper()
	var steps []stripeStep
	for _, f := range fixtures {
		res, err := Map(stripeNotification(t, f), st)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		st.apply(res)
		steps = append(steps, stripeStep{Fixture: f, Events: res.Events, States: res.States, Ignored: res.Ignored})
	}
	return steps
}

// stripeCases lists one golden case per mapping rule: the fixtures are
// mapped in order against the same state, and want lists the event types of
// each step ("" for an ignored step) so a regenerated golden file cannot
// silently change meaning.
var stripeCases = []struct {
	name     string
	fixtures []string
	want     [][]Type
}{
	{"trial_started", []string{"sub_a_created_trialing"}, [][]Type{{TrialStarted}}},
	{"trial_invoice_without_payment", []string{"sub_a_created_trialing", "invoice_a_paid_create_zero"}, [][]Type{{TrialStarted}, nil}},
	{"subscription_started_list_price", []string{"sub_b_created_active"}, [][]Type{{SubscriptionStarted}}},
	{"trial_converted", []string{"sub_a_created_trialing", "sub_a_updated_trial_active", "invoice_a_paid_cycle", "invoice_a_paid_cycle2"},
		[][]Type{{TrialStarted}, {TrialConverted}, {TrialConverted}, {SubscriptionRenewed}}},
	// Stripe does not order events: the invoice may come before the update,
	// and the next renewal must still be a renewal.
	{"trial_converted_invoice_first", []string{"sub_a_created_trialing", "invoice_a_paid_cycle", "sub_a_updated_trial_active", "invoice_a_paid_cycle2"},
		[][]Type{{TrialStarted}, {TrialConverted}, nil, {SubscriptionRenewed}}},
	// Issue 13, item 1: no state (gateway installed mid-trial). Invoice
	// first: nothing tells it ended a trial, so it is a renewal with
	// previous_period=unknown, and the update after it adds no second
	// event for the same payment.
	{"no_state_invoice_first", []string{"invoice_a_paid_cycle", "sub_a_updated_trial_active", "invoice_a_paid_cycle2"},
		[][]Type{{SubscriptionRenewed}, nil, {SubscriptionRenewed}}},
	// Shrunk by the lifecycle simulator: without state, a cancellation
	// scheduled in the conversion's moment came first and created a state
	// that looked complete; the invoice became a plain renewal and the
	// update a second conversion with the same money.
	{"no_state_other_update_first", []string{"sub_a_updated_cancel_active", "invoice_a_paid_cycle", "sub_a_updated_trial_active"},
		[][]Type{{SubscriptionCancelled}, {SubscriptionRenewed}, nil}},
	// Shrunk by the simulator: an update before subscription.created must
	// not leave the history "unknown" once the creation is seen.
	{"update_before_created", []string{"sub_b_updated_cancel", "sub_b_created_active", "invoice_b_paid_create", "invoice_b_paid_cycle"},
		[][]Type{{SubscriptionCancelled}, {SubscriptionStarted}, {SubscriptionStarted}, {SubscriptionRenewed}}},
	// Shrunk by the simulator: without state, a free (100 % coupon)
	// conversion invoice before the update was skipped unremembered, so
	// the update left the conversion pending and the first paid renewal
	// became trial_converted.
	{"no_state_free_invoice_first", []string{"invoice_a_paid_cycle_free", "sub_a_updated_trial_active_coupon", "invoice_a_paid_cycle2"},
		[][]Type{nil, nil, {SubscriptionRenewed}}},
	// Update first: the conversion is known before its invoice.
	{"no_state_update_first", []string{"sub_a_updated_trial_active", "invoice_a_paid_cycle", "invoice_a_paid_cycle2"},
		[][]Type{{TrialConverted}, {TrialConverted}, {SubscriptionRenewed}}},
	// Issue 13, item 2: a conversion on a 0-amount invoice (100 % coupon)
	// is a conversion without revenue (the coupon on the subscription
	// defers it to the invoice), and the first paid renewal after it is a
	// renewal with its revenue, in either order of update and invoice.
	{"trial_converted_free_invoice", []string{"sub_a_created_trialing", "sub_a_updated_trial_active_coupon", "invoice_a_paid_cycle_free", "invoice_a_paid_cycle2"},
		[][]Type{{TrialStarted}, nil, {TrialConverted}, {SubscriptionRenewed}}},
	{"trial_converted_free_invoice_first", []string{"sub_a_created_trialing", "invoice_a_paid_cycle_free", "sub_a_updated_trial_active_coupon", "invoice_a_paid_cycle2"},
		[][]Type{{TrialStarted}, {TrialConverted}, nil, {SubscriptionRenewed}}},
	// Without a coupon on the subscription (a credit balance paid the
	// conversion) the update reports the list amount; the paid renewal
	// after the 0-amount invoice is still a renewal.
	{"trial_converted_credit_balance", []string{"sub_a_created_trialing", "sub_a_updated_trial_active", "invoice_a_paid_cycle_free", "invoice_a_paid_cycle2"},
		[][]Type{{TrialStarted}, {TrialConverted}, {TrialConverted}, {SubscriptionRenewed}}},
	{"subscription_started_coupon", []string{"sub_b_created_active_coupon", "invoice_b_paid_create"}, [][]Type{nil, {SubscriptionStarted}}},
	// Shrunk by the lifecycle simulator: a 100 % coupon start whose
	// 0-amount first invoice came before subscription.created had no
	// subscription_started at all.
	{"subscription_started_free_invoice_first", []string{"invoice_b_paid_create_free", "sub_b_created_active_coupon"}, [][]Type{nil, {SubscriptionStarted}}},
	{"trial_converted_by_invoice", []string{"sub_a_created_trialing", "invoice_a_paid_cycle"}, [][]Type{{TrialStarted}, {TrialConverted}}},
	// Shrunk by the lifecycle simulator: the trial's 0-amount first invoice
	// before subscription.created left the start "unknown", so a later
	// renewal said previous_period=unknown with the whole lifecycle known.
	{"trial_invoice_before_created", []string{"invoice_a_paid_create_zero", "sub_a_created_trialing", "sub_a_updated_trial_active", "invoice_a_paid_cycle", "invoice_a_paid_cycle2"},
		[][]Type{nil, {TrialStarted}, {TrialConverted}, {TrialConverted}, {SubscriptionRenewed}}},
	{"trial_cancelled", []string{"sub_a_created_trialing", "sub_a_updated_cancel_trial"}, [][]Type{{TrialStarted}, {TrialCancelled}}},
	{"subscription_cancelled", []string{"sub_b_created_active", "sub_b_updated_cancel"}, [][]Type{{SubscriptionStarted}, {SubscriptionCancelled}}},
	{"subscription_uncancelled", []string{"sub_b_created_active", "sub_b_updated_cancel", "sub_b_updated_uncancel"},
		[][]Type{{SubscriptionStarted}, {SubscriptionCancelled}, {SubscriptionUncancelled}}},
	{"product_changed", []string{"sub_b_created_active", "sub_b_updated_price"}, [][]Type{{SubscriptionStarted}, {ProductChanged}}},
	// Found by the simulator: the proration invoice of a plan change
	// invoiced at once was ignored, so the upgrade's money was lost.
	{"product_changed_prorated", []string{"sub_b_created_active", "sub_b_updated_price", "invoice_b_paid_update"},
		[][]Type{{SubscriptionStarted}, {ProductChanged}, {ProductChanged}}},
	{"subscription_started_invoice", []string{"invoice_b_paid_create"}, [][]Type{{SubscriptionStarted}}},
	{"subscription_renewed", []string{"sub_b_created_active", "invoice_b_paid_create", "invoice_b_paid_cycle"},
		[][]Type{{SubscriptionStarted}, {SubscriptionStarted}, {SubscriptionRenewed}}},
	{"billing_issue", []string{"invoice_b_payment_failed"}, [][]Type{{BillingIssue}}},
	{"refunds", []string{"charge_refunded_partial", "charge_refunded_full", "charge_refunded_full"}, [][]Type{{Refund}, {Refund}, nil}},
	{"purchase", []string{"checkout_payment"}, [][]Type{{Purchase}}},
	{"checkout_subscription_identity", []string{"checkout_subscription", "invoice_d_paid_create"}, [][]Type{nil, {SubscriptionStarted}}},
	{"customer_identity", []string{"customer_created", "invoice_e_paid_create"}, [][]Type{nil, {SubscriptionStarted}}},
	{"subscription_expired", []string{"sub_b_created_active", "sub_b_deleted"}, [][]Type{{SubscriptionStarted}, {SubscriptionExpired}}},
	{"invoice_jpy", []string{"invoice_jpy_paid_create"}, [][]Type{{SubscriptionStarted}}},
	{"invoice_kwd", []string{"invoice_kwd_paid_create"}, [][]Type{{SubscriptionStarted}}},
	{"sandbox", []string{"sub_test_created_trialing"}, [][]Type{{TrialStarted}}},
	{"basil_invoice", []string{"invoice_basil_paid_create"}, [][]Type{{SubscriptionStarted}}},
	{"unhandled_type", []string{"sub_a_trial_will_end"}, [][]Type{nil}},
}

func TestStripeGolden(t *testing.T) {
	for _, tc := range stripeCases {
		t.Run(tc.name, func(t *testing.T) {
			steps := runStripe(t, stripeStates{}, tc.fixtures...)
			for i, s := range steps {
				var got []Type
				for _, e := range s.Events {
					got = append(got, e.Type)
				}
				if !equalTypes(got, tc.want[i]) {
					t.Errorf("step %d (%s): types %v, want %v", i, s.Fixture, got, tc.want[i])
				}
				if len(s.Events) == 0 && s.Ignored == "" {
					t.Errorf("step %d (%s): no event and no ignored reason", i, s.Fixture)
				}
				for _, e := range s.Events {
					checkStripeEvent(t, s.Fixture, &e)
				}
			}
			golden(t, "stripe/"+tc.name, steps)
		})
	}
}

func equalTypes(a, b []Type) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkStripeEvent asserts the invariants every Stripe event has, so the
// golden files cannot record a broken one.
func checkStripeEvent(t *testing.T, fixture string, e *Event) {
	t.Helper()
	if !strings.HasPrefix(e.ID, "evt_") || e.Source != SourceStripe || !e.Type.Valid() {
		t.Errorf("%s: bad id, source or type: %+v", fixture, e)
	}
	if e.Environment != Production && e.Environment != Sandbox {
		t.Errorf("%s: environment %q", fixture, e.Environment)
	}
	if e.AppID == "" || e.OccurredAt.IsZero() || e.ReceivedAt.IsZero() || e.SourceEventID == "" {
		t.Errorf("%s: missing app id, times or source event id: %+v", fixture, e)
	}
	if e.Revenue != nil {
		if e.Type == Refund && e.Revenue.AmountMicros >= 0 {
			t.Errorf("%s: refund revenue %d is not negative", fixture, e.Revenue.AmountMicros)
		}
		if e.Type != Refund && e.Revenue.AmountMicros <= 0 {
			t.Errorf("%s: %s revenue %d is not positive", fixture, e.Type, e.Revenue.AmountMicros)
		}
		if _, err := Exponent(e.Revenue.Currency); err != nil || e.Revenue.Currency != strings.ToUpper(e.Revenue.Currency) {
			t.Errorf("%s: revenue currency %q", fixture, e.Revenue.Currency)
		}
	}
	for k := range e.User.Identifiers {
		if !IsIdentifierName(k) {
			t.Errorf("%s: identifier %q is not a known name", fixture, k)
		}
	}
}

// stripeRun maps fixtures and returns all events by fixture.
func stripeRun(t *testing.T, fixtures ...string) map[string][]Event {
	t.Helper()
	out := map[string][]Event{}
	for _, s := range runStripe(t, stripeStates{}, fixtures...) {
		out[s.Fixture] = append(out[s.Fixture], s.Events...)
	}
	return out
}

func TestStripeConversionSharesID(t *testing.T) {
	t.Run("trial conversion from update and invoice", func(t *testing.T) {
		ev := stripeRun(t, "sub_a_created_trialing", "sub_a_updated_trial_active", "invoice_a_paid_cycle")
		upd, inv := ev["sub_a_updated_trial_active"][0], ev["invoice_a_paid_cycle"][0]
		if upd.Type != TrialConverted || inv.Type != TrialConverted {
			t.Fatalf("types %s, %s; want trial_converted twice", upd.Type, inv.Type)
		}
		if upd.ID != inv.ID {
			t.Errorf("update id %s != invoice id %s: the conversion would be forwarded twice", upd.ID, inv.ID)
		}
	})
	t.Run("trial conversion invoice before update", func(t *testing.T) {
		// Stripe does not order events: the invoice may come first.
		ev := stripeRun(t, "sub_a_created_trialing", "invoice_a_paid_cycle", "sub_a_updated_trial_active")
		inv, upd := ev["invoice_a_paid_cycle"], ev["sub_a_updated_trial_active"]
		if len(inv) != 1 || len(upd) != 0 {
			t.Errorf("invoice %v, update %v; want one trial_converted, from the invoice", inv, upd)
		}
	})
	t.Run("trial conversion invoice re-sent under a new event id", func(t *testing.T) {
		first := stripeRun(t, "sub_a_created_trialing", "invoice_a_paid_cycle")["invoice_a_paid_cycle"]
		st := stripeStates{}
		runStripe(t, st, "sub_a_created_trialing", "invoice_a_paid_cycle", "sub_a_updated_trial_active")
		n := stripeNotification(t, "invoice_a_paid_cycle")
		n.Body = []byte(strings.Replace(string(n.Body), "evt_1QTrlA2eZvKYlo2C0000InC1", "evt_resent", 1))
		again, err := Map(n, st)
		if err != nil || len(again.Events) != 1 || again.Events[0].ID != first[0].ID {
			t.Errorf("re-sent conversion invoice: %v, %v; want the same event %s", again.Events, err, first[0].ID)
		}
	})
	t.Run("subscription start from subscription and invoice", func(t *testing.T) {
		ev := stripeRun(t, "sub_b_created_active", "invoice_b_paid_create")
		sub, inv := ev["sub_b_created_active"][0], ev["invoice_b_paid_create"][0]
		if sub.ID != inv.ID {
			t.Errorf("subscription id %s != invoice id %s", sub.ID, inv.ID)
		}
	})
	t.Run("renewals differ per invoice", func(t *testing.T) {
		ev := stripeRun(t, "sub_a_created_trialing", "invoice_a_paid_cycle", "invoice_a_paid_cycle2", "invoice_b_paid_cycle")
		if ev["invoice_a_paid_cycle2"][0].ID == ev["invoice_b_paid_cycle"][0].ID {
			t.Error("two renewals share an id")
		}
	})
	t.Run("redelivered event maps to the same id", func(t *testing.T) {
		a := stripeRun(t, "invoice_b_paid_cycle")["invoice_b_paid_cycle"][0]
		b := stripeRun(t, "invoice_b_paid_cycle")["invoice_b_paid_cycle"][0]
		if a.ID != b.ID {
			t.Errorf("ids %s and %s differ", a.ID, b.ID)
		}
	})
}

func TestStripeRevenue(t *testing.T) {
	tests := []struct {
		fixture string
		want    Revenue
	}{
		{"invoice_jpy_paid_create", Revenue{1_200_000_000, "JPY"}},
		{"invoice_kwd_paid_create", Revenue{1_250_000, "KWD"}},
		{"invoice_b_paid_create", Revenue{9_990_000, "USD"}},
		{"sub_b_created_active", Revenue{9_990_000, "USD"}},
		{"checkout_payment", Revenue{19_990_000, "GBP"}},
		{"invoice_basil_paid_create", Revenue{9_990_000, "USD"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			ev := stripeRun(t, tt.fixture)[tt.fixture]
			if len(ev) != 1 || ev[0].Revenue == nil || *ev[0].Revenue != tt.want {
				t.Fatalf("events %+v; want one with revenue %+v", ev, tt.want)
			}
		})
	}
	t.Run("refunds count only the new amount", func(t *testing.T) {
		ev := stripeRun(t, "charge_refunded_partial", "charge_refunded_full")
		p, f := ev["charge_refunded_partial"][0], ev["charge_refunded_full"][0]
		if *p.Revenue != (Revenue{-15_000_000, "USD"}) || *f.Revenue != (Revenue{-34_990_000, "USD"}) {
			t.Errorf("refunds %+v then %+v; want -15.00 then -34.99 USD", *p.Revenue, *f.Revenue)
		}
		if p.ID == f.ID {
			t.Error("partial and full refund share an id")
		}
	})
	t.Run("trial start has no revenue", func(t *testing.T) {
		ev := stripeRun(t, "sub_a_created_trialing")["sub_a_created_trialing"][0]
		if ev.Revenue != nil {
			t.Errorf("trial_started revenue %+v, want none", ev.Revenue)
		}
	})
}

func TestStripeEnvironment(t *testing.T) {
	if e := stripeRun(t, "sub_test_created_trialing")["sub_test_created_trialing"][0]; e.Environment != Sandbox {
		t.Errorf("livemode false: environment %q, want sandbox", e.Environment)
	}
	if e := stripeRun(t, "sub_a_created_trialing")["sub_a_created_trialing"][0]; e.Environment != Production {
		t.Errorf("livemode true: environment %q, want production", e.Environment)
	}
}

func TestStripeIdentifiers(t *testing.T) {
	ev := stripeRun(t, "sub_a_created_trialing")["sub_a_created_trialing"][0]
	want := map[string]string{
		IDAppsFlyer:      "1764458400123-5817305",
		IDIDFA:           "6D92078A-8246-4BA4-AE5B-76104861E7DC",
		IDEmailSHA256:    SHA256Hex("jane.doe@example.com"),
		IDStripeCustomer: "cus_RkT9aB3cD4eF5g",
	}
	if ev.User.AppUserID != "user_8c1f2b" {
		t.Errorf("app_user_id %q, want user_8c1f2b", ev.User.AppUserID)
	}
	for k, v := range want {
		if got := ev.Identifier(k); got != v {
			t.Errorf("identifier %s = %q, want %q", k, got, v)
		}
	}
	if len(ev.User.Identifiers) != len(want) {
		t.Errorf("identifiers %v, want exactly %v (plan_source is not an identifier)", ev.User.Identifiers, want)
	}
	t.Run("metadata app_id overrides the configured app", func(t *testing.T) {
		e := stripeRun(t, "checkout_payment")["checkout_payment"][0]
		if e.AppID != "com.example.app.android" {
			t.Errorf("app_id %q", e.AppID)
		}
	})
	t.Run("phone hashed in both forms", func(t *testing.T) {
		e := stripeRun(t, "checkout_payment")["checkout_payment"][0]
		if e.Identifier(IDPhoneSHA256) != SHA256Hex("442079460958") || e.Identifier(IDPhoneE164SHA256) != SHA256Hex("+442079460958") {
			t.Errorf("phone identifiers %v", e.User.Identifiers)
		}
	})
}

// TestStripeNoRawPII maps every fixture and checks that no email or phone
// from the input appears in the output (events or states).
func TestStripeNoRawPII(t *testing.T) {
	raw := []string{"jane.doe@example.com", "max.mustermann", "refund.me", "alex.buyer", "dana@example.org",
		"eve@example.com", "basil.user", "555-0134", "7946 0958", "650-555-1234", "4155550134", "442079460958", "16505551234"}
	for _, tc := range stripeCases {
		out, err := json.Marshal(runStripe(t, stripeStates{}, tc.fixtures...))
		if err != nil {
			t.Fatal(err)
		}
		low := strings.ToLower(string(out))
		for _, r := range raw {
			if strings.Contains(low, r) {
				t.Errorf("%s: output contains raw PII %q", tc.name, r)
			}
		}
	}
}

// TestStripeScrubbedBody checks that mapping the body as stored (after
// ScrubPII hashed its emails and phones) gives exactly the same result as
// mapping the body as received, so reprocessing is faithful.
func TestStripeScrubbedBody(t *testing.T) {
	for _, tc := range stripeCases {
		t.Run(tc.name, func(t *testing.T) {
			rawSt, scrubSt := stripeStates{}, stripeStates{}
			for _, f := range tc.fixtures {
				n := stripeNotification(t, f)
				want, err := Map(n, rawSt)
				if err != nil {
					t.Fatal(err)
				}
				rawSt.apply(want)
				n.Body = ScrubPII(n.Body)
				got, err := Map(n, scrubSt)
				if err != nil {
					t.Fatal(err)
				}
				scrubSt.apply(got)
				a, _ := json.Marshal(want)
				b, _ := json.Marshal(got)
				if string(a) != string(b) {
					t.Errorf("%s: scrubbed body maps differently:\nraw:     %s\nscrubbed: %s", f, a, b)
				}
			}
		})
	}
}

// stripeEdit returns a fixture with its data.object changed by edit.
func stripeEdit(t *testing.T, fixture string, edit func(obj map[string]any)) string {
	t.Helper()
	var ev map[string]any
	if err := json.Unmarshal(stripeNotification(t, fixture).Body, &ev); err != nil {
		t.Fatal(err)
	}
	edit(ev["data"].(map[string]any)["object"].(map[string]any))
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStripeIgnored(t *testing.T) {
	set := func(k string, v any) func(map[string]any) {
		return func(o map[string]any) { o[k] = v }
	}
	// An update whose previous_attributes hold only fields we do not map
	// (a new default payment method).
	var upd map[string]any
	if err := json.Unmarshal([]byte(stripeEdit(t, "sub_b_created_active", func(map[string]any) {})), &upd); err != nil {
		t.Fatal(err)
	}
	upd["type"] = "customer.subscription.updated"
	upd["data"].(map[string]any)["previous_attributes"] = map[string]any{"default_payment_method": nil}
	b, _ := json.Marshal(upd)
	noChange := string(b)
	tests := []struct {
		name, body, reason string
	}{
		// A subscription that is not paid yet (3-D Secure pending) is
		// reported by its invoice later.
		{"subscription created incomplete", stripeEdit(t, "sub_b_created_active", set("status", "incomplete")), "subscription created with status incomplete"},
		{"checkout unpaid", stripeEdit(t, "checkout_payment", set("payment_status", "unpaid")), "checkout payment_status unpaid"},
		{"invoice without subscription", stripeEdit(t, "invoice_b_paid_create", set("subscription", nil)), "invoice without subscription"},
		{"failed invoice without subscription", stripeEdit(t, "invoice_b_payment_failed", set("subscription", nil)), "invoice without subscription"},
		{"manual invoice", stripeEdit(t, "invoice_b_paid_create", set("billing_reason", "manual")), "invoice billing_reason manual"},
		{"plan change credited", stripeEdit(t, "invoice_b_paid_update", set("amount_paid", 0)), "subscription_update invoice without payment (a credit, or proration at the next cycle)"},
		{"free cycle invoice", stripeEdit(t, "invoice_b_paid_cycle", set("amount_paid", 0)), "subscription_cycle invoice without payment"},
		{"subscription update without a change we map", noChange, "no conversion in customer.subscription.updated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Notification{Source: SourceStripe, Key: "k", AppID: stripeAppID, Body: []byte(tt.body)}
			res, err := Map(n, stripeStates{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Events) != 0 || res.Ignored != tt.reason {
				t.Errorf("events %v, ignored %q; want none, %q", res.Events, res.Ignored, tt.reason)
			}
		})
	}
}

func TestStripeMalformed(t *testing.T) {
	ev := func(typ, object string) string {
		return `{"id":"evt_1","object":"event","type":"` + typ + `","created":1796007600,"livemode":true,"data":{"object":` + object + `}}`
	}
	jpyInvoice := string(stripeNotification(t, "invoice_jpy_paid_create").Body)
	tests := []struct {
		name, body string
	}{
		{"not JSON", `<html>`},
		{"empty", ``},
		{"JSON array", `[]`},
		{"truncated", `{"id":"evt_1","type":"invoice.paid","data":{"object":{"id":"in_1"`},
		{"no id", `{"type":"invoice.paid","data":{"object":{"id":"in_1"}}}`},
		{"no type", `{"id":"evt_1","data":{"object":{"id":"in_1"}}}`},
		{"no data.object", `{"id":"evt_1","type":"invoice.paid","data":{}}`},
		{"id of wrong type", `{"id":1,"type":"invoice.paid","data":{"object":{"id":"in_1"}}}`},
		{"subscription not an object", ev("customer.subscription.created", `"sub_1"`)},
		{"subscription without id", ev("customer.subscription.created", `{"status":"trialing"}`)},
		{"subscription items wrong type", ev("customer.subscription.updated", `{"id":"sub_1","items":"none"}`)},
		{"previous_attributes wrong type", `{"id":"evt_1","type":"customer.subscription.updated","created":1,"data":{"object":{"id":"sub_1","status":"active"},"previous_attributes":{"status":7}}}`},
		{"deleted subscription without id", ev("customer.subscription.deleted", `{}`)},
		{"invoice without id", ev("invoice.paid", `{"amount_paid":999}`)},
		{"invoice amount not a number", ev("invoice.paid", `{"id":"in_1","amount_paid":"9.99"}`)},
		{"failed invoice without id", ev("invoice.payment_failed", `{}`)},
		{"invoice unknown currency", strings.Replace(jpyInvoice, `"currency": "jpy"`, `"currency": "xyz"`, -1)},
		{"charge without id", ev("charge.refunded", `{"amount_refunded":100}`)},
		{"charge unknown currency", ev("charge.refunded", `{"id":"ch_1","amount_refunded":100,"currency":"q"}`)},
		{"charge not an object", ev("charge.refunded", `[1]`)},
		{"checkout without id", ev("checkout.session.completed", `{"mode":"payment"}`)},
		{"checkout unknown currency", ev("checkout.session.completed", `{"id":"cs_1","mode":"payment","payment_status":"paid","amount_total":100,"currency":"??"}`)},
		{"checkout metadata wrong type", ev("checkout.session.completed", `{"id":"cs_1","metadata":["a"]}`)},
		{"customer without id", ev("customer.created", `{"email":"a@b.c"}`)},
		{"customer not an object", ev("customer.updated", `true`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Notification{Source: SourceStripe, Key: "k", Body: []byte(tt.body)}
			res, err := Map(n, stripeStates{})
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v (result %+v), want ErrMalformed", err, res)
			}
			if len(res.Events) != 0 || len(res.States) != 0 {
				t.Errorf("malformed input produced %+v", res)
			}
		})
	}
}

func TestMapRoutesBySource(t *testing.T) {
	n := stripeNotification(t, "sub_a_created_trialing")
	res, err := Map(n, stripeStates{})
	if err != nil || len(res.Events) != 1 {
		t.Fatalf("Map(stripe) = %+v, %v", res, err)
	}
	n.Source = "paypal"
	if _, err := Map(n, stripeStates{}); !errors.Is(err, ErrUnknownSource) {
		t.Errorf("Map(paypal) error = %v, want ErrUnknownSource", err)
	}
}

func TestStripeDoesNotMutateStates(t *testing.T) {
	st := stripeStates{}
	runStripe(t, st, "checkout_subscription", "sub_a_created_trialing", "sub_a_updated_trial_active")
	shared := sharedStates{}
	for k := range st {
		shared[k], _ = st.State(k)
	}
	before, _ := json.Marshal(shared)
	for _, f := range []string{"invoice_a_paid_cycle", "invoice_d_paid_create", "sub_a_updated_cancel_trial", "sub_a_trial_will_end"} {
		if _, err := Map(stripeNotification(t, f), shared); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := json.Marshal(shared); string(after) != string(before) {
		t.Errorf("mapping changed the states it read:\nbefore %s\nafter  %s", before, after)
	}
}
