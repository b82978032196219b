package webhooks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

const (
	shopSecret    = "shpss_test_secret_current_0000000000"
	shopOldSecret = "shpss_test_secret_previous_111111111"
	shopDomain    = "example.myshopify.com"
	shopStoreKey  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" // a store's admin webhook key
)

// boltForTest opens a real store in a temporary directory and checks its
// consistency when the test ends.
func boltForTest(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "postback.db"), &store.Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("store consistency: %v", err)
		}
		db.Close()
	})
	return db
}

func shopifyFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "mapping", "testdata", "shopify", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func shopifyHeaders(body []byte, secret, topic, webhookID string) map[string]string {
	return map[string]string{
		"Content-Type":           "application/json",
		"X-Shopify-Hmac-Sha256":  SignShopify(body, secret),
		"X-Shopify-Topic":        topic,
		"X-Shopify-Shop-Domain":  shopDomain,
		"X-Shopify-Webhook-Id":   webhookID,
		"X-Shopify-API-Version":  "2026-01",
		"X-Shopify-Triggered-At": "2026-11-30T02:59:58Z",
	}
}

func newShopify(st Ingester, logs *bytes.Buffer) *Shopify {
	d := testDeps(st, nil)
	if logs != nil {
		d = testDeps(st, logs)
	}
	return &Shopify{Deps: d, Secrets: []string{shopSecret, shopOldSecret}, ShopSecrets: map[string]string{shopDomain: shopStoreKey}, Shops: []string{"Example.myshopify.com"}, AppID: "shop.example.app"}
}

