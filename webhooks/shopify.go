package webhooks

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/mapping"
)

// Shopify verifies and accepts Shopify webhooks (POST /webhooks/shopify).
//
// X-Shopify-Hmac-Sha256 is the base64 HMAC-SHA256 of the raw body keyed with
// the app's client secret. Every configured secret is tried (Shopify keeps
// signing with the old secret for a while after a rotation) and compared in
// constant time; a failure is a 401, as Shopify requires. The dedupe key is
// X-Shopify-Webhook-Id, stable across Shopify's retries of one delivery.
// X-Shopify-Event-Id identifies the business event and is shared by every
// subscription that receives it, and by the several topics one business
// event can fire, so it is an alternative key per topic ("event:<topic>:<id>"):
// a second subscription to the same topic is a duplicate, another topic of
// the same event is not (the mapping's deterministic ids merge those, e.g. a
// refund reported by orders/cancelled and refunds/create).
type Shopify struct {
	Deps
	// Secrets are the app's client secrets (sources.shopify.secret plus
	// sources.shopify.secrets during a rotation).
	Secrets []string
	// ShopSecrets maps a lower-case shop domain to the store's own webhook
	// key (webhooks created in the store's admin are signed with it). It is
	// tried, after the app's secrets, only for requests naming that shop.
	ShopSecrets map[string]string
	// Shops are the accepted X-Shopify-Shop-Domain values; empty accepts
	// any shop (apps installed on many shops).
	Shops []string
	// Currency is the order revenue currency: mapping.ShopifyCurrencyShop
	// (default) or mapping.ShopifyCurrencyPresentment.
	Currency string
	// AppID is the app_id of Shopify events unless a note attribute says
	// otherwise.
	AppID string
}

// Shopify-specific rejection reasons.
var (
	ErrShopifyNoHeader    = errors.New("shopify: missing X-Shopify-Hmac-Sha256 header")
	ErrShopifyBadHeader   = errors.New("shopify: X-Shopify-Hmac-Sha256 is not a base64 SHA-256 digest")
	ErrShopifySignature   = errors.New("shopify: HMAC matches no configured secret")
	ErrShopifyEmptyBody   = errors.New("shopify: empty body")
	ErrShopifyUnknownShop = errors.New("shopify: shop domain is not configured")
)

// CodeUnknownShop is the error code of a webhook from a shop that is not in
// sources.shopify.shops.
const CodeUnknownShop = "unknown_shop"

