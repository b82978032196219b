package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/play"
	"github.com/postback/postback/store"
)

// GoogleInbox is what the enrichment worker needs from the store.
type GoogleInbox interface {
	Pending(source string, limit int) ([]mapping.Notification, error)
	Enrich(ctx context.Context, source, key string, enriched []byte) (store.IngestResult, error)
}

// PlayAPI is what the enrichment worker needs from the Android Publisher
// API (play.Client). Errors wrap play.ErrNotFound, play.ErrTemporary or
// play.ErrRejected.
type PlayAPI interface {
	Subscription(ctx context.Context, pkg, token string) (json.RawMessage, error)
	Order(ctx context.Context, pkg, orderID string) (json.RawMessage, error)
	Product(ctx context.Context, pkg, productID, token string) (json.RawMessage, error)
}

// GoogleEnricherOptions tune a GoogleEnricher; zero values get defaults.
type GoogleEnricherOptions struct {
	Logger      *slog.Logger
	Metrics     *metrics.Metrics
	Now         func() time.Time
	Interval    time.Duration // poll interval besides nudges; default 5s
	BaseDelay   time.Duration // first retry delay; default 2s
	MaxDelay    time.Duration // retry delay cap; default 10m
	Batch       int           // items read per pass; default 500
	Concurrency int           // parallel items (workers); default 4
	// ItemTimeout bounds all the API calls of one item; default 30s. A
	// call that hangs costs its item one attempt and holds one worker
	// until then, never the others.
	ItemTimeout time.Duration
	// OrderAttempts bounds the attempts of an item whose purchase was read
	// but whose order (the amount) was not (failures to read the purchase
	// itself do not count: without it there is no event); default 8. After
	// that the
	// event is made without revenue and with revenue_unknown=true, counted
	// in postback_revenue_unknown_total and logged.
	OrderAttempts int
}

// GoogleEnricher completes Google notifications stored as "enriching": it
// reads the purchase from the Android Publisher API and hands the answer to
// the store, which maps it in one transaction with the subscription state.
//
// A failed look-up is retried with exponential backoff and jitter (honouring
// Retry-After); the item stays in the inbox the whole time, so an outage
// delays its events and never loses them, and because the store enriches an
// item only once and event ids are deterministic, a retry never duplicates
// them. A 404 or 410 for the purchase itself is final: the item is recorded
// as ignored. Backoff state is in memory: after a restart every waiting
// item is tried once at once.
//
// Run keeps Concurrency workers busy, each on one item with its own
// deadline (ItemTimeout): an item whose call hangs never holds the others,
// and new items start as soon as a worker is free. An order look-up that
// keeps failing is retried OrderAttempts times; then the event is made with
// revenue_unknown=true instead of waiting forever or losing the amount
// silently.
type GoogleEnricher struct {
	store GoogleInbox
	api   PlayAPI
	o     GoogleEnricherOptions
	wake  chan struct{}

	mu       sync.Mutex
	retry    map[string]*enrichRetry
	inflight map[string]bool
}

type enrichRetry struct {
	attempts  int
	secondary int // attempts that failed on a secondary resource (the order)
	next      time.Time
}

// secondaryError marks a failure to read a secondary resource (order,
// previous order, subscription or product of a voided purchase): the
// purchase itself was read, so these failures are bounded by OrderAttempts.
type secondaryError struct{ err error }

func (e *secondaryError) Error() string { return e.err.Error() }
func (e *secondaryError) Unwrap() error { return e.err }

// NewGoogleEnricher builds an enricher.
func NewGoogleEnricher(inbox GoogleInbox, api PlayAPI, o GoogleEnricherOptions) *GoogleEnricher {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = 2 * time.Second
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 10 * time.Minute
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.ItemTimeout <= 0 {
		o.ItemTimeout = 30 * time.Second
	}
	if o.OrderAttempts <= 0 {
		o.OrderAttempts = 8
	}
	return &GoogleEnricher{store: inbox, api: api, o: o, wake: make(chan struct{}, 1), retry: map[string]*enrichRetry{}, inflight: map[string]bool{}}
}

