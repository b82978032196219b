package forwarders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postback/postback/mapping"
)

// GA4 sends events to the Google Analytics 4 Measurement Protocol, to a
// Firebase app stream (firebase_app_id; each request names the device's
// app_instance_id) or a web stream (measurement_id; client_id). A request
// holds one user and at most 25 events, each backdated with its own
// timestamp_micros; events older than GA4's 72 hours are skipped.
// Purchases and refunds go as GA4's purchase and refund events with
// transaction_id, value, currency and items; other types as custom events
// named after the canonical type.
//
// GA4 answers 2xx even to a payload it throws away, so GA4 is a Checker:
// Check posts to /debug/mp/collect (which records nothing) the last payload
// sent, or a representative one, and returns the validation messages.
// CheckInterval tells the gateway how often to repeat it (debug_check).
// api_secret travels in the query string and never appears in a Result.
type GA4 struct {
	base       string
	prod       ga4Set
	sandbox    *ga4Set
	names      map[string]string
	client     *http.Client
	now        func() time.Time
	checkEvery time.Duration

	mu   sync.Mutex
	last map[*ga4Creds]ga4Request // last payload sent per stream, for Check
}

var (
	_ Forwarder = (*GA4)(nil)
	_ Requirer  = (*GA4)(nil)
	_ Checker   = (*GA4)(nil)
)

// ErrGA4Invalid reports a payload that GA4's validation endpoint finds
// fault with; the message lists GA4's validation messages.
var ErrGA4Invalid = errors.New("forwarders: GA4 validation failed")

// ga4Creds is one stream and its Measurement Protocol secret.
type ga4Creds struct {
	FirebaseAppID string `yaml:"firebase_app_id"`
	MeasurementID string `yaml:"measurement_id"`
	APISecret     string `yaml:"api_secret"`
}

// ga4Block is the YAML of a production or sandbox block: one stream, or a
// Firebase app per platform (firebase_app_ids: {ios: ..., android: ...})
// with an optional secret per platform (api_secrets), since each Firebase
// app is its own GA4 data stream.
type ga4Block struct {
	ga4Creds       `yaml:",inline"`
	FirebaseAppIDs map[string]string `yaml:"firebase_app_ids"`
	APISecrets     map[string]string `yaml:"api_secrets"`
}

// ga4Set is the resolved streams of one block, by the platform they take:
// "ios", "android", "web" (a measurement id) or "any" (one Firebase app id
// whose platform its id does not tell).
type ga4Set map[string]*ga4Creds

// firebaseAppPlatform returns the platform a Firebase app id names
// ("1:<project number>:ios:<hash>" or ":android:"), or "".
func firebaseAppPlatform(id string) string {
	parts := strings.Split(id, ":")
	if len(parts) == 4 && (parts[2] == "ios" || parts[2] == "android") {
		return parts[2]
	}
	return ""
}

// resolve validates a block and returns its streams.
func (b ga4Block) resolve(s Settings, prefix string) (ga4Set, error) {
	if len(b.FirebaseAppIDs) == 0 {
		if len(b.APISecrets) > 0 {
			return nil, configError(s, prefix+"api_secrets", "only with firebase_app_ids")
		}
		if err := b.ga4Creds.validate(s, prefix); err != nil {
			return nil, err
		}
		c := b.ga4Creds
		switch p := firebaseAppPlatform(c.FirebaseAppID); {
		case c.MeasurementID != "":
			return ga4Set{"web": &c}, nil
		case p != "":
			// A Firebase app belongs to one platform: events of the
			// other platform are not sent to it.
			return ga4Set{p: &c}, nil
		default:
			return ga4Set{"any": &c}, nil
		}
	}
	if b.FirebaseAppID != "" || b.MeasurementID != "" {
		return nil, configError(s, prefix+"firebase_app_ids", "set firebase_app_ids or a single firebase_app_id/measurement_id, not both")
	}
	set := ga4Set{}
	for k, id := range b.FirebaseAppIDs {
		if k != "ios" && k != "android" {
			return nil, configError(s, prefix+"firebase_app_ids."+k, "platform must be ios or android")
		}
		if p := firebaseAppPlatform(id); p != "" && p != k {
			return nil, configError(s, prefix+"firebase_app_ids."+k, fmt.Sprintf("%q is the Firebase app id of an %s app", id, p))
		}
		secret := b.APISecrets[k]
		if secret == "" {
			secret = b.APISecret
		}
		c := ga4Creds{FirebaseAppID: strings.TrimSpace(id), APISecret: secret}
		if c.FirebaseAppID == "" {
			return nil, configError(s, prefix+"firebase_app_ids."+k, "is empty")
		}
		if c.APISecret == "" {
			return nil, configError(s, prefix+"api_secrets."+k, "the Measurement Protocol API secret of the "+k+" stream is required (or a shared api_secret)")
		}
		set[k] = &c
	}
	for k := range b.APISecrets {
		if set[k] == nil {
			return nil, configError(s, prefix+"api_secrets."+k, "has no firebase_app_ids."+k)
		}
	}
	return set, nil
}

