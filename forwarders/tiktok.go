package forwarders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// TikTok sends events to TikTok's Events API v1.3 (/open_api/v1.3/event/track/):
// app events (event_source "app", event_source_id the TikTok App ID) and web
// events from Stripe and Shopify (event_source "web", the pixel code), up to
// 1000 per request. event_id is the canonical event id for TikTok's 48-hour
// deduplication; email, phone (E.164 with '+') and external id are sent
// SHA-256-hashed (the external id lower-cased first), IDFA (upper-case) and
// GAID (lower-case) raw, as TikTok's own app-event integration
// (segmentio/action-destinations tiktok-app-events, maintained by TikTok)
// sends them. App events carry the app object (the store id of the app,
// app_store_ids, with app_name and app_version); Purchase and
// CompletePayment carry contents (content_id, price, quantity),
// content_type, value and currency, and are skipped when the event has no
// product or no revenue rather than sent without them.
//
// TikTok answers HTTP 200 with a code in the body: 0 (and 20001, partial
// success) is delivered, 40100 is throttling (retried slowly), token and
// permission codes pause the destination, server-side codes are retried and
// every other code (parameter validation) is permanent. A batch refused as
// invalid is bisected like Meta's, since TikTok fails a whole batch for one
// bad event.
type TikTok struct {
	url      string
	prod     tiktokCreds
	sandbox  *tiktokCreds
	storeIDs map[string]string // platform -> app store id of the app object
	appName  string
	names    map[string]string
	client   *http.Client
	now      func() time.Time
}

var (
	_ Forwarder = (*TikTok)(nil)
	_ Requirer  = (*TikTok)(nil)
)

// tiktokCreds is one token with its event sources.
type tiktokCreds struct {
	AccessToken   string `yaml:"access_token"`
	AppID         string `yaml:"app_id"`     // TikTok App ID: event_source_id of app events
	PixelCode     string `yaml:"pixel_code"` // pixel: event_source_id of web events
	TestEventCode string `yaml:"test_event_code"`
}

// tiktokSettings is the type-specific configuration of type tiktok.
type tiktokSettings struct {
	tiktokCreds `yaml:",inline"`
	Sandbox     *tiktokCreds `yaml:"sandbox"`
	// AppStoreIDs names the mobile app in each app event's app object, per
	// platform: the numeric id of the App Store URL on iOS, the Google
	// Play package name on Android (default: the event's app id).
	AppStoreIDs map[string]string `yaml:"app_store_ids"`
	// AppName is the app object's optional app_name.
	AppName string `yaml:"app_name"`
}

const (
	tiktokBatchSize   = 1000
	tiktokDefaultBase = "https://business-api.tiktok.com"
	tiktokPath        = "/open_api/v1.3/event/track/"
)

// tiktokAppNames and tiktokWebNames map canonical types to TikTok standard
// events: a one-time purchase is Purchase in apps and CompletePayment on the
// web, TikTok's names for each channel. Other types are not sent unless
// event_names names them (an override applies to both channels).
var (
	tiktokAppNames = map[string]string{
		string(mapping.TrialStarted):        "StartTrial",
		string(mapping.TrialConverted):      "Subscribe",
		string(mapping.SubscriptionStarted): "Subscribe",
		string(mapping.SubscriptionRenewed): "Subscribe",
		string(mapping.ProductChanged):      "Subscribe", // with revenue only (EventName)
		string(mapping.Purchase):            "Purchase",
	}
	tiktokWebNames = map[string]string{
		string(mapping.TrialStarted):        "StartTrial",
		string(mapping.TrialConverted):      "Subscribe",
		string(mapping.SubscriptionStarted): "Subscribe",
		string(mapping.SubscriptionRenewed): "Subscribe",
		string(mapping.ProductChanged):      "Subscribe", // with revenue only (EventName)
		string(mapping.Purchase):            "CompletePayment",
	}
)

