package mapping

import (
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// One detector decides what is an email or a phone number, for the log
// masker (MaskPII) and for what is stored (ScrubPII, ScrubValue): anything
// the logs would mask never reaches the disk in clear.

// emailRE finds an email address inside any text. The local part may hold
// '@' too, so that "a@b.cc@d.ee" is one match: were it cut after the first
// domain, its hash followed by "@d.ee" would be an email again, and
// scrubbing would not be idempotent.
var emailRE = regexp.MustCompile(`[A-Za-z0-9._%+\-@]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)

// phoneRE finds phone-number candidates inside text; IsPhone decides.
var phoneRE = regexp.MustCompile(`[+(]?\d[\d ().\-]{5,}\d`)

// RedactedValue replaces a value under an email or phone key that cannot be
// normalized, and so cannot be hashed in the form networks match.
const RedactedValue = "[redacted]"

// IsEmail reports whether s, trimmed, is one email address.
func IsEmail(s string) bool {
	if strings.IndexByte(s, '@') < 0 {
		return false
	}
	s = strings.TrimSpace(s)
	loc := emailRE.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s)
}

// IsPhone reports whether s, trimmed, is shaped like one phone number: an
// international "+<7 to 15 digits>" with optional separators, or 10 to 15
// digits in at least three groups ("650-555-1234", "(650) 555 1234",
// "06 12 34 56 78"). A bare run of digits is not a phone by its value alone:
// ids, timestamps and amounts look the same (under a key that says "phone"
// it is one, see ScrubPII). IP addresses and dates are not phones.
func IsPhone(s string) bool {
	s = strings.TrimSpace(s)
	if len(s) < 7 || len(s) > 32 {
		return false
	}
	plus := s[0] == '+'
	rest := s
	if plus {
		rest = s[1:]
	}
	if rest == "" || !(isDigit(rest[0]) || rest[0] == '(') || !isDigit(rest[len(rest)-1]) {
		return false
	}
	digits, groups, dotsOnly := 0, 0, true
	inRun := false
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case isDigit(c):
			digits++
			if !inRun {
				groups++
			}
			inRun = true
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')':
			inRun = false
			if c != '.' {
				dotsOnly = false
			}
		default:
			return false
		}
	}
	if digits < 7 || digits > 15 {
		return false
	}
	if plus {
		return true
	}
	if digits < 10 || groups < 3 {
		return false
	}
	if dotsOnly && groups == 4 && len(rest) <= 15 {
		return false // an IPv4 address
	}
	return !dateRE.MatchString(rest)
}

var dateRE = regexp.MustCompile(`^\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}(?:$|[ T])`)

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ContainsPII reports whether s is or contains an email address or a phone
// number.
func ContainsPII(s string) bool {
	return MaskPII(s) != s
}

// MaskPII replaces every email address in s with "[email]" and every phone
// number with "[phone]" (the log masker).
func MaskPII(s string) string {
	if !strings.ContainsAny(s, "@0123456789") {
		return s
	}
	return replacePII(s, func(string) string { return "[email]" }, func(string) string { return "[phone]" })
}

// ScrubValue is ScrubPII for one stored string outside a body (an
// Idempotency-Key, an app_user_id in a URL, an identifier value): a value
// that is an email becomes the SHA-256 of its normalized form, a phone its
// hashed forms ("<sha256 digits>:<sha256 E.164>"), and emails and phones
// inside text are replaced by their hashes. Other values are returned as
// they are. The result is deterministic, so a retried request maps to the
// same stored key.
func ScrubValue(s string) string {
	if !strings.ContainsAny(s, "@0123456789") {
		return s // neither an email nor a phone can hide here
	}
	if IsEmail(s) {
		return SHA256Hex(NormalizeEmail(s))
	}
	if IsPhone(s) {
		return hashPhone(NormalizePhone(s))
	}
	return replacePII(s,
		func(e string) string { return SHA256Hex(NormalizeEmail(e)) },
		func(p string) string { return hashPhone(NormalizePhone(p)) })
}

// hashPhone is the stored form of a normalized phone.
func hashPhone(n string) string { return SHA256Hex(n) + ":" + SHA256Hex("+"+n) }

// replacePII rewrites each email and phone inside s. Phones are looked for
// in short values and in text with spaces only: long unbroken tokens (a
// JWS, base64) are not text and must stay byte-exact.
func replacePII(s string, email, phone func(string) string) string {
	if strings.IndexByte(s, '@') >= 0 {
		s = emailRE.ReplaceAllStringFunc(s, email)
	}
	if len(s) < 7 || (len(s) > 512 && !strings.ContainsAny(s, " \t\n")) || !phoneRun(s) {
		return s
	}
	locs := phoneRE.FindAllStringIndex(s, -1)
	if locs == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, l := range locs {
		m := s[l[0]:l[1]]
		// A candidate glued to other characters is part of a token
		// ("ord_650-555-1234x", "GPA.1234-5678-9012-34567"), not a number
		// someone wrote.
		if l[0] > 0 && !strings.ContainsRune(phoneBefore, rune(s[l[0]-1])) ||
			l[1] < len(s) && !strings.ContainsRune(phoneAfter, rune(s[l[1]])) || !IsPhone(m) {
			continue
		}
		b.WriteString(s[last:l[0]])
		b.WriteString(phone(m))
		last = l[1]
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// Characters that may surround a phone written in text.
const (
	phoneBefore = " \t\r\n,;:=\"'<[{"
	phoneAfter  = " \t\r\n,;.:&\"'>)]}!?"
)

// ScrubPII rewrites a stored body so that no raw email or phone number
// reaches the disk, whatever key holds it:
//
//   - a string under a key containing "email" becomes its normalized
//     SHA-256 (64 hex), under a key containing "phone" (or a number there)
//     "<sha256 digits>:<sha256 E.164>", the forms SetEmail and SetPhone
//     accept as already hashed; a value there that cannot be normalized but
//     holds a digit or an "@" becomes RedactedValue, never stored raw;
//   - any other string that is an email or a phone (IsEmail, IsPhone: Stripe
//     metadata, a Shopify note, custom attributes, an app_user_id) is hashed
//     the same way, and emails and phones inside text are replaced by their
//     hashes; object keys too.
//
// Numbers keep their exact text. A body that is not one JSON document has
// its emails and phones replaced in the text.
func ScrubPII(body []byte) []byte {
	if !mayHoldPII(body) {
		return body
	}
	return scrubBody(body)
}

// scrubBody is ScrubPII without the quick check.
func scrubBody(body []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	if err == nil {
		// Data after the first value means the body is not one JSON
		// document; re-encoding only the first value would silently drop
		// the rest.
		if _, terr := dec.Token(); terr != io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		// Not one JSON document: scrub the text, with the ASCII \uXXXX
		// escapes read first, since a reader that decodes the JSON at its
		// start ("\u0040" is an '@') would otherwise find the raw value.
		s := unescapeASCII(string(body))
		if out := ScrubValue(s); out != s {
			return []byte(out)
		}
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

// mayHoldPII is a quick check that lets most bodies through without a
// decode: an email needs an "@", a keyed value its key, a phone a run of
// digits and separators. Keys match case-insensitively ("Email", "PHONE").
// In one JSON document only its strings (values and keys) can hold a phone
// that scrubbing replaces (numbers are kept, unless under a phone key), so
// each string with a run of phone characters gets ScrubValue's own test;
// a string with an escape, whose decoded text can differ from its bytes
// (\u0040 is an '@'), is decoded to be sure. Unix times and dates ("created",
// "api_version": "2023-10-16") then no longer cost a decode of the body.
func mayHoldPII(body []byte) bool {
	if bytes.IndexByte(body, '@') >= 0 || containsFoldASCII(body, "mail") || containsFoldASCII(body, "phone") {
		return true
	}
	if !json.Valid(body) {
		return bytes.Contains(body, []byte(`\u`)) || phoneRun(body) && phoneRE.Match(body)
	}
	for i := 0; i < len(body); i++ {
		if body[i] != '"' {
			continue
		}
		end := i + 1
		for end < len(body) && body[end] != '"' {
			if body[end] == '\\' {
				return true
			}
			end++
		}
		if s := body[i+1 : end]; phoneRun(s) && ScrubValue(string(s)) != string(s) {
			return true
		}
		i = end
	}
	return false
}

// unescapeASCII replaces each JSON escape \uXXXX of a printable ASCII
// character in s by the character, except the quote and the backslash,
// which keep their escape so the text keeps its structure.
func unescapeASCII(s string) string {
	i := strings.Index(s, `\u`)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i >= 0 {
		b.WriteString(s[:i])
		s = s[i:]
		if len(s) >= 6 {
			if v, err := strconv.ParseUint(s[2:6], 16, 8); err == nil && v >= 0x20 && v < 0x7f && v != '"' && v != '\\' {
				b.WriteByte(byte(v))
				s = s[6:]
				i = strings.Index(s, `\u`)
				continue
			}
		}
		b.WriteString(s[:2])
		s = s[2:]
		i = strings.Index(s, `\u`)
	}
	b.WriteString(s)
	return b.String()
}

// phoneRun reports whether s has a run of the characters a phone is written
// with (digits, ' ', '+', '(', ')', '.', '-') holding at least 7 digits.
// Every phone IsPhone accepts lies inside one such run, so text without one
// needs no phone search: ids, dates and amounts rarely have one, and the
// scan is much cheaper than the regular expression's.
func phoneRun[T string | []byte](s T) bool {
	digits := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if digits++; digits >= 7 {
				return true
			}
		case c == ' ' || c == '+' || c == '(' || c == ')' || c == '.' || c == '-':
		default:
			digits = 0
		}
	}
	return false
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
			c = scrub(c, strings.ToLower(k), changed)
			if nk := ScrubValue(k); nk != k {
				// An email used as a key ({"jane@example.com": "vip"}).
				delete(x, k)
				k, *changed = nk, true
			}
			x[k] = c
		}
	case []any:
		for i, c := range x {
			x[i] = scrub(c, key, changed)
		}
	case json.Number:
		if strings.Contains(key, "phone") {
			if n := NormalizePhone(string(x)); n != "" {
				*changed = true
				return hashPhone(n)
			}
		}
	case string:
		if x == "" {
			return x
		}
		out := scrubString(x, key)
		if out != x {
			*changed = true
		}
		return out
	}
	return v
}

// scrubString is ScrubPII's rule for one string under key.
func scrubString(x, key string) string {
	switch {
	case strings.Contains(key, "email"):
		ids := map[string]string{}
		if SetEmail(ids, x) {
			return ids[IDEmailSHA256]
		}
		if strings.ContainsAny(x, "@0123456789") {
			return RedactedValue
		}
		return x
	case strings.Contains(key, "phone"):
		if isHashedPhone(x) {
			return x
		}
		if n := NormalizePhone(x); n != "" {
			return hashPhone(n)
		}
		if strings.ContainsAny(x, "@0123456789") {
			return RedactedValue
		}
		return x
	}
	return ScrubValue(x)
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
