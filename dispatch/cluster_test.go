package dispatch

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/store"
)

// bucketCluster is a store.Cluster whose TakeTokens is the token bucket
// pgstore keeps in a row, in memory.
type bucketCluster struct {
	mu     sync.Mutex
	tokens float64
	at     time.Time
}

func (b *bucketCluster) TakeTokens(_ context.Context, _ string, n int, perSecond float64, burst int) (int, time.Duration, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.at.IsZero() {
		b.tokens, b.at = float64(burst), now
	}
	avail := math.Min(float64(burst), b.tokens+perSecond*now.Sub(b.at).Seconds())
	got := int(math.Min(float64(n), math.Floor(avail)))
	b.tokens, b.at = avail-float64(got), now
	if got > 0 {
		return got, 0, nil
	}
	return 0, max(time.Duration((1-avail)/perSecond*float64(time.Second)), time.Millisecond), nil
}

func (b *bucketCluster) LoadHealth(context.Context, string) (store.SharedHealth, bool, error) {
	return store.SharedHealth{}, false, nil
}
func (b *bucketCluster) SaveHealth(context.Context, string, store.SharedHealth) error { return nil }
func (b *bucketCluster) TakeProbe(context.Context, string, time.Time, time.Time) (bool, error) {
	return false, nil
}

// TestClusterLimiterIdleTokens: tokens a replica took from the shared
// bucket and did not spend before going idle are not spent later on top
// of the bucket's burst: in any second the replicas together send at most
// burst + rate.
func TestClusterLimiterIdleTokens(t *testing.T) {
	const rate, burst = 100.0, 10
	c := &bucketCluster{}
	var lims []*clusterLimiter
	ctx := context.Background()
	for range 3 {
		l := &clusterLimiter{c: c, dest: "hook", perSecond: rate, burst: burst}
		// Each replica sends one request (taking a block of tokens), then
		// its queue is empty.
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		lims = append(lims, l)
		time.Sleep(150 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the bucket is full again
	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for _, l := range lims {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if err := l.Wait(ctx); err != nil {
						return
					}
					if time.Since(start) >= time.Second {
						return
					}
					sent.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if n := sent.Load(); n > burst+rate+1 {
		t.Fatalf("%d requests in one second, the limit is %d/s with burst %d", n, int(rate), burst)
	}
}
