package dispatch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// fakeForwarder answers with a scripted outcome per call.
type fakeForwarder struct {
	mu      sync.Mutex
	batch   int
	calls   [][]string
	answer  func(call int, it forwarders.Item) forwarders.Result
	require string
}

func (f *fakeForwarder) Limits() forwarders.Limits { return forwarders.Limits{BatchSize: f.batch} }

func (f *fakeForwarder) Send(_ context.Context, batch []forwarders.Item) []forwarders.Result {
	f.mu.Lock()
	n := len(f.calls)
	var keys []string
	for _, it := range batch {
		keys = append(keys, it.Key)
	}
	f.calls = append(f.calls, keys)
	f.mu.Unlock()
	out := make([]forwarders.Result, len(batch))
	for i, it := range batch {
		out[i] = forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
		if f.answer != nil {
			out[i] = f.answer(n, it)
		}
	}
	return out
}

func (f *fakeForwarder) Missing(e *mapping.Event) string {
	if f.require != "" && e.Identifier(f.require) == "" {
		return f.require
	}
	return ""
}

func (f *fakeForwarder) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func setup(t testing.TB, n int, dest Destination, opts Options) (*store.DB, *Dispatcher) {
	t.Helper()
	var d *Dispatcher
	db, err := store.Open(t.TempDir()+"/db", &store.Options{
		Map: func(nt *mapping.Notification, _ mapping.States) (mapping.Result, error) {
			var evs []mapping.Event
			for i := 0; i < n; i++ {
				evs = append(evs, mapping.Event{ID: fmt.Sprintf("evt_%s_%03d", nt.Key, i), Type: mapping.Purchase, Source: "test",
					Environment: mapping.Production, User: mapping.User{AppUserID: "u1"}, ReceivedAt: nt.ReceivedAt})
			}
			return mapping.Result{Events: evs}, nil
		},
		Route:    func(*mapping.Event) []string { return []string{dest.Name} },
		OnCommit: func(ds []string) { d.Wake(ds) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if opts.Poll == 0 {
		opts.Poll = 5 * time.Millisecond
	}
	d = New(db, []Destination{dest}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return db, d
}

func ingest(t testing.TB, db *store.DB, key string) {
	t.Helper()
	if _, err := db.Ingest(context.Background(), &mapping.Notification{Source: "test", Key: key, Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func states(t testing.TB, db *store.DB) map[string]int {
	ds, err := db.Deliveries(store.DeliveryFilter{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, d := range ds {
		m[d.State]++
	}
	return m
}

func TestBatchingUpToLimit(t *testing.T) {
	f := &fakeForwarder{batch: 10}
	db, _ := setup(t, 25, Destination{Name: "d", Forwarder: f, Concurrency: 1, Linger: 50 * time.Millisecond}, Options{})
	ingest(t, db, "n1")
	waitFor(t, "all delivered", func() bool { return states(t, db)[store.StateDelivered] == 25 })
	if got := f.callCount(); got != 3 {
		t.Errorf("%d requests for 25 events with batch 10, want 3", got)
	}
}

func TestLingerSendsPartialBatch(t *testing.T) {
	f := &fakeForwarder{batch: 100}
	db, _ := setup(t, 3, Destination{Name: "d", Forwarder: f, Concurrency: 1, Linger: 30 * time.Millisecond}, Options{})
	start := time.Now()
	ingest(t, db, "n1")
	waitFor(t, "delivered", func() bool { return states(t, db)[store.StateDelivered] == 3 })
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Errorf("partial batch sent after %v, before the 30ms linger", el)
	}
	if f.callCount() != 1 {
		t.Errorf("%d requests, want 1", f.callCount())
	}
}

func TestRateLimitCountsRequests(t *testing.T) {
	f := &fakeForwarder{batch: 5}
	// 20 events in batches of 5 = 4 requests; at 10 requests/s with burst 1
	// they need at least 300ms. Counting events would need 1.9s.
	db, _ := setup(t, 20, Destination{Name: "d", Forwarder: f, Concurrency: 4, PerSecond: 10, Burst: 1}, Options{})
	start := time.Now()
	ingest(t, db, "n1")
	waitFor(t, "delivered", func() bool { return states(t, db)[store.StateDelivered] == 20 })
	el := time.Since(start)
	if el < 250*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("4 requests at 10/s took %v, want about 300ms", el)
	}
}

func TestCircuitBreakerOpensAndCloses(t *testing.T) {
	var mu sync.Mutex
	healthy := false
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		mu.Lock()
		defer mu.Unlock()
		if healthy {
			return forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
		}
		return forwarders.Result{Outcome: forwarders.Retry, Status: 503, Reason: "http_503"}
	}}
	db, d := setup(t, 10, Destination{Name: "d", Forwarder: f, Concurrency: 1, MaxAttempts: 100}, Options{
		BackoffBase: time.Millisecond, BackoffCap: 2 * time.Millisecond, BreakerFailures: 3, BreakerCooldown: 200 * time.Millisecond,
	})
	ingest(t, db, "n1")
	waitFor(t, "circuit open", func() bool { return d.Health()[0].Circuit == "open" })
	calls := f.callCount()
	time.Sleep(100 * time.Millisecond)
	if got := f.callCount(); got != calls {
		t.Errorf("%d calls while the circuit was open", got-calls)
	}
	mu.Lock()
	healthy = true
	mu.Unlock()
	waitFor(t, "all delivered", func() bool { return states(t, db)[store.StateDelivered] == 10 })
	if h := d.Health()[0]; h.Circuit != "closed" || h.Success5m.OK < 10 {
		t.Errorf("health after recovery = %+v", h)
	}
}

func TestPauseKeepsRetryBudget(t *testing.T) {
	var mu sync.Mutex
	fixed := false
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		mu.Lock()
		defer mu.Unlock()
		if fixed {
			return forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
		}
		return forwarders.Result{Outcome: forwarders.Pause, Status: 401, Reason: "auth"}
	}}
	db, d := setup(t, 1, Destination{Name: "d", Forwarder: f, Concurrency: 1, MaxAttempts: 2}, Options{PauseProbe: 20 * time.Millisecond})
	ingest(t, db, "n1")
	waitFor(t, "paused", func() bool { return d.Health()[0].Paused })
	waitFor(t, "three probes", func() bool { return f.callCount() >= 3 })
	if s := states(t, db); s[store.StateDead] != 0 {
		t.Fatalf("paused destination burned the retry budget: %v", s)
	}
	mu.Lock()
	fixed = true
	mu.Unlock()
	waitFor(t, "delivered", func() bool { return states(t, db)[store.StateDelivered] == 1 })
	waitFor(t, "resumed", func() bool { return !d.Health()[0].Paused })
}

func TestMaxAttemptsEndsDead(t *testing.T) {
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		return forwarders.Result{Outcome: forwarders.Retry, Status: 500, Reason: "http_500"}
	}}
	db, _ := setup(t, 1, Destination{Name: "d", Forwarder: f, Concurrency: 1, MaxAttempts: 3}, Options{BackoffBase: time.Millisecond, BackoffCap: time.Millisecond, BreakerFailures: 100})
	ingest(t, db, "n1")
	waitFor(t, "dead", func() bool { return states(t, db)[store.StateDead] == 1 })
	ds, _ := db.Deliveries(store.DeliveryFilter{})
	if ds[0].Attempts != 3 || ds[0].Reason != "max_attempts: http_500" {
		t.Errorf("delivery = %+v", ds[0])
	}
}

func TestSkippedIsFinalAndCounted(t *testing.T) {
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		return forwarders.Result{Outcome: forwarders.Skipped, Reason: "no_event_name"}
	}}
	db, _ := setup(t, 1, Destination{Name: "d", Forwarder: f, Concurrency: 1}, Options{})
	ingest(t, db, "n1")
	waitFor(t, "skipped", func() bool { return states(t, db)[store.StateSkipped] == 1 })
	ds, _ := db.Deliveries(store.DeliveryFilter{})
	if ds[0].Reason != "no_event_name" || ds[0].Attempts != 0 {
		t.Errorf("delivery = %+v", ds[0])
	}
}

