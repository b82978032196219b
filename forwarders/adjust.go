package forwarders

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postback/postback/mapping"
)

// Adjust sends events to Adjust's server-to-server events endpoint: POST
// {base}/event with an application/x-www-form-urlencoded body, s2s=1, the
// app token and one event token per canonical type. With S2S Security on,
// the token goes in "Authorization: Bearer".
//
// Adjust has no free-text event names: a type without an event token is
// not sent (Skipped no_event_name). Revenue must be at least 0.001, so
// trials and refunds are sent without revenue (the refund token still
// counts). Events older than 58 days, and events older than one already
// delivered for the same device and token, are rejected by Adjust and so are
// skipped before sending; the order memory is kept in the store, so it
// survives a restart.
//
// Adjust answers some failures with a 2xx: 202 means the S2S Security token
// is missing or wrong, which pauses the destination. "Ignoring event,
// earlier unique event tracked" is a duplicate; 451 means the device opted
// out (Skipped device_opted_out).
type Adjust struct {
	mmp
	prod    adjustTarget
	sandbox *adjustTarget
	order   *adjustOrder
}

var (
	_ Forwarder  = (*Adjust)(nil)
	_ Rememberer = (*Adjust)(nil)
	_ Requirer   = (*Adjust)(nil)
)

// adjustCredentials are the keys of the production block and of sandbox:.
type adjustCredentials struct {
	AppToken    string            `yaml:"app_token"`
	S2SToken    string            `yaml:"s2s_token"`
	EventTokens map[string]string `yaml:"event_tokens"`
}

// adjustSettings is the type-specific configuration.
type adjustSettings struct {
	mmpSettings       `yaml:",inline"`
	adjustCredentials `yaml:",inline"`
	Sandbox           *adjustCredentials `yaml:"sandbox"`
}

// adjustTarget is one resolved set of credentials.
type adjustTarget struct {
	url         string
	appToken    string
	s2sToken    string
	tokens      map[string]string
	environment string
}

// Adjust limits and defaults.
const (
	adjustBase      = "https://s2s.adjust.com"
	adjustMaxAge    = 58 * 24 * time.Hour
	adjustOrderCap  = 100_000 // devices x tokens remembered for ordering
	adjustNotFoundN = 3       // attempts that retry "Device not found"
	adjustNotFoundW = 20 * time.Minute
)

var adjustTokenRE = regexp.MustCompile(`^[A-Za-z0-9]{4,32}$`)

// NewAdjust validates an Adjust destination.
func NewAdjust(s Settings) (Forwarder, error) {
	var cfg adjustSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	if len(s.EventNames) > 0 {
		return nil, configError(s, "event_names", "Adjust identifies events by token: use event_tokens: {trial_started: abc123, ...}")
	}
	if cfg.Preset != "" {
		return nil, configError(s, "preset", "Adjust identifies events by token, so name presets do not apply; use event_tokens")
	}
	m, err := newMMP(s, cfg.mmpSettings, func() map[string]string { return nil }, 0)
	if err != nil {
		return nil, err
	}
	base := s.Endpoint
	if base == "" {
		base = adjustBase
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, configError(s, "endpoint", "must be an http(s) URL")
	}
	u := strings.TrimRight(base, "/") + "/event"
	prod, err := adjustResolve(s, "", cfg.adjustCredentials, adjustCredentials{}, u, "production")
	if err != nil {
		return nil, err
	}
	if len(prod.tokens) == 0 {
		return nil, configError(s, "event_tokens", "map at least one canonical type to an Adjust event token (Adjust dashboard: app > Events)")
	}
	a := &Adjust{mmp: m, prod: prod, order: &adjustOrder{last: map[string]time.Time{}}}
	if cfg.Sandbox != nil {
		sb, err := adjustResolve(s, "sandbox.", *cfg.Sandbox, cfg.adjustCredentials, u, "sandbox")
		if err != nil {
			return nil, err
		}
		a.sandbox = &sb
	}
	return a, nil
}

// adjustResolve validates one credential set. A sandbox block inherits what
// it leaves out: Adjust keeps sandbox data apart by environment=sandbox on
// the same app, so an empty sandbox: {} is enough to send sandbox events.
func adjustResolve(s Settings, prefix string, c, inherit adjustCredentials, u, env string) (adjustTarget, error) {
	t := adjustTarget{url: u, environment: env, tokens: map[string]string{}}
	t.appToken = strings.TrimSpace(c.AppToken)
	if t.appToken == "" {
		t.appToken = strings.TrimSpace(inherit.AppToken)
	}
	if !adjustTokenRE.MatchString(t.appToken) {
		return t, configError(s, prefix+"app_token", "an alphanumeric Adjust app token is required (Adjust dashboard: app > App token)")
	}
	t.s2sToken = strings.TrimSpace(c.S2SToken)
	if t.s2sToken == "" {
		t.s2sToken = strings.TrimSpace(inherit.S2SToken)
	}
	tokens := c.EventTokens
	if tokens == nil {
		tokens = inherit.EventTokens
	}
	for k, v := range tokens {
		if err := validEventNameKey(k); err != nil {
			return t, configError(s, prefix+"event_tokens."+k, err.Error())
		}
		v = strings.TrimSpace(v)
		if v != "" && !adjustTokenRE.MatchString(v) {
			return t, configError(s, prefix+"event_tokens."+k, "an Adjust event token is alphanumeric, e.g. f0ob4r")
		}
		t.tokens[k] = v
	}
	return t, nil
}

