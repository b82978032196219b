package forwarders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// Meta sends events to Meta's Conversions API: app events from Apple and
// Google (action_source "app", with app_data and the 16-slot extinfo) and
// web events from Stripe and Shopify (action_source "website"), up to 1000
// per request. event_id is the canonical event id, so Meta deduplicates
// against the same event logged by its SDK or pixel.
//
// One event older than 7 days makes Meta reject the whole request, so such
// events are never put in a batch (Skipped, reason too_old). A batch that
// Meta refuses as invalid is bisected until the bad events are isolated:
// they end dead and every other event is delivered. The access token
// travels in the form body, never in the URL.
type Meta struct {
	base    string // scheme://host
	version string
	pageURL string // event_source_url: the default page of website events
	prod    metaCreds
	sandbox *metaCreds // nil: sandbox events only go to a test configuration
	names   map[string]string
	client  *http.Client
	now     func() time.Time
}

var (
	_ Forwarder = (*Meta)(nil)
	_ Requirer  = (*Meta)(nil)
)

// metaCreds is one dataset and its token.
type metaCreds struct {
	DatasetID     string `yaml:"dataset_id"`
	AccessToken   string `yaml:"access_token"`
	TestEventCode string `yaml:"test_event_code"`
}

// metaSettings is the type-specific configuration of type meta.
type metaSettings struct {
	metaCreds  `yaml:",inline"`
	APIVersion string     `yaml:"api_version"`
	Sandbox    *metaCreds `yaml:"sandbox"`
	// EventSourceURL is the page website events are reported on when the
	// event names none (a custom event's event_source_url or page_url
	// attribute, Shopify's landing or order status page, Stripe
	// Checkout's success page).
	EventSourceURL string `yaml:"event_source_url"`
}

// Meta's limits.
const (
	metaBatchSize = 1000
	// metaMaxAge keeps an hour's margin under Meta's 7-day event_time limit
	// so that an event does not cross it while its request is in flight.
	metaMaxAge         = 7*24*time.Hour - time.Hour
	metaDefaultBase    = "https://graph.facebook.com"
	metaDefaultVersion = "v25.0"
)

// metaDefaultNames maps canonical types to Meta standard events; other
// types are not sent unless event_names names them.
var metaDefaultNames = map[string]string{
	string(mapping.TrialStarted):        "StartTrial",
	string(mapping.TrialConverted):      "Subscribe",
	string(mapping.SubscriptionStarted): "Subscribe",
	string(mapping.SubscriptionRenewed): "Subscribe",
	string(mapping.ProductChanged):      "Subscribe", // with revenue only (EventName)
	string(mapping.Purchase):            "Purchase",
}

var (
	metaDatasetRe = regexp.MustCompile(`^[0-9]{5,20}$`)
	metaVersionRe = regexp.MustCompile(`^v[0-9]{1,3}\.[0-9]$`)
)

// NewMeta validates a Meta Conversions API destination without I/O.
func NewMeta(s Settings) (Forwarder, error) {
	var cfg metaSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	m := &Meta{base: metaDefaultBase, version: metaDefaultVersion, prod: cfg.metaCreds,
		names: s.EventNames, client: s.Client, now: s.Now}
	if s.Endpoint != "" {
		m.base = strings.TrimRight(s.Endpoint, "/")
	}
	if u, err := url.Parse(m.base); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, configError(s, "endpoint", "must be an absolute URL such as https://graph.facebook.com")
	}
	if cfg.APIVersion != "" {
		if !metaVersionRe.MatchString(cfg.APIVersion) {
			return nil, configError(s, "api_version", fmt.Sprintf("%q is not a Graph API version such as %s", cfg.APIVersion, metaDefaultVersion))
		}
		m.version = cfg.APIVersion
	}
	if err := m.prod.validate(s, ""); err != nil {
		return nil, err
	}
	if v := strings.TrimSpace(cfg.EventSourceURL); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, configError(s, "event_source_url", fmt.Sprintf("%q is not an absolute http(s) URL such as https://example.com/checkout", v))
		}
		m.pageURL = v
	}
	if sb := cfg.Sandbox; sb != nil {
		c := *sb
		if c.DatasetID == "" {
			c.DatasetID = m.prod.DatasetID
		}
		if c.AccessToken == "" {
			c.AccessToken = m.prod.AccessToken
		}
		if err := c.validate(s, "sandbox."); err != nil {
			return nil, err
		}
		if c.TestEventCode == "" && c.DatasetID == m.prod.DatasetID {
			return nil, configError(s, "sandbox", "set test_event_code (Events Manager > Test events) or a separate dataset_id, so sandbox events never reach production data")
		}
		m.sandbox = &c
	}
	return m, nil
}

