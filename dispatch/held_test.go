package dispatch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/store"
)

// A paused destination says why, since when, when it probes next and what
// it answered; Resume sends its work at once instead of at the next probe.
func TestHeldReasonAndResume(t *testing.T) {
	var mu sync.Mutex
	fixed := false
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		mu.Lock()
		defer mu.Unlock()
		if fixed {
			return forwarders.Result{Outcome: forwarders.Delivered, Status: 200}
		}
		return forwarders.Result{Outcome: forwarders.Pause, Status: 401, Reason: "auth: token refused", Response: `{"error":"bad token"}`}
	}}
	db, d := setup(t, 1, Destination{Name: "d", Forwarder: f, Concurrency: 1, MaxAttempts: 2}, Options{PauseProbe: time.Hour})
	ingest(t, db, "n1")
	waitFor(t, "paused", func() bool { return d.Health()[0].Held != nil })
	h := d.Health()[0].Held
	if h.Reason != "paused" || h.Detail != "auth: token refused" || h.Since.IsZero() || h.NextProbe.Before(time.Now().Add(50*time.Minute)) ||
		h.LastStatus != 401 || h.LastResponse != `{"error":"bad token"}` {
		t.Fatalf("held = %+v", h)
	}
	if names := d.HeldNames(); len(names) != 1 || names[0] != "d" {
		t.Errorf("held names %v", names)
	}
	mu.Lock()
	fixed = true
	mu.Unlock()
	was, err := d.Resume(context.Background(), "d")
	if err != nil || !was {
		t.Fatalf("resume = %v, %v", was, err)
	}
	// The probe was an hour away: only the resume sends it now.
	waitFor(t, "delivered after resume", func() bool { return states(t, db)[store.StateDelivered] == 1 })
	if h := d.Health()[0]; h.Held != nil || h.Paused {
		t.Errorf("health after resume %+v", h)
	}
	if was, err := d.Resume(context.Background(), "d"); err != nil || was {
		t.Errorf("second resume = %v, %v; want not held", was, err)
	}
	if _, err := d.Resume(context.Background(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("resume of an unknown destination: %v", err)
	}
}

// An open circuit is held work too: the reason, the failures and cooldown,
// the next probe.
func TestHeldCircuitOpen(t *testing.T) {
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		return forwarders.Result{Outcome: forwarders.Retry, Status: 503, Reason: "http_503", Response: "upstream down"}
	}}
	db, d := setup(t, 3, Destination{Name: "d", Forwarder: f, Concurrency: 1, MaxAttempts: 100}, Options{
		BackoffBase: time.Millisecond, BackoffCap: 2 * time.Millisecond, BreakerFailures: 2, BreakerCooldown: time.Hour,
	})
	ingest(t, db, "n1")
	waitFor(t, "circuit open", func() bool { return d.Health()[0].Held != nil })
	h := d.Health()[0].Held
	if h.Reason != "circuit_open" || !strings.Contains(h.Detail, "failed requests in a row") || h.Since.IsZero() || h.NextProbe.IsZero() ||
		h.LastStatus != 503 || h.LastResponse != "upstream down" {
		t.Errorf("held = %+v", h)
	}
}

// Options.Mask masks the configuration's secrets in what an attempt logs.
func TestAttemptMasked(t *testing.T) {
	f := &fakeForwarder{batch: 1, answer: func(int, forwarders.Item) forwarders.Result {
		return forwarders.Result{Outcome: forwarders.Delivered, Status: 200, Request: "POST /x?key=S3CRET-VALUE", Response: "echo S3CRET-VALUE"}
	}}
	db, _ := setup(t, 1, Destination{Name: "d", Forwarder: f, Concurrency: 1}, Options{
		Mask: func(s string) string { return strings.ReplaceAll(s, "S3CRET-VALUE", "[redacted]") },
	})
	ingest(t, db, "n1")
	waitFor(t, "delivered", func() bool { return states(t, db)[store.StateDelivered] == 1 })
	ds, _ := db.Deliveries(store.DeliveryFilter{})
	atts, err := db.Attempts(ds[0].Key)
	if err != nil || len(atts) != 1 || atts[0].Request != "POST /x?key=[redacted]" || atts[0].Response != "echo [redacted]" || atts[0].Replay {
		t.Errorf("attempts %+v, %v", atts, err)
	}
}
