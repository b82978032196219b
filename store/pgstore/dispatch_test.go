package pgstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/store"
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

// BenchmarkDrainPG is dispatch.BenchmarkDrain on PostgreSQL: 1 000
// deliveries queued in one commit, then drained by one replica's
// dispatcher (default poll, concurrency 32, leases and the in-flight cap
// in the database) to a destination answering after 20 ms. The bound is
// concurrency / the answers' measured latency; of_bound is the drained
// rate over it.
func BenchmarkDrainPG(b *testing.B) {
	const perRound, conc, latency = 1000, 32, 20 * time.Millisecond
	var d *dispatch.Dispatcher
	// The store wakes the dispatcher at each commit that queues work, as
	// the gateway wires it.
	rs, _ := replicas(b, 1, func(_ int, o *store.Options) { o.OnCommit = func(ds []string) { d.Wake(ds) } })
	db := rs[0]
	fw := &sleepForwarder{latency: latency}
	d = dispatch.New(db, []dispatch.Destination{{Name: "af", Type: "test", Forwarder: fw, Concurrency: conc, BatchSize: 1}},
		dispatch.Options{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	open := func() int {
		var n int
		if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM deliveries WHERE next_at_ms IS NOT NULL").Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	rounds := (b.N + perRound - 1) / perRound
	b.ResetTimer()
	var busy time.Duration
	for r := range rounds {
		facts := make([]string, perRound)
		for i := range facts {
			facts[i] = fmt.Sprintf("r%d-f%d", r, i)
		}
		b.StopTimer()
		if _, err := db.Ingest(ctx, storetest.Note(fmt.Sprintf("round%d", r), storetest.Facts(facts...))); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for open() > 0 {
			time.Sleep(2 * time.Millisecond)
		}
		busy += time.Since(start)
	}
	rate := float64(rounds*perRound) / busy.Seconds()
	real := time.Duration(fw.answerNs.Load() / max(1, fw.answered.Load()))
	b.ReportMetric(rate, "deliveries/s")
	b.ReportMetric(float64(real.Microseconds())/1000, "answer_ms")
	b.ReportMetric(rate/(float64(conc)/real.Seconds()), "of_bound")
}

// sleepForwarder answers every request after latency and times the
// answers.
type sleepForwarder struct {
	latency            time.Duration
	answered, answerNs atomic.Int64
}

func (f *sleepForwarder) Limits() forwarders.Limits { return forwarders.Limits{BatchSize: 1} }

func (f *sleepForwarder) Send(_ context.Context, batch []forwarders.Item) []forwarders.Result {
	start := time.Now()
	time.Sleep(f.latency)
	f.answerNs.Add(int64(time.Since(start)))
	f.answered.Add(int64(len(batch)))
	return forwarders.All(len(batch), forwarders.Result{Outcome: forwarders.Delivered, Status: 200})
}
