package forwarders

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/postback/postback/mapping"
)

// Kochava sends events to Kochava's server-to-server post-install event
// endpoint: POST {base}/track/json, JSON with action "event", the App GUID
// as kochava_app_id and the Kochava device id. Sandbox events go to the Test
// App GUID of the sandbox: block.
//
// Revenue goes in event_data.sum with its currency; refunds carry a
// negative sum, trials none. Kochava answers {"success":"1"} when it took
// the event (Free App Analytics accounts answer the same and drop it; the
// S2S API needs a paid account). Kochava documents no error codes, so 4xx
// is permanent, 401/403 pause the destination, 429 and 5xx are retried.
type Kochava struct {
	mmp
	prod    kochavaTarget
	sandbox *kochavaTarget
	url     string
}

var (
	_ Forwarder = (*Kochava)(nil)
	_ Requirer  = (*Kochava)(nil)
)

// kochavaCredentials are the keys of the production block and of sandbox:.
type kochavaCredentials struct {
	AppGUID string `yaml:"app_guid"`
}

// kochavaSettings is the type-specific configuration.
type kochavaSettings struct {
	mmpSettings        `yaml:",inline"`
	kochavaCredentials `yaml:",inline"`
	Sandbox            *kochavaCredentials `yaml:"sandbox"`
}

// kochavaTarget is one resolved App GUID.
type kochavaTarget struct{ guid string }

const kochavaBase = "https://control.kochava.com"

// kochavaNames are Kochava's defaults: its standard event names where one
// exists ("Start Trial", "Subscribe", "Purchase"), the canonical name
// otherwise.
func kochavaNames() map[string]string {
	return standardNames(map[mapping.Type]string{
		mapping.TrialStarted:            "Start Trial",
		mapping.TrialConverted:          "Subscribe",
		mapping.SubscriptionStarted:     "Subscribe",
		mapping.SubscriptionRenewed:     "Purchase",
		mapping.SubscriptionReactivated: "Purchase",
		mapping.ProductChanged:          "Purchase", // with revenue only
		mapping.Purchase:                "Purchase",
	})
}

// kochavaReserved are event_data keys Kochava does not accept.
func kochavaReserved(k string) bool {
	switch k {
	case "network", "source", "fb_campaign", "campaign", "site", "creative", "attribution_type",
		"integration_type", "integration_version", "cracked", "jailbroken":
		return true
	}
	return false
}

// NewKochava validates a Kochava destination.
func NewKochava(s Settings) (Forwarder, error) {
	var cfg kochavaSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	m, err := newMMP(s, cfg.mmpSettings, kochavaNames, 0)
	if err != nil {
		return nil, err
	}
	base := s.Endpoint
	if base == "" {
		base = kochavaBase
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, configError(s, "endpoint", "must be an http(s) URL")
	}
	guid := strings.TrimSpace(cfg.AppGUID)
	if !kochavaGUID(guid) {
		return nil, configError(s, "app_guid", "the Kochava App GUID (ko..., Kochava: Apps & Assets > All Apps > App Tools > Edit App) is required")
	}
	k := &Kochava{mmp: m, prod: kochavaTarget{guid: guid}, url: strings.TrimRight(base, "/") + "/track/json"}
	if cfg.Sandbox != nil {
		sg := strings.TrimSpace(cfg.Sandbox.AppGUID)
		if !kochavaGUID(sg) {
			return nil, configError(s, "sandbox.app_guid", "the Test App GUID is required")
		}
		if sg == guid {
			return nil, configError(s, "sandbox.app_guid", "must differ from app_guid: sandbox events must never reach production")
		}
		k.sandbox = &kochavaTarget{guid: sg}
	}
	return k, nil
}

