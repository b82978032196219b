package mapping

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// stripeEvent is the part of a Stripe event the mapping reads. Fields are
// decoded from the raw body rather than through stripe-go's typed objects so
// that events from a newer API version than the library's still map.
type stripeEvent struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Created  int64  `json:"created"`
	Livemode bool   `json:"livemode"`
	Account  string `json:"account"`
	Data     struct {
		Object   json.RawMessage `json:"object"`
		Previous json.RawMessage `json:"previous_attributes"`
	} `json:"data"`
}

type stripePrice struct {
	ID         string `json:"id"`
	Product    any    `json:"product"` // id, or expanded object
	UnitAmount *int64 `json:"unit_amount"`
	Currency   string `json:"currency"`
	Recurring  *struct {
		Interval      string `json:"interval"`
		IntervalCount int    `json:"interval_count"`
	} `json:"recurring"`
}

type stripeSubscription struct {
	ID                string            `json:"id"`
	Status            string            `json:"status"`
	Customer          any               `json:"customer"`
	CancelAtPeriodEnd bool              `json:"cancel_at_period_end"`
	TrialEnd          int64             `json:"trial_end"`
	LatestInvoice     any               `json:"latest_invoice"` // id, or expanded object
	Discount          json.RawMessage   `json:"discount"`       // up to API 2024-06-20
	Discounts         []json.RawMessage `json:"discounts"`      // since 2024-06-20
	Currency          string            `json:"currency"`
	Metadata          map[string]string `json:"metadata"`
	Items             struct {
		Data []struct {
			Quantity int64       `json:"quantity"`
			Price    stripePrice `json:"price"`
		} `json:"data"`
	} `json:"items"`
}

type stripeInvoice struct {
	ID                 string            `json:"id"`
	BillingReason      string            `json:"billing_reason"`
	AmountPaid         int64             `json:"amount_paid"`
	Currency           string            `json:"currency"`
	Subscription       any               `json:"subscription"`
	Customer           any               `json:"customer"`
	CustomerEmail      string            `json:"customer_email"`
	AttemptCount       int               `json:"attempt_count"`
	Metadata           map[string]string `json:"metadata"`
	SubscriptionDetail *struct {
		Metadata map[string]string `json:"metadata"`
	} `json:"subscription_details"`
	Parent *struct {
		SubscriptionDetails *struct {
			Subscription any               `json:"subscription"`
			Metadata     map[string]string `json:"metadata"`
		} `json:"subscription_details"`
	} `json:"parent"`
	Lines struct {
		Data []struct {
			Period struct {
				Start int64 `json:"start"`
				End   int64 `json:"end"`
			} `json:"period"`
			Price   *stripePrice `json:"price"`
			Pricing *struct {
				PriceDetails *struct {
					Price   string `json:"price"`
					Product string `json:"product"`
				} `json:"price_details"`
			} `json:"pricing"`
		} `json:"data"`
	} `json:"lines"`
}

type stripeCharge struct {
	ID             string            `json:"id"`
	AmountRefunded int64             `json:"amount_refunded"`
	Currency       string            `json:"currency"`
	Customer       any               `json:"customer"`
	Invoice        any               `json:"invoice"`
	PaymentIntent  any               `json:"payment_intent"`
	Metadata       map[string]string `json:"metadata"`
	BillingDetails struct {
		Email string `json:"email"`
		Phone string `json:"phone"`
	} `json:"billing_details"`
}

type stripeCheckout struct {
	ID                string            `json:"id"`
	Mode              string            `json:"mode"`
	PaymentStatus     string            `json:"payment_status"`
	AmountTotal       int64             `json:"amount_total"`
	Currency          string            `json:"currency"`
	ClientReferenceID string            `json:"client_reference_id"`
	Customer          any               `json:"customer"`
	PaymentIntent     any               `json:"payment_intent"`
	Metadata          map[string]string `json:"metadata"`
	SuccessURL        string            `json:"success_url"`
	CustomerDetails   *struct {
		Email string `json:"email"`
		Phone string `json:"phone"`
	} `json:"customer_details"`
}

