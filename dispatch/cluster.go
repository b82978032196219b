package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/postback/postback/metrics"
	"github.com/postback/postback/store"
)

// Several replicas on one PostgreSQL store (store.Cluster) share each
// destination's limits:
//   - the rate limit is one token bucket row per destination; a replica
//     takes tokens in small blocks (a tenth of a second's worth at most)
//     and spends a block only within the time the bucket takes to refill
//     it (what is left then is dropped, not kept for a later burst), so
//     in any interval T the cluster sends at most burst + rate × T plus
//     one block (rate / 10);
//   - the concurrency cap is enforced by the claim (store.ClaimOptions.
//     MaxInFlight: live leases of the destination across replicas);
//   - the breaker, throttling hold and pause live in one health row: a
//     replica that opens the circuit or is told to pause writes it, the
//     others read it at least every sharedEvery and hold too, and when the
//     hold ends exactly one replica (store.Cluster.TakeProbe) sends the
//     probe that decides.

// sharedEvery bounds how stale a replica's view of the shared health is.
const sharedEvery = 200 * time.Millisecond

// waiter is a rate limiter.
type waiter interface {
	Wait(ctx context.Context) error
}

// clusterLimiter is a rate limiter whose tokens come from the shared
// bucket.
type clusterLimiter struct {
	c         store.Cluster
	dest      string
	perSecond float64
	burst     int
	mu        sync.Mutex
	local     int       // tokens taken from the bucket, not yet spent
	spendBy   time.Time // local tokens left after this are dropped
}

func (l *clusterLimiter) Wait(ctx context.Context) error {
	block := max(1, min(l.burst, int(l.perSecond/10)))
	// A block is spent within the time the bucket takes to refill it:
	// tokens kept longer (the queue went quiet) would be sent on top of
	// the bucket's own burst later.
	valid := time.Duration(float64(block) / l.perSecond * float64(time.Second))
	for {
		l.mu.Lock()
		if l.local > 0 && time.Now().After(l.spendBy) {
			l.local = 0
		}
		if l.local > 0 {
			l.local--
			l.mu.Unlock()
			return nil
		}
		got, wait, err := l.c.TakeTokens(ctx, l.dest, block, l.perSecond, l.burst)
		if err != nil {
			l.mu.Unlock()
			return err
		}
		if got > 0 {
			l.local, l.spendBy = got-1, time.Now().Add(valid)
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// syncShared adopts the shared health (at most every sharedEvery, and
// whenever the local hold has ended) and, when an open circuit's or a
// pause's hold has ended, lets this replica probe only if it wins the
// probe. It returns false with a wait when the worker must not send now.
func (w *worker) syncShared(ctx context.Context, now time.Time) (time.Duration, bool) {
	o := &w.d.opts
	w.mu.Lock()
	holdEnded := (w.paused || w.circuit == "open" || w.circuit == "half-open") && !now.Before(w.holdUntil)
	fresh := now.Sub(w.sharedAt) < sharedEvery
	w.mu.Unlock()
	if fresh && !holdEnded {
		return 0, true
	}
	h, ok, err := w.cluster.LoadHealth(ctx, w.dest.Name)
	if err != nil {
		o.Logger.Warn("read shared destination health", "destination", w.dest.Name, "err", err)
		return o.Poll, false
	}
	w.mu.Lock()
	w.sharedAt = now
	if ok {
		w.saved = h
		if h.HoldUntil.After(w.holdUntil) || h.Circuit != w.circuit && !h.HoldUntil.Before(w.holdUntil) {
			w.holdUntil, w.circuit, w.cooldown = h.HoldUntil, h.Circuit, h.Cooldown
		}
		if h.Paused != w.paused {
			w.paused, w.pausedWhy = h.Paused, h.PausedWhy
			v := 0.0
			if h.Paused {
				v = 1
			}
			o.Metrics.Paused.WithLabelValues(w.dest.Name).Set(v)
		}
		if h.Circuit == "closed" && w.circuit != "closed" && !h.HoldUntil.After(now) {
			w.circuit, w.failures, w.cooldown = "closed", 0, 0
			o.Metrics.SetCircuit(w.dest.Name, metrics.CircuitClosed)
		}
	}
	needProbe := (w.circuit == "open" || w.circuit == "half-open" || w.paused) && !now.Before(w.holdUntil) && ok
	w.mu.Unlock()
	if !needProbe {
		return 0, true
	}
	won, err := w.cluster.TakeProbe(ctx, w.dest.Name, now, now.Add(max(o.BreakerCooldown, o.Poll)))
	if err != nil {
		o.Logger.Warn("take the destination probe", "destination", w.dest.Name, "err", err)
		return o.Poll, false
	}
	if won {
		return 0, true
	}
	// Another replica probes: wait for its answer.
	w.mu.Lock()
	w.sharedAt = time.Time{}
	w.holdUntil = now.Add(o.Poll)
	w.mu.Unlock()
	return o.Poll, false
}

// shareHealth writes this replica's view after a send changed it.
func (w *worker) shareHealth(ctx context.Context) {
	w.mu.Lock()
	h := store.SharedHealth{HoldUntil: w.holdUntil, Circuit: w.circuit, Cooldown: w.cooldown, Paused: w.paused, PausedWhy: w.pausedWhy}
	if h.Circuit == "" {
		h.Circuit = "closed"
	}
	same := h.Circuit == w.saved.Circuit && h.Paused == w.saved.Paused && h.HoldUntil.Equal(w.saved.HoldUntil)
	if !same {
		w.saved = h
	}
	w.mu.Unlock()
	if same {
		return
	}
	if err := w.cluster.SaveHealth(context.WithoutCancel(ctx), w.dest.Name, h); err != nil {
		w.d.opts.Logger.Warn("write shared destination health", "destination", w.dest.Name, "err", err)
	}
}
