package store

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	bolt "go.etcd.io/bbolt"
)

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

// TestShopifyCustomerErasure: customers/redact is queued with the webhook and
// carried out a chunk at a time (here chunks of one record, so bolt's resume
// cursor must continue exactly; the conformance case ShopifyCustomerErasure
// runs the same on both backends with the default chunk): the customer's events of that shop lose
// their identifiers and raw bodies, the customer's and orders' states forget
// who they belonged to, and nothing of other customers or shops changes.
func TestShopifyCustomerErasure(t *testing.T) {
	defer func(n int) { erasureChunk = n }(erasureChunk)
	erasureChunk = 1 // every record in its own step: the cursor must resume exactly
	db := mustOpen(t, &Options{Map: mapping.Map, Now: func() time.Time { return storeT0 }})
	ctx := context.Background()
	const shop, other = "example.myshopify.com", "other.myshopify.com"
	ingest := func(n *mapping.Notification) IngestResult {
		t.Helper()
		res, err := db.Ingest(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	target := ingest(shopifyNote(shop, "orders/paid", "wh-1", paidOrder(1001, 111, "u-1", "jon@example.com")))
	second := ingest(shopifyNote(shop, "orders/paid", "wh-2", paidOrder(1002, 111, "u-1", "jon@example.com")))
	keep := ingest(shopifyNote(shop, "orders/paid", "wh-3", paidOrder(1003, 222, "u-2", "ann@example.com")))
	otherShop := ingest(shopifyNote(other, "orders/paid", "wh-4", paidOrder(1001, 111, "u-9", "jon@example.com")))
	for _, r := range []IngestResult{target, second, keep, otherShop} {
		if len(r.Events) != 1 || r.Events[0].User.Identifiers[mapping.IDShopifyCustomer] == "" {
			t.Fatalf("setup: an order did not give one identified event: %+v", r)
		}
	}

	res := ingest(shopifyNote(shop, "customers/redact", "wh-redact", map[string]any{
		"shop_domain": shop, "customer": map[string]any{"id": 111, "email": "jon@example.com"}, "orders_to_redact": []int{1001},
	}))
	if res.Status != mapping.StatusIgnored || len(res.Events) != 0 {
		t.Fatalf("redact: %+v", res)
	}
	if n, err := db.PendingErasures(); err != nil || n != 1 {
		t.Fatalf("pending erasures %d, %v; want 1 queued with the webhook", n, err)
	}

	var done *ErasureDone
	for steps := 0; ; steps++ {
		if steps > 100 {
			t.Fatal("erasure did not finish")
		}
		more, d, err := db.EraseStep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d != nil {
			done = d
		}
		if !more {
			break
		}
	}
	if done == nil || done.Key != "wh-redact" || done.Events != 2 {
		t.Fatalf("done = %+v, want wh-redact with 2 events", done)
	}
	if n, _ := db.PendingErasures(); n != 0 {
		t.Fatalf("%d erasures still queued", n)
	}

	event := func(id string) mapping.Event {
		t.Helper()
		e, err := db.Event(id)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, r := range []IngestResult{target, second} {
		e := event(r.Events[0].ID)
		if len(e.User.Identifiers) != 0 {
			t.Errorf("event %s keeps identifiers %v", e.ID, e.User.Identifiers)
		}
		if e.Revenue == nil || e.Revenue.AmountMicros != 9_990_000 {
			t.Errorf("event %s lost its revenue: %+v", e.ID, e.Revenue)
		}
		n, err := db.Notification(mapping.SourceShopify, e.SourceEventID)
		if err != nil || n.Body != nil || n.Meta != nil {
			t.Errorf("raw notification %s not erased: %v %s", e.SourceEventID, err, n.Body)
		}
	}
	for _, r := range []IngestResult{keep, otherShop} {
		if e := event(r.Events[0].ID); e.User.Identifiers[mapping.IDShopifyCustomer] == "" || e.User.Identifiers[mapping.IDEmailSHA256] == "" {
			t.Errorf("event %s of another customer or shop was erased: %v", e.ID, e.User.Identifiers)
		}
	}
	if n, err := db.Notification(mapping.SourceShopify, "wh-3"); err != nil || n.Body == nil {
		t.Errorf("another customer's raw notification erased: %v", err)
	}
	if n, err := db.Notification(mapping.SourceShopify, "wh-redact"); err != nil || n.Body != nil {
		t.Errorf("the request's own body (it names the customer) is kept: %v", err)
	}
	for _, key := range []string{"shopify:" + shop + ":customer:111", "shopify:" + shop + ":order:1001", "shopify:" + shop + ":order:1002"} {
		s, ok, err := db.State(key)
		if err != nil || !ok {
			t.Fatalf("state %s: %v %v", key, ok, err)
		}
		if len(s.Identifiers) != 0 || s.AppUserID != "" || s.Values["customer_id"] != "" {
			t.Errorf("state %s still names the customer: %+v", key, s)
		}
	}
	for _, key := range []string{"shopify:" + shop + ":customer:222", "shopify:" + other + ":customer:111"} {
		if s, ok, err := db.State(key); err != nil || !ok || s.AppUserID == "" {
			t.Errorf("state %s of another customer or shop changed: %+v %v %v", key, s, ok, err)
		}
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	// A retry of the request is a duplicate and queues nothing.
	if r := ingest(shopifyNote(shop, "customers/redact", "wh-redact", map[string]any{"customer": map[string]any{"id": 111}})); !r.Duplicate {
		t.Fatalf("retry: %+v", r)
	}
	if n, _ := db.PendingErasures(); n != 0 {
		t.Fatalf("a retried request queued %d erasures", n)
	}
}

// TestErasureUnreadableJobDropped: a queued erasure that cannot be decoded is
// dropped with an error log instead of blocking every later one.
func TestErasureUnreadableJobDropped(t *testing.T) {
	var logs bytes.Buffer
	db := mustOpen(t, &Options{Map: mapping.Map, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bErasures).Put(inboxKey("shopify", "wh-x"), []byte("{not json")); err != nil {
			return err
		}
		return tx.Bucket(bErasures).Put(inboxKey("shopify", "wh-y"), []byte(`{"phase":"bogus"}`))
	}); err != nil {
		t.Fatal(err)
	}
	for i, wantMore := range []bool{true, false} {
		more, done, err := db.EraseStep(context.Background())
		if err != nil || more != wantMore || done != nil {
			t.Fatalf("step %d: more %v, done %+v, err %v", i, more, done, err)
		}
	}
	if n, _ := db.PendingErasures(); n != 0 {
		t.Fatalf("%d erasures left", n)
	}
	if strings.Count(logs.String(), "privacy erasure unreadable; dropped") != 2 || !strings.Contains(logs.String(), "unknown phase") {
		t.Fatalf("log: %s", logs.String())
	}
}

// TestPruneDropsUserIndex: pruning a user's event drops its user_events
// entry (the app user id is read from the sealed event).
func TestPruneDropsUserIndex(t *testing.T) {
	clock := &testClock{t: storeT0}
	db := mustOpen(t, &Options{
		Now: clock.Now,
		Map: func(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
			return mapping.Result{Events: []mapping.Event{{ID: "evt_" + n.Key, Type: mapping.Purchase, Source: n.Source, SourceEventID: n.Key,
				User: mapping.User{AppUserID: "u-prune", Identifiers: map[string]string{mapping.IDIDFA: "IDFA-prune"}}}}}, nil
		},
	})
	if _, err := db.Ingest(context.Background(), &mapping.Notification{Source: mapping.SourceStripe, Key: "p1", Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		n := 0
		_ = db.bolt.View(func(tx *bolt.Tx) error {
			n = tx.Bucket(bUserEvents).Stats().KeyN
			return nil
		})
		return n
	}
	if count() != 1 {
		t.Fatalf("user_events holds %d entries before the prune, want 1", count())
	}
	clock.Add(48 * time.Hour)
	if r, err := db.Prune(context.Background(), time.Hour); err != nil || r.Events != 1 {
		t.Fatalf("prune: %+v %v", r, err)
	}
	if count() != 0 {
		t.Fatalf("user_events holds %d entries after the prune", count())
	}
}
