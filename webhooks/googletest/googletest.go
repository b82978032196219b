// Package googletest provides test doubles for the Google Play source, in the
// spirit of net/http/httptest: an OIDC key server with token minting that
// stands in for Google's signing keys of Pub/Sub push tokens, a fake Android
// Publisher API, and builders for push bodies. Tests, `postback demo` and the
// load generator use them; nothing here reaches the network beyond the
// loopback servers it starts.
package googletest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// OIDC serves a JWKS like https://www.googleapis.com/oauth2/v3/certs and
// mints RS256 tokens like the ones Pub/Sub puts on push requests.
type OIDC struct {
	Server *httptest.Server
	Key    *rsa.PrivateKey
	KID    string
	// MaxAge is the Cache-Control max-age of the key set, in seconds.
	MaxAge int

	mu      sync.Mutex
	fetches int
}

// NewOIDC starts a key server with a fresh 2048-bit key. Close it when done.
func NewOIDC() (*OIDC, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	o := &OIDC{Key: key, KID: "test-key-1", MaxAge: 3600}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	return o, nil
}

// URL is the certs URL to configure as sources.google.oidc_certs_url.
func (o *OIDC) URL() string { return o.Server.URL + "/oauth2/v3/certs" }

// Close shuts the server down.
func (o *OIDC) Close() { o.Server.Close() }

// Fetches counts how often the key set was fetched.
func (o *OIDC) Fetches() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fetches
}

func (o *OIDC) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/oauth2/v3/certs" {
		http.NotFound(w, r)
		return
	}
	o.mu.Lock()
	o.fetches++
	maxAge := o.MaxAge
	o.mu.Unlock()
	pub := o.Key.PublicKey
	body, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kid": o.KID, "kty": "RSA", "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge)+", must-revalidate, no-transform")
	_, _ = w.Write(body)
}

// Claims are the claims of a push token. Zero fields are left out, so a
// test can drop any one of them.
type Claims struct {
	Audience      string
	Issuer        string
	Email         string
	EmailVerified any // true, false, "true", or nil to omit
	Subject       string
	IssuedAt      time.Time
	Expiry        time.Time
}

// PushClaims returns the claims of a valid push token issued at now.
func PushClaims(audience, serviceAccount string, now time.Time) Claims {
	return Claims{
		Audience: audience, Issuer: "https://accounts.google.com", Email: serviceAccount,
		EmailVerified: true, Subject: "113774264463038321964",
		IssuedAt: now, Expiry: now.Add(time.Hour),
	}
}

func (c Claims) payload() map[string]any {
	p := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	set("aud", c.Audience)
	set("iss", c.Issuer)
	set("email", c.Email)
	set("sub", c.Subject)
	set("azp", c.Subject)
	if c.EmailVerified != nil {
		p["email_verified"] = c.EmailVerified
	}
	if !c.IssuedAt.IsZero() {
		p["iat"] = c.IssuedAt.Unix()
	}
	if !c.Expiry.IsZero() {
		p["exp"] = c.Expiry.Unix()
	}
	return p
}

// Token mints an RS256 token signed by the served key.
func (o *OIDC) Token(c Claims) (string, error) { return Sign(o.Key, o.KID, c) }

// Sign mints an RS256 token with any key and key id (an unknown key, a
// wrong kid).
func Sign(key *rsa.PrivateKey, kid string, c Claims) (string, error) {
	header := map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid}
	signing, err := segments(header, c.payload())
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Unsigned returns a token with header alg "none" and an empty signature.
func Unsigned(kid string, c Claims) string {
	s, _ := segments(map[string]string{"alg": "none", "typ": "JWT", "kid": kid}, c.payload())
	return s + "."
}

func segments(header, payload any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p), nil
}

// PushBody wraps a developer notification (JSON bytes or any value that
// marshals to one) in a Pub/Sub push envelope, as Pub/Sub sends it.
func PushBody(messageID string, notification any, publishTime time.Time) ([]byte, error) {
	data, ok := notification.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(notification); err != nil {
			return nil, err
		}
	}
	pt := publishTime.UTC().Format(time.RFC3339Nano)
	return json.Marshal(map[string]any{
		"message": map[string]any{
			"data":      base64.StdEncoding.EncodeToString(data),
			"messageId": messageID, "message_id": messageID,
			"publishTime": pt, "publish_time": pt,
		},
		"subscription": "projects/test-project/subscriptions/play-rtdn-push",
	})
}

// SubscriptionNotification builds a subscriptionNotification message.
func SubscriptionNotification(pkg, token, subscriptionID string, notificationType int, eventTime time.Time) map[string]any {
	return map[string]any{
		"version": "1.0", "packageName": pkg, "eventTimeMillis": strconv.FormatInt(eventTime.UnixMilli(), 10),
		"subscriptionNotification": map[string]any{
			"version": "1.0", "notificationType": notificationType, "purchaseToken": token, "subscriptionId": subscriptionID,
		},
	}
}

// OneTimeNotification builds a oneTimeProductNotification message.
func OneTimeNotification(pkg, token, sku string, notificationType int, eventTime time.Time) map[string]any {
	return map[string]any{
		"version": "1.0", "packageName": pkg, "eventTimeMillis": strconv.FormatInt(eventTime.UnixMilli(), 10),
		"oneTimeProductNotification": map[string]any{
			"version": "1.0", "notificationType": notificationType, "purchaseToken": token, "sku": sku,
		},
	}
}

// VoidedNotification builds a voidedPurchaseNotification message.
func VoidedNotification(pkg, token, orderID string, productType, refundType int, eventTime time.Time) map[string]any {
	return map[string]any{
		"version": "1.0", "packageName": pkg, "eventTimeMillis": strconv.FormatInt(eventTime.UnixMilli(), 10),
		"voidedPurchaseNotification": map[string]any{
			"purchaseToken": token, "orderId": orderID, "productType": productType, "refundType": refundType,
		},
	}
}

// TestNotification builds the Play Console's test message.
func TestNotification(pkg string, eventTime time.Time) map[string]any {
	return map[string]any{
		"version": "1.0", "packageName": pkg, "eventTimeMillis": strconv.FormatInt(eventTime.UnixMilli(), 10),
		"testNotification": map[string]any{"version": "1.0"},
	}
}

// Money renders Google's Money JSON (units as a string) from micros.
func Money(micros int64, currency string) map[string]any {
	m := map[string]any{"currencyCode": currency, "units": strconv.FormatInt(micros/1_000_000, 10)}
	if n := (micros % 1_000_000) * 1000; n != 0 {
		m["nanos"] = n
	}
	return m
}

// Errorf is a helper for fixture builders that want an error with context.
func errorf(format string, args ...any) error { return fmt.Errorf("googletest: "+format, args...) }
