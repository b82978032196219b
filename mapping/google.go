package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrGoogleShape reports a Google Play developer notification that is not one
// of the documented shapes (not JSON, no or several notification kinds, a
// missing package name or purchase token). Such a notification is authentic
// (the push token was verified) and is recorded as ignored, never retried.
var ErrGoogleShape = errors.New("mapping: unrecognised google play notification")

// FlexString is a JSON value sent by Google as a string that some senders
// encode as a number (eventTimeMillis). Both forms decode to the same digits,
// never through float64.
type FlexString string

// UnmarshalJSON implements json.Unmarshaler.
func (s *FlexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*s = ""
	case len(b) > 0 && b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = FlexString(v)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("not a string or number: %s", b)
		}
		*s = FlexString(n.String())
	}
	return nil
}

// FlexInt is a JSON integer that may arrive quoted (Google's int64 fields,
// such as Money.units, are JSON strings; notificationType is a number).
type FlexInt int64

// UnmarshalJSON implements json.Unmarshaler.
func (i *FlexInt) UnmarshalJSON(b []byte) error {
	var s FlexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	if s == "" {
		*i = 0
		return nil
	}
	v, err := strconv.ParseInt(string(s), 10, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %q", string(s))
	}
	*i = FlexInt(v)
	return nil
}

// GoogleNotification is a Google Play real-time developer notification (the
// JSON carried base64-encoded in a Pub/Sub message's data). Exactly one of
// Subscription, OneTimeProduct, Voided and Test is set.
type GoogleNotification struct {
	Version         string                      `json:"version"`
	PackageName     string                      `json:"packageName"`
	EventTimeMillis FlexString                  `json:"eventTimeMillis"`
	Subscription    *GoogleSubscriptionNotice   `json:"subscriptionNotification,omitempty"`
	OneTimeProduct  *GoogleOneTimeNotice        `json:"oneTimeProductNotification,omitempty"`
	Voided          *GoogleVoidedPurchaseNotice `json:"voidedPurchaseNotification,omitempty"`
	Test            *struct {
		Version string `json:"version"`
	} `json:"testNotification,omitempty"`
}

// GoogleSubscriptionNotice is the subscriptionNotification object.
type GoogleSubscriptionNotice struct {
	Version          string     `json:"version"`
	NotificationType FlexInt    `json:"notificationType"`
	PurchaseToken    string     `json:"purchaseToken"`
	SubscriptionID   FlexString `json:"subscriptionId"`
}

// GoogleOneTimeNotice is the oneTimeProductNotification object.
type GoogleOneTimeNotice struct {
	Version          string     `json:"version"`
	NotificationType FlexInt    `json:"notificationType"`
	PurchaseToken    string     `json:"purchaseToken"`
	SKU              FlexString `json:"sku"`
}

// GoogleVoidedPurchaseNotice is the voidedPurchaseNotification object.
type GoogleVoidedPurchaseNotice struct {
	PurchaseToken string  `json:"purchaseToken"`
	OrderID       string  `json:"orderId"`
	ProductType   FlexInt `json:"productType"` // 1 subscription, 2 one-time
	RefundType    FlexInt `json:"refundType"`  // 1 full, 2 quantity-based partial
}

// Google notification kinds (GoogleNotification.Kind).
const (
	GoogleKindSubscription = "subscription"
	GoogleKindOneTime      = "one_time_product"
	GoogleKindVoided       = "voided_purchase"
	GoogleKindTest         = "test"
)

// Voided purchase refund types.
const (
	GoogleRefundFull    = 1
	GoogleRefundPartial = 2
)

// googleSubscriptionTypes names subscriptionNotification.notificationType.
var googleSubscriptionTypes = map[int64]string{
	1:  "SUBSCRIPTION_RECOVERED",
	2:  "SUBSCRIPTION_RENEWED",
	3:  "SUBSCRIPTION_CANCELED",
	4:  "SUBSCRIPTION_PURCHASED",
	5:  "SUBSCRIPTION_ON_HOLD",
	6:  "SUBSCRIPTION_IN_GRACE_PERIOD",
	7:  "SUBSCRIPTION_RESTARTED",
	8:  "SUBSCRIPTION_PRICE_CHANGE_CONFIRMED",
	9:  "SUBSCRIPTION_DEFERRED",
	10: "SUBSCRIPTION_PAUSED",
	11: "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED",
	12: "SUBSCRIPTION_REVOKED",
	13: "SUBSCRIPTION_EXPIRED",
	17: "SUBSCRIPTION_ITEMS_CHANGED",
	18: "SUBSCRIPTION_CANCELLATION_SCHEDULED",
	19: "SUBSCRIPTION_PRICE_CHANGE_UPDATED",
	20: "SUBSCRIPTION_PENDING_PURCHASE_CANCELED",
	22: "SUBSCRIPTION_PRICE_STEP_UP_CONSENT_UPDATED",
}

// googleOneTimeTypes names oneTimeProductNotification.notificationType.
var googleOneTimeTypes = map[int64]string{
	1: "ONE_TIME_PRODUCT_PURCHASED",
	2: "ONE_TIME_PRODUCT_CANCELED",
}

// GoogleSubscriptionEvents lists the subscription notification types that
// produce a canonical event (and so need the Play API first). Every other
// type is recorded without an event.
var googleSubscriptionEvents = map[string]Type{
	"SUBSCRIPTION_RECOVERED":       BillingRecovered,
	"SUBSCRIPTION_RENEWED":         SubscriptionRenewed, // or trial_converted
	"SUBSCRIPTION_CANCELED":        SubscriptionCancelled,
	"SUBSCRIPTION_PURCHASED":       SubscriptionStarted, // or trial_started
	"SUBSCRIPTION_ON_HOLD":         BillingIssue,
	"SUBSCRIPTION_IN_GRACE_PERIOD": BillingIssue,
	"SUBSCRIPTION_RESTARTED":       SubscriptionUncancelled,
	"SUBSCRIPTION_PAUSED":          SubscriptionPaused,
	"SUBSCRIPTION_REVOKED":         Refund,
	"SUBSCRIPTION_EXPIRED":         SubscriptionExpired,
	"SUBSCRIPTION_ITEMS_CHANGED":   ProductChanged,
}

