package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Meta keys that webhooks.Shopify sets on a Shopify notification from its
// verified request headers. The topic is also the notification's Type.
const (
	ShopifyMetaShop       = "shop_domain"   // X-Shopify-Shop-Domain, lower-cased
	ShopifyMetaTopic      = "topic"         // X-Shopify-Topic
	ShopifyMetaAPIVersion = "api_version"   // X-Shopify-API-Version
	ShopifyMetaCurrency   = "currency_mode" // sources.shopify.currency: shop | presentment
	ShopifyMetaTriggered  = "triggered_at"  // X-Shopify-Triggered-At (RFC 3339), when present
	ShopifyMetaEventID    = "event_id"      // X-Shopify-Event-Id, when present
)

// Currency modes of Shopify order revenue (sources.shopify.currency).
const (
	ShopifyCurrencyShop        = "shop"        // the shop's own currency (total_price_set.shop_money)
	ShopifyCurrencyPresentment = "presentment" // what the customer saw (total_price_set.presentment_money)
)

// shopifyID is a Shopify numeric id kept as its decimal text. Shopify ids
// exceed 2^53 (820982911946154508), so they are never decoded as float64.
type shopifyID string

func (id *shopifyID) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*id = ""
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*id = shopifyID(s)
		return nil
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return fmt.Errorf("shopify id %s is not an integer", b)
		}
	}
	*id = shopifyID(b)
	return nil
}

// shopifyText is a scalar kept as text: Shopify sends money as decimal
// strings ("403.00") but some amounts as JSON numbers (refund line item
// subtotals); both are kept textually and parsed exactly by ParseMicros.
type shopifyText string

func (t *shopifyText) UnmarshalJSON(b []byte) error {
	switch {
	case bytes.Equal(b, []byte("null")):
		*t = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = shopifyText(s)
	case len(b) > 0 && (b[0] == '{' || b[0] == '['):
		return fmt.Errorf("expected a scalar, got %.20s", b)
	default:
		*t = shopifyText(b)
	}
	return nil
}

type shopifyMoney struct {
	Amount       shopifyText `json:"amount"`
	CurrencyCode string      `json:"currency_code"`
}

type shopifyMoneySet struct {
	ShopMoney        *shopifyMoney `json:"shop_money"`
	PresentmentMoney *shopifyMoney `json:"presentment_money"`
}

type shopifyTransaction struct {
	ID       shopifyID   `json:"id"`
	Kind     string      `json:"kind"`
	Status   string      `json:"status"`
	Amount   shopifyText `json:"amount"`
	Currency string      `json:"currency"`
	Test     bool        `json:"test"`
}

type shopifyRefund struct {
	ID           shopifyID            `json:"id"`
	OrderID      shopifyID            `json:"order_id"`
	CreatedAt    string               `json:"created_at"`
	ProcessedAt  string               `json:"processed_at"`
	Transactions []shopifyTransaction `json:"transactions"`
}

type shopifyOrder struct {
	ID                  shopifyID        `json:"id"`
	Name                string           `json:"name"`
	Test                bool             `json:"test"`
	CreatedAt           string           `json:"created_at"`
	ProcessedAt         string           `json:"processed_at"`
	CancelReason        string           `json:"cancel_reason"`
	Currency            string           `json:"currency"`
	PresentmentCurrency string           `json:"presentment_currency"`
	TotalPrice          shopifyText      `json:"total_price"`
	TotalPriceSet       *shopifyMoneySet `json:"total_price_set"`
	Email               string           `json:"email"`
	ContactEmail        string           `json:"contact_email"`
	Phone               string           `json:"phone"`
	SourceName          string           `json:"source_name"`
	LandingSite         string           `json:"landing_site"`
	OrderStatusURL      string           `json:"order_status_url"`
	BrowserIP           string           `json:"browser_ip"`
	ClientDetails       *struct {
		BrowserIP string `json:"browser_ip"`
		UserAgent string `json:"user_agent"`
	} `json:"client_details"`
	Customer *struct {
		ID    shopifyID `json:"id"`
		Email string    `json:"email"`
		Phone string    `json:"phone"`
	} `json:"customer"`
	NoteAttributes []struct {
		Name  string      `json:"name"`
		Value shopifyText `json:"value"`
	} `json:"note_attributes"`
	LineItems []struct {
		ProductID shopifyID `json:"product_id"`
		VariantID shopifyID `json:"variant_id"`
		SKU       string    `json:"sku"`
		Quantity  int64     `json:"quantity"`
	} `json:"line_items"`
	Refunds []shopifyRefund `json:"refunds"`
}