func TestShopifySignatures(t *testing.T) {
	body := shopifyFixture(t, "order_paid.json")
	tests := []struct {
		name       string
		body       []byte // sent; default the order fixture
		signed     []byte // signed; default what is sent
		headers    func(h map[string]string)
		wantStatus int
		wantCode   string
		wantLog    string
	}{
		{name: "valid", wantStatus: http.StatusOK},
		{name: "rotated secret still accepted", headers: func(h map[string]string) {
			h["X-Shopify-Hmac-Sha256"] = SignShopify(body, shopOldSecret)
		}, wantStatus: http.StatusOK, wantLog: "fallback secret"},
		{name: "unprefixed Events headers", headers: func(h map[string]string) {
			for _, k := range []string{"Hmac-Sha256", "Topic", "Shop-Domain", "Webhook-Id"} {
				h["Shopify-"+k] = h["X-Shopify-"+k]
				delete(h, "X-Shopify-"+k)
			}
		}, wantStatus: http.StatusOK},
		{name: "tampered body", body: bytes.Replace(body, []byte(`"403.00"`), []byte(`"4.00"`), 1), signed: body,
			wantStatus: http.StatusUnauthorized, wantCode: CodeSignature},
		{name: "wrong secret", headers: func(h map[string]string) {
			h["X-Shopify-Hmac-Sha256"] = SignShopify(body, "shpss_someone_else")
		}, wantStatus: http.StatusUnauthorized, wantCode: CodeSignature},
		{name: "missing header", headers: func(h map[string]string) { delete(h, "X-Shopify-Hmac-Sha256") },
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthorized},
		{name: "header not base64", headers: func(h map[string]string) { h["X-Shopify-Hmac-Sha256"] = "not base64!" },
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthorized},
		{name: "header of the wrong length", headers: func(h map[string]string) { h["X-Shopify-Hmac-Sha256"] = "c2hvcnQ=" },
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthorized},
		{name: "hex instead of base64", headers: func(h map[string]string) {
			h["X-Shopify-Hmac-Sha256"] = strings.Repeat("ab", 32)
		}, wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthorized},
		{name: "non-canonical base64 of the right HMAC", headers: func(h map[string]string) {
			// 32 bytes leave two spare bits in the last character: a
			// lenient decoder reads both spellings as the same HMAC.
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
			v := []byte(h["X-Shopify-Hmac-Sha256"])
			v[len(v)-2] = alphabet[strings.IndexByte(alphabet, v[len(v)-2])+1]
			if got, err := base64.StdEncoding.DecodeString(string(v)); err != nil || base64.StdEncoding.EncodeToString(got) != h["X-Shopify-Hmac-Sha256"] {
				t.Fatalf("test header %q does not decode to the same HMAC", v)
			}
			h["X-Shopify-Hmac-Sha256"] = string(v)
		}, wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthorized},
		{name: "admin webhook signed with the store's own key", headers: func(h map[string]string) {
			h["X-Shopify-Hmac-Sha256"] = SignShopify(body, shopStoreKey)
		}, wantStatus: http.StatusOK},
		{name: "store key of one shop claiming another shop", headers: func(h map[string]string) {
			h["X-Shopify-Hmac-Sha256"] = SignShopify(body, shopStoreKey)
			h["X-Shopify-Shop-Domain"] = "other.myshopify.com"
		}, wantStatus: http.StatusUnauthorized, wantCode: CodeSignature},
		{name: "store key without a shop header", headers: func(h map[string]string) {
			h["X-Shopify-Hmac-Sha256"] = SignShopify(body, shopStoreKey)
			delete(h, "X-Shopify-Shop-Domain")
		}, wantStatus: http.StatusUnauthorized, wantCode: CodeSignature},
		{name: "empty body", body: []byte{}, wantStatus: http.StatusUnauthorized, wantCode: CodeSignature},
		{name: "unknown shop", headers: func(h map[string]string) { h["X-Shopify-Shop-Domain"] = "other.myshopify.com" },
			wantStatus: http.StatusForbidden, wantCode: CodeUnknownShop},
		{name: "missing shop", headers: func(h map[string]string) { delete(h, "X-Shopify-Shop-Domain") },
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "missing topic", headers: func(h map[string]string) { delete(h, "X-Shopify-Topic") },
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "missing webhook id", headers: func(h map[string]string) { delete(h, "X-Shopify-Webhook-Id") },
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "signed body that is not a JSON object", body: []byte(`["an","array"]`),
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "signed body that is not JSON", body: []byte(`id=1&total=2`),
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "oversize body", body: bytes.Repeat([]byte("x"), 70<<10),
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := body
			if tt.body != nil {
				b = tt.body
			}
			signed := b
			if tt.signed != nil {
				signed = tt.signed
			}
			h := shopifyHeaders(signed, shopSecret, "orders/paid", "wh-1")
			if tt.headers != nil {
				tt.headers(h)
			}
			st := &fakeIngester{}
			var logs bytes.Buffer
			s := newShopify(st, &logs)
			rec := post(t, s.Handle, b, h)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantCode != "" {
				if got := errCode(t, rec); got != tt.wantCode {
					t.Errorf("code = %q, want %q", got, tt.wantCode)
				}
				if st.count() != 0 {
					t.Errorf("a rejected webhook was stored")
				}
				if got := counterValue(t, s.Metrics.Rejected.WithLabelValues("shopify", tt.wantCode)); got != 1 {
					t.Errorf("rejected{reason=%s} = %v, want 1", tt.wantCode, got)
				}
			} else if st.count() != 1 {
				t.Errorf("stored %d notifications, want 1", st.count())
			}
			if tt.wantLog != "" && !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log does not mention %q:\n%s", tt.wantLog, logs.String())
			}
			for _, secret := range []string{shopSecret, shopOldSecret, shopStoreKey} {
				if strings.Contains(logs.String(), secret) || strings.Contains(rec.Body.String(), secret) {
					t.Errorf("a secret leaked into the log or the answer")
				}
			}
		})
	}
}

