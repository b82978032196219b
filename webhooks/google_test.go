package webhooks

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/api/androidpublisher/v3"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/play"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks/googletest"
)

const (
	gAudience = "https://postback.example.com/webhooks/google"
	gAccount  = "pubsub-push@project.iam.gserviceaccount.com"
	gPackage  = "com.example.app"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newOIDC(t *testing.T) *googletest.OIDC {
	t.Helper()
	o, err := googletest.NewOIDC()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o
}

func newGoogle(st Ingester, o *googletest.OIDC, now func() time.Time) *Google {
	d := testDeps(st, nil)
	d.Now = now
	return &Google{
		Deps:     d,
		Packages: []string{gPackage},
		Verifier: &GoogleVerifier{
			Keys:     &GoogleKeys{URL: o.URL(), Now: now},
			Audience: gAudience, ServiceAccount: gAccount, Now: now,
		},
	}
}

func mint(t *testing.T, o *googletest.OIDC, c googletest.Claims) string {
	t.Helper()
	tok, err := o.Token(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func pushBody(t *testing.T, id string, n any) []byte {
	t.Helper()
	b, err := googletest.PushBody(id, n, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGooglePushToken(t *testing.T) {
	o := newOIDC(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := googletest.PushClaims(gAudience, gAccount, testNow.Add(-time.Minute))
	with := func(f func(c *googletest.Claims)) googletest.Claims { c := valid; f(&c); return c }
	signed := func(c googletest.Claims) string { return "Bearer " + mint(t, o, c) }
	cases := []struct {
		name   string
		header string
		want   error // nil: accepted
	}{
		{"valid", signed(valid), nil},
		{"valid short issuer", signed(with(func(c *googletest.Claims) { c.Issuer = "accounts.google.com" })), nil},
		{"valid lower-case scheme", "bearer " + mint(t, o, valid), nil},
		{"email_verified as string", signed(with(func(c *googletest.Claims) { c.EmailVerified = "true" })), nil},
		{"expired", signed(with(func(c *googletest.Claims) { c.IssuedAt, c.Expiry = testNow.Add(-2*time.Hour), testNow.Add(-time.Hour) })), ErrGoogleExpired},
		{"no expiry", signed(with(func(c *googletest.Claims) { c.Expiry = time.Time{} })), ErrGoogleExpired},
		{"issued in the future", signed(with(func(c *googletest.Claims) { c.IssuedAt = testNow.Add(time.Hour) })), ErrGoogleExpired},
		{"wrong audience", signed(with(func(c *googletest.Claims) { c.Audience = "https://evil.example.com/push" })), ErrGoogleAudience},
		{"no audience", signed(with(func(c *googletest.Claims) { c.Audience = "" })), ErrGoogleAudience},
		{"wrong issuer", signed(with(func(c *googletest.Claims) { c.Issuer = "https://evil.example.com" })), ErrGoogleIssuer},
		{"wrong service account", signed(with(func(c *googletest.Claims) { c.Email = "attacker@evil-project.iam.gserviceaccount.com" })), ErrGoogleEmail},
		{"no email", signed(with(func(c *googletest.Claims) { c.Email = "" })), ErrGoogleEmail},
		{"email not verified", signed(with(func(c *googletest.Claims) { c.EmailVerified = false })), ErrGoogleEmailUnverified},
		{"email_verified missing", signed(with(func(c *googletest.Claims) { c.EmailVerified = nil })), ErrGoogleEmailUnverified},
		{"unknown key same kid", "Bearer " + must(googletest.Sign(other, o.KID, valid)), ErrGoogleSignature},
		{"unknown key id", "Bearer " + must(googletest.Sign(other, "rotated-away", valid)), ErrGoogleUnknownKey},
		{"alg none", "Bearer " + googletest.Unsigned(o.KID, valid), ErrGoogleSignature},
		{"tampered payload", "Bearer " + tamper(mint(t, o, valid)), ErrGoogleSignature},
		{"signature in non-canonical base64", "Bearer " + func() string {
			p := strings.Split(mint(t, o, valid), ".")
			return p[0] + "." + p[1] + "." + spareBits(t, p[2])
		}(), ErrGoogleMalformedToken},
		{"missing header", "", ErrGoogleNoToken},
		{"basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("a:b")), ErrGoogleNoToken},
		{"bearer without token", "Bearer ", ErrGoogleNoToken},
		{"not a jwt", "Bearer abc.def", ErrGoogleMalformedToken},
		{"garbage segments", "Bearer !!.??.**", ErrGoogleMalformedToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeIngester{}
			g := newGoogle(st, o, func() time.Time { return testNow })
			_, err := g.Verifier.Verify(context.Background(), tc.header)
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			headers := map[string]string{}
			if tc.header != "" {
				headers["Authorization"] = tc.header
			}
			rec := post(t, g.Handle, pushBody(t, "1001", googletest.TestNotification(gPackage, testNow)), headers)
			if tc.want == nil {
				if rec.Code != http.StatusNoContent || st.count() != 1 {
					t.Errorf("got %d with %d stored, want 204 and 1", rec.Code, st.count())
				}
				return
			}
			if rec.Code != http.StatusUnauthorized || errCode(t, rec) != CodeUnauthorized {
				t.Errorf("got %d %s, want 401 %s", rec.Code, rec.Body.String(), CodeUnauthorized)
			}
			if st.count() != 0 {
				t.Errorf("a rejected push stored %d notifications", st.count())
			}
		})
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// tamper changes the payload of a signed token without re-signing it.
func tamper(tok string) string {
	p := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(p[1])
	payload = []byte(strings.Replace(string(payload), gAccount, "pubsub-push@projecu.iam.gserviceaccount.com", 1))
	return p[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + p[2]
}

func TestGoogleKeysCaching(t *testing.T) {
	o := newOIDC(t)
	o.MaxAge = 600
	clk := &clock{t: testNow}
	st := &fakeIngester{}
	g := newGoogle(st, o, clk.Now)
	verify := func() error {
		_, err := g.Verifier.Verify(context.Background(), "Bearer "+mint(t, o, googletest.PushClaims(gAudience, gAccount, clk.Now())))
		return err
	}
	for i := 0; i < 3; i++ {
		if err := verify(); err != nil {
			t.Fatal(err)
		}
	}
	if n := o.Fetches(); n != 1 {
		t.Errorf("fetched the key set %d times within max-age, want 1", n)
	}
	clk.Add(11 * time.Minute)
	if err := verify(); err != nil {
		t.Fatal(err)
	}
	if n := o.Fetches(); n != 2 {
		t.Errorf("fetched %d times after max-age passed, want 2", n)
	}
	// Unknown key ids refetch at most once per MinRefresh.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	forged := "Bearer " + must(googletest.Sign(other, "new-kid", googletest.PushClaims(gAudience, gAccount, clk.Now())))
	for i := 0; i < 5; i++ {
		if _, err := g.Verifier.Verify(context.Background(), forged); !errors.Is(err, ErrGoogleUnknownKey) {
			t.Fatalf("got %v, want ErrGoogleUnknownKey", err)
		}
	}
	if n := o.Fetches(); n != 2 {
		t.Errorf("unknown key ids caused %d fetches, want none within a minute of the last", n-2)
	}
	// Keys server down: cached keys stay usable; without them the push is
	// a 503 (our problem, Pub/Sub retries) and nothing is stored.
	o.Close()
	clk.Add(11 * time.Minute)
	if err := verify(); err != nil {
		t.Errorf("stale keys not used while the key server is down: %v", err)
	}
	cold := newGoogle(st, o, clk.Now)
	rec := post(t, cold.Handle, pushBody(t, "1", googletest.TestNotification(gPackage, testNow)), map[string]string{
		"Authorization": "Bearer " + mint(t, o, googletest.PushClaims(gAudience, gAccount, clk.Now())),
	})
	if rec.Code != http.StatusServiceUnavailable || st.count() != 0 {
		t.Errorf("got %d with %d stored, want 503 and nothing stored", rec.Code, st.count())
	}
}

func TestCacheLifetime(t *testing.T) {
	cases := map[string]struct {
		cc, age string
		want    time.Duration
	}{
		"google's":      {"public, max-age=19204, must-revalidate, no-transform", "", 19204 * time.Second},
		"minus age":     {"max-age=100", "40", 60 * time.Second},
		"age too large": {"max-age=100", "400", 0},
		"no-store":      {"no-store, max-age=100", "", 0},
		"none":          {"", "", 0},
		"garbage":       {"max-age=abc", "", 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := http.Header{}
			h.Set("Cache-Control", tc.cc)
			if tc.age != "" {
				h.Set("Age", tc.age)
			}
			if got := cacheLifetime(h); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseGoogleKeys(t *testing.T) {
	cases := map[string]string{
		"not json":      `<html>`,
		"no usable key": `{"keys":[{"kid":"a","kty":"EC","n":"x","e":"AQAB"}]}`,
		"short modulus": `{"keys":[{"kid":"a","kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		"bad base64":    `{"keys":[{"kid":"a","kty":"RSA","n":"***","e":"AQAB"}]}`,
		"empty":         `{}`,
		"bad pem":       `{"a":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := parseGoogleKeys([]byte(body)); err == nil {
				t.Error("accepted a key set without a usable RSA key")
			}
		})
	}
}

func TestGoogleEnvelope(t *testing.T) {
	o := newOIDC(t)
	sub := googletest.SubscriptionNotification(gPackage, "tok-1", "pro_monthly", 4, testNow)
	data := func(s string) []byte {
		return []byte(`{"message":{"data":"` + base64.StdEncoding.EncodeToString([]byte(s)) + `","messageId":"m-1","publishTime":"2026-11-30T03:00:00Z"},"subscription":"projects/p/subscriptions/s"}`)
	}
	cases := []struct {
		name     string
		body     []byte
		key      string
		typ      string
		deferred bool
		alt      []string
		ignore   string
		meta     map[string]string
	}{
		{name: "subscription purchase", body: []byte(`{"message":{"data":"` + base64.StdEncoding.EncodeToString(must2(sub)) + `","messageId":"m-1","message_id":"m-1","publishTime":"2026-11-30T03:00:00Z","attributes":{"k":"v"}},"subscription":"projects/p/subscriptions/s","deliveryAttempt":3}`),
			key: "m-1", typ: "SUBSCRIPTION_PURCHASED", deferred: true, alt: []string{"tok-1|SUBSCRIPTION_PURCHASED|1796007600000"},
			meta: map[string]string{"message_id": "m-1", "publish_time": "2026-11-30T03:00:00Z", "subscription": "projects/p/subscriptions/s", "delivery_attempt": "3", "attr.k": "v"}},
		{name: "numbers as strings and strings as numbers", body: data(`{"packageName":"com.example.app","eventTimeMillis":1796007600000,"subscriptionNotification":{"notificationType":"2","purchaseToken":"tok-1"}}`),
			key: "m-1", typ: "SUBSCRIPTION_RENEWED", deferred: true, alt: []string{"tok-1|SUBSCRIPTION_RENEWED|1796007600000"}},
		{name: "snake case message id", body: []byte(`{"message":{"data":"` + base64.StdEncoding.EncodeToString(must2(sub)) + `","message_id":"m-9"}}`),
			key: "m-9", typ: "SUBSCRIPTION_PURCHASED", deferred: true, alt: []string{"tok-1|SUBSCRIPTION_PURCHASED|1796007600000"}},
		{name: "unpadded base64", body: []byte(`{"message":{"data":"` + base64.RawStdEncoding.EncodeToString(must2(sub)) + `","messageId":"m-1"}}`),
			key: "m-1", typ: "SUBSCRIPTION_PURCHASED", deferred: true, alt: []string{"tok-1|SUBSCRIPTION_PURCHASED|1796007600000"}},
		{name: "test notification", body: pushBody(t, "m-1", googletest.TestNotification(gPackage, testNow)), key: "m-1", typ: "TEST"},
		{name: "code without event is not enriched", body: pushBody(t, "m-1", googletest.SubscriptionNotification(gPackage, "t", "p", 9, testNow)), key: "m-1", typ: "SUBSCRIPTION_DEFERRED", alt: []string{"t|SUBSCRIPTION_DEFERRED|1796007600000"}},
		{name: "voided purchase", body: pushBody(t, "m-1", googletest.VoidedNotification(gPackage, "t", "GPA.1", 2, 1, testNow)), key: "m-1", typ: "VOIDED_PURCHASE", deferred: true, alt: []string{"voided:GPA.1:full"}},
		{name: "unknown package", body: pushBody(t, "m-1", googletest.SubscriptionNotification("com.other", "t", "p", 4, testNow)), key: "m-1", typ: "SUBSCRIPTION_PURCHASED", alt: []string{"t|SUBSCRIPTION_PURCHASED|1796007600000"}, ignore: "package com.other is not in sources.google.packages"},
		{name: "bad base64", body: []byte(`{"message":{"data":"%%%not base64","messageId":"m-1"}}`), key: "m-1", typ: "INVALID", ignore: "message.data is not base64 or is empty"},
		{name: "empty data", body: []byte(`{"message":{"data":"","messageId":"m-1"}}`), key: "m-1", typ: "INVALID", ignore: "message.data is not base64 or is empty"},
		{name: "bad json in data", body: data(`{"packageName":`), key: "m-1", typ: "UNKNOWN"},
		{name: "two notification kinds", body: data(`{"packageName":"com.example.app","testNotification":{},"subscriptionNotification":{"notificationType":4,"purchaseToken":"t"}}`), key: "m-1", typ: "UNKNOWN"},
		{name: "unknown kind", body: data(`{"packageName":"com.example.app","pendingRefundReviewNotification":{}}`), key: "m-1", typ: "UNKNOWN"},
		{name: "envelope not json", body: []byte(`hello`), key: "body:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", typ: "INVALID", ignore: "not a Pub/Sub push envelope"},
		{name: "envelope without messageId", body: []byte(`{"message":{"data":"e30="}}`), key: "body:", typ: "INVALID", ignore: "Pub/Sub message without messageId"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeIngester{}
			g := newGoogle(st, o, func() time.Time { return testNow })
			woke := 0
			g.Wake = func() { woke++ }
			rec := post(t, g.Handle, tc.body, map[string]string{"Authorization": "Bearer " + mint(t, o, googletest.PushClaims(gAudience, gAccount, testNow))})
			if rec.Code != http.StatusNoContent || st.count() != 1 {
				t.Fatalf("got %d with %d stored, want 204 and 1", rec.Code, st.count())
			}
			n := st.got[0]
			if !strings.HasPrefix(n.Key, tc.key) || n.Type != tc.typ || n.Deferred != tc.deferred || n.Meta["ignore"] != tc.ignore {
				t.Errorf("got key %q type %q deferred %t ignore %q, want %q %q %t %q", n.Key, n.Type, n.Deferred, n.Meta["ignore"], tc.key, tc.typ, tc.deferred, tc.ignore)
			}
			if strings.Join(n.AltKeys, ",") != strings.Join(tc.alt, ",") {
				t.Errorf("alt keys %q, want %q", n.AltKeys, tc.alt)
			}
			for k, v := range tc.meta {
				if n.Meta[k] != v {
					t.Errorf("meta %s = %q, want %q", k, n.Meta[k], v)
				}
			}
			// The fake store answers "mapped": only a real enriching result wakes the worker.
			if woke != 0 {
				t.Errorf("woke the enricher %d times for a mapped item", woke)
			}
		})
	}
}

func must2(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestGoogleStoreFailureAndSize(t *testing.T) {
	o := newOIDC(t)
	auth := map[string]string{"Authorization": "Bearer " + mint(t, o, googletest.PushClaims(gAudience, gAccount, testNow))}
	st := &fakeIngester{err: errors.New("disk full")}
	rec := post(t, newGoogle(st, o, func() time.Time { return testNow }).Handle, pushBody(t, "m", googletest.TestNotification(gPackage, testNow)), auth)
	if rec.Code != http.StatusServiceUnavailable || errCode(t, rec) != CodeUnavailable {
		t.Errorf("store failure: got %d %s, want 503 %s", rec.Code, rec.Body.String(), CodeUnavailable)
	}
	g := newGoogle(&fakeIngester{}, o, func() time.Time { return testNow })
	g.MaxBody = 1024
	rec = post(t, g.Handle, []byte(`{"message":{"data":"`+strings.Repeat("A", 2048)+`"}}`), auth)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize: got %d, want 413", rec.Code)
	}
}

// e2e is a gateway slice: the Google handler and enricher on a real BoltDB,
// with the fake Android Publisher behind a real play.Client.
type e2e struct {
	t        *testing.T
	db       *store.DB
	pub      *googletest.Publisher
	oidc     *googletest.OIDC
	handler  *Google
	enricher *GoogleEnricher
	api      *play.Client
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "postback.db"), &store.Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pub := googletest.NewPublisher()
	t.Cleanup(pub.Close)
	api, err := play.New(context.Background(), play.Options{Endpoint: pub.URL()})
	if err != nil {
		t.Fatal(err)
	}
	o := newOIDC(t)
	h := newGoogle(db, o, func() time.Time { return testNow })
	en := NewGoogleEnricher(db, api, GoogleEnricherOptions{Logger: h.Logger, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
	h.Wake = en.Nudge
	return &e2e{t: t, db: db, pub: pub, oidc: o, handler: h, enricher: en, api: api}
}

func (x *e2e) push(id string, n any) {
	x.t.Helper()
	rec := post(x.t, x.handler.Handle, pushBody(x.t, id, n), map[string]string{"Authorization": "Bearer " + mint(x.t, x.oidc, googletest.PushClaims(gAudience, gAccount, testNow))})
	if rec.Code != http.StatusNoContent {
		x.t.Fatalf("push %s: got %d %s, want 204", id, rec.Code, rec.Body.String())
	}
}

func (x *e2e) drain() {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := x.enricher.Drain(ctx); err != nil {
		x.t.Fatalf("drain: %v", err)
	}
}

func (x *e2e) events() []mapping.Event {
	x.t.Helper()
	p, err := x.db.Events(store.EventFilter{Source: mapping.SourceGoogle, Limit: 100})
	if err != nil {
		x.t.Fatal(err)
	}
	// In the order they happened.
	sort.Slice(p.Events, func(i, j int) bool {
		a, b := p.Events[i], p.Events[j]
		if !a.OccurredAt.Equal(b.OccurredAt) {
			return a.OccurredAt.Before(b.OccurredAt)
		}
		return a.TransactionID < b.TransactionID
	})
	return p.Events
}

func money(micros int64, cur string) *androidpublisher.Money {
	return &androidpublisher.Money{CurrencyCode: cur, Units: micros / 1_000_000, Nanos: (micros % 1_000_000) * 1000}
}

// subscription builds a SubscriptionPurchaseV2 with the generated client
// types, so the fixtures have exactly Google's field names.
func subscription(orderID string, trial bool) *androidpublisher.SubscriptionPurchaseV2 {
	phase := &androidpublisher.OfferPhase{BasePrice: &androidpublisher.BasePriceOfferPhase{}}
	if trial {
		phase = &androidpublisher.OfferPhase{FreeTrial: &androidpublisher.FreeTrialOfferPhase{}}
	}
	return &androidpublisher.SubscriptionPurchaseV2{
		Kind: "androidpublisher#subscriptionPurchaseV2", RegionCode: "DE", StartTime: "2026-11-01T00:00:00Z",
		SubscriptionState:          "SUBSCRIPTION_STATE_ACTIVE",
		ExternalAccountIdentifiers: &androidpublisher.ExternalAccountIdentifiers{ObfuscatedExternalAccountId: "user-1"},
		LineItems: []*androidpublisher.SubscriptionPurchaseLineItem{{
			ProductId: "pro_monthly", ExpiryTime: "2026-12-08T00:00:00Z", LatestSuccessfulOrderId: orderID,
			AutoRenewingPlan: &androidpublisher.AutoRenewingPlan{AutoRenewEnabled: true, RecurringPrice: money(4_990_000, "EUR")},
			OfferDetails:     &androidpublisher.OfferDetails{BasePlanId: "monthly", OfferId: "trial"},
			OfferPhase:       phase,
		}},
	}
}

func order(orderID, phase string, total *androidpublisher.Money) *androidpublisher.Order {
	d := &androidpublisher.OfferPhaseDetails{BaseDetails: &androidpublisher.BaseDetails{}}
	if phase == "FREE_TRIAL" {
		d = &androidpublisher.OfferPhaseDetails{FreeTrialDetails: &androidpublisher.FreeTrialDetails{}}
	}
	return &androidpublisher.Order{
		OrderId: orderID, State: "PROCESSED", Total: total, CreateTime: "2026-11-01T00:00:00Z",
		LineItems: []*androidpublisher.LineItem{{ProductId: "pro_monthly", Total: total,
			SubscriptionDetails: &androidpublisher.SubscriptionDetails{BasePlanId: "monthly", OfferPhase: phase, OfferPhaseDetails: d}}},
	}
}

func TestGoogleTrialThenRenewal(t *testing.T) {
	x := newE2E(t)
	x.pub.SetSubscription(gPackage, "tok-A", subscription("GPA.3375-6103-0197-44778", true))
	x.pub.SetOrder(gPackage, "GPA.3375-6103-0197-44778", order("GPA.3375-6103-0197-44778", "FREE_TRIAL", money(0, "EUR")))
	x.push("100", googletest.SubscriptionNotification(gPackage, "tok-A", "pro_monthly", 4, testNow))
	x.drain()
	x.pub.SetSubscription(gPackage, "tok-A", subscription("GPA.3375-6103-0197-44778..0", false))
	x.pub.SetOrder(gPackage, "GPA.3375-6103-0197-44778..0", order("GPA.3375-6103-0197-44778..0", "BASE", money(4_990_000, "EUR")))
	x.push("101", googletest.SubscriptionNotification(gPackage, "tok-A", "pro_monthly", 2, testNow.Add(7*24*time.Hour)))
	x.drain()
	evs := x.events()
	if len(evs) != 2 || evs[0].Type != mapping.TrialStarted || evs[1].Type != mapping.TrialConverted {
		t.Fatalf("got %d events %v, want trial_started then trial_converted", len(evs), evs)
	}
	if r := evs[1].Revenue; r == nil || *r != (mapping.Revenue{AmountMicros: 4_990_000, Currency: "EUR"}) {
		t.Errorf("trial_converted revenue %+v, want EUR 4.99", r)
	}
	if evs[0].Revenue != nil || evs[1].User.AppUserID != "user-1" || evs[1].Environment != mapping.Production {
		t.Errorf("got %+v", evs)
	}
}

func TestGoogleOutageDelaysNeverDuplicates(t *testing.T) {
	x := newE2E(t)
	x.pub.SetSubscription(gPackage, "tok-B", subscription("GPA.1", false))
	x.pub.SetOrder(gPackage, "GPA.1", order("GPA.1", "BASE", money(9_990_000, "USD")))
	x.pub.FailNext(googletest.OpSubscription, http.StatusServiceUnavailable, http.StatusServiceUnavailable)
	// Pub/Sub is acknowledged before the Play API is called at all.
	x.push("200", googletest.SubscriptionNotification(gPackage, "tok-B", "pro_monthly", 4, testNow))
	if n, err := x.db.Notification(mapping.SourceGoogle, "200"); err != nil || n.Status != mapping.StatusEnriching {
		t.Fatalf("after the push: %+v, %v; want the item stored as enriching", n, err)
	}
	if c := len(x.pub.Calls()); c != 0 {
		t.Fatalf("the push handler called the Play API %d times", c)
	}
	first := x.enricher.Pass(context.Background())
	if first.Failed != 1 || len(x.events()) != 0 {
		t.Fatalf("first pass: %+v, %d events; want one failure and no event", first, len(x.events()))
	}
	// The same message redelivered while the API is down: acknowledged, not stored twice.
	x.push("200", googletest.SubscriptionNotification(gPackage, "tok-B", "pro_monthly", 4, testNow))
	x.drain()
	// And once more after the event exists, under a new message id.
	x.push("201", googletest.SubscriptionNotification(gPackage, "tok-B", "pro_monthly", 4, testNow))
	x.drain()
	evs := x.events()
	if len(evs) != 1 || evs[0].Type != mapping.SubscriptionStarted || evs[0].Revenue == nil || evs[0].Revenue.AmountMicros != 9_990_000 {
		t.Fatalf("got %+v, want one subscription_started with USD 9.99", evs)
	}
	if n := x.pub.Count(googletest.OpSubscription); n != 3 {
		t.Errorf("subscriptionsv2.get called %d times, want 3 (503, 503, 200)", n)
	}
	if n, _ := x.db.Notification(mapping.SourceGoogle, "201"); n != nil {
		t.Errorf("the redelivery under a new message id was stored: %+v", n)
	}
}

func TestGoogleNotFoundIsFinal(t *testing.T) {
	x := newE2E(t)
	x.pub.FailNext(googletest.OpSubscription, http.StatusGone)
	x.push("300", googletest.SubscriptionNotification(gPackage, "tok-gone", "pro_monthly", 13, testNow))
	x.drain()
	n, err := x.db.Notification(mapping.SourceGoogle, "300")
	if err != nil || n.Status != mapping.StatusIgnored || !strings.Contains(n.Reason, "410") {
		t.Fatalf("got %+v, %v; want ignored for 410", n, err)
	}
	if c := x.pub.Count(googletest.OpSubscription); c != 1 {
		t.Errorf("retried a 410 %d times", c-1)
	}
}

func TestGoogleRejectedIsRetried(t *testing.T) {
	x := newE2E(t)
	x.pub.SetSubscription(gPackage, "tok-C", subscription("GPA.2", false))
	x.pub.FailNext(googletest.OpSubscription, http.StatusForbidden, http.StatusTooManyRequests)
	x.pub.FailNext(googletest.OpOrder, http.StatusNotFound)
	x.push("400", googletest.SubscriptionNotification(gPackage, "tok-C", "pro_monthly", 4, testNow))
	x.drain()
	evs := x.events()
	if len(evs) != 1 || evs[0].Revenue != nil {
		t.Fatalf("got %+v; want one event without revenue (order not found)", evs)
	}
	n, _ := x.db.Notification(mapping.SourceGoogle, "400")
	if !strings.Contains(string(n.Enriched), `"missing":["order"]`) {
		t.Errorf("enrichment %s does not record the missing order", n.Enriched)
	}
}

func TestGoogleOneTimeProduct(t *testing.T) {
	x := newE2E(t)
	pt := int64(0)
	x.pub.SetProduct(gPackage, "coins", "otp-1", &androidpublisher.ProductPurchase{OrderId: "GPA.7", ProductId: "coins", PurchaseType: &pt, Quantity: 1, ObfuscatedExternalAccountId: "user-9"})
	x.pub.SetOrder(gPackage, "GPA.7", &androidpublisher.Order{OrderId: "GPA.7", Total: money(230_000_000, "JPY"),
		LineItems: []*androidpublisher.LineItem{{ProductId: "coins", OneTimePurchaseDetails: &androidpublisher.OneTimePurchaseDetails{Quantity: 1}}}})
	x.push("500", googletest.OneTimeNotification(gPackage, "otp-1", "coins", 1, testNow))
	x.drain()
	evs := x.events()
	if len(evs) != 1 || evs[0].Type != mapping.Purchase || evs[0].Environment != mapping.Sandbox || *evs[0].Revenue != (mapping.Revenue{AmountMicros: 230_000_000, Currency: "JPY"}) {
		t.Fatalf("got %+v, want one sandbox purchase of JPY 230", evs)
	}
}

func TestGoogleReconcile(t *testing.T) {
	x := newE2E(t)
	refunded := order("GPA.10", "BASE", money(4_990_000, "EUR"))
	refunded.OrderHistory = &androidpublisher.OrderHistory{RefundEvent: &androidpublisher.RefundEvent{RefundDetails: &androidpublisher.RefundDetails{Total: money(4_990_000, "EUR")}}}
	x.pub.SetOrder(gPackage, "GPA.10", refunded)
	other := order("GPA.11", "BASE", money(4_990_000, "EUR"))
	other.OrderHistory = refunded.OrderHistory
	x.pub.SetOrder(gPackage, "GPA.11", other)
	x.pub.SetSubscription(gPackage, "tok-10", subscription("GPA.10", false))
	x.pub.SetSubscription(gPackage, "tok-11", subscription("GPA.11", false))
	voidedAt := testNow.Add(-48 * time.Hour)
	for _, v := range []*androidpublisher.VoidedPurchase{
		{PurchaseToken: "tok-10", OrderId: "GPA.10", VoidedTimeMillis: voidedAt.UnixMilli(), VoidedReason: 1},
		{PurchaseToken: "tok-11", OrderId: "GPA.11", VoidedTimeMillis: voidedAt.UnixMilli() + 1, VoidedSource: 2, VoidedReason: 7},
		{PurchaseToken: "tok-12", OrderId: "GPA.12", VoidedTimeMillis: testNow.Add(-40 * 24 * time.Hour).UnixMilli()},
	} {
		x.pub.AddVoided(gPackage, v.VoidedTimeMillis, v)
	}
	// RTDN delivered GPA.10's refund; the sweep must find only GPA.11.
	x.push("600", googletest.VoidedNotification(gPackage, "tok-10", "GPA.10", 1, 1, voidedAt))
	x.drain()
	opts := play.ReconcileOptions{Packages: []string{gPackage}, Since: testNow.Add(-72 * time.Hour), Now: func() time.Time { return testNow }}
	r, err := play.Reconcile(context.Background(), x.api, x.db, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Listed != 2 || r.New != 1 || r.Known != 1 || r.Clamped {
		t.Errorf("first sweep: %+v, want 2 listed, 1 new, 1 known", r)
	}
	x.drain()
	r, err = play.Reconcile(context.Background(), x.api, x.db, opts)
	if err != nil || r.New != 0 || r.Known != 2 {
		t.Errorf("second sweep: %+v, %v; want nothing new", r, err)
	}
	x.drain()
	evs := x.events()
	if len(evs) != 2 {
		t.Fatalf("got %d events, want one refund per order: %+v", len(evs), evs)
	}
	for _, e := range evs {
		if e.Type != mapping.Refund || e.Revenue == nil || e.Revenue.AmountMicros != -4_990_000 {
			t.Errorf("got %s %+v, want refund EUR -4.99", e.Type, e.Revenue)
		}
	}
	if evs[1].TransactionID != "GPA.11" || evs[1].Attributes["voided_reason"] != "chargeback" || evs[1].Attributes["voided_source"] != "google" {
		t.Errorf("reconciled refund: %+v", evs[1])
	}
	// A window older than Google keeps is clamped to 30 days.
	r, err = play.Reconcile(context.Background(), x.api, x.db, play.ReconcileOptions{Packages: []string{gPackage}, Since: testNow.Add(-90 * 24 * time.Hour), Now: func() time.Time { return testNow }})
	if err != nil || !r.Clamped || r.Listed != 2 {
		t.Errorf("old window: %+v, %v", r, err)
	}
	// Errors: empty window, API failure.
	if _, err := play.Reconcile(context.Background(), x.api, x.db, play.ReconcileOptions{Packages: []string{gPackage}, Since: testNow.Add(time.Hour), Now: func() time.Time { return testNow }}); !errors.Is(err, play.ErrReconcileWindow) {
		t.Errorf("future window: got %v, want ErrReconcileWindow", err)
	}
	x.pub.FailNext(googletest.OpVoided, http.StatusForbidden)
	if _, err := play.Reconcile(context.Background(), x.api, x.db, opts); !errors.Is(err, play.ErrRejected) {
		t.Errorf("API failure: got %v, want ErrRejected", err)
	}
}
