package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	dto "github.com/prometheus/client_model/go"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/config"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/server"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
	"github.com/postback/postback/webhooks/googletest"
)

// benchOptions are the flags of `postback bench`.
type benchOptions struct {
	Addr            string
	Rate            float64
	Duration        time.Duration
	Concurrency     int
	DupRatio        float64
	Mix             map[string]float64
	StripeSecret    string
	ShopifySecret   string
	APIKey          string
	JSON            bool
	Self            bool
	ReceiverLatency time.Duration
	ReceiverErrors  float64
	// DestConcurrency is --self's destinations' concurrency (default 32).
	DestConcurrency int
	Drain           time.Duration
	// Bare replaces the gateway with an echo handler that answers 200 to
	// everything: the baseline the durable ingest is compared with.
	Bare bool
	// Destinations limits --self's destination types ("" all, "none").
	Destinations string
	heapProfile  string // written after the load, before the gateway stops
	// PID is the target gateway's process id (against --addr on the same
	// machine): its peak and anonymous RSS are reported.
	PID int
	// Presign builds and signs this many notifications before the clock
	// starts; the run sends them first.
	Presign int
	// DSN, with Self, puts the in-process gateways on this PostgreSQL
	// database instead of a temporary BoltDB file; Replicas gateways share
	// it and the load is spread over them.
	DSN      string
	Replicas int
	PoolSize int
	// Retention, with Self, overrides storage.retention of the in-process
	// gateway (below the configuration's 1 h minimum, which only bench may
	// do): a short retention is pruned as fast as events arrive.
	Retention time.Duration
	// Subscribers, for Stripe, is the size of a fixed subscriber
	// population: each subscriber's first notification starts it, every
	// later one is a monthly renewal (invoice.paid), so the subscription
	// states stop growing. 0: a new subscriber per notification.
	Subscribers int
	// Floors, with Self, measures the bare handler (same load) and the
	// P-256 verification rate before the run and reports the ratios; with
	// DSN also pgbench's insert-only rate on that database.
	Floors bool
	// PGBench is the pgbench to run for the PostgreSQL floor (empty: found
	// on PATH or in /usr/lib/postgresql/*/bin).
	PGBench string
}

// benchSources are the sources bench can sign for, in report order.
var benchSources = []string{"stripe", "shopify", "custom", "apple", "google"}

// benchSelfOnly are the sources bench can sign for only in --self mode: the
// in-process gateway trusts the test Apple PKI, OIDC key server and fake
// Play API that bench generates; a gateway started elsewhere does not.
var benchSelfOnly = map[string]bool{"apple": true, "google": true}

// benchUsers is the number of app users whose identifiers bench stores
// through PUT /v1/users before sending; notifications take them in turn.
const benchUsers = 4096

// BenchReport is what `postback bench` measured (the --json output).
type BenchReport struct {
	Target     string           `json:"target"`
	Duration   float64          `json:"duration_s"`
	Sent       int64            `json:"sent"`
	Accepted   int64            `json:"accepted"`
	AcceptedPS float64          `json:"accepted_per_s"`
	Duplicates int64            `json:"duplicates_suppressed"`
	Errors     int64            `json:"errors"`
	ErrorCodes map[string]int64 `json:"error_statuses,omitempty"`
	Ingest     BenchLatency     `json:"ingest_latency_ms"`
	// ScheduleLag (--rate) is how late requests left against the
	// open-loop schedule (start + i / rate): near 0 when the load
	// generator kept the rate; ingest latency is measured from the send.
	ScheduleLag *BenchLatency      `json:"schedule_lag_ms,omitempty"`
	BySource    map[string]int64   `json:"accepted_by_source"`
	Delivery    *BenchLatency      `json:"ingest_to_delivery_ms,omitempty"`
	Deliveries  map[string]int64   `json:"deliveries,omitempty"`
	DeliveryPS  map[string]float64 `json:"deliveries_per_s,omitempty"`
	// DeliveryStates counts each --self destination's deliveries by state
	// when bench stopped waiting (delivered, skipped, retrying, dead, ...).
	DeliveryStates map[string]map[string]int `json:"delivery_states,omitempty"`
	// ReceiverRequests counts the HTTP requests each mock receiver got
	// (batching destinations carry several events per request).
	ReceiverRequests map[string]int64 `json:"receiver_requests,omitempty"`
	// Undrained counts deliveries still queued and Google notifications
	// still waiting for the Play API when bench stopped waiting.
	Undrained int `json:"undrained,omitempty"`
	// Presigned counts the notifications sent from the --presign pool.
	Presigned   int    `json:"presigned,omitempty"`
	PeakRSSKiB  int64  `json:"peak_rss_kib,omitempty"`
	PeakRSSNote string `json:"peak_rss_note,omitempty"`
	// Anonymous RSS (RssAnon: heap, stacks; not the mmapped database file)
	// sampled every 5 s during the load: the largest value in the first and
	// in the last tenth of the run, and the growth between them (memory
	// flatness over a long run).
	RSSEarlyKiB   int64   `json:"rss_early_kib,omitempty"`
	RSSLateKiB    int64   `json:"rss_late_kib,omitempty"`
	RSSGrowthPct  float64 `json:"rss_growth_pct,omitempty"`
	RSSSamplesKiB []int64 `json:"rss_samples_kib,omitempty"`
	// Go's live heap after each GC (runtime/metrics /gc/heap/live:bytes),
	// sampled with the RSS: what the process really keeps.
	HeapEarlyKiB   int64   `json:"heap_live_early_kib,omitempty"`
	HeapLateKiB    int64   `json:"heap_live_late_kib,omitempty"`
	HeapGrowthPct  float64 `json:"heap_live_growth_pct,omitempty"`
	HeapSamplesKiB []int64 `json:"heap_live_samples_kib,omitempty"`
	// With --retention: the in-process gateway's retention, the warm-up
	// (retention plus one prune interval: until then nothing is old enough
	// to prune, so the database fills by design), and the median live heap
	// and database file size in the first minute after the warm-up and in
	// the last minute of the load, with the heap's growth between them.
	RetentionS           float64  `json:"retention_s,omitempty"`
	WarmupS              float64  `json:"warmup_s,omitempty"`
	HeapSteadyFirstKiB   int64    `json:"heap_live_steady_first_kib,omitempty"`
	HeapSteadyLastKiB    int64    `json:"heap_live_steady_last_kib,omitempty"`
	HeapSteadyGrowthPct  *float64 `json:"heap_live_steady_growth_pct,omitempty"`
	DBFileSteadyFirstKiB int64    `json:"db_file_steady_first_kib,omitempty"`
	DBFileSteadyLastKiB  int64    `json:"db_file_steady_last_kib,omitempty"`
	// The BoltDB file's size, and the part of it in use (not free, not
	// pending), sampled with the RSS (--self on BoltDB); and its page
	// accounting with every bucket's key count after the load.
	DBFileSamplesKiB      []int64          `json:"db_file_samples_kib,omitempty"`
	DBInUseSamplesKiB     []int64          `json:"db_in_use_samples_kib,omitempty"`
	DBInUseSteadyFirstKiB int64            `json:"db_in_use_steady_first_kib,omitempty"`
	DBInUseSteadyLastKiB  int64            `json:"db_in_use_steady_last_kib,omitempty"`
	DBEnd                 *store.FileStats `json:"db_end,omitempty"`
	// Floors: --floors, measured in the same invocation before the run.
	Floors *BenchFloors `json:"floors,omitempty"`
}

