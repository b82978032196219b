package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

var _ = register("ClaimOrderSkipLimit", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	for i, f := range []string{"first", "second", "third"} {
		e.MustIngest(t, Note(fmt.Sprint("evt_", i), Facts(f)))
		e.Clock.Add(time.Second)
	}
	now := e.Clock.Now()
	k := func(f string) string { return FactID(f) + "|af" }
	// Push "first" back behind the others.
	e.MustComplete(t, store.Completion{Key: k("first"), State: store.StateRetrying, NextAt: now.Add(time.Minute), Attempt: &store.Attempt{Outcome: "retry", Status: 503}})

	tests := []struct {
		name  string
		now   time.Time
		limit int
		skip  func(string) bool
		want  []string
	}{
		{"oldest first", now, 10, nil, []string{k("second"), k("third")}},
		{"limit", now, 1, nil, []string{k("second")}},
		{"skip leased", now, 10, func(key string) bool { return key == k("second") }, []string{k("third")}},
		{"skip then limit", now, 1, func(key string) bool { return key == k("second") }, []string{k("third")}},
		{"retry due later", now.Add(time.Minute), 10, nil, []string{k("second"), k("third"), k("first")}},
		{"before anything is due", T0.Add(-time.Millisecond), 10, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, d := range e.Due(t, "af", tt.now, tt.limit, tt.skip) {
				got = append(got, d.Delivery.Key)
				if d.Event.ID != d.Delivery.EventID {
					t.Errorf("due %s carries event %s", d.Delivery.Key, d.Event.ID)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("got %v\nwant %v", got, tt.want)
			}
		})
	}
	if ds := e.Due(t, "nobody", now, 10, nil); len(ds) != 0 {
		t.Errorf("unknown destination: %v", ds)
	}
	if !e.NextDue("nobody").IsZero() {
		t.Error("NextDue of an unknown destination is not zero")
	}
})