// ParseGoogleNotification decodes and checks a developer notification. The
// error wraps ErrGoogleShape when the JSON is not a known shape.
func ParseGoogleNotification(data []byte) (*GoogleNotification, error) {
	var g GoogleNotification
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrGoogleShape, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrGoogleShape)
	}
	kinds := 0
	for _, set := range []bool{g.Subscription != nil, g.OneTimeProduct != nil, g.Voided != nil, g.Test != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		return nil, fmt.Errorf("%w: no known notification kind", ErrGoogleShape)
	case kinds > 1:
		return nil, fmt.Errorf("%w: %d notification kinds in one message", ErrGoogleShape, kinds)
	case g.PackageName == "":
		return nil, fmt.Errorf("%w: no packageName", ErrGoogleShape)
	}
	if g.EventTimeMillis != "" {
		if _, err := strconv.ParseInt(string(g.EventTimeMillis), 10, 64); err != nil {
			return nil, fmt.Errorf("%w: eventTimeMillis %q is not an integer", ErrGoogleShape, string(g.EventTimeMillis))
		}
	}
	switch {
	case g.Subscription != nil && (g.Subscription.PurchaseToken == "" || g.Subscription.NotificationType == 0):
		return nil, fmt.Errorf("%w: subscriptionNotification without purchaseToken or notificationType", ErrGoogleShape)
	case g.OneTimeProduct != nil && (g.OneTimeProduct.PurchaseToken == "" || g.OneTimeProduct.NotificationType == 0):
		return nil, fmt.Errorf("%w: oneTimeProductNotification without purchaseToken or notificationType", ErrGoogleShape)
	case g.Voided != nil && (g.Voided.PurchaseToken == "" || g.Voided.OrderID == ""):
		return nil, fmt.Errorf("%w: voidedPurchaseNotification without purchaseToken or orderId", ErrGoogleShape)
	}
	return &g, nil
}

// Kind returns which notification the message carries.
func (g *GoogleNotification) Kind() string {
	switch {
	case g.Subscription != nil:
		return GoogleKindSubscription
	case g.OneTimeProduct != nil:
		return GoogleKindOneTime
	case g.Voided != nil:
		return GoogleKindVoided
	default:
		return GoogleKindTest
	}
}

// TypeName returns the notification's type name as Google documents it
// (SUBSCRIPTION_RENEWED, ONE_TIME_PRODUCT_PURCHASED, VOIDED_PURCHASE, TEST);
// unknown codes read SUBSCRIPTION_TYPE_<n>.
func (g *GoogleNotification) TypeName() string {
	switch g.Kind() {
	case GoogleKindSubscription:
		if n, ok := googleSubscriptionTypes[int64(g.Subscription.NotificationType)]; ok {
			return n
		}
		return fmt.Sprintf("SUBSCRIPTION_TYPE_%d", g.Subscription.NotificationType)
	case GoogleKindOneTime:
		if n, ok := googleOneTimeTypes[int64(g.OneTimeProduct.NotificationType)]; ok {
			return n
		}
		return fmt.Sprintf("ONE_TIME_PRODUCT_TYPE_%d", g.OneTimeProduct.NotificationType)
	case GoogleKindVoided:
		return "VOIDED_PURCHASE"
	}
	return "TEST"
}

// PurchaseToken returns the token the notification is about ("" for tests).
func (g *GoogleNotification) PurchaseToken() string {
	switch g.Kind() {
	case GoogleKindSubscription:
		return g.Subscription.PurchaseToken
	case GoogleKindOneTime:
		return g.OneTimeProduct.PurchaseToken
	case GoogleKindVoided:
		return g.Voided.PurchaseToken
	}
	return ""
}

// NeedsPlayAPI reports whether the notification can produce an event and so
// must be enriched from the Android Publisher API before it is mapped.
func (g *GoogleNotification) NeedsPlayAPI() bool {
	switch g.Kind() {
	case GoogleKindSubscription:
		_, ok := googleSubscriptionEvents[g.TypeName()]
		return ok
	case GoogleKindOneTime:
		return g.TypeName() == "ONE_TIME_PRODUCT_PURCHASED"
	case GoogleKindVoided:
		return true
	}
	return false
}

// DedupeKey is the notification's business key, used as the inbox alt key
// next to the Pub/Sub messageId: purchaseToken|type|eventTimeMillis, or for
// a voided purchase "voided:"+orderId+":"+refund kind, which the
// reconciliation sweep derives the same way.
func (g *GoogleNotification) DedupeKey() string {
	switch g.Kind() {
	case GoogleKindVoided:
		return GoogleVoidedKey(g.Voided.OrderID, int64(g.Voided.RefundType) == GoogleRefundPartial)
	case GoogleKindTest:
		return ""
	}
	return g.PurchaseToken() + "|" + g.TypeName() + "|" + string(g.EventTimeMillis)
}

// GoogleVoidedKey is the inbox key shared by an RTDN voided-purchase
// notification and the same refund found by reconciliation.
func GoogleVoidedKey(orderID string, partial bool) string {
	if partial {
		return "voided:" + orderID + ":partial"
	}
	return "voided:" + orderID + ":full"
}

