package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
	"github.com/postback/postback/store/pgstore/pgtest"
	"github.com/postback/postback/store/storetest"
)

// replicas opens n stores on one fresh database: n gateway replicas.
func replicas(t testing.TB, n int, edit func(i int, o *store.Options)) ([]*pgstore.DB, string) {
	t.Helper()
	dsn := pgtest.Database(t)
	out := make([]*pgstore.DB, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range out {
		o := store.Options{
			Map:    storetest.FakeMap,
			Logger: slog.New(slog.DiscardHandler),
			Route:  func(*mapping.Event) []string { return []string{"af"} },
		}
		if edit != nil {
			edit(i, &o)
		}
		wg.Add(1)
		go func() { // replicas start together: migrations run once
			defer wg.Done()
			out[i], errs[i] = pgstore.Open(context.Background(), dsn, &pgstore.Options{Options: o, PoolSize: 8, Owner: fmt.Sprintf("replica-%d", i)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		db := out[i]
		t.Cleanup(func() { _ = db.Close() })
	}
	return out, dsn
}

// TestReplicasSameNotificationOnce: the same notification reaching two
// replicas at the same instant is stored once, with one event and one
// delivery; every caller gets success (the loser sees a duplicate).
func TestReplicasSameNotificationOnce(t *testing.T) {
	rs, _ := replicas(t, 2, nil)
	const rounds = 40
	for r := 0; r < rounds; r++ {
		key := fmt.Sprintf("evt_%d", r)
		var stored, dups atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				n := storetest.Note(key, storetest.Facts("fact-"+key))
				if i%2 == 1 {
					n.AltKeys = []string{"alt-" + key} // a re-send under another id
					n.Key = key + "-resent"
				} else {
					n.AltKeys = []string{"alt-" + key}
				}
				res, err := rs[i%2].Ingest(context.Background(), n)
				if err != nil {
					t.Errorf("ingest: %v", err)
					return
				}
				if res.Duplicate {
					dups.Add(1)
				} else {
					stored.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if stored.Load() != 1 || dups.Load() != 3 {
			t.Fatalf("round %d: stored %d, duplicates %d; want 1 and 3", r, stored.Load(), dups.Load())
		}
	}
	var events, deliveries, inbox int
	pool := rs[0].Pool()
	ctx := context.Background()
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&events)
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM deliveries").Scan(&deliveries)
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM inbox").Scan(&inbox)
	if events != rounds || deliveries != rounds || inbox != rounds {
		t.Fatalf("events %d, deliveries %d, inbox %d; want %d each", events, deliveries, inbox, rounds)
	}
}

// TestReplicasOneSubscriptionSerialised: notifications of one subscription
// that reach two replicas together map one after the other: no update of
// the subscription state is lost.
func TestReplicasOneSubscriptionSerialised(t *testing.T) {
	rs, _ := replicas(t, 2, nil)
	const n = 60
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := storetest.Facts(fmt.Sprintf("f%d", i))
			b.Sub = "sub:1"
			if _, err := rs[i%2].Ingest(context.Background(), storetest.Note(fmt.Sprintf("n%02d", i), b)); err != nil {
				t.Errorf("ingest: %v", err)
			}
		}()
	}
	wg.Wait()
	st, ok, err := rs[0].State("sub:1")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if st.Value("count") != fmt.Sprint(n) || strings.Count(st.Value("seen"), ";") != n {
		t.Fatalf("state count %s, seen %d; want %d (an update was lost)", st.Value("count"), strings.Count(st.Value("seen"), ";"), n)
	}
}

// TestReplicasClaimLeases: a claim leases its deliveries in the database:
// another replica claims none of them until the lease expires (a replica
// died mid-delivery), then takes them with the same keys; the in-flight
// cap counts every replica's leases.
func TestReplicasClaimLeases(t *testing.T) {
	rs, _ := replicas(t, 2, nil)
	ctx := context.Background()
	for i := 0; i < 8; i++ {
		if _, err := rs[0].Ingest(ctx, storetest.Note(fmt.Sprintf("n%d", i), storetest.Facts(fmt.Sprintf("f%d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	a, err := rs[0].Claim(ctx, "af", now, store.ClaimOptions{Limit: 4, Lease: 1500 * time.Millisecond, MaxInFlight: 5})
	if err != nil || len(a) != 4 {
		t.Fatalf("replica 0 claimed %d, %v", len(a), err)
	}
	b, err := rs[1].Claim(ctx, "af", now, store.ClaimOptions{Limit: 10, Lease: time.Minute, MaxInFlight: 5})
	if err != nil || len(b) != 1 {
		t.Fatalf("replica 1 claimed %d (in-flight cap 5, 4 leased), %v", len(b), err)
	}
	for _, d := range b {
		for _, x := range a {
			if d.Delivery.Key == x.Delivery.Key {
				t.Fatalf("%s claimed by both replicas", d.Delivery.Key)
			}
		}
	}
	// Answered deliveries keep their leases but leave the cap: replica 0's
	// two answered ones let replica 1 claim two more (the fast claim and,
	// with Skip, the other one).
	answered := []string{a[0].Delivery.Key, a[1].Delivery.Key}
	b2, err := rs[1].Claim(ctx, "af", now, store.ClaimOptions{Limit: 10, Lease: time.Minute, MaxInFlight: 5, Answered: answered[:1]})
	if err != nil || len(b2) != 1 {
		t.Fatalf("with one answered delivery replica 1 claimed %d, want 1: %v", len(b2), err)
	}
	b3, err := rs[1].Claim(ctx, "af", now, store.ClaimOptions{Limit: 10, Lease: time.Minute, MaxInFlight: 5, Answered: answered,
		Skip: func(string) bool { return false }})
	if err != nil || len(b3) != 1 || b3[0].Delivery.Key == b2[0].Delivery.Key {
		t.Fatalf("with two answered deliveries replica 1 claimed %d more, want 1 other: %v", len(b3), err)
	}
	if more, err := rs[1].Claim(ctx, "af", now, store.ClaimOptions{Limit: 10, Lease: time.Minute, MaxInFlight: 5, Answered: answered}); err != nil || len(more) != 0 {
		t.Fatalf("past the cap replica 1 claimed %d more: %v", len(more), err)
	}
	if err := rs[1].Release(ctx, []string{b[0].Delivery.Key, b2[0].Delivery.Key, b3[0].Delivery.Key}); err != nil {
		t.Fatal(err)
	}
	// Replica 0 "dies": its leases expire and replica 1 retries them.
	time.Sleep(1600 * time.Millisecond)
	c, err := rs[1].Claim(ctx, "af", time.Now(), store.ClaimOptions{Limit: 10, Lease: time.Minute, MaxInFlight: 10})
	if err != nil || len(c) != 8 {
		t.Fatalf("after the lease expired replica 1 claimed %d, want 8: %v", len(c), err)
	}
	got := map[string]bool{}
	for _, d := range c {
		got[d.Delivery.Key] = true
	}
	for _, d := range a {
		if !got[d.Delivery.Key] {
			t.Errorf("expired lease %s not retried", d.Delivery.Key)
		}
	}
	// Completing ends the lease; a final delivery is never claimed again.
	var cs []store.Completion
	for _, d := range c {
		cs = append(cs, store.Completion{Key: d.Delivery.Key, State: store.StateDelivered, Attempt: &store.Attempt{At: time.Now(), Outcome: "delivered", Status: 200}})
	}
	if err := rs[1].Complete(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if d, _ := rs[0].Claim(ctx, "af", time.Now().Add(time.Hour), store.ClaimOptions{Limit: 10, Lease: time.Minute}); len(d) != 0 {
		t.Fatalf("delivered work claimed again: %d", len(d))
	}
}

// TestReplicasOrderingKey: deliveries with one ordering key are claimed one
// at a time in event-time order whichever replica claims, while another key
// goes in parallel.
func TestReplicasOrderingKey(t *testing.T) {
	rs, _ := replicas(t, 2, func(_ int, o *store.Options) {
		o.OrderKey = func(_ string, e *mapping.Event) string { return e.User.AppUserID }
	})
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).UnixMilli()
	// Created out of order: u1's events at offsets 3, 1, 2, 0.
	for i, off := range []int64{3, 1, 2, 0} {
		b := storetest.Body{Facts: []storetest.Fact{{Fact: fmt.Sprintf("u1-%d", off), Type: mapping.SubscriptionRenewed, User: "u1", AtMs: base + off*1000}}}
		if _, err := rs[i%2].Ingest(ctx, storetest.Note(fmt.Sprintf("a%d", i), b)); err != nil {
			t.Fatal(err)
		}
	}
	b := storetest.Body{Facts: []storetest.Fact{{Fact: "u2-0", Type: mapping.SubscriptionRenewed, User: "u2", AtMs: base}}}
	if _, err := rs[0].Ingest(ctx, storetest.Note("b0", b)); err != nil {
		t.Fatal(err)
	}
	var order []string
	for step := 0; step < 4; step++ {
		r := rs[step%2]
		due, err := r.Claim(ctx, "af", time.Now(), store.ClaimOptions{Limit: 10, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var u1 []store.Due
		for _, d := range due {
			if d.Event.User.AppUserID == "u1" {
				u1 = append(u1, d)
			}
		}
		if len(u1) != 1 {
			t.Fatalf("step %d: %d deliveries of one ordering key claimed at once", step, len(u1))
		}
		if step == 0 && len(due) != 2 {
			t.Fatalf("another key did not go in parallel: claimed %d", len(due))
		}
		// While it is in flight the other replica gets nothing of u1.
		other, err := rs[(step+1)%2].Claim(ctx, "af", time.Now(), store.ClaimOptions{Limit: 10, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range other {
			if d.Event.User.AppUserID == "u1" {
				t.Fatalf("step %d: u1 claimed by the second replica while in flight", step)
			}
		}
		order = append(order, u1[0].Event.ID)
		var cs []store.Completion
		for _, d := range append(due, other...) {
			cs = append(cs, store.Completion{Key: d.Delivery.Key, State: store.StateDelivered, Attempt: &store.Attempt{At: time.Now(), Outcome: "delivered"}})
		}
		if err := r.Complete(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{storetest.FactID("u1-0"), storetest.FactID("u1-1"), storetest.FactID("u1-2"), storetest.FactID("u1-3")}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("order %v, want event-time order %v", order, want)
	}
}

// TestReplicasSingleton: a job runs on one replica at a time, and moves to
// another when its holder's session dies.
func TestReplicasSingleton(t *testing.T) {
	rs, _ := replicas(t, 2, nil)
	ctx := context.Background()
	holding := make(chan struct{})
	release := make(chan struct{})
	go func() {
		_, _ = rs[0].Singleton(ctx, "prune", func(context.Context) {
			close(holding)
			<-release
		})
	}()
	<-holding
	ran, err := rs[1].Singleton(ctx, "prune", func(context.Context) {})
	if err != nil || ran {
		t.Fatalf("second replica ran a held job: %v %v", ran, err)
	}
	// Another job name is independent.
	if ran, err := rs[1].Singleton(ctx, "erasure", func(context.Context) {}); err != nil || !ran {
		t.Fatalf("independent job did not run: %v %v", ran, err)
	}
	// The holder's database session dies (kill -9 of a replica).
	var pids []int
	rows, err := rs[1].Pool().Query(ctx, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
	if err != nil {
		t.Fatal(err)
	}
	pids, err = pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil || len(pids) == 0 {
		t.Fatalf("advisory lock holder not found: %v", err)
	}
	for _, pid := range pids {
		if _, err := rs[1].Pool().Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ran, err := rs[1].Singleton(ctx, "prune", func(context.Context) {})
		if ran {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job never moved to the live replica: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(release)
}

// TestReplicasSingletonSessionLost: when the session holding a job's lock
// dies under a live replica (PostgreSQL restarted, the connection cut),
// the lock is gone, so the job's context is cancelled: the job does not go
// on running beside the replica that takes it over.
func TestReplicasSingletonSessionLost(t *testing.T) {
	rs, _ := replicas(t, 2, nil)
	ctx := context.Background()
	var running atomic.Int32
	var twice atomic.Bool
	holding := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_, _ = rs[0].Singleton(ctx, "google-enrich", func(ctx context.Context) {
			running.Add(1)
			close(holding)
			<-ctx.Done()
			running.Add(-1)
		})
	}()
	<-holding
	rows, err := rs[1].Pool().Query(ctx, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil || len(pids) == 0 {
		t.Fatalf("advisory lock holder not found: %v", err)
	}
	for _, pid := range pids {
		if _, err := rs[1].Pool().Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the job went on running after its lock's session died")
	}
	ran, err := rs[1].Singleton(ctx, "google-enrich", func(context.Context) {
		if running.Load() != 0 {
			twice.Store(true)
		}
	})
	if err != nil || !ran || twice.Load() {
		t.Fatalf("takeover: ran %v, err %v, twice %v", ran, err, twice.Load())
	}
}

// TestReplicasNotifyWakes: a commit on one replica wakes the other's
// dispatcher through LISTEN/NOTIFY, and its own once (at once, not again
// by its own NOTIFY's echo); a payload without a replica's name (an
// earlier version's) wakes every replica.
func TestReplicasNotifyWakes(t *testing.T) {
	woke := []chan string{make(chan string, 10), make(chan string, 10)}
	rs, dsn := replicas(t, 2, func(i int, o *store.Options) {
		o.OnCommit = func(d []string) {
			for _, x := range d {
				woke[i] <- x
			}
		}
	})
	time.Sleep(200 * time.Millisecond) // the LISTEN connections are up
	wait := func(i int, what string) {
		t.Helper()
		select {
		case d := <-woke[i]:
			if d != "af" {
				t.Fatalf("replica %d woken for %q (%s)", i, d, what)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("replica %d was not woken (%s)", i, what)
		}
	}
	if _, err := rs[0].Ingest(context.Background(), storetest.Note("n1", storetest.Facts("f1"))); err != nil {
		t.Fatal(err)
	}
	wait(0, "its own commit")
	wait(1, "the other replica's commit")
	time.Sleep(300 * time.Millisecond) // an echo would have come by now
	if len(woke[0]) != 0 {
		t.Fatalf("replica 0 woken again by its own NOTIFY: %q", <-woke[0])
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "NOTIFY postback_due, 'af'"); err != nil {
		t.Fatal(err)
	}
	wait(0, "a payload without owner")
	wait(1, "a payload without owner")
}

// TestReplicasTokenBucket: replicas taking tokens together never exceed
// burst + rate × elapsed.
func TestReplicasTokenBucket(t *testing.T) {
	rs, _ := replicas(t, 3, nil)
	const perSecond, burst = 40.0, 4
	var taken atomic.Int64
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range rs {
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					got, wait, err := r.TakeTokens(ctx, "af", 2, perSecond, burst)
					if err != nil {
						if ctx.Err() == nil {
							t.Error(err)
						}
						return
					}
					taken.Add(int64(got))
					if got == 0 {
						select {
						case <-ctx.Done():
						case <-time.After(wait):
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	limit := float64(burst) + perSecond*elapsed
	if got := float64(taken.Load()); got > limit+1 || got < 0.6*perSecond*elapsed {
		t.Fatalf("took %.0f tokens in %.2fs; the bucket allows %.1f (and should give at least %.0f)", got, elapsed, limit, 0.6*perSecond*elapsed)
	}
}

// TestOpenErrors: each way a DSN can be wrong gets its own message.
func TestOpenErrors(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	cases := []struct {
		name string
		dsn  string
		want error
		text string
	}{
		{"unreachable", "postgres://postback@127.0.0.1:1/postback?sslmode=disable&connect_timeout=2", pgstore.ErrUnreachable, "127.0.0.1:1"},
		{"wrong password", withPassword(t, dsn, "not-the-password"), pgstore.ErrAuth, "password"},
		{"missing database", pgtest.WithDatabase(t, dsn, "no_such_db"), pgstore.ErrNoDatabase, "createdb"},
		{"bad dsn", "postgres://%zz", pgstore.ErrDSN, "storage.dsn"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := pgstore.Open(ctx, c.dsn, &pgstore.Options{Options: store.Options{Logger: slog.New(slog.DiscardHandler)}})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.text)
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Fatalf("the password reached the message: %v", err)
			}
		})
	}
	t.Run("read-only", func(t *testing.T) {
		admin, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(ctx)
		role := fmt.Sprintf("ro_%d", time.Now().UnixNano())
		if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'ro-pass'; ALTER ROLE %s SET default_transaction_read_only = on", role, role)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
		_, err = pgstore.Open(ctx, withUser(t, dsn, role, "ro-pass"), &pgstore.Options{Options: store.Options{Logger: slog.New(slog.DiscardHandler)}})
		if !errors.Is(err, pgstore.ErrReadOnly) || !strings.Contains(err.Error(), "primary") {
			t.Fatalf("got %v, want ErrReadOnly naming the fix", err)
		}
	})
}

// TestSchemaNewerRefused: a database migrated by a newer binary is refused
// with a clear message.
func TestSchemaNewerRefused(t *testing.T) {
	rs, dsn := replicas(t, 1, nil)
	ctx := context.Background()
	if _, err := rs[0].Pool().Exec(ctx, "INSERT INTO postback_schema (version_id, is_applied) VALUES (999, true)"); err != nil {
		t.Fatal(err)
	}
	_, err := pgstore.Open(ctx, dsn, &pgstore.Options{Options: store.Options{Logger: slog.New(slog.DiscardHandler)}})
	if !errors.Is(err, pgstore.ErrSchemaNewer) || !strings.Contains(err.Error(), "999") {
		t.Fatalf("got %v, want ErrSchemaNewer naming version 999", err)
	}
	if _, err := pgstore.Migrate(ctx, dsn, true, slog.New(slog.DiscardHandler)); !errors.Is(err, pgstore.ErrSchemaNewer) {
		t.Fatalf("migrate --dry-run: %v", err)
	}
}

// TestMigrateDryRunThenApply: a dry run on an empty database lists the
// migrations unapplied and changes nothing; the real run applies them, and
// a second run has nothing to do.
func TestMigrateDryRunThenApply(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	steps, err := pgstore.Migrate(ctx, dsn, true, log)
	if err != nil || len(steps) == 0 || steps[0].Applied {
		t.Fatalf("dry run: %+v %v", steps, err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	_ = conn.QueryRow(ctx, "SELECT to_regclass('public.events') IS NOT NULL").Scan(&exists)
	if exists {
		t.Fatal("a dry run created tables")
	}
	if steps, err = pgstore.Migrate(ctx, dsn, false, log); err != nil || len(steps) == 0 {
		t.Fatalf("migrate: %+v %v", steps, err)
	}
	if steps, err = pgstore.Migrate(ctx, dsn, false, log); err != nil || len(steps) != 0 {
		t.Fatalf("second migrate applied %+v, %v", steps, err)
	}
}

func withPassword(t *testing.T, dsn, pw string) string {
	t.Helper()
	c, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return withUser(t, dsn, c.User, pw)
}

func withUser(t *testing.T, dsn, user, pw string) string {
	t.Helper()
	i := strings.Index(dsn, "://")
	j := strings.LastIndex(dsn, "@")
	if i < 0 || j < i {
		t.Fatalf("unexpected DSN form")
	}
	return dsn[:i+3] + user + ":" + pw + dsn[j:]
}

// TestPreparedIngestConflictMapsAgain: a notification mapped outside the
// transaction against a state that another notification changes before
// it commits is mapped again, so neither update is lost.
func TestPreparedIngestConflictMapsAgain(t *testing.T) {
	aMapped := make(chan struct{})
	bDone := make(chan struct{})
	var aRuns atomic.Int32
	rs, _ := replicas(t, 1, func(_ int, o *store.Options) {
		o.Map = func(n *mapping.Notification, st mapping.States) (mapping.Result, error) {
			out, err := storetest.FakeMap(n, st)
			if n.Key == "a" && aRuns.Add(1) == 1 {
				close(aMapped) // a has read the state...
				<-bDone        // ...and b commits a change to it before a writes
			}
			return out, err
		}
	})
	db := rs[0]
	const sub = "sub:conflict"
	for round := 1; round <= 2; round++ { // the state absent, then present
		aMapped, bDone = make(chan struct{}), make(chan struct{})
		aRuns.Store(0)
		done := make(chan error, 1)
		go func() {
			b := storetest.Facts(fmt.Sprintf("fa-%d", round))
			b.Sub = sub
			n := storetest.Note("a", b)
			n.Key = "a"
			_, err := db.Ingest(context.Background(), n)
			done <- err
		}()
		<-aMapped
		b := storetest.Facts(fmt.Sprintf("fb-%d", round))
		b.Sub = sub
		if _, err := db.Ingest(context.Background(), storetest.Note(fmt.Sprintf("b-%d", round), b)); err != nil {
			t.Fatal(err)
		}
		close(bDone)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		st, _, _ := db.State(sub)
		if want := fmt.Sprint(2 * round); st.Value("count") != want {
			t.Fatalf("round %d: state count %q, want %s (an update was lost)", round, st.Value("count"), want)
		}
		if aRuns.Load() != 2 {
			t.Fatalf("round %d: a was mapped %d times, want 2", round, aRuns.Load())
		}
		// The next round uses a new "a" key in the inbox.
		if _, err := db.Pool().Exec(context.Background(), "DELETE FROM inbox WHERE key = 'a'"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCompleteCombined: concurrent completions, combined into rounds, each
// reach their own delivery and their callers; when the database is gone
// every caller gets the error and none waits for ever.
func TestCompleteCombined(t *testing.T) {
	rs, _ := replicas(t, 1, nil)
	db := rs[0]
	ctx := context.Background()
	const n = 40
	facts := make([]string, n)
	for i := range facts {
		facts[i] = fmt.Sprintf("c%d", i)
	}
	if _, err := db.Ingest(ctx, storetest.Note("many", storetest.Facts(facts...))); err != nil {
		t.Fatal(err)
	}
	due, err := db.Claim(ctx, "af", time.Now(), store.ClaimOptions{Limit: n, Lease: time.Minute})
	if err != nil || len(due) != n {
		t.Fatalf("claimed %d, %v", len(due), err)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, d := range due {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state := store.StateDelivered
			if i%2 == 1 {
				state = store.StateDead
			}
			errs[i] = db.Complete(ctx, []store.Completion{{Key: d.Delivery.Key, Claimed: &d.Delivery, State: state, Reason: fmt.Sprint("r", i),
				Attempt: &store.Attempt{At: time.Now(), Outcome: string(state), Status: 200 + i}}})
		}()
	}
	wg.Wait()
	for i, d := range due {
		if errs[i] != nil {
			t.Fatalf("completion %d: %v", i, errs[i])
		}
		got, err := db.Delivery(d.Delivery.Key)
		want := store.StateDelivered
		if i%2 == 1 {
			want = store.StateDead
		}
		if err != nil || got.State != want || got.Attempts != 1 {
			t.Fatalf("delivery %d after its completion: %+v, %v (want %s)", i, got, err, want)
		}
	}
	// Without a database every combined call fails, and returns.
	db.Pool().Close()
	failed := make(chan error, n)
	for range 8 {
		go func() {
			failed <- db.Complete(ctx, []store.Completion{{Key: "evt_x|af", State: store.StateDelivered}})
		}()
	}
	for range 8 {
		select {
		case err := <-failed:
			if err == nil {
				t.Error("a completion without its database succeeded")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a combined completion never returned")
		}
	}
}

// TestSharedQueue: a replica's queue count is what every replica's gauges
// read while it is younger than their maxAge (counted once for the
// cluster, not once per replica); older, it is counted again. Replicas
// asking at once get one answer.
func TestSharedQueue(t *testing.T) {
	rs, _ := replicas(t, 2, nil)
	ctx := context.Background()
	ingest := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := rs[i%2].Ingest(ctx, storetest.Note(fmt.Sprintf("q%d", i), storetest.Facts(fmt.Sprintf("qf%d", i)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	ingest(0, 3)
	q, err := rs[0].SharedQueue(ctx, "af", time.Minute)
	if err != nil || q.Depth != 3 || q.OldestCreate.IsZero() || q.Oldest.IsZero() {
		t.Fatalf("first count: %+v %v, want depth 3 with its oldest times", q, err)
	}
	ingest(3, 5)
	if q, err := rs[1].SharedQueue(ctx, "af", time.Minute); err != nil || q.Depth != 3 {
		t.Fatalf("the other replica within a minute: %+v %v, want the shared count (3)", q, err)
	}
	if q, err := rs[1].Queue("af"); err != nil || q.Depth != 5 {
		t.Fatalf("Queue: %+v %v, want the exact 5", q, err)
	}
	if q, err := rs[1].SharedQueue(ctx, "af", 0); err != nil || q.Depth != 5 {
		t.Fatalf("maxAge 0: %+v %v, want a new count (5)", q, err)
	}
	if q, err := rs[0].SharedQueue(ctx, "none", time.Minute); err != nil || q.Depth != 0 || !q.OldestCreate.IsZero() {
		t.Fatalf("a destination without deliveries: %+v %v", q, err)
	}
	ingest(5, 6)
	time.Sleep(60 * time.Millisecond) // the count of 5 is older than 50 ms
	var wg sync.WaitGroup
	got := make([]store.QueueStats, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = rs[i%2].SharedQueue(ctx, "af", 50*time.Millisecond)
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i].Depth != 6 {
			t.Fatalf("concurrent count %d: %+v %v", i, got[i], errs[i])
		}
	}
}