func (c metaCreds) validate(s Settings, prefix string) error {
	if c.DatasetID == "" {
		return configError(s, prefix+"dataset_id", "the dataset (pixel) id is required (Events Manager > Data sources > your dataset > Settings)")
	}
	if !metaDatasetRe.MatchString(c.DatasetID) {
		return configError(s, prefix+"dataset_id", "must be the numeric dataset id")
	}
	if c.AccessToken == "" {
		return configError(s, prefix+"access_token", "a Conversions API access token is required (Events Manager > dataset > Settings > Generate access token)")
	}
	return nil
}

// Limits implements Forwarder: up to 1000 events a request, never older
// than Meta's 7 days.
func (m *Meta) Limits() Limits { return Limits{BatchSize: metaBatchSize, MaxAge: metaMaxAge} }

// creds returns the credentials an event goes to, or nil when a sandbox
// event has no sandbox or test configuration.
func (m *Meta) creds(e *mapping.Event) *metaCreds {
	if !e.Sandboxed() {
		return &m.prod
	}
	if m.sandbox != nil {
		return m.sandbox
	}
	if m.prod.TestEventCode != "" {
		return &m.prod // a test configuration takes sandbox events too
	}
	return nil
}

// Missing implements Requirer. App events need the platform and an
// advertising id or Meta's install id (anon_id); website events need the
// browser's user agent, which Meta requires for action_source website.
// Events that will be skipped anyway (no event name, too old, sandbox
// without a test configuration) are not held for identifiers.
func (m *Meta) Missing(e *mapping.Event) string {
	if m.creds(e) == nil || EventName(e, m.names, metaDefaultNames) == "" || tooOld(e, m.now(), metaMaxAge) {
		return ""
	}
	if adChannel(e) == channelWeb {
		if m.sourceURL(e) == "" {
			return "" // skipped at send: no identity update brings a page
		}
		if e.Identifier(mapping.IDUserAgent) == "" {
			return mapping.IDUserAgent
		}
		return ""
	}
	switch adPlatform(e) {
	case "":
		return mapping.IDOS
	case "ios":
		if adID(e) == "" && e.Identifier(mapping.IDFacebookAnon) == "" {
			return "idfa or fb_anon_id"
		}
	case "android":
		if adID(e) == "" && e.Identifier(mapping.IDFacebookAnon) == "" {
			return "gaid or fb_anon_id"
		}
	}
	return ""
}

// sourceURL returns the page a website event happened on, which Meta
// requires with action_source website: the event's own page
// (event_source_url or page_url attribute), else the page its source
// recorded (Shopify's landing page, then its order status page; Stripe
// Checkout's success page), else the destination's event_source_url.
func (m *Meta) sourceURL(e *mapping.Event) string {
	for _, v := range []string{pageURL(e), e.Attributes[mapping.AttrLandingPageURL], e.Attributes[mapping.AttrOrderStatusURL], e.Attributes[mapping.AttrSuccessURL]} {
		if u, err := url.Parse(v); v != "" && err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
			return v
		}
	}
	return m.pageURL
}

