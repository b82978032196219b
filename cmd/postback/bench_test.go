package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/store"
)

func TestBenchSelf(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--self", "--duration", "1s", "--concurrency", "4",
		"--dup-ratio", "0.2", "--mix", "stripe=1,shopify=1,custom=1,apple=1,google=1", "--drain", "15s", "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if rep.Accepted == 0 || rep.AcceptedPS <= 0 {
		t.Errorf("accepted %d (%.1f/s), want > 0", rep.Accepted, rep.AcceptedPS)
	}
	if rep.Errors != 0 {
		t.Errorf("errors %d %v, want 0", rep.Errors, rep.ErrorCodes)
	}
	if rep.Sent != rep.Accepted+rep.Errors {
		t.Errorf("sent %d != accepted %d + errors %d", rep.Sent, rep.Accepted, rep.Errors)
	}
	if rep.Duplicates == 0 {
		t.Errorf("no duplicates suppressed with --dup-ratio 0.2 over %d requests", rep.Sent)
	}
	for _, src := range benchSources {
		if rep.BySource[src] == 0 {
			t.Errorf("no %s notification accepted", src)
		}
	}
	if rep.Ingest.N != int(rep.Accepted) || rep.Ingest.P50 <= 0 || rep.Ingest.P50 > rep.Ingest.P99 || rep.Ingest.P99 > rep.Ingest.P999 {
		t.Errorf("ingest percentiles %+v for %d accepted", rep.Ingest, rep.Accepted)
	}
	if rep.Delivery == nil || rep.Delivery.N == 0 {
		t.Errorf("ingest-to-delivery %+v", rep.Delivery)
	}
	if rep.Undrained != 0 {
		t.Errorf("%d deliveries or enrichments not drained", rep.Undrained)
	}
	// Every new notification is one conversion event; duplicates add none.
	// Every destination type has a mock receiver and delivers every event
	// it matches.
	events := 0
	for _, n := range rep.DeliveryStates["bench-webhook"] {
		events += n
	}
	// (Pub/Sub pushes are answered 204 without saying whether they were
	// duplicates, and requests cut off at the end may still have been
	// stored, so the count is bounded, not exact.)
	if events == 0 || events > int(rep.Accepted)+4 {
		t.Errorf("%d events for %d accepted notifications", events, rep.Accepted)
	}
	for _, typ := range forwarders.Types() {
		name := "bench-" + typ
		states := rep.DeliveryStates[name]
		if rep.Deliveries[name] == 0 || int(rep.Deliveries[name]) != states[store.StateDelivered] || len(states) != 1 || rep.DeliveryPS[name] <= 0 || rep.ReceiverRequests[name] == 0 {
			t.Errorf("%s: delivered %d (%.1f/s), states %v, %d requests; want all delivered", name, rep.Deliveries[name], rep.DeliveryPS[name], states, rep.ReceiverRequests[name])
		}
		// AppsFlyer matches no Google event (the bench app is an iOS app).
		if typ != "appsflyer" && states[store.StateDelivered] != events {
			t.Errorf("%s: %d delivered, want every event (%d)", name, states[store.StateDelivered], events)
		}
	}
	if rep.PeakRSSKiB <= 0 {
		t.Errorf("peak RSS %d", rep.PeakRSSKiB)
	}
}