// BenchLatency holds latency percentiles in milliseconds.
type BenchLatency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	N    int     `json:"n"`
}

// errBenchUsage reports bad flags.
var errBenchUsage = errors.New("bench: invalid flags")

func cmdBench(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("bench", env)
	o := benchOptions{}
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "target gateway host:port (ignored with --self)")
	fs.Float64Var(&o.Rate, "rate", 0, "requests per second in total; 0 = flat out")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "concurrent clients")
	fs.Float64Var(&o.DupRatio, "dup-ratio", 0, "fraction of requests (0..1) that resend an earlier notification")
	mix := fs.String("mix", "stripe=1", "weights of sources: stripe, shopify, custom, apple, google (e.g. stripe=3,shopify=1,custom=1,apple=2,google=2); "+
		"apple and google need --self, whose gateway trusts the test Apple PKI, Pub/Sub OIDC keys and fake Play API bench generates (a gateway started elsewhere does not)")
	fs.StringVar(&o.StripeSecret, "stripe-secret", "", "Stripe signing secret the target trusts (env STRIPE_WEBHOOK_SECRET)")
	fs.StringVar(&o.ShopifySecret, "shopify-secret", "", "Shopify secret the target trusts (env SHOPIFY_WEBHOOK_SECRET)")
	fs.StringVar(&o.APIKey, "api-key", "", "API key for /v1/events (env POSTBACK_API_KEY); when set, bench first stores device identifiers for its test users with PUT /v1/users")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.BoolVar(&o.Self, "self", false, "start an in-process gateway on a temporary database, with test keys for every source and one destination of every type pointed at local mock receivers")
	fs.DurationVar(&o.ReceiverLatency, "receiver-latency", 0, "--self: the mock receivers' answer latency")
	fs.IntVar(&o.DestConcurrency, "dest-concurrency", 32, "--self: each destination's concurrency (requests in flight); deliveries are bounded by it / --receiver-latency")
	fs.Float64Var(&o.ReceiverErrors, "receiver-error-rate", 0, "--self: fraction (0..1) of requests the mock receivers answer 503 (retried by the gateway)")
	fs.DurationVar(&o.Drain, "drain", 10*time.Second, "--self: how long to wait for outstanding deliveries after sending")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (with --self it covers the in-process gateway; view with go tool pprof)")
	fs.IntVar(&o.Subscribers, "subscribers", 0, "Stripe: a fixed population of this many subscribers; after each one's start, notifications are their renewals (invoice.paid), so the subscription states stop growing (0: a new subscriber per notification)")
	fs.IntVar(&o.Presign, "presign", 0, "build and sign this many notifications on every core before the clock starts, and send them first, so the load generator's own signing (three ES256 signatures per Apple notification) does not compete with the gateway during the run")
	fs.IntVar(&o.PID, "pid", 0, "with --addr: the gateway's process id on this machine, to report its peak RSS and sample its memory")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the run to this file")
	fs.BoolVar(&o.Bare, "bare", false, "baseline: drive an in-process echo handler that answers 200 without verifying or storing anything (stripe, shopify and custom mixes)")
	fs.StringVar(&o.DSN, "dsn", "", "--self: run the gateway on this PostgreSQL database (storage.driver postgres) instead of a temporary BoltDB file; use an empty database")
	fs.IntVar(&o.PoolSize, "pool-size", 10, "--self --dsn: storage.pool_size of each replica")
	fs.IntVar(&o.Replicas, "replicas", 1, "--self with --dsn: gateway replicas sharing the database; requests go to them in turn")
	fs.DurationVar(&o.Retention, "retention", 0, "--self on BoltDB: storage.retention of the in-process gateway (default the configuration's 720h; bench alone may go below its 1h minimum, e.g. 2m, so pruning keeps up with arrivals within the run); the gateway prunes every tenth of it, and the report adds the live heap's growth after the warm-up")
	fs.BoolVar(&o.Floors, "floors", false, "--self, flat out: first measure the bare handler with the same mix, concurrency and duration, and ECDSA P-256 verifications per second on all cores (2 s), then run, and report accepted/s over each floor against its target (stripe, shopify, custom: ≥ 0.5 of the bare handler; apple alone: ≥ 0.7 of P-256/s ÷ 3); with --dsn, first also pgbench's insert-only transactions on that database with the same clients and duration (target ≥ 0.5)")
	fs.StringVar(&o.PGBench, "pgbench", "", "--floors --dsn: the pgbench to run (default: found on PATH or in /usr/lib/postgresql/*/bin)")
	fs.StringVar(&o.Destinations, "destinations", "", "--self: comma-separated destination types to configure (default every type; \"none\" measures ingest alone)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if o.Mix, err = parseMix(*mix); err != nil {
		fmt.Fprintln(env.Stderr, "postback bench:", err)
		return 2
	}
	for flagValue, name := range map[*string]string{&o.StripeSecret: "STRIPE_WEBHOOK_SECRET", &o.ShopifySecret: "SHOPIFY_WEBHOOK_SECRET", &o.APIKey: "POSTBACK_API_KEY"} {
		if *flagValue == "" {
			*flagValue, _ = env.Getenv(name)
		}
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(env.Stderr, "postback bench:", err)
		return 2
	}
	var floors *BenchFloors
	if o.Floors { // before the profile starts: it covers the run alone
		if floors, err = measureFloors(ctx, o); err != nil {
			fmt.Fprintln(env.Stderr, "postback bench:", err)
			return 1
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(env.Stderr, "postback bench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(env.Stderr, "postback bench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		o.heapProfile = *memProfile
	}
	rep, err := runBench(ctx, o)
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback bench:", err)
		return 1
	}
	if floors != nil {
		rep.applyFloors(floors, o.Mix)
	}
	if o.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printBench(env.Stdout, rep)
	}
	if rep.Accepted == 0 {
		return 1
	}
	return 0
}

// parseMix reads "stripe=3,shopify=1".
func parseMix(s string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, ok := strings.Cut(part, "=")
		if !ok {
			w = "1"
		}
		known := false
		for _, k := range benchSources {
			known = known || k == name
		}
		if !known {
			return nil, fmt.Errorf("%w: --mix: unknown source %q (one of %s)", errBenchUsage, name, strings.Join(benchSources, ", "))
		}
		f, err := strconv.ParseFloat(w, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("%w: --mix: weight of %s must be a number >= 0", errBenchUsage, name)
		}
		if f > 0 {
			out[name] = f
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --mix names no source with a positive weight", errBenchUsage)
	}
	return out, nil
}

