package forwarders

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/postback/postback/mapping"
)

// Singular sends events to Singular's server-to-server EVENT endpoint: GET
// {base}/api/v2/evt when the event carries the Singular Device ID (sdid,
// SDID-enabled accounts), else GET {base}/api/v1/evt with the platform's
// device ids (idfv/idfa on iOS, aifa/andi/asid on Android). The SDK key is
// the "a" query parameter, so request URLs are never logged with their query.
//
// Singular answers HTTP 200 for everything it processed and puts the
// outcome in the body: {"status":"ok"} is delivered, {"status":"error",
// "reason":"..."} is a permanent failure of the event (or of the key, which
// pauses the destination). Any other status is retried, as Singular asks.
// Refunds carry a negative amt; trials carry none. Singular wants events in
// the order they occurred and never in the future: future timestamps are
// skipped, and retries keep the dispatcher's per-destination order.
type Singular struct {
	mmp
	prod     singularTarget
	sandbox  *singularTarget
	bundleID string
	base     string
}

var (
	_ Forwarder = (*Singular)(nil)
	_ Requirer  = (*Singular)(nil)
)

// singularCredentials are the keys of the production block and of sandbox:.
type singularCredentials struct {
	SDKKey string `yaml:"sdk_key"`
}

// singularSettings is the type-specific configuration.
type singularSettings struct {
	mmpSettings         `yaml:",inline"`
	singularCredentials `yaml:",inline"`
	BundleID            string               `yaml:"bundle_id"`
	Sandbox             *singularCredentials `yaml:"sandbox"`
}

// singularTarget is one resolved key.
type singularTarget struct{ key string }

// Singular defaults.
const (
	singularBase    = "https://s2s.singular.net"
	singularMaxName = 32 // ASCII characters of an event name
)

// singularNames are Singular's defaults: its standard events where one
// exists, the canonical name otherwise.
func singularNames() map[string]string {
	return standardNames(map[mapping.Type]string{
		mapping.TrialStarted:        "sng_start_trial",
		mapping.TrialConverted:      "sng_subscribe",
		mapping.SubscriptionStarted: "sng_subscribe",
	})
}

// NewSingular validates a Singular destination.
func NewSingular(s Settings) (Forwarder, error) {
	var cfg singularSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	m, err := newMMP(s, cfg.mmpSettings, singularNames, singularMaxName)
	if err != nil {
		return nil, err
	}
	base := s.Endpoint
	if base == "" {
		base = singularBase
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, configError(s, "endpoint", "must be an http(s) URL")
	}
	key := strings.TrimSpace(cfg.SDKKey)
	if key == "" {
		return nil, configError(s, "sdk_key", "is required: the SDK key (Singular: Developer Tools > SDK Integration > SDK Keys), not the reporting API key")
	}
	g := &Singular{mmp: m, prod: singularTarget{key: key}, bundleID: strings.TrimSpace(cfg.BundleID), base: strings.TrimRight(base, "/")}
	if g.bundleID != "" && !bundleIdentifierR.MatchString(g.bundleID) {
		return nil, configError(s, "bundle_id", "not a bundle identifier or package name such as com.example.app")
	}
	if cfg.Sandbox != nil {
		sk := strings.TrimSpace(cfg.Sandbox.SDKKey)
		if sk == "" {
			return nil, configError(s, "sandbox.sdk_key", "is required: the SDK key of a separate Singular app or account for test data")
		}
		if sk == key {
			return nil, configError(s, "sandbox.sdk_key", "must differ from sdk_key: sandbox events must never reach production")
		}
		g.sandbox = &singularTarget{key: sk}
	}
	return g, nil
}

// Limits implements Forwarder: one event per request ("no batch support").
func (g *Singular) Limits() Limits { return Limits{BatchSize: 1} }

// singularNeedsIPv4 is what Missing reports when the user's only address
// is IPv6: Singular's ip is "IPV4 only; IPV6 not supported"
// (https://support.singular.net/hc/en-us/articles/360048588672).
const singularNeedsIPv4 = "ipv4"

// Missing implements Requirer: the platform, and the sdid or (v1) a device
// id of the platform plus the IPv4 address and OS version Singular requires.
func (g *Singular) Missing(e *mapping.Event) string {
	p := platformOf(e)
	if p == "" {
		return mapping.IDOS
	}
	if e.Identifier(mapping.IDSingular) != "" {
		return ""
	}
	switch p {
	case platformIOS:
		if e.Identifier(mapping.IDIDFV) == "" && e.Identifier(mapping.IDIDFA) == "" {
			return mapping.IDIDFV
		}
	case platformAndroid:
		if e.Identifier(mapping.IDGAID) == "" && e.Identifier(mapping.IDAndroidID) == "" && e.Identifier(mapping.IDAppSetID) == "" {
			return mapping.IDGAID
		}
	}
	if ipv4(e.Identifier(mapping.IDIP)) == "" {
		// "IPV4 only; IPV6 not supported", and Singular documents no
		// endpoint that takes IPv6: the delivery waits for an IPv4 address
		// within identity_wait, then is skipped, never sent without ip.
		if e.Identifier(mapping.IDIP) != "" {
			return singularNeedsIPv4
		}
		return mapping.IDIP
	}
	if e.Identifier(mapping.IDOSVersion) == "" {
		return mapping.IDOSVersion
	}
	return ""
}

