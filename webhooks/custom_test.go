package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

const (
	apiKeyA = "pk_test_aaaaaaaaaaaaaaaaaaaaaaaa"
	apiKeyB = "pk_test_bbbbbbbbbbbbbbbbbbbbbbbb"
)

// v1 builds an echo server with the /v1 routes and the server's error shape.
func v1(h *Custom) *echo.Echo {
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			_ = c.JSON(he.Code, map[string]any{"error": map[string]any{"code": "http", "message": he.Message}})
			return
		}
		we := AsError(err)
		_ = c.JSON(we.Status, we.Body())
	}
	h.Mount(e)
	return e
}

func call(e *echo.Echo, method, path, body string, headers map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func authed(key string, extra ...string) map[string]string {
	h := map[string]string{"Authorization": "Bearer " + key}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

func errorBody(t *testing.T, rec *httptest.ResponseRecorder) ErrorBody {
	t.Helper()
	var b ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || b.Error.Code == "" {
		t.Fatalf("not an error body: %q", rec.Body.String())
	}
	return b
}

func newCustom(t *testing.T, keys ...string) (*Custom, *store.DB) {
	t.Helper()
	db := boltForTest(t)
	return NewCustom(testDeps(db, nil), db, keys, 720*time.Hour), db
}

const purchase = `{"type":"purchase","app_id":"com.example.app","app_user_id":"u-42","product_id":"gems_100",
	"revenue":{"amount":"9.99","currency":"USD"},"occurred_at":"2026-11-30T02:00:00Z",
	"identifiers":{"email":"Jon@Example.com","appsflyer_id":"1700000000000-1234567"}}`

func TestCustomAuth(t *testing.T) {
	tests := []struct {
		name       string
		keys       []string
		headers    map[string]string
		wantStatus int
		wantCode   string
	}{
		{"API off without keys", nil, authed(apiKeyA), http.StatusNotFound, CodeNotFound},
		{"missing Authorization", []string{apiKeyA}, map[string]string{}, http.StatusUnauthorized, CodeUnauthorized},
		{"wrong scheme", []string{apiKeyA}, map[string]string{"Authorization": "Basic " + apiKeyA}, http.StatusUnauthorized, CodeUnauthorized},
		{"unknown key", []string{apiKeyA}, authed("pk_test_wrong"), http.StatusUnauthorized, CodeUnauthorized},
		{"empty bearer", []string{apiKeyA}, map[string]string{"Authorization": "Bearer "}, http.StatusUnauthorized, CodeUnauthorized},
		{"prefix of a key", []string{apiKeyA}, authed(apiKeyA[:10]), http.StatusUnauthorized, CodeUnauthorized},
		{"first key", []string{apiKeyA, apiKeyB}, authed(apiKeyA), http.StatusAccepted, ""},
		{"second key", []string{apiKeyA, apiKeyB}, authed(apiKeyB), http.StatusAccepted, ""},
		{"scheme is case-insensitive", []string{apiKeyA}, map[string]string{"Authorization": "bearer " + apiKeyA}, http.StatusAccepted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, db := newCustom(t, tt.keys...)
			hdr := map[string]string{"Idempotency-Key": "k-auth"}
			for k, v := range tt.headers {
				hdr[k] = v
			}
			rec := call(v1(h), http.MethodPost, "/v1/events", purchase, hdr)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantCode != "" {
				if got := errorBody(t, rec).Error.Code; got != tt.wantCode {
					t.Errorf("code = %q, want %q", got, tt.wantCode)
				}
				if p, _ := db.Events(store.EventFilter{}); len(p.Events) != 0 {
					t.Errorf("an unauthenticated request stored events")
				}
				for _, k := range []string{apiKeyA, apiKeyB} {
					if strings.Contains(rec.Body.String(), k) {
						t.Errorf("the answer echoes an API key")
					}
				}
			}
			if tt.wantStatus == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	// The identity API shares the gate.
	h, _ := newCustom(t, apiKeyA)
	if rec := call(v1(h), http.MethodGet, "/v1/users/u-1", "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("GET /v1/users without a key: %d, want 401", rec.Code)
	}
}

func TestCustomEventAccepted(t *testing.T) {
	h, db := newCustom(t, apiKeyA)
	rec := call(v1(h), http.MethodPost, "/v1/events", purchase, authed(apiKeyA, "Idempotency-Key", "order-1001"))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	var ans EventsAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
		t.Fatal(err)
	}
	want := EventsAnswer{Status: "accepted", EventID: mapping.CustomEventID("order-1001", 0)}
	if ans.Status != want.Status || ans.EventID != want.EventID || ans.Events != nil {
		t.Errorf("answer = %+v, want %+v", ans, want)
	}
	e, err := db.Event(ans.EventID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != mapping.Purchase || e.Source != "custom" || e.Revenue == nil || e.Revenue.AmountMicros != 9_990_000 ||
		e.User.AppUserID != "u-42" || e.Identifier(mapping.IDEmailSHA256) != mapping.SHA256Hex("jon@example.com") ||
		!e.OccurredAt.Equal(time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)) {
		t.Errorf("stored event = %+v", e)
	}
	n, err := db.Notification("custom", "order-1001")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ToLower(n.Body), []byte("jon@example.com")) {
		t.Errorf("the raw email reached the inbox: %s", n.Body)
	}
}

func TestCustomBatch(t *testing.T) {
	h, db := newCustom(t, apiKeyA)
	body := `{"events":[
		{"type":"custom","name":"tutorial_complete","app_id":"com.example.app","app_user_id":"u-1"},
		{"type":"subscription_started","app_id":"com.example.app","app_user_id":"u-1","revenue":{"amount":"49.99","currency":"USD"}},
		{"type":"refund","app_id":"com.example.app","app_user_id":"u-1","revenue":{"amount":"49.99","currency":"USD"}}]}`
	rec := call(v1(h), http.MethodPost, "/v1/events", body, authed(apiKeyA, "Idempotency-Key", "batch-1"))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	var ans EventsAnswer
	_ = json.Unmarshal(rec.Body.Bytes(), &ans)
	wantTypes := []mapping.Type{mapping.Custom, mapping.SubscriptionStarted, mapping.Refund}
	if len(ans.Events) != 3 || ans.EventID != "" {
		t.Fatalf("answer = %+v, want three per-item results", ans)
	}
	for i, r := range ans.Events {
		if r.Index != i || r.Type != wantTypes[i] || r.EventID != mapping.CustomEventID("batch-1", i) {
			t.Errorf("item %d = %+v", i, r)
		}
		if _, err := db.Event(r.EventID); err != nil {
			t.Errorf("item %d not stored: %v", i, err)
		}
	}
	if ans.Events[0].Name != "tutorial_complete" {
		t.Errorf("custom name = %q", ans.Events[0].Name)
	}
	refund, _ := db.Event(ans.Events[2].EventID)
	if refund.Revenue == nil || refund.Revenue.AmountMicros != -49_990_000 {
		t.Errorf("refund revenue = %+v, want negative", refund.Revenue)
	}
}

func TestCustomIdempotency(t *testing.T) {
	h, db := newCustom(t, apiKeyA)
	e := v1(h)
	first := call(e, http.MethodPost, "/v1/events", purchase, authed(apiKeyA, "Idempotency-Key", "k-1"))
	if first.Code != http.StatusAccepted {
		t.Fatalf("first: %d %s", first.Code, first.Body)
	}
	// Retries come later: the receive time must not make them differ.
	h.Now = func() time.Time { return testNow.Add(90 * time.Second) }
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantSame   bool
	}{
		{"same body", purchase, http.StatusAccepted, true},
		{"same request with other whitespace and key order", `{"app_id":"com.example.app","type":"purchase","app_user_id":"u-42","product_id":"gems_100","revenue":{"currency":"USD","amount":"9.99"},"occurred_at":"2026-11-30T02:00:00Z","identifiers":{"appsflyer_id":"1700000000000-1234567","email":"jon@example.com"}}`, http.StatusAccepted, true},
		{"different amount", strings.Replace(purchase, "9.99", "19.99", 1), http.StatusConflict, false},
		{"different type", strings.Replace(purchase, `"purchase"`, `"subscription_started"`, 1), http.StatusConflict, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := call(e, http.MethodPost, "/v1/events", tt.body, authed(apiKeyA, "Idempotency-Key", "k-1"))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantSame {
				if rec.Body.String() != first.Body.String() {
					t.Errorf("replay answered %s, want the first answer %s", rec.Body, first.Body)
				}
				if rec.Header().Get("Idempotent-Replayed") != "true" {
					t.Errorf("replay without Idempotent-Replayed: true")
				}
			} else if got := errorBody(t, rec).Error.Code; got != CodeConflict {
				t.Errorf("code = %q, want %q", got, CodeConflict)
			}
		})
	}
	if p, _ := db.Events(store.EventFilter{Source: "custom"}); len(p.Events) != 1 {
		t.Errorf("%d events stored, want 1", len(p.Events))
	}
	// Without occurred_at, the event happened when first received, and a
	// retry a minute later is still the same request.
	noTime := `{"type":"custom","name":"level_up","app_id":"a"}`
	a := call(e, http.MethodPost, "/v1/events", noTime, authed(apiKeyA, "Idempotency-Key", "k-2"))
	h.Now = func() time.Time { return testNow.Add(3 * time.Minute) }
	b := call(e, http.MethodPost, "/v1/events", noTime, authed(apiKeyA, "Idempotency-Key", "k-2"))
	if a.Code != http.StatusAccepted || b.Code != http.StatusAccepted || a.Body.String() != b.Body.String() {
		t.Errorf("retry without occurred_at: %d %s then %d %s", a.Code, a.Body, b.Code, b.Body)
	}
	ev, _ := db.Event(mapping.CustomEventID("k-2", 0))
	if !ev.OccurredAt.Equal(testNow.Add(90 * time.Second)) {
		t.Errorf("occurred_at = %v, want the first receive time %v", ev.OccurredAt, testNow.Add(90*time.Second))
	}
}

