package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

var _ = register("Prune", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	states := map[string]string{
		"delivered": store.StateDelivered, "dead": store.StateDead, "skipped": store.StateSkipped,
		"pending": store.StatePending, "retrying": store.StateRetrying, "waiting": store.StateWaiting,
	}
	for f, st := range states {
		n := &mapping.Notification{Source: mapping.SourceStripe, Key: "evt_" + f, AltKeys: []string{"alt_" + f}, Body: MustJSON(Facts(f))}
		e.MustIngest(t, n)
		for _, dest := range []string{"af", "hook"} {
			c := store.Completion{Key: FactID(f) + "|" + dest, State: store.StateDelivered, Attempt: &store.Attempt{Outcome: "delivered"}}
			if dest == "af" {
				c.State, c.NextAt = st, T0.Add(100*24*time.Hour)
				if st == store.StateWaiting {
					c.WaitUntil = c.NextAt
				}
				if st == store.StatePending {
					continue
				}
			}
			e.MustComplete(t, c)
		}
	}
	e.MustIngest(t, &mapping.Notification{Source: mapping.SourceGoogle, Key: "enriching", Deferred: true, Body: []byte(`{}`)})
	e.MustIngest(t, Note("evt_ignored", Body{Ignore: "x"}))
	e.Clock.Add(40 * 24 * time.Hour)
	e.MustIngest(t, Note("evt_recent", Facts("recent")))
	e.MustComplete(t,
		store.Completion{Key: FactID("recent") + "|af", State: store.StateDelivered, Attempt: &store.Attempt{}},
		store.Completion{Key: FactID("recent") + "|hook", State: store.StateDelivered, Attempt: &store.Attempt{}})

	r, err := e.Prune(ctx, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != 3 || r.Notifications != 7 || r.Kept != 4 {
		t.Errorf("prune %+v, want 3 events (delivered, dead, skipped), 7 inbox items, 4 kept (3 unfinished events, 1 enriching)", r)
	}
	for f, st := range states {
		_, err := e.Event(FactID(f))
		final := store.Final(st)
		if final != errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s event: %v", f, err)
		}
		if as, _ := e.Attempts(FactID(f) + "|hook"); final != (len(as) == 0) {
			t.Errorf("%s attempts %v", f, as)
		}
		if _, err := e.Delivery(FactID(f) + "|hook"); final != errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s delivery: %v", f, err)
		}
		if ds, err := e.EventDeliveries(FactID(f)); err != nil || final != (len(ds) == 0) {
			t.Errorf("%s event deliveries %v, %v", f, ds, err)
		}
	}
	// Unfinished work is kept and still due.
	if got := e.DueKeys(t, "af", T0.Add(100*24*time.Hour)); len(got) != 3 {
		t.Errorf("due after prune %v, want pending, retrying and waiting", got)
	}
	if _, err := e.Event(FactID("recent")); err != nil {
		t.Errorf("recent event pruned: %v", err)
	}
	if _, err := e.Notification(mapping.SourceGoogle, "enriching"); err != nil {
		t.Errorf("enriching item pruned: %v", err)
	}
	if _, err := e.Notification(mapping.SourceStripe, "evt_pending"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old inbox item kept: %v", err)
	}
	// The alt keys went with their inbox items.
	if res := e.MustIngest(t, &mapping.Notification{Source: mapping.SourceStripe, Key: "evt_new", AltKeys: []string{"alt_dead"}, Body: []byte(`{}`)}); res.Duplicate {
		t.Error("a pruned item's alt key still marks duplicates")
	}
	if again, _ := e.Prune(ctx, 30*24*time.Hour); again.Events != 0 || again.Notifications != 0 || again.Kept != 4 {
		t.Errorf("second prune %+v", again)
	}
})

// bulk is the number of events the chunked prune cases write: more than two
// of either backend's prune chunks (BoltDB 256, PostgreSQL 2000).
const bulk = 4500