type stripeCustomer struct {
	ID       string            `json:"id"`
	Email    string            `json:"email"`
	Phone    string            `json:"phone"`
	Metadata map[string]string `json:"metadata"`
}

// stripeMapper carries one event through the mapping.
type stripeMapper struct {
	n   *Notification
	ev  stripeEvent
	st  States
	out Result
}

// Stripe maps a verified Stripe event. Conversions reported by two events
// (customer.subscription.updated and invoice.paid for a trial conversion)
// share one deterministic event id, so whichever arrives first is the one
// canonical event; the second is a duplicate.
func Stripe(n *Notification, st States) (Result, error) {
	m := &stripeMapper{n: n, st: st}
	if err := json.Unmarshal(n.Body, &m.ev); err != nil {
		return Result{}, malformed("stripe event: %v", err)
	}
	if m.ev.ID == "" || m.ev.Type == "" || len(m.ev.Data.Object) == 0 {
		return Result{}, malformed("stripe event without id, type or data.object")
	}
	var err error
	switch m.ev.Type {
	case "customer.subscription.created":
		err = m.subscriptionCreated()
	case "customer.subscription.updated":
		err = m.subscriptionUpdated()
	case "customer.subscription.deleted":
		err = m.subscriptionDeleted()
	case "invoice.paid":
		err = m.invoicePaid()
	case "invoice.payment_failed":
		err = m.invoiceFailed()
	case "charge.refunded":
		err = m.chargeRefunded()
	case "checkout.session.completed", "checkout.session.async_payment_succeeded":
		err = m.checkoutCompleted()
	case "customer.created", "customer.updated":
		err = m.customer()
	default:
		m.out.Ignored = "unhandled stripe event type " + m.ev.Type
	}
	if err != nil {
		return Result{}, err
	}
	if len(m.out.Events) == 0 && m.out.Ignored == "" {
		m.out.Ignored = "no conversion in " + m.ev.Type
	}
	return m.out, nil
}

func (m *stripeMapper) environment() string {
	if m.ev.Livemode {
		return Production
	}
	return Sandbox
}

// event starts a canonical event with the fields every Stripe event shares.
func (m *stripeMapper) event(t Type, idParts ...string) Event {
	return Event{
		ID:            EventID(SourceStripe, append([]string{string(t)}, idParts...)...),
		Type:          t,
		Source:        SourceStripe,
		Environment:   m.environment(),
		AppID:         m.n.AppID,
		OccurredAt:    time.Unix(m.ev.Created, 0).UTC(),
		ReceivedAt:    m.n.ReceivedAt.UTC(),
		SourceEventID: m.ev.ID,
	}
}

// identify fills the user from metadata, then from what the subscription's
// and customer's state remember.
func (m *stripeMapper) identify(e *Event, md map[string]string, states ...State) {
	appUser, ids := IdentifiersFromMetadata(md)
	for _, s := range states {
		if appUser == "" {
			appUser = s.AppUserID
		}
		for k, v := range s.Identifiers {
			if _, ok := ids[k]; !ok {
				ids[k] = v
			}
		}
	}
	if md["app_id"] != "" {
		e.AppID = md["app_id"]
	}
	e.User.AppUserID = appUser
	if len(ids) > 0 {
		e.User.Identifiers = ids
	}
}

func (m *stripeMapper) emit(e Event) { m.out.Events = append(m.out.Events, e) }

// state returns the stored state, or a new one. Map hands every mapping its
// own copy of a state's maps, so changing it leaves the States untouched.
func (m *stripeMapper) state(key string) State {
	s, ok := m.st.State(key)
	if !ok {
		return State{Key: key}
	}
	return s
}