// SignShopify returns the X-Shopify-Hmac-Sha256 value of body under secret,
// as Shopify computes it (tests and the demo sign their own fixtures).
func SignShopify(body []byte, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify checks a body against its X-Shopify-Hmac-Sha256 header with the
// app's secrets. It returns the index of the secret that matched (0 is the
// primary).
func (s *Shopify) Verify(body []byte, header string) (int, error) {
	return verifyShopify(body, header, s.Secrets)
}

// secretsFor returns the secrets that may sign a request naming shop: the
// app's, then that store's own webhook key if one is configured.
func (s *Shopify) secretsFor(shop string) []string {
	key, ok := s.ShopSecrets[shop]
	if !ok || key == "" {
		return s.Secrets
	}
	return append(append(make([]string, 0, len(s.Secrets)+1), s.Secrets...), key)
}

// verifyShopify checks body against header with each of secrets.
func verifyShopify(body []byte, header string, secrets []string) (int, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return -1, ErrShopifyNoHeader
	}
	got, err := base64.StdEncoding.DecodeString(header)
	// Only the canonical spelling: the decoder alone would also take spare
	// trailing bits and embedded line breaks.
	if err != nil || len(got) != sha256.Size || base64.StdEncoding.EncodeToString(got) != header {
		return -1, ErrShopifyBadHeader
	}
	if len(body) == 0 {
		return -1, ErrShopifyEmptyBody
	}
	matched := -1
	for i, secret := range secrets {
		if secret == "" {
			continue
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		// Every secret is computed and compared, so the time taken does not
		// tell which one matched.
		if hmac.Equal(mac.Sum(nil), got) && matched < 0 {
			matched = i
		}
	}
	if matched < 0 {
		return -1, ErrShopifySignature
	}
	return matched, nil
}

// shopAllowed reports whether domain is a configured shop.
func (s *Shopify) shopAllowed(domain string) bool {
	if len(s.Shops) == 0 {
		return true
	}
	for _, shop := range s.Shops {
		if strings.EqualFold(strings.TrimSpace(shop), domain) {
			return true
		}
	}
	return false
}

// header reads a Shopify header, falling back to the unprefixed name that
// Shopify's newer "Events" deliveries use.
func header(r *http.Request, name string) string {
	if v := r.Header.Get("X-Shopify-" + name); v != "" {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(r.Header.Get("Shopify-" + name))
}

// Handle is the echo handler. It answers as soon as the notification is
// durably stored (one group commit, milliseconds), well inside Shopify's
// five-second timeout; unknown topics are stored as ignored, counted and
// answered 200 so that Shopify does not retry them.
func (s *Shopify) Handle(c echo.Context) error {
	const src = mapping.SourceShopify
	s.Metrics.Received.WithLabelValues(src).Inc()
	body, err := ReadBody(c, s.MaxBody)
	if err != nil {
		return s.Reject(src, AsError(err))
	}
	r := c.Request()
	// The shop header is not authenticated yet: it only chooses which
	// store's key may also have signed the body, and that key vouches for
	// its own shop alone.
	shop := strings.ToLower(header(r, "Shop-Domain"))
	topic, webhookID := header(r, "Topic"), header(r, "Webhook-Id")
	secrets := s.secretsFor(shop)
	if IsShopifyCompliance(topic) {
		// Erasure and disclosure requests come from Shopify itself, signed
		// with the app's secret: a store's webhook key never vouches for them.
		secrets = s.Secrets
	}
	matched, err := verifyShopify(body, header(r, "Hmac-Sha256"), secrets)
	if err != nil {
		code := CodeSignature
		if errors.Is(err, ErrShopifyNoHeader) || errors.Is(err, ErrShopifyBadHeader) {
			code = CodeUnauthorized
		}
		return s.Reject(src, Wrap(http.StatusUnauthorized, code, err.Error(), err))
	}
	if matched > 0 && matched < len(s.Secrets) {
		s.Logger.Info("shopify webhook verified with a fallback secret; finish the rotation", "secret_index", matched)
	}
	if shop == "" {
		return s.Reject(src, Errorf(http.StatusBadRequest, CodeMalformed, "missing X-Shopify-Shop-Domain header"))
	}
	if !ValidShopDomain(shop) {
		return s.Reject(src, Wrap(http.StatusBadRequest, CodeMalformed, "X-Shopify-Shop-Domain must be <name>.myshopify.com", ErrShopifyBadDomain))
	}
	if !s.shopAllowed(shop) {
		return s.Reject(src, Wrap(http.StatusForbidden, CodeUnknownShop,
			"shop "+shop+" is not in sources.shopify.shops", ErrShopifyUnknownShop))
	}
	if topic == "" || webhookID == "" {
		return s.Reject(src, Errorf(http.StatusBadRequest, CodeMalformed, "missing X-Shopify-Topic or X-Shopify-Webhook-Id header"))
	}
	if !topicRE.MatchString(topic) {
		return s.Reject(src, Wrap(http.StatusBadRequest, CodeMalformed, "X-Shopify-Topic must be <resource>/<action>", ErrShopifyBadTopic))
	}
	var probe struct {
		Test bool `json:"test"`
	}
	if !json.Valid(body) || bytes.TrimSpace(body)[0] != '{' || json.Unmarshal(body, &probe) != nil {
		return s.Reject(src, Errorf(http.StatusBadRequest, CodeMalformed, "body is not a JSON object"))
	}
	if !utf8.Valid(body) {
		return s.Reject(src, Errorf(http.StatusBadRequest, CodeMalformed, "body is not valid UTF-8"))
	}
	if err := checkShopifyBody(topic, shop, body); err != nil {
		code := CodeWrongShape
		if errors.Is(err, ErrShopifyShopMismatch) {
			code = CodeShopMismatch
		}
		return s.Reject(src, Wrap(http.StatusBadRequest, code, "body does not match X-Shopify-Topic / X-Shopify-Shop-Domain", err))
	}
	env := mapping.Production
	if probe.Test {
		env = mapping.Sandbox
	}
	mode := s.Currency
	if mode == "" {
		mode = mapping.ShopifyCurrencyShop
	}
	n := &mapping.Notification{
		Source:      src,
		Key:         webhookID,
		Type:        topic,
		AppID:       s.AppID,
		Environment: env,
		Body:        body,
		Meta: map[string]string{
			mapping.ShopifyMetaShop:     shop,
			mapping.ShopifyMetaTopic:    topic,
			mapping.ShopifyMetaCurrency: mode,
		},
	}
	if v := header(r, "API-Version"); v != "" {
		n.Meta[mapping.ShopifyMetaAPIVersion] = v
	}
	if v := header(r, "Triggered-At"); v != "" {
		n.Meta[mapping.ShopifyMetaTriggered] = v
	}
	if v := header(r, "Event-Id"); v != "" {
		n.Meta[mapping.ShopifyMetaEventID] = v
		n.AltKeys = []string{"event:" + topic + ":" + v}
	}
	n.AltKeys = append(n.AltKeys, shopifyBodyKey(topic, body))
	res, err := s.Accept(r.Context(), n)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, AckOf(res))
}
