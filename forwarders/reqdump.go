package forwarders

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// maxDumpBody bounds the request body kept in an attempt's log.
const maxDumpBody = 4 << 10

// masked replaces a secret value in a request dump.
const masked = "[masked]"

// secretName reports whether a header, query or field name carries a
// credential.
func secretName(name string) bool {
	n := name
	for i := 0; i < len(n); i++ {
		if c := n[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			n = strings.ToLower(name)
			break
		}
	}
	for _, s := range secretNameParts {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// secretNameParts are the parts of a credential's name ("auth" covers
// "authorization").
var secretNameParts = []string{"token", "secret", "key", "password", "signature", "auth", "cookie", "credential"}

// DumpRequest renders the request a forwarder sends, for the attempt log:
// the summary line, the method and URL, the headers and the body (first
// 4 KiB), with credentials masked by name (Authorization, Access-Token,
// api_secret, access_token, ...) and each of secrets masked wherever it
// shows. It reads the body through req.GetBody and leaves req untouched.
func DumpRequest(req *http.Request, summary string, secrets ...string) string {
	var b strings.Builder
	u := *req.URL
	u.User = nil
	if q := u.Query(); len(q) > 0 {
		for k := range q {
			if secretName(k) {
				q[k] = []string{masked}
			}
		}
		u.RawQuery = q.Encode()
	}
	line := req.Method + " " + u.String()
	if summary != "" && summary != line {
		b.WriteString(summary + "\n\n")
	}
	b.WriteString(line + "\n")
	names := make([]string, 0, len(req.Header))
	for k := range req.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := strings.Join(req.Header[k], ", ")
		if secretName(k) {
			v = masked
		}
		b.WriteString(k + ": " + v + "\n")
	}
	if req.GetBody != nil {
		if rc, err := req.GetBody(); err == nil {
			body, _ := io.ReadAll(io.LimitReader(rc, maxDumpBody+1))
			rc.Close()
			b.WriteString("\n")
			b.WriteString(maskBody(body, req.Header.Get("Content-Type")))
		}
	}
	return redact(b.String(), secrets...)
}

// maskBody masks credential fields of a JSON or form body; a longer body
// is cut at maxDumpBody.
func maskBody(body []byte, contentType string) string {
	cut := len(body) > maxDumpBody
	if cut {
		body = body[:maxDumpBody]
	}
	out := string(body)
	switch {
	case cut:
	case strings.HasPrefix(contentType, "application/x-www-form-urlencoded"):
		if v, err := url.ParseQuery(out); err == nil {
			for k := range v {
				if secretName(k) {
					v[k] = []string{masked}
				}
			}
			out = v.Encode()
		}
	case json.Valid(body):
		out = string(maskJSON(body))
	}
	out = strings.ToValidUTF8(out, "?")
	if cut {
		out += "\n[… cut at 4 KiB]"
	}
	return out
}

// maskJSON returns a valid JSON document with the string value of every
// member whose name says credential (secretName) replaced by "[masked]",
// at any depth; everything else is kept byte for byte, so the log shows
// the body as it was sent. It walks the bytes once: in valid JSON a string
// followed by ':' is a member name, and every other string is a value.
func maskJSON(doc []byte) []byte { return maskMembers(doc, secretName) }

// maskMembers is maskJSON with the test for a credential's name.
func maskMembers(doc []byte, secretName func(string) bool) []byte {
	out := make([]byte, 0, len(doc))
	secret := false // the last member name says credential
	for i := 0; i < len(doc); {
		c := doc[i]
		if c != '"' {
			if c == ',' || c == '{' || c == '[' {
				secret = false
			}
			out = append(out, c)
			i++
			continue
		}
		end := stringEnd(doc, i)
		j := end
		for j < len(doc) && (doc[j] == ' ' || doc[j] == '\t' || doc[j] == '\n' || doc[j] == '\r') {
			j++
		}
		if j < len(doc) && doc[j] == ':' { // a member name
			raw := doc[i+1 : end-1]
			if bytes.IndexByte(raw, '\\') < 0 {
				secret = secretName(string(raw))
			} else {
				var name string
				secret = json.Unmarshal(doc[i:end], &name) == nil && secretName(name)
			}
			out = append(out, doc[i:end]...)
		} else if secret {
			out = append(out, `"`+masked+`"`...)
			secret = false
		} else {
			out = append(out, doc[i:end]...)
		}
		i = end
	}
	return out
}

// stringEnd returns the index just past the JSON string that starts at
// doc[i] (a '"'), in a document already known to be valid.
func stringEnd(doc []byte, i int) int {
	for i++; i < len(doc); i++ {
		switch doc[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(doc)
}
