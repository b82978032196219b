package forwarders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// Branch sends events to Branch's Events API v2: POST
// {base}/v2/event/standard for Branch's standard event names (PURCHASE,
// START_TRIAL, SUBSCRIBE, ...) and {base}/v2/event/custom for any other
// name, JSON, with the Branch key in the body (key_live_... for production,
// key_test_... in the sandbox: block).
//
// Branch attaches revenue to standard events only and does not take
// negative revenue: revenue goes in event_data of standard events, custom
// events carry it (positive only) as custom_data strings, and refunds go
// without revenue. Branch is real-time only: late events are accepted but
// not backfilled into reports ("events with timestamps in the past will not
// be backfilled", https://help.branch.io/apidocs/events.md), so an event
// older than max_event_age (default 24h) is skipped with reason too_old
// instead of being counted on the wrong day; future timestamps are never
// sent.
type Branch struct {
	mmp
	prod    branchTarget
	sandbox *branchTarget
	base    string
	maxAge  time.Duration
}

var (
	_ Forwarder = (*Branch)(nil)
	_ Requirer  = (*Branch)(nil)
)

// branchCredentials are the keys of the production block and of sandbox:.
type branchCredentials struct {
	BranchKey string `yaml:"branch_key"`
}

// branchSettings is the type-specific configuration.
type branchSettings struct {
	mmpSettings       `yaml:",inline"`
	branchCredentials `yaml:",inline"`
	Sandbox           *branchCredentials `yaml:"sandbox"`
	// MaxEventAge is the oldest event sent (a Go duration such as 24h or
	// 90m); older events are skipped as too_old.
	MaxEventAge string `yaml:"max_event_age"`
}

// branchTarget is one resolved key.
type branchTarget struct{ key string }

// Branch defaults.
const (
	branchBase = "https://api2.branch.io"
	// BranchDefaultMaxEventAge is how old an event may be and still go to
	// Branch when max_event_age is not set: Branch files an event on the
	// day it arrives, so older events would be reported on the wrong day.
	BranchDefaultMaxEventAge = 24 * time.Hour
)

// branchStandard reports whether name is one of Branch's standard events
// (Commerce, Content, Lifecycle), which go to /v2/event/standard.
func branchStandard(name string) bool {
	switch name {
	case "ADD_TO_CART", "ADD_TO_WISHLIST", "VIEW_CART", "INITIATE_PURCHASE", "ADD_PAYMENT_INFO",
		"CLICK_AD", "PURCHASE", "SPEND_CREDITS", "VIEW_AD", "RESERVE",
		"SEARCH", "VIEW_ITEM", "VIEW_ITEMS", "RATE", "SHARE", "INITIATE_STREAM", "COMPLETE_STREAM",
		"COMPLETE_REGISTRATION", "COMPLETE_TUTORIAL", "ACHIEVE_LEVEL", "UNLOCK_ACHIEVEMENT",
		"INVITE", "LOGIN", "START_TRIAL", "SUBSCRIBE":
		return true
	}
	return false
}

// branchNames are Branch's defaults: revenue-bearing types map to the
// Commerce event PURCHASE (Branch passes revenue to ad partners only on
// Commerce events), trials to START_TRIAL, the rest to custom events named
// after the canonical type.
func branchNames() map[string]string {
	return standardNames(map[mapping.Type]string{
		mapping.TrialStarted:            "START_TRIAL",
		mapping.TrialConverted:          "PURCHASE",
		mapping.SubscriptionStarted:     "PURCHASE",
		mapping.SubscriptionRenewed:     "PURCHASE",
		mapping.SubscriptionReactivated: "PURCHASE",
		mapping.ProductChanged:          "PURCHASE", // with revenue only
		mapping.Purchase:                "PURCHASE",
	})
}

