package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

var _ = register("IngestMapsStoresAndQueues", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	res := e.MustIngest(t, Note("n1", Facts("f1", "f2")))
	if res.Duplicate || res.Status != mapping.StatusMapped || len(res.Events) != 2 {
		t.Fatalf("result %+v", res)
	}
	for _, id := range []string{FactID("f1"), FactID("f2")} {
		ev, err := e.Event(id)
		if err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		if ev.User.AppUserID != "u1" || !ev.ReceivedAt.Equal(T0) {
			t.Errorf("event %+v", ev)
		}
		ds, err := e.EventDeliveries(id)
		if err != nil || len(ds) != 2 || ds[0].Destination != "af" || ds[1].Destination != "hook" || ds[0].State != store.StatePending {
			t.Fatalf("deliveries of %s: %+v %v", id, ds, err)
		}
	}
	n, err := e.Notification(mapping.SourceStripe, "n1")
	if err != nil || n.Status != mapping.StatusMapped || len(n.EventIDs) != 2 {
		t.Fatalf("inbox %+v %v", n, err)
	}
	st, ok, err := e.State("test:count")
	if err != nil || !ok || st.Value("count") != "1" {
		t.Fatalf("state %+v %v %v", st, ok, err)
	}
	if got := e.DueKeys(t, "af", T0); len(got) != 2 {
		t.Fatalf("due %v", got)
	}
	if w := e.Woken(); len(w) == 0 {
		t.Error("no wake-up after a commit that queued work")
	}
})

var _ = register("IngestDuplicateWritesNothing", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	e.MustIngest(t, Note("n1", Facts("f1")))
	res := e.MustIngest(t, Note("n1", Facts("f1", "f2")))
	if !res.Duplicate || res.Existing == nil || res.Existing.Key != "n1" {
		t.Fatalf("second ingest %+v", res)
	}
	if _, err := e.Event(FactID("f2")); err == nil {
		t.Fatal("a duplicate's new fact was stored")
	}
	alt := Note("n2", Facts("f3"))
	alt.AltKeys = []string{"uuid-1"}
	e.MustIngest(t, alt)
	again := Note("n3", Facts("f4"))
	again.AltKeys = []string{"uuid-1"}
	res = e.MustIngest(t, again)
	if !res.Duplicate || res.Existing.Key != "n2" {
		t.Fatalf("alt-key duplicate %+v", res)
	}
	if _, err := e.Notification(mapping.SourceStripe, "n3"); err == nil {
		t.Fatal("a duplicate by alt key left an inbox row")
	}
	st, _, _ := e.State("test:count")
	if st.Value("count") != "2" {
		t.Fatalf("state counted %s mappings, want 2", st.Value("count"))
	}
})

var _ = register("ClaimCompleteRetryDeliver", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	e.MustIngest(t, Note("n1", Facts("f1")))
	key := FactID("f1") + "|af"
	due, err := e.Claim(ctx, "af", T0, store.ClaimOptions{Limit: 10, Lease: time.Minute})
	if err != nil || len(due) != 1 || due[0].Delivery.Key != key || due[0].Event.ID != FactID("f1") {
		t.Fatalf("claim %+v %v", due, err)
	}
	next := T0.Add(30 * time.Second)
	if err := e.Complete(ctx, []store.Completion{{Key: key, State: store.StateRetrying, NextAt: next, Reason: "http_503",
		Attempt: &store.Attempt{At: T0, Outcome: "retry", Status: 503}}}); err != nil {
		t.Fatal(err)
	}
	if got := e.DueKeys(t, "af", T0.Add(time.Second)); len(got) != 0 {
		t.Fatalf("retrying delivery due early: %v", got)
	}
	if got := e.DueKeys(t, "af", next); len(got) != 1 {
		t.Fatalf("retrying delivery not due at its time: %v", got)
	}
	e.Clock.Add(30 * time.Second)
	if err := e.Complete(ctx, []store.Completion{{Key: key, State: store.StateDelivered, Attempt: &store.Attempt{At: next, Outcome: "delivered", Status: 200}}}); err != nil {
		t.Fatal(err)
	}
	d, err := e.Delivery(key)
	if err != nil || d.State != store.StateDelivered || d.Attempts != 2 || d.LastStatus != 200 || d.NextAtMs != 0 {
		t.Fatalf("delivery %+v %v", d, err)
	}
	atts, err := e.Attempts(key)
	if err != nil || len(atts) != 2 || atts[0].N != 1 || atts[1].N != 2 || atts[0].Status != 503 {
		t.Fatalf("attempts %+v %v", atts, err)
	}
	if got := e.DueKeys(t, "af", next.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("delivered still due: %v", got)
	}
})
