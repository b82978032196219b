package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BenchFloors are the limits `postback bench --self --floors` measures in
// the same invocation as the run, and the run's ratio to them.
type BenchFloors struct {
	// PGBenchTPS is pgbench's insert-only transactions per second on the
	// run's database (--dsn), with PGBenchClients clients for
	// PGBenchSeconds, measured first.
	PGBenchTPS     float64 `json:"pgbench_tps,omitempty"`
	PGBenchClients int     `json:"pgbench_clients,omitempty"`
	PGBenchSeconds int     `json:"pgbench_s,omitempty"`
	// BarePS is the bare echo handler's accepted/s with the run's mix,
	// concurrency, duration and presigning (stripe, shopify and custom
	// mixes; left out for Apple).
	BarePS     float64 `json:"bare_accepted_per_s,omitempty"`
	BareErrors int64   `json:"bare_errors,omitempty"`
	// P256PS is ECDSA P-256 verifications per second on all cores:
	// P256Goroutines (GOMAXPROCS) goroutines verifying one fixed signature
	// for P256WindowS seconds.
	P256PS         float64 `json:"p256_verifications_per_s"`
	P256Goroutines int     `json:"p256_goroutines"`
	P256WindowS    float64 `json:"p256_window_s"`
	// AppleFloorPS is P256PS / 3: an Apple notification costs three
	// signature checks (the envelope and its two nested JWS).
	AppleFloorPS float64      `json:"apple_floor_per_s"`
	Ratios       []BenchRatio `json:"ratios"`
}

// BenchRatio is the run's accepted/s over one floor, against its target.
type BenchRatio struct {
	Name       string  `json:"name"`
	AcceptedPS float64 `json:"accepted_per_s"`
	FloorPS    float64 `json:"floor_per_s"`
	Ratio      float64 `json:"ratio"` // AcceptedPS / FloorPS, rounded to 4 decimals
	Target     float64 `json:"target"`
	Met        bool    `json:"met"`
}

// Targets of docs/PERFORMANCE.md (issue 17): durable ingest of Stripe,
// Shopify and custom events at half the bare handler's rate, Apple's at
// 70 % of its P-256 floor.
const (
	bareTarget  = 0.5
	appleTarget = 0.7
)

// p256Window is how long the P-256 floor is measured.
var p256Window = 2 * time.Second

// floorKind says which floor a mix is compared with: "bare" for stripe,
// shopify and custom (in any combination), "apple" for apple alone.
func floorKind(mix map[string]float64) (string, error) {
	if _, ok := mix["apple"]; ok {
		if len(mix) > 1 {
			return "", fmt.Errorf("%w: --floors compares apple alone with the P-256 floor, and stripe, shopify and custom with the bare handler: do not mix apple with other sources", errBenchUsage)
		}
		return "apple", nil
	}
	if _, ok := mix["google"]; ok {
		return "", fmt.Errorf("%w: --floors has no floor for google (its cost is the Play API round trip)", errBenchUsage)
	}
	return "bare", nil
}

// measureFloors runs pgbench's insert-only floor on o.DSN (with --dsn) or
// else the bare handler with o's load (for a bare-kind mix), and then the
// P-256 verification floor.
func measureFloors(ctx context.Context, o benchOptions) (*BenchFloors, error) {
	kind, err := floorKind(o.Mix)
	if err != nil {
		return nil, err
	}
	f := &BenchFloors{}
	if o.DSN != "" {
		if f.PGBenchTPS, f.PGBenchSeconds, err = pgbenchFloor(ctx, o); err != nil {
			return nil, err
		}
		f.PGBenchClients = o.Concurrency
	}
	if kind == "bare" && o.DSN == "" {
		b := o
		b.Self, b.Bare, b.Floors = false, true, false
		b.DSN, b.Replicas, b.Retention, b.PID, b.heapProfile = "", 1, 0, 0, ""
		b.StripeSecret, b.ShopifySecret, b.APIKey = "", "", ""
		if err := b.check(); err != nil {
			return nil, err
		}
		rep, err := runBench(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("bare handler: %w", err)
		}
		if rep.AcceptedPS <= 0 {
			return nil, fmt.Errorf("bare handler: nothing accepted (%d errors)", rep.Errors)
		}
		f.BarePS, f.BareErrors = rep.AcceptedPS, rep.Errors
	}
	f.P256Goroutines = runtime.GOMAXPROCS(0)
	n, took := p256Verifications(ctx, f.P256Goroutines, p256Window)
	f.P256WindowS = took.Seconds()
	if n == 0 || took <= 0 {
		return nil, fmt.Errorf("P-256 floor: no verification finished")
	}
	f.P256PS = float64(n) / took.Seconds()
	f.AppleFloorPS = f.P256PS / 3
	return f, nil
}