// NewBranch validates a Branch destination.
func NewBranch(s Settings) (Forwarder, error) {
	var cfg branchSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	m, err := newMMP(s, cfg.mmpSettings, branchNames, 0)
	if err != nil {
		return nil, err
	}
	base := s.Endpoint
	if base == "" {
		base = branchBase
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, configError(s, "endpoint", "must be an http(s) URL")
	}
	key := strings.TrimSpace(cfg.BranchKey)
	if !strings.HasPrefix(key, "key_live_") || len(key) <= len("key_live_") {
		return nil, configError(s, "branch_key", "the live Branch key (key_live_..., Branch dashboard: Configuration > Security & Access > Credentials) is required; a key_test_ key belongs in sandbox:")
	}
	b := &Branch{mmp: m, prod: branchTarget{key: key}, base: strings.TrimRight(base, "/"), maxAge: BranchDefaultMaxEventAge}
	if v := strings.TrimSpace(cfg.MaxEventAge); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, configError(s, "max_event_age", fmt.Sprintf("%q is not a positive duration such as 24h or 90m", v))
		}
		b.maxAge = d
	}
	if cfg.Sandbox != nil {
		sk := strings.TrimSpace(cfg.Sandbox.BranchKey)
		if !strings.HasPrefix(sk, "key_test_") || len(sk) <= len("key_test_") {
			return nil, configError(s, "sandbox.branch_key", "the test Branch key (key_test_..., the dashboard's Test mode) is required")
		}
		b.sandbox = &branchTarget{key: sk}
	}
	return b, nil
}

// Limits implements Forwarder: one event per request.
func (b *Branch) Limits() Limits { return Limits{BatchSize: 1} }

// Missing implements Requirer: Branch needs the OS and a device id of the
// platform, or a developer identity.
func (b *Branch) Missing(e *mapping.Event) string {
	if tooOld(e, b.now(), b.maxAge) {
		return "" // skipped as too_old: nothing to wait for
	}
	p := platformOf(e)
	if p == "" {
		return mapping.IDOS
	}
	if branchIdentity(e) != "" {
		return ""
	}
	if p == platformIOS && e.Identifier(mapping.IDIDFA) == "" && e.Identifier(mapping.IDIDFV) == "" {
		return mapping.IDIDFV
	}
	if p == platformAndroid && e.Identifier(mapping.IDGAID) == "" && e.Identifier(mapping.IDAndroidID) == "" {
		return mapping.IDGAID
	}
	return ""
}

// branchIdentity is the developer identity: branch_developer_identity when
// the app set one, else the app user id.
func branchIdentity(e *mapping.Event) string {
	if v := e.Identifier(mapping.IDBranch); v != "" {
		return v
	}
	return e.User.AppUserID
}

// Send implements Forwarder.
func (b *Branch) Send(ctx context.Context, batch []Item) []Result {
	return sendEach(ctx, batch, b.send)
}

// branchEvent is the request body.
type branchEvent struct {
	BranchKey    string            `json:"branch_key"`
	Name         string            `json:"name"`
	UserData     branchUserData    `json:"user_data"`
	EventData    *branchEventData  `json:"event_data,omitempty"`
	CustomData   map[string]string `json:"custom_data,omitempty"`
	ContentItems []branchItem      `json:"content_items,omitempty"`
}

type branchUserData struct {
	OS                string `json:"os"`
	OSVersion         string `json:"os_version,omitempty"`
	Environment       string `json:"environment"`
	DeveloperIdentity string `json:"developer_identity,omitempty"`
	IDFA              string `json:"idfa,omitempty"`
	IDFV              string `json:"idfv,omitempty"`
	AAID              string `json:"aaid,omitempty"`
	AndroidID         string `json:"android_id,omitempty"`
	LimitAdTracking   *bool  `json:"limit_ad_tracking,omitempty"`
	IP                string `json:"ip,omitempty"`
	UserAgent         string `json:"user_agent,omitempty"`
	Model             string `json:"model,omitempty"`
	Country           string `json:"country,omitempty"`
}

type branchEventData struct {
	TransactionID string   `json:"transaction_id,omitempty"`
	Revenue       *float64 `json:"revenue,omitempty"`
	Currency      string   `json:"currency,omitempty"`
	Description   string   `json:"description,omitempty"`
}

type branchItem struct {
	SKU      string   `json:"$sku"`
	Price    *float64 `json:"$price,omitempty"`
	Quantity int      `json:"$quantity"`
}