// streams lists the set's streams in a stable order.
func (set ga4Set) streams() []*ga4Creds {
	var out []*ga4Creds
	for _, k := range []string{"web", "any", "ios", "android"} {
		if c := set[k]; c != nil {
			out = append(out, c)
		}
	}
	return out
}

// overlaps reports whether two sets share a stream.
func (set ga4Set) overlaps(o ga4Set) bool {
	for _, a := range set.streams() {
		for _, b := range o.streams() {
			if a.FirebaseAppID != "" && a.FirebaseAppID == b.FirebaseAppID || a.MeasurementID != "" && a.MeasurementID == b.MeasurementID {
				return true
			}
		}
	}
	return false
}

// ga4Settings is the type-specific configuration of type ga4.
type ga4Settings struct {
	ga4Block   `yaml:",inline"`
	Sandbox    *ga4Block `yaml:"sandbox"`
	DebugCheck struct {
		Enabled  bool   `yaml:"enabled"`
		Interval string `yaml:"interval"`
	} `yaml:"debug_check"`
}

const (
	ga4BatchSize   = 25
	ga4DefaultBase = "https://www.google-analytics.com"
	// ga4MaxAge keeps a margin under GA4's 72 hours, measured by GA4 at
	// request time.
	ga4MaxAge = 72*time.Hour - 10*time.Minute
	// ga4DefaultCheckEvery is debug_check.interval's default.
	ga4DefaultCheckEvery = time.Hour
)

// ga4DefaultNames: money events use GA4's recommended purchase and refund;
// every other type is a custom event named after the canonical type.
var ga4DefaultNames = func() map[string]string {
	m := map[string]string{}
	for _, t := range mapping.Types {
		m[string(t)] = string(t)
	}
	for _, t := range []mapping.Type{mapping.TrialConverted, mapping.SubscriptionStarted, mapping.SubscriptionRenewed, mapping.ProductChanged, mapping.Purchase} {
		m[string(t)] = "purchase"
	}
	// A plan change without money stays a custom event named after the type.
	m[productChangedNoRevenue] = string(mapping.ProductChanged)
	m[string(mapping.Refund)] = "refund"
	delete(m, string(mapping.Custom))
	return m
}()