// GoogleEnrichment is what the enrichment worker fetched from the Android
// Publisher API for one notification, stored in Notification.Enriched. Each
// resource is the API's JSON answer as received.
type GoogleEnrichment struct {
	// Subscription is purchases.subscriptionsv2.get (SubscriptionPurchaseV2).
	Subscription json.RawMessage `json:"subscription,omitempty"`
	// Product is purchases.products.get (ProductPurchase).
	Product json.RawMessage `json:"product,omitempty"`
	// Order is orders.get for the order that moved money (the line item's
	// latestSuccessfulOrderId, the product's orderId, or the voided order).
	Order json.RawMessage `json:"order,omitempty"`
	// PreviousOrder is the order a renewal follows ("GPA.x..0" follows
	// "GPA.x"), read to tell whether the period that just ended was a free
	// trial when no state remembers it.
	PreviousOrder json.RawMessage `json:"previous_order,omitempty"`
	// NotFound is set when the API answered 404 or 410 for the purchase
	// itself: the notification is final and recorded as ignored.
	NotFound string `json:"not_found,omitempty"`
	// Missing lists secondary resources that were not found ("order",
	// "previous_order", "subscription", "product"); the event is still made,
	// without what they would have added.
	Missing []string `json:"missing,omitempty"`
	// RevenueUnknown says why the order that moved money could not be read
	// (GoogleOrderNotFound, GoogleOrderUnavailable after the enricher's
	// bounded retries). Events that would carry its amount are made without
	// revenue and with the attribute revenue_unknown=true, never silently.
	RevenueUnknown string `json:"revenue_unknown,omitempty"`
	// OrderError is the last order look-up error behind
	// GoogleOrderUnavailable (logged and kept for the operator).
	OrderError string `json:"order_error,omitempty"`
}

// Reasons of GoogleEnrichment.RevenueUnknown (attribute revenue_unknown_reason).
const (
	GoogleOrderNotFound    = "order_not_found"
	GoogleOrderUnavailable = "order_unavailable"
)

// googleMoneyTypes are the event types that carry the order's amount.
var googleMoneyTypes = map[Type]bool{
	SubscriptionStarted: true, SubscriptionRenewed: true, TrialConverted: true, BillingRecovered: true,
	SubscriptionReactivated: true, ProductChanged: true, Purchase: true, Refund: true,
}

// markRevenueUnknown flags the events that should carry the order's amount
// but do not, because the order could not be read.
func (m *googleMapper) markRevenueUnknown() {
	why := m.en.RevenueUnknown
	if why == "" && m.order == nil {
		for _, r := range m.en.Missing {
			if r == "order" {
				why = GoogleOrderNotFound
			}
		}
	}
	if why == "" {
		return
	}
	for i := range m.out.Events {
		e := &m.out.Events[i]
		if e.Revenue != nil || !googleMoneyTypes[e.Type] {
			continue
		}
		e.SetAttribute("revenue_unknown", "true")
		e.SetAttribute("revenue_unknown_reason", why)
	}
}

type googleMoney struct {
	CurrencyCode string  `json:"currencyCode"`
	Units        FlexInt `json:"units"`
	Nanos        FlexInt `json:"nanos"`
}