var _ = register("PruneInChunks", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	// Unfinished work first, so every chunk scans past it.
	e.MustIngest(t, Note("evt_kept", Facts("kept1", "kept2")))
	e.Clock.Add(time.Second)
	var body Body
	for i := 0; i < bulk; i++ {
		body.Facts = append(body.Facts, Fact{Fact: fmt.Sprint("bulk", i), Type: mapping.Purchase})
	}
	e.MustIngest(t, Note("evt_bulk", body))
	var cs []store.Completion
	for i := 0; i < bulk; i++ {
		for _, dest := range []string{"af", "hook"} {
			cs = append(cs, store.Completion{Key: FactID(fmt.Sprint("bulk", i)) + "|" + dest, State: store.StateDelivered, Attempt: &store.Attempt{Outcome: "delivered"}})
		}
	}
	e.MustComplete(t, cs...)
	e.Clock.Add(31 * 24 * time.Hour)
	r, err := e.Prune(ctx, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != bulk || r.Notifications != 2 || r.Kept != 2 {
		t.Errorf("prune %+v, want %d events, 2 inbox items, 2 kept", r, bulk)
	}
	page, err := e.Events(store.EventFilter{Limit: 500})
	if err != nil || len(page.Events) != 2 {
		t.Errorf("left %d events, %v; want the 2 unfinished", len(page.Events), err)
	}
})

var _ = register("PruneInboxInChunks", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	e.MustIngest(t, &mapping.Notification{Source: mapping.SourceGoogle, Key: "enriching", Deferred: true, Body: []byte(`{}`)})
	e.Clock.Add(time.Second)
	const n = 2100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				_, err := e.Ingest(ctx, Note(fmt.Sprint("evt_", i), Body{Ignore: "x"}))
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	e.Clock.Add(31 * 24 * time.Hour)
	r, err := e.Prune(ctx, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r.Notifications != n || r.Kept != 1 || r.Events != 0 {
		t.Errorf("prune %+v, want %d inbox items and 1 kept", r, n)
	}
	if pend, _ := e.Pending(mapping.SourceGoogle, 10); len(pend) != 1 {
		t.Errorf("enriching item lost: %v", pend)
	}
	if _, err := e.Notification(mapping.SourceStripe, "evt_7"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pruned item still readable: %v", err)
	}
})

