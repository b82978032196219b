// Package storetest is the store contract's conformance suite: behaviour
// tests that every backend (BoltDB, PostgreSQL) must pass. A backend's test
// calls Run with a Backend that opens a fresh store.
package storetest

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/storetest/fakemap"
)

// Backend opens stores for the suite.
type Backend struct {
	// Open opens a fresh, empty store with opts. The backend closes it
	// (and checks its consistency) when the test ends.
	Open func(t *testing.T, opts *store.Options) store.Store
	// Reopen closes s and opens the same data again with opts (a restart).
	Reopen func(t *testing.T, s store.Store, opts *store.Options) store.Store
}

// Managed makes a Backend of a store's open function: fresh returns the
// location of a new, empty store (a file path, a DSN), where the location
// of an open one. Every store is closed when its test ends, after a
// consistency check; Reopen closes a store and opens its location again.
func Managed(fresh func(t testing.TB) string, open func(where string, opts *store.Options) (store.Store, error), where func(store.Store) string) Backend {
	var closed sync.Map // stores Reopen closed: their cleanup has nothing to check
	openAt := func(t *testing.T, at string, opts *store.Options) store.Store {
		t.Helper()
		s, err := open(at, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, ok := closed.Load(s); ok {
				return // the reopened store is checked
			}
			if err := s.Check(); err != nil {
				t.Errorf("consistency check: %v", err)
			}
			_ = s.Close()
		})
		return s
	}
	return Backend{
		Open: func(t *testing.T, opts *store.Options) store.Store { return openAt(t, fresh(t), opts) },
		Reopen: func(t *testing.T, s store.Store, opts *store.Options) store.Store {
			at := where(s)
			closed.Store(s, true)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openAt(t, at, opts)
		},
	}
}

// T0 is the start of every conformance test's clock.
var T0 = time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// The fake mapping (package fakemap), under the names the suite uses.
type (
	Fact = fakemap.Fact
	Body = fakemap.Body
)

var (
	ErrHard = fakemap.ErrHard
	FakeMap = fakemap.Map
	FactID  = fakemap.FactID
	Note    = fakemap.Note
	Facts   = fakemap.Facts
)

// Env is one test's store with its clock and the wake-ups it reported.
type Env struct {
	store.Store
	Clock   *Clock
	Opts    *store.Options
	backend Backend
	mu      sync.Mutex
	woken   [][]string
}

// Options returns the suite's standard options: FakeMap, the clock, routes
// to "af" and "hook", wake-ups recorded.
func (e *Env) options() *store.Options {
	return &store.Options{
		Map:    FakeMap,
		Now:    e.Clock.Now,
		Logger: slog.New(slog.DiscardHandler),
		Route:  func(*mapping.Event) []string { return []string{"af", "hook"} },
		OnCommit: func(dests []string) {
			e.mu.Lock()
			e.woken = append(e.woken, append([]string(nil), dests...))
			e.mu.Unlock()
		},
	}
}

// Open opens a fresh store for t; edit, when not nil, adjusts the options.
func Open(t *testing.T, b Backend, edit func(o *store.Options)) *Env {
	t.Helper()
	e := &Env{Clock: NewClock(T0), backend: b}
	e.Opts = e.options()
	if edit != nil {
		edit(e.Opts)
	}
	e.Store = b.Open(t, e.Opts)
	return e
}

// Restart closes and reopens the store on the same data.
func (e *Env) Restart(t *testing.T) {
	t.Helper()
	e.Store = e.backend.Reopen(t, e.Store, e.Opts)
}

// Woken returns the wake-ups reported so far.
func (e *Env) Woken() [][]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]string(nil), e.woken...)
}

// MustIngest ingests n or fails the test.
func (e *Env) MustIngest(t *testing.T, n *mapping.Notification) store.IngestResult {
	t.Helper()
	res, err := e.Ingest(context.Background(), n)
	if err != nil {
		t.Fatalf("ingest %s: %v", n.Key, err)
	}
	return res
}

// DueKeys claims what is due for dest at now (limit 100) and returns the
// delivery keys, releasing the claims again.
func (e *Env) DueKeys(t *testing.T, dest string, now time.Time) []string {
	t.Helper()
	ds, err := e.Claim(context.Background(), dest, now, store.ClaimOptions{Limit: 100, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Delivery.Key)
	}
	if err := e.Release(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Run runs every conformance test against b, or only the named ones.
func Run(t *testing.T, b Backend, only ...string) {
	for _, c := range cases {
		if len(only) > 0 && !slices.Contains(only, c.name) {
			continue
		}
		t.Run(c.name, func(t *testing.T) { c.fn(t, b) })
	}
}

// ErasureCases are the cases that carry out privacy erasures.
var ErasureCases = []string{"ShopifyCustomerErasure", "ShopifyErasureSurvivesRestart", "ShopifyShopErasure", "ErasuresRunInTurn"}

type testCase struct {
	name string
	fn   func(t *testing.T, b Backend)
}

// cases lists the conformance tests; each file of the suite adds its own.
var cases []testCase

func register(name string, fn func(t *testing.T, b Backend)) bool {
	cases = append(cases, testCase{name, fn})
	return true
}

// Due claims up to limit deliveries of dest due at now, skipping what skip
// reports, and releases the claims again.
func (e *Env) Due(t *testing.T, dest string, now time.Time, limit int, skip func(string) bool) []store.Due {
	t.Helper()
	ds, err := e.Claim(context.Background(), dest, now, store.ClaimOptions{Limit: limit, Lease: time.Minute, Skip: skip})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(ds))
	for _, d := range ds {
		keys = append(keys, d.Delivery.Key)
	}
	if err := e.Release(context.Background(), keys); err != nil {
		t.Fatal(err)
	}
	return ds
}

// MustComplete applies completions or fails the test.
func (e *Env) MustComplete(t *testing.T, cs ...store.Completion) {
	t.Helper()
	if err := e.Complete(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
}

// ResetWoken forgets the wake-ups reported so far.
func (e *Env) ResetWoken() {
	e.mu.Lock()
	e.woken = nil
	e.mu.Unlock()
}

// MustJSON marshals v or panics.
func MustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// WokenFor reports whether a wake-up named dest, waiting a little for it:
// the contract calls OnCommit after the commit, not necessarily before the
// call that committed returns. Backends may report a commit more than once
// (PostgreSQL also relays its own NOTIFY), so the suite asserts only that
// the destination was woken.
func (e *Env) WokenFor(dest string) bool {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		for _, w := range e.Woken() {
			for _, d := range w {
				if d == dest {
					return true
				}
			}
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
