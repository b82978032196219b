// Package dispatch delivers queued events to their destinations.
//
// One worker per destination scans the store's due index, groups due
// deliveries up to the destination's batch size (lingering briefly so that
// batches fill under load without delaying a quiet stream), applies the
// destination's rate limit (requests, not events), concurrency cap and
// circuit breaker, calls its forwarder and records every attempt. Failures
// are retried with exponential backoff and full jitter, honouring
// Retry-After; permanent failures, max_attempts and max_age end as dead.
//
// A claimed delivery keeps its durable due key until its outcome is
// committed, so a delivery in flight when the process dies is simply due
// again after restart (at least once). On BoltDB one process owns the
// database and leases are in memory; on PostgreSQL the lease is stored with
// the claim and replicas share the limits (cluster.go). Either way a
// request is sent only while its lease leaves the destination's timeout to
// finish, so no other claim of it can be in flight at the same time.
package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/store"
)

// Store is what the dispatcher needs from the store.
type Store = store.Queue

// Destination is one configured destination as the dispatcher runs it.
type Destination struct {
	Name        string
	Type        string
	Forwarder   forwarders.Forwarder
	PerSecond   float64
	Burst       int
	Concurrency int
	BatchSize   int // 0: the forwarder's limit
	Linger      time.Duration
	MaxAttempts int
	// MaxAge is the retry horizon (retry.max_age): a delivery is not
	// retried past it, counted from its creation or its last replay.
	MaxAge time.Duration
	// EventMaxAge is the destination API's own limit on event age
	// (Limits().MaxAge: Meta 7 days, GA4 72 hours); older events are never
	// sent, replayed or not.
	EventMaxAge time.Duration
	// Timeout is the forwarder's request timeout (0: unknown): a claimed
	// request is sent only while at least this much of its lease is left.
	Timeout time.Duration
}

// Options tune the engine; zero values get defaults.
type Options struct {
	Now          func() time.Time
	Logger       *slog.Logger
	Metrics      *metrics.Metrics
	Poll         time.Duration // scan interval when not woken; default 250ms
	Lease        time.Duration // in-memory claim lifetime; default 2m
	BackoffBase  time.Duration // first retry delay scale; default 5s
	BackoffCap   time.Duration // default 1h
	IdentityWait time.Duration // default 10m
	PauseProbe   time.Duration // how often a paused destination is probed; default 5m
	// Breaker: after BreakerFailures consecutive failed requests the
	// destination is not called for BreakerCooldown (doubling up to
	// BreakerMaxCooldown),
	// then one probe request decides.
	BreakerFailures    int           // default 5
	BreakerCooldown    time.Duration // default 30s
	BreakerMaxCooldown time.Duration // the doubling stops here; default 1m
	// Mask, when set, masks the configuration's secrets in the request and
	// response an attempt logs (forwarders mask what they know already).
	Mask func(string) string
}

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Poll == 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.Lease == 0 {
		o.Lease = 2 * time.Minute
	}
	if o.BackoffBase == 0 {
		o.BackoffBase = 5 * time.Second
	}
	if o.BackoffCap == 0 {
		o.BackoffCap = time.Hour
	}
	if o.IdentityWait == 0 {
		o.IdentityWait = 10 * time.Minute
	}
	if o.PauseProbe == 0 {
		o.PauseProbe = 5 * time.Minute
	}
	if o.BreakerFailures == 0 {
		o.BreakerFailures = 5
	}
	if o.BreakerCooldown == 0 {
		o.BreakerCooldown = 30 * time.Second
	}
	if o.BreakerMaxCooldown == 0 {
		o.BreakerMaxCooldown = time.Minute
	}
}

// Dispatcher runs one worker per destination.
type Dispatcher struct {
	store   Store
	opts    Options
	workers map[string]*worker
	order   []string
	running sync.WaitGroup
	mu      sync.Mutex
	started bool
	stopped bool
}

