package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkStripeIngest measures Stripe ingest through the real handler:
// signature verification, PII scrub, mapping and the durable (fsync'd)
// group commit, with 1, 16 and 64 concurrent clients. Requests are served
// in-process (no sockets) so the figure is the gateway's own cost.
func BenchmarkStripeIngest(b *testing.B) {
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", par), func(b *testing.B) {
			cfg := e2eConfigB(b, b.TempDir()+"/db")
			g, err := New(cfg, Options{Logger: NewLogger(io.Discard, cfg.Log, nil)})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Store.Close()
			var seq atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("evt_bench_%d", seq.Add(1))
					body := stripeEvent(id)
					sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: e2eStripeSecret, Timestamp: time.Now()}).Header
					req := httptest.NewRequest(http.MethodPost, "/webhooks/stripe", bytes.NewReader(body))
					req.Header.Set("Stripe-Signature", sig)
					rec := httptest.NewRecorder()
					g.Echo.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Errorf("status %d: %s", rec.Code, rec.Body)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ingests/s")
		})
	}
}

// BenchmarkBoltCommitPerWrite is the baseline: one bbolt Update (two
// fdatasyncs) per write of a similar record, from the same numbers of
// goroutines, without group commit.
func BenchmarkBoltCommitPerWrite(b *testing.B) {
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", par), func(b *testing.B) {
			db, err := bolt.Open(b.TempDir()+"/bolt.db", 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
				b.Fatal(err)
			}
			val := bytes.Repeat([]byte("x"), 1024)
			var seq atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := []byte(fmt.Sprintf("k%012d", seq.Add(1)))
					if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put(k, val) }); err != nil {
						b.Error(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
		})
	}
}
