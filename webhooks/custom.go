package webhooks

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// Users is what the identity API needs from the store.
type Users interface {
	PutUser(ctx context.Context, appUserID string, ids map[string]string) (store.User, error)
	GetUser(appUserID string) (store.User, error)
	DeleteUser(ctx context.Context, appUserID string) (int, error)
}

// Custom serves the app's own API: server-side custom events
// (POST /v1/events) and the identity store (PUT/GET/DELETE
// /v1/users/:app_user_id). Every request needs "Authorization: Bearer <key>"
// with one of the configured API keys; with no key configured the whole /v1
// API answers 404 (it is off, not broken).
//
// Events are idempotent on the Idempotency-Key header: the request is stored
// as a notification of source "custom" under that key, holding the
// canonical (validated, hashed) request. The same key with the same request
// answers the first result again; with a different request it is a 409. The
// store's single writer serializes concurrent requests with one key, so
// exactly one of them creates the events. Keys are shared by every API key.
type Custom struct {
	Deps
	Users     Users
	APIKeys   []string
	Retention time.Duration // storage.retention: older occurred_at is rejected
	// Throttle holds back addresses that keep presenting wrong keys (nil:
	// no throttling).
	Throttle *Throttle
	keys     atomic.Pointer[TokenSet]
}

// NewCustom builds the /v1 handlers. retention is storage.retention.
func NewCustom(d Deps, users Users, apiKeys []string, retention time.Duration) *Custom {
	c := &Custom{Deps: d, Users: users, Retention: retention}
	for _, k := range apiKeys {
		if k = strings.TrimSpace(k); k != "" {
			c.APIKeys = append(c.APIKeys, k)
		}
	}
	c.SetAPIKeys(c.APIKeys)
	return c
}

