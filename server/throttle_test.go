package server

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/store"
)

// TestThrottlingHonoursRetryAfter has a destination answer 429 with
// Retry-After: 1 to every third request while 6 events queue up. After each
// 429 the whole destination must stay silent until the time it gave, not
// only the throttled event, and everything must still be delivered.
func TestThrottlingHonoursRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var throttledUntil time.Time
	var early []string
	n := 0
	rcv := newReceiver(t, func(w http.ResponseWriter) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if now.Before(throttledUntil) {
			early = append(early, fmt.Sprintf("request %v before Retry-After ended", throttledUntil.Sub(now)))
		}
		n++
		if n%3 == 1 {
			throttledUntil = now.Add(time.Second)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	cfg := e2eConfig(t, t.TempDir()+"/db", rcv.srv.URL, "")
	cfg.Destinations[0].Concurrency = 1
	cfg.Destinations[0].Retry.MaxAttempts = 100
	tg := startGateway(t, cfg, nil)
	for i := 0; i < 6; i++ {
		postStripe(t, tg.url, stripeEvent(fmt.Sprintf("evt_throttle_%02d", i)))
	}
	waitFor(t, "all delivered", func() bool {
		ds, _ := tg.g.Store.Deliveries(store.DeliveryFilter{})
		ok := 0
		for _, d := range ds {
			if d.State == store.StateDelivered {
				ok++
			}
		}
		return ok == 6
	})
	mu.Lock()
	defer mu.Unlock()
	if len(early) > 0 {
		t.Errorf("%d requests inside a Retry-After window: %v", len(early), early)
	}
	if n < 8 {
		t.Errorf("only %d requests: the 429s were not exercised", n)
	}
}
