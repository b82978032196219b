package server

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/postback/postback/config"
)

// Issue 15, item 4: the log masker gets the same secrets as check-config
// (header values, URL userinfo and query credentials) and masks URLs by
// place, emails and phones by the one detector.
func TestLogMaskerRedactsByPlace(t *testing.T) {
	y := `
sources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: false}}
destinations:
  - name: backend
    type: webhook
    endpoint: "https://svc:pw-0f3a9c2e71@hooks.example.com/in?token=qs_9b7e5d3c1a2f"
    secret: whsec_d2ViaG9vay1zZWNyZXQtdmFsdWU=
    headers: {Authorization: "Bearer tok_live_51HxYz0123abcdef"}
`
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := NewLogger(&buf, config.Log{Level: "info", Format: "json"}, cfg.Secrets())
	log.Error("delivery failed",
		"err", errors.New("POST https://svc:pw-0f3a9c2e71@hooks.example.com/in?token=qs_9b7e5d3c1a2f: 401"),
		"header", "Authorization: Bearer tok_live_51HxYz0123abcdef",
		"bare", "tok_live_51HxYz0123abcdef",
		"other", fmt.Sprintf("retry https://unknown.example/x?sig=%s", "abc123"),
		"user", "jane@example.com", "phone", "+1 650 555 1234")
	out := buf.String()
	for _, s := range []string{"pw-0f3a9c2e71", "qs_9b7e5d3c1a2f", "tok_live_51HxYz0123abcdef", "abc123", "jane@example.com", "650 555 1234"} {
		if strings.Contains(out, s) {
			t.Errorf("log contains %q: %s", s, out)
		}
	}
	for _, keep := range []string{"hooks.example.com/in?token=[redacted]", "unknown.example/x?sig=[redacted]", "[email]", "[phone]"} {
		if !strings.Contains(out, keep) {
			t.Errorf("log lacks %q: %s", keep, out)
		}
	}
}