func (m *googleMoney) revenue() (*Revenue, error) {
	if m == nil || m.CurrencyCode == "" {
		return nil, nil
	}
	if m.Nanos > 999_999_999 || m.Nanos < -999_999_999 {
		return nil, malformed("google money: nanos %d out of range", m.Nanos)
	}
	r, err := MicrosFromUnitsNanos(int64(m.Units), int32(m.Nanos), m.CurrencyCode)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

type googleLineItem struct {
	ProductID               string `json:"productId"`
	ExpiryTime              string `json:"expiryTime"`
	LatestSuccessfulOrderID string `json:"latestSuccessfulOrderId"`
	AutoRenewingPlan        *struct {
		AutoRenewEnabled bool         `json:"autoRenewEnabled"`
		RecurringPrice   *googleMoney `json:"recurringPrice"`
	} `json:"autoRenewingPlan"`
	PrepaidPlan  *struct{} `json:"prepaidPlan"`
	OfferDetails *struct {
		BasePlanID string   `json:"basePlanId"`
		OfferID    string   `json:"offerId"`
		OfferTags  []string `json:"offerTags"`
	} `json:"offerDetails"`
	OfferPhase *struct {
		BasePrice         *struct{} `json:"basePrice"`
		FreeTrial         *struct{} `json:"freeTrial"`
		IntroductoryPrice *struct{} `json:"introductoryPrice"`
		ProrationPeriod   *struct{} `json:"prorationPeriod"`
	} `json:"offerPhase"`
}

// phase is the line item's current offer phase: free_trial, introductory,
// base, proration or "".
func (li *googleLineItem) phase() string {
	if li == nil || li.OfferPhase == nil {
		return ""
	}
	switch {
	case li.OfferPhase.FreeTrial != nil:
		return "free_trial"
	case li.OfferPhase.IntroductoryPrice != nil:
		return "introductory"
	case li.OfferPhase.ProrationPeriod != nil:
		return "proration"
	case li.OfferPhase.BasePrice != nil:
		return "base"
	}
	return ""
}

type googleSubscription struct {
	SubscriptionState          string `json:"subscriptionState"`
	LinkedPurchaseToken        string `json:"linkedPurchaseToken"`
	RegionCode                 string `json:"regionCode"`
	StartTime                  string `json:"startTime"`
	ExternalAccountIdentifiers *struct {
		ObfuscatedExternalAccountID string `json:"obfuscatedExternalAccountId"`
		ObfuscatedExternalProfileID string `json:"obfuscatedExternalProfileId"`
	} `json:"externalAccountIdentifiers"`
	TestPurchase         *struct{} `json:"testPurchase"`
	CanceledStateContext *struct {
		UserInitiatedCancellation      *struct{} `json:"userInitiatedCancellation"`
		SystemInitiatedCancellation    *struct{} `json:"systemInitiatedCancellation"`
		DeveloperInitiatedCancellation *struct{} `json:"developerInitiatedCancellation"`
		ReplacementCancellation        *struct{} `json:"replacementCancellation"`
	} `json:"canceledStateContext"`
	LineItems []googleLineItem `json:"lineItems"`
}

// item returns the line item for productID, else the first one.
func (s *googleSubscription) item(productID string) *googleLineItem {
	for i := range s.LineItems {
		if s.LineItems[i].ProductID == productID {
			return &s.LineItems[i]
		}
	}
	if len(s.LineItems) > 0 {
		return &s.LineItems[0]
	}
	return nil
}

func (s *googleSubscription) cancelReason() string {
	c := s.CanceledStateContext
	switch {
	case c == nil:
		return ""
	case c.UserInitiatedCancellation != nil:
		return "user"
	case c.SystemInitiatedCancellation != nil:
		return "system"
	case c.DeveloperInitiatedCancellation != nil:
		return "developer"
	case c.ReplacementCancellation != nil:
		return "replacement"
	}
	return ""
}

type googleProduct struct {
	OrderID                     string   `json:"orderId"`
	ProductID                   string   `json:"productId"`
	PurchaseState               FlexInt  `json:"purchaseState"`
	PurchaseType                *FlexInt `json:"purchaseType"`
	Quantity                    FlexInt  `json:"quantity"`
	RegionCode                  string   `json:"regionCode"`
	ObfuscatedExternalAccountID string   `json:"obfuscatedExternalAccountId"`
}

type googleOrder struct {
	OrderID       string       `json:"orderId"`
	PurchaseToken string       `json:"purchaseToken"`
	State         string       `json:"state"`
	Total         *googleMoney `json:"total"`
	CreateTime    string       `json:"createTime"`
	LineItems     []struct {
		ProductID           string       `json:"productId"`
		Total               *googleMoney `json:"total"`
		SubscriptionDetails *struct {
			BasePlanID        string `json:"basePlanId"`
			OfferID           string `json:"offerId"`
			OfferPhase        string `json:"offerPhase"`
			OfferPhaseDetails *struct {
				BaseDetails              *struct{} `json:"baseDetails"`
				FreeTrialDetails         *struct{} `json:"freeTrialDetails"`
				IntroductoryPriceDetails *struct{} `json:"introductoryPriceDetails"`
				ProrationPeriodDetails   *struct{} `json:"prorationPeriodDetails"`
			} `json:"offerPhaseDetails"`
		} `json:"subscriptionDetails"`
		OneTimePurchaseDetails *struct {
			Quantity FlexInt `json:"quantity"`
		} `json:"oneTimePurchaseDetails"`
	} `json:"lineItems"`
	OrderHistory *struct {
		RefundEvent *struct {
			EventTime     string `json:"eventTime"`
			RefundDetails *struct {
				Total *googleMoney `json:"total"`
			} `json:"refundDetails"`
		} `json:"refundEvent"`
		PartialRefundEvents []struct {
			State         string `json:"state"`
			RefundDetails *struct {
				Total *googleMoney `json:"total"`
			} `json:"refundDetails"`
		} `json:"partialRefundEvents"`
	} `json:"orderHistory"`
}

// phase is the offer phase the order paid for: free_trial, introductory,
// base, proration or "".
func (o *googleOrder) phase() string {
	if o == nil {
		return ""
	}
	for _, li := range o.LineItems {
		d := li.SubscriptionDetails
		if d == nil {
			continue
		}
		if p := d.OfferPhaseDetails; p != nil {
			switch {
			case p.FreeTrialDetails != nil:
				return "free_trial"
			case p.IntroductoryPriceDetails != nil:
				return "introductory"
			case p.ProrationPeriodDetails != nil:
				return "proration"
			case p.BaseDetails != nil:
				return "base"
			}
		}
		switch d.OfferPhase {
		case "FREE_TRIAL":
			return "free_trial"
		case "INTRODUCTORY":
			return "introductory"
		case "BASE":
			return "base"
		}
	}
	return ""
}

func (o *googleOrder) isSubscription() bool {
	for _, li := range o.LineItems {
		if li.SubscriptionDetails != nil {
			return true
		}
	}
	return false
}

// googleMapper carries one notification through the mapping.
type googleMapper struct {
	n     *Notification
	g     *GoogleNotification
	st    States
	en    GoogleEnrichment
	sub   *googleSubscription
	prod  *googleProduct
	order *googleOrder
	prev  *googleOrder
	out   Result
}

// Google maps a Google Play developer notification enriched from the Android
// Publisher API (n.Enriched, see GoogleEnrichment). State is kept per
// purchase token ("google:<token>"); a purchase whose linkedPurchaseToken
// names an earlier subscription continues that subscription's state, so an
// upgrade or re-signup is not a second start. Event ids are derived from
// order ids for money events and from token, type and event time otherwise,
// so a redelivered message, or a refund found both by RTDN and by
// reconciliation, yields one event.
func Google(n *Notification, st States) (Result, error) {
	if why := n.Meta["ignore"]; why != "" {
		return Result{Ignored: why}, nil
	}
	g, err := ParseGoogleNotification(n.Body)
	if err != nil {
		return Result{Ignored: err.Error()}, nil
	}
	m := &googleMapper{n: n, g: g, st: st}
	if g.Kind() == GoogleKindTest {
		return Result{Ignored: "test notification"}, nil
	}
	if !g.NeedsPlayAPI() {
		return Result{Ignored: g.TypeName() + " produces no conversion event"}, nil
	}
	if len(n.Enriched) == 0 {
		return Result{}, malformed("google %s has no Play API enrichment", g.TypeName())
	}
	if err := m.decodeEnrichment(); err != nil {
		return Result{}, err
	}
	if m.en.NotFound != "" {
		return Result{Ignored: "purchase not found in the Play API: " + m.en.NotFound}, nil
	}
	switch g.Kind() {
	case GoogleKindSubscription:
		err = m.subscription()
	case GoogleKindOneTime:
		err = m.oneTime()
	case GoogleKindVoided:
		err = m.voided()
	}
	if err != nil {
		return Result{}, err
	}
	m.markRevenueUnknown()
	if len(m.out.Events) == 0 && m.out.Ignored == "" {
		m.out.Ignored = "no conversion in " + g.TypeName()
	}
	return m.out, nil
}

func (m *googleMapper) decodeEnrichment() error {
	if err := json.Unmarshal(m.n.Enriched, &m.en); err != nil {
		return malformed("google enrichment: %v", err)
	}
	dec := func(raw json.RawMessage, v any, what string) error {
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			return nil
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return malformed("google %s: %v", what, err)
		}
		return nil
	}
	if len(m.en.Subscription) > 0 {
		m.sub = &googleSubscription{}
		if err := dec(m.en.Subscription, m.sub, "subscription"); err != nil {
			return err
		}
	}
	if len(m.en.Product) > 0 {
		m.prod = &googleProduct{}
		if err := dec(m.en.Product, m.prod, "product purchase"); err != nil {
			return err
		}
	}
	if len(m.en.Order) > 0 {
		m.order = &googleOrder{}
		if err := dec(m.en.Order, m.order, "order"); err != nil {
			return err
		}
	}
	if len(m.en.PreviousOrder) > 0 {
		m.prev = &googleOrder{}
		if err := dec(m.en.PreviousOrder, m.prev, "previous order"); err != nil {
			return err
		}
	}
	return nil
}

