package webhooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/store"
)

// Error is an HTTP error: Status and Code/Message are what the client sees;
// Err is logged and never shown. The server's error handler renders every
// Error as {"error": {"code": ..., "message": ...}}.
type Error struct {
	Status  int
	Code    string
	Message string
	Err     error
	// Fields lists each invalid request field (validation errors of the /v1
	// API); rendered as "fields" next to code and message when not empty.
	Fields []FieldError
}

// FieldError names one invalid field of a request body, by its JSON path
// ("events[3].revenue.currency"), and says what is wrong with it.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ErrorBody is the JSON shape of every error answer:
// {"error": {"code": ..., "message": ..., "fields": [...]}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Fields  []FieldError `json:"fields,omitempty"`
}

// Body renders the error as the client sees it (never Err).
func (e *Error) Body() ErrorBody {
	return ErrorBody{Error: ErrorDetail{Code: e.Code, Message: e.Message, Fields: e.Fields}}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap builds an Error around a cause that is logged but not shown.
func Wrap(status int, code, msg string, err error) *Error {
	return &Error{Status: status, Code: code, Message: msg, Err: err}
}

// Reason codes shared by every source (metric label and error code).
const (
	CodeTooLarge     = "body_too_large"
	CodeMalformed    = "malformed"
	CodeUnauthorized = "unauthorized"
	CodeSignature    = "invalid_signature"
	CodeStale        = "stale"
	CodeUnknownApp   = "unknown_app"
	CodeEnvironment  = "environment_not_accepted"
	CodeUnavailable  = "store_unavailable"
	// CodeClientClosed: the client hung up before the request was read or
	// stored (HTTP 499, nginx's code); nothing was acknowledged, the source
	// retries. Not a store failure.
	CodeClientClosed = "client_closed"
	CodeConflict     = "conflict"
	CodeNotFound     = "not_found"
	CodeInvalid      = "invalid"
	CodeInternal     = "internal"
)

// Ingester is what webhooks need from the store.
type Ingester interface {
	Ingest(ctx context.Context, n *mapping.Notification) (store.IngestResult, error)
}

// Deps are the collaborators every source handler shares.
type Deps struct {
	Store   Ingester
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	Now     func() time.Time
	MaxBody int64
	// Observe, when set, is told the outcome of every notification that
	// reached the store (the server's log of inbound requests).
	Observe func(ctx context.Context, n *mapping.Notification, res store.IngestResult)
}

// ReadBody reads the raw body once, at most max bytes; more is a 413. It is
// the only way handlers read a body: nothing is decoded before verification.
func ReadBody(c echo.Context, max int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > max {
		return nil, Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body larger than %d bytes", max)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		if r.Context().Err() != nil || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, Wrap(StatusClientClosed, CodeClientClosed, "client closed the request before its body was read", err)
		}
		return nil, Wrap(http.StatusBadRequest, CodeMalformed, "could not read body", err)
	}
	if int64(len(body)) > max {
		return nil, Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body larger than %d bytes", max)
	}
	return body, nil
}

// Reject counts a rejected notification and returns err for the handler to
// return. Only the reason code and the source are logged, never the body.
func (d *Deps) Reject(source string, err *Error) *Error {
	d.Metrics.Rejected.WithLabelValues(source, err.Code).Inc()
	args := []any{"source", source, "status", err.Status, "reason", err.Code}
	if err.Err != nil {
		args = append(args, "err", err.Err)
	}
	if err.Code == CodeClientClosed {
		d.Logger.Info("client closed the request; the source will retry", args...)
		return err
	}
	d.Logger.Warn("notification rejected", args...)
	return err
}

// StatusClientClosed is the status recorded for a request whose client hung
// up (nginx's 499); the client never sees it.
const StatusClientClosed = 499

// Accept stores a verified notification and reports the outcome. A store
// failure is a 503 so that the source retries; nothing is acknowledged
// before the commit is durable.
func (d *Deps) Accept(ctx context.Context, n *mapping.Notification) (store.IngestResult, error) {
	start := time.Now()
	d.Metrics.Verified.WithLabelValues(n.Source).Inc()
	if n.ReceivedAt.IsZero() {
		n.ReceivedAt = d.Now().UTC()
	}
	// Raw emails and phones never reach the disk: hash them in the body
	// before it is stored (mapping accepts the hashed forms).
	n.Body = mapping.ScrubPII(n.Body)
	res, err := d.Store.Ingest(ctx, n)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// The client hung up while the notification was being stored:
			// the store is fine, and the source retries.
			d.Metrics.Rejected.WithLabelValues(n.Source, CodeClientClosed).Inc()
			d.Logger.InfoContext(ctx, "client closed the request before the notification was stored; the source will retry", "source", n.Source, "key", n.Key)
			return res, Wrap(StatusClientClosed, CodeClientClosed, "client closed the request", err)
		}
		d.Metrics.Rejected.WithLabelValues(n.Source, CodeUnavailable).Inc()
		d.Logger.ErrorContext(ctx, "store failed; source will retry", "source", n.Source, "key", n.Key, "err", err)
		return res, Wrap(http.StatusServiceUnavailable, CodeUnavailable, "temporarily unable to store the notification; retry later", err)
	}
	d.Metrics.ObserveIngest(n.Source, time.Since(start))
	if d.Observe != nil {
		d.Observe(ctx, n, res)
	}
	switch {
	case res.Duplicate:
		d.Metrics.Duplicates.WithLabelValues(n.Source).Inc()
		d.Logger.InfoContext(ctx, "duplicate notification", "source", n.Source, "key", n.Key, "type", n.Type)
	case res.Status == mapping.StatusIgnored || res.Status == mapping.StatusFailed:
		d.Metrics.Ignored.WithLabelValues(n.Source).Inc()
		d.Logger.InfoContext(ctx, "notification stored without event", "source", n.Source, "key", n.Key, "type", n.Type, "status", res.Status, "reason", res.Reason)
	default:
		d.Metrics.CountEvents(res.Events)
		d.Logger.InfoContext(ctx, "notification accepted", "source", n.Source, "key", n.Key, "type", n.Type, "status", res.Status, "events", len(res.Events), "repeats", res.Repeats)
	}
	return res, nil
}

// Ack is the JSON body answered to an accepted notification.
type Ack struct {
	Status    string   `json:"status"` // accepted | duplicate
	EventIDs  []string `json:"event_ids,omitempty"`
	Ignored   string   `json:"ignored,omitempty"`
	Duplicate bool     `json:"duplicate,omitempty"`
}

// AckOf renders an ingest result.
func AckOf(res store.IngestResult) Ack {
	a := Ack{Status: "accepted"}
	if res.Duplicate {
		a.Status, a.Duplicate = "duplicate", true
		if res.Existing != nil {
			a.EventIDs = res.Existing.EventIDs
		}
		return a
	}
	for _, e := range res.Events {
		a.EventIDs = append(a.EventIDs, e.ID)
	}
	if res.Status == mapping.StatusIgnored {
		a.Ignored = res.Reason
	}
	return a
}

// AsError converts any error into an *Error (unknown errors are internal).
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Wrap(http.StatusInternalServerError, CodeInternal, "internal error", err)
}