// NewTikTok validates a TikTok Events API destination without I/O.
func NewTikTok(s Settings) (Forwarder, error) {
	var cfg tiktokSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	base := tiktokDefaultBase
	if s.Endpoint != "" {
		base = strings.TrimRight(s.Endpoint, "/")
	}
	if u, err := url.Parse(base); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, configError(s, "endpoint", "must be an absolute URL such as https://business-api.tiktok.com")
	}
	t := &TikTok{url: base + tiktokPath, prod: cfg.tiktokCreds, names: s.EventNames, client: s.Client, now: s.Now,
		storeIDs: map[string]string{}, appName: strings.TrimSpace(cfg.AppName)}
	for k, v := range cfg.AppStoreIDs {
		v = strings.TrimSpace(v)
		switch {
		case k != "ios" && k != "android":
			return nil, configError(s, "app_store_ids."+k, "platform must be ios or android")
		case k == "ios" && !appsFlyerDigits.MatchString(v):
			return nil, configError(s, "app_store_ids.ios", "the numeric id of the App Store URL (apps.apple.com/app/id1234567890 gives 1234567890)")
		case k == "android" && !androidPackageRE.MatchString(v):
			return nil, configError(s, "app_store_ids.android", "the package name of the Google Play URL (id=com.example.app)")
		}
		t.storeIDs[k] = v
	}
	if err := t.prod.validate(s, ""); err != nil {
		return nil, err
	}
	if sb := cfg.Sandbox; sb != nil {
		c := *sb
		if c.AccessToken == "" {
			c.AccessToken = t.prod.AccessToken
		}
		if c.AppID == "" && c.PixelCode == "" {
			c.AppID, c.PixelCode = t.prod.AppID, t.prod.PixelCode
		}
		if err := c.validate(s, "sandbox."); err != nil {
			return nil, err
		}
		if c.TestEventCode == "" && (c.AppID != "" && c.AppID == t.prod.AppID || c.PixelCode != "" && c.PixelCode == t.prod.PixelCode) {
			return nil, configError(s, "sandbox", "set test_event_code (Events Manager > Test events) or separate app_id/pixel_code, so sandbox events never reach production data")
		}
		t.sandbox = &c
	}
	return t, nil
}

func (c tiktokCreds) validate(s Settings, prefix string) error {
	if c.AccessToken == "" {
		return configError(s, prefix+"access_token", "an Events API access token is required (Events Manager > your app or pixel > Settings > Generate access token)")
	}
	if c.AppID == "" && c.PixelCode == "" {
		return configError(s, prefix+"app_id", "set app_id (TikTok App ID, for app events) and/or pixel_code (for web events)")
	}
	return nil
}

// Limits implements Forwarder: up to 1000 events a request.
func (t *TikTok) Limits() Limits { return Limits{BatchSize: tiktokBatchSize} }

func (t *TikTok) creds(e *mapping.Event) *tiktokCreds {
	if !e.Sandboxed() {
		return &t.prod
	}
	if t.sandbox != nil {
		return t.sandbox
	}
	if t.prod.TestEventCode != "" {
		return &t.prod
	}
	return nil
}

func (t *TikTok) name(e *mapping.Event) string {
	if adChannel(e) == channelWeb {
		return EventName(e, t.names, tiktokWebNames)
	}
	return EventName(e, t.names, tiktokAppNames)
}

// sourceID returns the event_source_id for the event's channel, or "".
func (c *tiktokCreds) sourceID(channel string) string {
	if channel == channelWeb {
		return c.PixelCode
	}
	return c.AppID
}

// Missing implements Requirer: TikTok needs at least one user identifier
// (email, phone, external id, advertising id, ttclid or ttp). The app user
// id counts, as it is sent as the external id.
func (t *TikTok) Missing(e *mapping.Event) string {
	c := t.creds(e)
	if c == nil || c.sourceID(adChannel(e)) == "" || t.name(e) == "" {
		return ""
	}
	if tiktokNeedsContents[t.name(e)] {
		if v, _ := revenueValue(e); v == "" || tiktokContentID(e) == "" {
			return "" // skipped at send: no identifier brings a product or revenue
		}
	}
	if adChannel(e) == channelApp {
		if app, _ := t.appObject(e); app == nil {
			return "" // skipped at send: a configuration matter
		}
	}
	for _, k := range []string{mapping.IDEmailSHA256, mapping.IDPhoneE164SHA256, mapping.IDTTCLID, mapping.IDTTP} {
		if e.Identifier(k) != "" {
			return ""
		}
	}
	if tiktokExternalID(e) != "" || adID(e) != "" {
		return ""
	}
	return mapping.IDExternalID
}