// metaEvent is one element of the request's data array.
type metaEvent struct {
	EventName      string          `json:"event_name"`
	EventTime      int64           `json:"event_time"`
	EventID        string          `json:"event_id"`
	ActionSource   string          `json:"action_source"`
	EventSourceURL string          `json:"event_source_url,omitempty"`
	UserData       metaUserData    `json:"user_data"`
	AppData        *metaAppData    `json:"app_data,omitempty"`
	CustomData     *metaCustomData `json:"custom_data,omitempty"`
}

// metaUserData holds customer information: em, ph, external_id and country
// hashed; the device and browser ids raw, as Meta requires.
type metaUserData struct {
	Em         []string `json:"em,omitempty"`
	Ph         []string `json:"ph,omitempty"`
	ExternalID []string `json:"external_id,omitempty"`
	Country    []string `json:"country,omitempty"`
	Madid      string   `json:"madid,omitempty"`
	AnonID     string   `json:"anon_id,omitempty"`
	Fbp        string   `json:"fbp,omitempty"`
	Fbc        string   `json:"fbc,omitempty"`
	ClientIP   string   `json:"client_ip_address,omitempty"`
	UserAgent  string   `json:"client_user_agent,omitempty"`
}

// metaAppData is required for app events.
type metaAppData struct {
	AdvertiserTrackingEnabled  int      `json:"advertiser_tracking_enabled"`
	ApplicationTrackingEnabled int      `json:"application_tracking_enabled"`
	Extinfo                    []string `json:"extinfo"`
}

// metaCustomData carries the money and the product.
type metaCustomData struct {
	Value       json.Number `json:"value,omitempty"`
	Currency    string      `json:"currency,omitempty"`
	ContentIDs  []string    `json:"content_ids,omitempty"`
	ContentType string      `json:"content_type,omitempty"`
	OrderID     string      `json:"order_id,omitempty"`
}

// event builds the Meta event, or a result when the event cannot be sent.
func (m *Meta) event(e *mapping.Event, name string, now time.Time) (metaEvent, *Result) {
	t := e.OccurredAt
	if t.After(now) {
		t = now // Meta refuses event_time in the future; a skewed clock must not fail the batch
	}
	ev := metaEvent{EventName: name, EventTime: t.Unix(), EventID: e.ID, ActionSource: "website"}
	ud := &ev.UserData
	if v := strings.ToLower(e.Identifier(mapping.IDEmailSHA256)); mapping.IsSHA256Hex(v) {
		ud.Em = []string{v}
	}
	if v := strings.ToLower(e.Identifier(mapping.IDPhoneSHA256)); mapping.IsSHA256Hex(v) {
		ud.Ph = []string{v}
	}
	if v := externalID(e); v != "" {
		ud.ExternalID = []string{v}
	}
	if c := strings.ToLower(strings.TrimSpace(e.Identifier(mapping.IDCountry))); len(c) == 2 {
		ud.Country = []string{mapping.SHA256Hex(c)}
	}
	ud.Fbp = e.Identifier(mapping.IDFBP)
	ud.Fbc = e.Identifier(mapping.IDFBC)
	ud.ClientIP = e.Identifier(mapping.IDIP)
	ud.UserAgent = e.Identifier(mapping.IDUserAgent)
	if adChannel(e) == channelWeb {
		ev.EventSourceURL = m.sourceURL(e)
		if ev.EventSourceURL == "" {
			r := skipped("missing event_source_url: Meta requires it for website events; set the destination's event_source_url or send the page with the event")
			return ev, &r
		}
	} else {
		ev.ActionSource = "app"
		platform := adPlatform(e)
		if platform == "" {
			r := skipped("missing os: app events need the platform for extinfo")
			return ev, &r
		}
		ud.Madid = adID(e)
		ud.AnonID = e.Identifier(mapping.IDFacebookAnon)
		ev.AppData = metaApp(e, platform)
	}
	value, currency := revenueValue(e)
	if value == "" && name == "Purchase" {
		r := Result{Outcome: Dead, Reason: "purchase_without_value: Meta requires value and currency on Purchase",
			Err: fmt.Errorf("%w: meta: Purchase event %s has no revenue", ErrAdNetwork, e.ID)}
		return ev, &r
	}
	cd := &metaCustomData{Value: json.Number(value), Currency: currency, OrderID: e.TransactionID}
	if e.ProductID != "" {
		cd.ContentIDs, cd.ContentType = []string{e.ProductID}, "product"
	}
	if cd.Value != "" || cd.OrderID != "" || cd.ContentIDs != nil {
		ev.CustomData = cd
	}
	return ev, nil
}

