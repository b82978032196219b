package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestForwarderMemory: a destination's memory keeps the latest time per key,
// separately per destination, across a reopen, and retention prunes it.
func TestForwarderMemory(t *testing.T) {
	now := storeT0
	path := t.TempDir() + "/postback.db"
	db, err := Open(path, &Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	a, b := db.ForwarderMemory("adjust"), db.ForwarderMemory("adjust-2")
	if _, ok, err := a.Get("k"); ok || err != nil {
		t.Fatalf("empty memory: %v %v", ok, err)
	}
	t1, t2 := now.Add(-2*time.Hour), now.Add(-time.Hour)
	for _, at := range []time.Time{t2, t1} { // the older write comes last and must not win
		if err := a.Put("k", at); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok, err := a.Get("k"); !ok || err != nil || !got.Equal(t2) {
		t.Fatalf("Get = %v %v %v, want %v", got, ok, err, t2)
	}
	if _, ok, _ := b.Get("k"); ok {
		t.Fatal("another destination sees the key")
	}
	db.Close()

	db, err = Open(path, &Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a = db.ForwarderMemory("adjust")
	if got, ok, _ := a.Get("k"); !ok || !got.Equal(t2) {
		t.Fatalf("after reopen: %v %v", got, ok)
	}

	// 4 500 entries, more than two prune chunks: the old half goes.
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		for i := 0; i < 4500; i++ {
			at := now.Add(-time.Hour)
			if i%2 == 0 {
				at = now.Add(-40 * 24 * time.Hour)
			}
			if err := tx.Bucket(bFwdMemory).Put([]byte(fmt.Sprintf("adjust\x00dev-%05d", i)), msKey(at)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r, err := db.Prune(context.Background(), 720*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r.Memory != 2250 {
		t.Fatalf("pruned %d memory entries, want 2250", r.Memory)
	}
	if _, ok, _ := a.Get("dev-00000"); ok {
		t.Error("an entry past retention survived")
	}
	if _, ok, _ := a.Get("dev-00001"); !ok {
		t.Error("a fresh entry was pruned")
	}
	if _, ok, _ := a.Get("k"); !ok {
		t.Error("the first entry was pruned")
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}
