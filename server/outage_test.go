package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/config"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// TestDestinationOutage takes one destination down (503 and refused work)
// for POSTBACK_OUTAGE (default 2s; the reliability suite runs 10m) while
// events keep arriving, then brings it back. Everything must be delivered
// to both destinations, the breaker of the failing one must open and close
// again, and the healthy destination must keep its latency meanwhile.
func TestDestinationOutage(t *testing.T) {
	outage := 2 * time.Second
	if v, err := time.ParseDuration(os.Getenv("POSTBACK_OUTAGE")); err == nil && v > 0 {
		outage = v
	}
	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	gotA, gotB := map[string]bool{}, map[string]time.Time{}
	rA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		gotA[r.Header.Get("webhook-id")] = true
		mu.Unlock()
	}))
	defer rA.Close()
	rB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		if _, ok := gotB[r.Header.Get("webhook-id")]; !ok {
			gotB[r.Header.Get("webhook-id")] = time.Now()
		}
		mu.Unlock()
	}))
	defer rB.Close()

	extra := fmt.Sprintf(`  - name: healthy
    type: webhook
    endpoint: %q
    secret: %q
    match: {environments: [production, sandbox]}
    rate_limit: {per_second: 1000}
`, rB.URL, e2eHookSecret)
	cfg := e2eConfig(t, t.TempDir()+"/db", rA.URL, extra)
	cfg.Destinations[0].Retry.MaxAttempts = 1000
	cfg.Destinations[0].Retry.MaxAge = config.Duration(time.Hour)
	cfg.Destinations[0].RateLimit.PerSecond = 1000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{
		Logger:   NewLogger(io.Discard, config.Log{Level: "error"}, nil),
		Listener: ln,
		Dispatch: dispatch.Options{BackoffBase: 20 * time.Millisecond, BackoffCap: 300 * time.Millisecond, Poll: 10 * time.Millisecond,
			BreakerFailures: 5, BreakerCooldown: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()

	sentAt := map[string]time.Time{}
	var sawOpen atomic.Bool
	stopWatch := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for _, h := range g.Dispatcher.Health() {
				if h.Name == "hook" && h.Circuit == "open" {
					sawOpen.Store(true)
				}
			}
		}
	}()
	defer close(stopWatch)

	// Post steadily through the outage and a little after it.
	end := time.Now().Add(outage + 500*time.Millisecond)
	recovered := time.Now().Add(outage)
	n := 0
	for time.Now().Before(end) {
		if down.Load() && time.Now().After(recovered) {
			down.Store(false)
		}
		n++
		id := fmt.Sprintf("evt_outage_%05d", n)
		sentAt[id] = time.Now()
		if code := postStripe(t, base, stripeEvent(id)); code != 200 {
			t.Fatalf("post %s: %d", id, code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	down.Store(false)

	// The backlog drains at the destination's rate: allow for it.
	deadline := time.Now().Add(30*time.Second + outage/2)
	for {
		st := map[string]int{}
		ds, _ := g.Store.Deliveries(store.DeliveryFilter{Limit: 1 << 30})
		for _, d := range ds {
			st[d.State]++
		}
		if st[store.StateDelivered] == 2*n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not everything delivered after the outage: %v of %d", st, 2*n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !sawOpen.Load() {
		t.Error("the failing destination's circuit never opened")
	}
	waitFor(t, "circuit closed again", func() bool {
		for _, h := range g.Dispatcher.Health() {
			if h.Name == "hook" {
				return h.Circuit == "closed"
			}
		}
		return false
	})
	mu.Lock()
	defer mu.Unlock()
	if len(gotA) != n {
		t.Errorf("recovered destination got %d distinct events, want %d", len(gotA), n)
	}
	// The healthy destination is unaffected: its post-to-delivery latency
	// stays low during the other's outage.
	var lat []time.Duration
	for id, at := range sentAt {
		if got, ok := gotB[mapping.EventID(mapping.SourceStripe, "trial_started", "sub_"+id)]; ok {
			lat = append(lat, got.Sub(at))
		}
	}
	if len(lat) != n {
		t.Fatalf("healthy destination got %d of %d", len(lat), n)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]
	t.Logf("outage %v: %d events; healthy destination post-to-delivery p50 %v p99 %v", outage, n, lat[len(lat)/2], p99)
	if p99 > time.Second {
		t.Errorf("healthy destination p99 %v during the other's outage, want < 1s (it shares nothing with the failing one)", p99)
	}
}