// metaApp builds app_data: ATT consent on iOS, and extinfo with all 16
// positions present (empty strings where unknown), "i2" or "a2" first.
func metaApp(e *mapping.Event, platform string) *metaAppData {
	a := &metaAppData{ApplicationTrackingEnabled: 1}
	ver := "a2"
	if platform == "ios" {
		ver = "i2"
		if attStatus(e) == 3 {
			a.AdvertiserTrackingEnabled = 1
		}
	} else if v := e.Identifier(mapping.IDGAID); v == "" || !zeroAdID(v) {
		a.AdvertiserTrackingEnabled = 1 // a zeroed GAID means the user limited ad tracking
	}
	appVersion := e.Attributes["app_version"]
	a.Extinfo = []string{
		ver, e.AppID, appVersion, appVersion,
		e.Identifier(mapping.IDOSVersion), e.Identifier(mapping.IDDeviceModel), e.Identifier(mapping.IDLocale),
		"", "", "", "", "", "", "", "", "",
	}
	return a
}

// Send implements Forwarder.
func (m *Meta) Send(ctx context.Context, batch []Item) []Result {
	out := make([]Result, len(batch))
	events := make([]metaEvent, len(batch))
	now := m.now()
	var prod, sandbox []int
	for i, it := range batch {
		e := it.Event
		if e == nil {
			out[i] = Result{Outcome: Dead, Reason: "no_event"}
			continue
		}
		c := m.creds(e)
		if c == nil {
			out[i] = skipped("sandbox_not_configured: sandbox events need a sandbox block or test_event_code")
			continue
		}
		name := EventName(e, m.names, metaDefaultNames)
		if name == "" {
			out[i] = skipped("no_event_name: " + string(e.Type) + " has no Meta event name (set event_names to send it)")
			continue
		}
		if tooOld(e, now, metaMaxAge) {
			out[i] = skipped("too_old: older than 7 days (Meta rejects a whole batch holding one)")
			continue
		}
		ev, r := m.event(e, name, now)
		if r != nil {
			out[i] = *r
			continue
		}
		events[i] = ev
		if c == &m.prod {
			prod = append(prod, i)
		} else {
			sandbox = append(sandbox, i)
		}
	}
	for _, g := range []struct {
		c   *metaCreds
		idx []int
	}{{&m.prod, prod}, {m.sandbox, sandbox}} {
		for len(g.idx) > 0 {
			n := min(len(g.idx), metaBatchSize)
			budget := bisectBudget
			bisect(g.idx[:n], &budget, func(idx []int) Result { return m.post(ctx, g.c, events, idx) }, out)
			g.idx = g.idx[n:]
		}
	}
	return out
}