func (o *benchOptions) check() error {
	switch {
	case o.Duration <= 0:
		return fmt.Errorf("%w: --duration must be positive", errBenchUsage)
	case o.Concurrency < 1:
		return fmt.Errorf("%w: --concurrency must be at least 1", errBenchUsage)
	case o.DupRatio < 0 || o.DupRatio > 1:
		return fmt.Errorf("%w: --dup-ratio must be within 0..1", errBenchUsage)
	case o.Rate < 0:
		return fmt.Errorf("%w: --rate must be >= 0", errBenchUsage)
	case o.Subscribers < 0:
		return fmt.Errorf("%w: --subscribers must be >= 0", errBenchUsage)
	case o.Presign < 0 || o.Presign > 10_000_000:
		return fmt.Errorf("%w: --presign must be within 0..10000000", errBenchUsage)
	case o.ReceiverErrors < 0 || o.ReceiverErrors > 1:
		return fmt.Errorf("%w: --receiver-error-rate must be within 0..1", errBenchUsage)
	case o.DestConcurrency < 1 || o.DestConcurrency > 1024:
		return fmt.Errorf("%w: --dest-concurrency must be within 1..1024", errBenchUsage)
	}
	if o.Replicas < 1 || o.Replicas > 16 || o.Replicas > 1 && (o.DSN == "" || !o.Self) {
		return fmt.Errorf("%w: --replicas must be 1..16, and more than 1 needs --self --dsn", errBenchUsage)
	}
	if o.DSN != "" && !o.Self {
		return fmt.Errorf("%w: --dsn needs --self (a gateway started elsewhere has its own storage settings)", errBenchUsage)
	}
	if o.Retention != 0 && (!o.Self || o.DSN != "" || o.Retention < time.Second) {
		return fmt.Errorf("%w: --retention needs --self on BoltDB (no --dsn) and must be at least 1s", errBenchUsage)
	}
	if o.Floors {
		if !o.Self || o.Bare {
			return fmt.Errorf("%w: --floors needs --self (and not --bare): it measures the floors, then the in-process gateway", errBenchUsage)
		}
		if o.Rate > 0 {
			return fmt.Errorf("%w: --floors compares flat-out rates: leave out --rate", errBenchUsage)
		}
		kind, err := floorKind(o.Mix)
		if err != nil {
			return err
		}
		if o.DSN != "" && kind != "bare" {
			return fmt.Errorf("%w: --floors --dsn compares stripe, shopify and custom ingest with pgbench: leave apple out", errBenchUsage)
		}
	}
	if o.PGBench != "" && (!o.Floors || o.DSN == "") {
		return fmt.Errorf("%w: --pgbench needs --floors --dsn", errBenchUsage)
	}
	if o.Bare && o.Self {
		return fmt.Errorf("%w: --bare and --self exclude each other", errBenchUsage)
	}
	if o.PID != 0 && (o.Self || o.Bare || o.PID < 0) {
		return fmt.Errorf("%w: --pid names a gateway started elsewhere (with --addr)", errBenchUsage)
	}
	if o.Self {
		return nil
	}
	if o.Bare {
		o.StripeSecret, o.ShopifySecret, o.APIKey = "whsec_bare_baseline", "shpss_bare_baseline", "bare-baseline"
	}
	for _, src := range benchSources {
		if _, ok := o.Mix[src]; ok && benchSelfOnly[src] {
			return fmt.Errorf("%w: --mix includes %s, which needs --self: only the in-process gateway trusts the test keys bench signs %s notifications with", errBenchUsage, src, src)
		}
	}
	need := map[string]string{"stripe": o.StripeSecret, "shopify": o.ShopifySecret, "custom": o.APIKey}
	flagOf := map[string]string{"stripe": "--stripe-secret", "shopify": "--shopify-secret", "custom": "--api-key"}
	for src := range o.Mix {
		if need[src] == "" {
			return fmt.Errorf("%w: --mix includes %s but %s is not set", errBenchUsage, src, flagOf[src])
		}
	}
	return nil
}

// benchRun is the state of one run.
type benchRun struct {
	o       benchOptions
	base    string
	bases   []string      // --replicas: every replica, used in turn
	turn    atomic.Uint64 // next replica
	client  *http.Client
	picks   []string // cumulative mix
	weights []float64
	seq     atomic.Int64
	runID   string
	users   []string    // app user ids with stored identifiers, if any
	fakes   *storeFakes // --self: the Apple and Google stand-ins

	pool     []benchSent // --presign: built before the clock started
	poolNext atomic.Int64
	slot     atomic.Int64 // --rate: the next request's place in the schedule

	mu       sync.Mutex
	sent     []benchSent // notifications sent so far (duplicate pool)
	lat      latencyHist
	lag      latencyHist // --rate: how late each request left against its schedule
	accepted int64
	dups     int64
	errs     int64
	codes    map[string]int64
	bySource map[string]int64
	total    int64
}

// benchSent is one request that can be resent as a duplicate.
type benchSent struct {
	source  string
	path    string
	body    []byte
	headers map[string]string
	stripe  bool // Stripe signatures carry a timestamp: re-sign on resend
	err     error
}

// runBench runs the load and returns the report.
func runBench(ctx context.Context, o benchOptions) (*BenchReport, error) {
	r := &benchRun{o: o, codes: map[string]int64{}, bySource: map[string]int64{}}
	var idb [6]byte
	_, _ = rand.Read(idb[:])
	r.runID = hex.EncodeToString(idb[:])
	for _, s := range benchSources {
		if w, ok := o.Mix[s]; ok {
			r.picks = append(r.picks, s)
			r.weights = append(r.weights, w)
		}
	}
	r.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.Concurrency * 2, MaxConnsPerHost: o.Concurrency * 2}}
	defer r.client.CloseIdleConnections()
	var self *benchSelf
	if o.Self {
		var err error
		if self, err = startBenchSelf(ctx, &r.o); err != nil {
			return nil, err
		}
		defer self.stop()
		r.base = self.url
		r.bases = self.urls
		r.fakes = self.fakes
	} else if o.Bare {
		base, stop, err := startBare()
		if err != nil {
			return nil, err
		}
		defer stop()
		r.base = base
		r.o.APIKey = "" // nothing to store identifiers in
	} else {
		r.base = "http://" + strings.TrimPrefix(strings.TrimPrefix(o.Addr, "http://"), "https://")
	}
	if r.o.APIKey != "" {
		if err := r.putUsers(ctx); err != nil {
			return nil, err
		}
	}
	if o.Presign > 0 {
		r.presign(o.Presign)
	}
	start := time.Now()
	var bdb *store.DB
	if self != nil {
		bdb, _ = self.g.Store.(*store.DB) // nil on PostgreSQL
	}
	samples := sampleRSS(ctx, benchSampleEvery, o.PID, bdb)
	r.load(ctx)
	elapsed := time.Since(start)
	rep := r.report(elapsed)
	sm := samples()
	rep.rssFlatness(sm.rss, sm.heap)
	rep.DBFileSamplesKiB, rep.DBInUseSamplesKiB = sm.file, sm.inUse
	if o.Retention > 0 {
		rep.steadyMemory(o.Retention, sm.heap, sm.file, sm.inUse)
	}
	if bdb != nil {
		if fs, err := bdb.FileStats(true); err == nil {
			rep.DBEnd = &fs
		}
	}
	if o.PID > 0 {
		if kib, err := procStatusKiB(o.PID, "VmHWM:"); err == nil {
			rep.PeakRSSKiB = kib
			rep.PeakRSSNote = fmt.Sprintf("VmHWM of process %d (the target gateway)", o.PID)
		}
	}
	if o.heapProfile != "" {
		if err := writeHeapProfile(o.heapProfile); err != nil {
			return nil, err
		}
	}
	if self != nil {
		self.finish(ctx, rep, start, o.Drain)
	}
	return rep, nil
}