func (m *stripeMapper) save(s State) {
	s.UpdatedAt = m.n.ReceivedAt.UTC()
	m.out.States = append(m.out.States, s)
}

// remember stores the user identity found in metadata on a state so that
// later events of the same subscription or customer carry it.
func remember(s *State, md map[string]string) {
	s.Learn(IdentifiersFromMetadata(md))
}

func stripeID(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		if id, ok := x["id"].(string); ok {
			return id
		}
	}
	return ""
}

func subKey(id string) string      { return "stripe:sub:" + id }
func customerKey(id string) string { return "stripe:cus:" + id }

// period renders a recurring interval as ISO 8601 (P1M, P1Y, P2W, P1D).
func (p *stripePrice) period() string {
	if p == nil || p.Recurring == nil {
		return ""
	}
	n := p.Recurring.IntervalCount
	if n == 0 {
		n = 1
	}
	u := map[string]string{"day": "D", "week": "W", "month": "M", "year": "Y"}[p.Recurring.Interval]
	if u == "" {
		return ""
	}
	return fmt.Sprintf("P%d%s", n, u)
}

func (p *stripePrice) product() string {
	if p == nil {
		return ""
	}
	if id := stripeID(p.Product); id != "" {
		return id
	}
	return p.ID
}

func (s *stripeSubscription) firstPrice() *stripePrice {
	if len(s.Items.Data) == 0 {
		return nil
	}
	return &s.Items.Data[0].Price
}

// listRevenue is the subscription's price per period from its items, used
// when a conversion is first reported by a subscription event rather than by
// its invoice.
func (s *stripeSubscription) listRevenue() (*Revenue, error) {
	var total int64
	cur := s.Currency
	for _, it := range s.Items.Data {
		if it.Price.UnitAmount == nil {
			return nil, nil // tiered or metered: unknown until the invoice
		}
		q := it.Quantity
		if q == 0 {
			q = 1
		}
		total += *it.Price.UnitAmount * q
		if cur == "" {
			cur = it.Price.Currency
		}
	}
	if total <= 0 || cur == "" {
		return nil, nil
	}
	r, err := MicrosFromMinor(total, cur)
	if err != nil {
		return nil, malformed("stripe subscription currency: %v", err)
	}
	return &r, nil
}

func (m *stripeMapper) subscriptionEvent(t Type, sub *stripeSubscription, idParts ...string) Event {
	e := m.event(t, append([]string{sub.ID}, idParts...)...)
	e.SubscriptionID = sub.ID
	p := sub.firstPrice()
	e.ProductID = p.product()
	if p != nil {
		e.SetAttribute("price_id", p.ID)
	}
	e.SetAttribute("period", p.period())
	cus := stripeID(sub.Customer)
	m.identify(&e, sub.Metadata, m.state(subKey(sub.ID)), m.state(customerKey(cus)))
	if cus != "" {
		e.SetIdentifier(IDStripeCustomer, cus)
	}
	return e
}

func (m *stripeMapper) decodeSub() (*stripeSubscription, State, error) {
	var sub stripeSubscription
	if err := json.Unmarshal(m.ev.Data.Object, &sub); err != nil {
		return nil, State{}, malformed("stripe subscription: %v", err)
	}
	if sub.ID == "" {
		return nil, State{}, malformed("stripe subscription without id")
	}
	s, known := m.st.State(subKey(sub.ID))
	if !known {
		s = State{Key: subKey(sub.ID)}
		if m.ev.Type != "customer.subscription.created" {
			// First seen mid-lifecycle: nothing says yet whether the
			// current period is a trial (cleared by what tells).
			s.SetValue(stripeHistoryUnknown, "1")
		}
	}
	upgradeStripeState(&s)
	remember(&s, sub.Metadata)
	s.Status = sub.Status
	s.CancelAtPeriodEnd = sub.CancelAtPeriodEnd
	if p := sub.firstPrice(); p != nil {
		s.ProductID, s.PriceID = p.product(), p.ID
	}
	if sub.TrialEnd > 0 {
		s.SetValue("trial_end", strconv.FormatInt(sub.TrialEnd, 10))
	}
	return &sub, s, nil
}

