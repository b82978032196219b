package mapping

import (
	"errors"
	"fmt"
	"maps"
	"time"
)

// Notification is a verified inbound notification as kept in the inbox. Body
// holds the verified bytes exactly as the source sent them (for Apple the
// decoded payload) so that a mapping fix can re-process it.
type Notification struct {
	Source      string            `json:"source"`
	Key         string            `json:"key"` // the source's dedupe key (Stripe event id, Apple notificationUUID, ...)
	Type        string            `json:"type,omitempty"`
	AppID       string            `json:"app_id,omitempty"`
	Environment string            `json:"environment,omitempty"`
	ReceivedAt  time.Time         `json:"received_at"`
	Body        []byte            `json:"body"`
	Meta        map[string]string `json:"meta,omitempty"` // verified headers or envelope fields that mapping needs
	// AltKeys are secondary dedupe keys (Google's purchaseToken+type+time);
	// a notification whose alt key is already known is a duplicate.
	AltKeys []string `json:"alt_keys,omitempty"`
	// Deferred marks a notification that must be enriched (Google Play API)
	// before it can be mapped; Enriched holds the enrichment once fetched.
	Deferred bool   `json:"deferred,omitempty"`
	Enriched []byte `json:"enriched,omitempty"`
	// Status and the fields below are written by the store.
	Status   string   `json:"status,omitempty"`
	Reason   string   `json:"reason,omitempty"`
	EventIDs []string `json:"event_ids,omitempty"`
}

// Inbox statuses.
const (
	StatusMapped    = "mapped"    // mapped; EventIDs lists what it produced (possibly none)
	StatusIgnored   = "ignored"   // authentic but produces no event (Reason says why)
	StatusEnriching = "enriching" // waiting for enrichment
	StatusFailed    = "failed"    // mapping failed; kept for reprocess
)

// State is the per-subscription memory that lets a mapping tell what one
// notification alone cannot (a renewal that ends a free trial is a trial
// conversion). Key is "<source>:<subscription id>".
type State struct {
	Key               string            `json:"key"`
	Status            string            `json:"status,omitempty"`
	ProductID         string            `json:"product_id,omitempty"`
	PriceID           string            `json:"price_id,omitempty"`
	InTrial           bool              `json:"in_trial,omitempty"`
	TrialUsed         bool              `json:"trial_used,omitempty"`
	CancelAtPeriodEnd bool              `json:"cancel_at_period_end,omitempty"`
	AppUserID         string            `json:"app_user_id,omitempty"`
	Identifiers       map[string]string `json:"identifiers,omitempty"`
	Values            map[string]string `json:"values,omitempty"` // source-specific memory
	UpdatedAt         time.Time         `json:"updated_at"`
}

// Value returns a source-specific value.
func (s *State) Value(k string) string { return s.Values[k] }

// SetValue stores a source-specific value.
func (s *State) SetValue(k, v string) {
	if s.Values == nil {
		s.Values = map[string]string{}
	}
	s.Values[k] = v
}

// Learn records who a subscription, order or customer belongs to, so that
// its later events carry the identity even when their own notification
// does not. An empty appUser keeps the one already known.
func (s *State) Learn(appUser string, ids map[string]string) {
	if appUser != "" {
		s.AppUserID = appUser
	}
	for k, v := range ids {
		if s.Identifiers == nil {
			s.Identifiers = map[string]string{}
		}
		s.Identifiers[k] = v
	}
}

// States reads prior per-subscription state. Implementations read inside the
// store's transaction, so a mapping sees the effect of earlier notifications
// committed in the same batch.
type States interface {
	State(key string) (State, bool)
}

// Result is what a mapping produces from one notification.
type Result struct {
	Events  []Event
	States  []State // new or changed states, written in the same transaction
	Ignored string  // when there is no event: why (logged and stored)
	// Erase is a privacy request the notification carries (Shopify's
	// customers/redact). The store queues it in the same transaction and
	// carries it out in the background, a chunk per commit.
	Erase *Erasure `json:",omitempty"`
}

// Erasure names the data to forget: the identifiers of the events and states
// that carry the identifier IDKey=IDValue (events limited to those whose
// attribute EventAttr equals EventAttrValue, states to keys under
// StatePrefix, where a StateValueKey value equal to IDValue also matches),
// plus the events and states named outright. Without IDKey it is every event
// with the attribute and every state under the prefix (a whole shop). Matching
// events keep their type, time and revenue; their identifiers are cleared and
// the raw notifications behind them erased. Matching states lose their
// identifiers, app user id and StateValueKey value.
type Erasure struct {
	IDKey          string   `json:"id_key,omitempty"`
	IDValue        string   `json:"id_value,omitempty"`
	EventAttr      string   `json:"event_attr,omitempty"`
	EventAttrValue string   `json:"event_attr_value,omitempty"`
	StatePrefix    string   `json:"state_prefix,omitempty"`
	StateValueKey  string   `json:"state_value_key,omitempty"`
	EventIDs       []string `json:"event_ids,omitempty"`
	StateKeys      []string `json:"state_keys,omitempty"`
}

// Func maps one notification to canonical events. It must be pure: no I/O, no
// clock reads (use n.ReceivedAt), so it can be table-tested and re-run.
type Func func(n *Notification, st States) (Result, error)

// ErrMalformed reports a verified notification whose content cannot be
// mapped (missing fields, bad types). The notification is kept as failed.
var ErrMalformed = errors.New("mapping: malformed notification")

// ErrUnknownSource is returned by Map for a source without a mapping.
var ErrUnknownSource = errors.New("mapping: no mapping for source")

// funcs is the list of built-in mappings, one per source.
var funcs = map[string]Func{
	SourceStripe:  Stripe,
	SourceShopify: Shopify,
	SourceCustom:  MapCustom,
	SourceApple:   Apple,
	SourceGoogle:  Google,
}

// Map routes a notification to its source's mapping.
func Map(n *Notification, st States) (Result, error) {
	f, ok := funcs[n.Source]
	if !ok {
		return Result{}, fmt.Errorf("%w %q", ErrUnknownSource, n.Source)
	}
	if st != nil {
		st = privateStates{st}
	}
	return f(n, st)
}

// privateStates hands every mapping its own copy of a state's maps, so a
// mapping that changes the state it read never mutates what the States
// implementation holds (a cache, a test fixture, an earlier result).
type privateStates struct{ States }

func (p privateStates) State(key string) (State, bool) {
	s, ok := p.States.State(key)
	if ok {
		s.Identifiers = maps.Clone(s.Identifiers)
		s.Values = maps.Clone(s.Values)
	}
	return s, ok
}

// malformed wraps a description into ErrMalformed.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
