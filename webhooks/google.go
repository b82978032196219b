package webhooks

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/postback/postback/mapping"
)

// GoogleCertsURL is where Google publishes the keys that sign Pub/Sub push
// OIDC tokens (JWKS). sources.google.oidc_certs_url overrides it for tests.
const GoogleCertsURL = "https://www.googleapis.com/oauth2/v3/certs"

// Google push-token rejection reasons. Every one but ErrGoogleKeysUnavailable
// is answered 401 (Pub/Sub retries, and a misconfiguration shows up as a
// growing backlog rather than lost notifications).
var (
	ErrGoogleNoToken          = errors.New("google: missing Authorization: Bearer token")
	ErrGoogleMalformedToken   = errors.New("google: malformed or unsigned token")
	ErrGoogleUnknownKey       = errors.New("google: token signed by an unknown key")
	ErrGoogleSignature        = errors.New("google: token signature or algorithm invalid")
	ErrGoogleExpired          = errors.New("google: token expired or not yet valid")
	ErrGoogleAudience         = errors.New("google: token audience is not sources.google.push_audience")
	ErrGoogleIssuer           = errors.New("google: token issuer is not accounts.google.com")
	ErrGoogleEmail            = errors.New("google: token email is not sources.google.push_service_account")
	ErrGoogleEmailUnverified  = errors.New("google: token email_verified is not true")
	ErrGoogleKeysUnavailable  = errors.New("google: signing keys could not be fetched")
	errGoogleCertsBadResponse = errors.New("google: certs endpoint answered something that is not a key set")
)

// GoogleKeys fetches and caches Google's OIDC signing keys. The key set is
// kept for as long as the response's Cache-Control max-age allows (minus
// Age); a token naming an unknown key id triggers at most one refetch per
// MinRefresh, so a key rotation is picked up without letting forged key ids
// hammer Google. When a refetch fails, the keys already held stay usable.
type GoogleKeys struct {
	URL        string       // default GoogleCertsURL
	Client     *http.Client // default a client with a 10s timeout
	Now        func() time.Time
	MinRefresh time.Duration // default 1 minute

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	expires time.Time
	fetched time.Time
}

// Key returns the RSA key with the given id.
func (k *GoogleKeys) Key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if k.keys != nil && now.Before(k.expires) {
		if key, ok := k.keys[kid]; ok {
			return key, nil
		}
		minRefresh := k.MinRefresh
		if minRefresh <= 0 {
			minRefresh = time.Minute
		}
		if now.Sub(k.fetched) < minRefresh {
			return nil, ErrGoogleUnknownKey
		}
	}
	if err := k.refresh(ctx, now); err != nil {
		if key, ok := k.keys[kid]; ok {
			return key, nil // stale but still what Google signed with
		}
		return nil, err
	}
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	return nil, ErrGoogleUnknownKey
}

func (k *GoogleKeys) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func (k *GoogleKeys) refresh(ctx context.Context, now time.Time) error {
	url := k.URL
	if url == "" {
		url = GoogleCertsURL
	}
	client := k.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	k.fetched = now
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrGoogleKeysUnavailable, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrGoogleKeysUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrGoogleKeysUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HTTP %d", ErrGoogleKeysUnavailable, resp.StatusCode)
	}
	keys, err := parseGoogleKeys(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrGoogleKeysUnavailable, err)
	}
	k.keys = keys
	k.expires = now.Add(cacheLifetime(resp.Header))
	return nil
}

// cacheLifetime reads Cache-Control max-age minus Age; no max-age (or
// no-store/no-cache) means the set is not reused.
func cacheLifetime(h http.Header) time.Duration {
	var maxAge time.Duration
	for _, d := range strings.Split(h.Get("Cache-Control"), ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "no-store" || d == "no-cache" {
			return 0
		}
		if v, ok := strings.CutPrefix(d, "max-age="); ok {
			if s, err := strconv.Atoi(v); err == nil && s > 0 {
				maxAge = time.Duration(s) * time.Second
			}
		}
	}
	if age, err := strconv.Atoi(h.Get("Age")); err == nil && age > 0 {
		maxAge -= time.Duration(age) * time.Second
	}
	if maxAge < 0 {
		return 0
	}
	return maxAge
}

