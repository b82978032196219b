package dispatch

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
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
func (b *bucketCluster) SharedQueue(context.Context, string, time.Duration) (store.QueueStats, error) {
	return store.QueueStats{}, nil
}

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

// answerStore is a shared (cluster) store of two deliveries whose Claim
// records what the dispatcher tells it and whose Complete waits until the
// test lets it finish.
type answerStore struct {
	bucketCluster
	mu       sync.Mutex
	due      []store.Due
	answered [][]string // Answered of each claim
	finish   chan struct{}
	done     atomic.Int64
}

func (s *answerStore) Claim(_ context.Context, _ string, _ time.Time, o store.ClaimOptions) ([]store.Due, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answered = append(s.answered, append([]string(nil), o.Answered...))
	n := min(o.Limit, len(s.due))
	out := s.due[:n]
	s.due = s.due[n:]
	return out, nil
}

func (s *answerStore) Complete(_ context.Context, cs []store.Completion) error {
	<-s.finish
	s.done.Add(int64(len(cs)))
	return nil
}

func (s *answerStore) Release(context.Context, []string) error { return nil }
func (s *answerStore) NextDue(string) time.Time                { return time.Time{} }
func (s *answerStore) Queue(string) (store.QueueStats, error)  { return store.QueueStats{}, nil }

func (s *answerStore) lastAnswered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.answered) == 0 {
		return nil
	}
	return s.answered[len(s.answered)-1]
}

// TestClaimTellsAnswered: on a shared store, a delivery whose destination
// has answered and whose outcome is still being recorded is named in the
// next claims' Answered (it no longer counts against the in-flight cap);
// once its outcome is recorded it is not.
func TestClaimTellsAnswered(t *testing.T) {
	st := &answerStore{finish: make(chan struct{})}
	st.due = []store.Due{{Delivery: store.Delivery{Key: "evt_1|d", Destination: "d"}, Event: mapping.Event{ID: "evt_1", ReceivedAt: time.Now()}}}
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		return forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
	}}
	d := New(st, []Destination{{Name: "d", Forwarder: f, Concurrency: 1}}, Options{Poll: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { d.Run(ctx); close(stopped) }()
	finish := sync.OnceFunc(func() { close(st.finish) })
	defer func() { finish(); cancel(); <-stopped }() // a failed wait must not leave the send blocked
	waitFor(t, "the answered delivery named in a claim", func() bool {
		a := st.lastAnswered()
		return len(a) == 1 && a[0] == "evt_1|d"
	})
	finish()
	waitFor(t, "the outcome recorded", func() bool { return st.done.Load() == 1 })
	d.Wake([]string{"d"})
	waitFor(t, "a claim without it", func() bool { return len(st.lastAnswered()) == 0 })
}

// gaugeStore is a shared store whose own count (Queue) differs from the
// cluster's shared one (SharedQueue), which records the age it accepts.
type gaugeStore struct {
	answerStore
	maxAge atomic.Int64
}

func (s *gaugeStore) SharedQueue(_ context.Context, _ string, maxAge time.Duration) (store.QueueStats, error) {
	s.maxAge.Store(int64(maxAge))
	return store.QueueStats{Depth: 7, OldestCreate: time.Now().Add(-time.Minute)}, nil
}

// TestGaugesShareTheClusterCount: on a shared store the queue gauges come
// from the cluster's shared count, accepted while younger than the
// refresh interval, so the replicas count a backlog once between them.
func TestGaugesShareTheClusterCount(t *testing.T) {
	st := &gaugeStore{answerStore: answerStore{finish: make(chan struct{})}}
	m := metrics.New()
	d := New(st, []Destination{{Name: "d", Forwarder: &fakeForwarder{batch: 1}, Concurrency: 1}}, Options{Metrics: m, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { d.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	waitFor(t, "the shared depth in the gauge", func() bool { return testutil.ToFloat64(m.QueueDepth.WithLabelValues("d")) == 7 })
	if age := time.Duration(st.maxAge.Load()); age <= 0 || age >= gaugeInterval {
		t.Errorf("shared count accepted up to %v old; want under the %v refresh", age, gaugeInterval)
	}
	if old := testutil.ToFloat64(m.OldestPending.WithLabelValues("d")); old < 59 {
		t.Errorf("oldest pending %.0f s, want the shared count's minute", old)
	}
}
