package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// mountAdmin registers the admin API under /admin/api/ when admin.token is
// set. Every route requires `Authorization: Bearer <admin.token>`.
func (g *Gateway) mountAdmin() error {
	if g.Config.Admin.Token == "" {
		return nil
	}
	a := &admin{g: g, jobs: map[string]*replayJob{}}
	api := g.Admin.Group("/admin/api", a.auth)
	api.GET("/events", a.listEvents)
	api.GET("/events/:id", a.getEvent)
	api.GET("/deliveries", a.listDeliveries)
	api.POST("/deliveries/replay", a.replayOne)
	api.POST("/replay", a.replayMatching)
	api.GET("/replay/:id", a.replayStatus)
	api.POST("/reprocess", a.reprocess)
	api.GET("/destinations", a.destinations)
	api.POST("/destinations/:name/test", a.testEvent)
	g.adminAPI = a
	g.Logger.Info("admin API enabled", "path", "/admin/api/")
	return nil
}

type admin struct {
	g    *Gateway
	mu   sync.Mutex
	jobs map[string]*replayJob
	seq  int
}

// auth checks the bearer token in constant time.
func (a *admin) auth(next echo.HandlerFunc) echo.HandlerFunc {
	want := []byte(a.g.Config.Admin.Token)
	return func(c echo.Context) error {
		got, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			return webhooks.Errorf(http.StatusUnauthorized, webhooks.CodeUnauthorized, "admin token required (Authorization: Bearer <admin.token>)")
		}
		return next(c)
	}
}

func badParam(name, msg string) error {
	return webhooks.Errorf(http.StatusBadRequest, "invalid", "%s: %s", name, msg)
}

func parseTime(c echo.Context, name string) (time.Time, error) {
	v := c.QueryParam(name)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, badParam(name, "use RFC 3339 (2026-11-30T03:00:00Z) or a duration ago (24h)")
}

func (a *admin) listEvents(c echo.Context) error {
	f := store.EventFilter{
		Source: c.QueryParam("source"), Type: c.QueryParam("type"), AppID: c.QueryParam("app"),
		Environment: c.QueryParam("environment"), AppUserID: c.QueryParam("user"),
		SubscriptionID: c.QueryParam("subscription"), Cursor: c.QueryParam("cursor"),
	}
	var err error
	if f.Since, err = parseTime(c, "since"); err != nil {
		return err
	}
	if f.Until, err = parseTime(c, "until"); err != nil {
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
	return c.JSON(http.StatusOK, p)
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
// phones are already hashed on disk.
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
	if f.Since, err = parseTime(c, "since"); err != nil {
		return f, err
	}
	if f.Until, err = parseTime(c, "until"); err != nil {
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
	ds, err := a.g.Store.Deliveries(f)
	if err != nil {
		return err
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
		Key string `json:"key"`
	}
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return badParam("key", "the delivery key (<event id>|<destination>) is required")
	}
	d, err := a.g.Store.Replay(c.Request().Context(), req.Key)
	if errors.Is(err, store.ErrNotFound) {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no delivery %s", req.Key)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, d)
}

// replayJob tracks a bulk replay.
type replayJob struct {
	ID       string    `json:"id"`
	Total    int       `json:"total"`
	Done     int       `json:"done"`
	Finished bool      `json:"finished"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	mu       sync.Mutex
}

func (j *replayJob) snapshot() replayJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	return replayJob{ID: j.ID, Total: j.Total, Done: j.Done, Finished: j.Finished, Error: j.Error, Started: j.Started}
}

// replayMatching replays every final delivery matching the filter (query
// parameters as for GET /deliveries) at rate_per_second (default 50), or
// with dry_run=true only counts. The real run is asynchronous: it answers
// 202 with a job id whose progress GET /replay/{id} reports.
func (a *admin) replayMatching(c echo.Context) error {
	f, err := a.deliveryFilter(c)
	if err != nil {
		return err
	}
	if len(f.States) == 0 {
		f.States = []string{store.StateDead}
	}
	rate := 50.0
	if v := c.QueryParam("rate_per_second"); v != "" {
		if rate, err = strconv.ParseFloat(v, 64); err != nil || rate <= 0 || rate > 10000 {
			return badParam("rate_per_second", "a number from 0 to 10000")
		}
	}
	if c.QueryParam("dry_run") == "true" {
		n, err := a.g.Store.ReplayMatching(c.Request().Context(), f, 0, true, nil)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"dry_run": true, "count": n})
	}
	n, err := a.g.Store.ReplayMatching(c.Request().Context(), f, 0, true, nil)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.seq++
	job := &replayJob{ID: strconv.Itoa(a.seq), Total: n, Started: time.Now().UTC()}
	a.jobs[job.ID] = job
	a.mu.Unlock()
	go func() {
		_, err := a.g.Store.ReplayMatching(context.Background(), f, rate, false, func(done, total int) {
			job.mu.Lock()
			job.Done, job.Total = done, total
			job.mu.Unlock()
		})
		job.mu.Lock()
		job.Finished = true
		if err != nil {
			job.Error = err.Error()
		}
		job.mu.Unlock()
	}()
	return c.JSON(http.StatusAccepted, job.snapshot())
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
	if f.Since, err = parseTime(c, "since"); err != nil {
		return err
	}
	if f.Until, err = parseTime(c, "until"); err != nil {
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
}

func (a *admin) destinations(c echo.Context) error {
	var out []DestinationView
	for _, h := range a.g.Dispatcher.Health() {
		q, err := a.g.Store.Queue(h.Name)
		if err != nil {
			return err
		}
		out = append(out, DestinationView{Health: h, Queue: q})
	}
	if out == nil {
		out = []DestinationView{}
	}
	return c.JSON(http.StatusOK, map[string]any{"destinations": out})
}

// testEvent sends a sandbox-marked test event straight to a destination
// (bypassing the queue) and reports the outcome.
func (a *admin) testEvent(c echo.Context) error {
	f, ok := a.g.Dispatcher.Forwarder(c.Param("name"))
	if !ok {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no destination %s", c.Param("name"))
	}
	// The test event is marked sandbox: forwarders send it with their sandbox
	// credentials, or report it skipped, never into production data.
	e := dispatch.TestEvent(a.g.now(), c.Param("name"))
	ctx, cancel := context.WithTimeout(c.Request().Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	res := f.Send(ctx, []forwarders.Item{{Key: e.ID + "|" + c.Param("name"), Attempt: 1, Event: &e}})
	out := map[string]any{"event": e, "latency_ms": time.Since(start).Milliseconds()}
	if len(res) == 1 {
		r := res[0]
		out["outcome"], out["status"], out["reason"], out["request"], out["response"] = r.Outcome, r.Status, r.Reason, r.Request, r.Response
		if r.Err != nil {
			out["error"] = r.Err.Error()
		}
	}
	return c.JSON(http.StatusOK, out)
}

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
