package dispatch

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/store"
)

// BenchmarkDispatchLoop measures the dispatcher's own loop: scanning the due
// index, leasing, batching, calling a forwarder that answers at once, and
// committing the outcomes (attempt log, delivery state, due key), with a
// real BoltDB. One op is one delivery; each round queues 500 events and
// waits until all are delivered.
func BenchmarkDispatchLoop(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			const perRound = 500
			f := &fakeForwarder{batch: batch}
			db, _ := setup(b, perRound, Destination{Name: "d", Forwarder: f, Concurrency: 4, Linger: time.Millisecond}, Options{Poll: time.Millisecond})
			rounds := (b.N + perRound - 1) / perRound
			b.ResetTimer()
			start := time.Now()
			for r := 0; r < rounds; r++ {
				ingest(b, db, fmt.Sprintf("round%d", r))
				want := (r + 1) * perRound
				waitFor(b, "round delivered", func() bool { return states(b, db)[store.StateDelivered] >= want })
			}
			el := time.Since(start)
			b.ReportMetric(float64(rounds*perRound)/el.Seconds(), "deliveries/s")
			b.ReportMetric(float64(f.callCount())/el.Seconds(), "requests/s")
		})
	}
}

// BenchmarkDrain measures how fast a backlog drains once ingest has
// stopped (issue 17): 1000 deliveries queued in one commit (one wake-up;
// the clock starts once it is committed),
// a destination answering in 20 or 5 ms, concurrency 32, the default poll
// interval. The bound is min(rate limit, concurrency / latency); of_bound
// is the measured rate over it, with the latency the destination's
// answers really took (answer_ms), and of_nominal_bound with the latency
// it was asked for. The dispatcher is woken by each finished
// send, never only by the poll, so the drain does not depend on
// poll_interval.
func BenchmarkDrain(b *testing.B) {
	const perRound, conc = 1000, 32
	for _, c := range []struct {
		name      string
		latency   time.Duration
		perSecond float64
	}{{"latency=20ms", 20 * time.Millisecond, 0}, {"latency=5ms", 5 * time.Millisecond, 0}, {"latency=5ms/rate=2000", 5 * time.Millisecond, 2000}} {
		latency := c.latency
		b.Run(c.name, func(b *testing.B) {
			// The stand-in destination sleeps for its latency; a sleep
			// lasts longer than asked (the timer's granularity and
			// scheduling: 5.2-5.8 ms for 5 ms on this machine, more under
			// load), so the answers are timed and the bound uses the
			// latency the destination really had.
			var answered, answerNs atomic.Int64
			f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
				start := time.Now()
				time.Sleep(latency)
				answerNs.Add(int64(time.Since(start)))
				answered.Add(1)
				return forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
			}}
			db, _ := setup(b, perRound, Destination{Name: "d", Forwarder: f, Concurrency: conc, PerSecond: c.perSecond, Burst: 1}, Options{Poll: 250 * time.Millisecond})
			rounds := (b.N + perRound - 1) / perRound
			b.ResetTimer()
			var busy time.Duration
			for r := 0; r < rounds; r++ {
				// The backlog is there before the clock starts: its one
				// commit (1000 sealed events) is ingest, not drain. The
				// dispatcher is woken by that commit.
				ingest(b, db, fmt.Sprintf("round%d", r))
				start := time.Now()
				// The cheapest emptiness check (the first due key), so that
				// the measurement does not compete with the dispatcher.
				waitFor(b, "round delivered", func() bool { return db.NextDue("d").IsZero() })
				busy += time.Since(start)
			}
			rate := float64(rounds*perRound) / busy.Seconds()
			real := time.Duration(answerNs.Load() / max(1, answered.Load()))
			bound, nominal := float64(conc)/real.Seconds(), float64(conc)/latency.Seconds()
			if c.perSecond > 0 {
				bound, nominal = min(bound, c.perSecond), min(nominal, c.perSecond)
			}
			b.ReportMetric(rate, "deliveries/s")
			b.ReportMetric(float64(real.Microseconds())/1000, "answer_ms")
			b.ReportMetric(rate/bound, "of_bound")
			b.ReportMetric(rate/nominal, "of_nominal_bound")
		})
	}
}