// SetAPIKeys replaces the accepted API keys (a configuration reload); an
// empty list turns /v1 off.
func (h *Custom) SetAPIKeys(apiKeys []string) {
	var keys []string
	for _, k := range apiKeys {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	ts := NewTokenSet(keys...)
	h.keys.Store(&ts)
}

// Mount registers the /v1 routes on e.
func (h *Custom) Mount(e *echo.Echo) {
	g := e.Group("/v1", h.Auth)
	g.POST("/events", h.Events)
	g.PUT("/users/:id", h.PutUser)
	g.GET("/users/:id", h.GetUser)
	g.DELETE("/users/:id", h.DeleteUser)
}

// ErrAPIKey reports a missing or unknown API key.
var ErrAPIKey = errors.New("custom: missing or unknown API key")

// Auth is the middleware that checks the bearer API key (BearerToken, the
// admin API's parser). Keys are compared as SHA-256 digests in constant
// time, against every configured key. An address that keeps failing is
// held back (429) before its guess is even checked.
func (h *Custom) Auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		keys := h.keys.Load()
		if keys == nil || keys.Len() == 0 {
			return Errorf(http.StatusNotFound, CodeNotFound, "the /v1 API is off: set api_keys in config.yaml (e.g. api_keys: [\"${POSTBACK_API_KEY}\"])")
		}
		addr := c.RealIP()
		if wait, ok := h.Throttle.Allow("api", addr); !ok {
			return Throttled(c, wait)
		}
		key, ok := BearerToken(c.Request().Header.Get("Authorization"))
		if !ok || !keys.Match(key) {
			h.Throttle.Fail("api", addr)
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="postback"`)
			return Wrap(http.StatusUnauthorized, CodeUnauthorized, "missing or unknown API key (Authorization: Bearer <key>)", ErrAPIKey)
		}
		h.Throttle.Succeed(addr)
		return next(c)
	}
}

// respond writes an error with field errors itself (the shared error shape
// plus "fields"), and returns other errors to the server's error handler.
func respond(c echo.Context, err *Error) error {
	if len(err.Fields) > 0 {
		return c.JSON(err.Status, err.Body())
	}
	return err
}

func invalid(fields []mapping.FieldError) *Error {
	e := Errorf(http.StatusBadRequest, CodeInvalid, "%d invalid field(s)", len(fields))
	for _, f := range fields {
		e.Fields = append(e.Fields, FieldError{Field: f.Field, Message: f.Message})
	}
	if len(fields) == 1 {
		e.Message = fields[0].Field + ": " + fields[0].Message
	}
	return e
}

// EventResult is the answer for one accepted event.
type EventResult struct {
	Index   int          `json:"index"`
	EventID string       `json:"event_id"`
	Type    mapping.Type `json:"type"`
	Name    string       `json:"name,omitempty"`
}

// EventsAnswer is the 202 body of POST /v1/events: event_id for a single
// event, events for a batch.
type EventsAnswer struct {
	Status  string        `json:"status"` // accepted
	EventID string        `json:"event_id,omitempty"`
	Events  []EventResult `json:"events,omitempty"`
}

// validKey reports whether an Idempotency-Key is usable: 1 to 255 printable
// ASCII characters.
func validKey(k string) bool {
	if k == "" || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// Events handles POST /v1/events.
func (h *Custom) Events(c echo.Context) error {
	const src = mapping.SourceCustom
	h.Metrics.Received.WithLabelValues(src).Inc()
	body, err := ReadBody(c, h.MaxBody)
	if err != nil {
		return h.Reject(src, AsError(err))
	}
	key := strings.TrimSpace(c.Request().Header.Get("Idempotency-Key"))
	if !validKey(key) {
		return respond(c, h.Reject(src, invalid([]mapping.FieldError{{Field: "Idempotency-Key",
			Message: "header is required: 1 to 255 printable ASCII characters, unique per logical request (e.g. a UUID)"}})))
	}
	// A key that is or holds an email or phone is stored as its hash (the
	// same for a retry, so idempotency holds).
	key = mapping.ScrubValue(key)
	// encoding/json turns every invalid byte into U+FFFD, so "u\xff" and
	// "u\xfe" would decode as one user: refuse such bodies outright.
	if !utf8.Valid(body) {
		return respond(c, h.Reject(src, invalid([]mapping.FieldError{{Field: "body", Message: "must be valid UTF-8"}})))
	}
	req, fields := mapping.ParseCustom(body, h.Now(), h.Retention)
	if fields != nil {
		return respond(c, h.Reject(src, invalid(fields)))
	}
	canonical, err := json.Marshal(req)
	if err != nil {
		return Wrap(http.StatusInternalServerError, CodeInternal, "internal error", err)
	}
	// The store scrubs PII from every body; scrubbing here first makes the
	// stored body exactly the one whose digest is compared on a retry.
	canonical = mapping.ScrubPII(canonical)
	digest := sha256.Sum256(canonical)
	sum := hex.EncodeToString(digest[:])
	first := req.Events[0]
	n := &mapping.Notification{
		Source:      src,
		Key:         key,
		Type:        string(first.Type),
		AppID:       first.AppID,
		Environment: first.Environment,
		Body:        canonical,
		Meta:        map[string]string{"body_sha256": sum},
	}
	res, err := h.Accept(c.Request().Context(), n)
	if err != nil {
		return err
	}
	if res.Duplicate {
		stored := ""
		if res.Existing != nil {
			stored = res.Existing.Meta["body_sha256"]
			if stored == "" {
				d := sha256.Sum256(res.Existing.Body)
				stored = hex.EncodeToString(d[:])
			}
		}
		if subtle.ConstantTimeCompare([]byte(stored), []byte(sum)) != 1 {
			return Errorf(http.StatusConflict, CodeConflict, "this Idempotency-Key was already used with a different request; use a new key for a new request")
		}
		c.Response().Header().Set("Idempotent-Replayed", "true")
	} else if res.Status == mapping.StatusFailed {
		return Wrap(http.StatusInternalServerError, CodeInternal, "internal error", errors.New(res.Reason))
	}
	ans := EventsAnswer{Status: "accepted"}
	for i, e := range req.Events {
		ans.Events = append(ans.Events, EventResult{Index: i, EventID: mapping.CustomEventID(key, i), Type: e.Type, Name: e.Name})
	}
	if !req.Batch {
		ans.EventID, ans.Events = ans.Events[0].EventID, nil
	}
	return c.JSON(http.StatusAccepted, ans)
}

// UserAnswer is the body of the identity API's answers.
type UserAnswer struct {
	AppUserID      string            `json:"app_user_id"`
	Identifiers    map[string]string `json:"identifiers,omitempty"`
	UpdatedAt      *time.Time        `json:"updated_at,omitempty"`
	Deleted        bool              `json:"deleted,omitempty"`
	EventsScrubbed *int              `json:"events_scrubbed,omitempty"`
}

// userID reads and checks the :id path parameter.
func userID(c echo.Context) (string, *Error) {
	id := c.Param("id")
	if c.Request().URL.RawPath != "" {
		if u, err := url.PathUnescape(id); err == nil {
			id = u
		}
	}
	switch {
	case id == "" || len(id) > 256 || !utf8.ValidString(id):
		return "", invalid([]mapping.FieldError{{Field: "app_user_id", Message: "must be 1 to 256 bytes of UTF-8"}})
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return "", invalid([]mapping.FieldError{{Field: "app_user_id", Message: "must not contain control characters"}})
	}
	// An app_user_id that is an email or phone is kept as its hash, as in
	// event bodies, so the two still match.
	return mapping.ScrubValue(id), nil
}

func storeError(err error) *Error {
	if errors.Is(err, store.ErrNotFound) {
		return Wrap(http.StatusNotFound, CodeNotFound, "no identifiers are stored for this app_user_id", err)
	}
	return Wrap(http.StatusServiceUnavailable, CodeUnavailable, "temporarily unable to reach the store; retry later", err)
}

// parseIdentifiers validates a PUT body: {"identifiers": {name: value}}. A
// null or empty value removes that identifier.
func parseIdentifiers(body []byte) (map[string]string, []mapping.FieldError) {
	if !utf8.Valid(body) {
		return nil, []mapping.FieldError{{Field: "body", Message: "must be valid UTF-8"}}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, []mapping.FieldError{{Field: "body", Message: `must be a JSON object {"identifiers": {"appsflyer_id": "...", "email": "..."}}`}}
	}
	var fields []mapping.FieldError
	for k := range top {
		if k != "identifiers" {
			fields = append(fields, mapping.FieldError{Field: k, Message: "unknown field"})
		}
	}
	var raw map[string]*string
	if err := json.Unmarshal(top["identifiers"], &raw); err != nil {
		return nil, append(fields, mapping.FieldError{Field: "identifiers", Message: "must be an object of identifier names to string values (null removes one)"})
	}
	if len(raw) == 0 {
		return nil, append(fields, mapping.FieldError{Field: "identifiers", Message: "is required and must hold at least one identifier"})
	}
	ids := map[string]string{}
	for _, k := range sortedNames(raw) {
		v := ""
		if raw[k] != nil {
			v = strings.TrimSpace(*raw[k])
		}
		if len(v) > 1024 {
			fields = append(fields, mapping.FieldError{Field: "identifiers." + k, Message: "is longer than 1024 bytes"})
			continue
		}
		if msg := mapping.ValidateIdentifier(k, v); msg != "" {
			fields = append(fields, mapping.FieldError{Field: "identifiers." + k, Message: msg})
			continue
		}
		switch {
		case v != "" && k != "email" && k != "phone":
			// An email or phone given as another identifier (external_id)
			// is stored hashed all the same.
			mapping.SetIdentifierValue(ids, k, mapping.ScrubValue(v))
		case v != "":
			mapping.SetIdentifierValue(ids, k, v)
		case k == "email":
			ids[mapping.IDEmailSHA256] = ""
		case k == "phone":
			ids[mapping.IDPhoneSHA256], ids[mapping.IDPhoneE164SHA256] = "", ""
		default:
			ids[k] = ""
		}
	}
	if len(fields) > 0 {
		return nil, fields
	}
	return ids, nil
}

func sortedNames(m map[string]*string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func userAnswer(u store.User) UserAnswer {
	t := u.UpdatedAt
	return UserAnswer{AppUserID: u.AppUserID, Identifiers: u.Identifiers, UpdatedAt: &t}
}

// PutUser handles PUT /v1/users/:id: it merges the identifiers into the
// user's record (emails and phones hashed first; a raw value never reaches
// the store) and releases deliveries waiting for one of them.
func (h *Custom) PutUser(c echo.Context) error {
	id, werr := userID(c)
	if werr != nil {
		return respond(c, werr)
	}
	body, err := ReadBody(c, h.MaxBody)
	if err != nil {
		return err
	}
	ids, fields := parseIdentifiers(body)
	if fields != nil {
		return respond(c, invalid(fields))
	}
	u, err := h.Users.PutUser(c.Request().Context(), id, ids)
	if err != nil {
		return storeError(err)
	}
	h.Logger.Info("user identifiers updated", "identifiers", len(ids))
	return c.JSON(http.StatusOK, userAnswer(u))
}

// GetUser handles GET /v1/users/:id.
func (h *Custom) GetUser(c echo.Context) error {
	id, werr := userID(c)
	if werr != nil {
		return respond(c, werr)
	}
	u, err := h.Users.GetUser(id)
	if err != nil {
		return storeError(err)
	}
	return c.JSON(http.StatusOK, userAnswer(u))
}

// DeleteUser handles DELETE /v1/users/:id: a privacy erasure of the user's
// identifiers, also scrubbed from the user's stored events. Deleting an
// unknown user is not an error (erasure is idempotent).
func (h *Custom) DeleteUser(c echo.Context) error {
	id, werr := userID(c)
	if werr != nil {
		return respond(c, werr)
	}
	n, err := h.Users.DeleteUser(c.Request().Context(), id)
	if err != nil {
		return storeError(err)
	}
	h.Logger.Info("user erased", "events_scrubbed", n)
	return c.JSON(http.StatusOK, UserAnswer{AppUserID: id, Deleted: true, EventsScrubbed: &n})
}
