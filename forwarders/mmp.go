package forwarders

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// Reasons of Skipped results and of special classifications, shared by the
// MMP forwarders (AppsFlyer, Adjust, Singular, Branch, Kochava). They are the
// "not sent, counted" labels the dispatcher stores and counts.
const (
	ReasonNoEventName     = "no_event_name"               // the type has no name (or Adjust token) at this destination
	ReasonSandboxNoCreds  = "sandbox_without_credentials" // a sandbox event and no sandbox: block
	ReasonTooOld          = "too_old"                     // older than the destination accepts
	ReasonFutureTimestamp = "future_timestamp"            // occurred_at more than a minute ahead of now
	ReasonOutOfOrder      = "out_of_order"                // older than an event already delivered for the same device (Adjust)
	ReasonOptedOut        = "device_opted_out"            // the receiver says the device opted out (Adjust 451)
	ReasonFXRateMissing   = "fx_rate_missing"             // currency: USD and no fx_rates entry for the event's currency
	ReasonAuth            = "auth_failed"                 // credentials refused: the destination is paused
	ReasonConfig          = "config_rejected"             // app id, token or key refused: the destination is paused
	ReasonDuplicate       = "duplicate"                   // the receiver already has this event
	ReasonLateTimestamp   = "late_timestamp"              // delivered, but the receiver will stamp it with arrival time (AppsFlyer)
	ReasonValidation      = "validation"                  // the receiver refused the payload (body says why)
	ReasonDeviceNotFound  = "device_not_found"            // Adjust does not know the device yet
	ReasonRevenueOverflow = "revenue_overflow"            // the converted amount does not fit
	ReasonUnknownPlatform = "unknown_platform"            // neither identifiers.os nor the source says iOS or Android
)

// PresetRevenueCat is the value of an MMP destination's preset key that
// selects RevenueCat's rc_* event names.
const PresetRevenueCat = "revenuecat"

const (
	futureSkew     = time.Minute // clock skew tolerated on occurred_at
	maxErrorDetail = 120         // characters of a response body quoted in an error
)

// Platforms as the MMP forwarders use them internally.
const (
	platformIOS     = "ios"
	platformAndroid = "android"
)

// mmpSettings are the keys every MMP destination shares besides its
// credentials: the revenue rules and the naming preset.
type mmpSettings struct {
	RevenueSettings `yaml:",inline"`
	Preset          string `yaml:"preset"`
}

// mmp is the shared state of an MMP forwarder.
type mmp struct {
	name      string
	defaults  map[string]string // the type's default names, or the preset's
	overrides map[string]string // event_names
	money     Money
	client    *http.Client
	now       func() time.Time
}

// newMMP validates the shared keys. own returns the type's default names;
// maxName bounds the length of an event name (0: no bound).
func newMMP(s Settings, ms mmpSettings, own func() map[string]string, maxName int) (mmp, error) {
	m := mmp{name: s.Name, client: s.Client, now: s.Now, overrides: map[string]string{}}
	switch strings.ToLower(strings.TrimSpace(ms.Preset)) {
	case "":
		m.defaults = own()
	case PresetRevenueCat:
		m.defaults = revenueCatNames()
	default:
		return mmp{}, configError(s, "preset", fmt.Sprintf("%q is not a known preset (revenuecat)", ms.Preset))
	}
	for k, v := range s.EventNames {
		if err := validEventNameKey(k); err != nil {
			return mmp{}, configError(s, "event_names."+k, err.Error())
		}
		v = strings.TrimSpace(v)
		if maxName > 0 && len(v) > maxName {
			return mmp{}, configError(s, "event_names."+k, fmt.Sprintf("%q is longer than the %d characters %s accepts", v, maxName, s.Type))
		}
		m.overrides[k] = v
	}
	money, err := ms.RevenueSettings.Compile(s)
	if err != nil {
		return mmp{}, err
	}
	m.money = money
	return m, nil
}

// validEventNameKey accepts a canonical type or "custom:<name>".
func validEventNameKey(k string) error {
	if name, ok := strings.CutPrefix(k, "custom:"); ok {
		if name == "" {
			return fmt.Errorf("custom: needs the custom event's name after the colon")
		}
		return nil
	}
	if !mapping.Type(k).Valid() {
		return fmt.Errorf("not a canonical event type")
	}
	return nil
}

// eventName returns the event's name at this destination, "" when not sent.
func (m *mmp) eventName(e *mapping.Event) string { return EventName(e, m.overrides, m.defaults) }

