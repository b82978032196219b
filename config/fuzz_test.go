package config

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must return a config or an
// error wrapping one of the package's sentinel errors, never panic; a
// config that parses must validate again, and its redacted form must not
// contain its secrets.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add(Default)
	f.Add([]byte(minimal + "api_keys: [${KEY}]\n"))
	f.Add([]byte(minimal + "destinations:\n  - {name: a, type: webhook, endpoint: 'http://127.0.0.1:1/x', secret: 'whsec_c2VjcmV0'}\n"))
	f.Add([]byte("server: {max_body_bytes: -1}\n"))
	f.Add([]byte("storage: {retention: 1y}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("- 1\n- 2\n"))
	f.Add([]byte("server: ${UNSET:-}\n"))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte(""))
	getenv := env("KEY", "fuzz-api-key-1234567890", "SECRET", "whsec_ZnV6eg==")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, getenv)
		if err != nil {
			if c != nil {
				t.Fatal("an error with a config")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("a parsed config does not validate again: %v", err)
		}
		out, err := c.Redacted()
		if err != nil {
			if errors.Is(err, ErrInvalid) {
				return
			}
			t.Fatalf("redact: %v", err)
		}
		for _, s := range c.Secrets() {
			if len(s) >= 8 && bytes.Contains(out, []byte(s)) {
				t.Fatalf("secret %.3s... in redacted output", s)
			}
		}
	})
}

// urlRE is the expression urlSpans replaces; the fuzz target below checks
// that both find the same URLs.
var urlRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>` + "`" + `]+`)

// FuzzURLSpans checks the hand-written URL finder against the regular
// expression it replaces, on any text (invalid UTF-8 included).
func FuzzURLSpans(f *testing.F) {
	for _, s := range []string{"", "plain", "https://h/x?a=1", "x123://a", "1://b", "a:// b://c", `"postgres://u:p@h/d?x=1"`,
		"http://a\thttps://b", "::://", "a-b.c+d://x y", "é://x", "a\xffb://\xfe\xff", "http://", "ftp://x://y", "://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := urlRE.FindAllStringIndex(s, -1)
		got := urlSpans(s)
		if len(want) != len(got) {
			t.Fatalf("urlSpans(%q) = %v, want %v", s, got, want)
		}
		for i := range want {
			if want[i][0] != got[i][0] || want[i][1] != got[i][1] {
				t.Fatalf("urlSpans(%q) = %v, want %v", s, got, want)
			}
		}
		if r, w := RedactURLs(s), urlRE.ReplaceAllStringFunc(s, redactURL); r != w && strings.Contains(s, "://") {
			t.Fatalf("RedactURLs(%q) = %q, want %q", s, r, w)
		}
	})
}