type shopifyContract struct {
	ID            shopifyID `json:"id"`
	Status        string    `json:"status"`
	CustomerID    shopifyID `json:"customer_id"`
	OriginOrderID shopifyID `json:"origin_order_id"`
	RevisionID    shopifyID `json:"revision_id"`
	CurrencyCode  string    `json:"currency_code"`
	BillingPolicy *struct {
		Interval      string `json:"interval"`
		IntervalCount int    `json:"interval_count"`
	} `json:"billing_policy"`
}

type shopifyBillingAttempt struct {
	ID                     shopifyID `json:"id"`
	OrderID                shopifyID `json:"order_id"`
	SubscriptionContractID shopifyID `json:"subscription_contract_id"`
	IdempotencyKey         string    `json:"idempotency_key"`
	ErrorCode              string    `json:"error_code"`
}

type shopifyAppSubscription struct {
	AppSubscription *struct {
		ID        string      `json:"admin_graphql_api_id"`
		Name      string      `json:"name"`
		Status    string      `json:"status"`
		ShopID    string      `json:"admin_graphql_api_shop_id"`
		UpdatedAt string      `json:"updated_at"`
		Currency  string      `json:"currency"`
		Price     shopifyText `json:"price"`    // in the current docs' example; absent from older payloads
		Interval  string      `json:"interval"` // every_30_days | annual
	} `json:"app_subscription"`
}

// shopifyMapper carries one notification through the mapping.
type shopifyMapper struct {
	n     *Notification
	st    States
	shop  string
	topic string
	out   Result
}

// Shopify maps a verified Shopify webhook. The topic (X-Shopify-Topic) picks
// the mapping:
//
//   - orders/paid: a purchase with the order's total in the shop's or the
//     presentment currency (sources.shopify.currency); test orders are
//     sandbox. An order created by a subscription billing attempt (known from
//     subscription_billing_attempts/success, or source_name
//     subscription_contract*) is a subscription_renewed instead.
//   - refunds/create and orders/cancelled: one refund per Shopify refund id,
//     negative, valued from its successful refund transactions. Both topics
//     derive the same event id from the refund id, so a cancellation with a
//     refund and the refund's own webhook are one event.
//   - subscription_contracts/create: subscription_started; /update (and
//     /cancel, /pause, /expire, /activate): subscription_cancelled,
//     subscription_paused, subscription_expired or subscription_reactivated on
//     a status change.
//   - subscription_billing_attempts/success: the renewal. The attempt carries
//     no amount; the money is on the order it created, so the renewal is
//     emitted with that order's orders/paid (whichever arrives second links
//     them through state). /failure: billing_issue.
//   - app_subscriptions/update (Shopify app developers billing merchants):
//     started, cancelled, expired, billing_issue (frozen), billing_recovered.
//
// Other topics (compliance topics included) are authentic but produce no
// event: they are stored as ignored with the reason.
func Shopify(n *Notification, st States) (Result, error) {
	m := &shopifyMapper{n: n, st: st, shop: strings.ToLower(n.Meta[ShopifyMetaShop]), topic: n.Meta[ShopifyMetaTopic]}
	if m.topic == "" {
		m.topic = n.Type
	}
	if m.shop == "" || m.topic == "" {
		return Result{}, malformed("shopify notification without shop domain or topic")
	}
	var err error
	if err := m.checkComplianceShop(); err != nil {
		return Result{}, err
	}
	switch m.topic {
	case "orders/paid":
		err = m.orderPaid()
	case "refunds/create":
		err = m.refundCreated()
	case "orders/cancelled":
		err = m.orderCancelled()
	case "subscription_contracts/create":
		err = m.contractCreated()
	case "subscription_contracts/update", "subscription_contracts/activate", "subscription_contracts/cancel",
		"subscription_contracts/pause", "subscription_contracts/expire":
		err = m.contractChanged()
	case "subscription_billing_attempts/success":
		err = m.billingSucceeded()
	case "subscription_billing_attempts/failure":
		err = m.billingFailed()
	case "app_subscriptions/update":
		err = m.appSubscription()
	case "customers/redact":
		err = m.customerRedact()
	case "shop/redact":
		// Sent 48 hours after the shop uninstalled the app: everything
		// personal Postback holds for the shop goes.
		m.out.Erase = &Erasure{EventAttr: "shop_domain", EventAttrValue: m.shop, StatePrefix: "shopify:" + m.shop + ":", StateValueKey: "customer_id"}
		m.out.Ignored = "shop/redact: erasure of every customer's data of " + m.shop + " queued"
	case "customers/data_request", "app/uninstalled":
		m.out.Ignored = "shopify compliance or lifecycle topic " + m.topic + " acknowledged"
	default:
		m.out.Ignored = "unhandled shopify topic " + m.topic
	}
	if err != nil {
		return Result{}, err
	}
	if len(m.out.Events) == 0 && m.out.Ignored == "" {
		m.out.Ignored = "no conversion in " + m.topic
	}
	return m.out, nil
}

