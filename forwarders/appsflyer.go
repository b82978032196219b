package forwarders

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// AppsFlyer sends events to AppsFlyer's server-to-server in-app events API:
// POST {base}/inappevent/{app_id} with the key in the "authentication"
// header and one JSON event per request (body at most 1 KB). API 3
// (api3.appsflyer.com, S2S token) is used with s2s_token, the legacy API 2
// (api2.appsflyer.com, dev key) with dev_key.
//
// AppsFlyer answers 200 after minimal validation: an iOS app id without its
// "id" prefix is accepted and silently dropped, so the prefix is checked at
// configuration load. Bodies are plain text ("OK", "Failed to authenticate").
// Refunds carry a negative af_revenue; trials carry no revenue. AppsFlyer
// honours eventTime only until 02:00 UTC of the next day; later deliveries
// are stamped with the arrival time and reported with reason late_timestamp.
type AppsFlyer struct {
	mmp
	prod     appsFlyerTarget
	sandbox  *appsFlyerTarget
	bundleID string
}

var (
	_ Forwarder = (*AppsFlyer)(nil)
	_ Requirer  = (*AppsFlyer)(nil)
)

// appsFlyerCredentials are the keys of the production block and of sandbox:.
type appsFlyerCredentials struct {
	AppID    string `yaml:"app_id"`
	DevKey   string `yaml:"dev_key"`
	S2SToken string `yaml:"s2s_token"`
}

// appsFlyerSettings is the type-specific configuration.
type appsFlyerSettings struct {
	mmpSettings          `yaml:",inline"`
	appsFlyerCredentials `yaml:",inline"`
	BundleID             string                `yaml:"bundle_id"`
	Sandbox              *appsFlyerCredentials `yaml:"sandbox"`
}

// appsFlyerTarget is one resolved set of credentials.
type appsFlyerTarget struct {
	url      string // full URL, app id included
	appID    string
	key      string
	platform string
}

// AppsFlyer defaults.
const (
	appsFlyerAPI3       = "https://api3.appsflyer.com"
	appsFlyerAPI2       = "https://api2.appsflyer.com"
	appsFlyerMaxName    = 45 // characters the dashboard shows
	appsFlyerMaxBody    = 1024
	appsFlyerTimeLayout = "2006-01-02 15:04:05.000"
)

var (
	appsFlyerIOSID    = regexp.MustCompile(`^id[0-9]+$`)
	appsFlyerDigits   = regexp.MustCompile(`^[0-9]+$`)
	androidPackageRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$`)
	bundleIdentifierR = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.\-]*$`)
)

// appsFlyerNames are AppsFlyer's defaults: its standard subscription events
// where one exists, the canonical name otherwise.
func appsFlyerNames() map[string]string {
	return standardNames(map[mapping.Type]string{
		mapping.TrialStarted:        "af_start_trial",
		mapping.TrialConverted:      "af_subscribe",
		mapping.SubscriptionStarted: "af_subscribe",
		mapping.Purchase:            "af_purchase",
	})
}

// NewAppsFlyer validates an AppsFlyer destination.
func NewAppsFlyer(s Settings) (Forwarder, error) {
	var cfg appsFlyerSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	m, err := newMMP(s, cfg.mmpSettings, appsFlyerNames, appsFlyerMaxName)
	if err != nil {
		return nil, err
	}
	prod, err := appsFlyerResolve(s, "", cfg.appsFlyerCredentials, appsFlyerCredentials{})
	if err != nil {
		return nil, err
	}
	a := &AppsFlyer{mmp: m, prod: prod, bundleID: strings.TrimSpace(cfg.BundleID)}
	if a.bundleID != "" && !bundleIdentifierR.MatchString(a.bundleID) {
		return nil, configError(s, "bundle_id", "not a bundle identifier such as com.example.app")
	}
	if cfg.Sandbox != nil {
		sb, err := appsFlyerResolve(s, "sandbox.", *cfg.Sandbox, cfg.appsFlyerCredentials)
		if err != nil {
			return nil, err
		}
		if sb.appID == prod.appID {
			return nil, configError(s, "sandbox.app_id", "must be a separate AppsFlyer app: AppsFlyer has no sandbox, and sandbox events must never reach the production app")
		}
		a.sandbox = &sb
	}
	return a, nil
}