// load sends requests from Concurrency workers until Duration passes.
func (r *benchRun) load(ctx context.Context) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.o.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < r.o.Concurrency; w++ {
		wg.Add(1)
		go func(rng *mrand.Rand) {
			defer wg.Done()
			for ctx.Err() == nil {
				if r.o.Rate > 0 && !r.pace(ctx, start) {
					return
				}
				r.one(ctx, rng)
			}
		}(mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano()))))
	}
	wg.Wait()
}

// pace waits for the next request's time on an open-loop schedule:
// request i is due at start + i / rate, whichever client takes it. A
// ticker would drop the ticks that fire while every client is busy or the
// load generator is not scheduled (a run at 1000/s on two busy cores sent
// 870/s); here a late request goes out at once, and how late it went is
// recorded (schedule_lag_ms). It reports false when the request would be
// due after the run.
func (r *benchRun) pace(ctx context.Context, start time.Time) bool {
	i := r.slot.Add(1) - 1
	due := start.Add(time.Duration(float64(i) * float64(time.Second) / r.o.Rate))
	if due.Sub(start) >= r.o.Duration {
		return false
	}
	if wait := time.Until(due); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	lag := time.Since(due)
	r.mu.Lock()
	r.lag.add(lag)
	r.mu.Unlock()
	return true
}

// one sends a new or duplicate notification and records the answer.
func (r *benchRun) one(ctx context.Context, rng *mrand.Rand) {
	var s benchSent
	dup := false
	r.mu.Lock()
	if n := len(r.sent); n > 0 && rng.Float64() < r.o.DupRatio {
		s, dup = r.sent[rng.IntN(n)], true
	}
	r.mu.Unlock()
	if !dup {
		s = r.next(rng)
		if s.err != nil {
			r.fail("fixture")
			return
		}
	}
	headers := s.headers
	if s.stripe {
		headers = map[string]string{"Stripe-Signature": webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: s.body, Secret: r.o.StripeSecret, Timestamp: time.Now()}).Header}
	}
	base := r.base
	if len(r.bases) > 1 {
		base = r.bases[r.turn.Add(1)%uint64(len(r.bases))]
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+s.path, bytes.NewReader(s.body))
	if err != nil {
		r.fail("request")
		return
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	t0 := time.Now()
	resp, err := r.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			r.fail("transport")
		}
		return
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	d := time.Since(t0)
	if resp.StatusCode/100 != 2 {
		r.fail(strconv.Itoa(resp.StatusCode))
		return
	}
	var ack webhooks.Ack
	_ = json.Unmarshal(raw, &ack)
	duplicate := ack.Duplicate || resp.Header.Get("Idempotent-Replayed") == "true"
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	r.lat.add(d)
	r.accepted++
	r.bySource[s.source]++
	if duplicate {
		r.dups++
	}
	if !dup && r.o.DupRatio > 0 && len(r.sent) < 100000 {
		r.sent = append(r.sent, s)
	}
}

func (r *benchRun) fail(code string) {
	r.mu.Lock()
	r.total++
	r.errs++
	r.codes[code]++
	r.mu.Unlock()
}

// benchUserIDs returns the identifiers bench stores for its i-th user:
// enough for every destination type to send its events (AppsFlyer,
// Adjust, Singular, Branch, Kochava, Meta, TikTok and GA4 app streams).
func benchUserIDs(runID string, i int) map[string]string {
	h := func(tag string) string {
		sum := sha256.Sum256([]byte(runID + "/" + tag + "/" + strconv.Itoa(i)))
		return hex.EncodeToString(sum[:16])
	}
	uuid := func(tag string) string {
		x := h(tag)
		return x[:8] + "-" + x[8:12] + "-4" + x[13:16] + "-a" + x[17:20] + "-" + x[20:32]
	}
	return map[string]string{
		"appsflyer_id":             fmt.Sprintf("%d-%07d", 1700000000000+i, i),
		"adid":                     h("adid"),
		"idfa":                     strings.ToUpper(uuid("idfa")),
		"idfv":                     strings.ToUpper(uuid("idfv")),
		"gaid":                     uuid("gaid"),
		"sdid":                     uuid("sdid"),
		"kochava_device_id":        "KA" + h("kochava"),
		"firebase_app_instance_id": h("firebase"),
		"ip":                       fmt.Sprintf("203.0.113.%d", 1+i%254),
		"user_agent":               "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
		"os":                       "ios",
		"os_version":               "17.5",
		"att_status":               "3",
	}
}

// putUsers stores the identifiers of benchUsers users with PUT /v1/users,
// so that deliveries of the notifications that name them do not wait.
func (r *benchRun) putUsers(ctx context.Context) error {
	r.users = make([]string, benchUsers)
	for i := range r.users {
		r.users[i] = fmt.Sprintf("bench-%s-u%04d", r.runID, i)
	}
	jobs := make(chan int)
	errs := make(chan error, benchUsers)
	var wg sync.WaitGroup
	for w := 0; w < min(r.o.Concurrency, 16); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				body, _ := json.Marshal(map[string]any{"identifiers": benchUserIDs(r.runID, i)})
				if err := demoRequest(ctx, r.client, http.MethodPut, r.base+"/v1/users/"+r.users[i], body, map[string]string{"Authorization": "Bearer " + r.o.APIKey}); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range r.users {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("bench: storing test users' identifiers: %w", err)
	}
	return nil
}

// user returns the app user id of the n-th notification: one of the users
// whose identifiers are stored, or a user of its own.
func (r *benchRun) user(n int64, id string) string {
	if len(r.users) == 0 {
		return "bench-" + id
	}
	return r.users[n%int64(len(r.users))]
}