func TestCustomConcurrentRequestsOneEvent(t *testing.T) {
	h, db := newCustom(t, apiKeyA)
	e := v1(h)
	const n = 24
	var wg sync.WaitGroup
	codes := make([]int, n)
	bodies := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := call(e, http.MethodPost, "/v1/events", purchase, authed(apiKeyA, "Idempotency-Key", "same-key"))
			codes[i], bodies[i] = rec.Code, rec.Body.String()
		}()
	}
	wg.Wait()
	for i := range n {
		if codes[i] != http.StatusAccepted || bodies[i] != bodies[0] {
			t.Errorf("request %d: %d %s; want 202 and the same answer as the others", i, codes[i], bodies[i])
		}
	}
	p, _ := db.Events(store.EventFilter{Source: "custom"})
	if len(p.Events) != 1 {
		t.Errorf("%d events from %d concurrent requests with one key, want 1", len(p.Events), n)
	}
}

func TestCustomValidationAnswers(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		headers    map[string]string
		wantFields []string
	}{
		{"missing Idempotency-Key", purchase, authed(apiKeyA), []string{"Idempotency-Key"}},
		{"Idempotency-Key with a space", purchase, authed(apiKeyA, "Idempotency-Key", "a b"), []string{"Idempotency-Key"}},
		{"Idempotency-Key too long", purchase, authed(apiKeyA, "Idempotency-Key", strings.Repeat("k", 256)), []string{"Idempotency-Key"}},
		{"every field error is listed", `{"events":[{"type":"purchase","app_id":"a","revenue":{"amount":"1.001","currency":"USD"}},{"type":"custom","app_id":"a","extra":1,"occurred_at":"2030-01-01T00:00:00Z"}]}`,
			authed(apiKeyA, "Idempotency-Key", "v-1"), []string{"events[0].revenue.amount", "events[1].extra", "events[1].name", "events[1].occurred_at"}},
		{"bad currency", `{"type":"purchase","app_id":"a","revenue":{"amount":"1.00","currency":"usdollar"}}`,
			authed(apiKeyA, "Idempotency-Key", "v-2"), []string{"revenue.currency"}},
		{"older than the retention", `{"type":"custom","name":"x","app_id":"a","occurred_at":"2026-01-01T00:00:00Z"}`,
			authed(apiKeyA, "Idempotency-Key", "v-3"), []string{"occurred_at"}},
		{"not JSON", `type=purchase`, authed(apiKeyA, "Idempotency-Key", "v-4"), []string{"body"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, db := newCustom(t, apiKeyA)
			rec := call(v1(h), http.MethodPost, "/v1/events", tt.body, tt.headers)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400: %s", rec.Code, rec.Body)
			}
			b := errorBody(t, rec)
			if b.Error.Code != CodeInvalid || b.Error.Message == "" {
				t.Errorf("error = %+v", b.Error)
			}
			var got []string
			for _, f := range b.Error.Fields {
				got = append(got, f.Field)
				if f.Message == "" {
					t.Errorf("field %s without a message", f.Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.wantFields, ",") {
				t.Errorf("fields = %v, want %v", got, tt.wantFields)
			}
			if p, _ := db.Events(store.EventFilter{}); len(p.Events) != 0 {
				t.Errorf("an invalid request stored events")
			}
		})
	}
	// A rejected request does not burn its key: fixed, it is accepted.
	h, _ := newCustom(t, apiKeyA)
	e := v1(h)
	bad := call(e, http.MethodPost, "/v1/events", `{"type":"purchase"}`, authed(apiKeyA, "Idempotency-Key", "fix-me"))
	good := call(e, http.MethodPost, "/v1/events", purchase, authed(apiKeyA, "Idempotency-Key", "fix-me"))
	if bad.Code != http.StatusBadRequest || good.Code != http.StatusAccepted {
		t.Errorf("invalid then fixed with one key: %d then %d, want 400 then 202", bad.Code, good.Code)
	}
}