func (m *shopifyMapper) decode(v any) error {
	if err := json.Unmarshal(m.n.Body, v); err != nil {
		return malformed("shopify %s: %v", m.topic, err)
	}
	return nil
}

// event starts a canonical event. Ids are namespaced by shop so that two
// shops' equal numeric ids never collide.
func (m *shopifyMapper) event(t Type, env string, at time.Time, idParts ...string) Event {
	return Event{
		ID:            EventID(SourceShopify, append([]string{m.shop, string(t)}, idParts...)...),
		Type:          t,
		Source:        SourceShopify,
		Environment:   env,
		AppID:         m.n.AppID,
		OccurredAt:    at,
		ReceivedAt:    m.n.ReceivedAt.UTC(),
		SourceEventID: m.n.Key,
		Attributes:    map[string]string{"shop_domain": m.shop},
	}
}

// when returns the first parseable RFC 3339 time, then the trigger time of
// the webhook, then the receive time.
func (m *shopifyMapper) when(candidates ...string) time.Time {
	for _, c := range append(candidates, m.n.Meta[ShopifyMetaTriggered]) {
		if t, err := time.Parse(time.RFC3339, c); err == nil && c != "" {
			return t.UTC()
		}
	}
	return m.n.ReceivedAt.UTC()
}

func (m *shopifyMapper) key(kind string, id shopifyID) string {
	return "shopify:" + m.shop + ":" + kind + ":" + string(id)
}

func (m *shopifyMapper) state(key string) State {
	s, ok := m.st.State(key)
	if !ok {
		s = State{Key: key}
	}
	return s
}

func (m *shopifyMapper) save(s State) {
	s.UpdatedAt = m.n.ReceivedAt.UTC()
	m.out.States = append(m.out.States, s)
}

func (m *shopifyMapper) emit(e Event) {
	if len(e.User.Identifiers) == 0 {
		e.User.Identifiers = nil
	}
	m.out.Events = append(m.out.Events, e)
}

// identify sets the event's user from an identity, completed by what states
// remember (a customer's earlier orders, a contract's origin order).
func identify(e *Event, appUser string, ids map[string]string, states ...State) {
	out := map[string]string{}
	for k, v := range ids {
		out[k] = v
	}
	for _, s := range states {
		if appUser == "" {
			appUser = s.AppUserID
		}
		for k, v := range s.Identifiers {
			if out[k] == "" {
				out[k] = v
			}
		}
	}
	e.User.AppUserID = appUser
	if len(out) > 0 {
		e.User.Identifiers = out
	}
}

