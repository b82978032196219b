package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/storetest/fakemap"
)

// storeT0 is the start of every store test's clock.
var storeT0 = time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mustOpen opens a store in t.TempDir() and runs bbolt's consistency check
// when the test ends (reopening the file if the test closed it).
func mustOpen(t *testing.T, opts *Options) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "postback.db")
	if opts != nil && opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.mu.RLock()
		shut := db.isShut
		db.mu.RUnlock()
		if shut {
			if db, err = Open(path, &Options{OpenTimeout: time.Second}); err != nil {
				t.Errorf("reopen for check: %v", err)
				return
			}
		}
		if err := db.Check(); err != nil {
			t.Errorf("consistency check: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return db
}

// testDB opens a store with fakemap.Map, a test clock and routes to "af" and
// "hook"; commits lists what OnCommit reported.
type testDB struct {
	*DB
	clock *testClock
	mu    sync.Mutex
	woken [][]string
}

func openTest(t *testing.T) *testDB {
	t.Helper()
	td := &testDB{clock: &testClock{t: storeT0}}
	td.DB = mustOpen(t, &Options{
		Map:   fakemap.Map,
		Now:   td.clock.Now,
		Route: func(*mapping.Event) []string { return []string{"af", "hook"} },
		OnCommit: func(dests []string) {
			td.mu.Lock()
			td.woken = append(td.woken, append([]string(nil), dests...))
			td.mu.Unlock()
		},
	})
	return td
}

func (td *testDB) ingest(t *testing.T, n *mapping.Notification) IngestResult {
	t.Helper()
	res, err := td.Ingest(context.Background(), n)
	if err != nil {
		t.Fatalf("ingest %s: %v", n.Key, err)
	}
	return res
}

func dueKeys(t *testing.T, db *DB, dest string, now time.Time) []string {
	t.Helper()
	ds, err := db.DueFor(dest, now, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Delivery.Key)
	}
	return out
}

// lockHelperEnv makes the test binary act as a second process that opens
// the database named by its value.
const lockHelperEnv = "POSTBACK_STORE_LOCK_HELPER"

func TestMain(m *testing.M) {
	if path := os.Getenv(lockHelperEnv); path != "" {
		_, err := Open(path, &Options{OpenTimeout: 100 * time.Millisecond})
		if errors.Is(err, ErrLocked) {
			fmt.Print("locked")
			os.Exit(0)
		}
		fmt.Printf("unexpected: %v", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func TestOpenLocked(t *testing.T) {
	db := mustOpen(t, nil)
	t.Run("same process", func(t *testing.T) {
		// bbolt's flock belongs to the open file description, so a second
		// Open in this process conflicts like another process would.
		_, err := Open(db.Path(), &Options{OpenTimeout: 50 * time.Millisecond})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open: %v, want ErrLocked", err)
		}
		if !strings.Contains(err.Error(), db.Path()) {
			t.Errorf("error %q does not name the file", err)
		}
	})
	t.Run("other process", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), lockHelperEnv+"="+db.Path())
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "locked" {
			t.Fatalf("helper process: %v, output %q", err, out)
		}
	})
	if err := db.Ping(context.Background()); err != nil {
		t.Errorf("the first store stopped working: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(file, "postback.db"), nil); err == nil {
		t.Error("Open under a regular file: no error")
	}
	if _, err := Open(file, &Options{OpenTimeout: 50 * time.Millisecond}); err == nil || errors.Is(err, ErrLocked) {
		t.Errorf("Open of a non-bbolt file: %v", err)
	}
}

// blockFirst holds the op for key "n0" inside the writer's transaction
// until released (the store's commit hook), letting the test queue other
// ops behind it deterministically; "bad" fails inside the transaction.
type blockFirst struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func newBlockFirst() *blockFirst {
	return &blockFirst{started: make(chan struct{}), release: make(chan struct{})}
}

func (b *blockFirst) hook(n *mapping.Notification) error {
	if n.Key == "n0" {
		b.once.Do(func() {
			close(b.started)
			<-b.release
		})
	}
	if n.Key == "bad" {
		return fakemap.ErrHard
	}
	return nil
}