func (m *stripeMapper) subscriptionCreated() error {
	sub, s, err := m.decodeSub()
	if err != nil {
		return err
	}
	// The start is known now, whatever its invoice said before.
	freeStart := s.Value(stripeStartUnknown) != ""
	delete(s.Values, stripeStartUnknown)
	delete(s.Values, stripeHistoryUnknown)
	switch sub.Status {
	case "trialing":
		e := m.subscriptionEvent(TrialStarted, sub)
		e.SetAttribute("offer", "free_trial")
		m.emit(e)
		s.InTrial, s.TrialUsed = true, true
	case "active":
		if sub.discounted() && !freeStart {
			// The first invoice (billing_reason subscription_create, the
			// same event id) reports the start with the amount paid.
			m.out.Ignored = "subscription created active with a discount: subscription_started is reported by its first invoice, with the amount paid"
			break
		}
		if freeStart {
			// Its first invoice came first and charged nothing (a 100 %
			// coupon): a start without revenue.
			m.emit(m.subscriptionEvent(SubscriptionStarted, sub))
			break
		}
		e := m.subscriptionEvent(SubscriptionStarted, sub)
		rev, err := sub.listRevenue()
		if err != nil {
			return err
		}
		e.Revenue = rev
		m.emit(e)
	default:
		m.out.Ignored = "subscription created with status " + sub.Status
	}
	m.save(s)
	return nil
}

// stripePrevious is the subset of previous_attributes we compare against.
type stripePrevious struct {
	Status            *string `json:"status"`
	CancelAtPeriodEnd *bool   `json:"cancel_at_period_end"`
	Items             *struct {
		Data []struct {
			Price stripePrice `json:"price"`
		} `json:"data"`
	} `json:"items"`
}

func (m *stripeMapper) subscriptionUpdated() error {
	sub, s, err := m.decodeSub()
	if err != nil {
		return err
	}
	var prev stripePrevious
	if len(m.ev.Data.Previous) > 0 {
		if err := json.Unmarshal(m.ev.Data.Previous, &prev); err != nil {
			return malformed("stripe previous_attributes: %v", err)
		}
	}
	if prev.Status != nil && *prev.Status == "trialing" && sub.Status == "active" {
		if err := m.trialEnded(sub, &s); err != nil {
			return err
		}
	}
	if prev.Status != nil && *prev.Status != "trialing" && sub.Status == "trialing" {
		s.InTrial = true
	}
	if prev.CancelAtPeriodEnd != nil && !*prev.CancelAtPeriodEnd && sub.CancelAtPeriodEnd {
		t := SubscriptionCancelled
		if sub.Status == "trialing" {
			t = TrialCancelled
		}
		m.emit(m.subscriptionEvent(t, sub, m.ev.ID))
	}
	if prev.CancelAtPeriodEnd != nil && *prev.CancelAtPeriodEnd && !sub.CancelAtPeriodEnd {
		m.emit(m.subscriptionEvent(SubscriptionUncancelled, sub, m.ev.ID))
	}
	if prev.Items != nil && len(prev.Items.Data) > 0 {
		if p := sub.firstPrice(); p != nil && p.ID != prev.Items.Data[0].Price.ID {
			e := m.subscriptionEvent(ProductChanged, sub, m.ev.ID)
			e.SetAttribute("previous_price_id", prev.Items.Data[0].Price.ID)
			e.SetAttribute("previous_product_id", prev.Items.Data[0].Price.product())
			m.emit(e)
		}
	}
	m.save(s)
	return nil
}