// identity reads who placed an order: note attributes (cart attributes set
// by the storefront: app_user_id, appsflyer_id, fbp, fbc, ttclid, ...; one
// leading underscore, Shopify's convention for hidden attributes, is
// ignored), then the customer's email and phone, hashed at once, and the
// browser's IP and user agent.
func (o *shopifyOrder) identity() (appUser, appID string, ids map[string]string) {
	md := map[string]string{}
	for _, a := range o.NoteAttributes {
		k := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(a.Name)), "_")
		if k != "" {
			md[k] = string(a.Value)
		}
	}
	appUser, ids = IdentifiersFromMetadata(md)
	appID = strings.TrimSpace(md["app_id"])
	var emails, phones []string
	if o.Customer != nil {
		emails, phones = append(emails, o.Customer.Email), append(phones, o.Customer.Phone)
		if o.Customer.ID != "" {
			ids[IDShopifyCustomer] = string(o.Customer.ID)
		}
	}
	if ids[IDEmailSHA256] == "" {
		for _, e := range append(emails, o.Email, o.ContactEmail) {
			if SetEmail(ids, e) {
				break
			}
		}
	}
	if ids[IDPhoneSHA256] == "" {
		for _, p := range append(phones, o.Phone) {
			if SetPhone(ids, p) {
				break
			}
		}
	}
	ip, ua := o.BrowserIP, ""
	if o.ClientDetails != nil {
		if o.ClientDetails.BrowserIP != "" {
			ip = o.ClientDetails.BrowserIP
		}
		ua = o.ClientDetails.UserAgent
	}
	if ids[IDIP] == "" && strings.TrimSpace(ip) != "" {
		ids[IDIP] = strings.TrimSpace(ip)
	}
	if ids[IDUserAgent] == "" && strings.TrimSpace(ua) != "" {
		ids[IDUserAgent] = strings.TrimSpace(ua)
	}
	return appUser, appID, ids
}

func (o *shopifyOrder) environment() string {
	if o.Test {
		return Sandbox
	}
	return Production
}

// revenue is the order total in the configured currency. Without a
// presentment amount the shop amount is used (exact, in the shop currency).
func (m *shopifyMapper) revenue(o *shopifyOrder) (*Revenue, error) {
	var amount shopifyText
	var cur string
	if ps := o.TotalPriceSet; ps != nil {
		money := ps.ShopMoney
		if m.n.Meta[ShopifyMetaCurrency] == ShopifyCurrencyPresentment && ps.PresentmentMoney != nil {
			money = ps.PresentmentMoney
		}
		if money != nil {
			amount, cur = money.Amount, money.CurrencyCode
		}
	}
	if amount == "" {
		amount, cur = o.TotalPrice, o.Currency
	}
	if amount == "" {
		return nil, nil
	}
	r, err := MicrosFromDecimal(string(amount), cur)
	if err != nil {
		return nil, malformed("shopify order %s total: %v", o.ID, err)
	}
	if r.AmountMicros < 0 {
		return nil, malformed("shopify order %s has a negative total", o.ID)
	}
	if r.AmountMicros == 0 {
		return nil, nil
	}
	return &r, nil
}

func (m *shopifyMapper) decodeOrder() (*shopifyOrder, error) {
	var o shopifyOrder
	if err := m.decode(&o); err != nil {
		return nil, err
	}
	if o.ID == "" {
		return nil, malformed("shopify order without id")
	}
	return &o, nil
}

