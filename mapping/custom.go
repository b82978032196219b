package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of the custom events API (POST /v1/events).
const (
	MaxCustomBatch      = 1000 // events in one request
	maxCustomString     = 256  // ids, names, app ids
	maxCustomValue      = 1024 // identifier and attribute values
	maxCustomAttributes = 50
	// CustomClockSkew is how far in the future an occurred_at may be before
	// it is rejected: the app's servers' clocks are not ours.
	CustomClockSkew = 5 * time.Minute
)

// CustomRequest is the validated, canonical form of a POST /v1/events body.
// It is what the inbox stores (always with a list of events, emails and
// phones already hashed) and what the Custom mapping reads back.
type CustomRequest struct {
	Batch  bool          `json:"batch"` // the client sent {"events": [...]}
	Events []CustomEvent `json:"events"`
}

// CustomEvent is one validated event of a custom request.
type CustomEvent struct {
	Type           Type              `json:"type"`
	Name           string            `json:"name,omitempty"`
	AppID          string            `json:"app_id"`
	Environment    string            `json:"environment"`
	AppUserID      string            `json:"app_user_id,omitempty"`
	ProductID      string            `json:"product_id,omitempty"`
	SubscriptionID string            `json:"subscription_id,omitempty"`
	TransactionID  string            `json:"transaction_id,omitempty"`
	Revenue        *Revenue          `json:"revenue,omitempty"`
	OccurredAt     time.Time         `json:"occurred_at,omitzero"` // zero: when received
	Identifiers    map[string]string `json:"identifiers,omitempty"`
	Attributes     map[string]string `json:"attributes,omitempty"`
}

// FieldError names one invalid field by its JSON path and says why.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// CustomEventID is the id of the index-th event of the custom request with
// the given idempotency key: a retry of the request yields the same ids.
func CustomEventID(idempotencyKey string, index int) string {
	return EventID(SourceCustom, idempotencyKey, strconv.Itoa(index))
}

// customFields are the accepted keys of one event.
var customFields = map[string]bool{
	"type": true, "name": true, "app_id": true, "environment": true, "app_user_id": true, "product_id": true,
	"subscription_id": true, "transaction_id": true, "revenue": true, "occurred_at": true, "identifiers": true,
	"attributes": true,
}

// plainDecimal is what an amount may look like: no exponent, no NaN.
var plainDecimal = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// customParser collects every field error of a request.
type customParser struct {
	now       time.Time
	retention time.Duration
	errs      []FieldError
}