// Stripe subscription state values (State.Values) that order a trial
// conversion. Stripe does not order its events, and the gateway may lack
// the subscription's earlier events, so both the trialing -> active update
// and the conversion invoice record what they saw:
//
//   - stripeConversionPending: the update came first; the next
//     subscription_cycle invoice is the conversion (the same event id),
//     whatever its amount, so a 0-amount conversion consumes it too and
//     the first paid renewal after it stays a renewal. Its value is the
//     update's latest_invoice, kept for the record.
//   - stripeConvertedBy: the invoice that reported the conversion; the
//     same invoice again maps to the same trial_converted event.
//   - stripeUnknownRenewal: a subscription_cycle invoice arrived with no
//     state at all, so it became subscription_renewed with
//     previous_period=unknown (or, at 0, nothing); a later trialing ->
//     active update must not report that payment a second time.
//   - stripeHistoryUnknown: the state was created by an event that does
//     not tell whether the current period is a trial (an update other
//     than trialing -> active, a deletion): for the next cycle invoice it
//     is as if there were no state.
//   - stripeStartUnknown: a 0-amount subscription_create invoice without
//     the subscription's state (a free trial or a 100 % coupon; the
//     invoice does not tell): the next cycle's previous period is unknown.
const (
	stripeConversionPending = "conversion_pending"
	stripeConvertedBy       = "converted_by"
	stripeUnknownRenewal    = "unknown_renewal"
	stripeStartUnknown      = "start_unknown"
	stripeHistoryUnknown    = "history_unknown"
	stripeLegacyConverted   = "trial_converted" // before issue 13: "1" pending, "2" reported
)

// upgradeStripeState reads the trial marker written before issue 13.
func upgradeStripeState(s *State) {
	switch s.Value(stripeLegacyConverted) {
	case "1":
		s.SetValue(stripeConversionPending, "")
	case "2":
		s.SetValue(stripeConvertedBy, "?")
	default:
		return
	}
	delete(s.Values, stripeLegacyConverted)
}

// discounted reports whether a coupon applies to the subscription: then its
// price list amount is not what its invoices charge.
func (s *stripeSubscription) discounted() bool {
	d := strings.TrimSpace(string(s.Discount))
	return (d != "" && d != "null") || len(s.Discounts) > 0
}

// trialEnded handles trialing -> active. It reports trial_converted with
// the price list amount under the conversion's one id, unless the
// conversion invoice was already counted, or a coupon makes the list amount
// wrong (then the invoice reports it, with the amount paid). Either way the
// next subscription_cycle invoice is the conversion's, whatever its amount.
func (m *stripeMapper) trialEnded(sub *stripeSubscription, s *State) error {
	s.InTrial = false
	delete(s.Values, stripeHistoryUnknown)
	latest := stripeID(sub.LatestInvoice)
	switch unknown := s.Value(stripeUnknownRenewal); {
	case s.Value(stripeConvertedBy) != "":
		m.out.Ignored = "trial conversion already reported by invoice " + s.Value(stripeConvertedBy)
		return nil
	case unknown != "":
		// A subscription has one trial: the cycle invoice counted without
		// knowing its previous period was this conversion's (its
		// latest_invoice may even name a later draft).
		m.out.Ignored = "trial conversion invoice " + unknown + " was reported as subscription_renewed (previous_period=unknown)"
		return nil
	}
	s.SetValue(stripeConversionPending, latest)
	if sub.discounted() {
		m.out.Ignored = "trial ended with a discount: trial_converted is reported by the conversion invoice, with the amount paid"
		return nil
	}
	e := m.subscriptionEvent(TrialConverted, sub)
	rev, err := sub.listRevenue()
	if err != nil {
		return err
	}
	e.Revenue = rev
	e.SetAttribute("offer", "free_trial")
	m.emit(e)
	return nil
}

func (m *stripeMapper) subscriptionDeleted() error {
	sub, s, err := m.decodeSub()
	if err != nil {
		return err
	}
	m.emit(m.subscriptionEvent(SubscriptionExpired, sub))
	s.InTrial = false
	m.save(s)
	return nil
}

