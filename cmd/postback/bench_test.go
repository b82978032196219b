package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestBenchSelf(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) (string, bool) { return "", false }}
	code := Main(context.Background(), []string{"bench", "--self", "--duration", "1s", "--concurrency", "4",
		"--dup-ratio", "0.2", "--mix", "stripe=2,shopify=1,custom=1", "--drain", "5s", "--json"}, env)
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
	for _, src := range []string{"stripe", "shopify", "custom"} {
		if rep.BySource[src] == 0 {
			t.Errorf("no %s notification accepted", src)
		}
	}
	if rep.Ingest.N != int(rep.Accepted) || rep.Ingest.P50 <= 0 || rep.Ingest.P50 > rep.Ingest.P99 || rep.Ingest.P99 > rep.Ingest.P999 {
		t.Errorf("ingest percentiles %+v for %d accepted", rep.Ingest, rep.Accepted)
	}
	if rep.Delivery == nil || rep.Delivery.N == 0 || rep.Deliveries["bench-hook"] == 0 || rep.DeliveryPS["bench-hook"] <= 0 {
		t.Errorf("delivery figures %+v %v %v", rep.Delivery, rep.Deliveries, rep.DeliveryPS)
	}
	if rep.PeakRSSKiB <= 0 {
		t.Errorf("peak RSS %d", rep.PeakRSSKiB)
	}
}

func TestBenchTable(t *testing.T) {
	var out bytes.Buffer
	printBench(&out, &BenchReport{Target: "http://x", Accepted: 3, BySource: map[string]int64{"stripe": 3}, ErrorCodes: map[string]int64{"500": 1}, Errors: 1,
		Delivery: &BenchLatency{P50: 1, P99: 2, N: 3}, Deliveries: map[string]int64{"hook": 3}, DeliveryPS: map[string]float64{"hook": 3}, PeakRSSKiB: 2048})
	for _, want := range []string{"accepted", "stripe", "errors", "500×1", "ingest latency", "ingest-to-delivery", "deliveries hook", "peak RSS", "2.0 MiB"} {
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
		{"receiver error rate above 1", []string{"--self", "--receiver-error-rate", "2"}, 2},
		{"stripe without secret", []string{"--mix", "stripe=1"}, 2},
		{"shopify without secret", []string{"--mix", "shopify=1", "--stripe-secret", "s"}, 2},
		{"custom without API key", []string{"--mix", "custom=1"}, 2},
		{"unknown flag", []string{"--nope"}, 2},
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
	if got := percentiles(nil); got != (BenchLatency{}) {
		t.Errorf("empty: %+v", got)
	}
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := percentiles(d)
	if got.P50 != 500 || got.P99 != 990 || got.P999 != 999 || got.N != 1000 {
		t.Errorf("percentiles %+v", got)
	}
}
