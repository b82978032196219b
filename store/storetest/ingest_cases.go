package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
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
	if !e.WokenFor("af") { // OnCommit may run just after Ingest returned
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

var _ = register("IngestDetails", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	res := e.MustIngest(t, Note("evt_1", Facts("sub_1:renewal:in_1", "sub_1:other")))
	if res.Duplicate || res.Status != mapping.StatusMapped || len(res.Events) != 2 || res.Repeats != 0 {
		t.Fatalf("result %+v", res)
	}
	for _, id := range []string{FactID("sub_1:renewal:in_1"), FactID("sub_1:other")} {
		ev, err := e.Event(id)
		if err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		if !ev.ReceivedAt.Equal(T0) || ev.SourceEventID != "evt_1" {
			t.Errorf("event %+v: received_at defaults to the clock, source event id is the key", ev)
		}
		ds, err := e.EventDeliveries(id)
		if err != nil || len(ds) != 2 {
			t.Fatalf("deliveries of %s: %+v, %v", id, ds, err)
		}
		for _, d := range ds {
			if d.State != store.StatePending || d.NextAtMs != T0.UnixMilli() || (d.UserKey == "" || d.UserKey == "u1") || d.Key != id+"|"+d.Destination {
				t.Errorf("delivery %+v", d)
			}
		}
	}
	for _, dest := range []string{"af", "hook"} {
		if got := e.DueKeys(t, dest, T0); len(got) != 2 {
			t.Errorf("due for %s: %v, want 2", dest, got)
		}
		if q, err := e.Queue(dest); err != nil || q.Depth != 2 || !q.Oldest.Equal(T0) {
			t.Errorf("queue %s: %+v, %v", dest, q, err)
		}
	}
	if got := e.NextDue("af"); !got.Equal(T0) {
		t.Errorf("NextDue = %v", got)
	}
	n, err := e.Notification(mapping.SourceStripe, "evt_1")
	if err != nil || n.Status != mapping.StatusMapped || len(n.EventIDs) != 2 || !n.ReceivedAt.Equal(T0) {
		t.Errorf("inbox item %+v, %v", n, err)
	}
	if !e.WokenFor("af") || !e.WokenFor("hook") {
		t.Errorf("OnCommit got %v, want af and hook woken", e.Woken())
	}
	t.Run("without source or key", func(t *testing.T) {
		for _, n := range []*mapping.Notification{{Key: "k"}, {Source: "stripe"}} {
			if _, err := e.Ingest(context.Background(), n); err == nil {
				t.Errorf("ingest %+v: no error", n)
			}
		}
	})
	t.Run("ignored", func(t *testing.T) {
		res := e.MustIngest(t, Note("evt_ign", Body{Ignore: "customer identity recorded"}))
		if res.Status != mapping.StatusIgnored || res.Reason != "customer identity recorded" || len(res.Events) != 0 {
			t.Errorf("result %+v", res)
		}
	})
	t.Run("not found", func(t *testing.T) {
		if _, err := e.Event("evt_none"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Event: %v", err)
		}
		if _, err := e.Notification("stripe", "none"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Notification: %v", err)
		}
		if _, err := e.Delivery("none|af"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Delivery: %v", err)
		}
	})
})

