package webhooks

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

// Shopify signs the body only. These are the replays of issue 15: one
// captured, validly signed body sent again with other headers.
func TestShopifyHeadersBoundToBody(t *testing.T) {
	order := shopifyFixture(t, "order_paid.json")
	cancelled := shopifyFixture(t, "order_cancelled.json")
	contract := shopifyFixture(t, "contract_create.json")
	refund := shopifyFixture(t, "refund.json")
	attempt := shopifyFixture(t, "billing_attempt_success.json")
	redact := shopifyFixture(t, "customers_redact.json")
	shopRedact := shopifyFixture(t, "shop_redact.json")
	dataRequest := []byte(`{"shop_id":954889,"shop_domain":"example.myshopify.com","orders_requested":[299938],"customer":{"id":191167},"data_request":{"id":9999}}`)
	tests := []struct {
		name       string
		body       []byte
		topic      string
		secret     string // default the app's secret
		shop       string // default shopDomain
		anyShop    bool   // sources.shopify.shops empty
		wantStatus int
		wantCode   string
	}{
		{name: "order replayed as shop/redact of another shop", body: order, topic: "shop/redact", shop: "victim.myshopify.com", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "order replayed as shop/redact of its own shop", body: order, topic: "shop/redact",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "order replayed as customers/redact", body: order, topic: "customers/redact",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "order replayed as subscription_contracts/create", body: order, topic: "subscription_contracts/create",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "paid order replayed as orders/cancelled", body: order, topic: "orders/cancelled",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "cancelled order replayed as orders/paid", body: cancelled, topic: "orders/paid",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "contract replayed as orders/paid", body: contract, topic: "orders/paid",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "refund replayed as subscription_billing_attempts/success", body: refund, topic: "subscription_billing_attempts/success",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "billing attempt replayed as refunds/create", body: attempt, topic: "refunds/create",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "contract with another resource's graphql id", topic: "subscription_contracts/update",
			body:       bytes.Replace(contract, []byte("gid://shopify/SubscriptionContract/"), []byte("gid://shopify/Order/"), 1),
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "app subscription without its resource", body: []byte(`{"app_subscription":{"status":"ACTIVE"}}`), topic: "app_subscriptions/update",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "app subscription that is not an object", body: []byte(`{"app_subscription":[1]}`), topic: "app_subscriptions/update",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "customers/redact of another shop", body: redact, topic: "customers/redact", shop: "victim.myshopify.com", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeShopMismatch},
		{name: "shop/redact of another shop", body: shopRedact, topic: "shop/redact", shop: "victim.myshopify.com", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeShopMismatch},
		{name: "customers/data_request of another shop", body: dataRequest, topic: "customers/data_request", shop: "victim.myshopify.com", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeShopMismatch},
		{name: "shop/redact without shop_id", body: []byte(`{"shop_domain":"example.myshopify.com"}`), topic: "shop/redact",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "shop/redact with shop_id zero", body: []byte(`{"shop_id":0,"shop_domain":"example.myshopify.com"}`), topic: "shop/redact",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "shop/redact with a fractional shop_id", body: []byte(`{"shop_id":1.5,"shop_domain":"example.myshopify.com"}`), topic: "shop/redact",
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "customers/redact with orders_to_redact not a list", topic: "customers/redact",
			body:       []byte(`{"shop_id":954889,"shop_domain":"example.myshopify.com","customer":{"id":1},"orders_to_redact":"all"}`),
			wantStatus: http.StatusBadRequest, wantCode: CodeWrongShape},
		{name: "compliance topic signed with a store's webhook key", body: shopRedact, topic: "shop/redact", secret: shopStoreKey,
			wantStatus: http.StatusUnauthorized, wantCode: CodeSignature},
		{name: "customers/redact signed with a store's webhook key", body: redact, topic: "customers/redact", secret: shopStoreKey,
			wantStatus: http.StatusUnauthorized, wantCode: CodeSignature},
		{name: "shop domain that is not myshopify.com", body: order, topic: "orders/paid", shop: "shop.example.com", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "myshopify.com as a prefix", body: order, topic: "orders/paid", shop: "x.myshopify.com.evil.test", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "shop domain with a path", body: order, topic: "orders/paid", shop: "x.myshopify.com/admin", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "empty shop name", body: order, topic: "orders/paid", shop: ".myshopify.com", anyShop: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "topic that is not resource/action", body: order, topic: "orders/paid/../../shop/redact",
			wantStatus: http.StatusBadRequest, wantCode: CodeMalformed},
		{name: "valid customers/redact", body: redact, topic: "customers/redact", wantStatus: http.StatusOK},
		{name: "valid shop/redact with a string shop_id", body: []byte(`{"shop_id":"954889","shop_domain":"EXAMPLE.myshopify.com"}`), topic: "shop/redact",
			wantStatus: http.StatusOK},
		{name: "valid customers/data_request", body: dataRequest, topic: "customers/data_request", wantStatus: http.StatusOK},
		{name: "valid contract", body: contract, topic: "subscription_contracts/create", wantStatus: http.StatusOK},
		{name: "valid cancellation", body: cancelled, topic: "orders/cancelled", wantStatus: http.StatusOK},
		{name: "valid refund", body: refund, topic: "refunds/create", wantStatus: http.StatusOK},
		{name: "valid billing attempt", body: attempt, topic: "subscription_billing_attempts/success", wantStatus: http.StatusOK},
		{name: "valid app subscription", body: shopifyFixture(t, "app_subscription_active.json"), topic: "app_subscriptions/update", wantStatus: http.StatusOK},
		{name: "store key on an order topic", body: order, topic: "orders/paid", secret: shopStoreKey, wantStatus: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := shopSecret
			if tt.secret != "" {
				secret = tt.secret
			}
			h := shopifyHeaders(tt.body, secret, tt.topic, "wh-bind")
			if tt.shop != "" {
				h["X-Shopify-Shop-Domain"] = tt.shop
			}
			st := &fakeIngester{}
			var logs bytes.Buffer
			s := newShopify(st, &logs)
			if tt.anyShop {
				s.Shops = nil
			}
			rec := post(t, s.Handle, tt.body, h)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantCode == "" {
				if st.count() != 1 {
					t.Errorf("stored %d notifications, want 1", st.count())
				}
				return
			}
			if got := errCode(t, rec); got != tt.wantCode {
				t.Errorf("code = %q, want %q", got, tt.wantCode)
			}
			if st.count() != 0 {
				t.Errorf("a rejected webhook was stored")
			}
			if got := counterValue(t, s.Metrics.Rejected.WithLabelValues("shopify", tt.wantCode)); got != 1 {
				t.Errorf("rejected{reason=%s} = %v, want 1", tt.wantCode, got)
			}
			for _, leak := range []string{shopSecret, shopStoreKey, "john@example.com", "555-625-1199"} {
				if strings.Contains(logs.String(), leak) || strings.Contains(rec.Body.String(), leak) {
					t.Errorf("%q leaked into the log or the answer", leak)
				}
			}
		})
	}
}