func (inv *stripeInvoice) subscriptionID() string {
	if id := stripeID(inv.Subscription); id != "" {
		return id
	}
	if inv.Parent != nil && inv.Parent.SubscriptionDetails != nil {
		return stripeID(inv.Parent.SubscriptionDetails.Subscription)
	}
	return ""
}

func (inv *stripeInvoice) metadata() map[string]string {
	md := map[string]string{}
	if inv.SubscriptionDetail != nil {
		for k, v := range inv.SubscriptionDetail.Metadata {
			md[k] = v
		}
	}
	if inv.Parent != nil && inv.Parent.SubscriptionDetails != nil {
		for k, v := range inv.Parent.SubscriptionDetails.Metadata {
			md[k] = v
		}
	}
	for k, v := range inv.Metadata {
		md[k] = v
	}
	if inv.CustomerEmail != "" && md["email"] == "" {
		md["email"] = inv.CustomerEmail
	}
	return md
}

func (m *stripeMapper) invoiceEvent(t Type, inv *stripeInvoice, subID string, idParts ...string) Event {
	e := m.event(t, append([]string{subID}, idParts...)...)
	e.SubscriptionID = subID
	e.TransactionID = inv.ID
	if len(inv.Lines.Data) > 0 {
		l := inv.Lines.Data[0]
		if l.Price != nil {
			e.ProductID = l.Price.product()
			e.SetAttribute("price_id", l.Price.ID)
			e.SetAttribute("period", l.Price.period())
		} else if l.Pricing != nil && l.Pricing.PriceDetails != nil {
			e.ProductID = l.Pricing.PriceDetails.Product
			e.SetAttribute("price_id", l.Pricing.PriceDetails.Price)
		}
	}
	sub := m.state(subKey(subID))
	if e.ProductID == "" {
		e.ProductID = sub.ProductID
	}
	cus := stripeID(inv.Customer)
	m.identify(&e, inv.metadata(), sub, m.state(customerKey(cus)))
	if cus != "" {
		e.SetIdentifier(IDStripeCustomer, cus)
	}
	return e
}

func (m *stripeMapper) decodeInvoice() (*stripeInvoice, string, error) {
	var inv stripeInvoice
	if err := json.Unmarshal(m.ev.Data.Object, &inv); err != nil {
		return nil, "", malformed("stripe invoice: %v", err)
	}
	if inv.ID == "" {
		return nil, "", malformed("stripe invoice without id")
	}
	return &inv, inv.subscriptionID(), nil
}