// TestBenchPaceKeepsTheRate: --rate is an open-loop schedule. Requests
// due while no client was free go out late, not never: a run that fell
// 30 ms behind still sends every request of its 50 ms at 1000/s, and
// reports how late they left.
func TestBenchPaceKeepsTheRate(t *testing.T) {
	r := &benchRun{o: benchOptions{Rate: 1000, Duration: 50 * time.Millisecond}}
	start := time.Now()
	time.Sleep(30 * time.Millisecond)
	n := 0
	for r.pace(context.Background(), start) {
		n++
	}
	if n != 50 {
		t.Errorf("%d requests paced, want 50", n)
	}
	if took := time.Since(start); took < 49*time.Millisecond {
		t.Errorf("the last request left %v after the start, before it was due", took)
	}
	lag := r.lag.percentiles()
	if lag.N != 50 || lag.P99 < 20 {
		t.Errorf("schedule lag %+v, want 50 requests, the first ones about 30 ms late", lag)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = &benchRun{o: benchOptions{Rate: 1, Duration: time.Minute}}
	r.slot.Store(1)
	if r.pace(ctx, time.Now()) {
		t.Error("a cancelled run paced a request due in a second")
	}
}

func TestBenchTable(t *testing.T) {
	var out bytes.Buffer
	printBench(&out, &BenchReport{Target: "http://x", Accepted: 3, BySource: map[string]int64{"stripe": 3}, ErrorCodes: map[string]int64{"500": 1}, Errors: 1,
		Delivery: &BenchLatency{P50: 1, P99: 2, N: 3}, Deliveries: map[string]int64{"hook": 3, "meta": 2}, DeliveryPS: map[string]float64{"hook": 3, "meta": 2},
		DeliveryStates: map[string]map[string]int{"hook": {"delivered": 3}, "meta": {"delivered": 2, "skipped": 1}}, ReceiverRequests: map[string]int64{"hook": 3, "meta": 1},
		Undrained: 7, PeakRSSKiB: 2048, ScheduleLag: &BenchLatency{P50: 0.1, P99: 3.5}})
	for _, want := range []string{"accepted", "stripe", "errors", "500×1", "ingest latency", "behind schedule", "p99 3.50 ms", "ingest-to-delivery", "deliveries hook", "3 requests",
		"deliveries meta", "skipped 1, 1 requests", "not drained", "7", "peak RSS", "2.0 MiB"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"unknown source in mix", []string{"--mix", "paypal=1"}, 2},
		{"bad weight", []string{"--mix", "stripe=x"}, 2},
		{"negative weight", []string{"--mix", "stripe=-1"}, 2},
		{"no positive weight", []string{"--mix", "stripe=0"}, 2},
		{"zero duration", []string{"--self", "--duration", "0s"}, 2},
		{"no concurrency", []string{"--self", "--concurrency", "0"}, 2},
		{"dup ratio above 1", []string{"--self", "--dup-ratio", "1.5"}, 2},
		{"negative rate", []string{"--self", "--rate", "-1"}, 2},
		{"negative presign", []string{"--self", "--presign", "-1"}, 2},
		{"receiver error rate above 1", []string{"--self", "--receiver-error-rate", "2"}, 2},
		{"no destination concurrency", []string{"--self", "--dest-concurrency", "0"}, 2},
		{"stripe without secret", []string{"--mix", "stripe=1"}, 2},
		{"shopify without secret", []string{"--mix", "shopify=1", "--stripe-secret", "s"}, 2},
		{"custom without API key", []string{"--mix", "custom=1"}, 2},
		{"apple without --self", []string{"--mix", "apple=1"}, 2},
		{"google without --self", []string{"--mix", "stripe=1,google=1", "--stripe-secret", "whsec_x"}, 2},
		{"unknown flag", []string{"--nope"}, 2},
		{"bare and self", []string{"--bare", "--self"}, 2},
		{"bare with apple", []string{"--bare", "--mix", "apple=1"}, 2},
		{"floors with --bare", []string{"--bare", "--floors", "--stripe-secret", "whsec_x"}, 2},
		{"floors and self and bare", []string{"--self", "--bare", "--floors"}, 2},
		{"floors without --self", []string{"--floors", "--stripe-secret", "whsec_x"}, 2},
		{"floors with a rate", []string{"--self", "--floors", "--rate", "100"}, 2},
		{"floors with apple and stripe", []string{"--self", "--floors", "--mix", "apple=1,stripe=1"}, 2},
		{"floors with google", []string{"--self", "--floors", "--mix", "google=1"}, 2},
		{"floors on PostgreSQL with apple", []string{"--self", "--floors", "--dsn", "postgres://x/y", "--mix", "apple=1"}, 2},
		{"pgbench without --floors", []string{"--self", "--dsn", "postgres://x/y", "--pgbench", "/usr/bin/true"}, 2},
		{"pgbench without --dsn", []string{"--self", "--floors", "--pgbench", "/usr/bin/true"}, 2},
		{"retention without --self", []string{"--retention", "2m", "--stripe-secret", "whsec_x"}, 2},
		{"retention with --dsn", []string{"--self", "--dsn", "postgres://x/y", "--retention", "2m"}, 2},
		{"retention below a second", []string{"--self", "--retention", "500ms"}, 2},
		{"negative retention", []string{"--self", "--retention", "-2m"}, 2},
		{"gateway not reachable", []string{"--addr", "127.0.0.1:9", "--stripe-secret", "whsec_x", "--duration", "200ms", "--concurrency", "1"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
			if code := Main(context.Background(), append([]string{"bench"}, tc.args...), env); code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, errOut.String())
			}
		})
	}
}