// One signed body is one fact: new webhook ids, and another shop's domain,
// do not store it again or emit its events twice.
func TestShopifySameBodyStoredOnce(t *testing.T) {
	db := boltForTest(t)
	s := newShopify(db, nil)
	s.Shops = nil
	order := shopifyFixture(t, "order_paid.json")
	send := func(webhookID, shop string) Ack {
		t.Helper()
		h := shopifyHeaders(order, shopSecret, "orders/paid", webhookID)
		h["X-Shopify-Shop-Domain"] = shop
		rec := post(t, s.Handle, order, h)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s %s: status %d: %s", webhookID, shop, rec.Code, rec.Body)
		}
		return ackOf(t, rec.Body.Bytes())
	}
	first := send("wh-1", shopDomain)
	if first.Duplicate || len(first.EventIDs) != 1 {
		t.Fatalf("first ack = %+v", first)
	}
	for i, replay := range []struct{ webhook, shop string }{
		{"wh-2", shopDomain}, {"wh-3", shopDomain}, {"wh-4", "victim.myshopify.com"},
	} {
		a := send(replay.webhook, replay.shop)
		if !a.Duplicate {
			t.Errorf("replay %d (%v) was stored again: %+v", i, replay, a)
		}
	}
	if got := len(countEvents(t, db, "shopify")); got != 1 {
		t.Errorf("%d events, want 1", got)
	}
	for _, id := range []string{"wh-2", "wh-3", "wh-4"} {
		if _, err := db.Notification("shopify", id); err == nil {
			t.Errorf("replay %s has its own inbox record", id)
		}
	}
	// The same bytes under another topic of the same resource are another
	// fact (Shopify may send identical orders/create and orders/paid).
	h := shopifyHeaders(order, shopSecret, "orders/create", "wh-5")
	if rec := post(t, s.Handle, order, h); rec.Code != http.StatusOK || ackOf(t, rec.Body.Bytes()).Duplicate {
		t.Errorf("orders/create of the same bytes: %d %s, want 200 not duplicate", rec.Code, rec.Body)
	}
}