func (m *stripeMapper) invoicePaid() error {
	inv, subID, err := m.decodeInvoice()
	if err != nil {
		return err
	}
	if subID == "" {
		m.out.Ignored = "invoice without subscription"
		return nil
	}
	var rev *Revenue
	if inv.AmountPaid > 0 {
		r, err := MicrosFromMinor(inv.AmountPaid, inv.Currency)
		if err != nil {
			return malformed("stripe invoice currency: %v", err)
		}
		rev = &r
	}
	s, known := m.st.State(subKey(subID))
	if !known {
		s = State{Key: subKey(subID)}
	}
	upgradeStripeState(&s)
	remember(&s, inv.metadata())
	switch inv.BillingReason {
	case "subscription_create":
		switch {
		case rev != nil:
			delete(s.Values, stripeHistoryUnknown) // a paid first period
		case s.InTrial || s.Status == "trialing":
			m.out.Ignored = "subscription_create invoice without payment (trial)"
		case known && s.Status == "active":
			// Started without a charge (100 % coupon, credit balance).
		default:
			// A free trial or a 100 % coupon: the invoice does not tell.
			s.SetValue(stripeStartUnknown, inv.ID)
			m.out.Ignored = "subscription_create invoice without payment (trial, or a start without charge)"
		}
		if m.out.Ignored != "" {
			break
		}
		e := m.invoiceEvent(SubscriptionStarted, inv, subID)
		e.Revenue = rev
		m.emit(e)
	case "subscription_cycle":
		_, pending := s.Values[stripeConversionPending]
		by := s.Value(stripeConvertedBy)
		switch {
		case by == inv.ID || s.InTrial || pending:
			// The period before this invoice was a free trial. One id
			// per subscription: a re-sent conversion invoice is the same
			// event.
			e := m.invoiceEvent(TrialConverted, inv, subID)
			e.Revenue = rev
			e.SetAttribute("offer", "free_trial")
			m.emit(e)
			s.InTrial = false
			delete(s.Values, stripeConversionPending)
			delete(s.Values, stripeStartUnknown)
			delete(s.Values, stripeHistoryUnknown)
			s.SetValue(stripeConvertedBy, inv.ID)
		default:
			// Nothing says whether the period before was a trial: a
			// conversion is never guessed. The invoice is remembered so
			// that a trialing -> active update naming it adds nothing.
			unknown := !known || s.Value(stripeStartUnknown) != "" || s.Value(stripeHistoryUnknown) != ""
			if unknown {
				if s.Value(stripeUnknownRenewal) == "" {
					s.SetValue(stripeUnknownRenewal, inv.ID)
				}
				delete(s.Values, stripeStartUnknown)
				delete(s.Values, stripeHistoryUnknown)
			}
			if rev == nil {
				m.out.Ignored = "subscription_cycle invoice without payment"
				break
			}
			e := m.invoiceEvent(SubscriptionRenewed, inv, subID, inv.ID)
			e.Revenue = rev
			if unknown {
				e.SetAttribute("previous_period", "unknown")
			}
			m.emit(e)
		}
	case "subscription_update":
		// A plan change invoiced at once (proration_behavior
		// always_invoice): the charge of the change. The update reports
		// the change itself (product_changed without revenue); this event
		// carries the money, with its own id per invoice.
		if rev == nil {
			m.out.Ignored = "subscription_update invoice without payment (a credit, or proration at the next cycle)"
			break
		}
		e := m.invoiceEvent(ProductChanged, inv, subID, inv.ID)
		e.Revenue = rev
		e.SetAttribute("proration", "true")
		m.emit(e)
	default:
		m.out.Ignored = "invoice billing_reason " + inv.BillingReason
	}
	m.save(s)
	return nil
}

func (m *stripeMapper) invoiceFailed() error {
	inv, subID, err := m.decodeInvoice()
	if err != nil {
		return err
	}
	if subID == "" {
		m.out.Ignored = "invoice without subscription"
		return nil
	}
	e := m.invoiceEvent(BillingIssue, inv, subID, inv.ID)
	e.SetAttribute("attempt_count", strconv.Itoa(inv.AttemptCount))
	m.emit(e)
	return nil
}