var ga4NameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,39}$`)

// ga4Reserved lists event names the Measurement Protocol refuses.
var ga4Reserved = map[string]bool{
	"ad_activeview": true, "ad_click": true, "ad_exposure": true, "ad_impression": true, "ad_query": true,
	"adunit_exposure": true, "app_clear_data": true, "app_install": true, "app_update": true, "app_remove": true,
	"error": true, "first_open": true, "first_visit": true, "in_app_purchase": true, "notification_dismiss": true,
	"notification_foreground": true, "notification_open": true, "notification_receive": true, "os_update": true,
	"screen_view": true, "session_start": true, "user_engagement": true,
}

// ga4ValidName reports whether n can be sent as a GA4 event name.
func ga4ValidName(n string) bool {
	if !ga4NameRe.MatchString(n) || ga4Reserved[n] {
		return false
	}
	l := strings.ToLower(n)
	return !strings.HasPrefix(l, "firebase_") && !strings.HasPrefix(l, "google_") && !strings.HasPrefix(l, "ga_")
}

// NewGA4 validates a GA4 Measurement Protocol destination without I/O.
func NewGA4(s Settings) (Forwarder, error) {
	var cfg ga4Settings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	g := &GA4{base: ga4DefaultBase, names: s.EventNames, client: s.Client, now: s.Now,
		last: map[*ga4Creds]ga4Request{}}
	if s.Endpoint != "" {
		g.base = strings.TrimRight(s.Endpoint, "/")
	}
	if u, err := url.Parse(g.base); err != nil || u.Scheme == "" || u.Host == "" || u.RawQuery != "" {
		return nil, configError(s, "endpoint", "must be an absolute URL without query such as https://www.google-analytics.com (or https://region1.google-analytics.com for EU collection)")
	}
	prod, err := cfg.ga4Block.resolve(s, "")
	if err != nil {
		return nil, err
	}
	g.prod = prod
	if sb := cfg.Sandbox; sb != nil {
		set, err := sb.resolve(s, "sandbox.")
		if err != nil {
			return nil, err
		}
		if set.overlaps(g.prod) {
			return nil, configError(s, "sandbox", "must name its own stream (a separate firebase_app_id or measurement_id): GA4 has no test mode, so sandbox events would land in production data")
		}
		g.sandbox = &set
	}
	for k, n := range s.EventNames {
		if n != "" && !ga4ValidName(n) {
			return nil, configError(s, "event_names."+k, fmt.Sprintf("%q is not a valid GA4 event name (letters, digits, underscores, up to 40, starting with a letter; not reserved)", n))
		}
	}
	if cfg.DebugCheck.Enabled {
		g.checkEvery = ga4DefaultCheckEvery
		if cfg.DebugCheck.Interval != "" {
			d, err := time.ParseDuration(cfg.DebugCheck.Interval)
			if err != nil || d < time.Minute {
				return nil, configError(s, "debug_check.interval", "must be a duration of at least 1m, such as 1h")
			}
			g.checkEvery = d
		}
	}
	return g, nil
}

func (c ga4Creds) validate(s Settings, prefix string) error {
	switch {
	case c.FirebaseAppID == "" && c.MeasurementID == "":
		return configError(s, prefix+"firebase_app_id", "set firebase_app_id (app stream: Firebase console > Project settings > General > Your apps > App ID) or measurement_id (web stream: G-...)")
	case c.FirebaseAppID != "" && c.MeasurementID != "":
		return configError(s, prefix+"measurement_id", "a destination sends to one stream: set firebase_app_id or measurement_id, not both")
	case c.MeasurementID != "" && !strings.HasPrefix(c.MeasurementID, "G-"):
		return configError(s, prefix+"measurement_id", "a web stream's measurement id starts with G-")
	case c.APISecret == "":
		return configError(s, prefix+"api_secret", "a Measurement Protocol API secret is required (GA4 Admin > Data streams > your stream > Measurement Protocol API secrets > Create)")
	}
	return nil
}

// app reports whether the stream is a Firebase app stream.
func (c *ga4Creds) app() bool { return c.FirebaseAppID != "" }

// userKey is the identifier that names the device or browser in a request.
func (c *ga4Creds) userKey() string {
	if c.app() {
		return mapping.IDFirebase
	}
	return mapping.IDGAClient
}

// query returns the URL query that selects the stream.
func (c *ga4Creds) query() string {
	q := url.Values{"api_secret": {c.APISecret}}
	if c.app() {
		q.Set("firebase_app_id", c.FirebaseAppID)
	} else {
		q.Set("measurement_id", c.MeasurementID)
	}
	return q.Encode()
}

// Limits implements Forwarder: 25 events a request, never older than 72 h.
func (g *GA4) Limits() Limits { return Limits{BatchSize: ga4BatchSize, MaxAge: ga4MaxAge} }

// CheckInterval returns how often the gateway should call Check after
// start-up: debug_check.interval when debug_check.enabled, else 0 (only the
// start-up check).
func (g *GA4) CheckInterval() time.Duration { return g.checkEvery }

// creds returns the stream an event goes to, or a reason it has none: a
// sandbox event without a sandbox block, or an app event of a platform no
// Firebase app id is configured for (an Android app_instance_id sent to an
// iOS app would be attributed to the wrong app).
func (g *GA4) creds(e *mapping.Event) (*ga4Creds, string) {
	set := &g.prod
	if e.Sandboxed() {
		if g.sandbox == nil {
			return nil, "sandbox_not_configured: sandbox events need a sandbox stream"
		}
		set = g.sandbox
	}
	if c := (*set)["web"]; c != nil {
		return c, ""
	}
	if c := (*set)["any"]; c != nil {
		return c, ""
	}
	p := adPlatform(e)
	if c := (*set)[p]; c != nil {
		return c, ""
	}
	if p == "" {
		return nil, "missing os: the platform picks the Firebase app id"
	}
	return nil, "platform_mismatch: no firebase_app_ids." + p + " configured for a " + p + " event"
}

// Missing implements Requirer: an app stream needs the device's Firebase
// app_instance_id, a web stream the browser's client_id.
func (g *GA4) Missing(e *mapping.Event) string {
	c, _ := g.creds(e)
	if c == nil || !ga4ValidName(EventName(e, g.names, ga4DefaultNames)) || tooOld(e, g.now(), ga4MaxAge) {
		return ""
	}
	if e.Identifier(c.userKey()) == "" {
		return c.userKey()
	}
	return ""
}

// ga4Request is a Measurement Protocol body.
type ga4Request struct {
	AppInstanceID      string     `json:"app_instance_id,omitempty"`
	ClientID           string     `json:"client_id,omitempty"`
	UserID             string     `json:"user_id,omitempty"`
	TimestampMicros    int64      `json:"timestamp_micros,omitempty"`
	ValidationBehavior string     `json:"validation_behavior,omitempty"` // debug endpoint only
	Events             []ga4Event `json:"events"`
}

// ga4Event is one event; params marshal with sorted keys.
type ga4Event struct {
	Name            string         `json:"name"`
	TimestampMicros int64          `json:"timestamp_micros,omitempty"`
	Params          map[string]any `json:"params,omitempty"`
}

// ga4Item is an element of items.
type ga4Item struct {
	ItemID   string      `json:"item_id"`
	Price    json.Number `json:"price,omitempty"`
	Quantity int         `json:"quantity"`
}

func (g *GA4) event(e *mapping.Event, name string, now time.Time) ga4Event {
	ts := e.OccurredAt
	if ts.After(now) {
		ts = now
	}
	ev := ga4Event{Name: name, TimestampMicros: ts.UnixMicro(), Params: map[string]any{}}
	value, currency := revenueValue(e)
	if value != "" {
		ev.Params["value"] = json.Number(value)
		ev.Params["currency"] = currency
	}
	if name == "purchase" || name == "refund" {
		tid := e.TransactionID
		if tid == "" {
			tid = e.ID
		}
		ev.Params["transaction_id"] = tid
		if e.ProductID != "" {
			ev.Params["items"] = []ga4Item{{ItemID: e.ProductID, Price: json.Number(value), Quantity: 1}}
		}
	} else if e.ProductID != "" {
		ev.Params["product_id"] = e.ProductID
	}
	if len(ev.Params) == 0 {
		ev.Params = nil
	}
	return ev
}

// Send implements Forwarder: one request per user (app instance or client)
// and stream.
func (g *GA4) Send(ctx context.Context, batch []Item) []Result {
	out := make([]Result, len(batch))
	events := make([]ga4Event, len(batch))
	now := g.now()
	type group struct {
		c      *ga4Creds
		device string
		user   string
		idx    []int
	}
	var groups []*group
	for i, it := range batch {
		e := it.Event
		if e == nil {
			out[i] = Result{Outcome: Dead, Reason: "no_event"}
			continue
		}
		c, why := g.creds(e)
		if c == nil {
			out[i] = skipped(why)
			continue
		}
		name := EventName(e, g.names, ga4DefaultNames)
		switch {
		case name == "":
			out[i] = skipped("no_event_name: " + string(e.Type) + " is disabled in event_names")
			continue
		case !ga4ValidName(name):
			out[i] = Result{Outcome: Dead, Reason: "invalid_event_name: GA4 refuses " + strconv.Quote(name),
				Err: fmt.Errorf("%w: event name %q is invalid or reserved", ErrGA4Invalid, name)}
			continue
		case tooOld(e, now, ga4MaxAge):
			out[i] = skipped("too_old: older than GA4's 72 hours")
			continue
		}
		device := e.Identifier(c.userKey())
		if device == "" {
			out[i] = skipped("missing " + c.userKey())
			continue
		}
		events[i] = g.event(e, name, now)
		var grp *group
		for _, x := range groups {
			if x.c == c && x.device == device && x.user == e.User.AppUserID && len(x.idx) < ga4BatchSize {
				grp = x
			}
		}
		if grp == nil {
			grp = &group{c: c, device: device, user: e.User.AppUserID}
			groups = append(groups, grp)
		}
		grp.idx = append(grp.idx, i)
	}
	for _, grp := range groups {
		body := ga4Request{UserID: grp.user, Events: make([]ga4Event, len(grp.idx))}
		if grp.c.app() {
			body.AppInstanceID = grp.device
		} else {
			body.ClientID = grp.device
		}
		for k, i := range grp.idx {
			body.Events[k] = events[i]
		}
		body.TimestampMicros = body.Events[0].TimestampMicros
		r := g.post(ctx, grp.c, "/mp/collect", body)
		if r.Outcome == Delivered {
			g.mu.Lock()
			g.last[grp.c] = body
			g.mu.Unlock()
		}
		for _, i := range grp.idx {
			out[i] = r
		}
	}
	return out
}

// post sends one Measurement Protocol request and classifies the answer
// with the generic status rules (GA4 has no error body in production).
func (g *GA4) post(ctx context.Context, c *ga4Creds, path string, body ga4Request) Result {
	summary := fmt.Sprintf("POST %s%s (%d events)", g.base, path, len(body.Events))
	if r := adCancelled(ctx); r != nil {
		r.Request = summary
		return *r
	}
	js, err := json.Marshal(body)
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Request: summary, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+path+"?"+c.query(), bytes.NewReader(js))
	if err != nil {
		// the error would quote the URL and its secret: say only what failed
		return Result{Outcome: Pause, Reason: "bad_url", Request: summary, Err: fmt.Errorf("%s: %w: cannot build the request URL", summary, ErrAdNetwork)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "postback")
	sent := DumpRequest(req, summary, c.APISecret)
	resp, rr := adDo(g.client, req, summary)
	if rr != nil {
		rr.Request = sent
		return *rr
	}
	r := Result{Outcome: Classify(resp.Status), Status: resp.Status, Request: sent,
		Response: redact(Excerpt(resp.Body), c.APISecret)}
	if r.Outcome != Delivered {
		r.Reason = "http_" + strconv.Itoa(resp.Status)
		r.Err = fmt.Errorf("%s: %w: ga4: HTTP %d", summary, ErrAdNetwork, resp.Status)
		if r.Outcome == Retry {
			r.RetryAfter = RetryAfter(resp.Header, g.now())
			r.Throttle = resp.Status == http.StatusTooManyRequests
		}
	}
	return r
}

// ga4Sample is the representative payload checked before anything was sent.
func ga4Sample(c *ga4Creds) ga4Request {
	r := ga4Request{Events: []ga4Event{{Name: "purchase", Params: map[string]any{
		"currency": "USD", "value": json.Number("9.99"), "transaction_id": "postback_check",
		"items": []ga4Item{{ItemID: "postback_check", Price: json.Number("9.99"), Quantity: 1}},
	}}}}
	if c.app() {
		r.AppInstanceID = "0123456789abcdef0123456789abcdef"
	} else {
		r.ClientID = "1234567890.1234567890"
	}
	return r
}

// ga4Validation is the debug endpoint's answer.
type ga4Validation struct {
	ValidationMessages []struct {
		FieldPath      string `json:"fieldPath"`
		Description    string `json:"description"`
		ValidationCode string `json:"validationCode"`
	} `json:"validationMessages"`
}

// Check implements Checker: for each configured stream it posts the last
// payload sent (or a representative purchase) to /debug/mp/collect with
// validation_behavior ENFORCE_RECOMMENDATIONS and returns an error wrapping
// ErrGA4Invalid that lists GA4's validation messages, or ErrAdNetwork when
// the endpoint cannot be reached. The debug endpoint records nothing; it
// checks the payload, not the api_secret.
func (g *GA4) Check(ctx context.Context) error {
	var errs []error
	streams := g.prod.streams()
	if g.sandbox != nil {
		streams = append(streams, g.sandbox.streams()...)
	}
	for _, c := range streams {
		g.mu.Lock()
		body, ok := g.last[c]
		g.mu.Unlock()
		if !ok {
			body = ga4Sample(c)
		}
		body.ValidationBehavior = "ENFORCE_RECOMMENDATIONS"
		if err := g.check(ctx, c, body); err != nil {
			stream := c.FirebaseAppID + c.MeasurementID
			errs = append(errs, fmt.Errorf("stream %s: %w", stream, err))
		}
	}
	return errors.Join(errs...)
}

func (g *GA4) check(ctx context.Context, c *ga4Creds, body ga4Request) error {
	r := g.debug(ctx, c, body)
	if r.Outcome == Delivered {
		return nil
	}
	return r.Err
}

// debug posts body to the validation server for stream c and reads the
// answer: delivered when GA4 lists no validation message, dead with the
// messages (wrapping ErrGA4Invalid) otherwise, ErrAdNetwork when the
// endpoint cannot be reached or answers something else. Response holds
// the stream and GA4's answer verbatim.
func (g *GA4) debug(ctx context.Context, c *ga4Creds, body ga4Request) Result {
	summary := "POST " + g.base + "/debug/mp/collect"
	js, err := json.Marshal(body)
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Request: summary, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+"/debug/mp/collect?"+c.query(), bytes.NewReader(js))
	if err != nil {
		return Result{Outcome: Pause, Reason: "bad_url", Request: summary, Err: fmt.Errorf("%s: %w: cannot build the request URL", summary, ErrAdNetwork)}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, rr := adDo(g.client, req, summary)
	if rr != nil {
		return *rr
	}
	stream := c.FirebaseAppID + c.MeasurementID
	r := Result{Status: resp.Status, Request: summary + " (stream " + stream + ")",
		Response: redact(Excerpt(resp.Body), c.APISecret)}
	if resp.Status < 200 || resp.Status >= 300 {
		r.Outcome, r.Reason = Classify(resp.Status), "http_"+strconv.Itoa(resp.Status)
		r.Err = fmt.Errorf("%s: %w: ga4 debug: HTTP %d", summary, ErrAdNetwork, resp.Status)
		return r
	}
	var v ga4Validation
	if err := json.Unmarshal(resp.Body, &v); err != nil {
		r.Outcome, r.Reason = Retry, "unreadable_response"
		r.Err = fmt.Errorf("%s: %w: ga4 debug: unreadable answer", summary, ErrAdNetwork)
		return r
	}
	if len(v.ValidationMessages) == 0 {
		r.Outcome = Delivered
		return r
	}
	msgs := make([]string, len(v.ValidationMessages))
	for i, m := range v.ValidationMessages {
		msgs[i] = fmt.Sprintf("%s: %s (%s)", m.FieldPath, redact(m.Description, c.APISecret), m.ValidationCode)
	}
	r.Outcome, r.Reason = Dead, "ga4_validation: "+strings.Join(msgs, "; ")
	r.Err = fmt.Errorf("%w: %s", ErrGA4Invalid, strings.Join(msgs, "; "))
	return r
}
