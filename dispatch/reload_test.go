package dispatch

import (
	"testing"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/store"
)

// A reload hands a running destination a new forwarder (new endpoint or
// credentials): work sent afterwards goes through it; destinations added
// or removed, or with a new concurrency, wait for a restart.
func TestReloadSwapsForwarder(t *testing.T) {
	old := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		return forwarders.Result{Outcome: forwarders.Pause, Status: 401, Reason: "auth"}
	}}
	db, d := setup(t, 1, Destination{Name: "d", Forwarder: old, Concurrency: 1, MaxAttempts: 3}, Options{})
	ingest(t, db, "n1")
	waitFor(t, "paused on the old credentials", func() bool { return d.Health()[0].Paused })
	fixed := &fakeForwarder{batch: 1}
	r := d.Reload([]Destination{{Name: "d", Forwarder: fixed, Concurrency: 2, MaxAttempts: 3}, {Name: "new", Forwarder: fixed}})
	if len(r.Applied) != 1 || r.Applied[0] != "d" || len(r.Added) != 1 || r.Added[0] != "new" || len(r.Restart) != 1 || r.Restart[0] != "d" {
		t.Errorf("reload result %+v", r)
	}
	if _, err := d.Resume(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivered through the new forwarder", func() bool { return states(t, db)[store.StateDelivered] == 1 })
	if fixed.callCount() != 1 {
		t.Errorf("new forwarder called %d times", fixed.callCount())
	}
	if f, _ := d.Forwarder("d"); f != fixed {
		t.Error("Forwarder still returns the old one")
	}
	if r := d.Reload(nil); len(r.Removed) != 1 || r.Removed[0] != "d" {
		t.Errorf("removed %+v", r)
	}
}