func (m *shopifyMapper) orderPaid() error {
	o, err := m.decodeOrder()
	if err != nil {
		return err
	}
	rev, err := m.revenue(o)
	if err != nil {
		return err
	}
	appUser, appID, ids := o.identity()
	os := m.state(m.key("order", o.ID))
	var cs State
	if o.Customer != nil && o.Customer.ID != "" {
		cs = m.state(m.key("customer", o.Customer.ID))
	}
	contract := os.Value("contract")
	var e Event
	if contract != "" || strings.HasPrefix(o.SourceName, "subscription_contract") {
		e = m.event(SubscriptionRenewed, o.environment(), m.when(m.n.Meta[ShopifyMetaTriggered], o.ProcessedAt, o.CreatedAt), string(o.ID))
		e.SubscriptionID = contract
		os.SetValue("renewal", e.ID)
	} else {
		e = m.event(Purchase, o.environment(), m.when(m.n.Meta[ShopifyMetaTriggered], o.ProcessedAt, o.CreatedAt), string(o.ID))
		os.SetValue("purchase", e.ID)
	}
	e.TransactionID = string(o.ID)
	e.Revenue = rev
	if len(o.LineItems) > 0 {
		e.ProductID = string(o.LineItems[0].ProductID)
		e.SetAttribute("variant_id", string(o.LineItems[0].VariantID))
		e.SetAttribute("sku", o.LineItems[0].SKU)
		e.SetAttribute("line_items", fmt.Sprint(len(o.LineItems)))
	}
	e.SetAttribute("order_name", o.Name)
	e.SetAttribute("source_name", o.SourceName)
	e.SetAttribute(AttrLandingPageURL, PageURL(o.LandingSite, m.shop))
	e.SetAttribute(AttrOrderStatusURL, PageURL(o.OrderStatusURL, ""))
	if appID != "" {
		e.AppID = appID
	}
	identify(&e, appUser, ids, os, cs)
	m.emit(e)

	os.Learn(e.User.AppUserID, e.User.Identifiers)
	os.Status = "paid"
	os.SetValue("env", e.Environment)
	if rev != nil {
		os.SetValue("amount_micros", fmt.Sprint(rev.AmountMicros))
		os.SetValue("currency", rev.Currency)
	}
	if appID != "" {
		os.SetValue("app_id", appID)
	}
	m.save(os)
	if cs.Key != "" {
		cs.Learn(e.User.AppUserID, e.User.Identifiers)
		m.save(cs)
	}
	return nil
}

// refundEvent maps one Shopify refund. ctx is what is known of the order
// (from its own payload for orders/cancelled, from state for refunds/create).
func (m *shopifyMapper) refundEvent(r *shopifyRefund, orderID shopifyID, env, appUser, appID string, ids map[string]string, states ...State) (*Event, error) {
	var total int64
	cur := ""
	test := false
	for _, t := range r.Transactions {
		if t.Kind != "refund" || t.Status != "success" {
			continue
		}
		v, err := MicrosFromDecimal(string(t.Amount), t.Currency)
		if err != nil {
			return nil, malformed("shopify refund %s transaction %s: %v", r.ID, t.ID, err)
		}
		if cur != "" && v.Currency != cur {
			return nil, malformed("shopify refund %s mixes currencies %s and %s", r.ID, cur, v.Currency)
		}
		if v.AmountMicros < 0 {
			v.AmountMicros = -v.AmountMicros
		}
		cur = v.Currency
		total += v.AmountMicros
		test = test || t.Test
	}
	if total == 0 {
		return nil, nil
	}
	if test {
		env = Sandbox
	}
	e := m.event(Refund, env, m.when(r.ProcessedAt, r.CreatedAt), string(r.ID))
	e.TransactionID = string(r.ID)
	e.Revenue = &Revenue{AmountMicros: -total, Currency: cur}
	e.SetAttribute("order_id", string(orderID))
	if appID != "" {
		e.AppID = appID
	}
	identify(&e, appUser, ids, states...)
	return &e, nil
}

func (m *shopifyMapper) refundCreated() error {
	var r shopifyRefund
	if err := m.decode(&r); err != nil {
		return err
	}
	if r.ID == "" {
		return malformed("shopify refund without id")
	}
	os := m.state(m.key("order", r.OrderID))
	env := os.Value("env")
	if env == "" {
		env = Production
	}
	e, err := m.refundEvent(&r, r.OrderID, env, "", os.Value("app_id"), nil, os)
	switch {
	case err != nil:
		return err
	case e == nil:
		m.out.Ignored = "refund without a successful refund transaction (no money moved)"
	default:
		m.emit(*e)
	}
	return nil
}

