package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// The erasure cases run the real Shopify mapping, which queues the privacy
// erasures (customers/redact, shop/redact) with the webhook.

// shopifyNote is a Shopify webhook as the handler stores it (PII scrubbed).
func shopifyNote(shop, topic, key string, body map[string]any) *mapping.Notification {
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return &mapping.Notification{
		Source: mapping.SourceShopify, Key: key, Type: topic, AppID: "shop.example.app",
		Body: mapping.ScrubPII(b),
		Meta: map[string]string{mapping.ShopifyMetaShop: shop, mapping.ShopifyMetaTopic: topic, mapping.ShopifyMetaCurrency: mapping.ShopifyCurrencyShop},
	}
}

func paidOrder(order, customer int, user, email string) map[string]any {
	return map[string]any{
		"id": order, "currency": "USD", "total_price": "9.99", "financial_status": "paid",
		"created_at": "2026-11-29T10:00:00Z", "processed_at": "2026-11-29T10:00:00Z",
		"customer":        map[string]any{"id": customer, "email": email},
		"note_attributes": []map[string]any{{"name": "app_user_id", "value": user}, {"name": "appsflyer_id", "value": "af-" + user}},
		"line_items":      []map[string]any{{"product_id": 7, "quantity": 1, "price": "9.99"}},
	}
}

func realMapping(o *store.Options) { o.Map = mapping.Map }

