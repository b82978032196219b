package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

var customNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

const customRetention = 720 * time.Hour

func TestParseCustomValid(t *testing.T) {
	tests := []struct {
		name, body string
	}{
		{"custom event, minimal", `{"type":"custom","name":"level_complete","app_id":"com.example.app"}`},
		{"purchase with everything", `{
			"type": "purchase", "app_id": "com.example.app", "environment": "sandbox", "app_user_id": "u-42",
			"product_id": "gems_100", "transaction_id": "web-123", "revenue": {"amount": "9.99", "currency": "usd"},
			"occurred_at": "2026-11-30T11:00:00+01:00",
			"identifiers": {"email": " Jon@Example.com ", "phone": "+1 650 555 1212", "appsflyer_id": "1700000000000-1234567", "os": "iOS", "country": "us", "att_status": "3"},
			"attributes": {"channel": "web", "coupon": "SAVE10"}}`},
		{"amount as a JSON number keeps its exact text", `{"type":"purchase","app_id":"a","revenue":{"amount":1234567.891,"currency":"KWD"}}`},
		{"zero-decimal currency", `{"type":"purchase","app_id":"a","revenue":{"amount":"1200","currency":"JPY"}}`},
		{"refund sent positive is stored negative", `{"type":"refund","app_id":"a","revenue":{"amount":"4.50","currency":"EUR"}}`},
		{"refund sent negative stays negative", `{"type":"refund","app_id":"a","revenue":{"amount":"-4.50","currency":"EUR"}}`},
		{"zero amount means no money moved", `{"type":"purchase","app_id":"a","revenue":{"amount":"0.00","currency":"USD"}}`},
		{"batch", `{"events":[{"type":"custom","name":"signup","app_id":"a"},{"type":"subscription_started","app_id":"a","product_id":"pro","revenue":{"amount":"49.99","currency":"USD"}}]}`},
		{"occurred_at within the clock skew", `{"type":"custom","name":"x","app_id":"a","occurred_at":"2026-11-30T12:04:00Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, errs := ParseCustom([]byte(tt.body), customNow, customRetention)
			if errs != nil {
				t.Fatalf("errors: %+v", errs)
			}
			golden(t, "custom/parse_"+strings.NewReplacer(" ", "_", ",", "", "-", "_").Replace(tt.name), req)
			b, _ := json.Marshal(req)
			for _, raw := range []string{"Example.com", "example.com", "555 1212"} {
				if strings.Contains(string(b), raw) {
					t.Errorf("raw PII %q kept in the canonical request: %s", raw, b)
				}
			}
		})
	}
}

func TestParseCustomErrors(t *testing.T) {
	ev := func(extra string) string { return `{"type":"custom","name":"x","app_id":"a"` + extra + `}` }
	tests := []struct {
		name, body string
		want       []FieldError // exactly these, in order
	}{
		{"not JSON", `{"type":`, []FieldError{{"body", "must be a JSON object: one event, or {\"events\": [...]}"}}},
		{"not an object", `[1,2]`, []FieldError{{"body", "must be a JSON object: one event, or {\"events\": [...]}"}}},
		{"unknown field", ev(`,"colour":"red"`), []FieldError{{"colour", "unknown field"}}},
		{"missing type", `{"app_id":"a"}`, []FieldError{{"type", "is required (custom, purchase, refund, subscription_started, ...)"}}},
		{"unknown type", `{"type":"install","app_id":"a"}`, []FieldError{{"type", `"install" is not a canonical event type`}}},
		{"type not a string", `{"type":7,"app_id":"a"}`, []FieldError{{"type", "must be a string"}, {"type", "is required (custom, purchase, refund, subscription_started, ...)"}}},
		{"custom without name", `{"type":"custom","app_id":"a"}`, []FieldError{{"name", "is required for type custom"}}},
		{"name on a non-custom type", `{"type":"purchase","name":"x","app_id":"a"}`, []FieldError{{"name", "is only allowed with type custom"}}},
		{"name too long", `{"type":"custom","name":"` + strings.Repeat("n", 101) + `","app_id":"a"}`, []FieldError{{"name", "is longer than 100 bytes"}}},
		{"control character", `{"type":"custom","name":"a\u0000b","app_id":"a"}`, []FieldError{{"name", "must not contain control characters"}}},
		{"missing app_id", `{"type":"custom","name":"x"}`, []FieldError{{"app_id", "is required (the app the event belongs to, as destinations match it)"}}},
		{"bad environment", ev(`,"environment":"staging"`), []FieldError{{"environment", `"staging" is not one of production, sandbox`}}},
		{"occurred_at not RFC 3339", ev(`,"occurred_at":"30/11/2026"`), []FieldError{{"occurred_at", "must be an RFC 3339 time such as 2026-11-30T03:00:00Z"}}},
		{"occurred_at in the future", ev(`,"occurred_at":"2026-11-30T12:06:00Z"`), []FieldError{{"occurred_at", "is in the future"}}},
		{"occurred_at older than the retention", ev(`,"occurred_at":"2026-10-01T00:00:00Z"`), []FieldError{{"occurred_at", "is older than the retention (720h0m0s)"}}},
		{"revenue not an object", ev(`,"revenue":"9.99"`), []FieldError{{"revenue", `must be an object {"amount": "9.99", "currency": "USD"}`}}},
		{"revenue unknown field", ev(`,"revenue":{"amount":"1","currency":"USD","tax":"0.1"}`), []FieldError{{"revenue.tax", "unknown field"}}},
		{"bad currency", ev(`,"revenue":{"amount":"1.00","currency":"DOLLARS"}`), []FieldError{{"revenue.currency", `"DOLLARS" is not an ISO 4217 currency code`}}},
		{"missing currency", ev(`,"revenue":{"amount":"1.00"}`), []FieldError{{"revenue.currency", "is required (ISO 4217, e.g. USD)"}}},
		{"missing amount", ev(`,"revenue":{"currency":"USD"}`), []FieldError{{"revenue.amount", "is required"}}},
		{"NaN amount", ev(`,"revenue":{"amount":"NaN","currency":"USD"}`), []FieldError{{"revenue.amount", `"NaN" is not a finite plain decimal such as 9.99 (no exponent, NaN or Infinity)`}}},
		{"Infinity amount", ev(`,"revenue":{"amount":"Infinity","currency":"USD"}`), []FieldError{{"revenue.amount", `"Infinity" is not a finite plain decimal such as 9.99 (no exponent, NaN or Infinity)`}}},
		{"overflowing exponent", ev(`,"revenue":{"amount":1e400,"currency":"USD"}`), []FieldError{{"revenue.amount", `"1e400" is not a finite plain decimal such as 9.99 (no exponent, NaN or Infinity)`}}},
		{"amount not a number", ev(`,"revenue":{"amount":true,"currency":"USD"}`), []FieldError{{"revenue.amount", "must be a decimal number such as 9.99"}}},
		{"over-precise for USD", ev(`,"revenue":{"amount":"9.999","currency":"USD"}`), []FieldError{{"revenue.amount", "9.999 has more decimals than USD allows (2)"}}},
		{"over-precise for JPY", ev(`,"revenue":{"amount":120.5,"currency":"JPY"}`), []FieldError{{"revenue.amount", "120.5 has more decimals than JPY allows (0)"}}},
		{"amount too large", ev(`,"revenue":{"amount":"12345678901234.00","currency":"USD"}`), []FieldError{{"revenue.amount", "12345678901234.00 is too large"}}},
		{"negative purchase", `{"type":"purchase","app_id":"a","revenue":{"amount":"-1.00","currency":"USD"}}`, []FieldError{{"revenue.amount", "must not be negative (only refunds are)"}}},
		{"identifiers not an object", ev(`,"identifiers":["idfa"]`), []FieldError{{"identifiers", "must be an object of identifier names to string values"}}},
		{"unknown identifier", ev(`,"identifiers":{"imei":"1"}`), []FieldError{{"identifiers.imei", "unknown identifier (known: " + strings.Join(UserIdentifierNames(), ", ") + ")"}}},
		{"hashed key is not accepted directly", ev(`,"identifiers":{"email_sha256":"x"}`), []FieldError{{"identifiers.email_sha256", "unknown identifier (known: " + strings.Join(UserIdentifierNames(), ", ") + ")"}}},
		{"bad email", ev(`,"identifiers":{"email":"jon at example"}`), []FieldError{{"identifiers.email", "is not an email address"}}},
		{"bad phone", ev(`,"identifiers":{"phone":"12"}`), []FieldError{{"identifiers.phone", "is not a phone number (digits with the country code, e.g. +16505551212)"}}},
		{"bad att_status", ev(`,"identifiers":{"att_status":"yes"}`), []FieldError{{"identifiers.att_status", "must be 0, 1, 2 or 3 (ATTrackingManager.AuthorizationStatus)"}}},
		{"bad os", ev(`,"identifiers":{"os":"windows"}`), []FieldError{{"identifiers.os", "must be ios or android"}}},
		{"bad country", ev(`,"identifiers":{"country":"USA"}`), []FieldError{{"identifiers.country", "must be an ISO 3166-1 alpha-2 code such as US"}}},
		{"identifier value not a string", ev(`,"identifiers":{"idfa":123}`), []FieldError{{"identifiers.idfa", "must be a string"}}},
		{"attributes not an object", ev(`,"attributes":"x"`), []FieldError{{"attributes", "must be an object of names to string values"}}},
		{"attribute value not a string", ev(`,"attributes":{"level":3}`), []FieldError{{"attributes.level", "must be a string"}}},
		{"too many attributes", ev(`,"attributes":{` + manyAttributes(51) + `}`), []FieldError{{"attributes", "holds 51 attributes; at most 50 are allowed"}}},
		{"batch with another top-level field", `{"events":[` + ev("") + `],"app_id":"a"}`, []FieldError{{"app_id", `unknown field (a batch body holds only "events")`}}},
		{"batch not an array", `{"events":{}}`, []FieldError{{"events", "must be an array of event objects"}}},
		{"batch null", `{"events":null}`, []FieldError{{"events", "must be an array of event objects"}}},
		{"empty batch", `{"events":[]}`, []FieldError{{"events", "must hold at least one event"}}},
		{"batch too large", `{"events":[` + strings.TrimSuffix(strings.Repeat(ev("")+",", 1001), ",") + `]}`, []FieldError{{"events", "holds 1001 events; at most 1000 are allowed per request"}}},
		{"batch item not an object", `{"events":[` + ev("") + `,"x"]}`, []FieldError{{"events[1]", "must be an event object"}}},
		{"every error of every item is reported", `{"events":[` + ev("") + `,{"type":"purchase","app_id":"a","revenue":{"amount":"1","currency":"XXX"}},{"type":"custom","app_id":"a","colour":1}]}`, []FieldError{
			{"events[1].revenue.currency", `"XXX" is not an ISO 4217 currency code`},
			{"events[2].colour", "unknown field"},
			{"events[2].name", "is required for type custom"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, errs := ParseCustom([]byte(tt.body), customNow, customRetention)
			if req != nil {
				t.Errorf("got a request for an invalid body: %+v", req)
			}
			if !reflect.DeepEqual(errs, tt.want) {
				t.Errorf("errors = %+v\nwant     %+v", errs, tt.want)
			}
		})
	}
}

func manyAttributes(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`"a%d":"v"`, i))
	}
	return strings.Join(parts, ",")
}

func TestMapCustom(t *testing.T) {
	body := `{"events":[
		{"type":"custom","name":"tutorial_complete","app_id":"com.example.app","app_user_id":"u-42","identifiers":{"appsflyer_id":"1700000000000-1234567","email":"jon@example.com"},"attributes":{"level":"3"}},
		{"type":"purchase","app_id":"com.example.app","environment":"sandbox","app_user_id":"u-42","product_id":"gems_100","transaction_id":"web-123","revenue":{"amount":"9.99","currency":"USD"},"occurred_at":"2026-11-30T11:00:00Z"},
		{"type":"refund","app_id":"com.example.app","app_user_id":"u-42","transaction_id":"web-123","revenue":{"amount":"9.99","currency":"USD"}}]}`
	req, errs := ParseCustom([]byte(body), customNow, customRetention)
	if errs != nil {
		t.Fatal(errs)
	}
	canonical, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	n := &Notification{Source: SourceCustom, Key: "order-123-conversions", ReceivedAt: customNow.Add(time.Second), Body: canonical}
	res, err := Map(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "custom/map_batch", goldenResult(res))
	for i, e := range res.Events {
		if e.ID != CustomEventID("order-123-conversions", i) {
			t.Errorf("event %d id = %s, want CustomEventID(key, %d)", i, e.ID, i)
		}
	}
	// The same request mapped again (a reprocess) gives the same ids.
	again, _ := Map(n, nil)
	if !reflect.DeepEqual(again, res) {
		t.Errorf("mapping is not deterministic")
	}
}

func TestMapCustomMalformed(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":     `{"events":`,
		"no events":    `{"batch":false,"events":[]}`,
		"invalid type": `{"events":[{"type":"install","app_id":"a"}]}`,
		"no app id":    `{"events":[{"type":"purchase"}]}`,
		"custom name":  `{"events":[{"type":"custom","app_id":"a"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Map(&Notification{Source: SourceCustom, Key: "k", Body: []byte(body)}, nil)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestValidateIdentifierAcceptsEveryName(t *testing.T) {
	for _, n := range UserIdentifierNames() {
		if msg := ValidateIdentifier(n, ""); msg != "" {
			t.Errorf("ValidateIdentifier(%q, \"\") = %q, want valid (empty removes)", n, msg)
		}
	}
}