func (m *shopifyMapper) orderCancelled() error {
	o, err := m.decodeOrder()
	if err != nil {
		return err
	}
	appUser, appID, ids := o.identity()
	os := m.state(m.key("order", o.ID))
	if appID == "" {
		appID = os.Value("app_id")
	}
	for i := range o.Refunds {
		r := &o.Refunds[i]
		if r.ID == "" {
			return malformed("shopify order %s has a refund without id", o.ID)
		}
		e, err := m.refundEvent(r, o.ID, o.environment(), appUser, appID, ids, os)
		if err != nil {
			return err
		}
		if e != nil {
			e.SetAttribute("cancel_reason", o.CancelReason)
			m.emit(*e)
		}
	}
	if len(m.out.Events) == 0 {
		m.out.Ignored = "order cancelled without a refund"
	}
	os.Status = "cancelled"
	m.save(os)
	return nil
}

func (c *shopifyContract) period() string {
	if c.BillingPolicy == nil {
		return ""
	}
	n := c.BillingPolicy.IntervalCount
	if n <= 0 {
		n = 1
	}
	u := map[string]string{"day": "D", "week": "W", "month": "M", "year": "Y"}[strings.ToLower(c.BillingPolicy.Interval)]
	if u == "" {
		return ""
	}
	return fmt.Sprintf("P%d%s", n, u)
}

func (m *shopifyMapper) decodeContract() (*shopifyContract, State, error) {
	var c shopifyContract
	if err := m.decode(&c); err != nil {
		return nil, State{}, err
	}
	if c.ID == "" {
		return nil, State{}, malformed("shopify subscription contract without id")
	}
	c.Status = strings.ToLower(c.Status)
	return &c, m.state(m.key("contract", c.ID)), nil
}

// contractEvent starts an event of a contract, with the identity of its
// customer and origin order.
func (m *shopifyMapper) contractEvent(t Type, c *shopifyContract, s *State, idParts ...string) Event {
	if c.CustomerID != "" {
		s.SetValue("customer_id", string(c.CustomerID))
	}
	if c.OriginOrderID != "" {
		s.SetValue("origin_order_id", string(c.OriginOrderID))
	}
	origin := m.state(m.key("order", shopifyID(s.Value("origin_order_id"))))
	customer := m.state(m.key("customer", shopifyID(s.Value("customer_id"))))
	env := origin.Value("env")
	if env == "" {
		env = Production
	}
	e := m.event(t, env, m.when(), append([]string{string(c.ID)}, idParts...)...)
	e.SubscriptionID = string(c.ID)
	e.ProductID = s.ProductID
	if a := origin.Value("app_id"); a != "" {
		e.AppID = a
	}
	e.SetAttribute("period", c.period())
	e.SetAttribute("origin_order_id", s.Value("origin_order_id"))
	var ids map[string]string
	if id := s.Value("customer_id"); id != "" {
		ids = map[string]string{IDShopifyCustomer: id}
	}
	identify(&e, "", ids, *s, origin, customer)
	s.Learn(e.User.AppUserID, e.User.Identifiers)
	return e
}

func (m *shopifyMapper) contractCreated() error {
	c, s, err := m.decodeContract()
	if err != nil {
		return err
	}
	if c.Status != "" && c.Status != "active" {
		m.out.Ignored = "subscription contract created with status " + c.Status
	} else {
		m.emit(m.contractEvent(SubscriptionStarted, c, &s))
	}
	if p := c.period(); p != "" {
		s.SetValue("period", p)
	}
	s.Status = c.Status
	m.save(s)
	return nil
}

func (m *shopifyMapper) contractChanged() error {
	c, s, err := m.decodeContract()
	if err != nil {
		return err
	}
	status := c.Status
	if status == "" {
		status = map[string]string{
			"subscription_contracts/activate": "active", "subscription_contracts/cancel": "cancelled",
			"subscription_contracts/pause": "paused", "subscription_contracts/expire": "expired",
		}[m.topic]
	}
	prev := s.Status
	switch {
	case status == "" || status == prev:
		m.out.Ignored = "subscription contract status unchanged (" + status + ")"
	case status == "cancelled":
		m.emit(m.contractEvent(SubscriptionCancelled, c, &s, string(c.RevisionID)))
	case status == "paused":
		m.emit(m.contractEvent(SubscriptionPaused, c, &s, string(c.RevisionID)))
	case status == "expired":
		m.emit(m.contractEvent(SubscriptionExpired, c, &s))
	case status == "active" && (prev == "paused" || prev == "cancelled"):
		m.emit(m.contractEvent(SubscriptionReactivated, c, &s, string(c.RevisionID)))
	default:
		m.out.Ignored = fmt.Sprintf("subscription contract status %q after %q is not a conversion", status, prev)
	}
	s.Status = status
	m.save(s)
	return nil
}