// TestBenchBare drives the bare baseline handler: everything is accepted,
// nothing is verified or stored.
func TestBenchBare(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--bare", "--mix", "stripe=1,shopify=1,custom=1", "--duration", "300ms", "--concurrency", "2", "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Accepted == 0 || rep.Errors != 0 {
		t.Fatalf("report %s (%v): want accepted > 0 and no errors", out.String(), err)
	}
}

func TestRSSFlatness(t *testing.T) {
	var r BenchReport
	r.rssFlatness([]int64{100, 100}, []int64{1, 1})
	if r.RSSEarlyKiB != 0 {
		t.Error("two samples must say nothing")
	}
	s := make([]int64, 20)
	for i := range s {
		s[i] = 1000
	}
	s[1], s[19] = 1100, 1210
	r.rssFlatness(s, s)
	if r.RSSEarlyKiB != 1100 || r.RSSLateKiB != 1210 || r.RSSGrowthPct < 9.99 || r.RSSGrowthPct > 10.01 || r.HeapGrowthPct != r.RSSGrowthPct {
		t.Errorf("early %d late %d growth %.2f, want 1100, 1210, 10%%", r.RSSEarlyKiB, r.RSSLateKiB, r.RSSGrowthPct)
	}
}

func TestParseMix(t *testing.T) {
	m, err := parseMix("stripe=3, shopify , custom=0")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["stripe"] != 3 || m["shopify"] != 1 {
		t.Errorf("mix %v", m)
	}
	if _, err := parseMix("x=1"); !errors.Is(err, errBenchUsage) {
		t.Errorf("err %v, want errBenchUsage", err)
	}
}

func TestPercentiles(t *testing.T) {
	var h latencyHist
	if got := h.percentiles(); got != (BenchLatency{}) {
		t.Errorf("empty: %+v", got)
	}
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	got := h.percentiles()
	within := func(got, want float64) bool { return got >= want && got <= want*1.0101 }
	if !within(got.P50, 500) || !within(got.P99, 990) || !within(got.P999, 999) || got.N != 1000 {
		t.Errorf("percentiles %+v, want 500/990/999 ms within 1 %%", got)
	}
}

