package server

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/console"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// LogStates are the deliveries log's state filter values.
var LogStates = []string{store.StatePending, store.StateRetrying, store.StateWaiting, store.StateHeld, store.StateDead, store.StateSkipped, store.StateDelivered}

// maxExport bounds the rows of one CSV or JSON export.
const maxExport = 100000

// logFilter reads the deliveries log's filter: state (comma-separated, with
// held), destination, type, source, since, until, q (event id,
// transaction id, original transaction id, purchase token or user id),
// offset and limit.
func (a *admin) logFilter(c echo.Context) (store.LogFilter, error) {
	f := store.LogFilter{Destination: c.QueryParam("destination"), Type: c.QueryParam("type"), Source: c.QueryParam("source"),
		Search: strings.TrimSpace(c.QueryParam("q"))}
	if s := c.QueryParam("state"); s != "" {
		for _, st := range strings.Split(s, ",") {
			if !slices.Contains(LogStates, st) {
				return f, badParam("state", "one of "+strings.Join(LogStates, ", "))
			}
			f.States = append(f.States, st)
		}
	}
	if f.Type != "" && !mapping.Type(f.Type).Valid() {
		return f, badParam("type", "unknown event type")
	}
	var err error
	if f.Since, err = a.parseTime(c, "since"); err != nil {
		return f, err
	}
	if f.Until, err = a.parseTime(c, "until"); err != nil {
		return f, err
	}
	for _, p := range []struct {
		name string
		v    *int
		max  int
	}{{"offset", &f.Offset, 1 << 30}, {"limit", &f.Limit, 1000}} {
		if v := c.QueryParam(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > p.max || p.name == "limit" && n == 0 {
				return f, badParam(p.name, "a number from "+map[string]string{"offset": "0", "limit": "1 to 1000"}[p.name])
			}
			*p.v = n
		}
	}
	f.Held = a.g.Dispatcher.HeldNames()
	return f, nil
}

// LogEntryView is a deliveries log row: the delivery, its event's fields,
// whether its destination holds it and what replay it allows.
type LogEntryView struct {
	store.LogEntry
	NextAt    *time.Time `json:"next_at,omitempty"`
	Held      bool       `json:"held,omitempty"`
	Offer     string     `json:"replay"`
	OfferWhy  string     `json:"replay_note,omitempty"`
	ShowState string     `json:"shown_state"`
}

func logView(en store.LogEntry, held []string) LogEntryView {
	v := LogEntryView{LogEntry: en, ShowState: en.State}
	if !store.Final(en.State) && en.NextAtMs > 0 {
		t := en.NextAt().UTC()
		v.NextAt = &t
	}
	if (en.State == store.StatePending || en.State == store.StateRetrying) && slices.Contains(held, en.Destination) {
		v.Held, v.ShowState = true, store.StateHeld
	}
	v.Offer, v.OfferWhy = store.ReplayOffer(&en.Delivery)
	return v
}

// deliveryLog is GET /admin/api/log: one page (JSON), or with
// format=csv|json every matching row (at most 100,000) as a download.
func (a *admin) deliveryLog(c echo.Context) error {
	f, err := a.logFilter(c)
	if err != nil {
		return err
	}
	switch format := c.QueryParam("format"); format {
	case "":
		p, err := a.g.Store.DeliveryLog(f)
		if err != nil {
			return err
		}
		rows := make([]LogEntryView, 0, len(p.Entries))
		for _, en := range p.Entries {
			rows = append(rows, logView(en, f.Held))
		}
		return c.JSON(http.StatusOK, map[string]any{"entries": rows, "total": p.Total, "offset": p.Offset, "limit": p.Limit, "partial": p.Partial, "held": f.Held})
	case "csv", "json":
		return a.exportLog(c, f, format)
	default:
		return badParam("format", "csv or json")
	}
}