// ForwarderMemory: a destination's memory keeps the latest time per key,
// separately per destination, across a restart, and retention prunes it.
var _ = register("ForwarderMemory", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	now := e.Clock.Now()
	a, other := e.ForwarderMemory("adjust"), e.ForwarderMemory("adjust-2")
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
	if _, ok, _ := other.Get("k"); ok {
		t.Fatal("another destination sees the key")
	}
	t3 := now.Add(-30 * time.Minute)
	if err := a.Put("k", t3); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := a.Get("k"); !got.Equal(t3) {
		t.Fatalf("Get = %v after advancing, want %v", got, t3)
	}
	e.Restart(t)
	a = e.ForwarderMemory("adjust")
	if got, ok, _ := a.Get("k"); !ok || !got.Equal(t3) {
		t.Fatalf("after restart: %v %v", got, ok)
	}

	// bulk entries, more than two prune chunks: the old half goes.
	var wg sync.WaitGroup
	errs := make(chan error, bulk)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < bulk; i += 8 {
				at := now.Add(-time.Hour)
				if i%2 == 0 {
					at = now.Add(-40 * 24 * time.Hour)
				}
				errs <- a.Put(fmt.Sprintf("dev-%05d", i), at)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.Prune(context.Background(), 720*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r.Memory != bulk/2 {
		t.Fatalf("pruned %d memory entries, want %d", r.Memory, bulk/2)
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
})

var _ = register("StatsAndDeadCounts", func(t *testing.T, b Backend) {
	base := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	e := Open(t, b, func(o *store.Options) {
		o.Route = func(*mapping.Event) []string { return []string{"a", "b"} }
		o.Map = func(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
			return mapping.Result{Events: []mapping.Event{{ID: "evt_" + n.Key, Type: mapping.Type(n.Type), Source: n.Source}}}, nil
		}
	})
	ctx := context.Background()
	ingest := func(key, typ string, at time.Time) {
		t.Helper()
		e.MustIngest(t, &mapping.Notification{Source: "custom", Key: key, Type: typ, ReceivedAt: at})
	}
	ingest("1", "trial_started", base.Add(10*time.Minute))
	ingest("2", "trial_started", base.Add(50*time.Minute))
	ingest("3", "refund", base.Add(70*time.Minute))
	ingest("4", "refund", base.Add(3*time.Hour))  // outside the window
	ingest("0", "refund", base.Add(-time.Minute)) // before the window
	if err := e.Complete(ctx, []store.Completion{
		{Key: "evt_1|a", State: store.StateDelivered, Attempt: &store.Attempt{Outcome: "delivered", Status: 200}},
		{Key: "evt_2|a", State: store.StateDead, Attempt: &store.Attempt{Outcome: "dead", Status: 400}},
		{Key: "evt_4|b", State: store.StateDead, Attempt: &store.Attempt{Outcome: "dead", Status: 400}},
	}); err != nil {
		t.Fatal(err)
	}

	s, err := e.Stats(base, base.Add(2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Truncated is the backend's own business (a scan bound); not asserted.
	if len(s.Buckets) != 2 || s.Events != 3 {
		t.Fatalf("buckets %d events %d, want 2, 3", len(s.Buckets), s.Events)
	}
	if got := s.Buckets[0]; got["trial_started"] != 2 || len(got) != 1 {
		t.Errorf("hour 0: %v, want trial_started 2", got)
	}
	if got := s.Buckets[1]; got["refund"] != 1 || len(got) != 1 {
		t.Errorf("hour 1: %v, want refund 1", got)
	}
	if a := s.Deliveries["a"]; a[store.StateDelivered] != 1 || a[store.StateDead] != 1 || a[store.StatePending] != 1 {
		t.Errorf("destination a: %v", a)
	}
	if b := s.Deliveries["b"]; b[store.StatePending] != 3 || b[store.StateDead] != 0 {
		t.Errorf("destination b: %v", b)
	}
	for _, tc := range []struct {
		name          string
		since, until  time.Time
		bucket        time.Duration
		buckets, evts int
	}{
		{"empty window", base.Add(10 * time.Hour), base.Add(11 * time.Hour), time.Hour, 1, 0},
		{"bucket below a minute", base, base.Add(11 * time.Minute), time.Second, 11, 1},
		{"until before since", base.Add(time.Hour), base, time.Hour, 1, 1},
		{"partial last bucket", base, base.Add(90 * time.Minute), time.Hour, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := e.Stats(tc.since, tc.until, tc.bucket)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Buckets) != tc.buckets || s.Events != tc.evts {
				t.Errorf("buckets %d events %d, want %d %d", len(s.Buckets), s.Events, tc.buckets, tc.evts)
			}
		})
	}
	dead, err := e.DeadCounts()
	if err != nil {
		t.Fatal(err)
	}
	if dead["a"] != 1 || dead["b"] != 1 || len(dead) != 2 {
		t.Errorf("dead counts %v, want a 1, b 1", dead)
	}
})

var _ = register("SingletonAndDescribe", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ran := false
	ok, err := e.Singleton(context.Background(), "prune", func(context.Context) { ran = true })
	if err != nil || !ok || !ran {
		t.Errorf("uncontended Singleton: ran %v, reported %v, %v", ran, ok, err)
	}
	// The claim ends when fn returns: the job runs again.
	ran = false
	if ok, err := e.Singleton(context.Background(), "prune", func(context.Context) { ran = true }); err != nil || !ok || !ran {
		t.Errorf("second Singleton: ran %v, reported %v, %v", ran, ok, err)
	}
	if d := e.Describe(); d == "" {
		t.Error("Describe is empty")
	}
	if err := e.Check(); err != nil {
		t.Errorf("Check of a fresh store: %v", err)
	}
})
