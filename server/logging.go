package server

import (
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"

	"github.com/postback/postback/config"
)

// emailRE finds email addresses in log values.
var emailRE = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}`)

// NewLogger builds the gateway's slog logger. As a last line of defence it
// masks every configured secret and anything shaped like an email address in
// attribute values, whatever a caller passed.
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
			switch a.Value.Kind() {
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
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Mask replaces secrets and email addresses in s.
func Mask(s string, secrets []string) string {
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	if strings.Contains(s, "@") {
		s = emailRE.ReplaceAllString(s, "[email]")
	}
	return s
}