// New builds a dispatcher; Run starts it.
func New(st Store, dests []Destination, opts Options) *Dispatcher {
	opts.defaults()
	d := &Dispatcher{store: st, opts: opts, workers: map[string]*worker{}}
	for _, dest := range dests {
		dest = prepare(dest)
		perSecond := rate.Inf
		if dest.PerSecond > 0 {
			perSecond = rate.Limit(dest.PerSecond)
		}
		burst := dest.Burst
		if burst < 1 {
			burst = 1
		}
		var limiter waiter = rate.NewLimiter(perSecond, burst)
		cluster, _ := st.(store.Cluster)
		if cluster != nil && dest.PerSecond > 0 {
			limiter = &clusterLimiter{c: cluster, dest: dest.Name, perSecond: dest.PerSecond, burst: burst}
		}
		w := &worker{
			d:        d,
			dest:     dest,
			cluster:  cluster,
			limiter:  limiter,
			sem:      make(chan struct{}, dest.Concurrency),
			wake:     make(chan struct{}, 1),
			leases:   map[string]time.Time{},
			answered: map[string]struct{}{},
			stats:    newWindow(),
		}
		d.workers[dest.Name] = w
		d.order = append(d.order, dest.Name)
	}
	return d
}

// prepare applies a destination's defaults and its forwarder's limits.
func prepare(dest Destination) Destination {
	lim := dest.Forwarder.Limits()
	if dest.BatchSize <= 0 || (lim.BatchSize > 0 && dest.BatchSize > lim.BatchSize) {
		dest.BatchSize = lim.BatchSize
	}
	if dest.BatchSize <= 0 {
		dest.BatchSize = 1
	}
	if dest.Concurrency <= 0 {
		dest.Concurrency = 1
	}
	if dest.MaxAttempts <= 0 {
		dest.MaxAttempts = 12
	}
	if lim.MaxAge > 0 && (dest.EventMaxAge == 0 || lim.MaxAge < dest.EventMaxAge) {
		dest.EventMaxAge = lim.MaxAge
	}
	return dest
}

// Run starts the workers and blocks until ctx ends and every delivery in
// progress has finished and been recorded.
func (d *Dispatcher) Run(ctx context.Context) {
	d.mu.Lock()
	d.started = true
	d.mu.Unlock()
	for _, name := range d.order {
		w := d.workers[name]
		d.running.Add(1)
		go func() {
			defer d.running.Done()
			w.loop(ctx)
		}()
	}
	d.running.Add(1)
	go func() {
		defer d.running.Done()
		d.gauges(ctx)
	}()
	<-ctx.Done()
	d.running.Wait()
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
}

// Running reports whether the workers are up (readiness).
func (d *Dispatcher) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started && !d.stopped
}