func TestCustomStoreFailure(t *testing.T) {
	h := NewCustom(testDeps(&fakeIngester{err: errors.New("disk full")}, nil), nil, []string{apiKeyA}, time.Hour)
	rec := call(v1(h), http.MethodPost, "/v1/events", purchase, authed(apiKeyA, "Idempotency-Key", "k"))
	if rec.Code != http.StatusServiceUnavailable || errorBody(t, rec).Error.Code != CodeUnavailable {
		t.Errorf("status = %d %s, want 503", rec.Code, rec.Body)
	}
}

func TestUsersAPI(t *testing.T) {
	h, db := newCustom(t, apiKeyA)
	e := v1(h)
	auth := authed(apiKeyA)
	put := call(e, http.MethodPut, "/v1/users/u-42", `{"identifiers":{
		"appsflyer_id":"1700000000000-1234567","idfa":"6D92078A-8246-4BA4-AE5B-76104861E7DC","os":"iOS","att_status":"3",
		"country":"us","email":" Jon@Example.com ","phone":"+1 (650) 555-1212","external_id":"crm-7"}}`, auth)
	if put.Code != http.StatusOK {
		t.Fatalf("PUT: %d %s", put.Code, put.Body)
	}
	var u UserAnswer
	_ = json.Unmarshal(put.Body.Bytes(), &u)
	want := map[string]string{
		mapping.IDAppsFlyer: "1700000000000-1234567", mapping.IDIDFA: "6D92078A-8246-4BA4-AE5B-76104861E7DC", mapping.IDOS: "ios",
		mapping.IDATTStatus: "3", mapping.IDCountry: "US", mapping.IDExternalID: "crm-7",
		mapping.IDEmailSHA256:     mapping.SHA256Hex("jon@example.com"),
		mapping.IDPhoneSHA256:     mapping.SHA256Hex("16505551212"),
		mapping.IDPhoneE164SHA256: mapping.SHA256Hex("+16505551212"),
	}
	if u.AppUserID != "u-42" || !equalMaps(u.Identifiers, want) || u.UpdatedAt == nil {
		t.Errorf("PUT answer = %+v\nwant identifiers %v", u, want)
	}
	for _, raw := range []string{"Example.com", "example.com", "555-1212", "5551212"} {
		if strings.Contains(put.Body.String(), raw) {
			t.Errorf("raw PII %q in the answer", raw)
		}
	}
	stored, err := db.GetUser("u-42")
	if err != nil || !equalMaps(stored.Identifiers, want) {
		t.Errorf("stored = %+v, %v", stored, err)
	}

	// Merge: null removes, others are kept.
	upd := call(e, http.MethodPut, "/v1/users/u-42", `{"identifiers":{"idfa":null,"email":"","fbp":"fb.1.2.3"}}`, auth)
	u = UserAnswer{}
	if err := json.Unmarshal(upd.Body.Bytes(), &u); err != nil || upd.Code != http.StatusOK {
		t.Fatalf("merge PUT: %d %s", upd.Code, upd.Body)
	}
	if _, ok := u.Identifiers[mapping.IDIDFA]; ok || u.Identifiers[mapping.IDEmailSHA256] != "" || u.Identifiers[mapping.IDFBP] != "fb.1.2.3" || u.Identifiers[mapping.IDAppsFlyer] == "" {
		t.Errorf("after merge: %v", u.Identifiers)
	}

	get := call(e, http.MethodGet, "/v1/users/u-42", "", auth)
	if get.Code != http.StatusOK || !strings.Contains(get.Body.String(), "fb.1.2.3") {
		t.Errorf("GET: %d %s", get.Code, get.Body)
	}
	if rec := call(e, http.MethodGet, "/v1/users/nobody", "", auth); rec.Code != http.StatusNotFound || errorBody(t, rec).Error.Code != CodeNotFound {
		t.Errorf("GET unknown user: %d %s", rec.Code, rec.Body)
	}

	// An event of this user gets the stored identifiers at mapping time;
	// DELETE erases the record and scrubs them from the event.
	ev := call(e, http.MethodPost, "/v1/events", `{"type":"custom","name":"level_up","app_id":"a","app_user_id":"u-42"}`, authed(apiKeyA, "Idempotency-Key", "lvl-1"))
	if ev.Code != http.StatusAccepted {
		t.Fatalf("event: %d %s", ev.Code, ev.Body)
	}
	id := mapping.CustomEventID("lvl-1", 0)
	if got, _ := db.Event(id); got.Identifier(mapping.IDAppsFlyer) == "" {
		t.Errorf("event of u-42 lacks the stored appsflyer_id: %+v", got.User)
	}
	del := call(e, http.MethodDelete, "/v1/users/u-42", "", auth)
	if del.Code != http.StatusOK || !strings.Contains(del.Body.String(), `"events_scrubbed":1`) || !strings.Contains(del.Body.String(), `"deleted":true`) {
		t.Errorf("DELETE: %d %s", del.Code, del.Body)
	}
	if got, _ := db.Event(id); len(got.User.Identifiers) != 0 {
		t.Errorf("identifiers survive the erasure: %v", got.User.Identifiers)
	}
	if rec := call(e, http.MethodGet, "/v1/users/u-42", "", auth); rec.Code != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d", rec.Code)
	}
	if rec := call(e, http.MethodDelete, "/v1/users/u-42", "", auth); rec.Code != http.StatusOK {
		t.Errorf("second DELETE: %d, want 200 (erasure is idempotent)", rec.Code)
	}
	// Ids are path-escaped by clients.
	if rec := call(e, http.MethodPut, "/v1/users/shop%2Fexample.myshopify.com", `{"identifiers":{"ip":"203.0.113.7"}}`, auth); rec.Code != http.StatusOK ||
		!strings.Contains(rec.Body.String(), `"app_user_id":"shop/example.myshopify.com"`) {
		t.Errorf("escaped id: %d %s", rec.Code, rec.Body)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestUsersAPIValidation(t *testing.T) {
	tests := []struct {
		name, path, body string
		wantFields       []string
	}{
		{"unknown identifier", "/v1/users/u-1", `{"identifiers":{"imei":"1"}}`, []string{"identifiers.imei"}},
		{"hashed key sent directly", "/v1/users/u-1", `{"identifiers":{"email_sha256":"abc"}}`, []string{"identifiers.email_sha256"}},
		{"bad email", "/v1/users/u-1", `{"identifiers":{"email":"nope"}}`, []string{"identifiers.email"}},
		{"bad phone", "/v1/users/u-1", `{"identifiers":{"phone":"12"}}`, []string{"identifiers.phone"}},
		{"bad att_status", "/v1/users/u-1", `{"identifiers":{"att_status":"9"}}`, []string{"identifiers.att_status"}},
		{"value not a string", "/v1/users/u-1", `{"identifiers":{"idfa":5}}`, []string{"identifiers"}},
		{"value too long", "/v1/users/u-1", `{"identifiers":{"idfa":"` + strings.Repeat("x", 1025) + `"}}`, []string{"identifiers.idfa"}},
		{"empty identifiers", "/v1/users/u-1", `{"identifiers":{}}`, []string{"identifiers"}},
		{"flat body", "/v1/users/u-1", `{"idfa":"x"}`, []string{"idfa", "identifiers"}},
		{"not JSON", "/v1/users/u-1", `idfa=x`, []string{"body"}},
		{"control character in the id", "/v1/users/u%01x", `{"identifiers":{"idfa":"x"}}`, []string{"app_user_id"}},
		{"id too long", "/v1/users/" + strings.Repeat("u", 257), `{"identifiers":{"idfa":"x"}}`, []string{"app_user_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, db := newCustom(t, apiKeyA)
			rec := call(v1(h), http.MethodPut, tt.path, tt.body, authed(apiKeyA))
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400: %s", rec.Code, rec.Body)
			}
			b := errorBody(t, rec)
			var got []string
			for _, f := range b.Error.Fields {
				got = append(got, f.Field)
			}
			if b.Error.Code != CodeInvalid || strings.Join(got, ",") != strings.Join(tt.wantFields, ",") {
				t.Errorf("error = %+v, want fields %v", b.Error, tt.wantFields)
			}
			if _, err := db.GetUser("u-1"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("an invalid PUT stored something")
			}
		})
	}
}

