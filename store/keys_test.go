package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/storetest/fakemap"
)

// deliveryLayout checks that every delivery and attempt is stored under its
// event's time-ordered key, and returns how many of each there are.
func deliveryLayout(t *testing.T, db *DB) (deliveries, attempts int) {
	t.Helper()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		ids := tx.Bucket(bEventIDs)
		check := func(b []byte, n *int) error {
			return tx.Bucket(b).ForEach(func(k, _ []byte) error {
				*n++
				id, _, ok := bytes.Cut(k[min(8, len(k)):], []byte("|"))
				if !ok || len(k) < 8 || !bytes.Equal(ids.Get(id), k[:8]) {
					t.Errorf("%s key %q is not its event's time-ordered key", b, k)
				}
				return nil
			})
		}
		if err := check(bDeliveries, &deliveries); err != nil {
			return err
		}
		return check(bAttempts, &attempts)
	})
	if err != nil {
		t.Fatal(err)
	}
	return deliveries, attempts
}

// TestDeliveriesTimeOrdered: deliveries and attempts are stored under
// their event's time-ordered key, so the deliveries of events received in
// order are stored in that order, and every read by delivery key finds
// them.
func TestDeliveriesTimeOrdered(t *testing.T) {
	db := openTest(t)
	var first string
	for i := range 5 {
		f := fmt.Sprint("to", i)
		db.ingest(t, fakemap.Note("evt_"+f, fakemap.Facts(f)))
		if i == 0 {
			first = fakemap.FactID(f)
		}
		db.clock.Add(time.Second)
	}
	var order []uint64
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bDeliveries).ForEach(func(k, _ []byte) error {
			order = append(order, binary.BigEndian.Uint64(k[:8]))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] || order[len(order)-1] == order[0] {
			t.Fatalf("deliveries not in receive order: %v", order)
		}
	}
	ds, err := db.EventDeliveries(first)
	if err != nil || len(ds) != 2 {
		t.Fatalf("EventDeliveries: %v %v", ds, err)
	}
	att := &Attempt{At: storeT0, Outcome: "retry", Status: 503, Request: "POST /x"}
	if err := db.Complete(context.Background(), []Completion{{Key: ds[0].Key, State: StateRetrying, NextAt: storeT0.Add(time.Hour), Attempt: att}}); err != nil {
		t.Fatal(err)
	}
	if d, err := db.Delivery(ds[0].Key); err != nil || d.State != StateRetrying || d.Attempts != 1 {
		t.Fatalf("Delivery after Complete: %+v %v", d, err)
	}
	if as, err := db.Attempts(ds[0].Key); err != nil || len(as) != 1 || as[0].Status != 503 || as[0].Request != "POST /x" {
		t.Fatalf("Attempts: %+v %v", as, err)
	}
	if n, a := deliveryLayout(t, db.DB); n != 10 || a != 1 {
		t.Fatalf("%d deliveries and %d attempts stored, want 10 and 1", n, a)
	}
	if _, err := db.Delivery("evt_missing|af"); err == nil {
		t.Error("a delivery of an event that is not stored was found")
	}
	if as, err := db.Attempts("evt_missing|af"); err != nil || len(as) != 0 {
		t.Errorf("attempts of a delivery whose event is not stored: %v %v", as, err)
	}
}