func googleStateKey(token string) string   { return "google:" + token }
func googleOrderKey(orderID string) string { return "google:order:" + orderID }

func (m *googleMapper) state(key string) (State, bool) {
	s, ok := m.st.State(key)
	if !ok {
		s = State{Key: key}
	}
	return s, ok
}

func (m *googleMapper) save(s State) {
	s.UpdatedAt = m.n.ReceivedAt.UTC()
	m.out.States = append(m.out.States, s)
}

func (m *googleMapper) emit(e Event) { m.out.Events = append(m.out.Events, e) }

// occurred is the notification's eventTimeMillis, else the receive time.
func (m *googleMapper) occurred() time.Time {
	if ms, err := strconv.ParseInt(string(m.g.EventTimeMillis), 10, 64); err == nil && ms > 0 {
		return time.UnixMilli(ms).UTC()
	}
	return m.n.ReceivedAt.UTC()
}

func (m *googleMapper) event(t Type, idParts ...string) Event {
	return Event{
		ID:            EventID(SourceGoogle, append([]string{string(t)}, idParts...)...),
		Type:          t,
		Source:        SourceGoogle,
		Environment:   Production,
		AppID:         m.g.PackageName,
		OccurredAt:    m.occurred(),
		ReceivedAt:    m.n.ReceivedAt.UTC(),
		SourceEventID: m.n.Key,
	}
}

// baseOrderID strips a renewal suffix: "GPA.1-2-3..4" -> "GPA.1-2-3".
func baseOrderID(id string) string {
	if i := strings.Index(id, ".."); i >= 0 {
		return id[:i]
	}
	return id
}

// PreviousGoogleOrderID returns the order a renewal order follows:
// "GPA.x..0" follows "GPA.x", "GPA.x..3" follows "GPA.x..2". It returns ""
// for an initial order.
func PreviousGoogleOrderID(id string) string {
	i := strings.Index(id, "..")
	if i < 0 {
		return ""
	}
	n, err := strconv.Atoi(id[i+2:])
	if err != nil || n < 0 {
		return ""
	}
	if n == 0 {
		return id[:i]
	}
	return id[:i+2] + strconv.Itoa(n-1)
}

// subscription maps a subscriptionNotification.
func (m *googleMapper) subscription() error {
	if m.sub == nil {
		return malformed("google %s enrichment without subscription", m.g.TypeName())
	}
	token := m.g.Subscription.PurchaseToken
	s, known := m.state(googleStateKey(token))
	if !known && m.sub.LinkedPurchaseToken != "" {
		if prior, ok := m.st.State(googleStateKey(m.sub.LinkedPurchaseToken)); ok {
			s = inheritGoogleState(prior, token)
			prior.SetValue("replaced_by", token)
			m.save(prior)
		}
	}
	item := m.sub.item(string(m.g.Subscription.SubscriptionID))
	if item == nil {
		return malformed("google subscription without line items")
	}
	if acct := m.accountID(); acct != "" {
		s.AppUserID = acct
	}
	if s.Value("subscription_id") == "" {
		id := baseOrderID(item.LatestSuccessfulOrderID)
		if id == "" {
			id = token
		}
		s.SetValue("subscription_id", id)
	}
	env := Production
	if m.sub.TestPurchase != nil {
		env = Sandbox
	}
	s.SetValue("environment", env)
	wasTrial := s.InTrial
	phase := item.phase()
	name := m.g.TypeName()
	e := m.subEvent(&s, item, googleSubscriptionEvents[name])
	switch name {
	case "SUBSCRIPTION_PURCHASED":
		if err := m.purchased(&s, item, &e); err != nil {
			return err
		}
	case "SUBSCRIPTION_RENEWED":
		if err := m.renewed(&s, item, &e, wasTrial); err != nil {
			return err
		}
	case "SUBSCRIPTION_RECOVERED":
		e.ID = m.idFor(BillingRecovered, token)
		rev, oid, err := m.newOrderRevenue(&s)
		if err != nil {
			return err
		}
		if rev != nil {
			e.Revenue, e.TransactionID = rev, oid
			e.ID = EventID(SourceGoogle, string(BillingRecovered), oid)
		}
		// A free trial whose first payment failed (grace period or account
		// hold) converts when the payment is recovered: the period that
		// ended was the trial (state, or the previous order's phase).
		if rev != nil && m.afterTrial(wasTrial, s.Value("phase") == "free_trial") {
			e.Type = TrialConverted
			e.ID = EventID(SourceGoogle, string(TrialConverted), oid)
			e.SetAttribute("offer", "free_trial")
			e.SetAttribute("recovered", "true")
			s.SetValue("trial_converted", oid)
		}
		s.InTrial = false
		m.emit(e)
	case "SUBSCRIPTION_CANCELED":
		if m.sub.cancelReason() == "replacement" {
			m.out.Ignored = "canceled because replaced by a new purchase (upgrade, downgrade or re-signup)"
			s.Status = "replaced"
			break
		}
		if phase == "free_trial" || (phase == "" && s.InTrial) {
			e.Type = TrialCancelled
			e.SetAttribute("offer", "free_trial")
		}
		e.ID = m.idFor(e.Type, token)
		e.SetAttribute("cancel_reason", m.sub.cancelReason())
		s.CancelAtPeriodEnd = true
		m.emit(e)
	case "SUBSCRIPTION_RESTARTED":
		e.ID = m.idFor(e.Type, token)
		s.CancelAtPeriodEnd = false
		m.emit(e)
	case "SUBSCRIPTION_ON_HOLD", "SUBSCRIPTION_IN_GRACE_PERIOD":
		e.ID = m.idFor(e.Type, token, name)
		e.SetAttribute("billing_state", map[string]string{"SUBSCRIPTION_ON_HOLD": "on_hold", "SUBSCRIPTION_IN_GRACE_PERIOD": "grace_period"}[name])
		m.emit(e)
	case "SUBSCRIPTION_PAUSED":
		e.ID = m.idFor(e.Type, token)
		m.emit(e)
	case "SUBSCRIPTION_EXPIRED":
		s.InTrial = false
		// After an upgrade, downgrade or base-plan change Google expires
		// the replaced token; its subscriptionsv2 resource says
		// replacementCancellation while the new token (linkedPurchaseToken)
		// is active. That is a plan change, not churn.
		if m.sub.cancelReason() == "replacement" || s.Status == "replaced" || s.Value("replaced_by") != "" {
			m.out.Ignored = "expired because replaced by a new purchase (upgrade, downgrade or base-plan change)"
			s.Status = "replaced"
			break
		}
		e.ID = m.idFor(e.Type, token)
		m.emit(e)
	case "SUBSCRIPTION_ITEMS_CHANGED":
		e.ID = m.idFor(e.Type, token)
		if s.ProductID != "" && s.ProductID != item.ProductID {
			e.SetAttribute("previous_product_id", s.ProductID)
		}
		m.emit(e)
	case "SUBSCRIPTION_REVOKED":
		if err := m.revoked(&s, item, e); err != nil {
			return err
		}
	}
	s.ProductID = item.ProductID
	if s.Status != "replaced" {
		s.Status = m.sub.SubscriptionState
	}
	if oid := item.LatestSuccessfulOrderID; oid != "" {
		s.SetValue("latest_order_id", oid)
	}
	if phase != "" {
		s.SetValue("phase", phase)
	}
	if od := item.OfferDetails; od != nil && od.BasePlanID != "" {
		s.SetValue("base_plan_id", od.BasePlanID)
	}
	m.save(s)
	return nil
}