// options returns o with the hook installed and fakemap.Map as the mapping,
// each notification counting in a state of its own (so that no prepared
// ingest conflicts with another and the test sees the commits it queued).
func (b *blockFirst) options(o *Options) *Options {
	o.Map = func(n *mapping.Notification, st mapping.States) (mapping.Result, error) {
		own := "test:count:" + n.Key
		out, err := fakemap.Map(n, renamedStates{st, own})
		for i := range out.States {
			if out.States[i].Key == "test:count" {
				out.States[i].Key = own
			}
		}
		return out, err
	}
	o.commitHook = b.hook
	return o
}

// renamedStates reads the state "test:count" under another key.
type renamedStates struct {
	st  mapping.States
	key string
}

func (r renamedStates) State(k string) (mapping.State, bool) {
	if k == "test:count" {
		k = r.key
	}
	return r.st.State(k)
}

// queueBehindBlocked ingests "n0" (which blocks in the writer), then the
// given keys concurrently, waits until all of them are queued, releases
// "n0" and returns every result.
func queueBehindBlocked(t *testing.T, db *DB, b *blockFirst, keys []string) map[string]error {
	t.Helper()
	ctx := context.Background()
	errs := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	run := func(k string) {
		defer wg.Done()
		_, err := db.Ingest(ctx, fakemap.Note(k, fakemap.Facts("fact-"+k)))
		mu.Lock()
		errs[k] = err
		mu.Unlock()
	}
	wg.Add(1)
	go run("n0")
	<-b.started
	for _, k := range keys {
		wg.Add(1)
		go run(k)
	}
	// Not a timing assumption: each op is either queued (counted here) or
	// about to be; the writer is stuck in n0 until released.
	for len(db.ops) < len(keys) {
		time.Sleep(time.Millisecond)
	}
	close(b.release)
	wg.Wait()
	return errs
}

func TestConcurrentIngestsShareCommits(t *testing.T) {
	b := newBlockFirst()
	var commits atomic.Int32
	db := mustOpen(t, b.options(&Options{
		Now:      (&testClock{t: storeT0}).Now,
		Route:    func(*mapping.Event) []string { return []string{"af"} },
		OnCommit: func([]string) { commits.Add(1) },
	}))
	var keys []string
	for i := 1; i < 64; i++ {
		keys = append(keys, fmt.Sprint("n", i))
	}
	errs := queueBehindBlocked(t, db, b, keys)
	for k, err := range errs {
		if err != nil {
			t.Errorf("ingest %s: %v", k, err)
		}
	}
	if len(errs) != 64 {
		t.Fatalf("%d results", len(errs))
	}
	// n0 alone, then the 63 queued behind it in one transaction.
	if c := commits.Load(); c != 2 {
		t.Errorf("%d commits for 64 ingests, want 2 (group commit)", c)
	}
	if got := dueKeys(t, db, "af", storeT0); len(got) != 64 {
		t.Errorf("%d deliveries, want 64", len(got))
	}
}

func TestFailingOpFailsAlone(t *testing.T) {
	b := newBlockFirst()
	db := mustOpen(t, b.options(&Options{Now: (&testClock{t: storeT0}).Now, Route: func(*mapping.Event) []string { return []string{"af"} }}))
	errs := queueBehindBlocked(t, db, b, []string{"good1", "bad", "good2"})
	if !errors.Is(errs["bad"], fakemap.ErrHard) {
		t.Errorf("bad op: %v, want fakemap.ErrHard", errs["bad"])
	}
	var ok []string
	for _, k := range []string{"n0", "good1", "good2"} {
		if errs[k] != nil {
			t.Errorf("%s failed with its neighbour: %v", k, errs[k])
		}
		if _, err := db.Notification(mapping.SourceStripe, k); err != nil {
			t.Errorf("%s not stored: %v", k, err)
		}
		ok = append(ok, fakemap.FactID("fact-"+k)+"|af")
	}
	if _, err := db.Notification(mapping.SourceStripe, "bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("bad op stored: %v", err)
	}
	got := dueKeys(t, db, "af", storeT0)
	sort.Strings(got)
	sort.Strings(ok)
	if strings.Join(got, " ") != strings.Join(ok, " ") {
		t.Errorf("due %v, want %v", got, ok)
	}
}

