package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/store"
)

// TestAdjustPerDeviceOrder: "Events must be submitted chronologically for
// each device and event token." A burst of one device's events created out
// of order, with concurrency 8 and a restart in the middle, reaches Adjust
// in event-time order, one at a time, while another device's events go in
// parallel; none is skipped as out of order. On both backends.
func TestAdjustPerDeviceOrder(t *testing.T) { bothBackends(t, testAdjustPerDeviceOrder) }

func testAdjustPerDeviceOrder(t *testing.T, backend string) {
	var mu sync.Mutex
	got := map[string][]int64{} // device -> created_at_unix in arrival order
	inflight := map[string]int{}
	overlap := ""
	block := make(chan struct{})
	var blockOnce sync.Once
	adjust := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		dev := r.Form.Get("adid")
		at, _ := strconv.ParseInt(r.Form.Get("created_at_unix"), 10, 64)
		mu.Lock()
		inflight[dev]++
		if inflight[dev] > 1 {
			overlap = dev
		}
		got[dev] = append(got[dev], at)
		n := len(got["dev-a"])
		mu.Unlock()
		if dev == "dev-a" && n == 3 {
			// The gateway restarts while this one is in flight.
			blockOnce.Do(func() { <-block })
		}
		time.Sleep(3 * time.Millisecond)
		mu.Lock()
		inflight[dev]--
		mu.Unlock()
		io.WriteString(w, `{"status":"OK"}`)
	}))
	defer adjust.Close()
	db := e2eDB(t, backend)
	extra := `  - name: adjust
    type: adjust
    endpoint: ` + adjust.URL + `
    app_token: 4w565xzmb54d
    event_tokens: {custom:level_up: f0ob4r}
    concurrency: 8
api_keys: ["order-test-key"]
`
	tg := startGateway(t, e2eConfig(t, db, "http://127.0.0.1:9/", extra), nil)
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	offsets := []int{0, 6, 7, 1, 3, 4, 5, 2} // created out of order
	// Each device's burst is one batch request (one transaction), its
	// events in the order offsets lists: created out of event-time order.
	post := func(dev string) {
		var events []string
		for _, off := range offsets {
			events = append(events, fmt.Sprintf(`{"type":"custom","name":"level_up","app_id":"com.example.app","app_user_id":"u-%s","occurred_at":%q,"identifiers":{"adid":%q,"os":"android"}}`,
				dev, base.Add(time.Duration(off)*time.Second).Format(time.RFC3339), dev))
		}
		body := `{"events":[` + strings.Join(events, ",") + `]}`
		req, _ := http.NewRequest(http.MethodPost, tg.url+"/v1/events", bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer order-test-key")
		req.Header.Set("Idempotency-Key", "burst-"+dev)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("post %s: %d %s", dev, resp.StatusCode, b)
		}
	}
	post("dev-a")
	post("dev-b")
	waitFor(t, "third dev-a delivery in flight", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["dev-a"]) >= 3
	})
	tg.stop()
	close(block)
	// The stopped gateway's request ends before the new one starts (as a
	// crash would end it), so "in flight twice" below means the
	// dispatcher's doing, not the restart's.
	waitFor(t, "the interrupted request to end", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return inflight["dev-a"] == 0
	})
	tg2 := startGateway(t, e2eConfig(t, db, "http://127.0.0.1:9/", extra), nil)
	waitFor(t, "every event delivered", func() bool {
		q, err := tg2.g.Store.Queue("adjust")
		return err == nil && q.Depth == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if overlap != "" {
		t.Fatalf("two deliveries of %s in flight at once", overlap)
	}
	for _, dev := range []string{"dev-a", "dev-b"} {
		seq := got[dev]
		var firsts []int64
		seen := map[int64]bool{}
		for _, at := range seq {
			if !seen[at] { // a delivery in flight at the restart is sent again
				seen[at] = true
				firsts = append(firsts, at)
			}
		}
		if len(firsts) != len(offsets) {
			t.Fatalf("%s: %d distinct events delivered, want %d (%v)", dev, len(firsts), len(offsets), seq)
		}
		for i := 1; i < len(firsts); i++ {
			if firsts[i] < firsts[i-1] {
				t.Fatalf("%s delivered out of event-time order: %v", dev, seq)
			}
		}
	}
	ds, err := tg2.g.Store.Deliveries(store.DeliveryFilter{Destination: "adjust", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.State != store.StateDelivered {
			t.Errorf("%s ended %s (%s), want delivered", d.Key, d.State, d.Reason)
		}
	}
}