func (p *customParser) fail(field, format string, args ...any) {
	p.errs = append(p.errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// object decodes raw as a JSON object with exact number texts.
func object(raw []byte) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false
	}
	return m, true
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// ParseCustom validates a POST /v1/events body: one event object, or
// {"events": [...]} with 1 to MaxCustomBatch events. It reports every
// invalid field (unknown fields, bad types, unknown event types or
// identifiers, bad currencies, amounts that are not finite plain decimals
// or are finer than the currency's minor unit, times in the future or older
// than retention). now is the receive time. An event without occurred_at
// keeps a zero OccurredAt (it happened when received): the canonical request
// holds only what the client sent, so a retry of the same request is equal
// to the first. Emails and phones come back hashed.
func ParseCustom(body []byte, now time.Time, retention time.Duration) (*CustomRequest, []FieldError) {
	p := &customParser{now: now.UTC(), retention: retention}
	top, ok := object(body)
	if !ok {
		return nil, []FieldError{{Field: "body", Message: "must be a JSON object: one event, or {\"events\": [...]}"}}
	}
	req := &CustomRequest{}
	rawEvents, batch := top["events"]
	if !batch {
		if e, ok := p.event(top, ""); ok {
			req.Events = append(req.Events, e)
		}
	} else {
		req.Batch = true
		for _, k := range sortedKeys(top) {
			if k != "events" {
				p.fail(k, "unknown field (a batch body holds only \"events\")")
			}
		}
		var items []json.RawMessage
		switch err := json.Unmarshal(rawEvents, &items); {
		case err != nil || bytes.Equal(bytes.TrimSpace(rawEvents), []byte("null")):
			p.fail("events", "must be an array of event objects")
		case len(items) == 0:
			p.fail("events", "must hold at least one event")
		case len(items) > MaxCustomBatch:
			p.fail("events", "holds %d events; at most %d are allowed per request", len(items), MaxCustomBatch)
		default:
			for i, raw := range items {
				prefix := fmt.Sprintf("events[%d]", i)
				obj, ok := object(raw)
				if !ok {
					p.fail(prefix, "must be an event object")
					continue
				}
				if e, ok := p.event(obj, prefix); ok {
					req.Events = append(req.Events, e)
				}
			}
		}
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return req, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// str reads a JSON string field; absent or null is "".
func (p *customParser) str(obj map[string]json.RawMessage, key, prefix string, max int) string {
	raw, ok := obj[key]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.fail(join(prefix, key), "must be a string")
		return ""
	}
	s = strings.TrimSpace(s)
	switch {
	case len(s) > max:
		p.fail(join(prefix, key), "is longer than %d bytes", max)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		p.fail(join(prefix, key), "must not contain control characters")
	}
	return s
}

func (p *customParser) event(obj map[string]json.RawMessage, prefix string) (CustomEvent, bool) {
	before := len(p.errs)
	for _, k := range sortedKeys(obj) {
		if !customFields[k] {
			p.fail(join(prefix, k), "unknown field")
		}
	}
	e := CustomEvent{
		Type:           Type(p.str(obj, "type", prefix, maxCustomString)),
		Name:           p.str(obj, "name", prefix, 100),
		AppID:          p.str(obj, "app_id", prefix, maxCustomString),
		Environment:    p.str(obj, "environment", prefix, maxCustomString),
		AppUserID:      p.str(obj, "app_user_id", prefix, maxCustomString),
		ProductID:      p.str(obj, "product_id", prefix, maxCustomString),
		SubscriptionID: p.str(obj, "subscription_id", prefix, maxCustomString),
		TransactionID:  p.str(obj, "transaction_id", prefix, maxCustomString),
	}
	switch {
	case e.Type == "":
		p.fail(join(prefix, "type"), "is required (custom, purchase, refund, subscription_started, ...)")
	case !e.Type.Valid():
		p.fail(join(prefix, "type"), "%q is not a canonical event type", e.Type)
	case e.Type == Custom && e.Name == "":
		p.fail(join(prefix, "name"), "is required for type custom")
	case e.Type != Custom && e.Name != "":
		p.fail(join(prefix, "name"), "is only allowed with type custom")
	}
	if e.AppID == "" {
		p.fail(join(prefix, "app_id"), "is required (the app the event belongs to, as destinations match it)")
	}
	switch e.Environment {
	case "":
		e.Environment = Production
	case Production, Sandbox:
	default:
		p.fail(join(prefix, "environment"), "%q is not one of production, sandbox", e.Environment)
	}
	e.OccurredAt = p.occurredAt(obj, prefix)
	e.Revenue = p.revenue(obj, prefix, e.Type)
	e.Identifiers = p.identifiers(obj, prefix)
	e.Attributes = p.attributes(obj, prefix)
	return e, len(p.errs) == before
}

func (p *customParser) occurredAt(obj map[string]json.RawMessage, prefix string) time.Time {
	field := join(prefix, "occurred_at")
	s := p.str(obj, "occurred_at", prefix, 64)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		p.fail(field, "must be an RFC 3339 time such as 2026-11-30T03:00:00Z")
		return time.Time{}
	}
	t = t.UTC()
	switch {
	case t.After(p.now.Add(CustomClockSkew)):
		p.fail(field, "is in the future")
	case p.retention > 0 && t.Before(p.now.Add(-p.retention)):
		p.fail(field, "is older than the retention (%s)", p.retention)
	}
	return t
}

func (p *customParser) revenue(obj map[string]json.RawMessage, prefix string, t Type) *Revenue {
	raw, ok := obj["revenue"]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	field := join(prefix, "revenue")
	r, ok := object(raw)
	if !ok {
		p.fail(field, "must be an object {\"amount\": \"9.99\", \"currency\": \"USD\"}")
		return nil
	}
	for _, k := range sortedKeys(r) {
		if k != "amount" && k != "currency" {
			p.fail(join(field, k), "unknown field")
		}
	}
	cur := p.str(r, "currency", field, 8)
	code, err := NormalizeCurrency(cur)
	switch {
	case cur == "":
		p.fail(join(field, "currency"), "is required (ISO 4217, e.g. USD)")
	case err != nil:
		p.fail(join(field, "currency"), "%q is not an ISO 4217 currency code", cur)
	}
	amount, ok := p.amount(r["amount"], join(field, "amount"))
	if !ok || err != nil || cur == "" {
		return nil
	}
	rev, err := MicrosFromDecimal(amount, code)
	if errors.Is(err, ErrPrecision) {
		exp, _ := Exponent(code)
		p.fail(join(field, "amount"), "%s has more decimals than %s allows (%d)", amount, code, exp)
		return nil
	}
	if err != nil {
		p.fail(join(field, "amount"), "%s is too large", amount)
		return nil
	}
	switch {
	case t == Refund && rev.AmountMicros > 0:
		rev = rev.Negate() // refunds are stored negative, whichever sign was sent
	case t != Refund && rev.AmountMicros < 0:
		p.fail(join(field, "amount"), "must not be negative (only refunds are)")
		return nil
	}
	if rev.AmountMicros == 0 {
		return nil // no money moved
	}
	return &rev
}

// amount reads a decimal given as a JSON string or number, as text: never
// through float64.
func (p *customParser) amount(raw json.RawMessage, field string) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		p.fail(field, "is required")
		return "", false
	}
	text := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			p.fail(field, "must be a decimal number")
			return "", false
		}
		text = strings.TrimSpace(text)
	} else if raw[0] == '{' || raw[0] == '[' || raw[0] == 't' || raw[0] == 'f' {
		p.fail(field, "must be a decimal number such as 9.99")
		return "", false
	}
	if !plainDecimal.MatchString(text) {
		p.fail(field, "%q is not a finite plain decimal such as 9.99 (no exponent, NaN or Infinity)", text)
		return "", false
	}
	return text, true
}