func TestIdentityWaitReleasedByPut(t *testing.T) {
	f := &fakeForwarder{batch: 1, require: mapping.IDAppsFlyer}
	db, _ := setup(t, 1, Destination{Name: "d", Forwarder: f, Concurrency: 1}, Options{IdentityWait: time.Hour})
	ingest(t, db, "n1")
	waitFor(t, "waiting", func() bool { return states(t, db)[store.StateWaiting] == 1 })
	if f.callCount() != 0 {
		t.Fatal("sent without the required identifier")
	}
	if _, err := db.PutUser(context.Background(), "u1", map[string]string{mapping.IDAppsFlyer: "af-123"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivered after PUT", func() bool { return states(t, db)[store.StateDelivered] == 1 })
}

func TestIdentityWaitTimesOutAsSkipped(t *testing.T) {
	f := &fakeForwarder{batch: 1, require: mapping.IDAppsFlyer}
	db, _ := setup(t, 1, Destination{Name: "d", Forwarder: f, Concurrency: 1}, Options{IdentityWait: 50 * time.Millisecond})
	ingest(t, db, "n1")
	waitFor(t, "skipped", func() bool { return states(t, db)[store.StateSkipped] == 1 })
	ds, _ := db.Deliveries(store.DeliveryFilter{})
	if ds[0].Reason != "missing appsflyer_id" || f.callCount() != 0 {
		t.Errorf("delivery = %+v, calls %d", ds[0], f.callCount())
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for attempt := 1; attempt <= 20; attempt++ {
		ceil := 5 * time.Second << (attempt - 1)
		if attempt > 10 || ceil > time.Hour {
			ceil = time.Hour
		}
		for i := 0; i < 200; i++ {
			d := Backoff(attempt, 5*time.Second, time.Hour, r)
			if d < 0 || d > ceil {
				t.Fatalf("attempt %d: %v outside [0, %v]", attempt, d, ceil)
			}
		}
	}
}

// snapStore is a Store whose DueFor reads its snapshot first and applies the
// skip func a little later, as a real read transaction does while sends
// complete concurrently. It makes the scan/complete race deterministic.
type snapStore struct {
	mu  sync.Mutex
	due map[string]store.Due
}

func (s *snapStore) DueFor(dest string, now time.Time, limit int, skip func(string) bool) ([]store.Due, error) {
	s.mu.Lock()
	var snap []store.Due
	for _, d := range s.due {
		if d.Delivery.NextAtMs <= now.UnixMilli() {
			snap = append(snap, d)
		}
	}
	s.mu.Unlock()
	time.Sleep(3 * time.Millisecond) // the scan takes time; sends complete meanwhile
	var out []store.Due
	for _, d := range snap {
		if len(out) < limit && (skip == nil || !skip(d.Delivery.Key)) {
			out = append(out, d)
		}
	}
	return out, nil
}

func (s *snapStore) Complete(_ context.Context, cs []store.Completion) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		if store.Final(c.State) {
			delete(s.due, c.Key)
		}
	}
	return nil
}

func (s *snapStore) Claim(_ context.Context, dest string, now time.Time, o store.ClaimOptions) ([]store.Due, error) {
	return s.DueFor(dest, now, o.Limit, o.Skip)
}
func (s *snapStore) Release(context.Context, []string) error { return nil }
func (s *snapStore) NextDue(string) time.Time                { return time.Time{} }
func (s *snapStore) Queue(string) (store.QueueStats, error)  { return store.QueueStats{}, nil }

// TestNoResendWithoutFailure: with no failure at all every delivery is sent
// exactly once, even when sends complete while a scan is reading a snapshot
// that still lists them.
func TestNoResendWithoutFailure(t *testing.T) {
	st := &snapStore{due: map[string]store.Due{}}
	for i := 0; i < 200; i++ {
		k := fmt.Sprintf("evt_%03d|d", i)
		st.due[k] = store.Due{Delivery: store.Delivery{Key: k, Destination: "d"}, Event: mapping.Event{ID: k, ReceivedAt: time.Now()}}
	}
	var mu sync.Mutex
	sent := map[string]int{}
	f := &fakeForwarder{batch: 1, answer: func(_ int, it forwarders.Item) forwarders.Result {
		time.Sleep(time.Millisecond)
		mu.Lock()
		sent[it.Key]++
		mu.Unlock()
		return forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
	}}
	d := New(st, []Destination{{Name: "d", Forwarder: f, Concurrency: 4}}, Options{Poll: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	waitFor(t, "queue empty", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.due) == 0
	})
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	resent := 0
	for _, n := range sent {
		resent += n - 1
	}
	if resent > 0 || len(sent) != 200 {
		t.Errorf("%d deliveries sent, %d of them again although nothing failed", len(sent), resent)
	}
}

// clock is a movable time source shared by the store and the dispatcher.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestReplayRestartsRetryHorizon: a delivery that died past retry.max_age
// is sent again when replayed (its horizon restarts), while an event older
// than the destination API's own age limit is never sent, replayed or not.
func TestReplayRestartsRetryHorizon(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)}
	var mu sync.Mutex
	up := false
	f := &fakeForwarder{batch: 1, answer: func(_ int, it forwarders.Item) forwarders.Result {
		mu.Lock()
		defer mu.Unlock()
		if up {
			return forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
		}
		return forwarders.Result{Outcome: forwarders.Retry, Status: 503, Reason: "http_503"}
	}}
	var d *Dispatcher
	db, err := store.Open(t.TempDir()+"/db", &store.Options{
		Now: clk.Now,
		Map: func(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
			return mapping.Result{Events: []mapping.Event{{ID: "evt_" + n.Key, Type: mapping.Purchase, Source: "test", Environment: mapping.Production, ReceivedAt: n.ReceivedAt}}}, nil
		},
		Route:    func(*mapping.Event) []string { return []string{"d"} },
		OnCommit: func(ds []string) { d.Wake(ds) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d = New(db, []Destination{{Name: "d", Forwarder: f, Concurrency: 1, MaxAttempts: 100, MaxAge: time.Hour}},
		Options{Now: clk.Now, Poll: 5 * time.Millisecond, BackoffBase: time.Minute, BackoffCap: time.Minute, BreakerFailures: 1000,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	if _, err := db.Ingest(ctx, &mapping.Notification{Source: "test", Key: "a", Body: []byte("{}"), ReceivedAt: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first attempt", func() bool { return f.callCount() >= 1 })
	// The destination stays down past the one-hour horizon.
	for i := 0; i < 70 && states(t, db)[store.StateDead] == 0; i++ {
		clk.add(time.Minute)
		time.Sleep(10 * time.Millisecond)
	}
	waitFor(t, "dead past max_age", func() bool { return states(t, db)[store.StateDead] == 1 })
	ds, _ := db.Deliveries(store.DeliveryFilter{})
	if !strings.HasPrefix(ds[0].Reason, "max_age") {
		t.Fatalf("reason %q, want max_age", ds[0].Reason)
	}
	mu.Lock()
	up = true
	mu.Unlock()
	clk.add(2 * time.Hour) // the operator replays it much later
	if _, err := db.Replay(ctx, ds[0].Key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replayed delivery sent", func() bool { return states(t, db)[store.StateDelivered] == 1 })
}

func TestEventOlderThanTheAPITakesIsNeverSent(t *testing.T) {
	f := &fakeForwarder{batch: 1}
	st := &snapStore{due: map[string]store.Due{}}
	old := store.Due{Delivery: store.Delivery{Key: "evt_old|d", Destination: "d", CreatedAt: time.Now()},
		Event: mapping.Event{ID: "evt_old", ReceivedAt: time.Now().Add(-8 * 24 * time.Hour)}}
	st.due[old.Delivery.Key] = old
	var mu sync.Mutex
	var got []store.Completion
	rec := &recordingStore{snapStore: st, mu: &mu, got: &got}
	d := New(rec, []Destination{{Name: "d", Forwarder: &agedForwarder{fakeForwarder: f, maxAge: 7 * 24 * time.Hour}, Concurrency: 1, MaxAge: 72 * time.Hour}},
		Options{Poll: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	waitFor(t, "completion", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	cancel()
	<-done
	if got[0].State != store.StateDead || !strings.HasPrefix(got[0].Reason, "too_old") || f.callCount() != 0 {
		t.Errorf("completion %+v, calls %d; want dead too_old without a request", got[0], f.callCount())
	}
}

// agedForwarder declares an API event-age limit.
type agedForwarder struct {
	*fakeForwarder
	maxAge time.Duration
}

func (a *agedForwarder) Limits() forwarders.Limits {
	return forwarders.Limits{BatchSize: 1, MaxAge: a.maxAge}
}

// recordingStore records completions.
type recordingStore struct {
	*snapStore
	mu  *sync.Mutex
	got *[]store.Completion
}

func (r *recordingStore) Complete(ctx context.Context, cs []store.Completion) error {
	r.mu.Lock()
	*r.got = append(*r.got, cs...)
	r.mu.Unlock()
	return r.snapStore.Complete(ctx, cs)
}

// TestThrottleHoldsTheNextSend: a 429's hold is in place before the
// answer frees its slot (the pass that slot wakes must see it), and a send
// claimed before a hold began is given back, not sent, while it lasts.
func TestThrottleHoldsTheNextSend(t *testing.T) {
	st := &snapStore{due: map[string]store.Due{}}
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		return forwarders.Result{Outcome: forwarders.Retry, Status: 429, Throttle: true, RetryAfter: time.Minute, Reason: "http_429"}
	}}
	d := New(st, []Destination{{Name: "d", Forwarder: f, Concurrency: 2, MaxAttempts: 5}}, Options{Logger: slog.New(slog.DiscardHandler)})
	w := d.workers["d"]
	due := func(k string) []store.Due {
		return []store.Due{{Delivery: store.Delivery{Key: k, Destination: "d"}, Event: mapping.Event{ID: k, ReceivedAt: time.Now()}}}
	}
	ctx := context.Background()
	held := false
	w.send(ctx, due("evt_1|d"), time.Now(), func() { held = w.holding(time.Now()) })
	if !held {
		t.Fatal("the 429's slot was freed before its hold was in place")
	}
	answered := false
	w.send(ctx, due("evt_2|d"), time.Now(), func() { answered = true })
	f.mu.Lock()
	calls := len(f.calls)
	f.mu.Unlock()
	if calls != 1 || answered {
		t.Fatalf("%d requests (want 1): a send claimed before the hold went out during it", calls)
	}
}
