package store

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	bolt "go.etcd.io/bbolt"
)

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