func TestBenchReceiver(t *testing.T) {
	tests := []struct {
		name, typ, path string
		errRate         float64
		status          int
		body            string
		counted         bool
	}{
		{"appsflyer", "appsflyer", "/inappevent/id1", 0, 200, "ok", true},
		{"adjust", "adjust", "/event", 0, 200, `{"status":"OK"}`, true},
		{"singular", "singular", "/api/v1/evt", 0, 200, `{"status":"ok"}`, true},
		{"branch", "branch", "/v2/event/standard", 0, 200, `{}`, true},
		{"kochava", "kochava", "/track/json", 0, 200, `{"success":"1"}`, true},
		{"meta", "meta", "/v25.0/1/events", 0, 200, `{"events_received":1,"messages":[],"fbtrace_id":"bench"}`, true},
		{"tiktok", "tiktok", "/open_api/v1.3/event/track/", 0, 200, `{"code":0,"message":"OK","request_id":"bench","data":{}}`, true},
		{"ga4", "ga4", "/mp/collect", 0, 204, ``, true},
		{"ga4 validation", "ga4", "/debug/mp/collect", 0, 200, `{"validationMessages":[]}`, true},
		{"webhook", "webhook", "/hook", 0, 200, `{"received":true}`, true},
		{"error rate 1", "adjust", "/event", 1, 503, ``, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &benchReceiver{name: "bench-" + tc.typ, typ: tc.typ}
			rec := httptest.NewRecorder()
			body := `{"id":"evt_1","received_at":"` + time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano) + `"}`
			t0 := time.Now()
			b.serve(rec, httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(body)), 5*time.Millisecond, tc.errRate)
			if d := time.Since(t0); d < 5*time.Millisecond {
				t.Errorf("answered after %v, want the configured latency first", d)
			}
			got, _ := io.ReadAll(rec.Body)
			if rec.Code != tc.status || string(got) != tc.body {
				t.Errorf("got %d %q, want %d %q", rec.Code, got, tc.status, tc.body)
			}
			if n := b.requests.Load(); (n == 1) != tc.counted {
				t.Errorf("counted %d requests, want counted=%t", n, tc.counted)
			}
			if p := b.latency.percentiles(); tc.typ == "webhook" && (p.N != 1 || p.P50 < 1000) {
				t.Errorf("webhook latency %+v, want one sample of about 1s", p)
			}
		})
	}
}

func TestBenchDestination(t *testing.T) {
	for _, typ := range forwarders.Types() {
		d, err := benchDestination(typ, "http://127.0.0.1:1", "whsec_x", 48)
		if err != nil {
			t.Errorf("%s: %v", typ, err)
		} else if !strings.Contains(d, "concurrency: 48\n") {
			t.Errorf("%s: the destination's concurrency is not the one asked for:\n%s", typ, d)
		}
	}
	if _, err := benchDestination("carrier-pigeon", "http://127.0.0.1:1", "", 32); err == nil {
		t.Error("an unknown destination type got a config")
	}
}

// TestBenchAgainstRunningGateway drives a gateway started elsewhere (here
// in-process) over --addr and reports that process's peak RSS via --pid.
func TestBenchAgainstRunningGateway(t *testing.T) {
	addr := admGateway(t, newAdmSink(t, 200))
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--addr", addr, "--stripe-secret", admStripe, "--duration", "300ms",
		"--concurrency", "2", "--pid", strconv.Itoa(os.Getpid()), "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Accepted == 0 || rep.Errors != 0 {
		t.Fatalf("report %s (%v)", out.String(), err)
	}
	if rep.PeakRSSKiB <= 0 || !strings.Contains(rep.PeakRSSNote, strconv.Itoa(os.Getpid())) {
		t.Errorf("peak RSS %d (%q), want the target process's", rep.PeakRSSKiB, rep.PeakRSSNote)
	}
	if code := Main(context.Background(), []string{"bench", "--self", "--pid", "1"}, env); code != 2 {
		t.Errorf("--pid with --self: exit %d, want 2", code)
	}
}

// TestBenchPresign: --presign signs notifications before the clock starts
// and sends them first; they are accepted as new notifications.
func TestBenchPresign(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--self", "--destinations", "none", "--duration", "1s", "--concurrency", "2",
		"--mix", "apple=1,stripe=1,google=1", "--presign", "40", "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if rep.Presigned != 40 || rep.Accepted < 40 || rep.Errors != 0 || rep.Duplicates != 0 {
		t.Fatalf("presigned %d, accepted %d, errors %d %v, duplicates %d; want all 40 presigned accepted as new",
			rep.Presigned, rep.Accepted, rep.Errors, rep.ErrorCodes, rep.Duplicates)
	}
}

// TestBenchGoogleDuplicates: Pub/Sub pushes are answered 204 without a body;
// bench --self still reports the Google duplicates the gateway suppressed.
func TestBenchGoogleDuplicates(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--self", "--destinations", "none", "--duration", "1s", "--concurrency", "2",
		"--mix", "google=1", "--dup-ratio", "0.5", "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if rep.Accepted < 10 || rep.Duplicates == 0 || rep.Duplicates >= rep.Accepted {
		t.Fatalf("accepted %d, duplicates %d: want some Google duplicates counted", rep.Accepted, rep.Duplicates)
	}
}

