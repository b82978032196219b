package config

import (
	"errors"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"
)

// Secrets are recognized by the key that holds them (secretKey) and by the
// place a value sits in, whatever its key is called:
//
//   - every value of a header mapping (destinations' headers: the
//     Authorization: Bearer ... of a webhook destination);
//   - the userinfo of a URL (https://user:password@host, postgres://...);
//   - the query values of a URL (https://host/hook?token=...).
//
// Redacted masks these in place; Secrets returns them for the log masker
// and for start-up errors, so the three outputs agree.

// headerKey reports whether key names a mapping of HTTP headers.
func headerKey(key string) bool {
	k := strings.ToLower(key)
	return k == "headers" || strings.HasSuffix(k, "_headers")
}

// isSecretKey reports whether a scalar under key is a secret by its key.
func isSecretKey(key string) bool {
	return headerKey(key) || secretKey.MatchString(key) && key != "key_id" && key != "token_url"
}

// urlSpans returns the URLs inside text (scalars, error messages, request
// dumps) as [start, end) pairs: a scheme (a letter, then letters, digits,
// '+', '-' or '.'), "://", and one or more bytes up to white space, a quote
// or '<', '>' or '`'. It finds what the regular expression
// [A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>`]+ finds, left to right and without
// overlaps (redact_test.go checks it against that expression), in one pass
// over the text instead of a match attempt at every byte: request dumps
// of several kilobytes pass through it for every delivery.
func urlSpans(s string) [][2]int {
	var out [][2]int
	for from := 0; ; {
		i := strings.Index(s[from:], "://")
		if i < 0 {
			return out
		}
		i += from
		start := i
		for start > from && schemeByte(s[start-1]) {
			start--
		}
		for start < i && !isLetter(s[start]) {
			start++
		}
		end := i + 3
		for end < len(s) && urlByte(s[end]) {
			end++
		}
		if start == i || end == i+3 {
			from = i + 1 // "123://" or "http://" then nothing: no URL here
			continue
		}
		out = append(out, [2]int{start, end})
		from = end
	}
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func schemeByte(c byte) bool {
	return isLetter(c) || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}

func urlByte(c byte) bool {
	switch c {
	case '\t', '\n', '\f', '\r', ' ', '"', '\'', '<', '>', '`':
		return false
	}
	return true
}

// RedactURLs masks the userinfo and every query value of each URL in s:
// "https://u:p@host/x?token=abc&v=1" becomes
// "https://[redacted]@host/x?token=[redacted]&v=[redacted]".
func RedactURLs(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	spans := urlSpans(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16*len(spans))
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp[0]])
		b.WriteString(redactURL(s[sp[0]:sp[1]]))
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

func redactURL(raw string) string {
	scheme, rest, _ := strings.Cut(raw, "://")
	// Userinfo ends at the last '@' before the path.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
		rest = "[redacted]" + rest[at:]
	}
	q := strings.IndexByte(rest, '?')
	if q < 0 {
		return scheme + "://" + rest
	}
	query, frag, hasFrag := strings.Cut(rest[q+1:], "#")
	parts := strings.Split(query, "&")
	for i, p := range parts {
		if k, v, ok := strings.Cut(p, "="); ok && v != "" {
			parts[i] = k + "=[redacted]"
		}
	}
	out := scheme + "://" + rest[:q+1] + strings.Join(parts, "&")
	if hasFrag {
		out += "#" + frag
	}
	return out
}

// placeSecrets returns the secret parts of a scalar by its place: for a URL
// its userinfo password (or a username that looks like a credential) and
// its query values whose name says secret or that look like a credential.
// Short or plain values ("v=1", "region=eu") are masked in place by
// Redacted but not added to the log masker's set, where they would mask
// ordinary words everywhere.
func placeSecrets(v string) []string {
	var out []string
	for _, sp := range urlSpans(v) {
		raw := v[sp[0]:sp[1]]
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if u.User != nil {
			if p, ok := u.User.Password(); ok && len(p) >= 6 {
				out = append(out, p)
			} else if n := u.User.Username(); !ok && looksLikeCredential(n) {
				out = append(out, n)
			}
		}
		for k, vs := range u.Query() {
			for _, qv := range vs {
				if len(qv) >= 6 && (secretKey.MatchString(k) || looksLikeCredential(qv) || strings.Contains(strings.ToLower(k), "sig") ||
					strings.Contains(strings.ToLower(k), "auth")) {
					out = append(out, qv)
				}
			}
		}
	}
	return out
}

// headerSecrets returns a header value and, for "<scheme> <credential>",
// the credential alone.
func headerSecrets(v string) []string {
	var out []string
	if len(v) >= 6 {
		out = append(out, v)
	}
	if _, cred, ok := strings.Cut(strings.TrimSpace(v), " "); ok && len(strings.TrimSpace(cred)) >= 6 {
		out = append(out, strings.TrimSpace(cred))
	}
	return out
}

// looksLikeCredential reports whether v is a long token mixing letters and
// digits (an API key, a signature), not a word.
func looksLikeCredential(v string) bool {
	if len(v) < 16 || strings.ContainsAny(v, " \t") {
		return false
	}
	var letter, digit bool
	for _, r := range v {
		switch {
		case r >= '0' && r <= '9':
			digit = true
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			letter = true
		}
	}
	return letter && digit
}

// secretsOf walks a configuration tree and returns every secret value: by
// key (at least 6 characters), every header value, and the credentials in
// URLs.
func secretsOf(root *yaml.Node) []string {
	var out []string
	seen := map[string]bool{}
	add := func(vs ...string) {
		for _, v := range vs {
			if v != "" && !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, ch := range n.Content {
				walk(ch, key)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], childKey(key, n.Content[i].Value))
			}
		case yaml.ScalarNode:
			switch {
			case headerKey(key):
				add(headerSecrets(n.Value)...)
			case isSecretKey(key) && len(n.Value) >= 6:
				add(n.Value)
			default:
				add(placeSecrets(n.Value)...)
			}
		}
	}
	walk(root, "")
	return out
}

// MaskText masks secrets and URL credentials in s (an error message, a log
// value).
func MaskText(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return RedactURLs(s)
}

// Mask masks the configuration's secrets and any URL credentials in s, for
// errors printed at start-up and by check-config.
func (c *Config) Mask(s string) string { return MaskText(s, c.Secrets()) }

// maskedError shows a masked message but keeps the cause for errors.Is.
type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

// MaskError returns err with its message masked by MaskText (nil stays
// nil; errors.Is and errors.As still see the cause).
func MaskError(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := MaskText(err.Error(), secrets)
	if msg == err.Error() {
		return err
	}
	var me *maskedError
	if errors.As(err, &me) && me.msg == msg {
		return err
	}
	return &maskedError{msg: msg, err: err}
}