// TestUpgradeDeliveryKeys: a schema 2 file, whose deliveries and attempts
// are keyed by delivery key, is moved to time-ordered keys at open; every
// delivery, attempt and queue entry reads back, and a delivery whose event
// is gone is dropped with its queue entry.
func TestUpgradeDeliveryKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s2.db")
	clock := &testClock{t: storeT0}
	opts := func() *Options {
		return &Options{Map: fakemap.Map, Now: clock.Now, Logger: slog.New(slog.DiscardHandler),
			Route: func(*mapping.Event) []string { return []string{"af", "hook"} }}
	}
	db, err := Open(path, opts())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		f := fmt.Sprint("up", i)
		if _, err := db.Ingest(context.Background(), fakemap.Note("evt_"+f, fakemap.Facts(f))); err != nil {
			t.Fatal(err)
		}
	}
	id := fakemap.FactID("up1")
	att := &Attempt{At: storeT0, Outcome: "retry", Status: 500, Request: "POST /hook"}
	if err := db.Complete(context.Background(), []Completion{{Key: id + "|hook", State: StateRetrying, NextAt: storeT0, Attempt: att}}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Back to schema 2: deliveries and attempts under their delivery key,
	// and one delivery whose event is gone, still queued.
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bDeliveries, bAttempts} {
			if err := rewrite(tx.Bucket(b), func(k, v []byte) ([]byte, []byte, error) { return k[8:], v, nil }); err != nil {
				return err
			}
		}
		gone := Delivery{Key: "evt_gone|af", EventID: "evt_gone", Destination: "af", State: StatePending, NextAtMs: storeT0.UnixMilli()}
		if err := putJSON(tx.Bucket(bDeliveries), []byte(gone.Key), &gone); err != nil {
			return err
		}
		if err := putDue(tx, &gone); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put([]byte("schema"), []byte(schemaSealed))
	}); err != nil {
		t.Fatal(err)
	}
	bdb.Close()

	db, err = Open(path, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, a := deliveryLayout(t, db); n != 6 || a != 1 {
		t.Fatalf("after the upgrade %d deliveries and %d attempts, want 6 and 1", n, a)
	}
	if d, err := db.Delivery(id + "|hook"); err != nil || d.State != StateRetrying || d.Attempts != 1 {
		t.Fatalf("delivery after the upgrade: %+v %v", d, err)
	}
	if as, err := db.Attempts(id + "|hook"); err != nil || len(as) != 1 || as[0].Request != "POST /hook" {
		t.Fatalf("attempts after the upgrade: %+v %v", as, err)
	}
	due, err := db.DueFor("af", storeT0.Add(time.Minute), 100, nil)
	if err != nil || len(due) != 3 {
		t.Fatalf("due after the upgrade: %d %v", len(due), err)
	}
	if q, err := db.Queue("af"); err != nil || q.Depth != 3 {
		t.Fatalf("queue after the upgrade: %+v %v (the orphan's entry must be gone)", q, err)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	var schema string
	_ = db.bolt.View(func(tx *bolt.Tx) error { schema = string(tx.Bucket(bMeta).Get([]byte("schema"))); return nil })
	if schema != schemaCurrent {
		t.Fatalf("schema %q after the upgrade", schema)
	}
}

// TestSchemaNewerRefused: a file of a schema this binary does not know is
// refused at open with a message naming both versions, and left as it is.
func TestSchemaNewerRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	db, err := Open(path, &Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put([]byte("schema"), []byte("9")) }); err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	_, err = Open(path, &Options{Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrSchemaNewer) || !strings.Contains(err.Error(), "schema version 9") || !strings.Contains(err.Error(), "knows up to 3") {
		t.Fatalf("open of a schema 9 file: %v", err)
	}
	bdb, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	_ = bdb.View(func(tx *bolt.Tx) error {
		if s := string(tx.Bucket(bMeta).Get([]byte("schema"))); s != "9" {
			t.Errorf("schema %q after the refused open", s)
		}
		return nil
	})
}