// Wake nudges the workers of dests (after a commit queued work for them).
func (d *Dispatcher) Wake(dests []string) {
	for _, name := range dests {
		if w, ok := d.workers[name]; ok {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
}

// gaugeInterval is how often the queue gauges are refreshed.
const gaugeInterval = 5 * time.Second

// gauges refreshes queue depth and oldest-pending metrics. On a shared
// store the replicas share one count per destination and interval
// (store.Cluster.SharedQueue): a count reads every queued delivery.
func (d *Dispatcher) gauges(ctx context.Context) {
	t := time.NewTicker(gaugeInterval)
	defer t.Stop()
	cluster, _ := d.store.(store.Cluster)
	for {
		for _, name := range d.order {
			var q store.QueueStats
			var err error
			if cluster != nil {
				q, err = cluster.SharedQueue(ctx, name, gaugeInterval-gaugeInterval/10)
			} else {
				q, err = d.store.Queue(name)
			}
			if err != nil {
				continue
			}
			d.opts.Metrics.QueueDepth.WithLabelValues(name).Set(float64(q.Depth))
			age := 0.0
			if !q.OldestCreate.IsZero() {
				age = d.opts.Now().Sub(q.OldestCreate).Seconds()
			}
			d.opts.Metrics.OldestPending.WithLabelValues(name).Set(age)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Backoff returns the delay before retry number attempt (1-based) with full
// jitter: uniform in [0, min(cap, base*2^(attempt-1))].
func Backoff(attempt int, base, ceiling time.Duration, r *rand.Rand) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	if d > ceiling {
		d = ceiling
	}
	if r == nil {
		return time.Duration(rand.Int64N(int64(d) + 1))
	}
	return time.Duration(r.Int64N(int64(d) + 1))
}

// worker runs one destination.
type worker struct {
	d       *Dispatcher
	dest    Destination
	limiter waiter
	cluster store.Cluster // nil unless replicas share the store
	sem     chan struct{}
	wake    chan struct{}

	mu          sync.Mutex
	leases      map[string]time.Time
	answered    map[string]struct{} // shared store: answered, outcome not yet recorded
	holdUntil   time.Time           // throttled or breaker open: no calls before this
	failures    int                 // consecutive failed requests
	cooldown    time.Duration
	circuit     string // closed | open | half-open
	paused      bool
	pausedWhy   string
	lastError   string
	lastErrorAt time.Time
	stats       *window
	inflight    sync.WaitGroup
	sharedAt    time.Time                   // last read of the shared health
	saved       store.SharedHealth          // last shared health written or read
	held        heldState                   // why and since when work is held (held.go)
	reload      atomic.Pointer[Destination] // a reloaded configuration, applied by the loop (reload.go)
}

func (w *worker) loop(ctx context.Context) {
	o := &w.d.opts
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			w.inflight.Wait()
			return
		case <-w.wake:
		case <-timer.C:
		}
		next := w.pass(ctx)
		if next <= 0 || next > o.Poll {
			next = o.Poll
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// pass claims and sends what is due; it returns how long to sleep.
func (w *worker) pass(ctx context.Context) time.Duration {
	w.applyReload()
	o := &w.d.opts
	now := o.Now()
	if w.cluster != nil {
		if wait, ok := w.syncShared(ctx, now); !ok {
			return wait
		}
	}
	w.mu.Lock()
	hold := w.holdUntil
	halfOpen := w.circuit == "open" && !now.Before(hold)
	if halfOpen {
		w.circuit = "half-open"
		o.Metrics.SetCircuit(w.dest.Name, metrics.CircuitHalfOpen)
	}
	probing := w.circuit == "half-open" || w.paused
	w.mu.Unlock()
	if now.Before(hold) {
		return hold.Sub(now)
	}
	free := cap(w.sem) - len(w.sem)
	if free <= 0 {
		return o.Poll // a finished send wakes the loop (nudge)
	}
	limit := w.dest.BatchSize * free
	if probing {
		limit = 1 // one probe request decides
	}
	// Copy the leases before reading the due index: a send that completes
	// during the scan releases its lease only after its outcome is
	// committed, so a delivery either is in this copy or its completed state
	// is in the scan's snapshot, never neither (which would resend it).
	co := store.ClaimOptions{Limit: limit, Lease: o.Lease, MaxInFlight: w.dest.Concurrency * w.dest.BatchSize}
	if w.cluster == nil {
		// A single-process store keeps no claims: the in-memory leases
		// are the claims. A shared store's leases are in the database.
		leased := w.leaseSnapshot(now)
		co.Skip = func(key string) bool { return leased[key] }
	} else {
		co.Answered = w.answeredKeys()
	}
	due, err := w.d.store.Claim(ctx, w.dest.Name, now, co)
	if err != nil {
		o.Logger.Error("scan due deliveries", "destination", w.dest.Name, "err", err)
		return o.Poll
	}
	if len(due) == 0 {
		// Sleep until the next due time (a retry's backoff, a wait for an
		// identifier) when it comes before the poll.
		if next := w.d.store.NextDue(w.dest.Name); !next.IsZero() {
			if d := next.Sub(now); d > 0 && d < o.Poll {
				return d
			}
		}
		return o.Poll
	}
	// Linger: a partial batch waits until its oldest item has waited Linger.
	if w.dest.BatchSize > 1 && len(due) < w.dest.BatchSize && w.dest.Linger > 0 && !probing {
		oldest := due[0].Delivery.NextAt()
		if wait := oldest.Add(w.dest.Linger).Sub(now); wait > 0 {
			w.giveBack(ctx, due)
			return wait
		}
	}
	w.claim(due, now)
	for start := 0; start < len(due); start += w.dest.BatchSize {
		end := min(start+w.dest.BatchSize, len(due))
		batch := due[start:end]
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			w.release(due[start:])
			w.giveBack(ctx, due[start:])
			return 0
		}
		w.inflight.Add(1)
		go func() {
			defer w.inflight.Done()
			defer w.nudge() // a recorded outcome may make work claimable (ordering keys)
			// The slot is the destination's request: it is free as soon
			// as the answer is in, while the outcome is still being
			// recorded (the deliveries stay leased until then).
			free := sync.OnceFunc(func() {
				w.answer(batch, true)
				<-w.sem
				w.nudge()
			})
			defer func() {
				free()
				w.answer(batch, false)
			}()
			// Deliveries in progress finish even during shutdown.
			w.send(context.WithoutCancel(ctx), batch, now, free)
		}()
	}
	if probing {
		return o.Poll
	}
	return time.Millisecond
}

// holding reports whether the destination is on hold at now and not due
// for its probe (see pass).
func (w *worker) holding(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return now.Before(w.holdUntil)
}

// admit reports whether a claimed request may go out: not while the
// destination is on hold (another request's answer, a 429 with
// Retry-After, the breaker or a pause, may have put it there after the
// pass looked), and once the rate limit allows it, waiting only as long as
// the claim's lease leaves time to send it.
func (w *worker) admit(ctx context.Context, claimedAt time.Time) bool {
	now := w.d.opts.Now()
	if w.holding(now) {
		return false
	}
	wctx, cancel := context.WithTimeout(ctx, w.sendBy(claimedAt).Sub(now))
	defer cancel()
	return w.limiter.Wait(wctx) == nil
}

// answer marks a batch's deliveries as answered by the destination (in:
// their outcome is being recorded) or no longer (their send is over).
func (w *worker) answer(batch []store.Due, in bool) {
	if w.cluster == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range batch {
		if in {
			w.answered[d.Delivery.Key] = struct{}{}
		} else {
			delete(w.answered, d.Delivery.Key)
		}
	}
}

// answeredKeys lists the deliveries whose answer is in and whose outcome
// is still being recorded: they hold their lease, but the destination no
// longer counts them (store.ClaimOptions.Answered).
func (w *worker) answeredKeys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.answered) == 0 {
		return nil
	}
	keys := make([]string, 0, len(w.answered))
	for k := range w.answered {
		keys = append(keys, k)
	}
	return keys
}

func (w *worker) leaseSnapshot(now time.Time) map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]bool, len(w.leases))
	for k, exp := range w.leases {
		if now.Before(exp) {
			out[k] = true
		} else {
			delete(w.leases, k)
		}
	}
	return out
}