// revenueCatNames is the preset: the names RevenueCat sends to MMPs, so that
// customers who migrate keep their dashboards. RevenueCat has no refund
// event: it reports a refund as a cancellation with negative revenue, so
// refund maps to rc_cancellation_event (with the negative amount where the
// destination accepts one). Reactivations are renewals in RevenueCat.
func revenueCatNames() map[string]string {
	return map[string]string{
		string(mapping.TrialStarted):            "rc_trial_started_event",
		string(mapping.TrialConverted):          "rc_trial_converted_event",
		string(mapping.TrialCancelled):          "rc_trial_cancelled_event",
		string(mapping.SubscriptionStarted):     "rc_initial_purchase_event",
		string(mapping.SubscriptionRenewed):     "rc_renewal_event",
		string(mapping.SubscriptionReactivated): "rc_renewal_event",
		string(mapping.SubscriptionCancelled):   "rc_cancellation_event",
		string(mapping.SubscriptionUncancelled): "rc_uncancellation_event",
		string(mapping.SubscriptionExpired):     "rc_expiration_event",
		string(mapping.SubscriptionPaused):      "rc_subscription_paused_event",
		string(mapping.BillingIssue):            "rc_billing_issue_event",
		string(mapping.ProductChanged):          "rc_product_change_event",
		productChangedNoRevenue:                 "rc_product_change_event",
		string(mapping.Purchase):                "rc_non_subscription_purchase_event",
		string(mapping.Refund):                  "rc_cancellation_event",
	}
}

// standardNames builds a type's default table: the given standard names plus
// the canonical type name for the other types that are on by default.
// product_changed is on when it carries revenue (an upgrade's charge counts
// toward attribution: the canonical name, a custom revenue event where the
// vendor has no plan-change event) and off without (see EventName).
// Off by default (enable with event_names): subscription_uncancelled,
// subscription_expired, subscription_paused, billing_recovered.
func standardNames(std map[mapping.Type]string) map[string]string {
	out := map[string]string{}
	for _, t := range []mapping.Type{
		mapping.TrialStarted, mapping.TrialConverted, mapping.TrialCancelled, mapping.SubscriptionStarted,
		mapping.SubscriptionRenewed, mapping.SubscriptionReactivated, mapping.SubscriptionCancelled,
		mapping.BillingIssue, mapping.Purchase, mapping.Refund, mapping.ProductChanged,
	} {
		out[string(t)] = string(t)
	}
	for t, n := range std {
		out[string(t)] = n
	}
	return out
}

// eventTime checks occurred_at against now and the destination's window. It
// returns the time to report (clamped to now when it is at most a minute
// ahead, so a future timestamp is never sent) or a Skipped result.
func eventTime(e *mapping.Event, now time.Time, maxAge time.Duration) (time.Time, *Result) {
	t := e.OccurredAt
	if t.IsZero() {
		t = e.ReceivedAt
	}
	if t.IsZero() {
		t = now
	}
	if t.After(now.Add(futureSkew)) {
		return time.Time{}, &Result{Outcome: Skipped, Reason: ReasonFutureTimestamp,
			Err: fmt.Errorf("occurred_at %s is %s ahead of now", t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Second))}
	}
	if t.After(now) {
		t = now
	}
	if maxAge > 0 && now.Sub(t) > maxAge {
		return time.Time{}, &Result{Outcome: Skipped, Reason: ReasonTooOld,
			Err: fmt.Errorf("occurred_at %s is older than the %s the destination accepts", t.UTC().Format(time.RFC3339), maxAge)}
	}
	return t.UTC(), nil
}

// platformOf returns "ios", "android" or "" for an event: identifiers.os when
// set, else the store it came from.
func platformOf(e *mapping.Event) string {
	switch strings.ToLower(strings.TrimSpace(e.Identifier(mapping.IDOS))) {
	case "ios", "ipados", "iphone os":
		return platformIOS
	case "android":
		return platformAndroid
	}
	switch e.Source {
	case mapping.SourceApple:
		return platformIOS
	case mapping.SourceGoogle:
		return platformAndroid
	}
	return ""
}

// mmpATT returns the App Tracking Transparency status 0..3 (not
// determined, restricted, denied, authorized), accepting the number or its
// name.
func mmpATT(e *mapping.Event) (int, bool) {
	v := strings.ToLower(strings.TrimSpace(e.Identifier(mapping.IDATTStatus)))
	switch v {
	case "0", "notdetermined", "not_determined":
		return 0, true
	case "1", "restricted":
		return 1, true
	case "2", "denied":
		return 2, true
	case "3", "authorized":
		return 3, true
	}
	return 0, false
}

