package dispatch

import (
	"context"
	"errors"
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