func (w *worker) claim(due []store.Due, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range due {
		w.leases[d.Delivery.Key] = now.Add(w.d.opts.Lease)
	}
}

// nudge wakes the worker's loop without blocking.
func (w *worker) nudge() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// giveBack returns claimed deliveries that this pass will not send to the
// store, so another dispatcher (replica) need not wait for their lease.
func (w *worker) giveBack(ctx context.Context, due []store.Due) {
	keys := make([]string, len(due))
	for i, d := range due {
		keys[i] = d.Delivery.Key
	}
	if err := w.d.store.Release(context.WithoutCancel(ctx), keys); err != nil {
		w.d.opts.Logger.Warn("release claimed deliveries (their lease expires instead)", "destination", w.dest.Name, "err", err)
	}
}

func (w *worker) release(due []store.Due) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range due {
		delete(w.leases, d.Delivery.Key)
	}
}

// sendBy is the latest moment a request claimed at claimedAt may start:
// it must end (the destination's timeout) before the claim's lease does,
// or another dispatcher (replica) could claim it and send it too. Without
// a known timeout, or one as long as the lease, half the lease is kept.
func (w *worker) sendBy(claimedAt time.Time) time.Time {
	lease := w.d.opts.Lease
	need := w.dest.Timeout
	if need <= 0 || need > lease/2 {
		need = lease / 2
	}
	return claimedAt.Add(lease - need)
}