func (b *Branch) send(ctx context.Context, it Item) Result {
	e := it.Event
	t := &b.prod
	if e.Sandboxed() {
		if b.sandbox == nil {
			return skip(ReasonSandboxNoCreds, "sandbox event and no sandbox: block")
		}
		t = b.sandbox
	}
	name := b.eventName(e)
	if name == "" {
		return skip(ReasonNoEventName, "no Branch event name for %s", e.Type)
	}
	if id := b.Missing(e); id != "" {
		return skip("missing "+id, "event has no %s", id)
	}
	if _, bad := eventTime(e, b.now(), b.maxAge); bad != nil {
		return *bad
	}
	rev, bad := b.convert(e)
	if bad != nil {
		return *bad
	}
	ev := b.event(e, t, name, rev)
	body, err := json.Marshal(ev)
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Err: err}
	}
	u := b.base + "/v2/event/custom"
	if branchStandard(name) {
		u = b.base + "/v2/event/standard"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return Result{Outcome: Pause, Reason: ReasonConfig, Err: scrubURLError(err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "postback")
	return b.do(req, "POST "+RedactURL(u), branchVerdict, []string{t.key})
}

func (b *Branch) event(e *mapping.Event, t *branchTarget, name string, rev *mapping.Revenue) branchEvent {
	ev := branchEvent{BranchKey: t.key, Name: name}
	ud := branchUserData{
		OSVersion:         e.Identifier(mapping.IDOSVersion),
		Environment:       "FULL_APP",
		DeveloperIdentity: branchIdentity(e),
		IP:                e.Identifier(mapping.IDIP),
		UserAgent:         e.Identifier(mapping.IDUserAgent),
		Model:             e.Identifier(mapping.IDDeviceModel),
		Country:           e.Identifier(mapping.IDCountry),
	}
	if platformOf(e) == platformIOS {
		ud.OS = "iOS"
		ud.IDFA = e.Identifier(mapping.IDIDFA)
		ud.IDFV = e.Identifier(mapping.IDIDFV)
		if s, ok := mmpATT(e); ok && s > 0 {
			lat := s != 3 // only "authorized" allows tracking
			ud.LimitAdTracking = &lat
		}
	} else {
		ud.OS = "Android"
		ud.AAID = e.Identifier(mapping.IDGAID)
		ud.AndroidID = e.Identifier(mapping.IDAndroidID)
	}
	ev.UserData = ud
	custom := mmpAttributes(e)
	if e.ProductID != "" {
		custom["product_id"] = e.ProductID
	}
	// Branch takes no negative revenue: refunds (and any non-positive
	// amount) go without it.
	positive := Positive(rev)
	if branchStandard(name) {
		ed := &branchEventData{TransactionID: e.TransactionID, Description: e.ProductID}
		if positive {
			v := rev.Major()
			ed.Revenue, ed.Currency = &v, rev.Currency
		}
		ev.EventData = ed
		if e.ProductID != "" {
			item := branchItem{SKU: e.ProductID, Quantity: 1}
			if positive {
				v := rev.Major()
				item.Price = &v
			}
			ev.ContentItems = []branchItem{item}
		}
	} else {
		if e.TransactionID != "" {
			custom["transaction_id"] = e.TransactionID
		}
		if positive {
			custom["revenue"] = rev.Decimal()
			custom["currency"] = rev.Currency
		}
	}
	ev.CustomData = custom
	return ev
}

// branchVerdict reads Branch's answers.
func branchVerdict(status int, body []byte) verdict {
	text := strings.ToLower(string(body))
	switch {
	case status == http.StatusOK:
		return verdict{outcome: Delivered}
	case status == http.StatusTooManyRequests:
		return verdict{outcome: Retry, throttle: true}
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return verdict{outcome: Pause, reason: ReasonAuth}
	case status == http.StatusBadRequest && (strings.Contains(text, "branch key") || strings.Contains(text, "branch_key") || strings.Contains(text, "app id")):
		return verdict{outcome: Pause, reason: ReasonConfig}
	case status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooEarly:
		return verdict{outcome: Dead, reason: ReasonValidation}
	}
	return verdict{outcome: Classify(status)}
}