// inheritGoogleState starts a new token's state from the subscription it
// replaces (linkedPurchaseToken): identity, subscription id and trial use.
func inheritGoogleState(prior State, token string) State {
	s := State{Key: googleStateKey(token), AppUserID: prior.AppUserID, TrialUsed: prior.TrialUsed, ProductID: prior.ProductID}
	for k, v := range prior.Identifiers {
		if s.Identifiers == nil {
			s.Identifiers = map[string]string{}
		}
		s.Identifiers[k] = v
	}
	s.SetValue("linked_from", prior.Key)
	s.SetValue("linked_status", prior.Status)
	if bp := prior.Value("base_plan_id"); bp != "" {
		s.SetValue("previous_base_plan_id", bp)
	}
	if id := prior.Value("subscription_id"); id != "" {
		s.SetValue("subscription_id", id)
	}
	return s
}

func (m *googleMapper) accountID() string {
	if m.sub != nil && m.sub.ExternalAccountIdentifiers != nil {
		return m.sub.ExternalAccountIdentifiers.ObfuscatedExternalAccountID
	}
	if m.prod != nil {
		return m.prod.ObfuscatedExternalAccountID
	}
	return ""
}

// idFor is the id of a state event: type, token and event time.
func (m *googleMapper) idFor(t Type, parts ...string) string {
	return EventID(SourceGoogle, append(append([]string{string(t)}, parts...), string(m.g.EventTimeMillis))...)
}

// subEvent starts a subscription event with identity and attributes.
func (m *googleMapper) subEvent(s *State, item *googleLineItem, t Type) Event {
	e := m.event(t)
	e.Environment = s.Value("environment")
	e.ProductID = item.ProductID
	if e.ProductID == "" {
		e.ProductID = string(m.g.Subscription.SubscriptionID)
	}
	e.SubscriptionID = s.Value("subscription_id")
	e.TransactionID = item.LatestSuccessfulOrderID
	e.User.AppUserID = s.AppUserID
	for k, v := range s.Identifiers {
		e.SetIdentifier(k, v)
	}
	e.SetIdentifier(IDOS, "android")
	if od := item.OfferDetails; od != nil {
		e.SetAttribute("base_plan_id", od.BasePlanID)
		e.SetAttribute("offer_id", od.OfferID)
	}
	e.SetAttribute("country", m.sub.RegionCode)
	e.SetAttribute("purchase_token", m.g.Subscription.PurchaseToken)
	e.SetAttribute("notification_type", m.g.TypeName())
	return e
}

// orderRevenue is the amount the enriched order charged.
func (m *googleMapper) orderRevenue() (*Revenue, error) {
	if m.order == nil || m.order.Total == nil {
		return nil, nil
	}
	r, err := m.order.Total.revenue()
	if err != nil {
		return nil, err
	}
	if r != nil && r.AmountMicros <= 0 {
		return nil, nil
	}
	return r, nil
}

// newOrderRevenue returns the enriched order's revenue when that order has
// not been counted on this subscription before.
func (m *googleMapper) newOrderRevenue(s *State) (*Revenue, string, error) {
	if m.order == nil || m.order.OrderID == "" || m.order.OrderID == s.Value("counted_order_id") {
		return nil, "", nil
	}
	rev, err := m.orderRevenue()
	if err != nil || rev == nil {
		return nil, "", err
	}
	s.SetValue("counted_order_id", m.order.OrderID)
	return rev, m.order.OrderID, nil
}