// send runs the pre-send checks, calls the forwarder and records outcomes.
func (w *worker) send(ctx context.Context, batch []store.Due, claimedAt time.Time, answered func()) {
	defer w.release(batch)
	o := &w.d.opts
	now := o.Now()
	var completions []store.Completion
	var items []forwarders.Item
	var itemDue []store.Due
	req, _ := w.dest.Forwarder.(forwarders.Requirer)
	for _, d := range batch {
		if age := now.Sub(d.Event.ReceivedAt); w.dest.EventMaxAge > 0 && age > w.dest.EventMaxAge {
			completions = append(completions, store.Completion{Key: d.Delivery.Key, State: store.StateDead, Reason: "too_old: the destination takes events up to " + w.dest.EventMaxAge.String() + " old"})
			o.Metrics.Deliveries.WithLabelValues(w.dest.Name, "dead").Inc()
			continue
		}
		if w.dest.MaxAge > 0 && now.Sub(d.Delivery.RetryStart()) > w.dest.MaxAge {
			completions = append(completions, store.Completion{Key: d.Delivery.Key, State: store.StateDead, Reason: "max_age: retried for longer than " + w.dest.MaxAge.String()})
			o.Metrics.Deliveries.WithLabelValues(w.dest.Name, "dead").Inc()
			continue
		}
		if req != nil {
			if missing := req.Missing(&d.Event); missing != "" {
				completions = append(completions, w.identityWait(d, missing, now))
				continue
			}
		}
		ev := d.Event
		items = append(items, forwarders.Item{Key: d.Delivery.Key, Attempt: d.Delivery.Attempts + 1, Event: &ev})
		itemDue = append(itemDue, d)
	}
	if len(items) > 0 && !w.admit(ctx, claimedAt) {
		// Not sent: the claim is given back, to be claimed afresh.
		w.release(itemDue)
		w.giveBack(ctx, itemDue)
		items = nil
	}
	if len(items) > 0 {
		start := time.Now()
		results := w.dest.Forwarder.Send(ctx, items)
		latency := time.Since(start)
		o.Metrics.DeliveryLatency.WithLabelValues(w.dest.Name).Observe(latency.Seconds())
		if len(results) != len(items) {
			results = forwarders.All(len(items), forwarders.Result{Outcome: forwarders.Retry, Reason: "forwarder_result_mismatch", Err: errors.New("forwarder returned a wrong number of results")})
		}
		now = o.Now()
		// The answer's hold (Retry-After, the breaker) is in place before
		// its slot is free: the pass that slot wakes must see it.
		w.health(results, now)
		answered()
		for i, r := range results {
			completions = append(completions, w.outcome(itemDue[i], r, latency, now))
		}
	}
	if w.cluster != nil {
		w.shareHealth(ctx)
	}
	if len(completions) == 0 {
		return
	}
	claimed := make(map[string]*store.Delivery, len(batch))
	for i := range batch {
		claimed[batch[i].Delivery.Key] = &batch[i].Delivery
	}
	for i := range completions {
		completions[i].Claimed = claimed[completions[i].Key]
	}
	if err := w.d.store.Complete(ctx, completions); err != nil {
		// Nothing recorded: the due keys are unchanged, so these deliveries
		// are attempted again (at least once).
		o.Logger.Error("record delivery outcomes", "destination", w.dest.Name, "err", err)
	}
}

// identityWait parks a delivery until the identity store supplies the
// identifier, or skips it once identity_wait has passed since it was queued.
func (w *worker) identityWait(d store.Due, missing string, now time.Time) store.Completion {
	o := &w.d.opts
	deadline := d.Delivery.RetryStart().Add(o.IdentityWait) // a replay waits afresh
	if !now.Before(deadline) {
		o.Metrics.NotSent.WithLabelValues(w.dest.Name, "missing_identifier").Inc()
		o.Metrics.Deliveries.WithLabelValues(w.dest.Name, "skipped").Inc()
		o.Logger.Info("delivery skipped: identifier never arrived", "destination", w.dest.Name, "event", d.Delivery.EventID, "missing", missing)
		return store.Completion{Key: d.Delivery.Key, State: store.StateSkipped, Reason: "missing " + missing}
	}
	return store.Completion{Key: d.Delivery.Key, State: store.StateWaiting, NextAt: deadline, WaitUntil: deadline, Reason: "waiting for " + missing}
}