// p256Verifications verifies one fixed ECDSA P-256 signature (ASN.1, as
// BenchmarkP256Verify) on goroutines goroutines until window has passed,
// and returns how many verifications finished and the time they took.
func p256Verifications(ctx context.Context, goroutines int, window time.Duration) (int64, time.Duration) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return 0, 0
	}
	h := sha256.Sum256([]byte("header.payload"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		return 0, 0
	}
	var total atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for !stop.Load() {
				if ecdsa.VerifyASN1(&key.PublicKey, h[:], sig) {
					n++
				}
			}
			total.Add(n)
		}()
	}
	select {
	case <-time.After(window):
	case <-ctx.Done():
	}
	stop.Store(true)
	wg.Wait()
	return total.Load(), time.Since(start)
}

// applyFloors adds the floors and the run's ratio to each to the report.
func (r *BenchReport) applyFloors(f *BenchFloors, mix map[string]float64) {
	kind, _ := floorKind(mix)
	var srcs []string
	for _, s := range benchSources {
		if _, ok := mix[s]; ok {
			srcs = append(srcs, s)
		}
	}
	name := strings.Join(srcs, "+") + " ingest"
	ratio := BenchRatio{AcceptedPS: r.AcceptedPS}
	switch {
	case kind == "apple":
		ratio.Name, ratio.FloorPS, ratio.Target = "apple ingest / Apple floor (P-256 verifications/s ÷ 3)", f.AppleFloorPS, appleTarget
	case f.PGBenchTPS > 0: // --dsn: issue 12's floor
		ratio.Name, ratio.FloorPS, ratio.Target = name+" / pgbench insert-only", f.PGBenchTPS, pgTarget
	default:
		ratio.Name, ratio.FloorPS, ratio.Target = name+" / bare handler", f.BarePS, bareTarget
	}
	if ratio.FloorPS > 0 {
		x := ratio.AcceptedPS / ratio.FloorPS
		ratio.Ratio = math.Round(x*1e4) / 1e4
		ratio.Met = x >= ratio.Target
	}
	f.Ratios = []BenchRatio{ratio}
	r.Floors = f
}

// printFloors writes the floors and one line per ratio.
func printFloors(w io.Writer, f *BenchFloors) {
	t := table(w)
	if f.PGBenchTPS > 0 {
		fmt.Fprintf(t, "floor: pgbench insert-only\t%.0f tps\t(the same database, %d clients, %d s, measured first)\n", f.PGBenchTPS, f.PGBenchClients, f.PGBenchSeconds)
	}
	if f.BarePS > 0 {
		fmt.Fprintf(t, "floor: bare handler\t%.0f/s\t(same mix, concurrency and duration, measured first; %d errors)\n", f.BarePS, f.BareErrors)
	}
	fmt.Fprintf(t, "floor: P-256 verifications\t%.0f/s\t(%d goroutines, %.1f s)\n", f.P256PS, f.P256Goroutines, f.P256WindowS)
	fmt.Fprintf(t, "floor: Apple (P-256 ÷ 3)\t%.0f notifications/s\n", f.AppleFloorPS)
	for _, r := range f.Ratios {
		met := "not met"
		if r.Met {
			met = "met"
		}
		fmt.Fprintf(t, "ratio: %s\t%.0f / %.0f = %.3f\ttarget ≥ %.1f: %s\n", r.Name, r.AcceptedPS, r.FloorPS, r.Ratio, r.Target, met)
	}
	t.Flush()
}