// kochavaGUID accepts Kochava App GUIDs ("ko" followed by letters, digits
// and dashes).
func kochavaGUID(g string) bool {
	if len(g) < 4 || len(g) > 128 || !strings.HasPrefix(g, "ko") {
		return false
	}
	for _, r := range g {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Limits implements Forwarder: one event per request.
func (k *Kochava) Limits() Limits { return Limits{BatchSize: 1} }

// Missing implements Requirer: the Kochava device id and the device's IP
// address.
func (k *Kochava) Missing(e *mapping.Event) string {
	if e.Identifier(mapping.IDKochava) == "" {
		return mapping.IDKochava
	}
	if e.Identifier(mapping.IDIP) == "" {
		return mapping.IDIP
	}
	return ""
}

// Send implements Forwarder.
func (k *Kochava) Send(ctx context.Context, batch []Item) []Result {
	return sendEach(ctx, batch, k.send)
}

// kochavaEvent is the request body.
type kochavaEvent struct {
	Action          string      `json:"action"`
	KochavaAppID    string      `json:"kochava_app_id"`
	KochavaDeviceID string      `json:"kochava_device_id"`
	Data            kochavaData `json:"data"`
}

type kochavaData struct {
	EventName     string            `json:"event_name"`
	AppVersion    string            `json:"app_version,omitempty"`
	UserTime      int64             `json:"usertime"`
	OriginationIP string            `json:"origination_ip"`
	DeviceVer     string            `json:"device_ver"`
	DeviceUA      string            `json:"device_ua"`
	OSVersion     string            `json:"os_version,omitempty"`
	DeviceIDs     map[string]string `json:"device_ids"`
	ATT           *kochavaATT       `json:"app_tracking_transparency,omitempty"`
	Currency      string            `json:"currency,omitempty"`
	EventData     map[string]any    `json:"event_data"`
}

type kochavaATT struct {
	ATT bool `json:"att"`
}

func (k *Kochava) send(ctx context.Context, it Item) Result {
	e := it.Event
	t := &k.prod
	if e.Sandboxed() {
		if k.sandbox == nil {
			return skip(ReasonSandboxNoCreds, "sandbox event and no sandbox: block")
		}
		t = k.sandbox
	}
	name := k.eventName(e)
	if name == "" {
		return skip(ReasonNoEventName, "no Kochava event name for %s", e.Type)
	}
	if id := k.Missing(e); id != "" {
		return skip("missing "+id, "event has no %s", id)
	}
	at, bad := eventTime(e, k.now(), 0)
	if bad != nil {
		return *bad
	}
	rev, bad := k.convert(e)
	if bad != nil {
		return *bad
	}
	platform := platformOf(e)
	d := kochavaData{
		EventName:     name,
		UserTime:      at.Unix(), // seconds: Kochava's own post-install example sends 10 digits
		OriginationIP: e.Identifier(mapping.IDIP),
		DeviceUA:      kochavaUA(e.Identifier(mapping.IDUserAgent)),
		AppVersion:    e.Attributes["app_version"],
		OSVersion:     e.Identifier(mapping.IDOSVersion),
		DeviceIDs:     map[string]string{},
		EventData:     map[string]any{},
	}
	if model, ver := e.Identifier(mapping.IDDeviceModel), e.Identifier(mapping.IDOSVersion); model != "" && ver != "" && platform != "" {
		osName := "Android"
		if platform == platformIOS {
			osName = "iOS"
		}
		d.DeviceVer = model + "-" + osName + "-" + ver
	}
	for key, id := range map[string]string{"idfa": mapping.IDIDFA, "idfv": mapping.IDIDFV, "adid": mapping.IDGAID, "android_id": mapping.IDAndroidID} {
		if v := e.Identifier(id); v != "" {
			d.DeviceIDs[key] = v
		}
	}
	if platform == platformIOS {
		if s, ok := mmpATT(e); ok {
			d.ATT = &kochavaATT{ATT: s == 3}
		}
	}
	for key, v := range mmpAttributes(e) {
		if !kochavaReserved(key) {
			d.EventData[key] = v
		}
	}
	if e.ProductID != "" {
		d.EventData["content_id"] = e.ProductID
		d.EventData["name"] = e.ProductID
	}
	if e.TransactionID != "" {
		d.EventData["order_id"] = e.TransactionID
	}
	if e.User.AppUserID != "" {
		d.EventData["user_id"] = e.User.AppUserID
	}
	if rev != nil && rev.AmountMicros != 0 {
		d.EventData["sum"] = json.Number(rev.Decimal())
		d.EventData["currency"] = rev.Currency
		d.Currency = rev.Currency
	}
	body, err := json.Marshal(kochavaEvent{Action: "event", KochavaAppID: t.guid, KochavaDeviceID: e.Identifier(mapping.IDKochava), Data: d})
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.url, bytes.NewReader(body))
	if err != nil {
		return Result{Outcome: Pause, Reason: ReasonConfig, Err: scrubURLError(err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "postback")
	return k.do(req, "POST "+RedactURL(k.url), kochavaVerdict, []string{t.guid})
}

// kochavaUA URL-encodes a user agent as Kochava's post-install event
// reference asks ("Please ensure that this is URL-encoded",
// https://support.kochava.com/server-to-server-integration/post-install-event-setup/):
// RFC 3986 percent-encoding, spaces as %20. A value that already is
// percent-encoded (it has no space and decodes to something else) is kept,
// so an app that encoded it itself is not encoded twice.
func kochavaUA(ua string) string {
	ua = strings.TrimSpace(ua)
	if ua == "" {
		return ""
	}
	if !strings.ContainsAny(ua, " ()") {
		if dec, err := url.PathUnescape(ua); err == nil && dec != ua {
			return ua
		}
	}
	return strings.ReplaceAll(url.QueryEscape(ua), "+", "%20")
}

// kochavaVerdict reads Kochava's answers: {"success":"1"} on success.
func kochavaVerdict(status int, body []byte) verdict {
	switch {
	case status == http.StatusOK:
		var r struct {
			Success json.RawMessage `json:"success"`
			Error   string          `json:"error"`
		}
		if json.Unmarshal(body, &r) != nil || len(r.Success) == 0 {
			// Kochava documents no other body; a 200 is taken as accepted.
			return verdict{outcome: Delivered}
		}
		switch strings.Trim(string(r.Success), `"`) {
		case "1", "true":
			return verdict{outcome: Delivered}
		}
		if strings.Contains(strings.ToLower(r.Error), "app") {
			return verdict{outcome: Pause, reason: ReasonConfig}
		}
		return verdict{outcome: Dead, reason: ReasonValidation}
	case status == http.StatusTooManyRequests:
		return verdict{outcome: Retry, throttle: true}
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return verdict{outcome: Pause, reason: ReasonAuth}
	case status >= 200 && status < 300:
		return verdict{outcome: Delivered}
	case status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooEarly:
		return verdict{outcome: Dead, reason: ReasonValidation}
	}
	return verdict{outcome: Classify(status)}
}