var _ = register("CompleteRetryDeliverSkip", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	e.MustIngest(t, Note("evt_1", Facts("f")))
	key := FactID("f") + "|af"
	now := e.Clock.Now()

	e.MustComplete(t, store.Completion{Key: key, State: store.StateRetrying, NextAt: now.Add(time.Minute), Reason: "503",
		Attempt: &store.Attempt{At: now, Outcome: "retry", Status: 503, Error: "service unavailable", Response: `{"error":"busy"}`}})
	d, _ := e.Delivery(key)
	if d.State != store.StateRetrying || d.Attempts != 1 || d.NextAtMs != now.Add(time.Minute).UnixMilli() || d.LastStatus != 503 || d.LastError != "service unavailable" {
		t.Errorf("after retry %+v", d)
	}
	if got := e.DueKeys(t, "af", now); len(got) != 0 {
		t.Errorf("due now %v; the due key should have moved to the retry time", got)
	}
	if got := e.DueKeys(t, "af", now.Add(time.Minute)); len(got) != 1 {
		t.Errorf("due at retry time %v", got)
	}
	if q, _ := e.Queue("af"); q.Depth != 1 || !q.Oldest.Equal(now.Add(time.Minute)) {
		t.Errorf("queue %+v", q)
	}
	if got := e.NextDue("af"); !got.Equal(now.Add(time.Minute)) {
		t.Errorf("NextDue %v, want the retry time", got)
	}

	// A paused destination's attempt does not spend the retry budget.
	e.MustComplete(t, store.Completion{Key: key, State: store.StateRetrying, NextAt: now.Add(2 * time.Minute), KeepBudget: true,
		Attempt: &store.Attempt{At: now, Outcome: "pause", Status: 401}})
	d, _ = e.Delivery(key)
	if d.Attempts != 2 || d.RetryBase != 1 || d.AttemptsSinceReplay() != 1 {
		t.Errorf("after keep-budget attempt %+v", d)
	}

	e.Clock.Add(3 * time.Minute)
	e.MustComplete(t, store.Completion{Key: key, State: store.StateDelivered, Attempt: &store.Attempt{At: e.Clock.Now(), Outcome: "delivered", Status: 200}})
	d, _ = e.Delivery(key)
	if d.State != store.StateDelivered || d.Attempts != 3 || d.NextAtMs != 0 || !d.DeliveredAt.Equal(e.Clock.Now()) || d.LastStatus != 200 {
		t.Errorf("after delivery %+v", d)
	}
	if got := e.DueKeys(t, "af", e.Clock.Now().Add(time.Hour)); len(got) != 0 {
		t.Errorf("due after delivery %v", got)
	}
	if q, _ := e.Queue("af"); q.Depth != 0 {
		t.Errorf("queue after delivery %+v", q)
	}
	if got := e.NextDue("af"); !got.IsZero() {
		t.Errorf("NextDue %v with nothing queued", got)
	}
	as, err := e.Attempts(key)
	if err != nil || len(as) != 3 {
		t.Fatalf("attempts %+v, %v", as, err)
	}
	for i, a := range as {
		if a.N != i+1 {
			t.Errorf("attempt %d numbered %d", i+1, a.N)
		}
	}
	if as[0].Status != 503 || as[0].Response != `{"error":"busy"}` || as[2].Outcome != "delivered" {
		t.Errorf("attempts %+v", as)
	}
	if as, _ := e.Attempts(FactID("f") + "|hook"); len(as) != 0 {
		t.Errorf("the other destination has attempts %+v", as)
	}

	t.Run("final delivery ignores a late completion without attempt", func(t *testing.T) {
		e.MustComplete(t, store.Completion{Key: key, State: store.StateRetrying, NextAt: e.Clock.Now()})
		if d, _ := e.Delivery(key); d.State != store.StateDelivered {
			t.Errorf("state %s", d.State)
		}
		if got := e.DueKeys(t, "af", e.Clock.Now()); len(got) != 0 {
			t.Errorf("due %v", got)
		}
	})
	t.Run("unknown key is ignored", func(t *testing.T) {
		e.MustComplete(t, store.Completion{Key: "evt_none|af", State: store.StateDead, Attempt: &store.Attempt{}})
	})
	t.Run("skipped without attempt", func(t *testing.T) {
		hook := FactID("f") + "|hook"
		e.MustComplete(t, store.Completion{Key: hook, State: store.StateSkipped, Reason: "sandbox event"})
		d, _ := e.Delivery(hook)
		if d.State != store.StateSkipped || d.Attempts != 0 || d.Reason != "sandbox event" {
			t.Errorf("%+v", d)
		}
		if got := e.DueKeys(t, "hook", e.Clock.Now()); len(got) != 0 {
			t.Errorf("due %v", got)
		}
	})
	t.Run("several in one call", func(t *testing.T) {
		e.MustIngest(t, Note("evt_2", Facts("g", "h")))
		e.MustComplete(t,
			store.Completion{Key: FactID("g") + "|af", State: store.StateDelivered, Attempt: &store.Attempt{Outcome: "delivered"}},
			store.Completion{Key: FactID("h") + "|af", State: store.StateDead, Reason: "400", Attempt: &store.Attempt{Outcome: "dead", Status: 400}},
		)
		g, _ := e.Delivery(FactID("g") + "|af")
		h, _ := e.Delivery(FactID("h") + "|af")
		if g.State != store.StateDelivered || h.State != store.StateDead {
			t.Errorf("states %s, %s", g.State, h.State)
		}
	})
})