// parseGoogleKeys reads a JWKS ({"keys":[{kid,kty,n,e}]}) or the legacy
// x509 form ({"kid": "-----BEGIN CERTIFICATE-----..."}).
func parseGoogleKeys(body []byte) (map[string]*rsa.PublicKey, error) {
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
			Kty string `json:"kty"`
			Alg string `json:"alg"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	out := map[string]*rsa.PublicKey{}
	if err := json.Unmarshal(body, &jwks); err == nil && jwks.Keys != nil {
		for _, k := range jwks.Keys {
			if k.Kty != "RSA" || k.Kid == "" || (k.Alg != "" && k.Alg != "RS256") {
				continue
			}
			n, err1 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.N, "="))
			e, err2 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.E, "="))
			if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
				continue
			}
			exp := int(new(big.Int).SetBytes(e).Int64())
			if exp < 3 {
				continue
			}
			out[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
		}
		if len(out) == 0 {
			return nil, errGoogleCertsBadResponse
		}
		return out, nil
	}
	var certs map[string]string
	if err := json.Unmarshal(body, &certs); err != nil {
		return nil, errGoogleCertsBadResponse
	}
	for kid, p := range certs {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		if pub, ok := c.PublicKey.(*rsa.PublicKey); ok {
			out[kid] = pub
		}
	}
	if len(out) == 0 {
		return nil, errGoogleCertsBadResponse
	}
	return out, nil
}

// GoogleClaims are the claims of a Pub/Sub push token that Postback checks.
type GoogleClaims struct {
	jwt.RegisteredClaims
	Email           string `json:"email"`
	EmailVerified   any    `json:"email_verified"` // a boolean; "true" is accepted too
	AuthorizedParty string `json:"azp,omitempty"`
}

// GoogleVerifier checks the OIDC token Pub/Sub puts on each push request:
// RS256 signature by one of Google's keys, aud equal to Audience, iss
// accounts.google.com (either spelling), email equal to ServiceAccount with
// email_verified true, and exp in the future. Google's own idtoken
// validator checks only the signature, aud and exp; the issuer and email
// checks are what stop a token that anyone can mint for their own service
// account from being accepted.
type GoogleVerifier struct {
	Keys           *GoogleKeys
	Audience       string
	ServiceAccount string
	Now            func() time.Time
	Leeway         time.Duration // clock skew allowed on exp/iat; default 30s
}

// Verify checks an Authorization header value and returns the token's claims.
func (v *GoogleVerifier) Verify(ctx context.Context, authorization string) (*GoogleClaims, error) {
	scheme, raw, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	raw = strings.TrimSpace(raw)
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return nil, ErrGoogleNoToken
	}
	if strings.Count(raw, ".") != 2 || strings.ContainsAny(raw, " ,") {
		return nil, ErrGoogleMalformedToken
	}
	leeway := v.Leeway
	if leeway <= 0 {
		leeway = 30 * time.Second
	}
	now := v.Now
	if now == nil {
		now = time.Now
	}
	var keyErr error
	claims := &GoogleClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, err := v.Keys.Key(ctx, kid)
		keyErr = err
		return key, err
	},
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(now),
		jwt.WithLeeway(leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithAudience(v.Audience),
	)
	switch {
	case err == nil:
	case keyErr != nil && errors.Is(keyErr, ErrGoogleKeysUnavailable):
		return nil, keyErr
	case keyErr != nil:
		return nil, ErrGoogleUnknownKey
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, ErrGoogleMalformedToken
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, ErrGoogleSignature
	case errors.Is(err, jwt.ErrTokenInvalidAudience), len(claims.Audience) == 0 && errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, ErrGoogleAudience
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, ErrGoogleExpired
	default:
		return nil, ErrGoogleMalformedToken
	}
	if v.Audience == "" {
		return nil, ErrGoogleAudience // never accept a token for any audience
	}
	if claims.Issuer != "accounts.google.com" && claims.Issuer != "https://accounts.google.com" {
		return nil, ErrGoogleIssuer
	}
	if v.ServiceAccount == "" || subtle.ConstantTimeCompare([]byte(strings.ToLower(claims.Email)), []byte(strings.ToLower(v.ServiceAccount))) != 1 {
		return nil, ErrGoogleEmail
	}
	switch ev := claims.EmailVerified.(type) {
	case bool:
		if !ev {
			return nil, ErrGoogleEmailUnverified
		}
	case string:
		if ev != "true" {
			return nil, ErrGoogleEmailUnverified
		}
	default:
		return nil, ErrGoogleEmailUnverified
	}
	return claims, nil
}

// Google accepts Google Play real-time developer notifications delivered by
// a Cloud Pub/Sub push subscription with authentication (POST
// /webhooks/google).
//
// The push token is verified before anything is read from the body; a
// missing or bad token is a 401 and nothing is stored. An authentic message
// is committed to the inbox and acknowledged (204) at once: notifications
// that need the Play API are stored as "enriching" and a GoogleEnricher
// completes them, so a Play API outage delays events but never makes
// Pub/Sub redeliver or lose them. Authentic messages that cannot be used (a
// package that is not configured, data that is not a developer notification)
// are acknowledged and recorded as ignored, never NACKed forever.
type Google struct {
	Deps
	Verifier *GoogleVerifier
	// Packages are the accepted package names (sources.google.packages).
	Packages []string
	// Wake, when set, is called after a notification waiting for the Play
	// API was stored (GoogleEnricher.Nudge), so it is enriched at once.
	Wake func()
}

// pushEnvelope is the wrapped Pub/Sub push body.
type pushEnvelope struct {
	Message *struct {
		Data             string             `json:"data"`
		Attributes       map[string]string  `json:"attributes"`
		MessageID        mapping.FlexString `json:"messageId"`
		MessageIDSnake   mapping.FlexString `json:"message_id"`
		PublishTime      string             `json:"publishTime"`
		PublishTimeSnake string             `json:"publish_time"`
		OrderingKey      string             `json:"orderingKey"`
	} `json:"message"`
	Subscription    string          `json:"subscription"`
	DeliveryAttempt mapping.FlexInt `json:"deliveryAttempt"`
}

// Handle is the echo handler.
func (g *Google) Handle(c echo.Context) error {
	const src = mapping.SourceGoogle
	g.Metrics.Received.WithLabelValues(src).Inc()
	body, err := ReadBody(c, g.MaxBody)
	if err != nil {
		return g.Reject(src, AsError(err))
	}
	ctx := c.Request().Context()
	if _, err := g.Verifier.Verify(ctx, c.Request().Header.Get(echo.HeaderAuthorization)); err != nil {
		if errors.Is(err, ErrGoogleKeysUnavailable) {
			return g.Reject(src, Wrap(http.StatusServiceUnavailable, CodeUnavailable, "could not fetch Google's signing keys; retry later", err))
		}
		return g.Reject(src, Wrap(http.StatusUnauthorized, CodeUnauthorized, err.Error(), err))
	}
	n := g.notification(body)
	res, err := g.Accept(ctx, n)
	if err != nil {
		return err
	}
	if !res.Duplicate && res.Status == mapping.StatusEnriching && g.Wake != nil {
		g.Wake()
	}
	return c.NoContent(http.StatusNoContent)
}

// notification builds the inbox item for an authenticated push body.
func (g *Google) notification(body []byte) *mapping.Notification {
	n := &mapping.Notification{Source: mapping.SourceGoogle, Body: body, Meta: map[string]string{}}
	var env pushEnvelope
	if err := json.Unmarshal(body, &env); err != nil || env.Message == nil {
		sum := sha256.Sum256(body)
		n.Key, n.Type = "body:"+hex.EncodeToString(sum[:]), "INVALID"
		n.Meta["ignore"] = "not a Pub/Sub push envelope"
		return n
	}
	msg := env.Message
	id := string(msg.MessageID)
	if id == "" {
		id = string(msg.MessageIDSnake)
	}
	if id == "" {
		sum := sha256.Sum256(body)
		n.Key, n.Type = "body:"+hex.EncodeToString(sum[:]), "INVALID"
		n.Meta["ignore"] = "Pub/Sub message without messageId"
		return n
	}
	n.Key = id
	n.Meta["message_id"] = id
	if pt := msg.PublishTime; pt != "" {
		n.Meta["publish_time"] = pt
	} else if msg.PublishTimeSnake != "" {
		n.Meta["publish_time"] = msg.PublishTimeSnake
	}
	if env.Subscription != "" {
		n.Meta["subscription"] = env.Subscription
	}
	if env.DeliveryAttempt > 0 {
		n.Meta["delivery_attempt"] = strconv.FormatInt(int64(env.DeliveryAttempt), 10)
	}
	for k, v := range msg.Attributes {
		n.Meta["attr."+k] = v
	}
	data, err := base64.StdEncoding.DecodeString(msg.Data)
	if err != nil {
		data, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(msg.Data, "="))
	}
	if err != nil || len(data) == 0 {
		n.Type = "INVALID"
		n.Meta["ignore"] = "message.data is not base64 or is empty"
		return n
	}
	n.Body = data
	dn, err := mapping.ParseGoogleNotification(data)
	if err != nil {
		// Kept as sent: the mapping records it as ignored, and a later
		// version that knows the shape can reprocess it.
		n.Type = "UNKNOWN"
		return n
	}
	n.Type, n.AppID = dn.TypeName(), dn.PackageName
	if k := dn.DedupeKey(); k != "" {
		n.AltKeys = []string{k}
	}
	if !g.knownPackage(dn.PackageName) {
		n.Meta["ignore"] = "package " + dn.PackageName + " is not in sources.google.packages"
		return n
	}
	n.Deferred = dn.NeedsPlayAPI()
	return n
}

func (g *Google) knownPackage(p string) bool {
	for _, k := range g.Packages {
		if k == p {
			return true
		}
	}
	return false
}