// appsFlyerResolve validates one credential set; keys missing from a sandbox
// block are inherited from production (AppsFlyer keys are per account), the
// app id never is.
func appsFlyerResolve(s Settings, prefix string, c, inherit appsFlyerCredentials) (appsFlyerTarget, error) {
	appID := strings.TrimSpace(c.AppID)
	var t appsFlyerTarget
	switch {
	case appID == "":
		return t, configError(s, prefix+"app_id", "is required: id<Apple ID> for iOS (id123456789), the package name for Android")
	case appsFlyerDigits.MatchString(appID):
		return t, configError(s, prefix+"app_id", "iOS app ids need the id prefix (id"+appID+"): without it AppsFlyer answers 200 and drops the event")
	case appsFlyerIOSID.MatchString(appID):
		t.platform = platformIOS
	case androidPackageRE.MatchString(appID):
		t.platform = platformAndroid
	default:
		return t, configError(s, prefix+"app_id", "not an AppsFlyer app id: id<Apple ID> for iOS, the package name for Android")
	}
	dev, tok := strings.TrimSpace(c.DevKey), strings.TrimSpace(c.S2SToken)
	if dev == "" && tok == "" {
		dev, tok = strings.TrimSpace(inherit.DevKey), strings.TrimSpace(inherit.S2SToken)
	}
	base := s.Endpoint
	switch {
	case dev != "" && tok != "":
		return t, configError(s, prefix+"s2s_token", "set either s2s_token (API 3) or dev_key (legacy API 2), not both")
	case tok != "":
		t.key = tok
		if base == "" {
			base = appsFlyerAPI3
		}
	case dev != "":
		t.key = dev
		if base == "" {
			base = appsFlyerAPI2
		}
	default:
		return t, configError(s, prefix+"s2s_token", "is required (AppsFlyer dashboard: Configuration > API access > S2S token), or dev_key for the legacy API")
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return t, configError(s, "endpoint", "must be an http(s) URL")
	}
	t.appID = appID
	t.url = strings.TrimRight(base, "/") + "/inappevent/" + appID
	return t, nil
}

// Limits implements Forwarder: one event per request, no age limit (late
// events are accepted and re-dated by AppsFlyer).
func (a *AppsFlyer) Limits() Limits { return Limits{BatchSize: 1} }

// Missing implements Requirer: AppsFlyer refuses events without the
// device's AppsFlyer id.
func (a *AppsFlyer) Missing(e *mapping.Event) string {
	if e.Identifier(mapping.IDAppsFlyer) == "" {
		return mapping.IDAppsFlyer
	}
	return ""
}

// Send implements Forwarder.
func (a *AppsFlyer) Send(ctx context.Context, batch []Item) []Result {
	return sendEach(ctx, batch, a.send)
}

// appsFlyerEvent is the request body, fields in the documented order. Only
// parameters of the "Send Event" reference
// (https://dev.appsflyer.com/hc/reference/s2s-events-api3-post) are sent,
// in the form it gives them: ip is an IPv4 address (pattern and maxLength
// 16), so an IPv6 address is left out and AppsFlyer takes the geo fields
// from the install. Hashed e-mail and phone are not parameters of that
// reference, and app_set_id there is an object with a scope Postback does
// not know, so neither is sent. af_events_api is the legacy flag the help
// center article 207034486 asks for; AppsFlyer ignores it on API 3.
type appsFlyerEvent struct {
	AppsFlyerID      string `json:"appsflyer_id"`
	CustomerUserID   string `json:"customer_user_id,omitempty"`
	EventName        string `json:"eventName"`
	EventValue       string `json:"eventValue"`
	EventTime        string `json:"eventTime"`
	EventCurrency    string `json:"eventCurrency,omitempty"`
	BundleIdentifier string `json:"bundleIdentifier,omitempty"`
	IDFA             string `json:"idfa,omitempty"`
	IDFV             string `json:"idfv,omitempty"`
	AdvertisingID    string `json:"advertising_id,omitempty"`
	ATT              *int   `json:"att,omitempty"`
	OS               string `json:"os,omitempty"`
	IP               string `json:"ip,omitempty"`
	UA               string `json:"ua,omitempty"`
	AppVersionName   string `json:"app_version_name,omitempty"`
	AFEventsAPI      string `json:"af_events_api"`
}