// tiktokRequest is the body of /event/track/.
type tiktokRequest struct {
	EventSource   string        `json:"event_source"`
	EventSourceID string        `json:"event_source_id"`
	TestEventCode string        `json:"test_event_code,omitempty"`
	Data          []tiktokEvent `json:"data"`
}

// tiktokEvent is one element of data.
type tiktokEvent struct {
	Event      string       `json:"event"`
	EventTime  int64        `json:"event_time"`
	EventID    string       `json:"event_id"`
	User       tiktokUser   `json:"user"`
	Properties *tiktokProps `json:"properties,omitempty"`
	Page       *tiktokPage  `json:"page,omitempty"`
	App        *tiktokApp   `json:"app,omitempty"`
}

// tiktokApp is the app object of an app event: the mobile app's store id
// (required), its name and version.
type tiktokApp struct {
	AppID      string `json:"app_id"`
	AppName    string `json:"app_name,omitempty"`
	AppVersion string `json:"app_version,omitempty"`
}

// tiktokUser holds the matching keys: personal data hashed; advertising,
// click and cookie ids, ip and user agent raw.
type tiktokUser struct {
	Email      string `json:"email,omitempty"`
	Phone      string `json:"phone,omitempty"`
	ExternalID string `json:"external_id,omitempty"`
	IDFA       string `json:"idfa,omitempty"`
	IDFV       string `json:"idfv,omitempty"`
	GAID       string `json:"gaid,omitempty"`
	ATTStatus  string `json:"att_status,omitempty"`
	TTCLID     string `json:"ttclid,omitempty"`
	TTP        string `json:"ttp,omitempty"`
	IP         string `json:"ip,omitempty"`
	UserAgent  string `json:"user_agent,omitempty"`
	Locale     string `json:"locale,omitempty"`
}