func (m *shopifyMapper) decodeAttempt() (*shopifyBillingAttempt, error) {
	var a shopifyBillingAttempt
	if err := m.decode(&a); err != nil {
		return nil, err
	}
	if a.SubscriptionContractID == "" {
		return nil, malformed("shopify billing attempt without subscription_contract_id")
	}
	return &a, nil
}

// billingSucceeded links the attempt's order to its contract. The renewal's
// money is on that order, so the renewal is emitted by orders/paid; when the
// order was already reported as a purchase (paid before the attempt arrived
// and not recognisable by its source name), a subscription_renewed without
// revenue marks the renewal so that the money is never counted twice.
func (m *shopifyMapper) billingSucceeded() error {
	a, err := m.decodeAttempt()
	if err != nil {
		return err
	}
	if a.OrderID == "" {
		m.out.Ignored = "billing attempt succeeded without an order id yet"
		return nil
	}
	os := m.state(m.key("order", a.OrderID))
	os.SetValue("contract", string(a.SubscriptionContractID))
	cs := m.state(m.key("contract", a.SubscriptionContractID))
	cs.SetValue("last_order_id", string(a.OrderID))
	switch {
	case os.Value("renewal") != "":
		m.out.Ignored = "renewal already reported with order " + string(a.OrderID)
	case os.Status == "paid":
		c := &shopifyContract{ID: a.SubscriptionContractID}
		e := m.contractEvent(SubscriptionRenewed, c, &cs)
		e.ID = EventID(SourceShopify, m.shop, string(SubscriptionRenewed), string(a.OrderID))
		e.TransactionID = string(a.OrderID)
		if env := os.Value("env"); env != "" {
			e.Environment = env
		}
		e.SetAttribute("revenue_reported_by", os.Value("purchase"))
		identify(&e, e.User.AppUserID, e.User.Identifiers, os)
		m.emit(e)
		os.SetValue("renewal", e.ID)
	default:
		m.out.Ignored = "renewal is reported with orders/paid of order " + string(a.OrderID) + " (a billing attempt carries no amount)"
	}
	m.save(os)
	m.save(cs)
	return nil
}

func (m *shopifyMapper) billingFailed() error {
	a, err := m.decodeAttempt()
	if err != nil {
		return err
	}
	cs := m.state(m.key("contract", a.SubscriptionContractID))
	attempt := string(a.ID)
	if attempt == "" {
		attempt = a.IdempotencyKey
	}
	c := &shopifyContract{ID: a.SubscriptionContractID}
	e := m.contractEvent(BillingIssue, c, &cs, attempt)
	e.SetAttribute("error_code", a.ErrorCode)
	m.emit(e)
	m.save(cs)
	return nil
}

// gidTail returns the numeric tail of a GraphQL global id
// ("gid://shopify/AppSubscription/1029266951" -> "1029266951").
func gidTail(gid string) string {
	if i := strings.LastIndexByte(gid, '/'); i >= 0 {
		return gid[i+1:]
	}
	return gid
}