// presign builds n notifications on every core before the run.
func (r *benchRun) presign(n int) {
	r.pool = make([]benchSent, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func(rng *mrand.Rand) {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				r.pool[i] = r.build(rng)
			}
		}(mrand.New(mrand.NewPCG(uint64(w)+1<<32, uint64(time.Now().UnixNano()))))
	}
	wg.Wait()
}

// next returns the next presigned notification, or builds one.
func (r *benchRun) next(rng *mrand.Rand) benchSent {
	if i := r.poolNext.Add(1) - 1; i < int64(len(r.pool)) {
		return r.pool[i]
	}
	return r.build(rng)
}

// build builds a new signed notification from a source picked by weight.
func (r *benchRun) build(rng *mrand.Rand) benchSent {
	sum := 0.0
	for _, w := range r.weights {
		sum += w
	}
	x, src := rng.Float64()*sum, r.picks[len(r.picks)-1]
	for i, w := range r.weights {
		if x < w {
			src = r.picks[i]
			break
		}
		x -= w
	}
	n := r.seq.Add(1)
	id := fmt.Sprintf("%s_%d", r.runID, n)
	user := r.user(n, id)
	now := time.Now()
	switch src {
	case "apple":
		// A new subscriber starts a free trial: SUBSCRIBED/INITIAL_BUY.
		orig := strconv.FormatInt(3_000_000_000_000_000+n, 10)
		at := now.Truncate(time.Millisecond)
		txn := appleTxn{ID: orig, OriginalID: orig, User: user, Product: "pro_monthly", Purchased: at, Expires: at.AddDate(0, 0, 7),
			Reason: "PURCHASE", Trial: true, PriceMilli: 9990, Currency: "USD"}
		body := r.fakes.appleBody(newUUID(), "SUBSCRIBED", "INITIAL_BUY", txn, at)
		return benchSent{source: src, path: "/webhooks/apple", body: body}
	case "google":
		// A new subscriber starts a free trial: SUBSCRIPTION_PURCHASED, which
		// the gateway enriches from the fake Play API.
		token := "bench-token-" + id
		r.fakes.setGoogle(googleSub{Token: token, User: user, Product: "pro_monthly", OrderID: fmt.Sprintf("GPA.%s-%d", r.runID, n),
			Started: now, Expires: now.AddDate(0, 0, 7), Trial: true, PriceMicros: 4_990_000, Currency: "USD"}, false)
		body, headers, err := r.fakes.googlePush("bench-"+id, googletest.SubscriptionNotification(fakeBundleID, token, "pro_monthly", 4, now), now)
		return benchSent{source: src, path: "/webhooks/google", body: body, headers: headers, err: err}
	case "shopify":
		body := []byte(fmt.Sprintf(`{"id":%d,"name":"#%d","test":false,"created_at":%q,"processed_at":%q,"financial_status":"paid","currency":"USD","total_price":"9.99","total_price_set":{"shop_money":{"amount":"9.99","currency_code":"USD"},"presentment_money":{"amount":"9.99","currency_code":"USD"}},"note_attributes":[{"name":"app_user_id","value":%q}],"line_items":[{"id":%d,"title":"Pro","quantity":1,"price":"9.99","sku":"pro"}]}`,
			1_000_000_000_000_000+n, n, now.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), user, n))
		return benchSent{source: src, path: "/webhooks/shopify", body: body, headers: map[string]string{
			"X-Shopify-Hmac-Sha256": webhooks.SignShopify(body, r.o.ShopifySecret),
			"X-Shopify-Topic":       "orders/paid",
			"X-Shopify-Webhook-Id":  "bench-" + id,
			"X-Shopify-Shop-Domain": "bench.myshopify.com",
		}}
	case "custom":
		body := []byte(fmt.Sprintf(`{"type":"purchase","app_user_id":%q,"app_id":"com.example.app","product_id":"pro","revenue":{"amount":"9.99","currency":"USD"}}`, user))
		return benchSent{source: src, path: "/v1/events", body: body, headers: map[string]string{
			"Authorization": "Bearer " + r.o.APIKey, "Idempotency-Key": "bench-" + id,
		}}
	default:
		if pop := int64(r.o.Subscribers); pop > 0 && n > pop {
			// A renewal of subscriber n mod pop: a paid monthly invoice.
			sub := fmt.Sprintf("%s_%d", r.runID, (n-1)%pop+1)
			body := []byte(fmt.Sprintf(`{"id":"evt_%s","object":"event","api_version":"2023-10-16","created":%d,"livemode":true,"type":"invoice.paid","data":{"object":{"id":"in_%s","object":"invoice","billing_reason":"subscription_cycle","amount_paid":999,"currency":"usd","customer":"cus_%s","subscription":"sub_%s","lines":{"data":[{"period":{"start":%d,"end":%d}}]}}}}`,
				id, now.Unix(), id, sub, sub, now.Unix(), now.Unix()+30*86400))
			return benchSent{source: "stripe", path: "/webhooks/stripe", body: body, stripe: true}
		}
		body := []byte(fmt.Sprintf(`{"id":"evt_%s","object":"event","api_version":"2023-10-16","created":%d,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_%s","object":"subscription","status":"trialing","customer":"cus_%s","trial_end":%d,"metadata":{"app_user_id":%q},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}}}`,
			id, now.Unix(), id, id, now.Unix()+7*86400, user))
		return benchSent{source: "stripe", path: "/webhooks/stripe", body: body, stripe: true}
	}
}

// report summarises the load phase.
func (r *benchRun) report(elapsed time.Duration) *BenchReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &BenchReport{
		Target: r.base, Duration: elapsed.Seconds(), Sent: r.total, Accepted: r.accepted,
		Duplicates: r.dups, Errors: r.errs, BySource: r.bySource, Ingest: r.lat.percentiles(),
	}
	if len(r.codes) > 0 {
		rep.ErrorCodes = r.codes
	}
	if r.o.Rate > 0 {
		lag := r.lag.percentiles()
		rep.ScheduleLag = &lag
	}
	if len(r.pool) > 0 {
		rep.Presigned = int(min(r.poolNext.Load(), int64(len(r.pool))))
	}
	if s := elapsed.Seconds(); s > 0 {
		rep.AcceptedPS = float64(r.accepted) / s
	}
	return rep
}

// percentiles computes p50/p99/p99.9 (nearest rank) in milliseconds.
// latencyHist is a fixed-size histogram of durations in 1 % logarithmic
// buckets from 1 µs to about 20 minutes, so a long run's bookkeeping does not
// grow with the number of requests (which would show up as memory growth of
// the process being measured).
type latencyHist struct {
	counts [histBuckets]int64
	n      int
}

const histBuckets = 2100 // 1.01^2100 µs ≈ 20 min

var histLogBase = math.Log(1.01)

func (h *latencyHist) add(d time.Duration) {
	us := float64(d) / float64(time.Microsecond)
	i := 0
	if us > 1 {
		i = min(int(math.Log(us)/histLogBase), histBuckets-1)
	}
	h.counts[i]++
	h.n++
}

