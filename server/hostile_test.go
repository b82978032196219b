package server

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	dto "github.com/prometheus/client_model/go"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/config"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
	"github.com/postback/postback/webhooks/appletest"
)

const (
	hostileShopifySecret = "shpss_hostile_test_secret_0123456789"
	hostileStoreKey      = "hostile-store-admin-webhook-key-0123456789" // signs the store's admin-created webhooks
	hostileAPIKey        = "hostile-api-key-0123456789abcdef"
	hostileBundle        = "com.example.app"
	hostileAppAppleID    = 1234567890
	hostileMaxBody       = 64 << 10
)

// hostileGateway starts a gateway with Stripe, Shopify, Apple (trusting
// only pki's root) and the /v1 API enabled and a small body cap.
func hostileGateway(t *testing.T, pki *appletest.PKI) *testGateway {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root.der")
	if err := os.WriteFile(root, pki.RootDER(), 0o600); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 1s, max_body_bytes: %d}
storage: {path: %q}
admin: {token: %q}
api_keys: [%q]
sources:
  apple:
    enabled: true
    apps: [{bundle_id: %s, app_apple_id: %d}]
    environments: [production, sandbox]
    root_certificates: [%q]
  google: {enabled: false}
  shopify: {enabled: true, secret: %q, app_id: %s, shop_secrets: {hostile.myshopify.com: %q}}
  stripe: {enabled: true, secrets: [%q], app_id: %s}