// Limits implements Forwarder: one event per request, Adjust's 58 days.
func (a *Adjust) Limits() Limits { return Limits{BatchSize: 1, MaxAge: adjustMaxAge} }

// Missing implements Requirer: Adjust needs the Adjust device id or an
// advertising or vendor id.
func (a *Adjust) Missing(e *mapping.Event) string {
	if adjustDevice(e) == "" {
		return mapping.IDAdjust
	}
	return ""
}

// adjustDevice returns the identifier that keys the device for ordering.
func adjustDevice(e *mapping.Event) string {
	for _, k := range []string{mapping.IDAdjust, mapping.IDIDFA, mapping.IDGAID, mapping.IDIDFV, mapping.IDAndroidID} {
		if v := e.Identifier(k); v != "" {
			return k + ":" + v
		}
	}
	return ""
}

// adjustToken returns the event token of e: tokens[type], and for custom
// events tokens["custom:<name>"] or tokens["custom"]. Never a free-text name.
func adjustToken(e *mapping.Event, tokens map[string]string) string {
	if e.Type == mapping.Custom {
		if t, ok := tokens["custom:"+e.Name]; ok {
			return t
		}
	}
	return tokens[string(e.Type)]
}

// Send implements Forwarder.
func (a *Adjust) Send(ctx context.Context, batch []Item) []Result {
	return sendEach(ctx, batch, a.send)
}

func (a *Adjust) send(ctx context.Context, it Item) Result {
	e := it.Event
	t := &a.prod
	if e.Sandboxed() {
		if a.sandbox == nil {
			return skip(ReasonSandboxNoCreds, "sandbox event and no sandbox: block")
		}
		t = a.sandbox
	}
	return a.sendTo(ctx, it, t)
}

