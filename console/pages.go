package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// funcs are the template helpers.
func funcs(now func() time.Time) template.FuncMap {
	return template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		},
		"ago": func(t time.Time) string { return ago(now(), t) },
		"money": func(r *mapping.Revenue) string {
			if r == nil {
				return ""
			}
			return r.Decimal() + " " + r.Currency
		},
		"pct": func(ok, total int) string {
			if total == 0 {
				return "—"
			}
			return strconv.FormatFloat(100*float64(ok)/float64(total), 'f', 1, 64) + "%"
		},
		"ms": func(d time.Duration) string {
			return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
		},
		"stateClass": func(s string) string {
			switch s {
			case store.StateDelivered, "ok":
				return "ok"
			case store.StateDead, "open", "error":
				return "bad"
			case store.StateRetrying, store.StateWaiting, store.StatePending, "half-open", "paused":
				return "warn"
			}
			return "muted"
		},
		"short": func(s string, n int) string {
			if len(s) <= n {
				return s
			}
			return s[:n] + "…"
		},
		"query": func(kv ...string) template.URL {
			q := url.Values{}
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] != "" {
					q.Set(kv[i], kv[i+1])
				}
			}
			return template.URL(q.Encode())
		},
		"eventTypes": func() []mapping.Type { return mapping.Types },
		"add":        func(a, b int) int { return a + b },
		"list":       func(v ...string) []string { return v },
	}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	suffix := " ago"
	if d < 0 {
		d, suffix = -d, " from now"
	}
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s" + suffix
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m" + suffix
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h" + suffix
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d" + suffix
}

// chartPalette colours event types in the overview chart; types beyond it
// share the last colour.
var chartPalette = [...]string{"#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#475569"}

type barSeg struct {
	Type   string
	Count  int
	Y, H   float64
	Colour string
}

type bar struct {
	X      float64
	Label  string
	Title  string
	Total  int
	Segs   []barSeg
	ShowAt bool
}

type legend struct {
	Type   string
	Colour string
	Count  int
}

type chart struct {
	W, H, BarW, PlotH float64
	Bars              []bar
	Legend            []legend
	Max               int
	Ticks             []tick
}

type tick struct {
	Y     float64
	Label string
}

// buildChart lays out a stacked bar chart (one bar per hour, one segment per
// event type) as SVG coordinates for the template.
func buildChart(s store.Stats) chart {
	const w, h, top, bottom, left = 960.0, 260.0, 10.0, 24.0, 36.0
	ch := chart{W: w, H: h, PlotH: h - bottom}
	totals := map[string]int{}
	for _, b := range s.Buckets {
		sum := 0
		for t, n := range b {
			totals[t] += n
			sum += n
		}
		ch.Max = max(ch.Max, sum)
	}
	types := make([]string, 0, len(totals))
	for t := range totals {
		types = append(types, t)
	}
	// Canonical order, so a type keeps its colour from one load to the next.
	order := func(t string) int {
		i := slices.Index(mapping.Types, mapping.Type(t))
		if i < 0 {
			return len(mapping.Types)
		}
		return i
	}
	sort.Slice(types, func(i, j int) bool {
		if order(types[i]) != order(types[j]) {
			return order(types[i]) < order(types[j])
		}
		return types[i] < types[j]
	})
	colour := map[string]string{}
	for i, t := range types {
		colour[t] = chartPalette[min(i, len(chartPalette)-1)]
		ch.Legend = append(ch.Legend, legend{Type: t, Colour: colour[t], Count: totals[t]})
	}
	// A multiple of four, so the five grid lines fall on whole numbers.
	scaleMax := max(4, (ch.Max+3)/4*4)
	plotH := h - top - bottom
	for i := 0; i <= 4; i++ {
		v := scaleMax * i / 4
		ch.Ticks = append(ch.Ticks, tick{Y: top + plotH - plotH*float64(v)/float64(scaleMax), Label: strconv.Itoa(v)})
	}
	n := len(s.Buckets)
	if n == 0 {
		return ch
	}
	slot := (w - left) / float64(n)
	ch.BarW = slot * 0.72
	for i, b := range s.Buckets {
		start := s.Since.Add(time.Duration(i) * s.Bucket)
		br := bar{X: left + float64(i)*slot + (slot-ch.BarW)/2, Label: start.UTC().Format("15h"), ShowAt: i%3 == 0}
		y := top + plotH
		var parts []string
		for _, t := range types {
			c := b[t]
			if c == 0 {
				continue
			}
			hh := plotH * float64(c) / float64(scaleMax)
			y -= hh
			br.Segs = append(br.Segs, barSeg{Type: t, Count: c, Y: y, H: hh, Colour: colour[t]})
			br.Total += c
			parts = append(parts, fmt.Sprintf("%s %d", t, c))
		}
		br.Title = start.UTC().Format("Jan 2 15:00") + " UTC: " + strconv.Itoa(br.Total) + " events"
		if len(parts) > 0 {
			br.Title += " (" + strings.Join(parts, ", ") + ")"
		}
		ch.Bars = append(ch.Bars, br)
	}
	return ch
}