// TestSteadyMemory: the warm-up is the retention plus one prune interval;
// the medians of the minute after it and of the last minute are compared.
func TestSteadyMemory(t *testing.T) {
	const n = 120 // 10 minutes of 5 s samples
	heap, file := make([]int64, n), make([]int64, n)
	for i := range heap {
		heap[i], file[i] = int64(100+10*i), 4096 // grows during the warm-up
	}
	first := int((2*time.Minute + 12*time.Second) / benchSampleEvery) // 2m retention, 12s prune interval
	for i := first; i < n; i++ {
		heap[i] = 1000
	}
	for i := n - 12; i < n; i++ {
		heap[i] = 1050
	}
	heap[n-1] = 99999 // one outlier moves no median
	var r BenchReport
	r.steadyMemory(2*time.Minute, heap, file, file)
	if r.WarmupS != 132 || r.RetentionS != 120 {
		t.Errorf("warm-up %v s, retention %v s; want 132, 120", r.WarmupS, r.RetentionS)
	}
	if r.HeapSteadyFirstKiB != 1000 || r.HeapSteadyLastKiB != 1050 || r.HeapSteadyGrowthPct == nil || *r.HeapSteadyGrowthPct != 5 {
		t.Errorf("steady heap %d → %d (%v), want 1000 → 1050 (+5 %%)", r.HeapSteadyFirstKiB, r.HeapSteadyLastKiB, r.HeapSteadyGrowthPct)
	}
	if r.DBFileSteadyFirstKiB != 4096 || r.DBFileSteadyLastKiB != 4096 || r.DBInUseSteadyLastKiB != 4096 {
		t.Errorf("steady file %d → %d, want 4096 → 4096", r.DBFileSteadyFirstKiB, r.DBFileSteadyLastKiB)
	}

	// Too short for a minute after the warm-up and a last minute apart.
	var short BenchReport
	short.steadyMemory(2*time.Minute, heap[:40], file[:40], nil)
	if short.HeapSteadyGrowthPct != nil || short.HeapSteadyFirstKiB != 0 || short.WarmupS != 132 {
		t.Errorf("short run: %+v, want no steady figures", short)
	}
}

// TestBenchRetention: --retention reaches the in-process gateway, which
// prunes within the run.
func TestBenchRetention(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--self", "--destinations", "webhook", "--retention", "1s", "--duration", "3s",
		"--concurrency", "2", "--rate", "100", "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if rep.DBEnd == nil || rep.DBEnd.FileKiB <= 0 || rep.DBEnd.InUseKiB <= 0 || rep.DBEnd.Keys["events"] == 0 || len(rep.DBInUseSamplesKiB) != len(rep.DBFileSamplesKiB) {
		t.Errorf("database figures %+v, %d in-use samples for %d file samples", rep.DBEnd, len(rep.DBInUseSamplesKiB), len(rep.DBFileSamplesKiB))
	}
	if rep.RetentionS != 1 || rep.WarmupS != 2 {
		t.Errorf("retention %v s, warm-up %v s; want 1, 2", rep.RetentionS, rep.WarmupS)
	}
	// Events older than a second are pruned (every second) once delivered,
	// so the store keeps fewer than were accepted.
	kept := 0
	for _, n := range rep.DeliveryStates["bench-webhook"] {
		kept += n
	}
	if rep.Accepted == 0 || kept >= int(rep.Accepted) {
		t.Errorf("%d deliveries kept of %d accepted: nothing pruned", kept, rep.Accepted)
	}
}