// eraseAll runs EraseStep until no work is left and returns the finished
// jobs.
func eraseAll(t *testing.T, e *Env) []*store.ErasureDone {
	t.Helper()
	var done []*store.ErasureDone
	for steps := 0; ; steps++ {
		if steps > 1000 {
			t.Fatal("erasure did not finish")
		}
		more, d, err := e.EraseStep(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if d != nil {
			done = append(done, d)
		}
		if !more {
			return done
		}
	}
}

// ShopifyCustomerErasure: customers/redact is queued with the webhook and
// carried out in steps: the customer's events of that shop lose their
// identifiers and raw bodies, the customer's and orders' states forget who
// they belonged to, and nothing of other customers or shops changes.
var _ = register("ShopifyCustomerErasure", func(t *testing.T, b Backend) {
	e := Open(t, b, realMapping)
	const shop, other = "example.myshopify.com", "other.myshopify.com"
	target := e.MustIngest(t, shopifyNote(shop, "orders/paid", "wh-1", paidOrder(1001, 111, "u-1", "jon@example.com")))
	second := e.MustIngest(t, shopifyNote(shop, "orders/paid", "wh-2", paidOrder(1002, 111, "u-1", "jon@example.com")))
	keep := e.MustIngest(t, shopifyNote(shop, "orders/paid", "wh-3", paidOrder(1003, 222, "u-2", "ann@example.com")))
	otherShop := e.MustIngest(t, shopifyNote(other, "orders/paid", "wh-4", paidOrder(1001, 111, "u-9", "jon@example.com")))
	for _, r := range []store.IngestResult{target, second, keep, otherShop} {
		if len(r.Events) != 1 || r.Events[0].User.Identifiers[mapping.IDShopifyCustomer] == "" {
			t.Fatalf("setup: an order did not give one identified event: %+v", r)
		}
	}
	if n, err := e.PendingErasures(); err != nil || n != 0 {
		t.Fatalf("pending erasures %d, %v before any request", n, err)
	}
	if more, done, err := e.EraseStep(context.Background()); more || done != nil || err != nil {
		t.Fatalf("EraseStep with nothing queued: %v %+v %v", more, done, err)
	}
	res := e.MustIngest(t, shopifyNote(shop, "customers/redact", "wh-redact", map[string]any{
		"shop_domain": shop, "customer": map[string]any{"id": 111, "email": "jon@example.com"}, "orders_to_redact": []int{1001},
	}))
	if res.Status != mapping.StatusIgnored || len(res.Events) != 0 {
		t.Fatalf("redact: %+v", res)
	}
	if n, err := e.PendingErasures(); err != nil || n != 1 {
		t.Fatalf("pending erasures %d, %v; want 1 queued with the webhook", n, err)
	}
	done := eraseAll(t, e)
	if len(done) != 1 || done[0].Key != "wh-redact" || done[0].Events != 2 {
		t.Fatalf("done = %+v, want wh-redact with 2 events", done)
	}
	if n, _ := e.PendingErasures(); n != 0 {
		t.Fatalf("%d erasures still queued", n)
	}
	event := func(id string) mapping.Event {
		t.Helper()
		ev, err := e.Event(id)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	for _, r := range []store.IngestResult{target, second} {
		ev := event(r.Events[0].ID)
		if len(ev.User.Identifiers) != 0 {
			t.Errorf("event %s keeps identifiers %v", ev.ID, ev.User.Identifiers)
		}
		if ev.Revenue == nil || ev.Revenue.AmountMicros != 9_990_000 {
			t.Errorf("event %s lost its revenue: %+v", ev.ID, ev.Revenue)
		}
		n, err := e.Notification(mapping.SourceShopify, ev.SourceEventID)
		if err != nil || n.Body != nil || n.Meta != nil {
			t.Errorf("raw notification %s not erased: %v %+v", ev.SourceEventID, err, n)
		}
	}
	for _, r := range []store.IngestResult{keep, otherShop} {
		if ev := event(r.Events[0].ID); ev.User.Identifiers[mapping.IDShopifyCustomer] == "" || ev.User.Identifiers[mapping.IDEmailSHA256] == "" {
			t.Errorf("event %s of another customer or shop was erased: %v", ev.ID, ev.User.Identifiers)
		}
	}
	if n, err := e.Notification(mapping.SourceShopify, "wh-3"); err != nil || n.Body == nil {
		t.Errorf("another customer's raw notification erased: %v", err)
	}
	if n, err := e.Notification(mapping.SourceShopify, "wh-redact"); err != nil || n.Body != nil {
		t.Errorf("the request's own body (it names the customer) is kept: %v", err)
	}
	for _, key := range []string{"shopify:" + shop + ":customer:111", "shopify:" + shop + ":order:1001", "shopify:" + shop + ":order:1002"} {
		s, ok, err := e.State(key)
		if err != nil || !ok {
			t.Fatalf("state %s: %v %v", key, ok, err)
		}
		if len(s.Identifiers) != 0 || s.AppUserID != "" || s.Values["customer_id"] != "" {
			t.Errorf("state %s still names the customer: %+v", key, s)
		}
	}
	for _, key := range []string{"shopify:" + shop + ":customer:222", "shopify:" + other + ":customer:111"} {
		if s, ok, err := e.State(key); err != nil || !ok || s.AppUserID == "" {
			t.Errorf("state %s of another customer or shop changed: %+v %v %v", key, s, ok, err)
		}
	}
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
	// A retry of the request is a duplicate and queues nothing.
	if r := e.MustIngest(t, shopifyNote(shop, "customers/redact", "wh-redact", map[string]any{"customer": map[string]any{"id": 111}})); !r.Duplicate {
		t.Fatalf("retry: %+v", r)
	}
	if n, _ := e.PendingErasures(); n != 0 {
		t.Fatalf("a retried request queued %d erasures", n)
	}
})

// ShopifyErasureSurvivesRestart: a queued erasure is durable.
var _ = register("ShopifyErasureSurvivesRestart", func(t *testing.T, b Backend) {
	e := Open(t, b, realMapping)
	const shop = "example.myshopify.com"
	r := e.MustIngest(t, shopifyNote(shop, "orders/paid", "wh-1", paidOrder(1001, 111, "u-1", "jon@example.com")))
	e.MustIngest(t, shopifyNote(shop, "customers/redact", "wh-redact", map[string]any{
		"shop_domain": shop, "customer": map[string]any{"id": 111}, "orders_to_redact": []int{1001},
	}))
	e.Restart(t)
	if n, err := e.PendingErasures(); err != nil || n != 1 {
		t.Fatalf("pending erasures after a restart %d, %v; want 1", n, err)
	}
	eraseAll(t, e)
	if ev, err := e.Event(r.Events[0].ID); err != nil || len(ev.User.Identifiers) != 0 {
		t.Errorf("event after the erasure %+v, %v", ev.User, err)
	}
})

// ShopifyShopErasure: shop/redact erases every customer's data of that
// shop and nothing of another.
var _ = register("ShopifyShopErasure", func(t *testing.T, b Backend) {
	e := Open(t, b, realMapping)
	const shop, other = "example.myshopify.com", "other.myshopify.com"
	var ids []string
	for i, n := range []*mapping.Notification{
		shopifyNote(shop, "orders/paid", "wh-1", paidOrder(1001, 111, "u-1", "jon@example.com")),
		shopifyNote(shop, "orders/paid", "wh-2", paidOrder(1002, 222, "u-2", "ann@example.com")),
		shopifyNote(other, "orders/paid", "wh-3", paidOrder(1001, 111, "u-9", "jon@example.com")),
		shopifyNote(shop, "shop/redact", "wh-shop-redact", map[string]any{"shop_id": 1, "shop_domain": shop}),
	} {
		res := e.MustIngest(t, n)
		if i < 3 {
			ids = append(ids, res.Events[0].ID)
		}
	}
	if done := eraseAll(t, e); len(done) != 1 || done[0].Key != "wh-shop-redact" || done[0].Events != 2 {
		t.Errorf("done %+v, want wh-shop-redact with the shop's 2 events", done)
	}
	for i, id := range ids {
		ev, err := e.Event(id)
		if err != nil {
			t.Fatal(err)
		}
		if erased := len(ev.User.Identifiers) == 0; erased != (i < 2) {
			t.Errorf("event %d of %s: identifiers %v", i, ev.Attributes["shop_domain"], ev.User.Identifiers)
		}
	}
	if s, ok, _ := e.State("shopify:" + shop + ":customer:222"); !ok || s.AppUserID != "" || len(s.Identifiers) != 0 {
		t.Errorf("customer state of the shop kept: %+v", s)
	}
	if s, ok, _ := e.State("shopify:" + other + ":customer:111"); !ok || s.AppUserID == "" {
		t.Errorf("customer state of another shop erased: %+v", s)
	}
	if n, err := e.Notification(mapping.SourceShopify, "wh-3"); err != nil || n.Body == nil {
		t.Errorf("another shop's raw notification erased: %v", err)
	}
})

// ErasureNeedsAScope: an erasure without an identifier and without an
// explicit scope would erase everything; the store refuses it, and with it
// the notification's commit.
var _ = register("ErasureNeedsAScope", func(t *testing.T, b Backend) {
	e := Open(t, b, func(o *store.Options) {
		o.Map = func(*mapping.Notification, mapping.States) (mapping.Result, error) {
			return mapping.Result{Ignored: "x", Erase: &mapping.Erasure{EventAttr: "shop_domain"}}, nil
		}
	})
	_, err := e.Ingest(context.Background(), &mapping.Notification{Source: mapping.SourceShopify, Key: "wh-1", Body: []byte(`{}`)})
	if err == nil || !strings.Contains(err.Error(), "erasure without an identifier") {
		t.Fatalf("err = %v", err)
	}
	if n, _ := e.PendingErasures(); n != 0 {
		t.Fatalf("%d erasures queued", n)
	}
	if _, err := e.Notification(mapping.SourceShopify, "wh-1"); err == nil {
		t.Fatal("the notification was stored without its erasure")
	}
})

// ErasuresRunInTurn: several queued erasures each finish, and each erases
// only its own customer.
var _ = register("ErasuresRunInTurn", func(t *testing.T, b Backend) {
	e := Open(t, b, realMapping)
	const shop = "example.myshopify.com"
	var ids []string
	for i, c := range []int{111, 222, 333} {
		r := e.MustIngest(t, shopifyNote(shop, "orders/paid", fmt.Sprint("wh-", i), paidOrder(1000+i, c, fmt.Sprint("u-", i), fmt.Sprint("c", i, "@example.com"))))
		ids = append(ids, r.Events[0].ID)
	}
	for _, c := range []int{111, 222} {
		e.MustIngest(t, shopifyNote(shop, "customers/redact", fmt.Sprint("wh-redact-", c), map[string]any{
			"shop_domain": shop, "customer": map[string]any{"id": c}, "orders_to_redact": []int{},
		}))
	}
	if n, err := e.PendingErasures(); err != nil || n != 2 {
		t.Fatalf("pending erasures %d, %v; want 2", n, err)
	}
	done := eraseAll(t, e)
	var keys []string
	for _, d := range done {
		keys = append(keys, d.Key)
	}
	sort.Strings(keys)
	if strings.Join(keys, " ") != "wh-redact-111 wh-redact-222" {
		t.Errorf("done %v", keys)
	}
	for i, id := range ids {
		ev, err := e.Event(id)
		if err != nil {
			t.Fatal(err)
		}
		if erased := len(ev.User.Identifiers) == 0; erased != (i < 2) {
			t.Errorf("event of customer %d: identifiers %v", i, ev.User.Identifiers)
		}
	}
})