// afterTrial reports whether the period that just ended was a free trial.
// The previous order, when it was read, says so with authority; state can
// be out of date when notifications are mapped out of order (a backlog
// enriched late), so it only decides without that order.
func (m *googleMapper) afterTrial(stateSays ...bool) bool {
	if p := m.prev.phase(); p != "" {
		return p == "free_trial"
	}
	for _, v := range stateSays {
		if v {
			return true
		}
	}
	return false
}

// walkedBack reports whether the enriched order is not the subscription's
// latest (the enricher walked back to the order of the notification's
// time): the line item's current offer phase is then not this order's.
func (m *googleMapper) walkedBack(item *googleLineItem) bool {
	return m.order != nil && m.order.OrderID != "" && item.LatestSuccessfulOrderID != "" && m.order.OrderID != item.LatestSuccessfulOrderID
}

func (m *googleMapper) purchased(s *State, item *googleLineItem, e *Event) error {
	token := m.g.Subscription.PurchaseToken
	phase := item.phase()
	if phase == "" || m.walkedBack(item) {
		if p := m.order.phase(); p != "" {
			phase = p
		}
	}
	orderID := item.LatestSuccessfulOrderID
	if m.order != nil && m.order.OrderID != "" {
		orderID = m.order.OrderID
	}
	idPart := orderID
	if idPart == "" {
		idPart = token
	} else {
		e.TransactionID = orderID
	}
	if phase != "" {
		e.SetAttribute("offer", phase)
	}
	if linked := s.Value("linked_from"); linked != "" || m.sub.LinkedPurchaseToken != "" {
		// An upgrade, downgrade, base-plan change or re-signup: the
		// subscription continues. A new product, or a new base plan of
		// the same product (monthly to quarterly), is a plan change.
		e.Type = SubscriptionReactivated
		prevPlan, plan := s.Value("previous_base_plan_id"), ""
		if od := item.OfferDetails; od != nil {
			plan = od.BasePlanID
		}
		if prev := s.ProductID; prev != "" && prev != item.ProductID {
			e.Type = ProductChanged
			e.SetAttribute("previous_product_id", prev)
		}
		if prevPlan != "" && plan != "" && prevPlan != plan {
			e.Type = ProductChanged
			e.SetAttribute("previous_base_plan_id", prevPlan)
		}
		e.SetAttribute("linked_purchase_token", m.sub.LinkedPurchaseToken)
		rev, err := m.orderRevenue()
		if err != nil {
			return err
		}
		e.Revenue = rev
		e.ID = EventID(SourceGoogle, string(e.Type), idPart)
		s.InTrial = phase == "free_trial"
		s.SetValue("counted_order_id", orderID)
		m.emit(*e)
		return nil
	}
	if phase == "free_trial" {
		e.Type = TrialStarted
		e.ID = EventID(SourceGoogle, string(TrialStarted), idPart)
		s.InTrial, s.TrialUsed = true, true
		s.SetValue("counted_order_id", orderID)
		m.emit(*e)
		return nil
	}
	rev, err := m.orderRevenue()
	if err != nil {
		return err
	}
	e.Type = SubscriptionStarted
	e.Revenue = rev
	e.ID = EventID(SourceGoogle, string(SubscriptionStarted), idPart)
	s.InTrial = false
	s.SetValue("counted_order_id", orderID)
	m.emit(*e)
	return nil
}

func (m *googleMapper) renewed(s *State, item *googleLineItem, e *Event, wasTrial bool) error {
	orderID := item.LatestSuccessfulOrderID
	if m.order != nil && m.order.OrderID != "" {
		orderID = m.order.OrderID
	}
	if orderID == "" {
		orderID = m.g.Subscription.PurchaseToken + "|" + string(m.g.EventTimeMillis)
	}
	e.TransactionID = orderID
	rev, err := m.orderRevenue()
	if err != nil {
		return err
	}
	e.Revenue = rev
	prevPhase := s.Value("phase")
	if m.afterTrial(wasTrial, prevPhase == "free_trial" && s.Value("latest_order_id") != orderID) {
		e.Type = TrialConverted
		e.SetAttribute("offer", "free_trial")
		s.SetValue("trial_converted", orderID)
	} else {
		e.Type = SubscriptionRenewed
		if p := item.phase(); p != "" {
			e.SetAttribute("offer", p)
		} else if p := m.order.phase(); p != "" {
			e.SetAttribute("offer", p)
		}
	}
	e.ID = EventID(SourceGoogle, string(e.Type), orderID)
	s.InTrial = item.phase() == "free_trial"
	s.SetValue("counted_order_id", orderID)
	m.emit(*e)
	return nil
}

// refundAmount works out how much of the order has been refunded in total
// and how much of that this subscription or order has not counted yet.
func (m *googleMapper) refundAmount(partial bool) (cumulative, delta *Revenue, err error) {
	if m.order == nil {
		return nil, nil, nil
	}
	var total *Revenue
	if h := m.order.OrderHistory; h != nil {
		if h.RefundEvent != nil && !partial {
			if h.RefundEvent.RefundDetails != nil {
				if total, err = h.RefundEvent.RefundDetails.Total.revenue(); err != nil {
					return nil, nil, err
				}
			}
		}
		if total == nil && (partial || h.RefundEvent == nil) {
			for _, p := range h.PartialRefundEvents {
				if p.State == "PENDING" || p.RefundDetails == nil {
					continue
				}
				r, err := p.RefundDetails.Total.revenue()
				if err != nil {
					return nil, nil, err
				}
				if r == nil {
					continue
				}
				if total == nil {
					total = &Revenue{Currency: r.Currency}
				}
				if r.Currency != total.Currency {
					return nil, nil, malformed("google order %s refunds in two currencies", m.order.OrderID)
				}
				total.AmountMicros += r.AmountMicros
			}
		}
	}
	if total == nil && !partial {
		if total, err = m.order.Total.revenue(); err != nil {
			return nil, nil, err
		}
	}
	if total == nil || total.AmountMicros <= 0 {
		return nil, nil, nil
	}
	ost, _ := m.state(googleOrderKey(m.order.OrderID))
	counted, _ := strconv.ParseInt(ost.Value("refunded_micros"), 10, 64)
	d := total.AmountMicros - counted
	if d <= 0 {
		return total, &Revenue{Currency: total.Currency}, nil
	}
	neg := Revenue{AmountMicros: -d, Currency: total.Currency}
	ost.SetValue("refunded_micros", strconv.FormatInt(total.AmountMicros, 10))
	m.save(ost)
	return total, &neg, nil
}