func TestClosed(t *testing.T) {
	db := openTest(t)
	db.ingest(t, fakemap.Note("evt_1", fakemap.Facts("a")))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := db.Ingest(context.Background(), fakemap.Note("evt_2", fakemap.Facts("b"))); !errors.Is(err, ErrClosed) {
		t.Errorf("Ingest after Close: %v, want ErrClosed", err)
	}
	if err := db.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close: %v", err)
	}
	if err := db.Complete(context.Background(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Complete after Close: %v", err)
	}
}

func TestCloseCommitsQueuedWork(t *testing.T) {
	b := newBlockFirst()
	db := mustOpen(t, b.options(&Options{Now: (&testClock{t: storeT0}).Now}))
	done := make(chan map[string]error)
	go func() { done <- queueBehindBlocked(t, db, b, []string{"q1", "q2"}) }()
	<-b.started
	for len(db.ops) < 2 {
		time.Sleep(time.Millisecond)
	}
	path := db.Path()
	closed := make(chan error)
	go func() { closed <- db.Close() }()
	errs := <-done
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for k, err := range errs {
		if err != nil {
			t.Errorf("%s queued before Close failed: %v", k, err)
		}
	}
	db2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for _, k := range []string{"n0", "q1", "q2"} {
		if _, err := db2.Notification(mapping.SourceStripe, k); err != nil {
			t.Errorf("%s lost: %v", k, err)
		}
	}
}

// TestIngestWakesOnceAndDestinations: bolt reports one commit with one
// OnCommit call (the conformance suite asserts only that destinations are
// woken), and lists the destinations with queued work from its due index.
func TestIngestWakesOnceAndDestinations(t *testing.T) {
	db := openTest(t)
	db.ingest(t, fakemap.Note("evt_1", fakemap.Facts("a")))
	if got := db.Destinations(); strings.Join(got, ",") != "af,hook" {
		t.Errorf("destinations %v", got)
	}
	var woken [][]string
	for deadline := time.Now().Add(time.Second); len(woken) == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		db.mu.Lock() // OnCommit runs just after the ingest returns
		woken = db.woken
		db.mu.Unlock()
	}
	time.Sleep(10 * time.Millisecond)
	db.mu.Lock()
	woken = db.woken
	db.mu.Unlock()
	if len(woken) != 1 || strings.Join(woken[0], ",") != "af,hook" {
		t.Errorf("OnCommit got %v, want one call with af,hook", woken)
	}
}

// TestPreparedIngestConflictMapsAgain: a notification mapped against a
// snapshot whose subscription state another notification changed before
// it committed is mapped again, so neither update is lost.
func TestPreparedIngestConflictMapsAgain(t *testing.T) {
	aMapped := make(chan struct{})
	bDone := make(chan struct{})
	var aRuns atomic.Int32
	db := mustOpen(t, &Options{
		Now: (&testClock{t: storeT0}).Now,
		Map: func(n *mapping.Notification, st mapping.States) (mapping.Result, error) {
			out, err := fakemap.Map(n, st)
			if n.Key == "a" && aRuns.Add(1) == 1 {
				close(aMapped) // a has read the state...
				<-bDone        // ...and b commits a change to it before a does
			}
			return out, err
		},
	})
	done := make(chan error, 1)
	go func() {
		_, err := db.Ingest(context.Background(), fakemap.Note("a", fakemap.Facts("fa")))
		done <- err
	}()
	<-aMapped
	if _, err := db.Ingest(context.Background(), fakemap.Note("b", fakemap.Facts("fb"))); err != nil {
		t.Fatal(err)
	}
	close(bDone)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, _, _ := db.State("test:count")
	if st.Value("count") != "2" {
		t.Fatalf("state count %q after two notifications, want 2 (an update was lost)", st.Value("count"))
	}
	if aRuns.Load() != 2 {
		t.Fatalf("a was mapped %d times, want 2 (once against the stale snapshot, once again)", aRuns.Load())
	}
}