// sendTo sends one event with the credentials of t.
func (a *Adjust) sendTo(ctx context.Context, it Item, t *adjustTarget) Result {
	e := it.Event
	token := adjustToken(e, t.tokens)
	if token == "" {
		return skip(ReasonNoEventName, "no Adjust event token for %s", e.Type)
	}
	device := adjustDevice(e)
	if device == "" {
		return skip("missing "+mapping.IDAdjust, "event has no adid, idfa, gaid, idfv or android_id")
	}
	now := a.now()
	at, bad := eventTime(e, now, adjustMaxAge)
	if bad != nil {
		return *bad
	}
	orderKey := t.environment + "|" + device + "|" + token
	if last, ok := a.order.get(orderKey); ok && at.Before(last) {
		return skip(ReasonOutOfOrder, "occurred_at %s is before %s, already delivered for this device and token", at.Format(time.RFC3339), last.Format(time.RFC3339))
	}
	rev, bad := a.convert(e)
	if bad != nil {
		return *bad
	}
	form := a.form(e, t, token, at, rev)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(form.Encode()))
	if err != nil {
		return Result{Outcome: Pause, Reason: ReasonConfig, Err: scrubURLError(err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "postback")
	if t.s2sToken != "" {
		req.Header.Set("Authorization", "Bearer "+t.s2sToken)
	}
	r := a.do(req, "POST "+RedactURL(t.url), func(status int, b []byte) verdict {
		return adjustVerdict(status, b, it.Attempt)
	}, []string{t.s2sToken})
	if r.Outcome == Delivered || r.Outcome == Duplicate {
		a.order.put(orderKey, at, now)
	}
	return r
}

// SetMemory makes the per-device order durable (Rememberer).
func (a *Adjust) SetMemory(m Memory) {
	a.order.mu.Lock()
	a.order.mem = m
	a.order.mu.Unlock()
}

// form builds the parameters.
func (a *Adjust) form(e *mapping.Event, t *adjustTarget, token string, at time.Time, rev *mapping.Revenue) url.Values {
	v := url.Values{}
	v.Set("s2s", "1")
	v.Set("app_token", t.appToken)
	v.Set("event_token", token)
	v.Set("created_at_unix", strconv.FormatInt(at.Unix(), 10))
	v.Set("environment", t.environment)
	set := func(k, id string) {
		if x := e.Identifier(id); x != "" {
			v.Set(k, x)
		}
	}
	set("adid", mapping.IDAdjust)
	set("idfa", mapping.IDIDFA)
	set("idfv", mapping.IDIDFV)
	set("gps_adid", mapping.IDGAID)
	set("android_id", mapping.IDAndroidID)
	if ip := net.ParseIP(e.Identifier(mapping.IDIP)); ip != nil && ip.To4() != nil {
		v.Set("ip_address", ip.To4().String()) // Adjust takes IPv4 only
	}
	set("user_agent", mapping.IDUserAgent)
	if platformOf(e) == platformIOS {
		if s, ok := mmpATT(e); ok {
			v.Set("att_status", strconv.Itoa(s))
		}
	}
	// Adjust rejects revenue below 0.001: trials (none) and refunds
	// (negative) go without it.
	if Positive(rev) && e.Type != mapping.Refund {
		v.Set("revenue", rev.Decimal())
		v.Set("currency", rev.Currency)
	}
	cb := mmpAttributes(e)
	if e.User.AppUserID != "" {
		cb["app_user_id"] = e.User.AppUserID
	}
	if e.ProductID != "" {
		cb["product_id"] = e.ProductID
	}
	if e.TransactionID != "" {
		cb["transaction_id"] = e.TransactionID
	}
	if e.Type == mapping.Refund && rev != nil {
		// Kept for raw-data exports; not counted as revenue.
		cb["refund_amount"] = rev.Decimal()
		cb["refund_currency"] = rev.Currency
	}
	if b, err := json.Marshal(cb); err == nil {
		v.Set("callback_params", string(b))
	}
	return v
}

// adjustVerdict reads Adjust's answers ({"error": "Event request failed
// (<reason>)"} or {"status": "OK"}).
func adjustVerdict(status int, body []byte, attempt int) verdict {
	text := strings.ToLower(string(body))
	has := func(s string) bool { return strings.Contains(text, s) }
	switch {
	case status == http.StatusOK:
		return verdict{outcome: Delivered}
	case status == http.StatusAccepted:
		// S2S Security: "Missing/Wrong authentication token".
		return verdict{outcome: Pause, reason: ReasonAuth}
	case status == http.StatusBadRequest && has("earlier unique event tracked"):
		return verdict{outcome: Duplicate, reason: ReasonDuplicate}
	case status == http.StatusBadRequest && (has("invalid app token") || has("invalid event token") || has("app token not found")):
		return verdict{outcome: Pause, reason: ReasonConfig}
	case status == http.StatusBadRequest:
		return verdict{outcome: Dead, reason: ReasonValidation}
	case status == http.StatusUnauthorized:
		return verdict{outcome: Pause, reason: ReasonAuth}
	case status == http.StatusForbidden:
		// App inactive, tracking disabled, event token blocklisted.
		return verdict{outcome: Pause, reason: ReasonConfig}
	case status == http.StatusNotFound && has("device not found"):
		// The SDK's install may not have reached Adjust yet.
		if attempt < adjustNotFoundN {
			return verdict{outcome: Retry, reason: ReasonDeviceNotFound, retryAfter: adjustNotFoundW}
		}
		return verdict{outcome: Dead, reason: ReasonDeviceNotFound}
	case status == http.StatusNotFound:
		return verdict{outcome: Pause, reason: ReasonConfig}
	case status == http.StatusRequestEntityTooLarge:
		return verdict{outcome: Dead, reason: ReasonValidation}
	case status == http.StatusUnavailableForLegalReasons:
		return verdict{outcome: Skipped, reason: ReasonOptedOut}
	case status == http.StatusTooManyRequests:
		return verdict{outcome: Retry, throttle: true}
	}
	return verdict{outcome: Classify(status)}
}

// adjustOrder remembers, per environment, device and event token, the
// latest occurred_at delivered, so an older event is skipped instead of
// being rejected by Adjust. It is bounded: entries older than Adjust's 58
// days are dropped first, then arbitrary ones. With a Memory (the store) it
// is also durable: a key not in the map is read from the Memory, and every
// advance is written there, so the order survives a restart.
type adjustOrder struct {
	mu   sync.Mutex
	last map[string]time.Time
	mem  Memory
}

func (o *adjustOrder) get(k string) (time.Time, bool) {
	o.mu.Lock()
	t, ok := o.last[k]
	mem := o.mem
	o.mu.Unlock()
	if ok || mem == nil {
		return t, ok
	}
	// A read failure only loses the ordering hint: Adjust itself refuses
	// an out-of-order event (400, kept as dead and replayable).
	t, ok, err := mem.Get(k)
	if err != nil || !ok {
		return time.Time{}, false
	}
	return t, true
}

// put records t as delivered for k. The durable write happens outside the
// lock (the Memory only ever advances a key, so concurrent writes cannot
// move it back).
func (o *adjustOrder) put(k string, t, now time.Time) {
	if mem, ok := o.remember(k, t, now); ok && mem != nil {
		_ = mem.Put(k, t) // best effort, as in get
	}
}

// remember updates the in-process map and returns the Memory to write to;
// false when k already holds a later time.
func (o *adjustOrder) remember(k string, t, now time.Time) (Memory, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev, ok := o.last[k]; ok && prev.After(t) {
		return nil, false
	}
	if _, ok := o.last[k]; !ok && len(o.last) >= adjustOrderCap {
		for key, at := range o.last {
			if now.Sub(at) > adjustMaxAge {
				delete(o.last, key)
			}
		}
		for key := range o.last {
			if len(o.last) < adjustOrderCap {
				break
			}
			delete(o.last, key)
		}
	}
	o.last[k] = t
	return o.mem, true
}
