package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/config"
	"github.com/postback/postback/console"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/play"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// mountAdmin registers the admin API under /admin/api/ and the web console
// under /admin/ when admin.token is set. Every API route requires
// `Authorization: Bearer <admin.token>`; the console has its own login.
func (g *Gateway) mountAdmin() error {
	if g.Config.Admin.Token == "" {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &admin{g: g, jobs: map[string]*replayJob{}, ctx: ctx}
	api := g.Admin.Group("/admin/api", a.auth)
	api.GET("/events", a.listEvents)
	api.GET("/events/:id", a.getEvent)
	api.GET("/deliveries", a.listDeliveries)
	api.GET("/deliveries/:key", a.getDelivery)
	api.POST("/deliveries/replay", a.replayOne)
	api.POST("/replay", a.replayMatching)
	api.GET("/replay", a.replayJobs)
	api.GET("/replay/:id", a.replayStatus)
	api.POST("/reprocess", a.reprocess)
	api.POST("/google/reconcile", a.reconcileGoogle)
	api.GET("/destinations", a.destinations)
	api.POST("/destinations/:name/test", a.testEvent)
	a.mountStore(api)
	api.POST("/destinations/:name/resume", a.resume)
	api.POST("/reload", a.reloadConfig)
	api.GET("/log", a.deliveryLog)
	api.GET("/dead/groups", a.deadGroups)
	api.Any("/*", func(c echo.Context) error {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no admin endpoint %s %s", c.Request().Method, c.Request().URL.Path)
	})
	con, err := console.New(consoleBackend{a}, console.Options{Token: g.Config.Admin.Token, Now: g.now, Logger: g.Logger, Live: g.opts.ConsoleLive})
	if err != nil {
		cancel()
		return err
	}
	g.Admin.Any(console.Prefix, echo.WrapHandler(con))
	g.Admin.Any(console.Prefix+"/*", g.loginThrottle(echo.WrapHandler(con)))
	// Bulk replays stop with the gateway, before the store closes.
	g.AddWorker(func(wctx context.Context) {
		<-wctx.Done()
		cancel()
		a.running.Wait()
	})
	g.adminAPI = a
	g.Logger.Info("admin API and console enabled", "api", "/admin/api/", "console", "/admin/")
	return nil
}

type admin struct {
	g       *Gateway
	ctx     context.Context // ends at shutdown; bulk replays run under it
	running sync.WaitGroup  // bulk replays in progress
	mu      sync.Mutex
	jobs    map[string]*replayJob
	order   []string // job ids, oldest first
	seq     int
}

// maxJobs bounds the finished replay jobs kept for GET /replay.
const maxJobs = 50

// auth checks the bearer token with the /v1 API's parser, comparing
// SHA-256 digests in constant time (the token's length does not show). An
// address that keeps failing is held back (429) before its guess is even
// checked.
func (a *admin) auth(next echo.HandlerFunc) echo.HandlerFunc {
	want := webhooks.NewTokenSet(a.g.Config.Admin.Token)
	return func(c echo.Context) error {
		addr := c.RealIP()
		if wait, ok := a.g.throttle.Allow("admin", addr); !ok {
			return webhooks.Throttled(c, wait)
		}
		got, ok := webhooks.BearerToken(c.Request().Header.Get("Authorization"))
		if !ok || !want.Match(got) {
			a.g.throttle.Fail("admin", addr)
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="postback-admin"`)
			return webhooks.Errorf(http.StatusUnauthorized, webhooks.CodeUnauthorized, "admin token required (Authorization: Bearer <admin.token>)")
		}
		a.g.throttle.Succeed(addr)
		return next(c)
	}
}

// loginThrottle holds back addresses that keep failing the console's login
// form (the admin token again): the console answers a wrong token 401 and a
// right one with a redirect.
func (g *Gateway) loginThrottle(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method != http.MethodPost || r.URL.Path != console.Prefix+"/login" {
			return h(c)
		}
		addr := c.RealIP()
		if wait, ok := g.throttle.Allow("console", addr); !ok {
			webhooks.SetRetryAfter(c, wait)
			return c.String(http.StatusTooManyRequests, "Too many failed logins from this address: try again later.\n")
		}
		err := h(c)
		switch c.Response().Status {
		case http.StatusUnauthorized:
			g.throttle.Fail("console", addr)
		case http.StatusSeeOther, http.StatusFound:
			g.throttle.Succeed(addr)
		}
		return err
	}
}

func badParam(name, msg string) error {
	return webhooks.Errorf(http.StatusBadRequest, "invalid", "%s: %s", name, msg)
}

func (a *admin) parseTime(c echo.Context, name string) (time.Time, error) {
	v := c.QueryParam(name)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := config.ParseDuration(v); err == nil {
		return a.g.now().Add(-d), nil
	}
	return time.Time{}, badParam(name, "use RFC 3339 (2026-11-30T03:00:00Z) or a duration ago (24h, 30d)")
}

func (a *admin) listEvents(c echo.Context) error {
	f := store.EventFilter{
		Source: c.QueryParam("source"), Type: c.QueryParam("type"), AppID: c.QueryParam("app"),
		Environment: c.QueryParam("environment"), AppUserID: c.QueryParam("user"),
		SubscriptionID: c.QueryParam("subscription"), Cursor: c.QueryParam("cursor"),
	}
	var err error
	if f.Since, err = a.parseTime(c, "since"); err != nil {
		return err
	}
	if f.Until, err = a.parseTime(c, "until"); err != nil {
		return err
	}
	if v := c.QueryParam("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 500 {
			return badParam("limit", "a number from 1 to 500")
		}
	}
	if f.Type != "" && !mapping.Type(f.Type).Valid() {
		return badParam("type", "unknown event type")
	}
	p, err := a.g.Store.Events(f)
	if err != nil {
		return err
	}
	if p.Events == nil {
		p.Events = []mapping.Event{}
	}
	st, err := a.eventStatuses(p.Events)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"events": p.Events, "next": p.Next, "deliveries": st})
}

// DeliveryView is a delivery with its attempt log.
type DeliveryView struct {
	store.Delivery
	NextAt   *time.Time      `json:"next_at,omitempty"`
	Attempts []store.Attempt `json:"attempt_log"`
}

// EventView is an event with its source notification and deliveries.
type EventView struct {
	Event        mapping.Event   `json:"event"`
	Notification json.RawMessage `json:"notification,omitempty"`
	Deliveries   []DeliveryView  `json:"deliveries"`
}

func (a *admin) getEvent(c echo.Context) error {
	e, err := a.g.Store.Event(c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no event %s", c.Param("id"))
	}
	if err != nil {
		return err
	}
	v := EventView{Event: e, Deliveries: []DeliveryView{}}
	if n, err := a.g.Store.NotificationOf(&e); err == nil {
		v.Notification = redactNotification(n)
	}
	ds, err := a.g.Store.EventDeliveries(e.ID)
	if err != nil {
		return err
	}
	for _, d := range ds {
		dv, err := a.view(d)
		if err != nil {
			return err
		}
		v.Deliveries = append(v.Deliveries, dv)
	}
	return c.JSON(http.StatusOK, v)
}

func (a *admin) view(d store.Delivery) (DeliveryView, error) {
	atts, err := a.g.Store.Attempts(d.Key)
	if err != nil {
		return DeliveryView{}, err
	}
	if atts == nil {
		atts = []store.Attempt{}
	}
	dv := DeliveryView{Delivery: d, Attempts: atts}
	if !store.Final(d.State) && d.NextAtMs > 0 {
		t := d.NextAt().UTC()
		dv.NextAt = &t
	}
	return dv, nil
}

// redactNotification renders an inbox item for display: the body is shown
// as JSON with personal data (names, addresses, IPs) masked; emails and
// phones are already hashed on disk. Secrets never reach the inbox: sources
// store the verified body, not the signature headers.
func redactNotification(n *mapping.Notification) json.RawMessage {
	type view struct {
		Source      string            `json:"source"`
		Key         string            `json:"key"`
		Type        string            `json:"type,omitempty"`
		AppID       string            `json:"app_id,omitempty"`
		Environment string            `json:"environment,omitempty"`
		ReceivedAt  time.Time         `json:"received_at"`
		Status      string            `json:"status"`
		Reason      string            `json:"reason,omitempty"`
		EventIDs    []string          `json:"event_ids,omitempty"`
		Meta        map[string]string `json:"meta,omitempty"`
		Body        any               `json:"body,omitempty"`
		Enriched    any               `json:"enriched,omitempty"`
	}
	v := view{Source: n.Source, Key: n.Key, Type: n.Type, AppID: n.AppID, Environment: n.Environment,
		ReceivedAt: n.ReceivedAt, Status: n.Status, Reason: n.Reason, EventIDs: n.EventIDs, Meta: n.Meta}
	v.Body = redactPersonal(n.Body)
	if n.Enriched != nil {
		v.Enriched = redactPersonal(n.Enriched)
	}
	out, _ := json.Marshal(v)
	return out
}

func redactPersonal(body []byte) any {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "[not JSON: " + strconv.Itoa(len(body)) + " bytes]"
	}
	var walk func(v any, key string) any
	walk = func(v any, key string) any {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				x[k] = walk(c, strings.ToLower(k))
			}
		case []any:
			for i, c := range x {
				x[i] = walk(c, key)
			}
		case string:
			if x != "" && personalKey(key) {
				return "[redacted]"
			}
			// Emails and phones are hashed before storage; one stored by an
			// older version is masked here all the same.
			if m := mapping.MaskPII(x); m != x {
				return m
			}
		}
		return v
	}
	return walk(v, "")
}

func personalKey(k string) bool {
	for _, p := range []string{"name", "address", "street", "city", "zip", "postal", "ip", "browser_ip", "client_details", "line1", "line2"} {
		if k == p || strings.HasSuffix(k, "_"+p) || strings.HasPrefix(k, p) && p != "ip" && p != "name" {
			return true
		}
	}
	return k == "first_name" || k == "last_name" || k == "company"
}

func (a *admin) deliveryFilter(c echo.Context) (store.DeliveryFilter, error) {
	f := store.DeliveryFilter{Destination: c.QueryParam("destination"), Reason: c.QueryParam("reason")}
	if s := c.QueryParam("state"); s != "" {
		for _, st := range strings.Split(s, ",") {
			switch st {
			case store.StatePending, store.StateRetrying, store.StateWaiting, store.StateDelivered, store.StateDead, store.StateSkipped:
				f.States = append(f.States, st)
			default:
				return f, badParam("state", "one of pending, retrying, waiting, delivered, dead, skipped")
			}
		}
	}
	var err error
	if f.Since, err = a.parseTime(c, "since"); err != nil {
		return f, err
	}
	if f.Until, err = a.parseTime(c, "until"); err != nil {
		return f, err
	}
	if v := c.QueryParam("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return f, badParam("limit", "a number from 1 to 1000")
		}
	}
	return f, nil
}

func (a *admin) listDeliveries(c echo.Context) error {
	f, err := a.deliveryFilter(c)
	if err != nil {
		return err
	}
	if f.Limit == 0 {
		f.Limit = 100
	}
	ds, err := a.g.Store.Deliveries(f)
	if err != nil {
		return err
	}
	// The store stops at whole events; the limit is on deliveries.
	if len(ds) > f.Limit {
		ds = ds[:f.Limit]
	}
	out := make([]DeliveryView, 0, len(ds))
	for _, d := range ds {
		dv := DeliveryView{Delivery: d}
		if !store.Final(d.State) && d.NextAtMs > 0 {
			t := d.NextAt().UTC()
			dv.NextAt = &t
		}
		out = append(out, dv)
	}
	return c.JSON(http.StatusOK, map[string]any{"deliveries": out})
}

func (a *admin) replayOne(c echo.Context) error {
	var req struct {
		Key     string `json:"key"`
		Confirm bool   `json:"confirm"`
	}
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return badParam("key", "the delivery key (<event id>|<destination>) is required")
	}
	d, err := a.replayChecked(c.Request().Context(), req.Key, req.Confirm)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no delivery %s", req.Key)
	case errors.Is(err, console.ErrConfirm):
		return webhooks.Errorf(http.StatusConflict, "confirm", "%v; send {\"key\": ..., \"confirm\": true} to re-send it", err)
	case errors.Is(err, console.ErrNoReplay):
		return webhooks.Errorf(http.StatusConflict, "no_replay", "%v", err)
	case err != nil:
		return err
	}
	return c.JSON(http.StatusAccepted, d)
}

// replayChecked replays one delivery when its state allows: a delivered
// one only when confirmed, never one that can only be skipped again or is
// queued already.
func (a *admin) replayChecked(ctx context.Context, key string, confirm bool) (store.Delivery, error) {
	d, err := a.g.Store.Delivery(key)
	if err != nil {
		return d, err
	}
	switch offer, why := store.ReplayOffer(&d); {
	case offer == store.OfferNone:
		return d, fmt.Errorf("%w: %s", console.ErrNoReplay, why)
	case offer == store.OfferConfirm && !confirm:
		return d, fmt.Errorf("%w: %s", console.ErrConfirm, why)
	}
	return a.g.Store.Replay(ctx, key)
}

// replayJob tracks a bulk replay; its fields are guarded by mu.
type replayJob struct {
	mu   sync.Mutex
	view console.ReplayJob
}

func (j *replayJob) snapshot() console.ReplayJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.view
}

// describe renders a delivery filter for the job list.
func describe(f store.DeliveryFilter) string {
	var parts []string
	if f.Destination != "" {
		parts = append(parts, "destination="+f.Destination)
	}
	parts = append(parts, "state="+strings.Join(f.States, ","))
	if f.Reason != "" {
		parts = append(parts, "reason="+f.Reason)
	}
	if !f.Since.IsZero() {
		parts = append(parts, "since="+f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		parts = append(parts, "until="+f.Until.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, " ")
}

// defaultReplayRate caps bulk replays so they never starve live traffic.
const defaultReplayRate = 50.0

// replaySelection lists the keys a bulk replay of f re-sends: dead
// deliveries and skipped ones a replay may change, and delivered ones
// only when confirmDelivered (a destination without deduplication counts
// them twice). It also counts the delivered ones it held back and those
// no replay is offered for.
func (a *admin) replaySelection(f store.DeliveryFilter, confirmDelivered bool) (keys []string, heldBack, excluded int, err error) {
	f.Limit = 1 << 30
	// reason=<text> matches a substring of the reason or last error;
	// reason==<text> the reason exactly (a dead-letter group).
	exact, isExact := strings.CutPrefix(f.Reason, "=")
	if isExact {
		f.Reason = exact
	}
	ds, err := a.g.Store.Deliveries(f)
	if err != nil {
		return nil, 0, 0, err
	}
	for i := range ds {
		if isExact && ds[i].Reason != exact {
			continue
		}
		switch offer, _ := store.ReplayOffer(&ds[i]); offer {
		case store.OfferReplay:
			keys = append(keys, ds[i].Key)
		case store.OfferConfirm:
			if confirmDelivered {
				keys = append(keys, ds[i].Key)
			} else {
				heldBack++
			}
		default:
			excluded++
		}
	}
	return keys, heldBack, excluded, nil
}

// followFor bounds how long a bulk replay follows its deliveries.
var followFor = 30 * time.Minute

// startReplay counts (dryRun) or starts replaying every delivery matching
// f that a replay is offered for, at perSecond. The real run continues in
// the background: it queues the deliveries, then follows them until each
// is final (or followFor passes) and counts the outcome by state; its
// progress is the returned job's, read with GET /replay/{id}.
func (a *admin) startReplay(ctx context.Context, f store.DeliveryFilter, perSecond float64, dryRun, confirmDelivered bool) (console.ReplayJob, error) {
	if len(f.States) == 0 {
		f.States = []string{store.StateDead}
	}
	keys, heldBack, excluded, err := a.replaySelection(f, confirmDelivered)
	if err != nil {
		return console.ReplayJob{}, err
	}
	view := console.ReplayJob{Total: len(keys), Started: a.g.now().UTC(), Filter: describe(f), HeldBack: heldBack, Excluded: excluded}
	if dryRun {
		view.DryRun, view.Finished = true, true
		return view, nil
	}
	if heldBack > 0 {
		return view, fmt.Errorf("%w: %d of the matching deliveries were delivered already: a destination without deduplication counts them twice", console.ErrConfirm, heldBack)
	}
	a.mu.Lock()
	a.seq++
	view.ID = strconv.Itoa(a.seq)
	job := &replayJob{view: view}
	a.jobs[job.view.ID] = job
	a.order = append(a.order, job.view.ID)
	for len(a.order) > maxJobs {
		delete(a.jobs, a.order[0])
		a.order = a.order[1:]
	}
	a.running.Add(1)
	a.mu.Unlock()
	snap := job.snapshot()
	go func() {
		defer a.running.Done()
		err := a.replayKeys(a.ctx, keys, perSecond, func(done int) {
			job.mu.Lock()
			job.view.Done = done
			job.mu.Unlock()
		})
		job.mu.Lock()
		job.view.Finished = true
		if err != nil {
			job.view.Error = err.Error()
			a.g.Logger.Error("bulk replay stopped", "job", job.view.ID, "done", job.view.Done, "err", err)
			job.mu.Unlock()
			return
		}
		job.view.Done, job.view.Following = job.view.Total, true
		job.mu.Unlock()
		a.g.Logger.Info("bulk replay queued; following its deliveries", "job", job.view.ID, "deliveries", len(keys))
		out := a.follow(a.ctx, keys, func(m map[string]int) {
			job.mu.Lock()
			job.view.Outcome = m
			job.mu.Unlock()
		})
		job.mu.Lock()
		job.view.Following = false
		job.view.Outcome = out
		job.mu.Unlock()
		a.g.Logger.Info("bulk replay finished", "job", job.view.ID, "deliveries", len(keys), "outcome", out)
	}()
	return snap, nil
}

// replayKeys replays keys at most perSecond per second.
func (a *admin) replayKeys(ctx context.Context, keys []string, perSecond float64, progress func(done int)) error {
	var tick *time.Ticker
	if perSecond > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / perSecond))
		defer tick.Stop()
	}
	for i, k := range keys {
		if tick != nil && i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if _, err := a.g.Store.Replay(ctx, k); err != nil {
			return err
		}
		progress(i + 1)
	}
	return nil
}

// follow polls the replayed deliveries until each is final, reporting the
// counts by state (unfinished ones under their current state) as they
// change, and returns the last counts.
func (a *admin) follow(ctx context.Context, keys []string, report func(map[string]int)) map[string]int {
	final := map[string]string{}
	deadline := time.Now().Add(followFor)
	every := 200 * time.Millisecond
	for {
		counts := map[string]int{}
		for _, k := range keys {
			if st, ok := final[k]; ok {
				counts[st]++
				continue
			}
			d, err := a.g.Store.Delivery(k)
			if err != nil {
				counts["gone"]++
				final[k] = "gone"
				continue
			}
			counts[d.State]++
			if store.Final(d.State) {
				final[k] = d.State
			}
		}
		report(counts)
		if len(final) == len(keys) || time.Now().After(deadline) {
			return counts
		}
		select {
		case <-ctx.Done():
			return counts
		case <-time.After(every):
		}
		every = min(every*2, 5*time.Second)
	}
}

// replayMatching replays every final delivery matching the filter (query
// parameters as for GET /deliveries; state defaults to dead) at
// rate_per_second (default 50), or with dry_run=true only counts. The real
// run is asynchronous: it answers 202 with a job whose progress GET
// /replay/{id} reports.
func (a *admin) replayMatching(c echo.Context) error {
	f, err := a.deliveryFilter(c)
	if err != nil {
		return err
	}
	rate := defaultReplayRate
	if v := c.QueryParam("rate_per_second"); v != "" {
		if rate, err = strconv.ParseFloat(v, 64); err != nil || rate <= 0 || rate > 10000 {
			return badParam("rate_per_second", "a number above 0 and at most 10000")
		}
	}
	dry, confirm := false, false
	if v := c.QueryParam("dry_run"); v != "" {
		if dry, err = strconv.ParseBool(v); err != nil {
			return badParam("dry_run", "true or false")
		}
	}
	if v := c.QueryParam("confirm_delivered"); v != "" {
		if confirm, err = strconv.ParseBool(v); err != nil {
			return badParam("confirm_delivered", "true or false")
		}
	}
	job, err := a.startReplay(c.Request().Context(), f, rate, dry, confirm)
	if errors.Is(err, console.ErrConfirm) {
		return webhooks.Errorf(http.StatusConflict, "confirm", "%v; add confirm_delivered=true to re-send them", err)
	}
	if err != nil {
		return err
	}
	if dry {
		return c.JSON(http.StatusOK, map[string]any{"dry_run": true, "count": job.Total, "filter": job.Filter,
			"delivered_needing_confirmation": job.HeldBack, "not_replayable": job.Excluded})
	}
	return c.JSON(http.StatusAccepted, job)
}

// jobs returns the kept replay jobs, newest first.
func (a *admin) jobList() []console.ReplayJob {
	a.mu.Lock()
	js := make([]*replayJob, 0, len(a.order))
	for i := len(a.order) - 1; i >= 0; i-- {
		js = append(js, a.jobs[a.order[i]])
	}
	a.mu.Unlock()
	out := make([]console.ReplayJob, 0, len(js))
	for _, j := range js {
		out = append(out, j.snapshot())
	}
	return out
}

func (a *admin) replayJobs(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"jobs": a.jobList()})
}

func (a *admin) replayStatus(c echo.Context) error {
	a.mu.Lock()
	job, ok := a.jobs[c.Param("id")]
	a.mu.Unlock()
	if !ok {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no replay job %s", c.Param("id"))
	}
	return c.JSON(http.StatusOK, job.snapshot())
}

// reprocess re-maps inbox items after a mapping fix (query: source, since,
// until, status=failed,ignored,mapped, dry_run).
func (a *admin) reprocess(c echo.Context) error {
	f := store.ReprocessFilter{Source: c.QueryParam("source"), DryRun: c.QueryParam("dry_run") == "true"}
	var err error
	if f.Since, err = a.parseTime(c, "since"); err != nil {
		return err
	}
	if f.Until, err = a.parseTime(c, "until"); err != nil {
		return err
	}
	if s := c.QueryParam("status"); s != "" {
		for _, st := range strings.Split(s, ",") {
			switch st {
			case mapping.StatusFailed, mapping.StatusIgnored, mapping.StatusMapped:
				f.Statuses = append(f.Statuses, st)
			default:
				return badParam("status", "one of failed, ignored, mapped")
			}
		}
	}
	if f.Since.IsZero() {
		// The inbox index is keyed by Unix milliseconds: the zero time (year
		// 1) would seek past every key.
		f.Since = time.UnixMilli(0)
	}
	r, err := a.g.Store.Reprocess(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"dry_run": f.DryRun, "result": r})
}

// DestinationView is a destination's health and backlog.
type DestinationView struct {
	dispatch.Health
	Queue store.QueueStats `json:"queue"`
	// OldestPendingSeconds is the age of the oldest queued delivery.
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
}

func (a *admin) destinationList() ([]console.Destination, error) {
	out := []console.Destination{}
	for _, h := range a.g.Dispatcher.Health() {
		q, err := a.g.Store.Queue(h.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, console.Destination{Health: h, Queue: q})
	}
	return out, nil
}

func (a *admin) destinations(c echo.Context) error {
	ds, err := a.destinationList()
	if err != nil {
		return err
	}
	now := a.g.now()
	out := make([]DestinationView, 0, len(ds))
	for _, d := range ds {
		v := DestinationView{Health: d.Health, Queue: d.Queue}
		if !d.Queue.OldestCreate.IsZero() {
			v.OldestPendingSeconds = max(0, now.Sub(d.Queue.OldestCreate).Seconds())
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, map[string]any{"destinations": out})
}

// TestEventView is the answer of POST /destinations/{name}/test. Passed
// is true only when the destination's validation path really received the
// test event (Tested) and accepted it; Response is the vendor's answer
// verbatim, and Where says where to look for the test in the vendor's UI.
type TestEventView struct {
	Event     mapping.Event      `json:"event"`
	Tested    bool               `json:"tested"`
	Passed    bool               `json:"passed"`
	Path      string             `json:"path,omitempty"`
	Where     string             `json:"where,omitempty"`
	Outcome   forwarders.Outcome `json:"outcome"`
	Status    int                `json:"status,omitempty"`
	Reason    string             `json:"reason,omitempty"`
	Request   string             `json:"request,omitempty"`
	Response  string             `json:"response,omitempty"`
	Error     string             `json:"error,omitempty"`
	LatencyMs int64              `json:"latency_ms"`
}

// sendTest sends a sandbox-marked test event straight to a destination
// (bypassing the queue and the store).
func (a *admin) sendTest(ctx context.Context, name string) (TestEventView, error) {
	f, ok := a.g.Dispatcher.Forwarder(name)
	if !ok {
		return TestEventView{}, fmt.Errorf("%w: destination %s", store.ErrNotFound, name)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	var rep forwarders.TestReport
	var e mapping.Event
	if t, ok := f.(forwarders.Tester); ok {
		// The destination's own validation path (test_event_code, sandbox
		// environment, test keys, GA4's validation server).
		rep = t.Test(ctx)
		if rep.Event != nil {
			e = *rep.Event
		}
	} else {
		// A webhook: the test event, marked sandbox, goes to the endpoint
		// itself, which is the test.
		e = dispatch.TestEvent(a.g.now(), name)
		res := f.Send(ctx, []forwarders.Item{{Key: e.ID + "|" + name, Attempt: 1, Event: &e}})
		rep.Path, rep.Where = "the endpoint itself", "the receiving service's own logs"
		if len(res) == 1 {
			rep.Result = res[0]
		} else {
			rep.Result = forwarders.Result{Outcome: forwarders.Retry, Err: errors.New("forwarder returned a wrong number of results")}
		}
		rep.Tested = rep.Status != 0
	}
	v := TestEventView{Event: e, Tested: rep.Tested, Passed: rep.Passed(), Path: rep.Path, Where: rep.Where,
		LatencyMs: time.Since(start).Milliseconds()}
	r := rep.Result
	v.Outcome, v.Status, v.Reason, v.Request, v.Response = r.Outcome, r.Status, r.Reason, r.Request, r.Response
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	return v, nil
}

func (a *admin) testEvent(c echo.Context) error {
	v, err := a.sendTest(c.Request().Context(), c.Param("name"))
	if errors.Is(err, store.ErrNotFound) {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no destination %s", c.Param("name"))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

// getDelivery returns one delivery with its attempt log.
func (a *admin) getDelivery(c echo.Context) error {
	d, err := a.g.Store.Delivery(c.Param("key"))
	if errors.Is(err, store.ErrNotFound) {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no delivery %s", c.Param("key"))
	}
	if err != nil {
		return err
	}
	v, err := a.view(d)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

// consoleBackend gives the web console what it needs without it knowing
// the gateway.
type consoleBackend struct{ a *admin }

var _ console.Backend = consoleBackend{}

func (b consoleBackend) Events(f store.EventFilter) (store.EventPage, error) {
	return b.a.g.Store.Events(f)
}

func (b consoleBackend) Event(id string) (mapping.Event, error) { return b.a.g.Store.Event(id) }

func (b consoleBackend) Notification(e *mapping.Event) (json.RawMessage, error) {
	n, err := b.a.g.Store.NotificationOf(e)
	if err != nil {
		return nil, err
	}
	return redactNotification(n), nil
}

func (b consoleBackend) EventDeliveries(id string) ([]store.Delivery, error) {
	return b.a.g.Store.EventDeliveries(id)
}

func (b consoleBackend) Attempts(key string) ([]store.Attempt, error) {
	return b.a.g.Store.Attempts(key)
}

func (b consoleBackend) Deliveries(f store.DeliveryFilter) ([]store.Delivery, error) {
	ds, err := b.a.g.Store.Deliveries(f)
	if f.Limit > 0 && len(ds) > f.Limit {
		ds = ds[:f.Limit]
	}
	return ds, err
}

func (b consoleBackend) Replay(ctx context.Context, key string, confirm bool) (store.Delivery, error) {
	return b.a.replayChecked(ctx, key, confirm)
}

func (b consoleBackend) ReplayMatching(ctx context.Context, f store.DeliveryFilter, dryRun bool) (console.ReplayJob, error) {
	return b.a.startReplay(ctx, f, defaultReplayRate, dryRun, false)
}

func (b consoleBackend) ReplayJobs() []console.ReplayJob { return b.a.jobList() }

func (b consoleBackend) Destinations() ([]console.Destination, error) {
	return b.a.destinationList()
}

func (b consoleBackend) TestEvent(ctx context.Context, name string) (console.TestResult, error) {
	v, err := b.a.sendTest(ctx, name)
	if err != nil {
		return console.TestResult{}, err
	}
	return console.TestResult{Outcome: string(v.Outcome), Status: v.Status, Reason: v.Reason, Error: v.Error,
		Tested: v.Tested, Passed: v.Passed, Path: v.Path, Where: v.Where, Response: v.Response,
		Latency: time.Duration(v.LatencyMs) * time.Millisecond}, nil
}

func (b consoleBackend) Stats(since, until time.Time, bucket time.Duration) (store.Stats, error) {
	return b.a.g.Store.Stats(since, until, bucket)
}

func (b consoleBackend) DeadCounts() (map[string]int, error) { return b.a.g.Store.DeadCounts() }

func decodeJSON(c echo.Context, v any) error {
	body, err := webhooks.ReadBody(c, 64<<10)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return webhooks.Wrap(http.StatusBadRequest, webhooks.CodeMalformed, "body must be a JSON object with the documented fields", err)
	}
	return nil
}

// reconcileGoogle lists the purchases Google voided in [since, until) and
// stores the refunds RTDN missed, while the gateway runs; the enrichment
// worker turns them into refund events. Refunds already received are
// recognised and not repeated.
func (a *admin) reconcileGoogle(c echo.Context) error {
	gs := a.g.google
	if gs == nil {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "sources.google is not enabled")
	}
	since, err := a.parseTime(c, "since")
	if err != nil {
		return err
	}
	if since.IsZero() {
		since = a.g.now().Add(-72 * time.Hour)
	}
	until, err := a.parseTime(c, "until")
	if err != nil {
		return err
	}
	var res play.ReconcileResult
	ran, lerr := a.g.Store.Singleton(c.Request().Context(), "reconcile-google", func(ctx context.Context) {
		res, err = play.Reconcile(ctx, gs.api, a.g.Store, play.ReconcileOptions{Packages: gs.packages, Since: since, Until: until, Now: a.g.now})
	})
	if lerr != nil {
		return webhooks.Wrap(http.StatusServiceUnavailable, "store_unavailable", "could not take the reconcile lock", lerr)
	}
	if !ran {
		return webhooks.Errorf(http.StatusConflict, "busy", "another replica is reconciling Google refunds now; try again when it has finished")
	}
	if errors.Is(err, play.ErrReconcileWindow) {
		return webhooks.Wrap(http.StatusBadRequest, "invalid", "since must be before until, within Google's 30 days", err)
	}
	if err != nil {
		return webhooks.Wrap(http.StatusBadGateway, "play_api", "listing voided purchases failed", err)
	}
	gs.enricher.Nudge()
	return c.JSON(http.StatusOK, res)
}

func (b consoleBackend) DeliveryLog(f store.LogFilter) (store.LogPage, error) {
	return b.a.g.Store.DeliveryLog(f)
}

func (b consoleBackend) HeldNames() []string { return b.a.g.Dispatcher.HeldNames() }

func (b consoleBackend) DeadGroups(dest string) ([]console.DeadGroup, error) {
	return b.a.deadGroupViews(dest)
}

func (b consoleBackend) Resume(ctx context.Context, name string) (bool, error) {
	return b.a.resumeDest(ctx, name)
}

func (b consoleBackend) Export(w http.ResponseWriter, f store.LogFilter, format string) error {
	return ExportLog(w, b.a.g.Store, f, format)
}

func (b consoleBackend) Reload() (string, error) {
	r, err := b.a.g.Reload()
	if err != nil {
		return "", errors.New(config.MaskText(err.Error(), *b.a.g.secrets.Load()))
	}
	msg := "Applied to: " + strings.Join(r.Applied, ", ") + "."
	if len(r.Added)+len(r.Removed)+len(r.Restart) > 0 {
		msg += " Needs a restart: " + strings.Join(append(append(append([]string(nil), r.Added...), r.Removed...), r.Restart...), ", ") + "."
	}
	return msg, nil
}