// tiktokProps carries money and product.
type tiktokProps struct {
	Value       json.Number     `json:"value,omitempty"`
	Currency    string          `json:"currency,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	Contents    []tiktokContent `json:"contents,omitempty"`
	OrderID     string          `json:"order_id,omitempty"`
}

type tiktokContent struct {
	ContentID string      `json:"content_id"`
	Price     json.Number `json:"price,omitempty"`
	Quantity  int         `json:"quantity"`
}

// tiktokNeedsContents lists the events TikTok takes only with contents
// (content_id, quantity), content_type, value and currency: Purchase in
// apps, CompletePayment on the web.
var tiktokNeedsContents = map[string]bool{"Purchase": true, "CompletePayment": true}

// tiktokContentID is the content_id of an event's product: the product id,
// else the SKU a source recorded (a Shopify line item without a product).
func tiktokContentID(e *mapping.Event) string {
	if e.ProductID != "" {
		return e.ProductID
	}
	return e.Attributes["sku"]
}

// tiktokExternalID lower-cases and trims an external id before hashing it,
// as TikTok's app-event integration does; a value that already is a SHA-256
// digest passes through.
func tiktokExternalID(e *mapping.Event) string {
	v := e.Identifier(mapping.IDExternalID)
	if v == "" {
		v = e.User.AppUserID
	}
	return hashID(strings.ToLower(strings.TrimSpace(v)))
}

// appObject returns the app object of an app event, or a reason it cannot
// be built.
func (t *TikTok) appObject(e *mapping.Event) (*tiktokApp, string) {
	p := adPlatform(e)
	id := t.storeIDs[p]
	if id == "" && p == "android" && androidPackageRE.MatchString(e.AppID) {
		id = e.AppID // a Google Play app id is its package name
	}
	if id == "" {
		if p == "" {
			return nil, "missing os: the app object needs the platform's store id"
		}
		return nil, "no_app_store_id: TikTok app events need app.app_id; set app_store_ids." + p
	}
	return &tiktokApp{AppID: id, AppName: t.appName, AppVersion: e.Attributes["app_version"]}, ""
}

type tiktokPage struct {
	URL string `json:"url"`
}

// tiktokATT names Apple's ATT statuses 0..3 as TikTok does.
var tiktokATT = [...]string{"NOT_DETERMINED", "RESTRICTED", "DENIED", "AUTHORIZED"}

// tiktokIDFA and tiktokGAID spell advertising ids as TikTok's own Segment
// integration (tiktok-app-events, maintained by TikTok) sends them: raw, the
// IDFA upper-case and the GAID lower-case; an id that is already a SHA-256
// hash passes through in lower case.
func tiktokIDFA(v string) string {
	v = strings.TrimSpace(v)
	if l := strings.ToLower(v); mapping.IsSHA256Hex(l) {
		return l
	}
	return strings.ToUpper(v)
}

func tiktokGAID(v string) string { return strings.ToLower(strings.TrimSpace(v)) }

func (t *TikTok) event(e *mapping.Event, name string, now time.Time) tiktokEvent {
	ts := e.OccurredAt
	if ts.After(now) {
		ts = now
	}
	ev := tiktokEvent{Event: name, EventTime: ts.Unix(), EventID: e.ID}
	u := &ev.User
	if v := strings.ToLower(e.Identifier(mapping.IDEmailSHA256)); mapping.IsSHA256Hex(v) {
		u.Email = v
	}
	if v := strings.ToLower(e.Identifier(mapping.IDPhoneE164SHA256)); mapping.IsSHA256Hex(v) {
		u.Phone = v
	}
	u.ExternalID = tiktokExternalID(e)
	u.TTCLID = e.Identifier(mapping.IDTTCLID)
	u.TTP = e.Identifier(mapping.IDTTP)
	u.IP = e.Identifier(mapping.IDIP)
	u.UserAgent = e.Identifier(mapping.IDUserAgent)
	u.Locale = strings.ReplaceAll(e.Identifier(mapping.IDLocale), "_", "-")
	if adChannel(e) == channelWeb {
		if p := pageURL(e); p != "" {
			ev.Page = &tiktokPage{URL: p}
		}
	} else {
		switch adPlatform(e) {
		case "ios":
			if id := adID(e); id != "" {
				u.IDFA = tiktokIDFA(id)
			}
			u.IDFV = e.Identifier(mapping.IDIDFV)
			if s := attStatus(e); s >= 0 {
				u.ATTStatus = tiktokATT[s]
			}
		case "android":
			if id := adID(e); id != "" {
				u.GAID = tiktokGAID(id)
			}
			u.ATTStatus = "NOT_APPLICABLE"
		}
	}
	value, currency := revenueValue(e)
	p := &tiktokProps{Value: json.Number(value), Currency: currency, OrderID: e.TransactionID}
	if id := tiktokContentID(e); id != "" {
		p.ContentType, p.Contents = "product", []tiktokContent{{ContentID: id, Price: json.Number(value), Quantity: 1}}
	}
	if p.Value != "" || p.OrderID != "" || p.Contents != nil {
		ev.Properties = p
	}
	return ev
}

// Send implements Forwarder.
func (t *TikTok) Send(ctx context.Context, batch []Item) []Result {
	out := make([]Result, len(batch))
	events := make([]tiktokEvent, len(batch))
	now := t.now()
	type group struct {
		c       *tiktokCreds
		channel string
		idx     []int
	}
	var groups []*group
	for i, it := range batch {
		e := it.Event
		if e == nil {
			out[i] = Result{Outcome: Dead, Reason: "no_event"}
			continue
		}
		c := t.creds(e)
		if c == nil {
			out[i] = skipped("sandbox_not_configured: sandbox events need a sandbox block or test_event_code")
			continue
		}
		ch := adChannel(e)
		if c.sourceID(ch) == "" {
			key := "app_id"
			if ch == channelWeb {
				key = "pixel_code"
			}
			out[i] = skipped("no_event_source: " + ch + " events need " + key)
			continue
		}
		name := t.name(e)
		if name == "" {
			out[i] = skipped("no_event_name: " + string(e.Type) + " has no TikTok event name (set event_names to send it)")
			continue
		}
		if tiktokNeedsContents[name] {
			if tiktokContentID(e) == "" {
				out[i] = skipped("missing product_id: TikTok takes " + name + " only with contents[].content_id")
				continue
			}
			if v, _ := revenueValue(e); v == "" {
				out[i] = skipped("missing revenue: TikTok takes " + name + " only with value and currency")
				continue
			}
		}
		ev := t.event(e, name, now)
		if ch == channelApp {
			app, why := t.appObject(e)
			if app == nil {
				out[i] = skipped(why)
				continue
			}
			ev.App = app
		}
		events[i] = ev
		var g *group
		for _, x := range groups {
			if x.c == c && x.channel == ch {
				g = x
			}
		}
		if g == nil {
			g = &group{c: c, channel: ch}
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
	}
	for _, g := range groups {
		for len(g.idx) > 0 {
			n := min(len(g.idx), tiktokBatchSize)
			budget := bisectBudget
			bisect(g.idx[:n], &budget, func(idx []int) Result { return t.post(ctx, g.c, g.channel, events, idx) }, out)
			g.idx = g.idx[n:]
		}
	}
	return out
}

func (t *TikTok) post(ctx context.Context, c *tiktokCreds, channel string, events []tiktokEvent, idx []int) Result {
	summary := fmt.Sprintf("POST %s (%d %s events)", RedactURL(t.url), len(idx), channel)
	if r := adCancelled(ctx); r != nil {
		r.Request = summary
		return *r
	}
	body := tiktokRequest{EventSource: channel, EventSourceID: c.sourceID(channel), TestEventCode: c.TestEventCode,
		Data: make([]tiktokEvent, len(idx))}
	for k, i := range idx {
		body.Data[k] = events[i]
	}
	js, err := json.Marshal(body)
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Request: summary, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(js))
	if err != nil {
		return Result{Outcome: Pause, Reason: "bad_url", Request: summary, Err: fmt.Errorf("%s: %w", summary, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "postback")
	req.Header.Set("Access-Token", c.AccessToken)
	return adExchange(t.client, req, summary, c.AccessToken, t.now(), classifyTikTok)
}

// tiktokAnswer is the Business API envelope.
type tiktokAnswer struct {
	Code      *int   `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// TikTok Business API codes that are not validation errors.
const (
	tiktokOK              = 0
	tiktokPartial         = 20001 // partial success: the request was taken
	tiktokNoPermission    = 40001
	tiktokThrottled       = 40100
	tiktokTokenMissing    = 40104
	tiktokTokenInvalid    = 40105
	tiktokRequestTimedOut = 40700
)

// classifyTikTok reads an Events API answer. Non-2xx statuses follow the
// generic rules; a 2xx is judged by its code. secret is masked in the
// reason and error should TikTok quote it back.
func classifyTikTok(resp adResponse, now time.Time, secret string) Result {
	r := Result{Status: resp.Status}
	var a tiktokAnswer
	if resp.Status < 200 || resp.Status >= 300 || json.Unmarshal(resp.Body, &a) != nil || a.Code == nil {
		if resp.Status >= 200 && resp.Status < 300 {
			r.Outcome, r.Reason = Retry, "tiktok_unreadable: 2xx without a code"
			r.Err = fmt.Errorf("%w: tiktok: HTTP %d without a result code", ErrAdNetwork, resp.Status)
			return r
		}
		r.Outcome = Classify(resp.Status)
		r.Reason = "http_" + strconv.Itoa(resp.Status)
		r.Err = fmt.Errorf("%w: tiktok: HTTP %d", ErrAdNetwork, resp.Status)
		if r.Outcome == Retry {
			r.RetryAfter = RetryAfter(resp.Header, now)
			r.Throttle = resp.Status == http.StatusTooManyRequests
		}
		return r
	}
	code := *a.Code
	detail := redact(fmt.Sprintf("code %d (%s)", code, a.Message), secret)
	var label string
	switch {
	case code == tiktokOK || code == tiktokPartial:
		r.Outcome = Delivered
		return r
	case code == tiktokThrottled:
		r.Outcome, r.Throttle, label = Retry, true, "tiktok_throttled"
		if r.RetryAfter = RetryAfter(resp.Header, now); r.RetryAfter == 0 {
			r.RetryAfter = throttleDelay
		}
	case code == tiktokNoPermission || code == tiktokTokenMissing || code == tiktokTokenInvalid:
		r.Outcome, label = Pause, "tiktok_auth"
	case code == tiktokRequestTimedOut || code >= 50000:
		r.Outcome, label = Retry, "tiktok_transient"
	default:
		r.Outcome, label = Dead, "tiktok_invalid"
	}
	r.Reason = label + ": " + detail
	r.Err = fmt.Errorf("%w: tiktok: %s", ErrAdNetwork, detail)
	return r
}