// outcome turns a forwarder result into a completion.
func (w *worker) outcome(d store.Due, r forwarders.Result, latency time.Duration, now time.Time) store.Completion {
	o := &w.d.opts
	att := &store.Attempt{At: now, Outcome: string(r.Outcome), Status: r.Status, Latency: latency, Request: r.Request, Response: r.Response}
	att.Replay = !d.Delivery.ReplayedAt.IsZero()
	if o.Mask != nil {
		att.Request, att.Response = o.Mask(att.Request), o.Mask(att.Response)
	}
	if r.Err != nil {
		att.Error = r.Err.Error()
	}
	c := store.Completion{Key: d.Delivery.Key, Attempt: att, Reason: r.Reason}
	attempts := d.Delivery.AttemptsSinceReplay() + 1
	label := string(r.Outcome)
	switch r.Outcome {
	case forwarders.Delivered:
		c.State, c.Reason = store.StateDelivered, ""
	case forwarders.Duplicate:
		c.State, c.Reason = store.StateDelivered, "duplicate at destination"
	case forwarders.Skipped:
		c.State, c.Attempt = store.StateSkipped, nil
		o.Metrics.NotSent.WithLabelValues(w.dest.Name, reasonLabel(r.Reason)).Inc()
	case forwarders.Dead:
		c.State = store.StateDead
	case forwarders.Pause:
		// The destination's configuration or credentials are refused: the
		// event is not at fault, so its retry budget is not spent.
		c.State, c.NextAt, c.KeepBudget = store.StateRetrying, now.Add(o.PauseProbe), true
	default: // Retry
		delay := Backoff(attempts, o.BackoffBase, o.BackoffCap, nil)
		if r.RetryAfter > delay {
			delay = r.RetryAfter
		}
		switch {
		case attempts >= w.dest.MaxAttempts:
			c.State, c.Reason = store.StateDead, "max_attempts: "+r.Reason
			label = "dead"
		case w.dest.MaxAge > 0 && now.Add(delay).Sub(d.Delivery.RetryStart()) > w.dest.MaxAge,
			w.dest.EventMaxAge > 0 && now.Add(delay).Sub(d.Event.ReceivedAt) > w.dest.EventMaxAge:
			c.State, c.Reason = store.StateDead, "max_age: "+r.Reason
			label = "dead"
		default:
			c.State, c.NextAt = store.StateRetrying, now.Add(delay)
		}
	}
	o.Metrics.Deliveries.WithLabelValues(w.dest.Name, label).Inc()
	if c.State == store.StateDead {
		o.Logger.Warn("delivery dead", "destination", w.dest.Name, "event", d.Delivery.EventID, "status", r.Status, "reason", c.Reason)
	}
	return c
}

func reasonLabel(reason string) string {
	for i, r := range reason {
		if r == ':' || r == ' ' {
			return reason[:i]
		}
	}
	if reason == "" {
		return "unspecified"
	}
	return reason
}