func TestShopifyAnyShopWhenNoneConfigured(t *testing.T) {
	body := shopifyFixture(t, "order_paid.json")
	st := &fakeIngester{}
	s := newShopify(st, nil)
	s.Shops = nil
	h := shopifyHeaders(body, shopSecret, "orders/paid", "wh-any")
	h["X-Shopify-Shop-Domain"] = "another-shop.myshopify.com"
	if rec := post(t, s.Handle, body, h); rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200: %s", rec.Code, rec.Body)
	}
}

func TestShopifyNotification(t *testing.T) {
	body := shopifyFixture(t, "order_paid_test.json")
	st := &fakeIngester{}
	s := newShopify(st, nil)
	s.Currency = mapping.ShopifyCurrencyPresentment
	h := shopifyHeaders(body, shopSecret, "orders/paid", "b54557e4-8a5f-bf7d-70bc-d043a1b2c3d4")
	h["X-Shopify-Shop-Domain"] = "EXAMPLE.myshopify.com"
	h["X-Shopify-Event-Id"] = "98880550-7158-44d4-b7cd-2c97c8a091b5"
	if rec := post(t, s.Handle, body, h); rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	n := st.got[0]
	want := map[string]string{
		mapping.ShopifyMetaShop: shopDomain, mapping.ShopifyMetaTopic: "orders/paid", mapping.ShopifyMetaCurrency: "presentment",
		mapping.ShopifyMetaAPIVersion: "2026-01", mapping.ShopifyMetaTriggered: "2026-11-30T02:59:58Z",
		mapping.ShopifyMetaEventID: "98880550-7158-44d4-b7cd-2c97c8a091b5",
	}
	for k, v := range want {
		if n.Meta[k] != v {
			t.Errorf("meta[%s] = %q, want %q", k, n.Meta[k], v)
		}
	}
	if n.Source != "shopify" || n.Key != "b54557e4-8a5f-bf7d-70bc-d043a1b2c3d4" || n.Type != "orders/paid" || n.AppID != "shop.example.app" {
		t.Errorf("notification = %+v", n)
	}
	if n.Environment != mapping.Sandbox {
		t.Errorf("environment = %q, want sandbox for a test order", n.Environment)
	}
	if len(n.AltKeys) != 2 || n.AltKeys[0] != "event:orders/paid:98880550-7158-44d4-b7cd-2c97c8a091b5" || n.AltKeys[1] != shopifyBodyKey("orders/paid", body) {
		t.Errorf("alt keys = %v", n.AltKeys)
	}
}

func TestShopifyStoreFailureIs503(t *testing.T) {
	body := shopifyFixture(t, "order_paid.json")
	s := newShopify(&fakeIngester{err: errors.New("disk full")}, nil)
	rec := post(t, s.Handle, body, shopifyHeaders(body, shopSecret, "orders/paid", "wh-503"))
	if rec.Code != http.StatusServiceUnavailable || errCode(t, rec) != CodeUnavailable {
		t.Fatalf("status = %d %s, want 503 %s", rec.Code, rec.Body, CodeUnavailable)
	}
}

// counterValue reads a counter's current value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func ackOf(t *testing.T, body []byte) Ack {
	t.Helper()
	var a Ack
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("ack is not JSON: %s", body)
	}
	return a
}

