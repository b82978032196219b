package console

import (
	"context"
	"html/template"
	"net/http"
	"slices"
	"time"
)

// InboundRequest is one recent inbound webhook or /v1 request (the
// server's per-process log; never a body).
type InboundRequest struct {
	At         time.Time
	RequestID  string
	Source     string
	Method     string
	Path       string
	Status     int
	Outcome    string // accepted, duplicate, ignored, failed, rejected, client_closed
	Reason     string
	Type       string
	EventIDs   []string
	Remote     string
	DurationMs float64
}

// InboundBackend is the optional part of a Backend that serves the Requests
// page; without it the page says the log is not available.
type InboundBackend interface {
	// InboundRequests returns the newest requests first (at most limit;
	// source and outcome filter when not empty), how many the process saw
	// since it started, and how many the log keeps.
	InboundRequests(source, outcome string, limit int) (reqs []InboundRequest, seen int64, capacity int)
}

// RequestSources and RequestOutcomes are the filter choices of the page.
var (
	RequestSources  = []string{"apple", "google", "stripe", "shopify", "custom"}
	RequestOutcomes = []string{"accepted", "duplicate", "ignored", "failed", "rejected", "client_closed"}
)

type requestsData struct {
	Available         bool
	Source, Outcome   string
	Sources, Outcomes []string
	Requests          []InboundRequest
	Seen              int64
	Capacity          int
}

// mountRequests adds the Requests page: its template and route.
func (c *Console) mountRequests(m *http.ServeMux, base *template.Template) error {
	t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/requests.html")
	if err != nil {
		return err
	}
	c.pages["requests"] = t
	m.HandleFunc("GET "+Prefix+"/requests", c.authed(c.requests))
	return nil
}

func (c *Console) requests(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := requestsData{Source: q.Get("source"), Outcome: q.Get("outcome"), Sources: RequestSources, Outcomes: RequestOutcomes}
	if !slices.Contains(RequestSources, d.Source) {
		d.Source = ""
	}
	if !slices.Contains(RequestOutcomes, d.Outcome) {
		d.Outcome = ""
	}
	if ib, ok := c.b.(InboundBackend); ok {
		d.Available = true
		d.Requests, d.Seen, d.Capacity = ib.InboundRequests(d.Source, d.Outcome, 200)
	}
	c.render(w, r, s, http.StatusOK, "requests", "Requests", d)
}

type secureKey struct{}

// WithSecure marks a request context as having reached the gateway over
// HTTPS (directly, or through a trusted proxy that says so): the console's
// cookies are then Secure.
func WithSecure(ctx context.Context) context.Context {
	return context.WithValue(ctx, secureKey{}, true)
}

// isSecure reports whether the request came over HTTPS.
func isSecure(r *http.Request) bool {
	v, _ := r.Context().Value(secureKey{}).(bool)
	return r.TLS != nil || v
}
