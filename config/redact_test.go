package config

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// placeConfig holds secrets under keys that do not say so: a header value,
// a URL's userinfo, URL query values.
const placeConfig = minimal + `destinations:
  - name: backend
    type: webhook
    endpoint: "https://svc-user:pw-0f3a9c2e71@hooks.example.com/in?token=qs_9b7e5d3c1a2f&region=eu"
    secret: whsec_d2ViaG9vay1zZWNyZXQtdmFsdWU=
    headers:
      Authorization: "Bearer tok_live_51HxYz0123abcdef"
      X-Api-Token: "hdr-7c41e9d0b2"
  - name: tokenuser
    type: webhook
    endpoint: "https://ghp0123456789abcdefABCD@git.example.com/hook"
    secret: whsec_d2ViaG9vay1zZWNyZXQtdmFsdWU=
`

var placeSecretsPlanted = []string{"pw-0f3a9c2e71", "qs_9b7e5d3c1a2f", "tok_live_51HxYz0123abcdef", "hdr-7c41e9d0b2", "ghp0123456789abcdefABCD"}

// Issue 15, item 4: check-config's output redacts by the value's place.
func TestRedactedByPlace(t *testing.T) {
	c, err := Parse([]byte(placeConfig), env())
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range placeSecretsPlanted {
		if bytes.Contains(out, []byte(s)) {
			t.Errorf("Redacted() contains %q:\n%s", s, out)
		}
	}
	for _, keep := range []string{"hooks.example.com/in?token=[redacted]&region=[redacted]", "https://[redacted]@hooks.example.com",
		"Authorization: '[redacted]'", "X-Api-Token: '[redacted]'", "https://[redacted]@git.example.com/hook"} {
		if !bytes.Contains(out, []byte(keep)) {
			t.Errorf("Redacted() lacks %q:\n%s", keep, out)
		}
	}
	// The same values are in the set fed to the log masker; plain words
	// ("eu", the user name) are not, or they would be masked everywhere.
	got := c.Secrets()
	for _, s := range append(placeSecretsPlanted, "Bearer tok_live_51HxYz0123abcdef") {
		if !slices.Contains(got, s) {
			t.Errorf("Secrets() lacks %q: %q", s, got)
		}
	}
	for _, s := range []string{"eu", "svc-user", "backend", "https://hooks.example.com"} {
		if slices.Contains(got, s) {
			t.Errorf("Secrets() holds the plain value %q", s)
		}
	}
}

// Validation errors quote values: they are masked, and still ErrInvalid.
func TestErrorsDoNotPrintSecrets(t *testing.T) {
	tests := []struct {
		name, yaml string
		key        string // the key the error must still name
	}{
		{"endpoint that is not http", minimal + `destinations:
  - {name: b, type: webhook, endpoint: "ftp://ops:pw-0f3a9c2e71@files.example.com/?token=qs_9b7e5d3c1a2f", secret: whsec_d2ViaG9vay1zZWNyZXQtdmFsdWU=}
`, "endpoint"},
		{"header value copied into a bad name", minimal + `destinations:
  - {name: "x hdr-7c41e9d0b2", type: webhook, endpoint: "https://h.example.com", secret: whsec_d2ViaG9vay1zZWNyZXQtdmFsdWU=, headers: {X-Api-Token: "hdr-7c41e9d0b2"}}
`, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), env())
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
			for _, s := range placeSecretsPlanted {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error prints %q: %v", s, err)
				}
			}
			if !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), "[redacted]") {
				t.Errorf("error %q should name %s and show [redacted]", err, tt.key)
			}
		})
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":                                                   "plain text",
		"https://example.com/hook":                                     "https://example.com/hook",
		"https://u:p@h.example/x?a=1&b=&c#f":                           "https://[redacted]@h.example/x?a=[redacted]&b=&c#f",
		"post to https://h/x?key=abc failed":                           "post to https://h/x?key=[redacted] failed",
		`dial "postgres://app:pw@db:5432/pb?sslmode=disable": refused`: `dial "postgres://[redacted]@db:5432/pb?sslmode=[redacted]": refused`,
		"mail jane@example.com":                                        "mail jane@example.com",
		"https://h/p@th?x=1":                                           "https://h/p@th?x=[redacted]",
		"https://a@b@h.example/?t=tok1":                                "https://[redacted]@h.example/?t=[redacted]",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
	if MaskError(nil, nil) != nil {
		t.Error("MaskError(nil) is not nil")
	}
	base := errors.New("nothing secret")
	if MaskError(base, []string{"zzz"}) != base {
		t.Error("MaskError wrapped an error it did not change")
	}
}

func TestTrustedProxies(t *testing.T) {
	c, err := Parse([]byte("server: {trusted_proxies: [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\", \"10.1.2.3/8\"]}\n"+minimal), env())
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Server.TrustedPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range p {
		got = append(got, x.String())
	}
	if want := []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "10.0.0.0/8"}; !slices.Equal(got, want) {
		t.Errorf("prefixes = %v, want %v", got, want)
	}
	for _, bad := range []string{"proxy.example.com", "10.0.0.0/33", ""} {
		_, err := Parse([]byte("server: {trusted_proxies: [\""+bad+"\"]}\n"+minimal), env())
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "server.trusted_proxies[0]") {
			t.Errorf("trusted_proxies %q: err = %v, want ErrInvalid naming the key", bad, err)
		}
	}
}
