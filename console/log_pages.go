package console

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// logStates are the deliveries page's state filters, in display order.
var logStates = []string{store.StatePending, store.StateRetrying, store.StateWaiting, store.StateHeld, store.StateDead, store.StateSkipped, store.StateDelivered}

// logRow is one row of the deliveries page.
type logRow struct {
	store.LogEntry
	Shown    string // the state shown: held for held work
	Offer    string
	OfferWhy string
}

type deliveriesData struct {
	Filter     store.LogFilter
	States     map[string]bool
	AllStates  []string
	Since      string
	Until      string
	Page       store.LogPage
	Rows       []logRow
	Names      []string
	Held       []string
	From, To   int
	Prev, Next template.URL
	Export     template.URL
	Error      string
}

// logQuery reads the deliveries page's filter from a query.
func (c *Console) logQuery(q url.Values) (store.LogFilter, error) {
	f := store.LogFilter{Destination: q.Get("destination"), Type: q.Get("type"), Source: q.Get("source"),
		Search: strings.TrimSpace(q.Get("q")), Reason: strings.TrimSpace(q.Get("reason")), Limit: 50}
	for _, st := range q["state"] {
		for _, s := range strings.Split(st, ",") {
			if s == "" {
				continue
			}
			if !slices.Contains(logStates, s) {
				return f, fmt.Errorf("unknown state %q: use one of %s", s, strings.Join(logStates, ", "))
			}
			f.States = append(f.States, s)
		}
	}
	if f.Type != "" && !mapping.Type(f.Type).Valid() {
		return f, fmt.Errorf("unknown event type %s", f.Type)
	}
	var err error
	now := c.now()
	if f.Since, err = parseWhen(q.Get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseWhen(q.Get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if v := q.Get("offset"); v != "" {
		if f.Offset, err = strconv.Atoi(v); err != nil || f.Offset < 0 {
			return f, fmt.Errorf("offset %q is not a row number", v)
		}
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 500 {
			return f, fmt.Errorf("limit %q: use 1 to 500", v)
		}
	}
	f.Held = c.b.HeldNames()
	return f, nil
}

// withOffset returns the page's query with another offset.
func withOffset(q url.Values, offset int) template.URL {
	q2 := url.Values{}
	for k, v := range q {
		if k != "offset" && k != "live" {
			q2[k] = v
		}
	}
	if offset > 0 {
		q2.Set("offset", strconv.Itoa(offset))
	}
	return template.URL(q2.Encode())
}

func (c *Console) deliveries(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := deliveriesData{AllStates: logStates, States: map[string]bool{}, Since: q.Get("since"), Until: q.Get("until")}
	status := http.StatusOK
	f, err := c.logQuery(q)
	d.Filter = f
	for _, st := range f.States {
		d.States[st] = true
	}
	if err != nil {
		d.Error, status = err.Error(), http.StatusBadRequest
	} else {
		if d.Page, err = c.b.DeliveryLog(f); err != nil {
			c.internal(w, r, err)
			return
		}
		for _, en := range d.Page.Entries {
			row := logRow{LogEntry: en, Shown: en.State}
			if (en.State == store.StatePending || en.State == store.StateRetrying) && slices.Contains(f.Held, en.Destination) {
				row.Shown = store.StateHeld
			}
			row.Offer, row.OfferWhy = store.ReplayOffer(&en.Delivery)
			d.Rows = append(d.Rows, row)
		}
		if len(d.Rows) > 0 {
			d.From, d.To = f.Offset+1, f.Offset+len(d.Rows)
		}
		if f.Offset > 0 {
			d.Prev = withOffset(q, max(0, f.Offset-f.Limit))
		}
		if f.Offset+len(d.Rows) < d.Page.Total {
			d.Next = withOffset(q, f.Offset+f.Limit)
		}
		d.Export = withOffset(q, 0)
	}
	d.Held = f.Held
	dests, err := c.b.Destinations()
	if err != nil {
		c.internal(w, r, err)
		return
	}
	for _, x := range dests {
		d.Names = append(d.Names, x.Name)
	}
	c.render(w, r, s, status, "deliveries", "Deliveries", d)
}

// export downloads every delivery matching the page's filter as CSV or
// JSON.
func (c *Console) export(w http.ResponseWriter, r *http.Request, _ *session) {
	q := r.URL.Query()
	format := q.Get("format")
	if format != "csv" && format != "json" {
		c.fail(w, r, http.StatusBadRequest, "Export as format=csv or format=json.")
		return
	}
	f, err := c.logQuery(q)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if err := c.b.Export(w, f, format); err != nil {
		c.log.Error("console: export", "err", err)
	}
}

// resume ends a destination's pause or open circuit.
func (c *Console) resume(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	was, err := c.b.Resume(r.Context(), name)
	if c.destinationFailed(w, r, name, err) {
		return
	}
	if was {
		c.setFlash(s, "Destination "+name+" resumed: its queued deliveries go now.")
	} else {
		c.setFlash(s, "Destination "+name+" was not held; its queued deliveries go now.")
	}
	http.Redirect(w, r, Prefix+"/destinations", http.StatusSeeOther)
}

// chip is one destination's state on an events-list row.
type chip struct {
	Destination string
	State       string
}

// chips returns each event's delivery states, by destination.
func (c *Console) chips(events []mapping.Event, held []string) (map[string][]chip, error) {
	out := map[string][]chip{}
	for _, e := range events {
		ds, err := c.b.EventDeliveries(e.ID)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			st := d.State
			if (st == store.StatePending || st == store.StateRetrying) && slices.Contains(held, d.Destination) {
				st = store.StateHeld
			}
			out[e.ID] = append(out[e.ID], chip{Destination: d.Destination, State: st})
		}
	}
	return out, nil
}

type confirmData struct {
	Key, Back, Why, Destination, EventID string
}

// reload reads the configuration again and applies its destinations.
func (c *Console) reload(w http.ResponseWriter, r *http.Request, s *session) {
	msg, err := c.b.Reload()
	if err != nil {
		c.setFlashBad(s, "Reload failed, the running configuration is kept: "+err.Error())
	} else {
		c.setFlash(s, "Configuration reloaded. "+msg)
	}
	http.Redirect(w, r, Prefix+"/destinations", http.StatusSeeOther)
}
