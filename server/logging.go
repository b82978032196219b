package server

import (
	"fmt"
	"io"
	"log/slog"

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

// Mask replaces secrets (config.Config.Secrets: by key name, header values
// and URL credentials), the userinfo and query values of any URL, email
// addresses and phone numbers in s.
func Mask(s string, secrets []string) string {
	return mapping.MaskPII(config.MaskText(s, secrets))
}