// post sends the events at idx in one request.
func (m *Meta) post(ctx context.Context, c *metaCreds, events []metaEvent, idx []int) Result {
	endpoint := m.base + "/" + m.version + "/" + c.DatasetID + "/events"
	summary := fmt.Sprintf("POST %s (%d events)", RedactURL(endpoint), len(idx))
	if r := adCancelled(ctx); r != nil {
		r.Request = summary
		return *r
	}
	data := make([]metaEvent, len(idx))
	for k, i := range idx {
		data[k] = events[i]
	}
	js, err := json.Marshal(data)
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Request: summary, Err: err}
	}
	form := url.Values{"data": {string(js)}, "access_token": {c.AccessToken}}
	if c.TestEventCode != "" {
		form.Set("test_event_code", c.TestEventCode)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader([]byte(form.Encode())))
	if err != nil {
		return Result{Outcome: Pause, Reason: "bad_url", Request: summary, Err: fmt.Errorf("%s: %w", summary, err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "postback")
	return adExchange(m.client, req, summary, c.AccessToken, m.now(), classifyMeta)
}

// metaError is the Graph API error envelope.
type metaError struct {
	Error struct {
		Message     string `json:"message"`
		Type        string `json:"type"`
		Code        int    `json:"code"`
		Subcode     int    `json:"error_subcode"`
		IsTransient bool   `json:"is_transient"`
		UserTitle   string `json:"error_user_title"`
		FBTraceID   string `json:"fbtrace_id"`
	} `json:"error"`
}

// Graph API error codes, grouped by what they mean for a delivery.
var (
	metaThrottleCodes  = map[int]bool{4: true, 17: true, 32: true, 613: true, 80003: true}
	metaTransientCodes = map[int]bool{1: true, 2: true, 341: true, 368: true, 5000: true, 21009: true}
	metaAuthCodes      = map[int]bool{10: true, 102: true, 190: true}
)

// classifyMeta reads a Conversions API answer: 2xx delivered; Graph error
// codes 4, 17, 32, 613 and 80003 are throttling (retry, slow down); 1, 2,
// 341, 368, 5000, 21009 or is_transient are retried; 190 and 102 (token),
// 10 and 200-299 (permission) and 100/33 (dataset missing or not shared)
// pause the destination; every other error (100 invalid parameter and the
// like) is dead for the events in the request, which Send bisects. secret
// is masked in the reason and error should Meta quote it back.
func classifyMeta(resp adResponse, now time.Time, secret string) Result {
	if resp.Status >= 200 && resp.Status < 300 {
		return Result{Outcome: Delivered, Status: resp.Status}
	}
	r := Result{Status: resp.Status}
	var me metaError
	if err := json.Unmarshal(resp.Body, &me); err != nil || me.Error.Code == 0 {
		r.Outcome = Classify(resp.Status)
		r.Reason = "http_" + strconv.Itoa(resp.Status)
		r.Err = fmt.Errorf("%w: meta: HTTP %d", ErrAdNetwork, resp.Status)
		if r.Outcome == Retry {
			r.RetryAfter = RetryAfter(resp.Header, now)
			r.Throttle = resp.Status == http.StatusTooManyRequests
		}
		return r
	}
	code, sub := me.Error.Code, me.Error.Subcode
	detail := fmt.Sprintf("code %d subcode %d", code, sub)
	if me.Error.UserTitle != "" {
		detail += " (" + me.Error.UserTitle + ")"
	} else if me.Error.Message != "" {
		detail += " (" + me.Error.Message + ")"
	}
	detail = redact(detail, secret)
	var label string
	switch {
	case metaThrottleCodes[code]:
		r.Outcome, r.Throttle, label = Retry, true, "meta_throttled"
		if r.RetryAfter = RetryAfter(resp.Header, now); r.RetryAfter == 0 {
			r.RetryAfter = throttleDelay
		}
	case me.Error.IsTransient || metaTransientCodes[code]:
		r.Outcome, label = Retry, "meta_transient"
		r.RetryAfter = RetryAfter(resp.Header, now)
	case metaAuthCodes[code] || code >= 200 && code < 300 || code == 100 && sub == 33:
		r.Outcome, label = Pause, "meta_auth"
	case resp.Status >= 500:
		r.Outcome, label = Retry, "meta_transient"
	default:
		r.Outcome, label = Dead, "meta_invalid"
	}
	r.Reason = label + ": " + detail
	r.Err = fmt.Errorf("%w: meta: %s", ErrAdNetwork, detail)
	return r
}