// health updates the breaker, throttling hold, pause state and windows from
// one request's results.
func (w *worker) health(results []forwarders.Result, now time.Time) {
	o := &w.d.opts
	w.mu.Lock()
	defer w.mu.Unlock()
	ok, transient, paused, throttle := false, false, false, time.Duration(0)
	for _, r := range results {
		switch r.Outcome {
		case forwarders.Delivered, forwarders.Duplicate, forwarders.Dead, forwarders.Skipped:
			ok = true // the destination answered sensibly
		case forwarders.Pause:
			paused = true
			w.pausedWhy = r.Reason
		case forwarders.Retry:
			transient = true
			if r.Throttle || r.Status == 429 {
				throttle = max(throttle, r.RetryAfter, time.Second)
			}
		}
		if r.Err != nil {
			w.lastError, w.lastErrorAt = r.Err.Error(), now
		}
		w.stats.add(now, r.Outcome == forwarders.Delivered || r.Outcome == forwarders.Duplicate)
		w.held.answer(r)
	}
	defer w.held.note(w, now)
	if paused != w.paused {
		w.paused = paused
		v := 0.0
		if paused {
			v = 1
			o.Logger.Error("destination paused: credentials or configuration refused; fix the destination's config (deliveries are kept)", "destination", w.dest.Name, "reason", w.pausedWhy)
			w.holdUntil = now.Add(o.PauseProbe)
		} else {
			o.Logger.Info("destination resumed", "destination", w.dest.Name)
		}
		o.Metrics.Paused.WithLabelValues(w.dest.Name).Set(v)
	} else if paused {
		w.holdUntil = now.Add(o.PauseProbe)
	}
	if throttle > 0 {
		w.holdUntil = maxTime(w.holdUntil, now.Add(throttle))
	}
	switch {
	case ok && !transient:
		if w.circuit != "closed" && w.circuit != "" {
			o.Logger.Info("circuit closed", "destination", w.dest.Name)
		}
		w.failures, w.cooldown, w.circuit = 0, 0, "closed"
		o.Metrics.SetCircuit(w.dest.Name, metrics.CircuitClosed)
	case transient && throttle == 0:
		w.failures++
		if w.circuit == "half-open" || w.failures >= o.BreakerFailures {
			if w.cooldown == 0 {
				w.cooldown = o.BreakerCooldown
			} else if w.circuit == "half-open" {
				w.cooldown = min(w.cooldown*2, o.BreakerMaxCooldown)
			}
			if w.circuit != "open" {
				o.Logger.Warn("circuit open: destination keeps failing", "destination", w.dest.Name, "failures", w.failures, "cooldown", w.cooldown)
			}
			w.circuit = "open"
			w.holdUntil = maxTime(w.holdUntil, now.Add(w.cooldown))
			o.Metrics.SetCircuit(w.dest.Name, metrics.CircuitOpen)
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Health is a destination's live state for the admin view.
type Health struct {
	Name        string    `json:"name"`
	Type        string    `json:"type"`
	Circuit     string    `json:"circuit"`
	Paused      bool      `json:"paused"`
	PausedWhy   string    `json:"paused_reason,omitempty"`
	HoldUntil   time.Time `json:"hold_until,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Success5m   Rate      `json:"success_5m"`
	Success1h   Rate      `json:"success_1h"`
	InFlight    int       `json:"in_flight"`
	// Held is set while the destination's work waits on it (paused or
	// circuit open): why, since when, the next probe and the last answer.
	Held *Held `json:"held,omitempty"`
}

// Health returns every destination's state, in configuration order.
func (d *Dispatcher) Health() []Health {
	now := d.opts.Now()
	out := make([]Health, 0, len(d.order))
	for _, name := range d.order {
		w := d.workers[name]
		w.mu.Lock()
		h := Health{
			Name: name, Type: w.dest.Type, Circuit: w.circuit, Paused: w.paused, PausedWhy: w.pausedWhy,
			LastError: w.lastError, LastErrorAt: w.lastErrorAt, InFlight: len(w.sem),
			Success5m: w.stats.rate(now, 5), Success1h: w.stats.rate(now, 60),
		}
		if w.holdUntil.After(now) {
			h.HoldUntil = w.holdUntil
		}
		if h.Circuit == "" {
			h.Circuit = "closed"
		}
		w.held.fill(&h, w)
		w.mu.Unlock()
		out = append(out, h)
	}
	return out
}

// Forwarder returns a destination's forwarder (admin "send test event").
func (d *Dispatcher) Forwarder(name string) (forwarders.Forwarder, bool) {
	w, ok := d.workers[name]
	if !ok {
		return nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dest.Forwarder, true
}

// Names lists the destinations in configuration order.
func (d *Dispatcher) Names() []string { return append([]string(nil), d.order...) }

// Rate is a success ratio over a window.
type Rate struct {
	OK    int     `json:"ok"`
	Total int     `json:"total"`
	Ratio float64 `json:"ratio"`
}

// window counts outcomes per minute for the last hour.
type window struct {
	minute [60]int64
	ok     [60]int
	total  [60]int
}

func newWindow() *window { return &window{} }

func (w *window) add(now time.Time, ok bool) {
	m := now.Unix() / 60
	i := m % 60
	if w.minute[i] != m {
		w.minute[i], w.ok[i], w.total[i] = m, 0, 0
	}
	w.total[i]++
	if ok {
		w.ok[i]++
	}
}

func (w *window) rate(now time.Time, minutes int) Rate {
	m := now.Unix() / 60
	var r Rate
	for k := int64(0); k < int64(minutes); k++ {
		i := (m - k) % 60
		if w.minute[i] == m-k {
			r.OK += w.ok[i]
			r.Total += w.total[i]
		}
	}
	if r.Total > 0 {
		r.Ratio = float64(r.OK) / float64(r.Total)
	}
	return r
}

// TestEvent builds a sandbox event for the admin "send test event" action.
func TestEvent(now time.Time, dest string) mapping.Event {
	return mapping.Event{
		ID: mapping.EventID("test", dest, now.Format(time.RFC3339Nano)), Type: mapping.SubscriptionStarted,
		Source: "test", Environment: mapping.Sandbox, AppID: "com.example.test", ProductID: "test_product",
		Revenue:    &mapping.Revenue{AmountMicros: 990000, Currency: "USD"},
		OccurredAt: now.UTC(), ReceivedAt: now.UTC(), SourceEventID: "test",
	}
}