// Nudge wakes the worker after a new item was stored. It never blocks.
func (e *GoogleEnricher) Nudge() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run enriches until ctx is done. Each due item goes to a free worker as
// soon as there is one; a worker that finishes (or fails) wakes the loop,
// so a slow item never delays the items behind it.
func (e *GoogleEnricher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, e.o.Concurrency)
	for {
		wait := e.o.Interval
		if next := e.dispatch(ctx, slots, &wg); !next.IsZero() {
			if d := next.Sub(e.o.Now()); d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-e.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// dispatch starts a worker for each due item while a worker slot is free
// and returns the earliest retry time of the items left waiting.
func (e *GoogleEnricher) dispatch(ctx context.Context, slots chan struct{}, wg *sync.WaitGroup) time.Time {
	due, r := e.due()
	for _, n := range due {
		select {
		case slots <- struct{}{}:
		default:
			return r.NextTry // every worker is busy; the next to finish wakes Run
		}
		e.mu.Lock()
		e.inflight[n.Key] = true
		e.mu.Unlock()
		wg.Add(1)
		go func(n *mapping.Notification) {
			defer wg.Done()
			e.enrichOne(ctx, n)
			e.mu.Lock()
			delete(e.inflight, n.Key)
			e.mu.Unlock()
			<-slots
			e.Nudge()
		}(n)
	}
	return r.NextTry
}

// PassResult reports one pass over the waiting items.
type PassResult struct {
	Pending  int       // items waiting for enrichment at the start
	Enriched int       // items completed (mapped or recorded as ignored)
	Failed   int       // look-ups that failed and will be retried
	NextTry  time.Time // earliest retry of an item still waiting; zero if none
}

// due reads the waiting items and returns those due now and not in flight;
// the result carries Pending and the earliest later retry.
func (e *GoogleEnricher) due() ([]*mapping.Notification, PassResult) {
	var r PassResult
	items, err := e.store.Pending(mapping.SourceGoogle, e.o.Batch)
	if err != nil {
		e.o.Logger.Error("google enrichment: reading pending items failed", "err", err)
		r.NextTry = e.o.Now().Add(e.o.BaseDelay)
		return nil, r
	}
	r.Pending = len(items)
	now := e.o.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(items) < e.o.Batch {
		// Forget backoff of items that are no longer waiting.
		live := make(map[string]bool, len(items))
		for i := range items {
			live[items[i].Key] = true
		}
		for k := range e.retry {
			if !live[k] {
				delete(e.retry, k)
			}
		}
	}
	var due []*mapping.Notification
	for i := range items {
		if e.inflight[items[i].Key] {
			continue
		}
		if rt := e.retry[items[i].Key]; rt != nil && rt.next.After(now) {
			if r.NextTry.IsZero() || rt.next.Before(r.NextTry) {
				r.NextTry = rt.next
			}
			continue
		}
		due = append(due, &items[i])
	}
	return due, r
}

// Pass tries every waiting item that is due once and waits for them all
// (Drain and tests; Run does not wait for a pass).
func (e *GoogleEnricher) Pass(ctx context.Context) PassResult {
	due, r := e.due()
	var wg sync.WaitGroup
	var mu sync.Mutex
	sem := make(chan struct{}, e.o.Concurrency)
	for _, n := range due {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(n *mapping.Notification) {
			defer func() { <-sem; wg.Done() }()
			next, ok := e.enrichOne(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				r.Enriched++
				return
			}
			r.Failed++
			if r.NextTry.IsZero() || next.Before(r.NextTry) {
				r.NextTry = next
			}
		}(n)
	}
	wg.Wait()
	return r
}

// Drain runs passes until nothing waits for enrichment or ctx is done; it
// is what a one-shot command (reconcile) uses instead of Run.
func (e *GoogleEnricher) Drain(ctx context.Context) error {
	for {
		r := e.Pass(ctx)
		if r.Pending == 0 || r.Pending == r.Enriched {
			return nil
		}
		wait := time.Second
		if !r.NextTry.IsZero() {
			wait = max(r.NextTry.Sub(e.o.Now()), time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// enrichOne fetches and stores one item. It returns false and the next try
// time when the item stays waiting.
func (e *GoogleEnricher) enrichOne(ctx context.Context, n *mapping.Notification) (time.Time, bool) {
	e.mu.Lock()
	attempt := 1
	if rt := e.retry[n.Key]; rt != nil {
		attempt = rt.secondary + 1
	}
	e.mu.Unlock()
	ictx, cancel := context.WithTimeout(ctx, e.o.ItemTimeout)
	en, err := e.fetch(ictx, n, attempt >= e.o.OrderAttempts)
	cancel()
	if err == nil {
		var b []byte
		if b, err = json.Marshal(en); err == nil {
			b = mapping.ScrubPII(b) // an obfuscated account id may be an email
			var res store.IngestResult
			res, err = e.store.Enrich(ctx, mapping.SourceGoogle, n.Key, b)
			if err == nil || errors.Is(err, store.ErrNotFound) {
				e.mu.Lock()
				delete(e.retry, n.Key)
				e.mu.Unlock()
				if e.o.Metrics != nil && err == nil && !res.Duplicate {
					e.o.Metrics.CountEvents(res.Events)
				}
				if err == nil && !res.Duplicate {
					e.revenueUnknown(n, en, res.Events)
				}
				e.o.Logger.Info("google notification enriched", "key", n.Key, "type", n.Type, "status", res.Status, "reason", res.Reason, "events", len(res.Events))
				return time.Time{}, true
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rt := e.retry[n.Key]
	if rt == nil {
		rt = &enrichRetry{}
		e.retry[n.Key] = rt
	}
	rt.attempts++
	var se *secondaryError
	if errors.As(err, &se) {
		rt.secondary++
	}
	delay := e.backoff(rt.attempts)
	var pe *play.Error
	if errors.As(err, &pe) && pe.RetryAfter > delay {
		delay = min(pe.RetryAfter, e.o.MaxDelay)
	}
	rt.next = e.o.Now().Add(delay)
	level := slog.LevelWarn
	if errors.Is(err, play.ErrRejected) {
		level = slog.LevelError // credentials or API access: an operator must act
	}
	e.o.Logger.Log(ctx, level, "google enrichment failed; will retry", "key", n.Key, "type", n.Type, "attempt", rt.attempts, "retry_in", delay.Round(time.Millisecond), "err", err)
	return rt.next, false
}

// revenueUnknown counts and logs the events made without their amount
// because the order could not be read.
func (e *GoogleEnricher) revenueUnknown(n *mapping.Notification, en *mapping.GoogleEnrichment, events []mapping.Event) {
	for _, ev := range events {
		why := ev.Attributes["revenue_unknown_reason"]
		if ev.Attributes["revenue_unknown"] != "true" {
			continue
		}
		if e.o.Metrics != nil {
			e.o.Metrics.RevenueUnknown.WithLabelValues(mapping.SourceGoogle, why).Inc()
		}
		e.o.Logger.Warn("google event made without revenue: the order could not be read", "key", n.Key, "type", n.Type,
			"event_id", ev.ID, "event_type", ev.Type, "reason", why, "order_error", en.OrderError)
	}
}

// backoff is BaseDelay doubled per attempt up to MaxDelay, with jitter in
// [d/2, d).
func (e *GoogleEnricher) backoff(attempt int) time.Duration {
	d := e.o.BaseDelay
	for i := 1; i < attempt && d < e.o.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, e.o.MaxDelay)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}

// subscriptionOrderFields is what the enricher reads from a subscription to
// know which order to fetch.
type subscriptionOrderFields struct {
	LineItems []struct {
		ProductID               string `json:"productId"`
		LatestSuccessfulOrderID string `json:"latestSuccessfulOrderId"`
	} `json:"lineItems"`
}

// ordersFor lists the subscription types whose event carries an amount.
var ordersFor = map[string]bool{
	"SUBSCRIPTION_PURCHASED": true, "SUBSCRIPTION_RENEWED": true,
	"SUBSCRIPTION_RECOVERED": true, "SUBSCRIPTION_REVOKED": true,
}

// orderSlack is how much later than its notification's event time an
// order may have been created and still be the order the notification
// reports (Google creates the order when it charges, within seconds of the
// event).
const orderSlack = 2 * time.Minute

// maxOrderWalk bounds how many earlier orders orderAt reads.
const maxOrderWalk = 24

// eventTime is the notification's eventTimeMillis, or zero.
func eventTime(g *mapping.GoogleNotification) time.Time {
	ms, err := strconv.ParseInt(string(g.EventTimeMillis), 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// orderAt returns the order a notification of time at reports. The
// subscription names its latest successful order; read late (after an
// outage, or behind a backlog) that may be a later renewal than this
// notification's, and both notifications would then report the later
// order: one charge counted, the other lost. Renewal order ids are a chain
// (GPA.x, GPA.x..0, GPA.x..1, ...), so it walks back to the order created
// no later than at (plus orderSlack).
func (e *GoogleEnricher) orderAt(ctx context.Context, pkg, id string, raw json.RawMessage, at time.Time) (string, json.RawMessage, error) {
	if at.IsZero() {
		return id, raw, nil
	}
	for range maxOrderWalk {
		var o struct {
			CreateTime string `json:"createTime"`
		}
		if json.Unmarshal(raw, &o) != nil {
			return id, raw, nil
		}
		created, err := time.Parse(time.RFC3339Nano, o.CreateTime)
		if err != nil || !created.After(at.Add(orderSlack)) {
			return id, raw, nil
		}
		prev := mapping.PreviousGoogleOrderID(id)
		if prev == "" {
			return id, raw, nil
		}
		praw, err := e.api.Order(ctx, pkg, prev)
		if errors.Is(err, play.ErrNotFound) {
			return id, raw, nil
		}
		if err != nil {
			return "", nil, err
		}
		id, raw = prev, praw
	}
	return id, raw, nil
}

// fetch reads what the mapping needs for one notification. On the last
// attempt (lastChance) a secondary resource that still cannot be read is
// recorded as missing instead of failing the item again; for the order
// that is revenue_unknown.
func (e *GoogleEnricher) fetch(ctx context.Context, n *mapping.Notification, lastChance bool) (*mapping.GoogleEnrichment, error) {
	en := &mapping.GoogleEnrichment{}
	g, err := mapping.ParseGoogleNotification(n.Body)
	if err != nil {
		return en, nil // nothing to fetch; the mapping records it as ignored
	}
	pkg := g.PackageName
	// secondary fetches a resource whose absence does not void the event.
	secondary := func(what string, f func() (json.RawMessage, error)) (json.RawMessage, error) {
		raw, err := f()
		switch {
		case err == nil:
			return raw, nil
		case errors.Is(err, play.ErrNotFound):
			en.Missing = append(en.Missing, what)
			if what == "order" {
				en.RevenueUnknown = mapping.GoogleOrderNotFound
			}
			return nil, nil
		case lastChance:
			en.Missing = append(en.Missing, what)
			if what == "order" {
				en.RevenueUnknown, en.OrderError = mapping.GoogleOrderUnavailable, err.Error()
			}
			return nil, nil
		}
		return nil, &secondaryError{err}
	}
	switch g.Kind() {
	case mapping.GoogleKindSubscription:
		token := g.Subscription.PurchaseToken
		raw, err := e.api.Subscription(ctx, pkg, token)
		if errors.Is(err, play.ErrNotFound) {
			en.NotFound = err.Error()
			return en, nil
		}
		if err != nil {
			return nil, err
		}
		en.Subscription = raw
		if !ordersFor[g.TypeName()] {
			return en, nil
		}
		var sf subscriptionOrderFields
		if err := json.Unmarshal(raw, &sf); err != nil {
			return en, nil // the mapping reports the malformed answer
		}
		orderID := ""
		for _, li := range sf.LineItems {
			if orderID == "" || li.ProductID == string(g.Subscription.SubscriptionID) {
				orderID = li.LatestSuccessfulOrderID
			}
		}
		if orderID == "" {
			return en, nil
		}
		at := eventTime(g)
		if en.Order, err = secondary("order", func() (json.RawMessage, error) {
			raw, err := e.api.Order(ctx, pkg, orderID)
			if err != nil {
				return nil, err
			}
			orderID, raw, err = e.orderAt(ctx, pkg, orderID, raw, at)
			return raw, err
		}); err != nil {
			return nil, err
		}
		if prev := mapping.PreviousGoogleOrderID(orderID); prev != "" && (g.TypeName() == "SUBSCRIPTION_RENEWED" || g.TypeName() == "SUBSCRIPTION_RECOVERED") {
			if en.PreviousOrder, err = secondary("previous_order", func() (json.RawMessage, error) { return e.api.Order(ctx, pkg, prev) }); err != nil {
				return nil, err
			}
		}
	case mapping.GoogleKindOneTime:
		raw, err := e.api.Product(ctx, pkg, string(g.OneTimeProduct.SKU), g.OneTimeProduct.PurchaseToken)
		if errors.Is(err, play.ErrNotFound) {
			en.NotFound = err.Error()
			return en, nil
		}
		if err != nil {
			return nil, err
		}
		en.Product = raw
		var p struct {
			OrderID string `json:"orderId"`
		}
		if json.Unmarshal(raw, &p) == nil && p.OrderID != "" {
			if en.Order, err = secondary("order", func() (json.RawMessage, error) { return e.api.Order(ctx, pkg, p.OrderID) }); err != nil {
				return nil, err
			}
		}
	case mapping.GoogleKindVoided:
		v := g.Voided
		if en.Order, err = secondary("order", func() (json.RawMessage, error) { return e.api.Order(ctx, pkg, v.OrderID) }); err != nil {
			return nil, err
		}
		var o struct {
			LineItems []struct {
				ProductID           string    `json:"productId"`
				SubscriptionDetails *struct{} `json:"subscriptionDetails"`
			} `json:"lineItems"`
		}
		_ = json.Unmarshal(en.Order, &o)
		isSub, productID := int64(v.ProductType) == 1, ""
		for _, li := range o.LineItems {
			isSub = isSub || li.SubscriptionDetails != nil
			if productID == "" {
				productID = li.ProductID
			}
		}
		switch {
		case isSub:
			en.Subscription, err = secondary("subscription", func() (json.RawMessage, error) { return e.api.Subscription(ctx, pkg, v.PurchaseToken) })
		case productID != "":
			en.Product, err = secondary("product", func() (json.RawMessage, error) { return e.api.Product(ctx, pkg, productID, v.PurchaseToken) })
		}
		if err != nil {
			return nil, err
		}
	}
	return en, nil
}
