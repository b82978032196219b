package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/store"
)

// Held explains why a destination's work is held: "paused" (the
// destination refused the credentials or configuration) or "circuit_open"
// (it kept failing), since when, when the next probe goes and the last
// answer it gave.
type Held struct {
	Reason       string    `json:"reason"`
	Detail       string    `json:"detail,omitempty"`
	Since        time.Time `json:"since,omitzero"`
	NextProbe    time.Time `json:"next_probe,omitzero"`
	LastStatus   int       `json:"last_status,omitempty"`
	LastResponse string    `json:"last_response,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
}

// heldState is a worker's memory of its last answer and of when it became
// held; guarded by the worker's mu.
type heldState struct {
	since        time.Time
	lastStatus   int
	lastResponse string
}

// answer remembers a result's response.
func (h *heldState) answer(r forwarders.Result) {
	if r.Status != 0 || r.Response != "" {
		h.lastStatus, h.lastResponse = r.Status, r.Response
		if len(h.lastResponse) > 1024 {
			h.lastResponse = h.lastResponse[:1024]
		}
	}
}

// note starts or ends the held period after a health update.
func (h *heldState) note(w *worker, now time.Time) {
	held := w.paused || w.circuit == "open"
	switch {
	case held && h.since.IsZero():
		h.since = now
	case !held && w.circuit != "half-open":
		h.since = time.Time{}
	}
}

// fill sets hh.Held from the worker's state.
func (h *heldState) fill(hh *Health, w *worker) {
	if !w.paused && w.circuit != "open" && w.circuit != "half-open" {
		return
	}
	x := &Held{Reason: "circuit_open", Since: h.since, NextProbe: w.holdUntil, LastStatus: h.lastStatus,
		LastResponse: h.lastResponse, LastError: w.lastError}
	if w.paused {
		x.Reason, x.Detail = "paused", w.pausedWhy
	} else {
		x.Detail = fmt.Sprintf("%d failed requests in a row; cooldown %s", w.failures, w.cooldown)
	}
	hh.Held = x
}

// HeldNames lists the destinations whose work is held now.
func (d *Dispatcher) HeldNames() []string {
	var out []string
	for _, h := range d.Health() {
		if h.Held != nil {
			out = append(out, h.Name)
		}
	}
	return out
}

// ErrUnknownDestination is returned by Resume for a name not configured.
var ErrUnknownDestination = fmt.Errorf("%w: destination", store.ErrNotFound)

// Resume ends a destination's pause or open circuit now, as if its next
// probe had succeeded, and wakes it: an operator who fixed the cause need
// not wait for the probe. A cluster's shared health is reset too. It
// reports whether the destination was held.
func (d *Dispatcher) Resume(ctx context.Context, name string) (bool, error) {
	w, ok := d.workers[name]
	if !ok {
		return false, fmt.Errorf("%w %s", ErrUnknownDestination, name)
	}
	o := &d.opts
	w.mu.Lock()
	was := w.paused || w.circuit == "open" || w.circuit == "half-open"
	w.paused, w.pausedWhy = false, ""
	w.circuit, w.failures, w.cooldown = "closed", 0, 0
	w.holdUntil = time.Time{}
	w.held.since = time.Time{}
	w.sharedAt = o.Now()
	w.mu.Unlock()
	o.Metrics.Paused.WithLabelValues(name).Set(0)
	o.Metrics.SetCircuit(name, metrics.CircuitClosed)
	if w.cluster != nil {
		if err := w.cluster.SaveHealth(ctx, name, store.SharedHealth{Circuit: "closed"}); err != nil {
			return was, err
		}
		w.mu.Lock()
		w.saved = store.SharedHealth{Circuit: "closed"}
		w.mu.Unlock()
	}
	// Its deliveries were put off to the next probe: due now.
	if ex, ok := d.store.(interface {
		Expedite(ctx context.Context, dest string, now time.Time) (int, error)
	}); ok {
		n, err := ex.Expedite(ctx, name, o.Now())
		if err != nil {
			return was, err
		}
		o.Logger.Info("destination resumed by an operator", "destination", name, "held", was, "deliveries_due_now", n)
	}
	w.nudge()
	return was, nil
}