func (a *AppsFlyer) send(ctx context.Context, it Item) Result {
	e := it.Event
	t := &a.prod
	if e.Sandboxed() {
		if a.sandbox == nil {
			return skip(ReasonSandboxNoCreds, "sandbox event and no sandbox: block (AppsFlyer has no sandbox; configure a separate app)")
		}
		t = a.sandbox
	}
	name := a.eventName(e)
	if name == "" {
		return skip(ReasonNoEventName, "no AppsFlyer event name for %s", e.Type)
	}
	if p := platformOf(e); p != "" && p != t.platform {
		return skip("platform_mismatch", "%s event for the %s app %s", p, t.platform, t.appID)
	}
	if id := a.Missing(e); id != "" {
		return skip("missing "+id, "event has no %s", id)
	}
	now := a.now()
	at, bad := eventTime(e, now, 0)
	if bad != nil {
		return *bad
	}
	rev, bad := a.convert(e)
	if bad != nil {
		return *bad
	}
	body, err := a.body(e, name, at, rev, t.platform)
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return Result{Outcome: Pause, Reason: ReasonConfig, Err: scrubURLError(err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "postback")
	req.Header.Set("authentication", t.key)
	late := now.After(at.Truncate(24 * time.Hour).Add(26 * time.Hour))
	r := a.do(req, "POST "+RedactURL(t.url), func(status int, b []byte) verdict {
		return appsFlyerVerdict(status, b, late)
	}, []string{t.key})
	return r
}

// body builds the JSON body; optional custom keys in eventValue are dropped
// if the body would exceed AppsFlyer's 1 KB.
func (a *AppsFlyer) body(e *mapping.Event, name string, at time.Time, rev *mapping.Revenue, platform string) ([]byte, error) {
	ev := appsFlyerEvent{
		AppsFlyerID:    e.Identifier(mapping.IDAppsFlyer),
		CustomerUserID: e.User.AppUserID,
		EventName:      name,
		EventTime:      at.Format(appsFlyerTimeLayout),
		IP:             ipv4(e.Identifier(mapping.IDIP)),
		UA:             e.Identifier(mapping.IDUserAgent),
		OS:             e.Identifier(mapping.IDOSVersion),
		AppVersionName: e.Attributes["app_version"],
		AFEventsAPI:    "true",
	}
	switch platform {
	case platformIOS:
		ev.IDFA = e.Identifier(mapping.IDIDFA)
		ev.IDFV = e.Identifier(mapping.IDIDFV)
		if v, ok := mmpATT(e); ok {
			ev.ATT = &v
		}
		ev.BundleIdentifier = a.bundleID
		if ev.BundleIdentifier == "" && e.Source == mapping.SourceApple {
			ev.BundleIdentifier = e.AppID
		}
	case platformAndroid:
		ev.AdvertisingID = e.Identifier(mapping.IDGAID)
	}
	values := map[string]string{}
	if e.ProductID != "" {
		values["af_content_id"] = e.ProductID
		values["af_quantity"] = "1"
	}
	if e.TransactionID != "" {
		values["af_order_id"] = e.TransactionID
	}
	if rev != nil && rev.AmountMicros != 0 {
		values["af_revenue"] = rev.Decimal()
		values["af_currency"] = rev.Currency
		ev.EventCurrency = rev.Currency
	}
	full := map[string]string{}
	for k, v := range mmpAttributes(e) {
		full[k] = v
	}
	for k, v := range values {
		full[k] = v
	}
	for _, vals := range []map[string]string{full, values} {
		b, err := json.Marshal(vals)
		if err != nil {
			return nil, err
		}
		ev.EventValue = string(b)
		out, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		if len(out) <= appsFlyerMaxBody {
			return out, nil
		}
	}
	return nil, errBodyTooLarge("AppsFlyer", appsFlyerMaxBody)
}

// appsFlyerVerdict reads AppsFlyer's plain-text answers.
func appsFlyerVerdict(status int, body []byte, late bool) verdict {
	text := strings.ToLower(string(body))
	switch {
	case status == http.StatusOK:
		if late {
			return verdict{outcome: Delivered, reason: ReasonLateTimestamp}
		}
		return verdict{outcome: Delivered}
	case status == http.StatusBadRequest && strings.Contains(text, "authenticat"):
		// "Failed to authenticate": the key does not match the API
		// version (dev key on API 3, S2S token on API 2) or the app.
		return verdict{outcome: Pause, reason: ReasonAuth}
	case status == http.StatusBadRequest:
		return verdict{outcome: Dead, reason: ReasonValidation}
	case status == http.StatusUnauthorized:
		return verdict{outcome: Pause, reason: ReasonAuth}
	case status == http.StatusForbidden, status == http.StatusNotFound:
		return verdict{outcome: Pause, reason: ReasonConfig}
	case status == http.StatusTooManyRequests:
		return verdict{outcome: Retry, throttle: true, reason: "http_" + strconv.Itoa(status)}
	}
	return verdict{outcome: Classify(status)}
}
