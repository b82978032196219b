package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/storetest/fakemap"
)

// benchGoroutines are the concurrency levels both benchmarks run at.
var benchGoroutines = []int{1, 16, 64}

// benchBody is a notification body of realistic size (a Stripe event is
// 2-6 KiB; this is about 2 KiB) that maps to one event.
func benchBody(i int64) []byte {
	b := fakemap.Body{Facts: []fakemap.Fact{{
		Fact: "sub_1QPaidB2eZvKYlo2CpQ8rS9tU:renewal:" + strconv.FormatInt(i, 10), Type: mapping.SubscriptionRenewed, User: "user_51d0aa",
		IDs: map[string]string{"idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "appsflyer_id": "1764458400123-5817305"},
	}}}
	pad := make([]byte, 1800)
	for j := range pad {
		pad[j] = 'a' + byte(j%26)
	}
	b.Ignore = string(pad) // carried, not used: fakemap.Map emits the fact
	out, _ := json.Marshal(b)
	return out
}

// runGoroutines runs op b.N times over g goroutines. One goroutine is a
// plain loop; more use b.RunParallel with SetParallelism, which starts
// parallelism×GOMAXPROCS goroutines, so g is rounded up to a multiple of
// GOMAXPROCS. It returns the goroutine count actually used.
func runGoroutines(b *testing.B, g int, op func(i int64)) int {
	var seq atomic.Int64
	if g == 1 {
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			op(seq.Add(1))
		}
		return 1
	}
	procs := runtime.GOMAXPROCS(0)
	p := (g + procs - 1) / procs
	b.SetParallelism(p)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			op(seq.Add(1))
		}
	})
	return p * procs
}

// BenchmarkIngest measures Ingest through the group-commit writer: each op
// stores a notification, maps it to one event of a subscription of its own
// (as real traffic, where two notifications of one subscription at the same
// instant are rare) and queues one delivery. Mapping runs outside the
// writer; the writer re-checks the state the mapping read and commits.
func BenchmarkIngest(b *testing.B) {
	perSub := (&blockFirst{}).options(&Options{}).Map
	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			db, err := Open(filepath.Join(b.TempDir(), "bench.db"), &Options{
				Map:    perSub,
				Route:  func(*mapping.Event) []string { return []string{"af"} },
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			b.ReportAllocs()
			used := runGoroutines(b, g, func(i int64) {
				n := &mapping.Notification{Source: mapping.SourceStripe, Key: "evt_" + strconv.FormatInt(i, 10), Body: benchBody(i)}
				if _, err := db.Ingest(ctx, n); err != nil {
					b.Error(err)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			b.ReportMetric(float64(used), "goroutines")
		})
	}
}

// BenchmarkBoltUpdatePerOp is the baseline BenchmarkIngest is measured
// against: the same writes (inbox item, id index, event, delivery) with
// one bolt.Update, and so one fsync pair, per op.
func BenchmarkBoltUpdatePerOp(b *testing.B) {
	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			bdb, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), 0o600, &bolt.Options{
				Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 1 << 30,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer bdb.Close()
			if err := bdb.Update(func(tx *bolt.Tx) error {
				for _, name := range [][]byte{bInbox, bInboxIDs, bEvents, bDeliveries} {
					if _, err := tx.CreateBucketIfNotExists(name); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			used := runGoroutines(b, g, func(i int64) {
				key := "evt_" + strconv.FormatInt(i, 10)
				n := mapping.Notification{Source: mapping.SourceStripe, Key: key, Body: benchBody(i), ReceivedAt: time.Now()}
				e := mapping.Event{ID: mapping.EventID("test", key), Type: mapping.SubscriptionRenewed, Source: n.Source, SourceEventID: key}
				d := Delivery{Key: e.ID + "|af", EventID: e.ID, Destination: "af", State: StatePending}
				put := func(b *bolt.Bucket, k []byte, v any) error {
					data, err := json.Marshal(v)
					if err != nil {
						return err
					}
					return b.Put(k, data)
				}
				err := bdb.Update(func(tx *bolt.Tx) error {
					ik := inboxKey(n.Source, n.Key)
					if err := put(tx.Bucket(bInbox), timeKey(n.ReceivedAt, string(ik)), &n); err != nil {
						return err
					}
					if err := tx.Bucket(bInboxIDs).Put(ik, msKey(n.ReceivedAt)); err != nil {
						return err
					}
					ek := timeKey(n.ReceivedAt, e.ID)
					if err := put(tx.Bucket(bEvents), ek, &e); err != nil {
						return err
					}
					return put(tx.Bucket(bDeliveries), deliveryKeyIn(ek, d.Destination), &d)
				})
				if err != nil {
					b.Error(err)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			b.ReportMetric(float64(used), "goroutines")
		})
	}
}
