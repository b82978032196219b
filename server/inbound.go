package server

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/console"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// InboundLogSize is how many inbound requests the log keeps: the newest,
// in this process's memory only (a restart empties it; each replica keeps
// its own).
const InboundLogSize = 1000

// Inbound is one inbound webhook or /v1 request as the log of recent
// requests shows it: who sent it, what was answered and why. Never a body.
type Inbound struct {
	At         time.Time `json:"at"`
	RequestID  string    `json:"request_id"`
	Source     string    `json:"source"`
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Status     int       `json:"status"`
	Outcome    string    `json:"outcome"` // accepted, duplicate, ignored, failed, rejected, client_closed
	Reason     string    `json:"reason,omitempty"`
	Type       string    `json:"type,omitempty"` // the notification's own type, once verified
	Key        string    `json:"key,omitempty"`
	EventIDs   []string  `json:"event_ids,omitempty"`
	Remote     string    `json:"remote"`
	DurationMs float64   `json:"duration_ms"`
}

// Inbound outcomes.
const (
	OutcomeAccepted     = "accepted"
	OutcomeDuplicate    = "duplicate"
	OutcomeIgnored      = "ignored"
	OutcomeFailed       = "failed" // stored, mapping failed (kept for reprocess)
	OutcomeRejected     = "rejected"
	OutcomeClientClosed = "client_closed"
)

// InboundOutcomes lists the outcomes in the order the page filters them.
var InboundOutcomes = []string{OutcomeAccepted, OutcomeDuplicate, OutcomeIgnored, OutcomeFailed, OutcomeRejected, OutcomeClientClosed}

// inboundLog is a ring of the newest InboundLogSize requests.
type inboundLog struct {
	mu    sync.Mutex
	ring  []Inbound
	next  int
	total int64
}

func (l *inboundLog) add(r Inbound) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < InboundLogSize {
		l.ring = append(l.ring, r)
	} else {
		l.ring[l.next] = r
	}
	l.next = (l.next + 1) % InboundLogSize
	l.total++
}

// InboundFilter selects requests; zero values match all.
type InboundFilter struct {
	Source, Outcome string
	Limit           int
}