// identifiers validates and hashes a user's identifiers. Emails and phones
// are normalized and hashed here; the raw values are not kept.
func (p *customParser) identifiers(obj map[string]json.RawMessage, prefix string) map[string]string {
	raw, ok := obj["identifiers"]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	field := join(prefix, "identifiers")
	m, ok := object(raw)
	if !ok {
		p.fail(field, "must be an object of identifier names to string values")
		return nil
	}
	ids := map[string]string{}
	for _, k := range sortedKeys(m) {
		v := p.str(m, k, field, maxCustomValue)
		if errs := ValidateIdentifier(k, v); errs != "" {
			p.fail(join(field, k), "%s", errs)
			continue
		}
		if v != "" {
			SetIdentifierValue(ids, k, v)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return ids
}

func (p *customParser) attributes(obj map[string]json.RawMessage, prefix string) map[string]string {
	raw, ok := obj["attributes"]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	field := join(prefix, "attributes")
	m, ok := object(raw)
	if !ok {
		p.fail(field, "must be an object of names to string values")
		return nil
	}
	if len(m) > maxCustomAttributes {
		p.fail(field, "holds %d attributes; at most %d are allowed", len(m), maxCustomAttributes)
		return nil
	}
	out := map[string]string{}
	for _, k := range sortedKeys(m) {
		if len(k) == 0 || len(k) > 64 || !utf8.ValidString(k) {
			p.fail(join(field, k), "attribute names are 1 to 64 bytes")
			continue
		}
		if v := p.str(m, k, field, maxCustomValue); v != "" {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// UserIdentifierNames lists the keys the custom events and identity APIs
// accept: every IdentifierNames entry plus "email" and "phone", which are
// stored hashed (email_sha256; phone_sha256 and phone_e164_sha256).
func UserIdentifierNames() []string {
	return append(append([]string(nil), IdentifierNames...), "email", "phone")
}

// ValidateIdentifier checks one identifier sent to the API and returns what
// is wrong with it, or "". An empty value is valid (it removes the
// identifier in the identity API).
func ValidateIdentifier(name, value string) string {
	known := name == "email" || name == "phone"
	for _, n := range IdentifierNames {
		known = known || n == name
	}
	if !known {
		return "unknown identifier (known: " + strings.Join(UserIdentifierNames(), ", ") + ")"
	}
	if value == "" {
		return ""
	}
	switch name {
	case "email":
		if !SetEmail(map[string]string{}, value) {
			return "is not an email address"
		}
	case "phone":
		if !SetPhone(map[string]string{}, value) {
			return "is not a phone number (digits with the country code, e.g. +16505551212)"
		}
	case IDATTStatus:
		if value != "0" && value != "1" && value != "2" && value != "3" {
			return "must be 0, 1, 2 or 3 (ATTrackingManager.AuthorizationStatus)"
		}
	case IDOS:
		if v := strings.ToLower(value); v != "ios" && v != "android" {
			return "must be ios or android"
		}
	case IDCountry:
		if len(value) != 2 || strings.IndexFunc(value, func(r rune) bool { return !unicode.IsLetter(r) }) >= 0 {
			return "must be an ISO 3166-1 alpha-2 code such as US"
		}
	}
	return ""
}

// SetIdentifierValue stores a validated identifier in ids in its stored
// form: email and phone hashed, os lower-case, country upper-case.
func SetIdentifierValue(ids map[string]string, name, value string) {
	switch name {
	case "email":
		SetEmail(ids, value)
	case "phone":
		SetPhone(ids, value)
	case IDOS:
		ids[name] = strings.ToLower(value)
	case IDCountry:
		ids[name] = strings.ToUpper(value)
	default:
		ids[name] = value
	}
}

// MapCustom maps a stored custom request (the canonical CustomRequest written
// by the /v1/events handler) to its events, with ids CustomEventID(key, i).
func MapCustom(n *Notification, _ States) (Result, error) {
	var req CustomRequest
	if err := json.Unmarshal(n.Body, &req); err != nil {
		return Result{}, malformed("custom request: %v", err)
	}
	if len(req.Events) == 0 {
		return Result{}, malformed("custom request without events")
	}
	var out Result
	for i, ce := range req.Events {
		if !ce.Type.Valid() || ce.AppID == "" || ce.Type == Custom && ce.Name == "" {
			return Result{}, malformed("custom event %d: invalid type, name or app_id", i)
		}
		env := ce.Environment
		if env != Sandbox {
			env = Production
		}
		at := ce.OccurredAt.UTC()
		if at.IsZero() {
			at = n.ReceivedAt.UTC()
		}
		e := Event{
			ID:             CustomEventID(n.Key, i),
			Type:           ce.Type,
			Name:           ce.Name,
			Source:         SourceCustom,
			Environment:    env,
			AppID:          ce.AppID,
			ProductID:      ce.ProductID,
			SubscriptionID: ce.SubscriptionID,
			TransactionID:  ce.TransactionID,
			Revenue:        ce.Revenue,
			User:           User{AppUserID: ce.AppUserID},
			OccurredAt:     at,
			ReceivedAt:     n.ReceivedAt.UTC(),
			SourceEventID:  n.Key,
		}
		if len(ce.Identifiers) > 0 {
			e.User.Identifiers = ce.Identifiers
		}
		if len(ce.Attributes) > 0 {
			e.Attributes = ce.Attributes
		}
		out.Events = append(out.Events, e)
	}
	return out, nil
}