var _ = register("IngestDuplicateByKeyAndAltKey", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	first := Note("evt_1", Facts("a"))
	first.AltKeys = []string{"token-1:renewal:1700000000000"}
	e.MustIngest(t, first)
	tests := []struct {
		name string
		n    *mapping.Notification
	}{
		{"same key", Note("evt_1", Facts("b"))},
		{"same alt key", &mapping.Notification{Source: mapping.SourceStripe, Key: "evt_2", AltKeys: []string{"other", "token-1:renewal:1700000000000"}, Body: []byte(`{"facts":[{"fact":"c"}]}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.MustIngest(t, tt.n)
			if !res.Duplicate || res.Existing == nil || res.Existing.Key != "evt_1" || res.Status != mapping.StatusMapped || len(res.Events) != 0 {
				t.Fatalf("result %+v", res)
			}
			if _, err := e.Notification(mapping.SourceStripe, "evt_2"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a duplicate was stored: %v", err)
			}
			if got := e.DueKeys(t, "af", T0); len(got) != 1 {
				t.Errorf("due %v, want only the first event's delivery", got)
			}
		})
	}
	t.Run("a repeated alt key of one notification", func(t *testing.T) {
		n := Note("evt_3", Facts("d"))
		n.AltKeys = []string{"alt-3", "alt-3"}
		if res, err := e.Ingest(context.Background(), n); err != nil || res.Duplicate || len(res.Events) != 1 {
			t.Fatalf("result %+v, %v; want it stored", res, err)
		}
		again := Note("evt_4", Facts("e"))
		again.AltKeys = []string{"alt-3"}
		if res := e.MustIngest(t, again); !res.Duplicate || res.Existing == nil || res.Existing.Key != "evt_3" {
			t.Errorf("result %+v, want a duplicate of evt_3", res)
		}
	})
	t.Run("alt key of another source is not a duplicate", func(t *testing.T) {
		n := &mapping.Notification{Source: mapping.SourceGoogle, Key: "m1", AltKeys: first.AltKeys, Body: []byte(`{}`)}
		if res := e.MustIngest(t, n); res.Duplicate {
			t.Errorf("result %+v", res)
		}
	})
})

var _ = register("IngestSameEventTwice", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	// A store re-sends the same fact under a new notification id.
	a := e.MustIngest(t, Note("evt_1", Facts("sub_1:trial_converted")))
	r := e.MustIngest(t, Note("evt_2", Facts("sub_1:trial_converted")))
	if len(a.Events) != 1 || a.Repeats != 0 {
		t.Errorf("first %+v", a)
	}
	if r.Duplicate || len(r.Events) != 0 || r.Repeats != 1 || r.Status != mapping.StatusMapped {
		t.Errorf("second %+v, want one repeat and no new event", r)
	}
	if got := e.DueKeys(t, "af", T0); len(got) != 1 {
		t.Errorf("due %v, want one delivery", got)
	}
	id := FactID("sub_1:trial_converted")
	for _, k := range []string{"evt_1", "evt_2"} {
		n, err := e.Notification(mapping.SourceStripe, k)
		if err != nil || len(n.EventIDs) != 1 || n.EventIDs[0] != id {
			t.Errorf("inbox %s: %+v, %v", k, n, err)
		}
	}
	if ev, _ := e.Event(id); ev.SourceEventID != "evt_1" {
		t.Errorf("the first report wins: source event id %q", ev.SourceEventID)
	}
})

var _ = register("DeferredEnrichment", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	res := e.MustIngest(t, &mapping.Notification{Source: mapping.SourceGoogle, Key: "msg-1", Deferred: true, Body: []byte(`{"purchaseToken":"tok"}`)})
	if res.Status != mapping.StatusEnriching || len(res.Events) != 0 {
		t.Fatalf("result %+v", res)
	}
	e.Clock.Add(time.Second)
	e.MustIngest(t, &mapping.Notification{Source: mapping.SourceGoogle, Key: "msg-2", Deferred: true, Body: []byte(`{}`)})
	e.MustIngest(t, Note("evt_x", Facts("x")))

	pend, err := e.Pending(mapping.SourceGoogle, 10)
	if err != nil || len(pend) != 2 || pend[0].Key != "msg-1" || pend[1].Key != "msg-2" {
		t.Fatalf("pending %+v, %v; want msg-1, msg-2 oldest first", pend, err)
	}
	if pend, _ := e.Pending(mapping.SourceGoogle, 1); len(pend) != 1 {
		t.Errorf("limit: %d items", len(pend))
	}
	if pend, _ := e.Pending(mapping.SourceStripe, 10); len(pend) != 0 {
		t.Errorf("stripe pending %+v", pend)
	}

	enriched, _ := json.Marshal(Facts("google:tok:renewal"))
	res, err = e.Enrich(ctx, mapping.SourceGoogle, "msg-1", enriched)
	if err != nil || res.Status != mapping.StatusMapped || len(res.Events) != 1 {
		t.Fatalf("enrich: %+v, %v", res, err)
	}
	stored, _ := e.Notification(mapping.SourceGoogle, "msg-1")
	if stored.Status != mapping.StatusMapped || string(stored.Enriched) != string(enriched) {
		t.Errorf("stored %+v", stored)
	}
	if pend, _ := e.Pending(mapping.SourceGoogle, 10); len(pend) != 1 || pend[0].Key != "msg-2" {
		t.Errorf("pending after enrich %+v", pend)
	}
	again, err := e.Enrich(ctx, mapping.SourceGoogle, "msg-1", enriched)
	if err != nil || !again.Duplicate || len(again.Events) != 0 || again.Status != mapping.StatusMapped {
		t.Errorf("second enrich: %+v, %v; want a duplicate", again, err)
	}
	if got := e.DueKeys(t, "af", e.Clock.Now()); len(got) != 2 {
		t.Errorf("due %v, want evt_x's and the enriched event's", got)
	}
	if _, err := e.Enrich(ctx, mapping.SourceGoogle, "nope", enriched); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("enrich unknown: %v", err)
	}
	t.Run("enrichment that fails hard stores nothing", func(t *testing.T) {
		if _, err := e.Enrich(ctx, mapping.SourceGoogle, "msg-2", []byte(`{"fail":"hard"}`)); !errors.Is(err, ErrHard) {
			t.Errorf("err = %v, want ErrHard", err)
		}
		if pend, _ := e.Pending(mapping.SourceGoogle, 10); len(pend) != 1 || pend[0].Key != "msg-2" {
			t.Errorf("pending %+v; want msg-2 still waiting", pend)
		}
	})
	t.Run("enrichment that does not map", func(t *testing.T) {
		res, err := e.Enrich(ctx, mapping.SourceGoogle, "msg-2", []byte(`{"fail":"malformed"}`))
		if err != nil || res.Status != mapping.StatusFailed {
			t.Errorf("%+v, %v", res, err)
		}
		if n, err := e.Notification(mapping.SourceGoogle, "msg-2"); err != nil || n.Status != mapping.StatusFailed || n.Reason == "" {
			t.Errorf("stored %+v, %v", n, err)
		}
		if pend, _ := e.Pending(mapping.SourceGoogle, 10); len(pend) != 0 {
			t.Errorf("pending %+v; a failed item is not pending", pend)
		}
	})
})

var _ = register("MappingErrorStoredAsFailed", func(t *testing.T, b Backend) {
	for _, fail := range []string{"malformed", "currency", "amount", "unknown"} {
		t.Run(fail, func(t *testing.T) {
			e := Open(t, b, nil)
			res, err := e.Ingest(context.Background(), Note("evt_bad", Body{Fail: fail}))
			if err != nil {
				t.Fatalf("a mapping error must not fail the ingest: %v", err)
			}
			if res.Status != mapping.StatusFailed || !strings.Contains(res.Reason, "fake") || len(res.Events) != 0 {
				t.Errorf("result %+v", res)
			}
			n, err := e.Notification(mapping.SourceStripe, "evt_bad")
			if err != nil || n.Status != mapping.StatusFailed || n.Reason == "" || string(n.Body) == "" {
				t.Errorf("inbox %+v, %v", n, err)
			}
			if _, ok, _ := e.State("test:count"); ok {
				t.Error("a failed mapping wrote state")
			}
		})
	}
	t.Run("other errors fail the ingest and store nothing", func(t *testing.T) {
		e := Open(t, b, nil)
		if _, err := e.Ingest(context.Background(), Note("evt_hard", Body{Fail: "hard"})); !errors.Is(err, ErrHard) {
			t.Fatalf("err = %v, want ErrHard", err)
		}
		if _, err := e.Notification(mapping.SourceStripe, "evt_hard"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("stored anyway: %v", err)
		}
	})
})

// fixableMap is FakeMap until fixed; before, it fails or ignores what the
// fixed mapping maps, as a mapping bug would.
type fixableMap struct{ fixed atomic.Bool }

func (f *fixableMap) Map(n *mapping.Notification, st mapping.States) (mapping.Result, error) {
	if !f.fixed.Load() {
		switch n.Key {
		case "evt_failed":
			return mapping.Result{}, fmt.Errorf("%w: bug", mapping.ErrMalformed)
		case "evt_ignored":
			return mapping.Result{Ignored: "bug"}, nil
		}
	}
	return FakeMap(n, st)
}

var _ = register("Reprocess", func(t *testing.T, b Backend) {
	fm := &fixableMap{}
	e := Open(t, b, func(o *store.Options) {
		o.Map = fm.Map
		o.Route = func(*mapping.Event) []string { return []string{"af"} }
	})
	ctx := context.Background()
	ingest := func(n *mapping.Notification) {
		t.Helper()
		e.MustIngest(t, n)
		e.Clock.Add(time.Minute)
	}
	ingest(Note("evt_ok", Facts("shared")))
	ingest(Note("evt_failed", Facts("a", "b")))
	ingest(Note("evt_ignored", Facts("c", "shared")))
	ingest(&mapping.Notification{Source: mapping.SourceApple, Key: "apple_failed", Body: []byte(`{"fail":"malformed"}`)})
	count := func() string {
		st, _, _ := e.State("test:count")
		return st.Value("count")
	}
	if c := count(); c != "1" { // only evt_ok's mapping wrote state
		t.Fatalf("state count %s", c)
	}

	fm.fixed.Store(true)
	f := store.ReprocessFilter{Source: mapping.SourceStripe}
	dry := f
	dry.DryRun = true
	want, err := e.Reprocess(ctx, dry)
	if err != nil {
		t.Fatal(err)
	}
	if want.Scanned != 4 || want.Matched != 2 || want.NewEvents != 0 {
		t.Errorf("dry run %+v, want 4 scanned, 2 matched, nothing done", want)
	}
	if got := e.DueKeys(t, "af", e.Clock.Now()); len(got) != 1 {
		t.Fatalf("the dry run queued work: %v", got)
	}
	if c := count(); c != "1" {
		t.Fatalf("the dry run wrote state: count %s", c)
	}
	got, err := e.Reprocess(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if got.Scanned != want.Scanned || got.Matched != want.Matched {
		t.Errorf("real run %+v counts differ from dry run %+v", got, want)
	}
	if got.NewEvents != 3 || got.Repeats != 1 || got.Failed != 0 {
		t.Errorf("real run %+v, want 3 new events (a, b, c) and 1 repeat (shared)", got)
	}
	if keys := e.DueKeys(t, "af", e.Clock.Now()); len(keys) != 4 {
		t.Errorf("due %v, want shared, a, b, c once each", keys)
	}
	// The failed item's state effects happen now; the ignored one's
	// already happened when it was first mapped.
	if c := count(); c != "2" {
		t.Errorf("state count %s, want 2", c)
	}
	for _, k := range []string{"evt_failed", "evt_ignored"} {
		if n, _ := e.Notification(mapping.SourceStripe, k); n == nil || n.Status != mapping.StatusMapped {
			t.Errorf("%s: %+v", k, n)
		}
	}
	if again, _ := e.Reprocess(ctx, f); again.Matched != 0 {
		t.Errorf("second reprocess %+v, want nothing to match", again)
	}

	t.Run("filters", func(t *testing.T) {
		tests := []struct {
			name    string
			f       store.ReprocessFilter
			matched int
		}{
			{"other source", store.ReprocessFilter{Source: mapping.SourceApple, DryRun: true}, 1},
			{"any source", store.ReprocessFilter{DryRun: true}, 1},
			{"mapped status", store.ReprocessFilter{Source: mapping.SourceStripe, Statuses: []string{mapping.StatusMapped}, DryRun: true}, 3},
			{"since", store.ReprocessFilter{Statuses: []string{mapping.StatusMapped}, Since: T0.Add(90 * time.Second), DryRun: true}, 1},
			{"until", store.ReprocessFilter{Statuses: []string{mapping.StatusMapped}, Until: T0.Add(30 * time.Second), DryRun: true}, 1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, err := e.Reprocess(ctx, tt.f)
				if err != nil || r.Matched != tt.matched {
					t.Errorf("%+v, %v; want %d matched", r, err, tt.matched)
				}
			})
		}
	})
	t.Run("still failing", func(t *testing.T) {
		r, err := e.Reprocess(ctx, store.ReprocessFilter{Source: mapping.SourceApple})
		if err != nil || r.Matched != 1 || r.Failed != 1 || r.NewEvents != 0 {
			t.Errorf("%+v, %v", r, err)
		}
		if n, _ := e.Notification(mapping.SourceApple, "apple_failed"); n == nil || n.Status != mapping.StatusFailed {
			t.Errorf("still failing item: %+v", n)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := e.Reprocess(c, store.ReprocessFilter{Source: mapping.SourceApple}); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v", err)
		}
	})
})

var _ = register("PingAndCancelledContext", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	if err := e.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled context either fails before storing or still reports
	// the committed result: never a half-truth.
	_, err := e.Ingest(ctx, Note("evt_ctx", Facts("c")))
	_, nerr := e.Notification(mapping.SourceStripe, "evt_ctx")
	if (err == nil) != (nerr == nil) {
		t.Errorf("ingest said %v but the store says %v", err, nerr)
	}
	if err := e.Ping(context.Background()); err != nil {
		t.Errorf("ping after a cancelled ingest: %v", err)
	}
})

// parallel runs fn(i) for i in [0, n) at once and fails on any error.
func parallel(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		go func(i int) {
			<-start
			errs <- fn(i)
		}(i)
	}
	close(start)
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

var _ = register("ConcurrentDuplicatesAndStates", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	const n = 12
	var fresh, dups atomic.Int32
	parallel(t, n, func(int) error {
		res, err := e.Ingest(ctx, Note("same", Facts("x")))
		if err == nil && res.Duplicate {
			dups.Add(1)
		} else if err == nil {
			fresh.Add(1)
		}
		return err
	})
	if fresh.Load() != 1 || dups.Load() != n-1 {
		t.Errorf("same key: %d stored, %d duplicates; want 1 and %d", fresh.Load(), dups.Load(), n-1)
	}
	var created, repeats atomic.Int32
	parallel(t, n, func(i int) error {
		res, err := e.Ingest(ctx, Note(fmt.Sprint("key_", i), Facts("shared")))
		if err == nil {
			created.Add(int32(len(res.Events)))
			repeats.Add(int32(res.Repeats))
			if res.Duplicate {
				return fmt.Errorf("key_%d is not a duplicate: %+v", i, res)
			}
		}
		return err
	})
	if created.Load() != 1 || repeats.Load() != n-1 {
		t.Errorf("same fact: %d created, %d repeats; want 1 and %d", created.Load(), repeats.Load(), n-1)
	}
	var altFresh atomic.Int32
	parallel(t, n, func(i int) error {
		note := Note(fmt.Sprint("alt_", i), Facts(fmt.Sprint("alt", i)))
		note.AltKeys = []string{"one-purchase"}
		res, err := e.Ingest(ctx, note)
		if err == nil && !res.Duplicate {
			altFresh.Add(1)
		}
		return err
	})
	if altFresh.Load() != 1 {
		t.Errorf("same alt key: %d stored, want 1", altFresh.Load())
	}
	// Every stored notification's mapping counted once: no lost update.
	if st, _, _ := e.State("test:count"); st.Value("count") != fmt.Sprint(1+n+1) {
		t.Errorf("state count %s, want %d", st.Value("count"), 1+n+1)
	}
	if got := e.DueKeys(t, "af", T0); len(got) != 3 {
		t.Errorf("due %v, want x, shared and one alt fact", got)
	}
	t.Run("enrich", func(t *testing.T) {
		e.MustIngest(t, &mapping.Notification{Source: mapping.SourceGoogle, Key: "msg", Deferred: true, Body: []byte(`{}`)})
		enriched := MustJSON(Facts("enriched"))
		var mapped atomic.Int32
		parallel(t, n, func(int) error {
			res, err := e.Enrich(ctx, mapping.SourceGoogle, "msg", enriched)
			if err == nil && !res.Duplicate {
				mapped.Add(1)
			}
			return err
		})
		if mapped.Load() != 1 {
			t.Errorf("%d enrichments mapped, want 1", mapped.Load())
		}
	})
})