// appSubscription maps the billing of a Shopify app (a merchant paying the
// app developer). The user is the shop: its domain is the app_user_id, so an
// app can attach identifiers to it with PUT /v1/users/{shop domain}.
func (m *shopifyMapper) appSubscription() error {
	var p shopifyAppSubscription
	if err := m.decode(&p); err != nil {
		return err
	}
	sub := p.AppSubscription
	if sub == nil || gidTail(sub.ID) == "" {
		return malformed("shopify app_subscriptions/update without app_subscription id")
	}
	id := gidTail(sub.ID)
	s := m.state(m.key("app_subscription", shopifyID(id)))
	status, prev := strings.ToUpper(sub.Status), s.Status
	at := m.when(sub.UpdatedAt)
	ev := func(t Type, idParts ...string) Event {
		e := m.event(t, Production, at, append([]string{id}, idParts...)...)
		e.SubscriptionID = id
		e.ProductID = sub.Name
		e.SetAttribute("interval", sub.Interval)
		e.SetAttribute("shop_id", gidTail(sub.ShopID))
		e.User.AppUserID = m.shop
		return e
	}
	switch {
	case status == prev:
		m.out.Ignored = "app subscription status unchanged (" + status + ")"
	case status == "ACTIVE" && prev == "FROZEN":
		m.emit(ev(BillingRecovered, sub.UpdatedAt))
	case status == "ACTIVE" && (prev == "CANCELLED" || prev == "EXPIRED"):
		m.emit(ev(SubscriptionReactivated, sub.UpdatedAt))
	case status == "ACTIVE":
		e := ev(SubscriptionStarted)
		if sub.Price != "" && sub.Currency != "" {
			r, err := MicrosFromDecimal(string(sub.Price), sub.Currency)
			if err != nil {
				return malformed("shopify app subscription %s price: %v", id, err)
			}
			if r.AmountMicros > 0 {
				e.Revenue = &r
			}
		}
		m.emit(e)
	case status == "CANCELLED":
		m.emit(ev(SubscriptionCancelled))
	case status == "EXPIRED":
		m.emit(ev(SubscriptionExpired))
	case status == "FROZEN":
		m.emit(ev(BillingIssue, sub.UpdatedAt))
	default:
		m.out.Ignored = "app subscription status " + status + " is not a conversion"
	}
	s.Status = status
	m.save(s)
	return nil
}

// customerRedact turns customers/redact (Shopify's GDPR request to delete a
// customer's data, sent ten days after the merchant asks) into an erasure:
// every event and state of this shop that carries the customer's id, the
// purchase and renewal events of the orders it lists, and those orders' and
// the customer's states.
func (m *shopifyMapper) customerRedact() error {
	var r struct {
		Customer *struct {
			ID shopifyID `json:"id"`
		} `json:"customer"`
		OrdersToRedact []shopifyID `json:"orders_to_redact"`
	}
	if err := m.decode(&r); err != nil {
		return err
	}
	if r.Customer == nil || r.Customer.ID == "" {
		return malformed("shopify customers/redact without customer.id")
	}
	er := &Erasure{
		IDKey: IDShopifyCustomer, IDValue: string(r.Customer.ID),
		EventAttr: "shop_domain", EventAttrValue: m.shop,
		StatePrefix: "shopify:" + m.shop + ":", StateValueKey: "customer_id",
		StateKeys: []string{m.key("customer", r.Customer.ID)},
	}
	for _, o := range r.OrdersToRedact {
		if o == "" {
			continue
		}
		er.StateKeys = append(er.StateKeys, m.key("order", o))
		for _, t := range []Type{Purchase, SubscriptionRenewed} {
			er.EventIDs = append(er.EventIDs, EventID(SourceShopify, m.shop, string(t), string(o)))
		}
	}
	m.out.Erase = er
	m.out.Ignored = fmt.Sprintf("customers/redact: erasure of customer %s and %d orders queued", r.Customer.ID, len(r.OrdersToRedact))
	return nil
}

// checkComplianceShop refuses a compliance request whose body names another
// shop than the request (webhooks.Shopify refuses it at the door; this
// keeps a reprocessed inbox item from erasing another shop's data too).
func (m *shopifyMapper) checkComplianceShop() error {
	switch m.topic {
	case "customers/redact", "customers/data_request", "shop/redact":
	default:
		return nil
	}
	var b struct {
		ShopDomain string `json:"shop_domain"`
	}
	if err := m.decode(&b); err != nil {
		return err
	}
	if strings.ToLower(strings.TrimSpace(b.ShopDomain)) != m.shop {
		return malformed("shopify %s for shop %q received for shop %q", m.topic, b.ShopDomain, m.shop)
	}
	return nil
}