func (m *stripeMapper) chargeRefunded() error {
	var ch stripeCharge
	if err := json.Unmarshal(m.ev.Data.Object, &ch); err != nil {
		return malformed("stripe charge: %v", err)
	}
	if ch.ID == "" {
		return malformed("stripe charge without id")
	}
	key := "stripe:charge:" + ch.ID
	s := m.state(key)
	before, _ := strconv.ParseInt(s.Value("amount_refunded"), 10, 64)
	var prev struct {
		AmountRefunded *int64 `json:"amount_refunded"`
	}
	if len(m.ev.Data.Previous) > 0 && json.Unmarshal(m.ev.Data.Previous, &prev) == nil && prev.AmountRefunded != nil && *prev.AmountRefunded > before {
		before = *prev.AmountRefunded
	}
	delta := ch.AmountRefunded - before
	if delta <= 0 {
		m.out.Ignored = "refund already counted"
		return nil
	}
	r, err := MicrosFromMinor(-delta, ch.Currency)
	if err != nil {
		return malformed("stripe charge currency: %v", err)
	}
	e := m.event(Refund, ch.ID, strconv.FormatInt(ch.AmountRefunded, 10))
	e.TransactionID = ch.ID
	e.Revenue = &r
	md := map[string]string{}
	for k, v := range ch.Metadata {
		md[k] = v
	}
	if md["email"] == "" && ch.BillingDetails.Email != "" {
		md["email"] = ch.BillingDetails.Email
	}
	if md["phone"] == "" && ch.BillingDetails.Phone != "" {
		md["phone"] = ch.BillingDetails.Phone
	}
	cus := stripeID(ch.Customer)
	m.identify(&e, md, m.state(customerKey(cus)))
	if cus != "" {
		e.SetIdentifier(IDStripeCustomer, cus)
	}
	if inv := stripeID(ch.Invoice); inv != "" {
		e.SetAttribute("invoice_id", inv)
	}
	if pi := stripeID(ch.PaymentIntent); pi != "" {
		e.SetAttribute("payment_intent_id", pi)
	}
	m.emit(e)
	s.SetValue("amount_refunded", strconv.FormatInt(ch.AmountRefunded, 10))
	m.save(s)
	return nil
}

func (m *stripeMapper) checkoutCompleted() error {
	var cs stripeCheckout
	if err := json.Unmarshal(m.ev.Data.Object, &cs); err != nil {
		return malformed("stripe checkout session: %v", err)
	}
	if cs.ID == "" {
		return malformed("stripe checkout session without id")
	}
	md := map[string]string{}
	for k, v := range cs.Metadata {
		md[k] = v
	}
	if md["app_user_id"] == "" && cs.ClientReferenceID != "" {
		md["app_user_id"] = cs.ClientReferenceID
	}
	if cs.CustomerDetails != nil {
		if md["email"] == "" {
			md["email"] = cs.CustomerDetails.Email
		}
		if md["phone"] == "" {
			md["phone"] = cs.CustomerDetails.Phone
		}
	}
	cus := stripeID(cs.Customer)
	if cus != "" {
		// Link the customer to the app user so its invoices and refunds
		// carry the identity even without metadata of their own.
		c := m.state(customerKey(cus))
		remember(&c, md)
		m.save(c)
	}
	if cs.Mode != "payment" {
		m.out.Ignored = "checkout mode " + cs.Mode + " (the subscription events carry the conversion)"
		return nil
	}
	if cs.PaymentStatus != "paid" {
		m.out.Ignored = "checkout payment_status " + cs.PaymentStatus
		return nil
	}
	e := m.event(Purchase, cs.ID)
	e.TransactionID = cs.ID
	if cs.AmountTotal > 0 {
		r, err := MicrosFromMinor(cs.AmountTotal, cs.Currency)
		if err != nil {
			return malformed("stripe checkout currency: %v", err)
		}
		e.Revenue = &r
	}
	m.identify(&e, md, m.state(customerKey(cus)))
	if cus != "" {
		e.SetIdentifier(IDStripeCustomer, cus)
	}
	if pi := stripeID(cs.PaymentIntent); pi != "" {
		e.SetAttribute("payment_intent_id", pi)
	}
	e.SetAttribute(AttrSuccessURL, PageURL(cs.SuccessURL, ""))
	m.emit(e)
	return nil
}

func (m *stripeMapper) customer() error {
	var c stripeCustomer
	if err := json.Unmarshal(m.ev.Data.Object, &c); err != nil {
		return malformed("stripe customer: %v", err)
	}
	if c.ID == "" {
		return malformed("stripe customer without id")
	}
	md := map[string]string{}
	for k, v := range c.Metadata {
		md[k] = v
	}
	if md["email"] == "" {
		md["email"] = c.Email
	}
	if md["phone"] == "" {
		md["phone"] = c.Phone
	}
	s := m.state(customerKey(c.ID))
	remember(&s, md)
	m.save(s)
	m.out.Ignored = "customer identity recorded"
	return nil
}