// A genuine compliance request is still honoured, and its erasure is bound
// to the shop the body names.
func TestShopifyComplianceThroughStore(t *testing.T) {
	db := boltForTest(t)
	s := newShopify(db, nil)
	body := shopifyFixture(t, "customers_redact.json")
	rec := post(t, s.Handle, body, shopifyHeaders(body, shopSecret, "customers/redact", "wh-redact"))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	if a := ackOf(t, rec.Body.Bytes()); !strings.Contains(a.Ignored, "erasure of customer 191167") {
		t.Errorf("ack = %+v, want the erasure queued", a)
	}
	n, err := db.Notification("shopify", "wh-redact")
	if err != nil {
		t.Fatal(err)
	}
	if n.Meta[mapping.ShopifyMetaShop] != shopDomain {
		t.Errorf("shop = %q", n.Meta[mapping.ShopifyMetaShop])
	}
	for _, raw := range []string{"john@example.com", "555-625-1199"} {
		if bytes.Contains(n.Body, []byte(raw)) {
			t.Errorf("%s stored raw in %s", raw, n.Body)
		}
	}
}

func TestValidShopDomain(t *testing.T) {
	for s, want := range map[string]bool{
		"example.myshopify.com": true, "a.myshopify.com": true, "my-shop-2.myshopify.com": true,
		"": false, "myshopify.com": false, ".myshopify.com": false, "-x.myshopify.com": false,
		"x.y.myshopify.com": false, "x.myshopify.com.": false, "x_y.myshopify.com": false,
		"Example.myshopify.com": false, "x.myshopify.co": false, "x.myshopify.com:443": false,
		strings.Repeat("a", 64) + ".myshopify.com": false, strings.Repeat("a", 63) + ".myshopify.com": true,
	} {
		if got := ValidShopDomain(s); got != want {
			t.Errorf("ValidShopDomain(%q) = %v, want %v", s, got, want)
		}
	}
}

// Issue 15, item 10: Shopify and custom events apply one precision rule:
// 5.001 USD and 5.5 JPY are refused by both, "403.00" JPY accepted by both.
func TestAmountPrecisionSameForShopifyAndCustom(t *testing.T) {
	db := boltForTest(t)
	s := newShopify(db, nil)
	custom := NewCustom(s.Deps, db, []string{"k-0123456789"}, 720*time.Hour)
	for i, tc := range []struct {
		amount, currency string
		ok               bool
	}{
		{"5.001", "USD", false}, {"5.5", "JPY", false}, {"403.00", "JPY", true}, {"5.010", "USD", true},
	} {
		order := []byte(fmt.Sprintf(`{"id":%d,"name":"#%d","currency":%q,"total_price":%q,"financial_status":"paid","line_items":[]}`,
			5899171701000+i, 1000+i, tc.currency, tc.amount))
		rec := post(t, s.Handle, order, shopifyHeaders(order, shopSecret, "orders/paid", fmt.Sprintf("wh-prec-%d", i)))
		if rec.Code != http.StatusOK {
			t.Fatalf("shopify %s %s: status %d (authentic notifications are acknowledged)", tc.amount, tc.currency, rec.Code)
		}
		a := ackOf(t, rec.Body.Bytes())
		n, err := db.Notification("shopify", fmt.Sprintf("wh-prec-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if gotOK := len(a.EventIDs) == 1; gotOK != tc.ok {
			t.Errorf("shopify %s %s: events %v (status %s, %s), want accepted=%v", tc.amount, tc.currency, a.EventIDs, n.Status, n.Reason, tc.ok)
		}
		if !tc.ok && (n.Status != mapping.StatusFailed || !strings.Contains(n.Reason, "more decimals")) {
			t.Errorf("shopify %s %s: stored %s %q, want failed for its decimals", tc.amount, tc.currency, n.Status, n.Reason)
		}

		body := []byte(fmt.Sprintf(`{"type":"purchase","app_user_id":"u-1","app_id":"com.example.app","revenue":{"amount":%q,"currency":%q}}`, tc.amount, tc.currency))
		rec = post(t, custom.Events, body, map[string]string{"Content-Type": "application/json", "Idempotency-Key": fmt.Sprintf("prec-%d", i)})
		want := http.StatusBadRequest
		if tc.ok {
			want = http.StatusAccepted
		}
		if rec.Code != want {
			t.Errorf("custom %s %s: status %d, want %d: %s", tc.amount, tc.currency, rec.Code, want, rec.Body)
		}
		if !tc.ok && !strings.Contains(rec.Body.String(), "more decimals than "+tc.currency) {
			t.Errorf("custom %s %s: answer %s", tc.amount, tc.currency, rec.Body)
		}
	}
}
