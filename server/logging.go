package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"regexp"

	"github.com/postback/postback/config"
	"github.com/postback/postback/mapping"
)

// NewLogger builds the gateway's slog logger. As a last line of defence it
// masks every configured secret, and every email address and phone number
// (mapping's detector, the one that keeps them off the disk), in attribute
// values, whatever a caller passed.
func NewLogger(w io.Writer, cfg config.Log, secrets []string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Level))
	var sec []string
	for _, s := range secrets {
		if len(s) >= 6 {
			sec = append(sec, s)
		}
	}
	opts := &slog.HandlerOptions{
		Level: lvl,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindAny && a.Value.Any() == nil {
				// "err", nil is no error: no err=<nil> in the logs.
				return slog.Attr{}
			}
			switch a.Value.Kind() {
			case slog.KindDuration:
				// Human units in both formats (JSON would print nanoseconds).
				a.Value = slog.StringValue(humanDuration(a.Value.Duration()))
			case slog.KindString:
				a.Value = slog.StringValue(Mask(a.Value.String(), sec))
			case slog.KindAny:
				if err, ok := a.Value.Any().(error); ok && err != nil {
					a.Value = slog.StringValue(Mask(err.Error(), sec))
				} else if s, ok := a.Value.Any().(fmt.Stringer); ok && s != nil {
					a.Value = slog.StringValue(Mask(s.String(), sec))
				}
			}
			return a
		},
	}
	if cfg.Format == "json" {
		return slog.New(requestIDHandler{slog.NewJSONHandler(w, opts)})
	}
	return slog.New(requestIDHandler{slog.NewTextHandler(w, opts)})
}

// requestIDKey carries a request's id in its context.
type requestIDKey struct{}

// RequestID returns the id of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withRequestID returns ctx carrying id.
func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// validRequestID accepts a caller's X-Request-Id when it is short and plain.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{8,64}$`)

// newRequestID is 16 hex digits of randomness.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestIDHandler adds request_id to every line logged with the context of
// a request (the request line and the notification line share it).
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}

// Mask replaces secrets (config.Config.Secrets: by key name, header values
// and URL credentials), the userinfo and query values of any URL, email
// addresses and phone numbers in s.
func Mask(s string, secrets []string) string {
	return mapping.MaskPII(config.MaskText(s, secrets))
}
