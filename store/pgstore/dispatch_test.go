package pgstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/store/storetest"
)

// countingForwarder counts sends per delivery key and notices a key sent
// by two replicas at once.
type countingForwarder struct {
	hold     time.Duration
	mu       sync.Mutex
	sent     map[string]int
	inflight map[string]int
	overlaps int
}

func (f *countingForwarder) Limits() forwarders.Limits { return forwarders.Limits{BatchSize: 1} }

func (f *countingForwarder) Send(_ context.Context, batch []forwarders.Item) []forwarders.Result {
	out := make([]forwarders.Result, len(batch))
	for i, it := range batch {
		f.mu.Lock()
		f.sent[it.Key]++
		if f.inflight[it.Key]++; f.inflight[it.Key] > 1 {
			f.overlaps++
		}
		f.mu.Unlock()
		time.Sleep(f.hold)
		f.mu.Lock()
		f.inflight[it.Key]--
		f.mu.Unlock()
		out[i] = forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
	}
	return out
}

// TestReplicasRateLimitedClaimsSentOnce: replicas claim up to the
// destination's concurrency, then wait for the shared rate limit; a
// delivery whose lease ran out while it waited is claimed by another
// replica, so the first must not send it any more. Without failures every
// delivery is sent exactly once.
func TestReplicasRateLimitedClaimsSentOnce(t *testing.T) {
	rs, _ := replicas(t, 2, nil)
	fw := &countingForwarder{hold: 50 * time.Millisecond, sent: map[string]int{}, inflight: map[string]int{}}
	const n = 10
	for i := range n {
		if _, err := rs[0].Ingest(context.Background(), storetest.Note(fmt.Sprintf("n%d", i), storetest.Facts(fmt.Sprintf("f%d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, db := range rs {
		// 4 requests/s and 6 claimed at once: the last claimed waits 1.5s
		// for its token, longer than the 1s lease.
		d := dispatch.New(db, []dispatch.Destination{{Name: "af", Type: "test", Forwarder: fw, PerSecond: 4, Burst: 1, Concurrency: 6}},
			dispatch.Options{Lease: time.Second, Poll: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.Run(ctx)
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var open int
		if err := rs[0].Pool().QueryRow(context.Background(), "SELECT count(*) FROM deliveries WHERE next_at_ms IS NOT NULL").Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries unfinished", open)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // sends of expired claims still waiting for a token
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for k, c := range fw.sent {
		if c != 1 {
			t.Errorf("%s sent %d times", k, c)
		}
	}
	if len(fw.sent) != n || fw.overlaps > 0 {
		t.Errorf("%d deliveries sent, want %d; %d sent by two replicas at once", len(fw.sent), n, fw.overlaps)
	}
}
