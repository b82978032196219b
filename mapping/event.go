package mapping

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Type is a canonical conversion event type.
type Type string

// The canonical event types. They are part of the public contract (DESIGN.md
// section 3): destinations, match filters and the admin API use these names.
const (
	TrialStarted            Type = "trial_started"
	TrialConverted          Type = "trial_converted"
	TrialCancelled          Type = "trial_cancelled"
	SubscriptionStarted     Type = "subscription_started"
	SubscriptionRenewed     Type = "subscription_renewed"
	SubscriptionCancelled   Type = "subscription_cancelled"
	SubscriptionUncancelled Type = "subscription_uncancelled"
	SubscriptionReactivated Type = "subscription_reactivated"
	SubscriptionExpired     Type = "subscription_expired"
	SubscriptionPaused      Type = "subscription_paused"
	BillingIssue            Type = "billing_issue"
	BillingRecovered        Type = "billing_recovered"
	ProductChanged          Type = "product_changed"
	Purchase                Type = "purchase"
	Refund                  Type = "refund"
	Custom                  Type = "custom"
)

// Types lists every canonical type, in documentation order.
var Types = []Type{
	TrialStarted, TrialConverted, TrialCancelled, SubscriptionStarted, SubscriptionRenewed,
	SubscriptionCancelled, SubscriptionUncancelled, SubscriptionReactivated, SubscriptionExpired,
	SubscriptionPaused, BillingIssue, BillingRecovered, ProductChanged, Purchase, Refund, Custom,
}

// Valid reports whether t is one of the canonical types.
func (t Type) Valid() bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// Environment values of an event. Sandbox covers every non-production store
// environment (Apple Sandbox, Xcode and LocalTesting; Google test purchases;
// Stripe test mode; Shopify test orders).
const (
	Production = "production"
	Sandbox    = "sandbox"
)

// Source names, used in inbox keys, metrics and the canonical event.
const (
	SourceApple   = "apple"
	SourceGoogle  = "google"
	SourceStripe  = "stripe"
	SourceShopify = "shopify"
	SourceCustom  = "custom"
)

// Revenue is an exact amount of money: integer micros (millionths of the
// currency's major unit) and an ISO 4217 code. Refunds are negative.
type Revenue struct {
	AmountMicros int64  `json:"amount_micros"`
	Currency     string `json:"currency"`
}

// User identifies who an event belongs to. Identifiers holds device and
// network identifiers (appsflyer_id, idfa, gaid, fbp, email_sha256, ...);
// emails and phones only ever appear here SHA-256-hashed.
type User struct {
	AppUserID   string            `json:"app_user_id,omitempty"`
	Identifiers map[string]string `json:"identifiers,omitempty"`
}

// Event is a canonical conversion event, as stored, shown in the admin API and
// sent by the webhook forwarder.
type Event struct {
	ID             string            `json:"id"`
	Type           Type              `json:"type"`
	Name           string            `json:"name,omitempty"` // custom events only
	Source         string            `json:"source"`
	Environment    string            `json:"environment"`
	AppID          string            `json:"app_id"`
	ProductID      string            `json:"product_id,omitempty"`
	SubscriptionID string            `json:"subscription_id,omitempty"`
	TransactionID  string            `json:"transaction_id,omitempty"`
	Revenue        *Revenue          `json:"revenue,omitempty"`
	User           User              `json:"user"`
	OccurredAt     time.Time         `json:"occurred_at"`
	ReceivedAt     time.Time         `json:"received_at"`
	SourceEventID  string            `json:"source_event_id"`
	Attributes     map[string]string `json:"attributes,omitempty"`
}

// EventID derives a deterministic event id from the source and the parts that
// identify one business fact (for example a transaction id and the event
// type). A store that re-sends the same fact under a new notification id
// yields the same event id, which is how duplicates are suppressed.
func EventID(source string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(source))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return "evt_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Sandboxed reports whether the event came from a non-production environment.
func (e *Event) Sandboxed() bool { return e.Environment != Production }

// Identifier returns the named identifier of the event's user, or "".
func (e *Event) Identifier(name string) string {
	if e.User.Identifiers == nil {
		return ""
	}
	return e.User.Identifiers[name]
}

// SetIdentifier sets an identifier on the event's user, ignoring empty values.
func (e *Event) SetIdentifier(name, value string) {
	value = strings.TrimSpace(value)
	if value == "" {
		return
	}
	if e.User.Identifiers == nil {
		e.User.Identifiers = map[string]string{}
	}
	e.User.Identifiers[name] = value
}

// SetAttribute sets a free-form attribute, ignoring empty values.
func (e *Event) SetAttribute(name, value string) {
	if value == "" {
		return
	}
	if e.Attributes == nil {
		e.Attributes = map[string]string{}
	}
	e.Attributes[name] = value
}
