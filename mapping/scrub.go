package mapping

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
)

// ScrubPII rewrites a JSON document so that no raw email or phone number is
// stored: every string under a key containing "email" becomes its normalized
// SHA-256 (64 hex), every string under a key containing "phone" becomes
// "<sha256 digits>:<sha256 E.164>" (the two forms networks ask for), which
// SetEmail and SetPhone accept as already hashed. Numbers keep their exact
// text. A body that is not JSON is returned unchanged.
func ScrubPII(body []byte) []byte {
	// Keys match case-insensitively ("Email", "PHONE"), so the quick
	// check must too.
	if !containsFoldASCII(body, "mail") && !containsFoldASCII(body, "phone") {
		return body
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return body
	}
	// Data after the first value means the body is not one JSON document;
	// re-encoding only the first value would silently drop the rest.
	if _, err := dec.Token(); err != io.EOF {
		return body
	}
	changed := false
	v = scrub(v, "", &changed)
	if !changed {
		return body
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return body
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

func scrub(v any, key string, changed *bool) any {
	switch x := v.(type) {
	case map[string]any:
		// Name/value pairs (Shopify note_attributes, custom attributes):
		// {"name": "email", "value": "..."} is scrubbed as key "email".
		for _, nk := range []string{"name", "key"} {
			if n, ok := x[nk].(string); ok {
				if _, ok := x["value"]; ok {
					x["value"] = scrub(x["value"], strings.ToLower(n), changed)
				}
			}
		}
		for k, c := range x {
			x[k] = scrub(c, strings.ToLower(k), changed)
		}
	case []any:
		for i, c := range x {
			x[i] = scrub(c, key, changed)
		}
	case string:
		if x == "" {
			return x
		}
		switch {
		case strings.Contains(key, "email"):
			ids := map[string]string{}
			if SetEmail(ids, x) {
				if ids[IDEmailSHA256] != x {
					*changed = true
				}
				return ids[IDEmailSHA256]
			}
		case strings.Contains(key, "phone"):
			if isHashedPhone(x) {
				return x
			}
			if n := NormalizePhone(x); n != "" {
				*changed = true
				return SHA256Hex(n) + ":" + SHA256Hex("+"+n)
			}
		}
	}
	return v
}

// isHashedPhone reports whether s is ScrubPII's phone form or a bare hash.
func isHashedPhone(s string) bool {
	a, b, ok := strings.Cut(strings.ToLower(s), ":")
	if !ok {
		return IsSHA256Hex(a)
	}
	return IsSHA256Hex(a) && IsSHA256Hex(b)
}

// containsFoldASCII reports whether b contains the lower-case ASCII word s in
// any letter case, without copying b.
func containsFoldASCII(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		j := 0
		for j < len(s) && b[i+j]|0x20 == s[j] {
			j++
		}
		if j == len(s) {
			return true
		}
	}
	return false
}
