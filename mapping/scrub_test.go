package mapping

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestScrubPII(t *testing.T) {
	email := SHA256Hex("jane.doe@example.com")
	phone := SHA256Hex("16505551234") + ":" + SHA256Hex("+16505551234")
	tests := []struct {
		name string
		in   string
		want string // compared as JSON values
	}{
		{"top-level email", `{"email":"Jane.Doe@Example.com"}`, `{"email":"` + email + `"}`},
		{"key containing email, any case", `{"Customer_Email":" jane.doe@example.com ","receipt_email":"JANE.DOE@EXAMPLE.COM"}`,
			`{"Customer_Email":"` + email + `","receipt_email":"` + email + `"}`},
		{"upper-case key", `{"EMAIL":"jane.doe@example.com"}`, `{"EMAIL":"` + email + `"}`},
		{"phone", `{"phone":"+1 (650) 555-1234"}`, `{"phone":"` + phone + `"}`},
		{"capitalised phone key", `{"Phone":"+1 650 555 1234"}`, `{"Phone":"` + phone + `"}`},
		{"nested at any depth", `{"data":{"object":{"customer_details":{"email":"jane.doe@example.com","phone":"+16505551234"}}}}`,
			`{"data":{"object":{"customer_details":{"email":"` + email + `","phone":"` + phone + `"}}}}`},
		{"inside arrays", `{"contacts":[{"email":"jane.doe@example.com"},{"phone":"001 650 555 1234"}]}`,
			`{"contacts":[{"email":"` + email + `"},{"phone":"` + phone + `"}]}`},
		{"list of emails under an email key", `{"emails":["jane.doe@example.com"]}`, `{"emails":["` + email + `"]}`},
		{"top-level array", `[{"email":"jane.doe@example.com"}]`, `[{"email":"` + email + `"}]`},
		{"other fields untouched", `{"email":"jane.doe@example.com","name":"Jane","amount":999,"ok":true,"none":null}`,
			`{"email":"` + email + `","name":"Jane","amount":999,"ok":true,"none":null}`},
		{"not an email under an email key", `{"email_verified":"yes","email":""}`, `{"email_verified":"yes","email":""}`},
		{"not a phone under a phone key", `{"phone":"n/a","phone_number_collection":{"enabled":true}}`, `{"phone":"n/a","phone_number_collection":{"enabled":true}}`},
		{"already hashed email kept", `{"email":"` + email + `"}`, `{"email":"` + email + `"}`},
		{"already hashed phone kept", `{"phone":"` + phone + `"}`, `{"phone":"` + phone + `"}`},
		{"bare phone hash kept", `{"phone":"` + SHA256Hex("16505551234") + `"}`, `{"phone":"` + SHA256Hex("16505551234") + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ScrubPII([]byte(tt.in))
			if !jsonEqual(t, got, []byte(tt.want)) {
				t.Errorf("ScrubPII(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("not JSON: %s: %v", b, err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func TestScrubPIIKeepsNumbersExactly(t *testing.T) {
	in := `{"id":9007199254740993,"big":123456789012345678901234567890,"price":1.10,"neg":-0.000001,"exp":1e400,"email":"a@b.co"}`
	got := string(ScrubPII([]byte(in)))
	for _, n := range []string{"9007199254740993", "123456789012345678901234567890", "1.10", "-0.000001", "1e400"} {
		if !strings.Contains(got, n) {
			t.Errorf("number %s not kept exactly in %s", n, got)
		}
	}
	if strings.Contains(got, "a@b.co") {
		t.Errorf("email not scrubbed: %s", got)
	}
}

func TestScrubPIIKeepsHTMLAndUnicode(t *testing.T) {
	in := `{"note":"<b>Tom & Jerry</b> – ünïcode ✓","email":"a@b.co"}`
	got := string(ScrubPII([]byte(in)))
	if !strings.Contains(got, `"<b>Tom & Jerry</b> – ünïcode ✓"`) {
		t.Errorf("other strings changed: %s", got)
	}
}

func TestScrubPIIUnchanged(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"no email or phone key", `{"id":"evt_1","amount":999}`},
		{"nothing to hash", `{"email":null,"phone":""}`},
		{"not JSON", `email=jane.doe@example.com&phone=+16505551234`},
		{"truncated JSON", `{"email":"jane.doe@example.com"`},
		{"trailing data after JSON", `{"email":"jane.doe@example.com"} {"email":"other@example.com"}`},
		{"empty", ``},
		{"whitespace and key order kept when nothing changes", "{ \"b\": 1,\n  \"a\": \"x@\", \"email\": \"not an email\" }"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ScrubPII([]byte(tt.in)); string(got) != tt.in {
				t.Errorf("ScrubPII(%q) = %q, want it unchanged", tt.in, got)
			}
		})
	}
}

func TestScrubPIIIdempotent(t *testing.T) {
	for _, in := range []string{
		`{"email":"Jane.Doe@Example.com","phone":"+1 650 555 1234","id":9007199254740993}`,
		`{"customer_details":{"email":"` + strings.ToUpper(SHA256Hex("x@y.z")) + `"}}`,
		`[{"Phone":"0044 20 7946 0958"}]`,
	} {
		once := ScrubPII([]byte(in))
		twice := ScrubPII(once)
		if !bytes.Equal(once, twice) {
			t.Errorf("not idempotent for %s:\nonce  %s\ntwice %s", in, once, twice)
		}
	}
}