var _ = register("WaitingDeliveryTimesOutAsSkipped", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	e.MustIngest(t, Note("evt_wait", Facts("w")))
	key := FactID("w") + "|af"
	deadline := T0.Add(10 * time.Minute)
	e.MustComplete(t, store.Completion{Key: key, State: store.StateWaiting, NextAt: deadline, WaitUntil: deadline, Reason: "waiting for appsflyer_id"})
	if got := e.DueKeys(t, "af", deadline.Add(-time.Second)); len(got) != 0 {
		t.Fatalf("a waiting delivery is due before its deadline: %v", got)
	}
	e.Clock.Add(10 * time.Minute)
	due := e.Due(t, "af", deadline, 10, nil)
	if len(due) != 1 || due[0].Delivery.State != store.StateWaiting {
		t.Fatalf("at the deadline: due = %+v; want the waiting delivery back", due)
	}
	e.MustComplete(t, store.Completion{Key: key, State: store.StateSkipped, Reason: "missing appsflyer_id"})
	got, err := e.Delivery(key)
	if err != nil || got.State != store.StateSkipped || got.Reason != "missing appsflyer_id" || got.Attempts != 0 {
		t.Errorf("delivery = %+v, %v; want skipped: missing appsflyer_id, never attempted", got, err)
	}
	// Final: nothing is due any more, and a late PUT does not revive it.
	if _, err := e.PutUser(ctx, "u1", map[string]string{mapping.IDAppsFlyer: "af-late"}); err != nil {
		t.Fatal(err)
	}
	if due := e.DueKeys(t, "af", deadline.Add(24*time.Hour)); len(due) != 0 {
		t.Errorf("a skipped delivery became due again: %+v", due)
	}
	if q, _ := e.Queue("af"); q.Depth != 0 {
		t.Errorf("queue depth = %d, want 0", q.Depth)
	}
})