// list returns the newest matching requests first, and how many the
// process has seen since it started.
func (l *inboundLog) list(f InboundFilter) ([]Inbound, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []Inbound{}
	for i := 0; i < len(l.ring); i++ {
		// newest first: the slot before next, backwards
		r := l.ring[(l.next-1-i+2*len(l.ring))%len(l.ring)]
		if f.Source != "" && r.Source != f.Source {
			continue
		}
		if f.Outcome != "" && r.Outcome != f.Outcome {
			continue
		}
		out = append(out, r)
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	return out, l.total
}

// InboundRequests returns the newest inbound requests first (this process
// only) and the number seen since start-up.
func (g *Gateway) InboundRequests(f InboundFilter) ([]Inbound, int64) {
	return g.inbound.list(f)
}

// inboundNote is filled by the webhook handlers (Deps.Observe) while the
// request runs, then completed by the request log.
type inboundNote struct {
	typ, key, outcome, reason string
	events                    []string
}

type inboundNoteKey struct{}

// inboundSource names the source of a notification request (a POST to a
// source's webhook path, or to /v1/events), or "" for everything else
// (health, admin, console, the identity API).
func inboundSource(method, path string) string {
	if method != http.MethodPost {
		return ""
	}
	if s, ok := strings.CutPrefix(path, "/webhooks/"); ok && s != "" && !strings.Contains(s, "/") {
		return s
	}
	if path == "/v1/events" {
		return mapping.SourceCustom
	}
	return ""
}

// withInboundNote returns ctx carrying a note for a notification request.
func withInboundNote(ctx context.Context) (context.Context, *inboundNote) {
	n := &inboundNote{}
	return context.WithValue(ctx, inboundNoteKey{}, n), n
}

// observeIngest is Deps.Observe: it notes what the store made of the
// notification.
func observeIngest(ctx context.Context, n *mapping.Notification, res store.IngestResult) {
	note, _ := ctx.Value(inboundNoteKey{}).(*inboundNote)
	if note == nil {
		return
	}
	note.typ, note.key = n.Type, n.Key
	switch {
	case res.Duplicate:
		note.outcome = OutcomeDuplicate
		if res.Existing != nil {
			note.events = res.Existing.EventIDs
		}
	case res.Status == mapping.StatusIgnored:
		note.outcome, note.reason = OutcomeIgnored, res.Reason
	case res.Status == mapping.StatusFailed:
		note.outcome, note.reason = OutcomeFailed, res.Reason
	default:
		note.outcome = OutcomeAccepted
		for _, e := range res.Events {
			note.events = append(note.events, e.ID)
		}
	}
}

// recordInbound adds a finished notification request to the log.
func (g *Gateway) recordInbound(c echo.Context, note *inboundNote, source string, status int, reason string, start time.Time) {
	r := Inbound{
		At: start.UTC(), RequestID: RequestID(c.Request().Context()), Source: source,
		Method: c.Request().Method, Path: c.Request().URL.Path, Status: status,
		Remote: c.RealIP(), DurationMs: float64(time.Since(start).Microseconds()) / 1000,
	}
	if note != nil {
		r.Type, r.Key, r.EventIDs, r.Outcome, r.Reason = note.typ, note.key, note.events, note.outcome, note.reason
	}
	switch {
	case status == webhooks.StatusClientClosed:
		r.Outcome, r.Reason = OutcomeClientClosed, webhooks.CodeClientClosed
	case status >= 400:
		r.Outcome, r.Reason = OutcomeRejected, reason
		if r.Reason == "" {
			r.Reason = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
		}
	case r.Outcome == "":
		// Answered 2xx without reaching the store (an identity update of
		// /v1/users, a batch of nothing).
		r.Outcome = OutcomeAccepted
	}
	g.inbound.add(r)
}

// mountInbound registers GET /admin/api/requests: the log of recent
// inbound requests.
func (g *Gateway) mountInbound() {
	if g.adminAPI == nil {
		return
	}
	g.Admin.GET("/admin/api/requests", g.listInbound, g.adminAPI.auth)
}

func (g *Gateway) listInbound(c echo.Context) error {
	f := InboundFilter{Source: c.QueryParam("source"), Outcome: c.QueryParam("outcome"), Limit: 100}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > InboundLogSize {
			return webhooks.Errorf(http.StatusBadRequest, webhooks.CodeInvalid, "limit must be between 1 and %d", InboundLogSize)
		}
		f.Limit = n
	}
	if f.Outcome != "" && !slices.Contains(InboundOutcomes, f.Outcome) {
		return webhooks.Errorf(http.StatusBadRequest, webhooks.CodeInvalid, "outcome %q is not one of %s", f.Outcome, strings.Join(InboundOutcomes, ", "))
	}
	reqs, total := g.InboundRequests(f)
	return c.JSON(http.StatusOK, map[string]any{
		"requests": reqs, "seen_since_start": total, "capacity": InboundLogSize,
		"note": "in this process's memory only: the newest " + strconv.Itoa(InboundLogSize) + " requests since it started; never a body",
	})
}

var _ console.InboundBackend = consoleBackend{}

// InboundRequests serves the console's Requests page.
func (b consoleBackend) InboundRequests(source, outcome string, limit int) ([]console.InboundRequest, int64, int) {
	reqs, seen := b.a.g.InboundRequests(InboundFilter{Source: source, Outcome: outcome, Limit: limit})
	out := make([]console.InboundRequest, len(reqs))
	for i, r := range reqs {
		out[i] = console.InboundRequest{At: r.At, RequestID: r.RequestID, Source: r.Source, Method: r.Method, Path: r.Path,
			Status: r.Status, Outcome: r.Outcome, Reason: r.Reason, Type: r.Type, EventIDs: r.EventIDs, Remote: r.Remote, DurationMs: r.DurationMs}
	}
	return out, seen, InboundLogSize
}
