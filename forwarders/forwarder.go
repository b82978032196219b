package forwarders

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// Forwarder sends canonical events to one destination. The dispatcher owns
// scheduling, rate limits, backoff and the circuit breaker; a forwarder only
// builds requests and says what each response means.
type Forwarder interface {
	// Send delivers a batch (at most Limits().BatchSize items) and returns one
	// Result per item, in the same order.
	Send(ctx context.Context, batch []Item) []Result
	// Limits tells the dispatcher how to batch for this destination.
	Limits() Limits
}

// Requirer is implemented by forwarders that need identifiers the event may
// not carry yet (AppsFlyer needs appsflyer_id). Missing returns the name of
// the first required identifier the event lacks, or "". The dispatcher then
// waits for the identity store to supply it (identity_wait) or skips.
type Requirer interface {
	Missing(e *mapping.Event) string
}

// Checker is implemented by forwarders that can validate their configuration
// against the destination itself (GA4's /debug/mp/collect). The gateway calls
// Check at start-up and, where the destination opts in, periodically; a
// non-nil error is logged and shown in the admin view, never fatal.
type Checker interface {
	Check(ctx context.Context) error
}

// Limits describes how a destination wants to be called.
type Limits struct {
	BatchSize int           // max events per request; 1 means no batching
	MaxAge    time.Duration // events older than this are never sent (0: no limit)
}

// Item is one delivery handed to a forwarder.
type Item struct {
	Key     string // delivery key, stable across retries
	Attempt int    // 1 for the first attempt
	Event   *mapping.Event
}

// Outcome says what happened to one delivery attempt.
type Outcome string

// Outcomes a forwarder can report.
const (
	Delivered Outcome = "delivered"
	Retry     Outcome = "retry"   // transient: try again later
	Dead      Outcome = "dead"    // permanent for this event: never retry
	Skipped   Outcome = "skipped" // deliberately not sent (no event name, sandbox, too old); final
	Duplicate Outcome = "duplicate"
	// Pause means the destination itself is misconfigured or its credentials
	// are refused: the event is not at fault, so it is retried once an operator
	// fixes the configuration, and the destination is paused meanwhile.
	Pause Outcome = "pause"
)

// Result reports one attempt.
type Result struct {
	Outcome    Outcome
	Status     int           // HTTP status, 0 when no response
	RetryAfter time.Duration // from Retry-After or the API's own throttling hint
	// Throttle asks the dispatcher to slow the whole destination down (the
	// API said it is rate limited), not just to retry this item later.
	Throttle bool
	Reason   string // short machine-friendly reason, e.g. "http_400", "missing appsflyer_id"
	Request  string // request summary with secrets masked (method, URL without secrets)
	Response string // first KiB of the response body
	Err      error
}

// Settings is what every destination shares; type-specific keys are decoded
// by the constructor from the same YAML node.
type Settings struct {
	Name       string
	Type       string
	Endpoint   string
	EventNames map[string]string
	Decode     func(v any) error // decodes the destination's YAML block into v
	Client     *http.Client
	Now        func() time.Time
}

// Memory is a small durable space a forwarder may keep across restarts: a
// time per key (Adjust's latest delivered event per device and token). The
// store provides it; entries older than storage.retention are pruned.
type Memory interface {
	Get(key string) (time.Time, bool, error)
	Put(key string, at time.Time) error
}

// Rememberer is a forwarder that keeps a Memory once the store is open.
type Rememberer interface {
	SetMemory(m Memory)
}

// Constructor builds a forwarder from its settings, validating without I/O.
type Constructor func(s Settings) (Forwarder, error)

// ErrConfig reports an invalid destination configuration.
var ErrConfig = errors.New("forwarders: invalid configuration")

// ErrDisabled reports a destination whose secrets are not set: it is logged
// as disabled at start-up instead of failing the gateway.
var ErrDisabled = errors.New("forwarders: destination disabled")

// configError names the offending key.
func configError(s Settings, key, msg string) error {
	return fmt.Errorf("%w: destinations[%s].%s: %s", ErrConfig, s.Name, key, msg)
}

// registry lists the built-in destination types: one line per destination.
var registry = map[string]Constructor{
	"webhook":   NewWebhook,
	"appsflyer": NewAppsFlyer,
	"adjust":    NewAdjust,
	"singular":  NewSingular,
	"branch":    NewBranch,
	"kochava":   NewKochava,
	"meta":      NewMeta,
	"tiktok":    NewTikTok,
	"ga4":       NewGA4,
}

// New builds the forwarder of s.Type.
func New(s Settings) (Forwarder, error) {
	c, ok := registry[s.Type]
	if !ok {
		return nil, fmt.Errorf("%w: destinations[%s].type: unknown type %q (one of %s)", ErrConfig, s.Name, s.Type, strings.Join(Types(), ", "))
	}
	if s.Client == nil {
		s.Client = NewClient(15 * time.Second)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Decode == nil {
		s.Decode = func(any) error { return nil }
	}
	return c(s)
}

// Types lists the registered destination types.
func Types() []string {
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// NewClient returns the HTTP client forwarders share: no redirects followed
// (a 3xx is a failure), bounded timeouts, keep-alive pools.
func NewClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.ResponseHeaderTimeout = timeout
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Classify turns an HTTP status into an outcome with the generic rules:
// 2xx delivered; network errors, 408, 425, 429 and 5xx retried; 401 and 403
// pause the destination; every other status is dead.
func Classify(status int) Outcome {
	switch {
	case status >= 200 && status < 300:
		return Delivered
	case status == 0, status == 408, status == 425, status == 429, status >= 500:
		return Retry
	case status == 401, status == 403:
		return Pause
	default:
		return Dead
	}
}

// RetryAfter parses a Retry-After header (seconds or HTTP date).
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// productChangedNoRevenue is the default-table key for a product_changed
// event without revenue (a downgrade that takes effect at the next renewal).
// The built-in tables send product_changed only when it carries money (an
// upgrade's charge, so that attribution counts it) and leave a plan change
// without money off, except the RevenueCat preset, which names both.
const productChangedNoRevenue = "product_changed/no_revenue"

// EventName returns the destination's name for an event: the per-destination
// override, else the type's default table, else "" (not sent). A
// product_changed without revenue reads the table's productChangedNoRevenue
// entry instead of product_changed.
func EventName(e *mapping.Event, overrides, defaults map[string]string) string {
	if e.Type == mapping.Custom && e.Name != "" {
		if n, ok := overrides["custom:"+e.Name]; ok {
			return n
		}
		if n, ok := overrides[string(mapping.Custom)]; ok && n != "" {
			return n
		}
		return e.Name
	}
	if n, ok := overrides[string(e.Type)]; ok {
		return n
	}
	if e.Type == mapping.ProductChanged && e.Revenue == nil {
		return defaults[productChangedNoRevenue]
	}
	return defaults[string(e.Type)]
}

// All returns a result slice with the same result for every item.
func All(n int, r Result) []Result {
	out := make([]Result, n)
	for i := range out {
		out[i] = r
	}
	return out
}
