package webhooks

import (
	"encoding/json"
	"testing"
)

func TestSignedPayloadOf(t *testing.T) {
	for _, c := range []struct {
		body, want string
		ok         bool
	}{
		{`{"signedPayload":"eyJh.eyJi.c2ln-_"}`, "eyJh.eyJi.c2ln-_", true},
		{" \n{\"signedPayload\":\"a.b.c\"}\r\n", "a.b.c", true},
		{`{ "signedPayload": "a.b.c" }`, "a.b.c", true},        // not compact: encoding/json
		{`{"signedPayload":"a\u002eb.c"}`, "a.b.c", true},      // an escape: encoding/json
		{`{"SignedPayload":"a.b.c"}`, "a.b.c", true},           // encoding/json matches keys case-insensitively
		{`{"signedPayload":"a.b.c","other":1}`, "a.b.c", true}, // another member
		{`{"signedPayload":""}`, "", false},                    // empty
		{`{"signedPayload":"a.b.c"} x`, "", false},             // data after the document
		{`{"signedPayload":"a.b.c"}}`, "", false},              // not JSON
		{`{"signedPayload":"a"b"}`, "", false},                 // a quote inside
		{`{"signedPayload":123}`, "", false},                   // not a string
		{`{}`, "", false},                                      // missing
		{``, "", false},                                        // nothing
		{"\v{\"signedPayload\":\"a.b.c\"}", "", false},         // not JSON whitespace
	} {
		got, ok, _ := signedPayloadOf([]byte(c.body))
		if got != c.want || ok != c.ok {
			t.Errorf("signedPayloadOf(%q) = %q, %v; want %q, %v", c.body, got, ok, c.want, c.ok)
		}
	}
}

// FuzzSignedPayloadOf checks the fast path against encoding/json: the same
// payload, and ok exactly when encoding/json finds a non-empty one.
func FuzzSignedPayloadOf(f *testing.F) {
	for _, s := range []string{`{"signedPayload":"eyJh.eyJi.c2ln"}`, ` {"signedPayload":"a.b"} `, `{"signedPayload":"a\"}`, `{"signedPayload":"a"}x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok, _ := signedPayloadOf(body)
		var req struct {
			SignedPayload string `json:"signedPayload"`
		}
		err := json.Unmarshal(body, &req)
		wantOK := err == nil && req.SignedPayload != ""
		if ok != wantOK || ok && got != req.SignedPayload {
			t.Fatalf("signedPayloadOf(%q) = %q, %v; encoding/json: %q, %v", body, got, ok, req.SignedPayload, err)
		}
	})
}

func BenchmarkSignedPayloadOf(b *testing.B) {
	jws := make([]byte, 12000)
	for i := range jws {
		jws[i] = "abcXYZ019-_."[i%12]
	}
	body := []byte(`{"signedPayload":"` + string(jws) + `"}`)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, ok, _ := signedPayloadOf(body); !ok {
				b.Fatal("no payload")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var req struct {
				SignedPayload string `json:"signedPayload"`
			}
			if json.Unmarshal(body, &req) != nil {
				b.Fatal("no payload")
			}
		}
	})
}
