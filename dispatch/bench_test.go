package dispatch

import (
	"fmt"
	"testing"
	"time"

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