// convert applies the destination's money rules; a missing fx rate pauses
// the destination (a configuration fix), an overflow is dead.
func (m *mmp) convert(e *mapping.Event) (*mapping.Revenue, *Result) {
	r, err := m.money.Convert(e)
	if err == nil {
		return r, nil
	}
	if errors.Is(err, ErrNoFXRate) {
		return nil, &Result{Outcome: Pause, Reason: ReasonFXRateMissing, Err: err}
	}
	return nil, &Result{Outcome: Dead, Reason: ReasonRevenueOverflow, Err: err}
}

// verdict is a forwarder's reading of one response.
type verdict struct {
	outcome    Outcome
	reason     string
	throttle   bool
	retryAfter time.Duration
}

// do sends req through the shared Do and applies the forwarder's verdict,
// masking every secret in what the Result carries.
func (m *mmp) do(req *http.Request, summary string, classify func(status int, body []byte) verdict, secrets []string) Result {
	var v verdict
	r := Do(m.client, req, summary, func(status int, body []byte) Outcome {
		v = classify(status, body)
		return v.outcome
	}, m.now)
	if r.Status != 0 {
		if v.reason != "" {
			r.Reason = v.reason
		}
		if v.throttle || r.Status == http.StatusTooManyRequests {
			r.Throttle = true
		}
		if v.retryAfter > 0 && r.RetryAfter == 0 {
			r.RetryAfter = v.retryAfter
		}
		if r.Outcome == Skipped {
			r.Err = fmt.Errorf("%s: HTTP %d: %s", summary, r.Status, oneLine(r.Response))
		} else if r.Err != nil {
			r.Err = fmt.Errorf("%w: %s", r.Err, oneLine(r.Response))
		}
	}
	return scrub(r, secrets)
}

// oneLine shortens a response body for an error message.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxErrorDetail {
		s = s[:maxErrorDetail] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// maskedError is an error whose text had secrets replaced; it still unwraps
// to the original so errors.Is keeps working.
type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

// maskSecrets replaces each secret (of at least 4 characters) in s with ***.
func maskSecrets(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}

// scrub masks secrets in every text a Result carries.
func scrub(r Result, secrets []string) Result {
	r.Request = maskSecrets(r.Request, secrets)
	r.Response = maskSecrets(r.Response, secrets)
	r.Reason = maskSecrets(r.Reason, secrets)
	if r.Err != nil {
		if msg := maskSecrets(r.Err.Error(), secrets); msg != r.Err.Error() {
			r.Err = &maskedError{msg: msg, err: r.Err}
		}
	}
	return r
}

// sendEach sends a batch one item at a time (no MMP batches) and returns one
// Result per item; a cancelled context answers the rest with Retry.
func sendEach(ctx context.Context, batch []Item, send func(context.Context, Item) Result) []Result {
	out := make([]Result, len(batch))
	for i, it := range batch {
		if err := ctx.Err(); err != nil {
			out[i] = Result{Outcome: Retry, Reason: "cancelled", Err: err}
			continue
		}
		if it.Event == nil {
			out[i] = Result{Outcome: Dead, Reason: "no_event", Err: fmt.Errorf("delivery %s has no event", it.Key)}
			continue
		}
		out[i] = send(ctx, it)
	}
	return out
}

// skip builds a Skipped result.
func skip(reason, format string, args ...any) Result {
	return Result{Outcome: Skipped, Reason: reason, Err: fmt.Errorf(format, args...)}
}

// mmpAttributes returns the string attributes an MMP can carry as custom
// parameters: the event's attributes plus its ids, never identifiers.
func mmpAttributes(e *mapping.Event) map[string]string {
	out := map[string]string{}
	for k, v := range e.Attributes {
		out[k] = v
	}
	out["event_id"] = e.ID
	if e.SubscriptionID != "" {
		out["subscription_id"] = e.SubscriptionID
	}
	out["store"] = e.Source
	if e.Sandboxed() {
		out["environment"] = e.Environment
	}
	return out
}

// ipv4 returns v in dotted-quad form when it is an IPv4 address (an
// IPv4-mapped IPv6 address included), else "": AppsFlyer, Adjust, Singular
// v1 and Kochava document an IPv4 field.
func ipv4(v string) string {
	ip := net.ParseIP(strings.TrimSpace(v))
	if ip == nil || ip.To4() == nil {
		return ""
	}
	return ip.To4().String()
}

// mmpMillis formats a time as Unix milliseconds.
func mmpMillis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// errBodyTooLarge reports an event that cannot fit a destination's size cap
// even without its optional fields.
func errBodyTooLarge(dest string, limit int) error {
	return fmt.Errorf("%s request body exceeds %d bytes even without optional parameters", dest, limit)
}