func countEvents(t *testing.T, db *store.DB, source string) []mapping.Event {
	t.Helper()
	p, err := db.Events(store.EventFilter{Source: source, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	return p.Events
}

// Shopify retries a delivery with the same webhook id; a second subscription
// to the same topic delivers the same event id under a new webhook id. Both
// are one event. The same event id on another topic is not a duplicate.
func TestShopifyDuplicatesAreOneEvent(t *testing.T) {
	db := boltForTest(t)
	s := newShopify(db, nil)
	order := shopifyFixture(t, "order_paid.json")
	send := func(body []byte, topic, webhookID, eventID string) Ack {
		t.Helper()
		h := shopifyHeaders(body, shopSecret, topic, webhookID)
		if eventID != "" {
			h["X-Shopify-Event-Id"] = eventID
		}
		rec := post(t, s.Handle, body, h)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s %s: status %d: %s", topic, webhookID, rec.Code, rec.Body)
		}
		return ackOf(t, rec.Body.Bytes())
	}
	first := send(order, "orders/paid", "wh-a", "ev-1")
	if first.Duplicate || len(first.EventIDs) != 1 {
		t.Fatalf("first delivery ack = %+v", first)
	}
	for _, again := range []struct{ webhook, event string }{{"wh-a", "ev-1"}, {"wh-b", "ev-1"}} {
		a := send(order, "orders/paid", again.webhook, again.event)
		if !a.Duplicate || len(a.EventIDs) != 1 || a.EventIDs[0] != first.EventIDs[0] {
			t.Errorf("redelivery %v: ack = %+v, want duplicate of %v", again, a, first.EventIDs)
		}
	}
	if got := counterValue(t, s.Metrics.Duplicates.WithLabelValues("shopify")); got != 2 {
		t.Errorf("duplicates metric = %v, want 2", got)
	}
	// A cancellation with a refund and the refund's own webhook share the
	// business event id but are different topics: both are accepted and
	// make one refund event.
	send(shopifyFixture(t, "order_cancelled.json"), "orders/cancelled", "wh-c", "ev-2")
	r := send(shopifyFixture(t, "refund.json"), "refunds/create", "wh-d", "ev-2")
	if r.Duplicate {
		t.Errorf("refunds/create with the event id of orders/cancelled was treated as a duplicate delivery")
	}
	events := countEvents(t, db, "shopify")
	var purchases, refunds int
	for _, e := range events {
		switch e.Type {
		case mapping.Purchase:
			purchases++
			if e.TransactionID != "820982911946154508" {
				t.Errorf("order id through the store = %q, want 820982911946154508", e.TransactionID)
			}
		case mapping.Refund:
			refunds++
			if e.Revenue == nil || e.Revenue.AmountMicros != -89_990_000 {
				t.Errorf("refund revenue = %+v, want -89.99 USD", e.Revenue)
			}
			if e.User.AppUserID != "u-42" {
				t.Errorf("refund user = %q, want u-42 (from the order)", e.User.AppUserID)
			}
		}
	}
	if purchases != 1 || refunds != 1 {
		t.Errorf("events: %d purchases, %d refunds; want 1 and 1", purchases, refunds)
	}
	// Nothing raw reached the disk: the stored body holds hashes only.
	n, err := db.Notification("shopify", "wh-a")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ToLower(n.Body), []byte("jon@example.com")) || bytes.Contains(n.Body, []byte("555-1212")) {
		t.Errorf("raw email or phone stored in the inbox")
	}
}

func TestShopifyUnknownTopicIsAcknowledgedAndCounted(t *testing.T) {
	db := boltForTest(t)
	s := newShopify(db, nil)
	body := shopifyFixture(t, "product_update.json")
	rec := post(t, s.Handle, body, shopifyHeaders(body, shopSecret, "products/update", "wh-unknown"))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	if a := ackOf(t, rec.Body.Bytes()); !strings.Contains(a.Ignored, "unhandled shopify topic products/update") {
		t.Errorf("ack = %+v, want the ignored reason", a)
	}
	if got := counterValue(t, s.Metrics.Ignored.WithLabelValues("shopify")); got != 1 {
		t.Errorf("ignored metric = %v, want 1", got)
	}
	n, err := db.Notification("shopify", "wh-unknown")
	if err != nil || n.Status != mapping.StatusIgnored {
		t.Errorf("stored = %+v, %v; want status ignored", n, err)
	}
}

func BenchmarkShopifyVerify(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("..", "mapping", "testdata", "shopify", "order_paid.json"))
	if err != nil {
		b.Fatal(err)
	}
	s := &Shopify{Secrets: []string{shopSecret, shopOldSecret}}
	h := SignShopify(body, shopSecret)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(body, h); err != nil {
			b.Fatal(err)
		}
	}
}