// percentiles reports p50/p99/p99.9 in milliseconds, each the upper bound of
// its bucket (at most 1 % above the true value).
func (h *latencyHist) percentiles() BenchLatency {
	if h.n == 0 {
		return BenchLatency{}
	}
	at := func(p float64) float64 {
		target := int64(math.Ceil(p * float64(h.n)))
		var cum int64
		for i, c := range h.counts {
			if cum += c; cum >= target {
				return math.Round(math.Pow(1.01, float64(i+1))) / 1000
			}
		}
		return 0
	}
	return BenchLatency{P50: at(0.50), P99: at(0.99), P999: at(0.999), N: h.n}
}

func printBench(w io.Writer, r *BenchReport) {
	t := table(w)
	fmt.Fprintf(t, "target\t%s\n", r.Target)
	fmt.Fprintf(t, "duration\t%.1fs\n", r.Duration)
	fmt.Fprintf(t, "sent\t%d\n", r.Sent)
	fmt.Fprintf(t, "accepted\t%d\t(%.0f/s)\n", r.Accepted, r.AcceptedPS)
	srcs := make([]string, 0, len(r.BySource))
	for s := range r.BySource {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	for _, s := range srcs {
		fmt.Fprintf(t, "  %s\t%d\n", s, r.BySource[s])
	}
	fmt.Fprintf(t, "duplicates suppressed\t%d\n", r.Duplicates)
	fmt.Fprintf(t, "errors\t%d\t%s\n", r.Errors, codesText(r.ErrorCodes))
	fmt.Fprintf(t, "ingest latency\tp50 %.2f ms\tp99 %.2f ms\tp99.9 %.2f ms\n", r.Ingest.P50, r.Ingest.P99, r.Ingest.P999)
	if r.ScheduleLag != nil {
		fmt.Fprintf(t, "behind schedule\tp50 %.2f ms\tp99 %.2f ms\t(--rate)\n", r.ScheduleLag.P50, r.ScheduleLag.P99)
	}
	if r.Delivery != nil {
		fmt.Fprintf(t, "ingest-to-delivery\tp50 %.2f ms\tp99 %.2f ms\t(n=%d, webhook receiver)\n", r.Delivery.P50, r.Delivery.P99, r.Delivery.N)
	}
	names := make([]string, 0, len(r.Deliveries))
	for name := range r.Deliveries {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(t, "deliveries %s\t%d\t(%.0f/s)\t%s\n", name, r.Deliveries[name], r.DeliveryPS[name], statesText(r.DeliveryStates[name], r.ReceiverRequests[name]))
	}
	if r.Undrained > 0 {
		fmt.Fprintf(t, "not drained\t%d\t(still queued or enriching when bench stopped waiting)\n", r.Undrained)
	}
	if r.PeakRSSKiB > 0 {
		fmt.Fprintf(t, "peak RSS\t%.1f MiB\t%s\n", float64(r.PeakRSSKiB)/1024, r.PeakRSSNote)
	}
	if r.RSSEarlyKiB > 0 {
		fmt.Fprintf(t, "anon RSS early / late\t%.1f / %.1f MiB\t%+.1f%%\n", float64(r.RSSEarlyKiB)/1024, float64(r.RSSLateKiB)/1024, r.RSSGrowthPct)
		if r.HeapEarlyKiB > 0 {
			fmt.Fprintf(t, "live heap early / late\t%.1f / %.1f MiB\t%+.1f%%\n", float64(r.HeapEarlyKiB)/1024, float64(r.HeapLateKiB)/1024, r.HeapGrowthPct)
		}
	}
	if r.HeapSteadyGrowthPct != nil {
		fmt.Fprintf(t, "live heap after warm-up\t%.1f → %.1f MiB\t%+.1f%%\t(median of the first minute after %.0fs (retention %.0fs + one prune interval) vs the last minute; target ≤ 10%%)\n",
			float64(r.HeapSteadyFirstKiB)/1024, float64(r.HeapSteadyLastKiB)/1024, *r.HeapSteadyGrowthPct, r.WarmupS, r.RetentionS)
	}
	if r.DBFileSteadyLastKiB > 0 {
		fmt.Fprintf(t, "database file after warm-up\t%.1f → %.1f MiB\t(in use %.1f → %.1f MiB)\n", float64(r.DBFileSteadyFirstKiB)/1024, float64(r.DBFileSteadyLastKiB)/1024,
			float64(r.DBInUseSteadyFirstKiB)/1024, float64(r.DBInUseSteadyLastKiB)/1024)
	}
	t.Flush()
	if r.Floors != nil {
		printFloors(w, r.Floors)
	}
}

// statesText renders a destination's delivery states other than delivered
// and its receiver's request count.
func statesText(states map[string]int, requests int64) string {
	var parts []string
	for st, n := range states {
		if st != store.StateDelivered {
			parts = append(parts, fmt.Sprintf("%s %d", st, n))
		}
	}
	sort.Strings(parts)
	parts = append(parts, fmt.Sprintf("%d requests", requests))
	return strings.Join(parts, ", ")
}

func codesText(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, m[k])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// benchReceiver is a mock of one destination's API: it answers like the
// real service (per its type), after the configured latency, with 503 at
// the configured error rate, and counts what it got.
type benchReceiver struct {
	name, typ string
	srv       *http.Server
	url       string
	requests  atomic.Int64
	mu        sync.Mutex
	last      time.Time
	latency   latencyHist // webhook only: received_at to arrival
}

// benchAnswers are the success answers of each destination type's API.
var benchAnswers = map[string]struct {
	status int
	body   string
}{
	"appsflyer": {http.StatusOK, "ok"},
	"adjust":    {http.StatusOK, `{"status":"OK"}`},
	"singular":  {http.StatusOK, `{"status":"ok"}`},
	"branch":    {http.StatusOK, `{}`},
	"kochava":   {http.StatusOK, `{"success":"1"}`},
	"meta":      {http.StatusOK, `{"events_received":1,"messages":[],"fbtrace_id":"bench"}`},
	"tiktok":    {http.StatusOK, `{"code":0,"message":"OK","request_id":"bench","data":{}}`},
	"ga4":       {http.StatusNoContent, ``},
	"webhook":   {http.StatusOK, `{"received":true}`},
}

// benchDestination returns the config of the bench destination of type typ
// pointed at url (type-specific test credentials; identifiers come from
// the users bench stores).
func benchDestination(typ, url, hookSecret string, concurrency int) (string, error) {
	var extra string
	switch typ {
	case "appsflyer":
		// An iOS app: Google Play events would be refused as another platform.
		extra = "app_id: id1234567890\n    dev_key: bench-dev-key\n    match: {sources: [apple, stripe, shopify, custom]}"
	case "adjust":
		extra = "app_token: benchapptoken\n    event_tokens: {trial_started: abc123, trial_converted: def456, subscription_started: def456, subscription_renewed: ren789, purchase: pur012, refund: rfd345}"
	case "singular":
		extra = "sdk_key: bench-sdk-key"
	case "branch":
		extra = "branch_key: key_live_bench"
	case "kochava":
		extra = "app_guid: kobench-ios-abc123"
	case "meta":
		extra = `dataset_id: "1234567890123456"` + "\n    access_token: bench-meta-token\n    event_source_url: https://example.com/bench"
	case "tiktok":
		extra = "access_token: bench-tiktok-token\n    app_id: \"7000000000000000000\"\n    app_store_ids: {ios: \"1234567890\"}\n    pixel_code: BENCHPIXEL0"
	case "ga4":
		extra = `firebase_app_ids: {ios: "1:1234567890:ios:321abc456def7890", android: "1:1234567890:android:fedcba0987654321"}` + "\n    api_secret: bench-ga4-secret"
	case "webhook":
		extra = fmt.Sprintf("secret: %q", hookSecret)
	default:
		return "", fmt.Errorf("bench: no mock receiver for destination type %q", typ)
	}
	return fmt.Sprintf(`  - name: bench-%s
    type: %s
    endpoint: %q
    %s
    rate_limit: {per_second: 1000000, burst: 1000000}
    concurrency: %d
`, typ, typ, url, extra, concurrency), nil
}

func (b *benchReceiver) serve(w http.ResponseWriter, req *http.Request, lat time.Duration, errRate float64) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if lat > 0 {
		time.Sleep(lat)
	}
	if errRate > 0 && mrand.Float64() < errRate {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	now := time.Now()
	b.requests.Add(1)
	b.mu.Lock()
	b.last = now
	if b.typ == "webhook" {
		var ev struct {
			ReceivedAt time.Time `json:"received_at"`
		}
		if json.Unmarshal(body, &ev) == nil && !ev.ReceivedAt.IsZero() {
			b.latency.add(now.Sub(ev.ReceivedAt))
		}
	}
	b.mu.Unlock()
	if b.typ == "ga4" && strings.HasPrefix(req.URL.Path, "/debug/") {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"validationMessages":[]}`)
		return
	}
	a := benchAnswers[b.typ]
	if a.body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(a.status)
	_, _ = io.WriteString(w, a.body)
}

// benchSelf is an in-process gateway with test keys for every source and
// one destination of every type, each pointed at its mock receiver.
type benchSelf struct {
	url       string
	urls      []string          // every replica
	more      []*server.Gateway // replicas after the first
	wg        sync.WaitGroup
	dir       string
	g         *server.Gateway
	fakes     *storeFakes
	cancel    context.CancelFunc
	done      chan error
	receivers []*benchReceiver
}

// startBenchSelf starts the receivers, the Apple and Google stand-ins and
// the gateway, and fills in the secrets of o.
func startBenchSelf(ctx context.Context, o *benchOptions) (s *benchSelf, err error) {
	dir, err := os.MkdirTemp("", "postback-bench-")
	if err != nil {
		return nil, err
	}
	s = &benchSelf{dir: dir, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()
	if s.fakes, err = newStoreFakes(dir); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	o.StripeSecret = "whsec_bench_" + hex.EncodeToString(key[:8])
	o.ShopifySecret = "shpss_bench_" + hex.EncodeToString(key[8:16])
	o.APIKey = "bench-" + hex.EncodeToString(key[16:24])
	hookSecret := "whsec_" + base64.StdEncoding.EncodeToString(key)

	var dests strings.Builder
	want := map[string]bool{}
	for _, t := range strings.Split(o.Destinations, ",") {
		if t = strings.TrimSpace(t); t != "" {
			want[t] = true
		}
	}
	for _, typ := range forwarders.Types() {
		if len(want) > 0 && !want[typ] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		b := &benchReceiver{name: "bench-" + typ, typ: typ, url: "http://" + ln.Addr().String()}
		lat, errRate := o.ReceiverLatency, o.ReceiverErrors
		b.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			b.serve(w, req, lat, errRate)
		})}
		s.receivers = append(s.receivers, b)
		go func() { _ = b.srv.Serve(ln) }()
		endpoint := b.url
		if typ == "webhook" {
			endpoint += "/hook"
		}
		d, err := benchDestination(typ, endpoint, hookSecret, o.DestConcurrency)
		if err != nil {
			return nil, err
		}
		dests.WriteString(d)
	}

	storage := fmt.Sprintf("{path: %q}", filepath.Join(dir, "postback.db"))
	if o.DSN != "" {
		storage = fmt.Sprintf("{driver: postgres, dsn: %q, pool_size: %d}", o.DSN, o.PoolSize)
	}
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 5s}
storage: %s
log: {level: error}
api_keys: [%q]
sources:
%s  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
  shopify: {enabled: true, secret: %q, app_id: com.example.app}
destinations:
%s`, storage, o.APIKey, s.fakes.sourcesYAML(), o.StripeSecret, o.ShopifySecret, dests.String())
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, err
	}
	if o.Retention > 0 {
		cfg.Storage.Retention = config.Duration(o.Retention)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g, err := server.New(cfg, server.Options{Logger: server.NewLogger(io.Discard, cfg.Log, cfg.Secrets()), Listener: ln})
	if err != nil {
		ln.Close()
		return nil, err
	}
	gctx, cancel := context.WithCancel(ctx)
	s.g, s.cancel = g, cancel
	s.url = "http://" + ln.Addr().String()
	s.urls = []string{s.url}
	go func() { s.done <- g.Run(gctx, nil) }()
	for i := 1; i < o.Replicas; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		rcfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
		if err != nil {
			ln.Close()
			return nil, err
		}
		rg, err := server.New(rcfg, server.Options{Logger: server.NewLogger(io.Discard, cfg.Log, cfg.Secrets()), Listener: ln})
		if err != nil {
			ln.Close()
			return nil, err
		}
		s.more = append(s.more, rg)
		s.urls = append(s.urls, "http://"+ln.Addr().String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = rg.Run(gctx, nil)
		}()
	}
	return s, nil
}