// refundEvent fills e as a refund of the enriched order (or orderID when the
// order could not be read) and emits it unless already counted.
func (m *googleMapper) refundEvent(e Event, orderID string, partial bool) error {
	e.Type = Refund
	if m.order != nil && m.order.OrderID != "" {
		orderID = m.order.OrderID
	}
	e.TransactionID = orderID
	kind := "full"
	if partial {
		kind = "partial"
	}
	e.SetAttribute("refund_type", kind)
	cum, delta, err := m.refundAmount(partial)
	if err != nil {
		return err
	}
	switch {
	case delta != nil && delta.AmountMicros == 0:
		m.out.Ignored = "refund of order " + orderID + " already counted"
		return nil
	case delta != nil:
		e.Revenue = delta
		e.ID = EventID(SourceGoogle, string(Refund), orderID, kind, strconv.FormatInt(cum.AmountMicros, 10))
		if !partial {
			e.ID = EventID(SourceGoogle, string(Refund), orderID, kind)
		}
	default:
		e.ID = EventID(SourceGoogle, string(Refund), orderID, kind)
		if partial {
			e.ID = EventID(SourceGoogle, string(Refund), orderID, kind, string(m.g.EventTimeMillis))
		}
	}
	m.emit(e)
	return nil
}

func (m *googleMapper) revoked(s *State, item *googleLineItem, e Event) error {
	orderID := item.LatestSuccessfulOrderID
	if orderID == "" {
		orderID = m.g.Subscription.PurchaseToken
	}
	s.InTrial = false
	return m.refundEvent(e, orderID, false)
}

// oneTime maps ONE_TIME_PRODUCT_PURCHASED.
func (m *googleMapper) oneTime() error {
	if m.prod == nil {
		return malformed("google one-time purchase enrichment without product")
	}
	token := m.g.OneTimeProduct.PurchaseToken
	if m.prod.PurchaseState == 1 {
		m.out.Ignored = "one-time purchase is canceled"
		return nil
	}
	if m.prod.PurchaseState == 2 {
		m.out.Ignored = "one-time purchase is pending"
		return nil
	}
	orderID := m.prod.OrderID
	idPart := orderID
	if idPart == "" {
		idPart = token
	}
	e := m.event(Purchase, idPart)
	e.ProductID = m.prod.ProductID
	if e.ProductID == "" {
		e.ProductID = string(m.g.OneTimeProduct.SKU)
	}
	e.TransactionID = orderID
	if m.prod.PurchaseType != nil && *m.prod.PurchaseType == 0 {
		e.Environment = Sandbox
	}
	s, _ := m.state(googleStateKey(token))
	if acct := m.accountID(); acct != "" {
		s.AppUserID = acct
	}
	e.User.AppUserID = s.AppUserID
	for k, v := range s.Identifiers {
		e.SetIdentifier(k, v)
	}
	e.SetIdentifier(IDOS, "android")
	rev, err := m.orderRevenue()
	if err != nil {
		return err
	}
	e.Revenue = rev
	if q := m.prod.Quantity; q > 1 {
		e.SetAttribute("quantity", strconv.FormatInt(int64(q), 10))
	}
	e.SetAttribute("country", m.prod.RegionCode)
	e.SetAttribute("purchase_token", token)
	e.SetAttribute("notification_type", m.g.TypeName())
	m.emit(e)
	s.ProductID = e.ProductID
	s.Status = "purchased"
	s.SetValue("environment", e.Environment)
	s.SetValue("order_id", orderID)
	m.save(s)
	return nil
}

// voided maps a voided purchase (RTDN or reconciliation) to a refund.
func (m *googleMapper) voided() error {
	v := m.g.Voided
	partial := int64(v.RefundType) == GoogleRefundPartial
	s, known := m.state(googleStateKey(v.PurchaseToken))
	e := m.event(Refund)
	e.Environment = Production
	if env := s.Value("environment"); known && env != "" {
		e.Environment = env
	}
	if m.sub != nil && m.sub.TestPurchase != nil || m.prod != nil && m.prod.PurchaseType != nil && *m.prod.PurchaseType == 0 {
		e.Environment = Sandbox
	}
	if acct := m.accountID(); acct != "" {
		s.AppUserID = acct
	}
	e.User.AppUserID = s.AppUserID
	for k, val := range s.Identifiers {
		e.SetIdentifier(k, val)
	}
	e.SetIdentifier(IDOS, "android")
	e.ProductID = s.ProductID
	if m.order != nil {
		for _, li := range m.order.LineItems {
			if li.ProductID != "" {
				e.ProductID = li.ProductID
				break
			}
		}
	}
	subscription := int64(v.ProductType) == 1 || m.order != nil && m.order.isSubscription()
	if subscription {
		e.SubscriptionID = s.Value("subscription_id")
		if e.SubscriptionID == "" {
			e.SubscriptionID = baseOrderID(v.OrderID)
		}
	}
	e.SetAttribute("purchase_token", v.PurchaseToken)
	e.SetAttribute("notification_type", m.g.TypeName())
	if src := m.n.Meta["voided_source"]; src != "" {
		e.SetAttribute("voided_source", src)
	}
	if r := m.n.Meta["voided_reason"]; r != "" {
		e.SetAttribute("voided_reason", r)
	}
	if err := m.refundEvent(e, v.OrderID, partial); err != nil {
		return err
	}
	if known || s.AppUserID != "" {
		m.save(s)
	}
	return nil
}