`, hostileMaxBody, filepath.Join(dir, "postback.db"), e2eAdminToken, hostileAPIKey, hostileBundle, hostileAppAppleID, root,
		hostileShopifySecret, hostileBundle, hostileStoreKey, e2eStripeSecret, hostileBundle)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return startGateway(t, cfg, nil)
}

// appleNotification is a decoded App Store notification for the test app.
func appleNotification(uuid string, signed time.Time) map[string]any {
	return map[string]any{
		"notificationType": "TEST",
		"notificationUUID": uuid,
		"version":          "2.0",
		"signedDate":       signed.UnixMilli(),
		"data": map[string]any{
			"bundleId": hostileBundle, "appAppleId": hostileAppAppleID, "environment": "Production",
		},
	}
}

func appleBody(jws string) []byte {
	b, _ := json.Marshal(map[string]string{"signedPayload": jws})
	return b
}

func stripeSigned(body []byte, at time.Time) map[string]string {
	return map[string]string{"Stripe-Signature": webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: e2eStripeSecret, Timestamp: at}).Header}
}

func shopifySigned(body []byte, id string) map[string]string {
	return map[string]string{
		"X-Shopify-Hmac-Sha256": webhooks.SignShopify(body, hostileShopifySecret),
		"X-Shopify-Topic":       "orders/paid",
		"X-Shopify-Webhook-Id":  id,
		"X-Shopify-Shop-Domain": "hostile.myshopify.com",
	}
}

func apiHeaders(key string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + hostileAPIKey, "Idempotency-Key": key, "Content-Type": "application/json"}
}

// send posts body and returns the status and the error code of the answer.
func send(t *testing.T, url string, body []byte, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb webhooks.ErrorBody
	_ = json.Unmarshal(raw, &eb)
	return resp.StatusCode, eb.Error.Code
}

// nested is JSON nested depth levels deep.
func nested(depth int) []byte {
	return []byte(strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth))
}

// TestHostileInputs posts forged, replayed, oversize and malformed input
// to every enabled source of a real gateway: each is answered with the
// documented 4xx and nothing reaches the inbox or the events.
func TestHostileInputs(t *testing.T) {
	pki := appletest.NewPKI(t)
	foreign := appletest.NewPKI(t, appletest.WithName("Foreign"))
	tg := hostileGateway(t, pki)
	now := time.Now()
	leafPub, err := x509MarshalPKIX(pki)
	if err != nil {
		t.Fatal(err)
	}
	appleNote := appleNotification("11111111-2222-4333-8444-555555555555", now.Add(-time.Minute))
	stale := stripeEvent("evt_hostile_stale")
	oversize := bytes.Repeat([]byte("a"), hostileMaxBody+1)
	oversizeJSON := []byte(`{"id":"evt_big","pad":"` + strings.Repeat("x", hostileMaxBody) + `"}`)
	deep := nested(10000)
	badUTF8 := []byte("{\"id\":\"evt_\xff\xfe\",\"object\":\"event\",\"type\":\"invoice.paid\"}")

	tests := []struct {
		name    string
		path    string
		body    []byte
		headers map[string]string
		status  int
		code    string
		key     [2]string // source, key that must not be in the inbox
	}{
		{"stripe stale signature (replay)", "/webhooks/stripe", stale, stripeSigned(stale, now.Add(-time.Hour)), 400, webhooks.CodeStale, [2]string{"stripe", "evt_hostile_stale"}},
		{"stripe signature from the future", "/webhooks/stripe", stale, stripeSigned(stale, now.Add(time.Hour)), 400, webhooks.CodeStale, [2]string{"stripe", "evt_hostile_stale"}},
		{"stripe garbage header", "/webhooks/stripe", stale, map[string]string{"Stripe-Signature": "garbage"}, 400, "", [2]string{"stripe", "evt_hostile_stale"}},
		{"stripe no header", "/webhooks/stripe", stale, nil, 400, "", [2]string{"stripe", "evt_hostile_stale"}},
		{"stripe oversize", "/webhooks/stripe", oversizeJSON, stripeSigned(oversizeJSON, now), 413, "", [2]string{"stripe", "evt_big"}},
		{"stripe nested 10000 deep", "/webhooks/stripe", deep, stripeSigned(deep, now), 400, "", [2]string{}},
		{"stripe invalid UTF-8, forged", "/webhooks/stripe", badUTF8, map[string]string{"Stripe-Signature": "t=" + fmt.Sprint(now.Unix()) + ",v1=" + strings.Repeat("0", 64)}, 400, "", [2]string{"stripe", "evt_\xff\xfe"}},
		{"shopify bad HMAC", "/webhooks/shopify", []byte(`{"id":1}`), map[string]string{"X-Shopify-Hmac-Sha256": webhooks.SignShopify([]byte(`{"id":2}`), hostileShopifySecret), "X-Shopify-Topic": "orders/paid", "X-Shopify-Webhook-Id": "wh-bad"}, 401, "", [2]string{"shopify", "wh-bad"}},
		{"shopify oversize", "/webhooks/shopify", oversize, shopifySigned(oversize, "wh-big"), 413, "", [2]string{"shopify", "wh-big"}},
		{"shopify store key claiming another shop", "/webhooks/shopify", []byte(`{"id":3}`), map[string]string{"X-Shopify-Hmac-Sha256": webhooks.SignShopify([]byte(`{"id":3}`), hostileStoreKey), "X-Shopify-Topic": "orders/paid", "X-Shopify-Webhook-Id": "wh-other-shop", "X-Shopify-Shop-Domain": "other.myshopify.com"}, 401, webhooks.CodeSignature, [2]string{"shopify", "wh-other-shop"}},
		{"apple alg none", "/webhooks/apple", appleBody(pki.Sign(appleNote, appletest.JWS{Alg: "none", Sign: func([]byte) []byte { return nil }})), nil, 401, webhooks.CodeAppleAlg, [2]string{"apple", "11111111-2222-4333-8444-555555555555"}},
		{"apple HS256 keyed with the leaf public key", "/webhooks/apple", appleBody(pki.Sign(appleNote, appletest.JWS{Alg: "HS256", Sign: hs256(leafPub)})), nil, 401, webhooks.CodeAppleAlg, [2]string{"apple", "11111111-2222-4333-8444-555555555555"}},
		{"apple foreign root", "/webhooks/apple", appleBody(foreign.SignJWS(appleNote)), nil, 401, webhooks.CodeAppleUntrustedChain, [2]string{"apple", "11111111-2222-4333-8444-555555555555"}},
		{"apple trusted root in x5c, foreign chain", "/webhooks/apple", appleBody(foreign.Sign(appleNote, appletest.JWS{X5C: appletest.X5C(foreign.LeafDER(), foreign.IntermediateDER(), pki.RootDER())})), nil, 401, webhooks.CodeAppleUntrustedChain, [2]string{"apple", "11111111-2222-4333-8444-555555555555"}},
		{"apple stale signedDate (replay)", "/webhooks/apple", appleBody(pki.SignJWS(appleNotification("66666666-2222-4333-8444-555555555555", now.Add(-800*time.Hour)))), nil, 401, webhooks.CodeStale, [2]string{"apple", "66666666-2222-4333-8444-555555555555"}},
		{"apple oversize", "/webhooks/apple", oversize, nil, 413, "", [2]string{}},
		{"apple nested 10000 deep", "/webhooks/apple", deep, nil, 400, "", [2]string{}},
		{"apple invalid UTF-8", "/webhooks/apple", []byte("{\"signedPayload\":\"\xff\xfe\"}"), nil, 400, "", [2]string{}},
		{"custom oversize", "/v1/events", oversize, apiHeaders("k-big"), 413, "", [2]string{"custom", "k-big"}},
		{"custom nested 10000 deep", "/v1/events", deep, apiHeaders("k-deep"), 400, "", [2]string{"custom", "k-deep"}},
		{"custom invalid UTF-8", "/v1/events", []byte("{\"type\":\"custom\",\"name\":\"\xff\xfe\",\"app_user_id\":\"u\"}"), apiHeaders("k-utf8"), 400, "", [2]string{"custom", "k-utf8"}},
		{"custom wrong API key", "/v1/events", []byte(`{"type":"custom","name":"x","app_user_id":"u"}`), map[string]string{"Authorization": "Bearer nope", "Idempotency-Key": "k-auth"}, 401, "", [2]string{"custom", "k-auth"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, code := send(t, tg.url+tc.path, tc.body, tc.headers)
			if status != tc.status {
				t.Errorf("status %d (code %q), want %d", status, code, tc.status)
			}
			if tc.code != "" && code != tc.code {
				t.Errorf("code %q, want %q", code, tc.code)
			}
			if tc.key[0] != "" {
				if _, err := tg.g.Store.Notification(tc.key[0], tc.key[1]); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("notification %s/%q stored (err %v)", tc.key[0], tc.key[1], err)
				}
			}
		})
	}
	page, err := tg.g.Store.Events(store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 0 {
		t.Fatalf("%d events stored from hostile input: %+v", len(page.Events), page.Events[0])
	}
	// The same gateway accepts genuine input on the same paths, so the
	// rejections above are about the input, not a broken setup.
	t.Run("genuine input still accepted", func(t *testing.T) {
		good := stripeEvent("evt_hostile_good")
		if status, code := send(t, tg.url+"/webhooks/stripe", good, stripeSigned(good, time.Now())); status != 200 {
			t.Errorf("stripe: status %d code %q", status, code)
		}
		if status, code := send(t, tg.url+"/webhooks/apple", appleBody(pki.SignJWS(appleNote)), nil); status != 200 {
			t.Errorf("apple: status %d code %q", status, code)
		}
	})
}

func hs256(key []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write(in)
		return m.Sum(nil)
	}
}

func x509MarshalPKIX(p *appletest.PKI) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(p.Leaf.PublicKey)
}

// TestShopifyStoreKeyThroughGateway: a webhook created in a store's admin,
// signed with that store's key from sources.shopify.shop_secrets, is
// accepted by the running gateway and stored.
func TestShopifyStoreKeyThroughGateway(t *testing.T) {
	tg := hostileGateway(t, appletest.NewPKI(t))
	body := []byte(`{"id":5899171709999,"name":"#1001","total_price":"9.99","currency":"USD"}`)
	h := map[string]string{
		"X-Shopify-Hmac-Sha256": webhooks.SignShopify(body, hostileStoreKey),
		"X-Shopify-Topic":       "orders/paid",
		"X-Shopify-Webhook-Id":  "wh-admin-1",
		"X-Shopify-Shop-Domain": "hostile.myshopify.com",
	}
	if status, code := send(t, tg.url+"/webhooks/shopify", body, h); status != 200 {
		t.Fatalf("status %d (%s), want 200", status, code)
	}
	if _, err := tg.g.Store.Notification("shopify", "wh-admin-1"); err != nil {
		t.Fatalf("not stored: %v", err)
	}
}

// TestShopifyCustomerRedactThroughGateway: customers/redact is acknowledged
// once queued, and the running gateway's background worker erases the
// customer's identifiers from the events of that shop.
func TestShopifyCustomerRedactThroughGateway(t *testing.T) {
	tg := hostileGateway(t, appletest.NewPKI(t))
	post := func(topic, id string, body []byte) {
		t.Helper()
		h := shopifySigned(body, id)
		h["X-Shopify-Topic"] = topic
		if status, code := send(t, tg.url+"/webhooks/shopify", body, h); status != 200 {
			t.Fatalf("%s: status %d (%s)", topic, status, code)
		}
	}
	post("orders/paid", "wh-order-1", []byte(`{"id":4001,"name":"#4001","currency":"USD","total_price":"19.99","financial_status":"paid","customer":{"id":777,"email":"jane@example.com"},"note_attributes":[{"name":"app_user_id","value":"u-777"}]}`))
	page, err := tg.g.Store.Events(store.EventFilter{})
	if err != nil || len(page.Events) != 1 || page.Events[0].User.Identifiers[mapping.IDShopifyCustomer] != "777" {
		t.Fatalf("setup: %+v %v", page.Events, err)
	}
	id := page.Events[0].ID
	post("customers/redact", "wh-redact-1", []byte(`{"shop_id":548380009,"shop_domain":"hostile.myshopify.com","customer":{"id":777,"email":"jane@example.com"},"orders_to_redact":[4001]}`))
	// The queue empties in the erasure's commit; the metric counts it just
	// after: wait for both.
	waitFor(t, "erasure", func() bool {
		n, err := tg.g.Store.PendingErasures()
		var m dto.Metric
		return err == nil && n == 0 && tg.g.Metrics.ErasuresDone.Write(&m) == nil && m.GetCounter().GetValue() >= 1
	})
	e, err := tg.g.Store.Event(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.User.Identifiers) != 0 {
		t.Fatalf("identifiers kept after the erasure: %v", e.User.Identifiers)
	}
	if n, err := tg.g.Store.Notification("shopify", "wh-order-1"); err != nil || n.Body != nil {
		t.Fatalf("raw order notification kept: %v", err)
	}
	var m dto.Metric
	if err := tg.g.Metrics.ErasuresDone.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		got := m.GetCounter().GetValue()
		t.Fatalf("postback_privacy_erasures_total = %v (%v), want 1", got, err)
	}
}