// undrained counts the deliveries still queued and the Google
// notifications still waiting for the Play API.
func (s *benchSelf) undrained() int {
	n := 0
	for _, b := range s.receivers {
		if q, err := s.g.Store.Queue(b.name); err == nil {
			n += q.Depth
		}
	}
	if p, err := s.g.Store.Pending(mapping.SourceGoogle, 1000); err == nil {
		n += len(p)
	}
	return n
}

// finish waits until every delivery is final (up to drain) and adds the
// delivery figures and the peak RSS to rep.
func (s *benchSelf) finish(ctx context.Context, rep *BenchReport, start time.Time, drain time.Duration) {
	deadline := time.Now().Add(drain)
	for {
		rep.Undrained = s.undrained()
		if rep.Undrained == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Pub/Sub pushes are answered 204 without a body, so the load generator
	// cannot see which were duplicates; the in-process gateway's counter can.
	var m dto.Metric
	if err := s.g.Metrics.Duplicates.WithLabelValues(mapping.SourceGoogle).Write(&m); err == nil {
		rep.Duplicates += int64(m.GetCounter().GetValue())
	}
	rep.Deliveries = map[string]int64{}
	rep.DeliveryPS = map[string]float64{}
	rep.ReceiverRequests = map[string]int64{}
	st, err := s.g.Store.Stats(start.Add(-time.Minute), time.Now().Add(time.Minute), time.Hour)
	if err == nil {
		rep.DeliveryStates = st.Deliveries
	}
	for _, b := range s.receivers {
		b.mu.Lock()
		last := b.last
		if b.typ == "webhook" {
			lat := b.latency.percentiles()
			rep.Delivery = &lat
		}
		b.mu.Unlock()
		n := int64(rep.DeliveryStates[b.name][store.StateDelivered])
		rep.Deliveries[b.name] = n
		rep.ReceiverRequests[b.name] = b.requests.Load()
		if span := last.Sub(start).Seconds(); span > 0 {
			rep.DeliveryPS[b.name] = float64(n) / span
		} else {
			rep.DeliveryPS[b.name] = 0
		}
	}
	if kib, err := peakRSS(); err == nil {
		rep.PeakRSSKiB = kib
		rep.PeakRSSNote = "VmHWM of the bench process, which includes the in-process gateway, the mock receivers and the load generator"
	}
}

// closeParts stops the receivers and the store fakes and removes the
// temporary directory.
func (s *benchSelf) closeParts() {
	for _, b := range s.receivers {
		b.srv.Close()
	}
	if s.fakes != nil {
		s.fakes.close()
	}
	os.RemoveAll(s.dir)
}

func (s *benchSelf) stop() {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
	s.wg.Wait()
	s.closeParts()
}

// benchSampleEvery is how often bench samples memory during the load.
const benchSampleEvery = 5 * time.Second

// memSamples are what sampleRSS recorded, in KiB.
type memSamples struct {
	rss, heap   []int64
	file, inUse []int64 // the BoltDB file's size and the part in use
}

// sampleRSS records the process's resident size every interval until the
// returned function is called, which stops and returns the samples (and,
// with a BoltDB store, its file's size and the part in use).
func sampleRSS(ctx context.Context, every time.Duration, pid int, db *store.DB) func() memSamples {
	var mu sync.Mutex
	var out, heap, file, inUse []int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				// Anonymous memory only: the database file's mmapped pages
				// are page cache that grows with the data, not a leak.
				if kib, err := procStatusKiB(pid, "RssAnon:"); err == nil {
					live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
					metrics.Read(live)
					mu.Lock()
					out = append(out, kib)
					if pid == 0 { // the live heap is only known in-process
						heap = append(heap, int64(live[0].Value.Uint64()/1024))
					}
					if db != nil {
						var size int64
						if fi, err := os.Stat(db.Path()); err == nil {
							size = fi.Size() / 1024
						}
						fs, _ := db.FileStats(false)
						file, inUse = append(file, size), append(inUse, fs.InUseKiB)
					}
					mu.Unlock()
				}
			}
		}
	}()
	return func() memSamples {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return memSamples{rss: out, heap: heap, file: file, inUse: inUse}
	}
}