// TestUserCache: identity records decoded once are reused only while the
// stored record is unchanged; a PUT is seen by the next claim, and an
// erased user's entry is gone.
func TestUserCache(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.PutUser(ctx, "u1", map[string]string{"idfa": "IDFA-1"}); err != nil {
		t.Fatal(err)
	}
	db.ingest(t, fakemap.Note("evt_c1", fakemap.Facts("c1")))
	claim := func(id, want string) string {
		t.Helper()
		due, err := db.DueFor("af", storeT0.Add(time.Hour), 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range due {
			if d.Event.ID == fakemap.FactID(id) {
				return d.Event.Identifier(want)
			}
		}
		t.Fatalf("%s not due", id)
		return ""
	}
	idfa := func() string { return claim("c1", "idfa") }
	if got := idfa(); got != "IDFA-1" {
		t.Fatalf("idfa %q, want IDFA-1", got)
	}
	if got := idfa(); got != "IDFA-1" { // from the cache
		t.Fatalf("idfa %q from the cache", got)
	}
	// A PUT after the ingest: the claim sees the identifier it adds, and
	// the next ingest the value it changes.
	if _, err := db.PutUser(ctx, "u1", map[string]string{"idfa": "IDFA-2", "adid": "ADID-2"}); err != nil {
		t.Fatal(err)
	}
	if got := claim("c1", "adid"); got != "ADID-2" {
		t.Fatalf("adid %q after a PUT, want ADID-2 (a stale cache entry)", got)
	}
	db.ingest(t, fakemap.Note("evt_c2", fakemap.Facts("c2")))
	if got := claim("c2", "idfa"); got != "IDFA-2" {
		t.Fatalf("idfa %q of an event ingested after a PUT, want IDFA-2", got)
	}
	// Concurrent readers and writers (go test -race).
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			if _, err := db.PutUser(ctx, "u1", map[string]string{"gaid": fmt.Sprint("G-", i)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 50 {
		_ = idfa()
	}
	<-done
	uk := db.seal.UserKey("u1")
	if _, err := db.DeleteUser(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	db.users.mu.Lock()
	_, left := db.users.m[uk]
	db.users.mu.Unlock()
	if left {
		t.Fatal("the erased user's decoded record is still cached")
	}
}

// TestCompletePrepared: an outcome of a claimed delivery is worked out
// before the transaction and stored exactly as one worked out inside it;
// one whose delivery changed since the claim, or whose event was erased,
// is worked out again inside the transaction.
func TestCompletePrepared(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.PutUser(ctx, "u1", map[string]string{"idfa": "IDFA-P"}); err != nil {
		t.Fatal(err)
	}
	db.ingest(t, fakemap.Note("evt_p1", fakemap.Facts("p1")))
	claim := func(dest string) Due {
		t.Helper()
		due, err := db.DueFor(dest, storeT0.Add(time.Hour), 10, nil)
		if err != nil || len(due) != 1 {
			t.Fatalf("due %s: %d %v", dest, len(due), err)
		}
		return due[0]
	}
	af, hook := claim("af"), claim("hook")
	outcome := func(d *Due, claimed bool, n int) Completion {
		c := Completion{Key: d.Delivery.Key, State: StateRetrying, NextAt: storeT0.Add(time.Duration(n) * time.Minute), Reason: "http_503",
			Attempt: &Attempt{At: storeT0, Outcome: "retry", Status: 503, Request: "POST /x idfa=IDFA-P", Response: "busy"}}
		if claimed {
			c.Claimed = &d.Delivery
		}
		return c
	}
	before := db.preparedOutcomes.Load()
	if err := db.Complete(ctx, []Completion{outcome(&af, true, 1), outcome(&hook, false, 1)}); err != nil {
		t.Fatal(err)
	}
	if got := db.preparedOutcomes.Load() - before; got != 1 {
		t.Fatalf("%d outcomes prepared, want 1 (the claimed one)", got)
	}
	da, _ := db.Delivery(af.Delivery.Key)
	dh, _ := db.Delivery(hook.Delivery.Key)
	da.Key, da.Destination = dh.Key, dh.Destination
	if da != dh {
		t.Fatalf("prepared outcome %+v differs from the one made in the transaction %+v", da, dh)
	}
	aa, _ := db.Attempts(af.Delivery.Key)
	ah, _ := db.Attempts(hook.Delivery.Key)
	if len(aa) != 1 || len(ah) != 1 || aa[0] != ah[0] || aa[0].Request != "POST /x idfa=IDFA-P" {
		t.Fatalf("attempts %+v and %+v", aa, ah)
	}
	// The same claim again: the delivery has changed since, so the outcome
	// is worked out in the transaction, as attempt 2.
	before = db.preparedOutcomes.Load()
	if err := db.Complete(ctx, []Completion{outcome(&af, true, 2)}); err != nil {
		t.Fatal(err)
	}
	if db.preparedOutcomes.Load() != before {
		t.Fatal("a stale claim was written as prepared")
	}
	if d, _ := db.Delivery(af.Delivery.Key); d.Attempts != 2 {
		t.Fatalf("attempts %d after a second outcome, want 2", d.Attempts)
	}
	if as, _ := db.Attempts(af.Delivery.Key); len(as) != 2 || as[1].N != 2 {
		t.Fatalf("attempt log %+v", as)
	}
	// Erased between the claim and the outcome: not prepared, and the
	// attempt's request is not readable.
	af = claim("af")
	if _, err := db.DeleteUser(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	before = db.preparedOutcomes.Load()
	if err := db.Complete(ctx, []Completion{outcome(&af, true, 3)}); err != nil {
		t.Fatal(err)
	}
	if db.preparedOutcomes.Load() != before {
		t.Fatal("an outcome prepared before an erasure was written as prepared")
	}
	if as, _ := db.Attempts(af.Delivery.Key); len(as) > 0 && as[len(as)-1].Request != "" {
		t.Fatalf("the request of an attempt recorded after the erasure reads back: %+v", as[len(as)-1])
	}
}