// failingUsers is a store that is down.
type failingUsers struct{}

func (failingUsers) PutUser(context.Context, string, map[string]string) (store.User, error) {
	return store.User{}, errors.New("disk full")
}
func (failingUsers) GetUser(string) (store.User, error) { return store.User{}, errors.New("disk full") }
func (failingUsers) DeleteUser(context.Context, string) (int, error) {
	return 0, errors.New("disk full")
}

func TestUsersAPIStoreFailure(t *testing.T) {
	h := NewCustom(testDeps(&fakeIngester{}, nil), failingUsers{}, []string{apiKeyA}, time.Hour)
	e := v1(h)
	for _, m := range []string{http.MethodPut, http.MethodGet, http.MethodDelete} {
		rec := call(e, m, "/v1/users/u-1", `{"identifiers":{"idfa":"x"}}`, authed(apiKeyA))
		if rec.Code != http.StatusServiceUnavailable || errorBody(t, rec).Error.Code != CodeUnavailable {
			t.Errorf("%s: %d %s, want 503", m, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), "disk full") {
			t.Errorf("%s: internal error text leaked: %s", m, rec.Body)
		}
	}
}

// Issue 16, item 15: events_scrubbed means what the README says: the
// user's events this call erased. Four events mapped before any PUT carry
// no identifier but name the user: 4, and their notifications' bodies are
// erased. Four mapped after a PUT: 4. A repeated DELETE: 0.
func TestDeleteUserEventsScrubbedMeaning(t *testing.T) {
	h, db := newCustom(t, apiKeyA)
	e := v1(h)
	auth := authed(apiKeyA)
	post := func(user, key string) string {
		t.Helper()
		rec := call(e, http.MethodPost, "/v1/events", `{"type":"custom","name":"level_up","app_id":"a","app_user_id":"`+user+`"}`, authed(apiKeyA, "Idempotency-Key", key))
		if rec.Code != http.StatusAccepted {
			t.Fatalf("event: %d %s", rec.Code, rec.Body)
		}
		return mapping.CustomEventID(key, 0)
	}
	var before []string
	for i := range 4 {
		before = append(before, post("u-early", "early-"+strconv.Itoa(i)))
	}
	if rec := call(e, http.MethodDelete, "/v1/users/u-early", "", auth); !strings.Contains(rec.Body.String(), `"events_scrubbed":4`) {
		t.Errorf("events without identifiers: %s", rec.Body)
	}
	for _, id := range before {
		ev, err := db.Event(id)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := db.Notification(mapping.SourceCustom, ev.SourceEventID); err != nil || n.Body != nil {
			t.Errorf("notification of %s keeps its body after the erasure: %v", id, err)
		}
	}
	if rec := call(e, http.MethodPut, "/v1/users/u-late", `{"identifiers":{"idfa":"6D92078A-8246-4BA4-AE5B-76104861E7DC"}}`, auth); rec.Code != http.StatusOK {
		t.Fatalf("PUT: %d %s", rec.Code, rec.Body)
	}
	for i := range 4 {
		post("u-late", "late-"+strconv.Itoa(i))
	}
	if rec := call(e, http.MethodDelete, "/v1/users/u-late", "", auth); !strings.Contains(rec.Body.String(), `"events_scrubbed":4`) {
		t.Errorf("events with identifiers: %s", rec.Body)
	}
	if rec := call(e, http.MethodDelete, "/v1/users/u-late", "", auth); !strings.Contains(rec.Body.String(), `"events_scrubbed":0`) {
		t.Errorf("repeated DELETE: %s", rec.Body)
	}
}