// Send implements Forwarder.
func (g *Singular) Send(ctx context.Context, batch []Item) []Result {
	return sendEach(ctx, batch, g.send)
}

func (g *Singular) send(ctx context.Context, it Item) Result {
	e := it.Event
	t := &g.prod
	if e.Sandboxed() {
		if g.sandbox == nil {
			return skip(ReasonSandboxNoCreds, "sandbox event and no sandbox: block")
		}
		t = g.sandbox
	}
	name := g.eventName(e)
	if name == "" {
		return skip(ReasonNoEventName, "no Singular event name for %s", e.Type)
	}
	if id := g.Missing(e); id != "" {
		return skip("missing "+id, "event has no %s", id)
	}
	at, bad := eventTime(e, g.now(), 0)
	if bad != nil {
		return *bad
	}
	rev, bad := g.convert(e)
	if bad != nil {
		return *bad
	}
	q := url.Values{}
	q.Set("a", t.key)
	q.Set("n", name)
	platform := platformOf(e)
	if platform == platformIOS {
		q.Set("p", "iOS")
	} else {
		q.Set("p", "Android")
	}
	q.Set("i", g.bundle(e))
	set := func(k, id string) {
		if v := e.Identifier(id); v != "" {
			q.Set(k, v)
		}
	}
	if ip := ipv4(e.Identifier(mapping.IDIP)); ip != "" {
		q.Set("ip", ip) // IPv4 only (v2 with an IPv6-only user: left out)
	}
	set("ve", mapping.IDOSVersion)
	path := "/api/v1/evt"
	if sdid := e.Identifier(mapping.IDSingular); sdid != "" {
		path = "/api/v2/evt"
		q.Set("sdid", sdid)
	} else if platform == platformIOS {
		set("idfa", mapping.IDIDFA)
		set("idfv", mapping.IDIDFV)
	} else {
		set("aifa", mapping.IDGAID)
		set("andi", mapping.IDAndroidID)
		set("asid", mapping.IDAppSetID)
	}
	if platform == platformIOS {
		if s, ok := mmpATT(e); ok {
			q.Set("att_authorization_status", strconv.Itoa(s))
		}
	}
	q.Set("umilisec", mmpMillis(at))
	if e.User.AppUserID != "" {
		q.Set("custom_user_id", e.User.AppUserID)
	}
	if rev != nil && rev.AmountMicros != 0 {
		q.Set("amt", rev.Decimal())
		q.Set("cur", rev.Currency)
		q.Set("is_revenue_event", "true")
	}
	if e.ProductID != "" {
		q.Set("purchase_product_id", e.ProductID)
	}
	if e.TransactionID != "" {
		q.Set("purchase_transaction_id", e.TransactionID)
	}
	if b, err := json.Marshal(mmpAttributes(e)); err == nil {
		q.Set("e", string(b))
	}
	u := g.base + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"?"+q.Encode(), nil)
	if err != nil {
		return Result{Outcome: Pause, Reason: ReasonConfig, Err: scrubURLError(err)}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "postback")
	return g.do(req, "GET "+RedactURL(u), singularVerdict, []string{t.key})
}

// bundle returns the i parameter: bundle_id when configured, else the
// event's app id (the bundle id or package name for store events).
func (g *Singular) bundle(e *mapping.Event) string {
	if g.bundleID != "" {
		return g.bundleID
	}
	return e.AppID
}

// singularVerdict reads Singular's body-borne status.
func singularVerdict(status int, body []byte) verdict {
	switch status {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return verdict{outcome: Pause, reason: ReasonAuth}
	case http.StatusTooManyRequests:
		return verdict{outcome: Retry, throttle: true}
	default:
		// "Any other code means you should retry."
		return verdict{outcome: Retry}
	}
	var r struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return verdict{outcome: Retry, reason: "unreadable_response"}
	}
	switch strings.ToLower(r.Status) {
	case "ok":
		return verdict{outcome: Delivered}
	case "error":
		reason := strings.ToLower(r.Reason)
		if strings.Contains(reason, "key") || strings.Contains(reason, "auth") || strings.Contains(reason, "app") && strings.Contains(reason, "not found") {
			return verdict{outcome: Pause, reason: ReasonAuth}
		}
		return verdict{outcome: Dead, reason: ReasonValidation}
	}
	return verdict{outcome: Retry, reason: "unreadable_response"}
}
