package webhooks

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/postback/postback/mapping"
)

// TestAppleJSONPlans: the plans cover every field of the App Store types
// (only the raw appTransactionInfo is left to encoding/json).
func TestAppleJSONPlans(t *testing.T) {
	var check func(name string, p *jsonPlan)
	check = func(name string, p *jsonPlan) {
		if p == nil {
			t.Fatalf("%s: no plan", name)
		}
		for key, f := range p.fields {
			if got, ok := p.lookup(key); !ok || got != f {
				t.Errorf("%s.%s: lookup %+v %v, want %+v", name, key, got, ok, f)
			}
			for _, other := range []string{key[1:], key + "x", key[:len(key)-1] + "_"} {
				if _, ok := p.fields[other]; !ok {
					if _, found := p.lookup(other); found {
						t.Errorf("%s: lookup of %q found a field", name, other)
					}
				}
			}
			switch {
			case f.kind == jkUnsupported && key != "appTransactionInfo":
				t.Errorf("%s.%s: not decoded by the plan", name, key)
			case f.kind == jkStruct:
				check(name+"."+key, f.plan)
			}
		}
	}
	check("AppleNotification", appleNotificationPlan)
	check("AppleTransaction", appleTransactionPlan)
	check("AppleRenewalInfo", appleRenewalPlan)
	type embedded struct{ mapping.AppleSummary }
	type twice struct {
		A string `json:"a"`
		B string `json:"A"`
	}
	if newJSONPlan(reflect.TypeFor[embedded]()) != nil || newJSONPlan(reflect.TypeFor[twice]()) != nil {
		t.Error("a plan for a struct with embedded fields or names equal but for case")
	}
}

// appleJSONCases are payloads the plan must decode exactly as
// encoding/json does, or decline.
var appleJSONCases = []struct {
	name, in string
	fast     bool
}{
	{"transaction", `{"transactionId":"2","originalTransactionId":"1","bundleId":"com.example.app","purchaseDate":1795860000000,"quantity":1,"isUpgraded":false,"offerType":1,"price":9990,"revocationPercentage":-5,"environment":"Production"}`, true},
	{"whitespace", " {\n\t\"transactionId\" : \"2\" ,\r\n \"quantity\": 3 } \n", true},
	{"empty object", `{}`, true},
	{"unknown values of every kind", `{"x":{"a":[1,-2.5e+3,0.1,"s\"\\\/\b\f\n\r\t\u00e9",true,false,null,{}],"b":[]},"y":"\u20ac caf\u00e9 é","transactionId":"2"}`, true},
	{"duplicate key, last wins", `{"transactionId":"1","transactionId":"2","offerType":1,"offerType":4}`, true},
	{"non-ASCII text", `{"offerIdentifier":"café ☕"}`, true},
	{"NUL placeholder", `{"transactionId":"a\u0000b\u0000"}`, true},
	{"string escape", `{"transactionId":"a\nb"}`, false},
	{"unicode escape", `{"transactionId":"\u00e9"}`, false},
	{"null string", `{"transactionId":null}`, false},
	{"null pointer", `{"price":null}`, false},
	{"null millis", `{"purchaseDate":null}`, false},
	{"fractional millis", `{"purchaseDate":1795860000000.5}`, false},
	{"exponent", `{"quantity":1e2}`, false},
	{"int overflow", `{"price":9223372036854775808}`, false},
	{"leading zero", `{"quantity":01}`, false},
	{"minus alone", `{"quantity":-}`, false},
	{"string into int", `{"quantity":"1"}`, false},
	{"int into string", `{"transactionId":2}`, false},
	{"key in another case", `{"TransactionId":"2"}`, false},
	{"key with an escape", `{"transaction\u0049d":"2"}`, false},
	{"non-ASCII key", `{"transactionİd":"2"}`, false},
	{"invalid UTF-8", "{\"transactionId\":\"\xff\"}", false},
	{"control character", "{\"transactionId\":\"a\x01\"}", false},
	{"trailing data", `{"transactionId":"2"} x`, false},
	{"trailing comma", `{"transactionId":"2",}`, false},
	{"not an object", `["transactionId"]`, false},
	{"top-level null", `null`, false},
	{"bad escape in an unknown value", `{"x":"\q"}`, false},
	{"deep unknown value", `{"x":` + repeatString("[", 40) + repeatString("]", 40) + `}`, false},
	{"truncated", `{"transactionId":"2"`, false},
}

func repeatString(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestAppleJSONPlanMatchesEncodingJSON(t *testing.T) {
	for _, tc := range appleJSONCases {
		t.Run(tc.name, func(t *testing.T) {
			var fast mapping.AppleTransaction
			ok := appleTransactionPlan.decode([]byte(tc.in), reflect.ValueOf(&fast).Elem())
			if ok != tc.fast {
				t.Fatalf("decoded by the plan: %v, want %v", ok, tc.fast)
			}
			var want mapping.AppleTransaction
			wantErr := json.Unmarshal([]byte(tc.in), &want)
			if ok && (wantErr != nil || !reflect.DeepEqual(fast, want)) {
				t.Fatalf("plan %+v\nencoding/json %+v (%v)", fast, want, wantErr)
			}
			var got mapping.AppleTransaction
			gotErr := decodeJSON(appleTransactionPlan, []byte(tc.in), &got)
			if (gotErr == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("decodeJSON %+v (%v)\nencoding/json %+v (%v)", got, gotErr, want, wantErr)
			}
		})
	}
	// Nested objects and string arrays.
	for _, in := range []string{
		`{"notificationType":"DID_RENEW","data":{"bundleId":"b","status":1},"summary":{"storefrontCountryCodes":["USA","FRA"]},"data":{"environment":"Sandbox"}}`,
		`{"summary":{"storefrontCountryCodes":[]}}`,
		`{"summary":{"storefrontCountryCodes":[ "USA" , "FRA" ]}}`,
	} {
		var fast, want mapping.AppleNotification
		if !appleNotificationPlan.decode([]byte(in), reflect.ValueOf(&fast).Elem()) {
			t.Fatalf("%s: declined", in)
		}
		if err := json.Unmarshal([]byte(in), &want); err != nil || !reflect.DeepEqual(fast, want) {
			t.Fatalf("%s:\nplan %+v\nencoding/json %+v (%v)", in, fast, want, err)
		}
	}
	var n mapping.AppleNotification
	for _, in := range []string{`{"data":null}`, `{"summary":{"storefrontCountryCodes":null}}`, `{"summary":{"storefrontCountryCodes":[1]}}`, `{"appData":{"appTransactionInfo":{}}}`} {
		if appleNotificationPlan.decode([]byte(in), reflect.ValueOf(&n).Elem()) {
			t.Errorf("%s: decoded by the plan", in)
		}
	}
}