// steadyMemory compares the first minute after the warm-up (retention plus
// one prune interval of the gateway) with the last minute of the load:
// the median live heap and database file size of the samples in each
// minute (sample i was taken (i+1)·benchSampleEvery after the start). It
// says nothing (leaves the fields out) when the run is too short for the
// two minutes not to overlap.
func (r *BenchReport) steadyMemory(retention time.Duration, heap, file, inUse []int64) {
	warmup := retention + server.PruneInterval(retention)
	r.RetentionS, r.WarmupS = retention.Seconds(), warmup.Seconds()
	n := max(len(heap), len(file))
	perMinute := int(time.Minute / benchSampleEvery)
	first := int(warmup / benchSampleEvery) // samples taken after the warm-up
	last := n - perMinute
	if first+perMinute > last {
		return
	}
	if len(heap) == n {
		r.HeapSteadyFirstKiB = median(heap[first : first+perMinute])
		r.HeapSteadyLastKiB = median(heap[last:])
		g := 100 * float64(r.HeapSteadyLastKiB-r.HeapSteadyFirstKiB) / float64(r.HeapSteadyFirstKiB)
		r.HeapSteadyGrowthPct = &g
	}
	if len(file) == n {
		r.DBFileSteadyFirstKiB = median(file[first : first+perMinute])
		r.DBFileSteadyLastKiB = median(file[last:])
	}
	if len(inUse) == n {
		r.DBInUseSteadyFirstKiB = median(inUse[first : first+perMinute])
		r.DBInUseSteadyLastKiB = median(inUse[last:])
	}
}

// median of xs (the lower middle of an even count); xs is not modified.
func median(xs []int64) int64 {
	s := append([]int64(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)/2]
}

// rssFlatness compares the first and last tenth of the samples (at least
// one sample each); fewer than 4 samples say nothing and are left out.
func (r *BenchReport) rssFlatness(s, heap []int64) {
	if len(s) < 4 {
		return
	}
	n := max(1, len(s)/10)
	maxOf := func(xs []int64) int64 {
		m := xs[0]
		for _, x := range xs {
			m = max(m, x)
		}
		return m
	}
	r.RSSSamplesKiB, r.HeapSamplesKiB = s, heap
	r.RSSEarlyKiB, r.RSSLateKiB = maxOf(s[:n]), maxOf(s[len(s)-n:])
	r.RSSGrowthPct = 100 * float64(r.RSSLateKiB-r.RSSEarlyKiB) / float64(r.RSSEarlyKiB)
	if len(heap) == len(s) {
		r.HeapEarlyKiB, r.HeapLateKiB = maxOf(heap[:n]), maxOf(heap[len(heap)-n:])
		r.HeapGrowthPct = 100 * float64(r.HeapLateKiB-r.HeapEarlyKiB) / float64(r.HeapEarlyKiB)
	}
}

// peakRSS reads VmHWM from /proc/self/status (Linux), in KiB.
func peakRSS() (int64, error) { return procStatusKiB(0, "VmHWM:") }

// procStatusKiB reads one "Name:   123 kB" line of /proc/<pid>/status
// (pid 0: this process).
func procStatusKiB(pid int, field string) (int64, error) {
	path := "/proc/self/status"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("bench: no %s in %s", field, path)
}

// startBare serves the baseline: echo answering 200 to every request after
// reading its body, nothing verified or stored.
func startBare() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Any("/*", func(c echo.Context) error {
		_, _ = io.Copy(io.Discard, c.Request().Body)
		return c.NoContent(http.StatusOK)
	})
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// writeHeapProfile writes the live heap (after a GC) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}