// TestBenchFloors: --floors reports the bare handler's rate (stripe,
// shopify, custom) or the Apple floor (apple), the P-256 rate, and a ratio
// consistent with them, measured in the same invocation.
func TestBenchFloors(t *testing.T) {
	defer func(w time.Duration) { p256Window = w }(p256Window)
	p256Window = 100 * time.Millisecond
	for _, tc := range []struct {
		mix    string
		bare   bool
		target float64
	}{
		{"stripe=1,shopify=1,custom=1", true, 0.5},
		{"apple=1", false, 0.7},
	} {
		t.Run(tc.mix, func(t *testing.T) {
			rep := benchJSON(t, "--self", "--floors", "--destinations", "none", "--mix", tc.mix,
				"--duration", "300ms", "--concurrency", "2")
			f := rep.Floors
			if f == nil {
				t.Fatalf("no floors in %+v", rep)
			}
			if f.P256PS <= 0 || f.P256Goroutines < 1 || f.P256WindowS <= 0 {
				t.Errorf("P-256 %.0f/s on %d goroutines over %.2f s", f.P256PS, f.P256Goroutines, f.P256WindowS)
			}
			if math.Abs(f.AppleFloorPS-f.P256PS/3) > 1e-9*f.P256PS {
				t.Errorf("Apple floor %.3f, want P-256/s ÷ 3 = %.3f", f.AppleFloorPS, f.P256PS/3)
			}
			if (f.BarePS > 0) != tc.bare {
				t.Errorf("bare handler %.0f/s, want measured: %v", f.BarePS, tc.bare)
			}
			if len(f.Ratios) != 1 {
				t.Fatalf("ratios %+v, want one", f.Ratios)
			}
			r := f.Ratios[0]
			floor := f.AppleFloorPS
			if tc.bare {
				floor = f.BarePS
			}
			if r.FloorPS != floor || r.AcceptedPS != rep.AcceptedPS || r.Target != tc.target || rep.AcceptedPS <= 0 {
				t.Errorf("ratio %+v, want floor %.1f, accepted %.1f, target %.1f", r, floor, rep.AcceptedPS, tc.target)
			}
			if want := rep.AcceptedPS / floor; math.Abs(r.Ratio-want) > 0.5e-4 || r.Met != (want >= tc.target) {
				t.Errorf("ratio %.4f met %v, want %.4f met %v", r.Ratio, r.Met, want, want >= tc.target)
			}
		})
	}
}

// benchJSON runs postback bench with args and --json, and returns its
// report.
func benchJSON(t *testing.T, args ...string) BenchReport {
	t.Helper()
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	if code := Main(context.Background(), append(append([]string{"bench"}, args...), "--json"), env); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	return rep
}

func TestPrintFloors(t *testing.T) {
	var out bytes.Buffer
	printBench(&out, &BenchReport{Target: "http://x", Floors: &BenchFloors{BarePS: 20000, P256PS: 27000, P256Goroutines: 2, P256WindowS: 2, AppleFloorPS: 9000,
		Ratios: []BenchRatio{{Name: "stripe ingest / bare handler", AcceptedPS: 11000, FloorPS: 20000, Ratio: 0.55, Target: 0.5, Met: true}}}})
	for _, want := range []string{"floor: bare handler", "20000/s", "floor: P-256 verifications", "27000/s", "floor: Apple (P-256 ÷ 3)", "9000 notifications/s",
		"ratio: stripe ingest / bare handler", "11000 / 20000 = 0.550", "target ≥ 0.5: met"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBenchSubscribers: with a fixed Stripe population, the states stop at
// the population while every later notification is a renewal event.
func TestBenchSubscribers(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--self", "--destinations", "none", "--mix", "stripe=1", "--subscribers", "5",
		"--retention", "1h", "--duration", "1s", "--concurrency", "2", "--rate", "60", "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if rep.Errors != 0 || rep.Accepted < 20 || rep.DBEnd == nil {
		t.Fatalf("accepted %d, errors %d %v", rep.Accepted, rep.Errors, rep.ErrorCodes)
	}
	if states, events := rep.DBEnd.Keys["states"], rep.DBEnd.Keys["events"]; states > 5 || events < int(rep.Accepted)-5 {
		t.Errorf("%d states (want at most the 5 subscribers), %d events for %d accepted", states, events, rep.Accepted)
	}
	if code := Main(context.Background(), []string{"bench", "--self", "--subscribers", "-1"}, env); code != 2 {
		t.Errorf("--subscribers -1: exit %d, want 2", code)
	}
}