// ExportLog writes every row of f as CSV or JSON to w.
func ExportLog(w http.ResponseWriter, s store.Reader, f store.LogFilter, format string) error {
	f.Offset, f.Limit = 0, 1000
	name := "postback-deliveries-" + time.Now().UTC().Format("20060102-150405") + "." + format
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	var cw *csv.Writer
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		cw = csv.NewWriter(w)
		_ = cw.Write([]string{"received_at", "event_id", "type", "source", "user", "transaction_id", "subscription_id", "destination", "state", "attempts", "last_status", "reason", "last_error", "updated_at", "delivered_at", "key"})
	} else {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte("[\n"))
	}
	n := 0
	for {
		p, err := s.DeliveryLog(f)
		if err != nil {
			return err
		}
		for _, en := range p.Entries {
			v := logView(en, f.Held)
			if cw != nil {
				_ = cw.Write([]string{ts(en.ReceivedAt), en.EventID, en.Type, en.Source, en.User, en.TransactionID, en.SubscriptionID,
					en.Destination, v.ShowState, strconv.Itoa(en.Attempts), statusText(en.LastStatus), en.Reason, en.LastError, ts(en.UpdatedAt), ts(en.DeliveredAt), en.Key})
			} else {
				js, _ := json.Marshal(v)
				if n > 0 {
					_, _ = w.Write([]byte(",\n"))
				}
				_, _ = w.Write(js)
			}
			n++
		}
		if len(p.Entries) < f.Limit || n >= maxExport || f.Offset+len(p.Entries) >= p.Total {
			break
		}
		f.Offset += len(p.Entries)
	}
	if cw != nil {
		cw.Flush()
		return cw.Error()
	}
	_, err := w.Write([]byte("\n]\n"))
	return err
}

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func statusText(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func (a *admin) exportLog(c echo.Context, f store.LogFilter, format string) error {
	return ExportLog(c.Response(), a.g.Store, f, format)
}

func (a *admin) deadGroupViews(dest string) ([]console.DeadGroup, error) {
	gs, err := a.g.Store.DeadGroups(dest)
	if err != nil {
		return nil, err
	}
	out := make([]console.DeadGroup, 0, len(gs))
	for _, g := range gs {
		v := console.DeadGroup{DeadGroup: g}
		atts, err := a.g.Store.Attempts(g.Sample.Key)
		if err != nil {
			return nil, err
		}
		if len(atts) > 0 {
			last := atts[len(atts)-1]
			v.LastResponse, v.LastRequest = last.Response, last.Request
		}
		out = append(out, v)
	}
	return out, nil
}

// deadGroups is GET /admin/api/dead/groups[?destination=]: dead deliveries
// per destination and reason, with counts and the last response.
func (a *admin) deadGroups(c echo.Context) error {
	gs, err := a.deadGroupViews(c.QueryParam("destination"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"groups": gs})
}

// resume is POST /admin/api/destinations/{name}/resume: it ends a pause
// or open circuit now and makes the destination's queued work due.
func (a *admin) resume(c echo.Context) error {
	name := c.Param("name")
	was, err := a.g.Dispatcher.Resume(c.Request().Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return webhooks.Errorf(http.StatusNotFound, webhooks.CodeNotFound, "no destination %s (configured: %s)", name, strings.Join(a.g.Dispatcher.Names(), ", "))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"destination": name, "was_held": was})
}

func (a *admin) resumeDest(ctx context.Context, name string) (bool, error) {
	return a.g.Dispatcher.Resume(ctx, name)
}

// DeliveryStatus is one destination's state for an event in the events
// list (held for pending or retrying work of a held destination).
type DeliveryStatus struct {
	Destination string `json:"destination"`
	State       string `json:"state"`
}

// eventStatuses returns each listed event's delivery states.
func (a *admin) eventStatuses(events []mapping.Event) (map[string][]DeliveryStatus, error) {
	held := a.g.Dispatcher.HeldNames()
	out := make(map[string][]DeliveryStatus, len(events))
	for _, e := range events {
		ds, err := a.g.Store.EventDeliveries(e.ID)
		if err != nil {
			return nil, err
		}
		st := []DeliveryStatus{}
		for _, d := range ds {
			s := d.State
			if (s == store.StatePending || s == store.StateRetrying) && slices.Contains(held, d.Destination) {
				s = store.StateHeld
			}
			st = append(st, DeliveryStatus{Destination: d.Destination, State: s})
		}
		out[e.ID] = st
	}
	return out, nil
}
