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
		{"not JSON without PII", `id=1&total=2`},
		{"ids, times, amounts, addresses and tokens", `{"id":"820982911946154508","ts":"1700000000","ms":"1697679936049","price":"403.00",` +
			`"range":"1000-2000","ip":"192.168.100.200","ip6":"2001:db8::1","date":"2026-11-30","at":"2026-11-30 03:00:00","order":"GPA.3345-1234-5678-90",` +
			`"uuid":"98880550-7158-44d4-b7cd-2c97c8a091b5","version":"1.2.3","neg":"-1234567890","zip":"94105-1234","card":"4242 4242 4242 4242",` +
			`"ua":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)","sku":"SKU-650-555-1234X"}`},
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

// Issue 15, item 3: emails and phones under any key, inside text, as keys,
// and values that fail normalization are never stored raw.
func TestScrubPIIAnyKey(t *testing.T) {
	email := SHA256Hex("jane.doe@example.com")
	phone := SHA256Hex("16505551234") + ":" + SHA256Hex("+16505551234")
	local := SHA256Hex("5556251199") + ":" + SHA256Hex("+5556251199")
	tests := []struct {
		name string
		in   string
		want string // compared as JSON values
	}{
		{"stripe metadata", `{"data":{"object":{"metadata":{"contact":"Jane.Doe@example.com","whatsapp":"+1 650 555 1234"}}}}`,
			`{"data":{"object":{"metadata":{"contact":"` + email + `","whatsapp":"` + phone + `"}}}}`},
		{"shopify note", `{"note":"call +1 650 555 1234 or mail jane.doe@example.com, thanks"}`,
			`{"note":"call ` + phone + ` or mail ` + email + `, thanks"}`},
		{"custom attribute", `{"attributes":{"referrer":"(650) 555-1234"}}`, `{"attributes":{"referrer":"` + SHA256Hex("6505551234") + ":" + SHA256Hex("+6505551234") + `"}}`},
		{"local phone in three groups", `{"customer":{"contact":"555-625-1199"}}`, `{"customer":{"contact":"` + local + `"}}`},
		{"app_user_id that is an email", `{"app_user_id":"jane.doe@example.com"}`, `{"app_user_id":"` + email + `"}`},
		{"email as an object key", `{"tags":{"jane.doe@example.com":"vip"}}`, `{"tags":{"` + email + `":"vip"}}`},
		{"email failing normalization", `{"email":"jane doe@example.com"}`, `{"email":"[redacted]"}`},
		{"phone failing normalization", `{"phone":"12-34"}`, `{"phone":"[redacted]"}`},
		{"phone as a number", `{"phone":16505551234}`, `{"phone":"` + phone + `"}`},
		{"name/value pair", `{"note_attributes":[{"name":"Phone","value":"650 555 1234 ext"}]}`, `{"note_attributes":[{"name":"Phone","value":"` + SHA256Hex("6505551234") + ":" + SHA256Hex("+6505551234") + `"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ScrubPII([]byte(tt.in))
			if !jsonEqual(t, got, []byte(tt.want)) {
				t.Errorf("ScrubPII(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
			if MaskPII(string(got)) != string(got) {
				t.Errorf("the log masker still finds PII in the stored form %s", got)
			}
		})
	}
}

func TestScrubPIINotJSON(t *testing.T) {
	for _, in := range []string{
		`email=jane.doe@example.com&phone=+16505551234`,
		`{"email":"jane.doe@example.com"`,
		`{"email":"jane.doe@example.com"} {"email":"other@example.com"}`,
		// Escaped JSON followed by more data: a reader of the first value
		// decodes "\u0040" to '@' (FuzzScrubPII found it).
		`"jane.doe\u0040example.com" 0`,
		`{"note":"call +1 650 555 \u0031\u0032\u0033\u0034"`,
	} {
		got := string(ScrubPII([]byte(in)))
		if strings.Contains(got, "example.com") || strings.Contains(got, "6505551234") || strings.Contains(got, "555 1234") {
			t.Errorf("ScrubPII(%q) = %q: raw PII kept", in, got)
		}
	}
}

func TestUnescapeASCII(t *testing.T) {
	for in, want := range map[string]string{
		`a\u0040b`:           `a@b`,
		`\u0022\u005c\u00e9`: `\u0022\u005c\u00e9`, // quote, backslash, non-ASCII keep their escape
		`\u00`:               `\u00`,
		`\u00zz\u0031`:       `\u00zz1`,
		`plain`:              `plain`,
	} {
		if got := unescapeASCII(in); got != want {
			t.Errorf("unescapeASCII(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDetector(t *testing.T) {
	for s, want := range map[string]bool{
		"jane@example.com": true, " Jane.Doe+x@mail.example.co.uk ": true, "jane@example": false, "@example.com": false,
		"not an email": false, "a@b.c": false,
	} {
		if got := IsEmail(s); got != want {
			t.Errorf("IsEmail(%q) = %v, want %v", s, got, want)
		}
	}
	for s, want := range map[string]bool{
		"+16505551234": true, "+1 (650) 555-1234": true, "650-555-1234": true, "(650) 555 1234": true, "06 12 34 56 78": true,
		"+44 20 7946 0958": true, "0044 20 7946 0958": true, "650.555.1234": true,
		"6505551234": false, "1700000000": false, "192.168.100.200": false, "2026-11-30": false, "2026-11-30 03": false,
		"1000-2000": false, "+1": false, "+1234567890123456": false, "650-555-1234x": false, "-650-555-1234": false, "403.00": false,
	} {
		if got := IsPhone(s); got != want {
			t.Errorf("IsPhone(%q) = %v, want %v", s, got, want)
		}
	}
	masked := MaskPII("user jane@example.com called +1 650 555 1234 at 2026-11-30 from 10.0.0.1 about order 820982911946154508")
	if want := "user [email] called [phone] at 2026-11-30 from 10.0.0.1 about order 820982911946154508"; masked != want {
		t.Errorf("MaskPII = %q, want %q", masked, want)
	}
	if v := ScrubValue("order:jane@example.com"); v != "order:"+SHA256Hex("jane@example.com") || ScrubValue(v) != v {
		t.Errorf("ScrubValue = %q, want the email hashed, idempotently", v)
	}
	long := strings.Repeat("ab", 300) + "-650-555-1234-" + strings.Repeat("cd", 300)
	if ScrubValue(long) != long {
		t.Errorf("a long token without spaces was rewritten")
	}
}

// FuzzScrubPII checks the detector's promise on arbitrary bodies: what
// ScrubPII stores holds nothing the log masker would still mask in a JSON
// string or key, and scrubbing twice changes nothing.
func FuzzScrubPII(f *testing.F) {
	for _, s := range []string{
		`{"email":"Jane.Doe@Example.com","phone":"+1 650 555 1234"}`,
		`{"note":"call (650) 555-1234 or jane@example.com","metadata":{"x":"+44 20 7946 0958"}}`,
		`{"jane@example.com":{"phone":16505551234,"email":"bad mail@x"}}`,
		`[{"name":"Phone","value":"650 555 1234"},{"key":"email","value":"a@b.co"}]`,
		`email=jane@example.com&phone=+16505551234`,
		`{"ip":"192.168.100.200","date":"2026-11-30","id":"820982911946154508"}`,
		`{"n":"jane\u0040example.com","p":"\u0036\u00350 555 1234"}`,
		`{"created":1700000000,"id":"sub_1Mow2QVLk","note":"call +1 650 555 1234"}`,
		`{"a":1} call 650 555 1234`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		once := ScrubPII(body)
		if !mayHoldPII(body) {
			if full := scrubBody(body); !bytes.Equal(full, body) {
				t.Fatalf("the quick check let %q through, but scrubbing it gives %q", body, full)
			}
		}
		if twice := ScrubPII(once); !bytes.Equal(once, twice) {
			t.Fatalf("not idempotent:\n in   %q\n once %q\n twice %q", body, once, twice)
		}
		dec := json.NewDecoder(bytes.NewReader(once))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return
		}
		var walk func(v any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, c := range x {
					if ContainsPII(k) {
						t.Fatalf("key %q still holds PII after ScrubPII(%q) = %q", k, body, once)
					}
					walk(c)
				}
			case []any:
				for _, c := range x {
					walk(c)
				}
			case string:
				if ContainsPII(x) {
					t.Fatalf("value %q still holds PII after ScrubPII(%q) = %q", x, body, once)
				}
			}
		}
		walk(v)
	})
}

// Identifiers that destinations need are not mistaken for phones.
func TestScrubValueKeepsIdentifiers(t *testing.T) {
	for _, v := range []string{
		"1700000000000-1234567", "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890", "fb.1.1596403881668.1116446470",
		"1234567890.1234567890", "6D92078A-8246-4BA4-AE5B-76104861E7DC", "192.168.1.1", "2001:db8::1", "GPA.3345-1234-5678-90123",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
		"E.C.P.demo-shopify", "2026-11-30T03:00:00Z", "P1M", "sub_1NG8Du2eZvKYlo2C", "evt_1NG8Du2eZvKYlo2CUeOvIOGm",
	} {
		if got := ScrubValue(v); got != v {
			t.Errorf("ScrubValue(%q) = %q, want it unchanged", v, got)
		}
	}
}

// FuzzPhoneRun: phoneRun is a sound filter for the phone search: text it
// rejects has no candidate IsPhone accepts, and IsEmail's '@' shortcut
// agrees with the expression.
func FuzzPhoneRun(f *testing.F) {
	for _, s := range []string{"+1 650 555 1234", "(650) 555-1234", "06 12 34 56 78", "sub_1Mow2QVLk", "2026-12-07", "a@b.co", "+12 3", "1234567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !phoneRun(s) {
			for _, l := range phoneRE.FindAllStringIndex(s, -1) {
				if IsPhone(s[l[0]:l[1]]) {
					t.Fatalf("phoneRun(%q) is false, but %q is a phone", s, s[l[0]:l[1]])
				}
			}
			if phoneRun([]byte(s)) {
				t.Fatalf("phoneRun differs for string and bytes on %q", s)
			}
		}
		if strings.IndexByte(s, '@') < 0 {
			if loc := emailRE.FindStringIndex(strings.TrimSpace(s)); loc != nil {
				t.Fatalf("an email without '@' in %q", s)
			}
		}
	})
}