type destRow struct {
	Name                string
	Delivered, Dead     int
	Skipped, Queued     int
	Total               int
	Dest                *Destination
	DeadAll             int
	SuccessOK, SuccessN int
}

type overviewData struct {
	Chart     chart
	Stats     store.Stats
	Dests     []destRow
	DeadTotal int
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	now := c.now().UTC()
	until := now.Truncate(time.Hour).Add(time.Hour)
	st, err := c.b.Stats(until.Add(-24*time.Hour), until, time.Hour)
	if err != nil {
		c.internal(w, r, err)
		return
	}
	dead, err := c.b.DeadCounts()
	if err != nil {
		c.internal(w, r, err)
		return
	}
	dests, err := c.b.Destinations()
	if err != nil {
		c.internal(w, r, err)
		return
	}
	d := overviewData{Chart: buildChart(st), Stats: st}
	seen := map[string]bool{}
	row := func(name string, dest *Destination) destRow {
		m := st.Deliveries[name]
		rw := destRow{Name: name, Dest: dest, Delivered: m[store.StateDelivered], Dead: m[store.StateDead], Skipped: m[store.StateSkipped],
			Queued: m[store.StatePending] + m[store.StateRetrying] + m[store.StateWaiting], DeadAll: dead[name]}
		for _, n := range m {
			rw.Total += n
		}
		rw.SuccessOK, rw.SuccessN = rw.Delivered, rw.Delivered+rw.Dead
		return rw
	}
	for i := range dests {
		seen[dests[i].Name] = true
		d.Dests = append(d.Dests, row(dests[i].Name, &dests[i]))
	}
	// Destinations removed from the configuration still own stored work.
	var gone []string
	for name := range st.Deliveries {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	for name := range dead {
		if !seen[name] && st.Deliveries[name] == nil {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		d.Dests = append(d.Dests, row(name, nil))
	}
	for _, n := range dead {
		d.DeadTotal += n
	}
	c.render(w, r, s, http.StatusOK, "overview", "Overview", d)
}

type eventsData struct {
	Filter store.EventFilter
	Since  string
	Until  string
	Page   store.EventPage
	Chips  map[string][]chip
	Error  string
}

// parseWhen reads a time filter: RFC 3339, a date, or a duration ago (24h).
func parseWhen(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use 2026-11-30T03:00:00Z, 2026-11-30 or a duration ago such as 24h", v)
}

func (c *Console) events(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := eventsData{Filter: store.EventFilter{
		Source: q.Get("source"), Type: q.Get("type"), AppID: q.Get("app"), Environment: q.Get("environment"),
		AppUserID: strings.TrimSpace(q.Get("user")), SubscriptionID: strings.TrimSpace(q.Get("subscription")),
		Cursor: q.Get("cursor"), Limit: 50,
	}, Since: q.Get("since"), Until: q.Get("until")}
	var err error
	now := c.now()
	if d.Filter.Since, err = parseWhen(d.Since, now); err != nil {
		d.Error = "since: " + err.Error()
	} else if d.Filter.Until, err = parseWhen(d.Until, now); err != nil {
		d.Error = "until: " + err.Error()
	} else if d.Filter.Type != "" && !mapping.Type(d.Filter.Type).Valid() {
		d.Error = "unknown event type " + d.Filter.Type
	}
	status := http.StatusOK
	if d.Error != "" {
		status = http.StatusBadRequest
	} else if d.Page, err = c.b.Events(d.Filter); err != nil {
		c.internal(w, r, err)
		return
	} else if d.Chips, err = c.chips(d.Page.Events, c.b.HeldNames()); err != nil {
		c.internal(w, r, err)
		return
	}
	c.render(w, r, s, status, "events", "Events", d)
}

type deliveryRow struct {
	store.Delivery
	Attempts []store.Attempt
	Held     bool
	Offer    string
	OfferWhy string
}

type eventData struct {
	Event        mapping.Event
	Notification string
	Deliveries   []deliveryRow
}

func (c *Console) event(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	e, err := c.b.Event(id)
	if errors.Is(err, store.ErrNotFound) {
		c.fail(w, r, http.StatusNotFound, "There is no event "+id+" (it may have been pruned).")
		return
	}
	if err != nil {
		c.internal(w, r, err)
		return
	}
	d := eventData{Event: e}
	if n, err := c.b.Notification(&e); err == nil && len(n) > 0 {
		var v any
		if json.Unmarshal(n, &v) == nil {
			pretty, _ := json.MarshalIndent(v, "", "  ")
			d.Notification = string(pretty)
		}
	}
	ds, err := c.b.EventDeliveries(e.ID)
	if err != nil {
		c.internal(w, r, err)
		return
	}
	held := c.b.HeldNames()
	for _, dl := range ds {
		atts, err := c.b.Attempts(dl.Key)
		if err != nil {
			c.internal(w, r, err)
			return
		}
		row := deliveryRow{Delivery: dl, Attempts: atts, Held: (dl.State == store.StatePending || dl.State == store.StateRetrying) && slices.Contains(held, dl.Destination)}
		row.Offer, row.OfferWhy = store.ReplayOffer(&dl)
		d.Deliveries = append(d.Deliveries, row)
	}
	c.render(w, r, s, http.StatusOK, "event", "Event "+e.ID, d)
}

type deadData struct {
	Destination string
	Reason      string
	Since       string
	Until       string
	Page        store.LogPage
	Groups      []DeadGroup
	From, To    int
	Prev, Next  template.URL
	Names       []string
	Jobs        []ReplayJob
	DryRun      *ReplayJob
	Error       string
}

// deadFilter reads the dead-letter page's filter from a query or form.
func (c *Console) deadFilter(v url.Values) (store.DeliveryFilter, error) {
	f := store.DeliveryFilter{Destination: v.Get("destination"), Reason: strings.TrimSpace(v.Get("reason")), States: []string{store.StateDead}}
	var err error
	now := c.now()
	if f.Since, err = parseWhen(v.Get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseWhen(v.Get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	return f, nil
}

func (c *Console) dead(w http.ResponseWriter, r *http.Request, s *session) {
	c.showDead(w, r, s, r.URL.Query(), nil)
}

func (c *Console) showDead(w http.ResponseWriter, r *http.Request, s *session, v url.Values, dry *ReplayJob) {
	d := deadData{Destination: v.Get("destination"), Reason: v.Get("reason"), Since: v.Get("since"), Until: v.Get("until"), DryRun: dry}
	status := http.StatusOK
	f, err := c.deadFilter(v)
	offset, _ := strconv.Atoi(v.Get("offset"))
	if err != nil {
		d.Error, status = err.Error(), http.StatusBadRequest
	} else {
		lf := store.LogFilter{States: []string{store.StateDead}, Destination: f.Destination, Reason: strings.TrimPrefix(f.Reason, "="), Since: f.Since, Until: f.Until,
			Offset: max(0, offset), Limit: 100}
		if d.Page, err = c.b.DeliveryLog(lf); err != nil {
			c.internal(w, r, err)
			return
		}
		if n := len(d.Page.Entries); n > 0 {
			d.From, d.To = lf.Offset+1, lf.Offset+n
		}
		q := url.Values{}
		for _, k := range []string{"destination", "reason", "since", "until"} {
			if x := v.Get(k); x != "" {
				q.Set(k, x)
			}
		}
		if lf.Offset > 0 {
			d.Prev = withOffset(q, max(0, lf.Offset-lf.Limit))
		}
		if lf.Offset+len(d.Page.Entries) < d.Page.Total {
			d.Next = withOffset(q, lf.Offset+lf.Limit)
		}
		if d.Groups, err = c.b.DeadGroups(f.Destination); err != nil {
			c.internal(w, r, err)
			return
		}
	}
	dests, err := c.b.Destinations()
	if err != nil {
		c.internal(w, r, err)
		return
	}
	for _, x := range dests {
		d.Names = append(d.Names, x.Name)
	}
	d.Jobs = c.b.ReplayJobs()
	c.render(w, r, s, status, "dead", "Dead letters", d)
}

func (c *Console) replay(w http.ResponseWriter, r *http.Request, s *session) {
	key := r.PostFormValue("key")
	back := safeNext(r.PostFormValue("back"))
	d, err := c.b.Replay(r.Context(), key, r.PostFormValue("confirm") == "yes")
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.fail(w, r, http.StatusNotFound, "There is no delivery "+key+".")
		return
	case errors.Is(err, ErrConfirm):
		// Delivered work: ask first.
		_, why := store.ReplayOffer(&d)
		c.render(w, r, s, http.StatusOK, "confirm", "Confirm replay", confirmData{Key: key, Back: back, Why: why,
			Destination: d.Destination, EventID: d.EventID})
		return
	case errors.Is(err, ErrNoReplay):
		c.setFlashBad(s, "Not replayed: "+strings.TrimPrefix(err.Error(), ErrNoReplay.Error()+": ")+".")
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	case err != nil:
		c.internal(w, r, err)
		return
	}
	c.setFlash(s, "Delivery to "+d.Destination+" queued again.")
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func (c *Console) replayBulk(w http.ResponseWriter, r *http.Request, s *session) {
	_ = r.ParseForm()
	f, err := c.deadFilter(r.PostForm)
	if err != nil {
		c.showDead(w, r, s, r.PostForm, nil)
		return
	}
	dry := r.PostFormValue("confirm") != "yes"
	job, err := c.b.ReplayMatching(r.Context(), f, dry)
	if err != nil {
		c.internal(w, r, err)
		return
	}
	if dry {
		c.showDead(w, r, s, r.PostForm, &job)
		return
	}
	c.setFlash(s, fmt.Sprintf("Replay %s started: %d deliveries, at a capped rate.", job.ID, job.Total))
	q := url.Values{}
	for _, k := range []string{"destination", "reason", "since", "until"} {
		if v := r.PostFormValue(k); v != "" {
			q.Set(k, v)
		}
	}
	http.Redirect(w, r, Prefix+"/dead?"+q.Encode(), http.StatusSeeOther)
}

type destinationsData struct {
	Dests []Destination
	Dead  map[string]int
}

func (c *Console) destinations(w http.ResponseWriter, r *http.Request, s *session) {
	dests, err := c.b.Destinations()
	if err != nil {
		c.internal(w, r, err)
		return
	}
	dead, err := c.b.DeadCounts()
	if err != nil {
		c.internal(w, r, err)
		return
	}
	c.render(w, r, s, http.StatusOK, "destinations", "Destinations", destinationsData{Dests: dests, Dead: dead})
}

func (c *Console) testEvent(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	res, err := c.b.TestEvent(r.Context(), name)
	if c.destinationFailed(w, r, name, err) {
		return
	}
	verdict := "passed"
	switch {
	case !res.Tested:
		verdict = "NOT TESTED"
	case !res.Passed:
		verdict = "FAILED"
	}
	msg := fmt.Sprintf("Test event to %s: %s, %s", name, verdict, res.Outcome)
	if res.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", res.Status)
	}
	if res.Reason != "" {
		msg += ", " + res.Reason
	}
	if res.Error != "" {
		msg += ": " + res.Error
	}
	if res.Path != "" {
		msg += ". Path: " + res.Path
	}
	if res.Response != "" {
		msg += ". Answer: " + res.Response
	}
	if res.Where != "" {
		msg += ". See: " + res.Where
	}
	if res.Passed {
		c.setFlash(s, msg+".")
	} else {
		c.setFlashBad(s, msg+".")
	}
	http.Redirect(w, r, Prefix+"/destinations", http.StatusSeeOther)
}

// destinationFailed answers a failed action on destination name (404 for
// an unknown one) and reports whether it did.
func (c *Console) destinationFailed(w http.ResponseWriter, r *http.Request, name string, err error) bool {
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.fail(w, r, http.StatusNotFound, "There is no destination "+name+".")
	case err != nil:
		c.internal(w, r, err)
	default:
		return false
	}
	return true
}