var _ = register("Replay", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	e.MustIngest(t, Note("evt_1", Facts("f")))
	key := FactID("f") + "|af"
	for i := 0; i < 3; i++ {
		e.MustComplete(t, store.Completion{Key: key, State: store.StateRetrying, NextAt: e.Clock.Now(), Attempt: &store.Attempt{Outcome: "retry", Status: 500}})
	}
	e.MustComplete(t, store.Completion{Key: key, State: store.StateDead, Reason: "max attempts", Attempt: &store.Attempt{Outcome: "dead", Status: 500}})
	if got := e.DueKeys(t, "af", e.Clock.Now().Add(time.Hour)); len(got) != 0 {
		t.Fatalf("a dead delivery is due: %v", got)
	}
	e.Clock.Add(time.Hour)
	e.ResetWoken()

	d, err := e.Replay(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != store.StatePending || d.Reason != "replayed" || d.Attempts != 4 || d.RetryBase != 4 || d.AttemptsSinceReplay() != 0 || d.NextAtMs != e.Clock.Now().UnixMilli() {
		t.Errorf("replayed %+v", d)
	}
	if got := e.DueKeys(t, "af", e.Clock.Now()); len(got) != 1 {
		t.Errorf("due after replay %v", got)
	}
	if !e.WokenFor("af") {
		t.Errorf("OnCommit %v, want af woken by the replay", e.Woken())
	}
	t.Run("already queued is a no-op", func(t *testing.T) {
		again, err := e.Replay(ctx, key)
		if err != nil || again.State != store.StatePending || again.NextAtMs != d.NextAtMs {
			t.Errorf("%+v, %v", again, err)
		}
		if got := e.DueKeys(t, "af", e.Clock.Now()); len(got) != 1 {
			t.Errorf("due %v", got)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		if _, err := e.Replay(ctx, "evt_none|af"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("matching", func(t *testing.T) {
		e.MustIngest(t, Note("evt_2", Facts("g")))
		e.MustComplete(t, store.Completion{Key: FactID("g") + "|hook", State: store.StateDead, Attempt: &store.Attempt{Outcome: "dead"}})
		f := store.DeliveryFilter{Destination: "hook", States: []string{store.StateDead}}
		n, err := e.ReplayMatching(ctx, f, 0, true, nil)
		if err != nil || n != 1 {
			t.Fatalf("dry run %d, %v", n, err)
		}
		if d, _ := e.Delivery(FactID("g") + "|hook"); d.State != store.StateDead {
			t.Errorf("the dry run replayed: state %s", d.State)
		}
		var progress []int
		n, err = e.ReplayMatching(ctx, f, 0, false, func(done, total int) { progress = append(progress, done, total) })
		if err != nil || n != 1 || fmt.Sprint(progress) != "[1 1]" {
			t.Errorf("replayed %d, %v, progress %v", n, err, progress)
		}
		if d, _ := e.Delivery(FactID("g") + "|hook"); d.State != store.StatePending {
			t.Errorf("state %s", d.State)
		}
		if got := e.DueKeys(t, "hook", e.Clock.Now()); !contains(got, FactID("g")+"|hook") {
			t.Errorf("replayed delivery not due: %v", got)
		}
		if n, err := e.ReplayMatching(ctx, f, 0, false, nil); err != nil || n != 0 {
			t.Errorf("second replay %d, %v; want nothing left to replay", n, err)
		}
	})
})

var _ = register("QueueStats", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	e.MustIngest(t, Note("evt_1", Facts("a")))
	e.Clock.Add(time.Minute)
	e.MustIngest(t, Note("evt_2", Facts("b", "c")))
	e.MustComplete(t, store.Completion{Key: FactID("b") + "|af", State: store.StateWaiting, NextAt: e.Clock.Now().Add(10 * time.Minute), WaitUntil: e.Clock.Now().Add(10 * time.Minute)})
	e.MustComplete(t, store.Completion{Key: FactID("c") + "|af", State: store.StateDelivered, Attempt: &store.Attempt{}})
	q, err := e.Queue("af")
	if err != nil {
		t.Fatal(err)
	}
	want := store.QueueStats{Depth: 2, Oldest: T0, Waiting: 1, OldestCreate: T0}
	if !q.Oldest.Equal(want.Oldest) || !q.OldestCreate.Equal(want.OldestCreate) || q.Depth != want.Depth || q.Waiting != want.Waiting {
		t.Errorf("queue %+v, want %+v", q, want)
	}
	if q, err := e.Queue("none"); err != nil || q.Depth != 0 {
		t.Errorf("empty queue %+v, %v", q, err)
	}
})

// orderNote is a notification of one fact of user (the ordering key) that
// occurred at T0 plus sec seconds.
func orderNote(fact, user string, sec int) *mapping.Notification {
	return Note("evt_"+fact, Body{Facts: []Fact{{Fact: fact, Type: mapping.Purchase, User: user, AtMs: T0.Add(time.Duration(sec) * time.Second).UnixMilli()}}})
}

var _ = register("OrderingKeys", func(t *testing.T, b Backend) {
	e := Open(t, b, func(o *store.Options) {
		o.OrderKey = func(dest string, ev *mapping.Event) string {
			if dest != "af" {
				return ""
			}
			return ev.User.AppUserID
		}
	})
	ctx := context.Background()
	// Ingested out of event-time order: d1 at 3s, 1s, 2s; d2 at 5s, 4s.
	e.MustIngest(t, orderNote("k3", "d1", 3))
	e.MustIngest(t, orderNote("k1", "d1", 1))
	e.MustIngest(t, orderNote("k2", "d1", 2))
	e.MustIngest(t, orderNote("m1", "d2", 5))
	e.MustIngest(t, orderNote("m0", "d2", 4))
	k := func(f string) string { return FactID(f) + "|af" }
	now := e.Clock.Now()

	// held are the dispatcher's in-flight deliveries (its leases).
	held := map[string]bool{}
	claim := func(t *testing.T) []string {
		t.Helper()
		ds, err := e.Claim(ctx, "af", now, store.ClaimOptions{Limit: 100, Lease: time.Minute, Skip: func(key string) bool { return held[key] }})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range ds {
			held[d.Delivery.Key] = true
			got = append(got, d.Delivery.Key)
		}
		sort.Strings(got)
		return got
	}
	done := func(t *testing.T, key, state string) {
		t.Helper()
		c := store.Completion{Key: key, State: state, Attempt: &store.Attempt{At: now, Outcome: state}}
		if state == store.StateRetrying {
			c.NextAt = now.Add(time.Hour)
		}
		e.MustComplete(t, c)
		delete(held, key)
	}
	want := func(t *testing.T, got []string, keys ...string) {
		t.Helper()
		for i := range keys {
			keys[i] = k(keys[i])
		}
		sort.Strings(keys)
		if strings.Join(got, " ") != strings.Join(keys, " ") {
			t.Fatalf("claimed %v, want %v", got, keys)
		}
	}

	if got := e.DueKeys(t, "hook", now); len(got) != 5 {
		t.Errorf("deliveries without an ordering key: %d due, want all 5", len(got))
	}
	// Different keys in parallel, each its earliest event first.
	want(t, claim(t), "k1", "m0")
	// One at a time: nothing more while the heads are in flight.
	want(t, claim(t))
	done(t, k("k1"), store.StateDelivered)
	want(t, claim(t), "k2")
	// An unfinished (retrying) head still holds its key back.
	done(t, k("m0"), store.StateRetrying)
	want(t, claim(t))

	// The order survives a restart (leases given back on shutdown).
	keys := make([]string, 0, len(held))
	for key := range held {
		keys = append(keys, key)
	}
	if err := e.Release(ctx, keys); err != nil {
		t.Fatal(err)
	}
	held = map[string]bool{}
	e.Restart(t)
	want(t, claim(t), "k2")
	done(t, k("k2"), store.StateDead)
	want(t, claim(t), "k3")
	done(t, k("k3"), store.StateDelivered)
	// m1 waits for its retrying head m0 until m0 is finished.
	e.Clock.Add(2 * time.Hour)
	now = e.Clock.Now()
	want(t, claim(t), "m0")
	done(t, k("m0"), store.StateDelivered)
	want(t, claim(t), "m1")
	done(t, k("m1"), store.StateDelivered)
	// A replayed delivery goes again once nothing earlier of its key is
	// unfinished.
	if _, err := e.Replay(ctx, k("k2")); err != nil {
		t.Fatal(err)
	}
	want(t, claim(t), "k2")
})

func contains(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// OrderingKeyInFlightHoldsReplay: a replayed earlier delivery of a key
// waits while a later one of the same key is in flight (one at a time),
// and then goes before anything later.
var _ = register("OrderingKeyInFlightHoldsReplay", func(t *testing.T, b Backend) {
	e := Open(t, b, func(o *store.Options) {
		o.OrderKey = func(_ string, ev *mapping.Event) string { return ev.User.AppUserID }
	})
	ctx := context.Background()
	e.MustIngest(t, orderNote("k1", "d1", 1))
	e.MustIngest(t, orderNote("k2", "d1", 2))
	e.MustIngest(t, orderNote("k3", "d1", 3))
	k := func(f string) string { return FactID(f) + "|af" }
	now := e.Clock.Now()
	held := map[string]bool{}
	claim := func(t *testing.T) string {
		t.Helper()
		ds, err := e.Claim(ctx, "af", now, store.ClaimOptions{Limit: 100, Lease: time.Minute, Skip: func(key string) bool { return held[key] }})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range ds {
			held[d.Delivery.Key] = true
			got = append(got, d.Delivery.Key)
		}
		if len(got) > 1 {
			t.Fatalf("claimed %v of one key at once", got)
		}
		return strings.Join(got, "")
	}
	if got := claim(t); got != k("k1") {
		t.Fatalf("claimed %q, want k1", got)
	}
	e.MustComplete(t, store.Completion{Key: k("k1"), State: store.StateDead, Attempt: &store.Attempt{Outcome: "dead", Status: 400}})
	delete(held, k("k1"))
	if got := claim(t); got != k("k2") {
		t.Fatalf("claimed %q, want k2", got)
	}
	// k2 is in flight; k1 is replayed meanwhile.
	if _, err := e.Replay(ctx, k("k1")); err != nil {
		t.Fatal(err)
	}
	if got := claim(t); got != "" {
		t.Fatalf("claimed %q while k2 of the same key is in flight", got)
	}
	e.MustComplete(t, store.Completion{Key: k("k2"), State: store.StateDelivered, Attempt: &store.Attempt{Outcome: "delivered"}})
	delete(held, k("k2"))
	if got := claim(t); got != k("k1") {
		t.Fatalf("claimed %q, want the replayed k1 before k3", got)
	}
})
