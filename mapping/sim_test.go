package mapping

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"

	"pgregory.net/rapid"
)

// The lifecycle simulators (sim_*_test.go) generate random subscription
// lifecycles per store, render each as the notifications that store sends,
// deliver them in an order the store allows (shuffled where it does not
// order them, with duplicates, and with the first part missing: the
// gateway installed mid-lifecycle) and check invariants on the canonical
// events. docs/MAPPING.md lists the invariants and the figures.
//
// Short form: go test ./mapping (rapid's 100 lifecycles per store, a few
// orderings each). Long form: POSTBACK_SIM_ROUNDS=50 go test ./mapping -run
// Simulator -v (50 x 100 lifecycles per store; -rapid.checks changes the
// 100). A failure is shrunk by rapid to a minimal lifecycle; it becomes a
// fixed regression test in sim_regressions_test.go.

// simStore stands in for the store's ingest transaction: inbox dedupe by
// notification key, event dedupe by event id (the first stored wins, as the
// store keeps it), and states written as JSON so every read is a copy.
type simStore struct {
	inbox  map[string]bool
	events map[string]Event
	order  []string // event ids in the order stored
	states stripeStates
}

func newSimStore() *simStore {
	return &simStore{inbox: map[string]bool{}, events: map[string]Event{}, states: stripeStates{}}
}

// ingest maps n like the store does and reports the mapping error, if any.
func (s *simStore) ingest(n *Notification) error {
	if s.inbox[n.Source+"|"+n.Key] {
		return nil
	}
	for _, k := range n.AltKeys {
		if s.inbox[n.Source+"|alt|"+k] {
			return nil
		}
	}
	res, err := Map(n, s.states)
	if err != nil {
		return err
	}
	s.inbox[n.Source+"|"+n.Key] = true
	for _, k := range n.AltKeys {
		s.inbox[n.Source+"|alt|"+k] = true
	}
	for _, e := range res.Events {
		if _, ok := s.events[e.ID]; ok {
			continue
		}
		s.events[e.ID] = e
		s.order = append(s.order, e.ID)
	}
	s.states.apply(res)
	return nil
}

func (s *simStore) list() []Event {
	out := make([]Event, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.events[id])
	}
	return out
}

func (s *simStore) ids() []string {
	ids := append([]string(nil), s.order...)
	sort.Strings(ids)
	return ids
}

// simFigures counts what the simulators ran, for docs/MAPPING.md.
type simFigures struct {
	mu            sync.Mutex
	lifecycles    int
	orderings     int
	notifications int
	events        int
	exceptions    map[string]int // documented fallbacks that applied
}

func (f *simFigures) add(orderings, notifications, events int, exceptions ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lifecycles++
	f.orderings += orderings
	f.notifications += notifications
	f.events += events
	for _, e := range exceptions {
		if f.exceptions == nil {
			f.exceptions = map[string]int{}
		}
		f.exceptions[e]++
	}
}

func (f *simFigures) log(t *testing.T, store string) {
	t.Logf("%s simulator: %d lifecycles, %d orderings, %d notifications delivered, %d events, fallbacks %v, violations 0",
		store, f.lifecycles, f.orderings, f.notifications, f.events, f.exceptions)
}

// simRounds is how many rapid.Check rounds a simulator runs: 1, or
// POSTBACK_SIM_ROUNDS for the long form.
func simRounds(t *testing.T) int {
	v := os.Getenv("POSTBACK_SIM_ROUNDS")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("POSTBACK_SIM_ROUNDS=%q: want a positive integer", v)
	}
	return n
}

// simCurrency is a currency of the simulators with its exponent, given
// independently of the currency table under test.
type simCurrency struct {
	code string
	exp  int
}

var simCurrencies = []simCurrency{{"USD", 2}, {"EUR", 2}, {"JPY", 0}, {"KRW", 0}, {"KWD", 3}, {"BHD", 3}}

// micros converts minor units to micros by the exponent alone.
func (c simCurrency) micros(minor int64) int64 {
	m := minor
	for i := c.exp; i < 6; i++ {
		m *= 10
	}
	return m
}

// shuffled returns a permutation of n indexes drawn by rt.
func shuffled(rt *rapid.T, n int, label string) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := rapid.IntRange(0, i).Draw(rt, fmt.Sprintf("%s-swap-%d", label, i))
		idx[i], idx[j] = idx[j], idx[i]
	}
	return idx
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// revenueByCurrency sums event revenue per currency.
func revenueByCurrency(evs []Event) map[string]int64 {
	out := map[string]int64{}
	for _, e := range evs {
		if e.Revenue != nil {
			out[e.Revenue.Currency] += e.Revenue.AmountMicros
		}
	}
	return out
}

func equalSums(a, b map[string]int64) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}
