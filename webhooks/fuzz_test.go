package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks/appletest"
	"github.com/postback/postback/webhooks/googletest"
	"github.com/stripe/stripe-go/v76/webhook"
)

// The fuzz targets below feed arbitrary bytes to every verifier and parser
// that sees untrusted input before (or while) it is authenticated. They must
// never panic and must never accept what they were not given a valid
// signature for; errors are the expected outcome. Their seeds (f.Add plus
// testdata/fuzz/<Name>/) run as ordinary tests in `go test ./...`.

// FuzzStripeVerify checks Stripe-Signature parsing and verification.
func FuzzStripeVerify(f *testing.F) {
	body := stripeBody("evt_fuzz", false, "2024-06-20")
	f.Add(body, sign(body, secretA, testNow))
	f.Add(body, sign(body, secretA, testNow.Add(-time.Hour)))
	f.Add(body, "t=1,v1=00")
	f.Add(body, "t=,v1=")
	f.Add([]byte(""), "")
	f.Add([]byte("{}"), "t=99999999999999999999,v1=zz,v0=aa")
	f.Add(body, strings.Repeat("t=1,", 100))
	f.Add(body, upperHex(sign(body, secretA, testNow)))
	f.Add(body, fmt.Sprintf("t=%d,", testNow.Unix())+sign(body, secretA, testNow.Add(-time.Hour)))
	s := &Stripe{Deps: testDeps(&fakeIngester{}, nil), Secrets: []string{secretA, secretB}, Tolerance: 5 * time.Minute}
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		if err := s.Verify(body, header, testNow); err != nil {
			return
		}
		// Accepted: the header must carry a v1 that is the HMAC of its own
		// timestamp and this body under one of the secrets.
		// Hex case does not matter (stripe-go decodes before comparing);
		// the timestamp must be the header's only t=.
		ts, ok := stripeTimestamp(header)
		if !ok || strings.Count(","+header, ",t=") != 1 {
			t.Fatalf("accepted a header without exactly one timestamp: %q", header)
		}
		for _, part := range strings.Split(header, ",") {
			v, ok := strings.CutPrefix(part, "v1=")
			if !ok {
				continue
			}
			got, err := hex.DecodeString(v)
			if err != nil {
				continue
			}
			for _, sec := range s.Secrets {
				if hmac.Equal(got, webhook.ComputeSignature(ts, body, sec)) {
					return
				}
			}
		}
		t.Fatalf("accepted a header with no valid signature: %q", header)
	})
}

// FuzzStripeHandle runs whole requests through the Stripe handler: a body
// signed with a valid secret but of arbitrary content must be stored or
// rejected, never panic.
func FuzzStripeHandle(f *testing.F) {
	f.Add(stripeBody("evt_fuzz", true, "2024-06-20"))
	f.Add([]byte(`{"id":"","object":"event"}`))
	f.Add([]byte(`{"id":"evt_1","type":null,"data":{"object":[]}}`))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte(strings.Repeat("[", 5000)))
	f.Fuzz(func(t *testing.T, body []byte) {
		st := &fakeIngester{}
		s := &Stripe{Deps: testDeps(st, nil), Secrets: []string{secretA}}
		rec := post(t, s.Handle, body, map[string]string{"Stripe-Signature": sign(body, secretA, testNow)})
		if rec.Code >= 500 {
			t.Fatalf("status %d for a signed body: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK && st.count() != 0 {
			t.Fatalf("status %d but %d notifications stored", rec.Code, st.count())
		}
	})
}

// FuzzShopifyVerify checks X-Shopify-Hmac-Sha256 verification.
func FuzzShopifyVerify(f *testing.F) {
	body := []byte(`{"id":820982911946154508,"email":"jon@example.com"}`)
	f.Add(body, SignShopify(body, "shpss_fuzz"))
	f.Add(body, "")
	f.Add(body, "not base64!")
	f.Add([]byte{}, SignShopify(nil, "shpss_fuzz"))
	f.Add(body, strings.Repeat("A", 44))
	s := &Shopify{Deps: testDeps(&fakeIngester{}, nil), Secrets: []string{"shpss_fuzz", "shpss_old"}}
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		i, err := s.Verify(body, header)
		if err != nil {
			return
		}
		if i < 0 || i >= len(s.Secrets) {
			t.Fatalf("matched secret index %d of %d", i, len(s.Secrets))
		}
		if want := SignShopify(body, s.Secrets[i]); strings.TrimSpace(header) != want {
			t.Fatalf("accepted header %q, want %q", header, want)
		}
	})
}

// FuzzShopifyHandle runs correctly signed arbitrary bodies with arbitrary
// topics through the Shopify handler.
func FuzzShopifyHandle(f *testing.F) {
	f.Add([]byte(`{"id":1,"total_price":"9.99","currency":"USD"}`), "orders/paid", "wh-1")
	f.Add([]byte(`{"id":"x","refunds":[{"transactions":[{"amount":"-1"}]}]}`), "refunds/create", "wh-2")
	f.Add([]byte(`null`), "orders/cancelled", "")
	f.Add([]byte("\xc3\x28"), "app/uninstalled", "wh-3")
	f.Add([]byte(`{"shop_id":1,"shop_domain":"fuzz.myshopify.com"}`), "shop/redact", "wh-4")
	f.Add([]byte(`{"shop_id":1,"shop_domain":"other.myshopify.com","customer":{"id":1},"orders_to_redact":[]}`), "customers/redact", "wh-5")
	f.Fuzz(func(t *testing.T, body []byte, topic, id string) {
		st := &fakeIngester{}
		s := &Shopify{Deps: testDeps(st, nil), Secrets: []string{"shpss_fuzz"}, ShopSecrets: map[string]string{"fuzz.myshopify.com": "store-key"}}
		secret := "shpss_fuzz"
		if len(body)%2 == 1 {
			secret = "store-key" // an admin-created webhook of the same shop
		}
		h := map[string]string{
			"X-Shopify-Hmac-Sha256": SignShopify(body, secret),
			"X-Shopify-Topic":       topic,
			"X-Shopify-Webhook-Id":  id,
			"X-Shopify-Shop-Domain": "fuzz.myshopify.com",
		}
		for k, v := range h {
			if strings.ContainsAny(v, "\r\n\x00") {
				delete(h, k)
			}
		}
		rec := post(t, s.Handle, body, h)
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		// A compliance request is accepted only signed with the app's
		// secret and naming the request's shop (issue 15).
		if rec.Code == http.StatusOK && IsShopifyCompliance(topic) {
			var b struct {
				ShopDomain string `json:"shop_domain"`
			}
			if secret != "shpss_fuzz" || json.Unmarshal(body, &b) != nil || strings.ToLower(strings.TrimSpace(b.ShopDomain)) != "fuzz.myshopify.com" {
				t.Fatalf("compliance %s accepted: secret %s, body %q", topic, secret, body)
			}
		}
	})
}

// FuzzAppleVerify feeds arbitrary compact-JWS strings to the App Store
// verifier. Only a payload signed by the test PKI may verify.
func FuzzAppleVerify(f *testing.F) {
	pki := appletest.NewPKI(f)
	good := signApple(pki, testNotification("7e3b6a8c-0000-4000-8000-000000000001", "SUBSCRIBED", "INITIAL_BUY", testTxn(nil), nil))
	f.Add(good)
	parts := strings.Split(good, ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add("eyJhbGciOiJub25lIn0." + parts[1] + ".")
	f.Add(parts[0] + ".e30." + parts[2])
	f.Add("...")
	f.Add("")
	f.Add(strings.Repeat("a", 4096))
	v, err := NewAppleVerifier(appleVerifierConfig(pki))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, jws string) {
		got, err := v.VerifyNotification(context.Background(), jws)
		if err != nil {
			if got != nil {
				t.Fatal("an error with a result")
			}
			if AppleError(err).Status >= 500 {
				t.Fatalf("verification error %v maps to a 5xx", err)
			}
			return
		}
		// Compact JWS has exactly one signing input; anything that verifies
		// must carry the same header and payload as a PKI-signed seed.
		if !strings.HasPrefix(jws, parts[0]+".") {
			t.Fatalf("verified a JWS with a foreign header: %.80q", jws)
		}
	})
}

// FuzzAppleHandle posts arbitrary request bodies to the Apple handler.
func FuzzAppleHandle(f *testing.F) {
	pki := appletest.NewPKI(f)
	good := signApple(pki, testNotification("7e3b6a8c-0000-4000-8000-000000000002", "DID_RENEW", "", testTxn(nil), nil))
	f.Add(appleRequest(good))
	f.Add([]byte(`{"signedPayload":1}`))
	f.Add([]byte(`{"signedPayload":"a.b.c"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte("\xff"))
	a := newAppleForTest(f, &fakeIngester{}, appleVerifierConfig(pki))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := post(t, a.Handle, body, nil)
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// FuzzGoogleEnvelope decodes arbitrary authenticated push bodies into inbox
// items: every body yields a notification with a dedupe key.
func FuzzGoogleEnvelope(f *testing.F) {
	sub := googletest.SubscriptionNotification(gPackage, "tok", "pro_monthly", 4, testNow)
	b, err := googletest.PushBody("1234", sub, testNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	tn, err := googletest.PushBody("5678", googletest.TestNotification(gPackage, testNow), testNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tn)
	vn, err := googletest.PushBody("9", googletest.VoidedNotification(gPackage, "tok", "GPA.1", 1, 2, testNow), testNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(vn)
	f.Add([]byte(`{"message":{"data":"e30=","message_id":7}}`))
	f.Add([]byte(`{"message":{"data":"!!","messageId":"1"}}`))
	f.Add([]byte(`{"message":null}`))
	f.Add([]byte(`{"message":{"messageId":"1","data":"eyJwYWNrYWdlTmFtZSI6MX0"},"deliveryAttempt":"x"}`))
	g := &Google{Deps: testDeps(&fakeIngester{}, nil), Packages: []string{gPackage}}
	f.Fuzz(func(t *testing.T, body []byte) {
		n := g.notification(body)
		if n == nil || n.Key == "" || n.Source != mapping.SourceGoogle {
			t.Fatalf("notification %+v", n)
		}
		// Mapping errors are fine (the item is kept as failed); the call
		// must simply return.
		_, _ = mapping.Map(n, emptyStates{})
	})
}

// FuzzGoogleToken feeds arbitrary Authorization headers to the Pub/Sub
// OIDC verifier backed by a local key server.
func FuzzGoogleToken(f *testing.F) {
	o, err := googletest.NewOIDC()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(o.Close)
	good, err := o.Token(googletest.PushClaims(gAudience, gAccount, testNow.Add(-time.Minute)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer " + good)
	f.Add("Bearer " + googletest.Unsigned(o.KID, googletest.PushClaims(gAudience, gAccount, testNow)))
	f.Add("Bearer a.b.c")
	f.Add("Basic Zm9vOmJhcg==")
	f.Add("")
	now := func() time.Time { return testNow }
	v := &GoogleVerifier{Keys: &GoogleKeys{URL: o.URL(), Now: now}, Audience: gAudience, ServiceAccount: gAccount, Now: now}
	f.Fuzz(func(t *testing.T, auth string) {
		c, err := v.Verify(context.Background(), auth)
		if err != nil {
			return
		}
		if c == nil {
			t.Fatal("accepted without claims")
		}
		// Accepted: the scheme is Bearer (any case) and the token is the
		// signed one (the signature is the only part a forger may vary, and
		// it has a single canonical encoding).
		scheme, tok, _ := strings.Cut(strings.TrimSpace(auth), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) != good {
			t.Fatalf("accepted %q", auth)
		}
	})
}

// FuzzCustomEvents posts arbitrary bodies and Idempotency-Keys to
// POST /v1/events backed by a real store.
func FuzzCustomEvents(f *testing.F) {
	f.Add(`{"type":"purchase","app_user_id":"u1","app_id":"com.example.app","revenue":{"amount":"9.99","currency":"USD"}}`, "k1")
	f.Add(`{"events":[{"type":"custom","name":"level_up","app_user_id":"u1"}]}`, "k2")
	f.Add(`{"type":"refund","revenue":{"amount":1e400,"currency":"XXX"}}`, "k3")
	f.Add(`{"type":"custom","attributes":{"a":{"b":1}},"user":{"identifiers":{"email":"A@B.C"}}}`, "")
	f.Add("\xff\xfe", "k\x00")
	f.Add(`{"events":[]}`, strings.Repeat("k", 300))
	db, err := store.Open(filepath.Join(f.TempDir(), "postback.db"), &store.Options{Now: func() time.Time { return testNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	h := NewCustom(testDeps(db, nil), db, []string{"fuzz-key"}, 720*time.Hour)
	e := v1(h)
	f.Fuzz(func(t *testing.T, body, key string) {
		if strings.ContainsAny(key, "\r\n\x00") {
			key = ""
		}
		rec := call(e, http.MethodPost, "/v1/events", body, authed("fuzz-key", "Idempotency-Key", key))
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// emptyStates is a States with no prior state.
type emptyStates struct{}

func (emptyStates) State(string) (mapping.State, bool) { return mapping.State{}, false }

// FuzzAppleDecodeAroundNested: whenever a notification payload is decoded
// with its nested JWS cut out, decoding it whole must succeed and read the
// same values, the nested JWS included.
func FuzzAppleDecodeAroundNested(f *testing.F) {
	jws := "eyJhbGciOiJFUzI1NiJ9.eyJzaWduZWREYXRlIjoxfQ.c2ln"
	f.Add(`{"notificationType":"DID_RENEW","notificationUUID":"u","signedDate":1,"data":{"bundleId":"b","environment":"Production","signedTransactionInfo":"` + jws + `","signedRenewalInfo":"` + jws + `"}}`)
	f.Add(`{"data":{"signedRenewalInfo":"a.b.c","signedTransactionInfo":""},"appData":{"signedAppTransactionInfo":"` + jws + `"}}`)
	f.Add(`{"x":{"signedTransactionInfo":"a.b.c"},"data":{"signedTransactionInfo":"d.e.f","SignedTransactionInfo":"g.h.i"}}`)
	f.Add(`{"data":{"signedTransactionInfo":"a\u002eb.c","signedRenewalInfo":"\u0000"}}`)
	f.Fuzz(func(t *testing.T, payload string) {
		raw := []byte(payload)
		var fast mapping.AppleNotification
		var nested [len(nestedFields)]nestedJWS
		if !decodeAroundNested(raw, &fast, &nested) {
			return
		}
		var full mapping.AppleNotification
		if err := json.Unmarshal(raw, &full); err != nil {
			t.Fatalf("cut-out decode accepted what the whole decode refuses: %v", err)
		}
		for i := range nestedFields {
			want := ""
			if s := nestedSlot(&full, i); s != nil {
				want, *s = *s, ""
			}
			if got := string(nested[i].jws); got != want {
				t.Fatalf("nested %d: %q, want %q", i, got, want)
			}
			if n := nested[i]; n.jws != nil && (n.at < 0 || !bytes.HasPrefix(raw[n.at:], nestedFields[i].pattern) || raw[n.end] != '"') {
				t.Fatalf("nested %d: span %d..%d is not the key and its value", i, n.at, n.end)
			}
		}
		if !reflect.DeepEqual(fast, full) {
			t.Fatalf("decoded\n%+v\nwant\n%+v", fast, full)
		}
	})
}

// FuzzAppleJSON: whatever the App Store decoding plans accept, encoding/json
// accepts too and decodes to the same value.
func FuzzAppleJSON(f *testing.F) {
	for _, tc := range appleJSONCases {
		f.Add(tc.in)
	}
	f.Add(`{"notificationType":"DID_RENEW","data":{"bundleId":"b","signedTransactionInfo":"\u0000"},"summary":{"storefrontCountryCodes":["USA"]}}`)
	f.Add(`{"autoRenewStatus":1,"isInBillingRetryPeriod":true,"eligibleWinBackOfferIds":["a","b"],"renewalPrice":4990}`)
	check := func(t *testing.T, plan *jsonPlan, in string, fast, want any) {
		if !plan.decode([]byte(in), reflect.ValueOf(fast).Elem()) {
			return
		}
		if err := json.Unmarshal([]byte(in), want); err != nil {
			t.Fatalf("the plan decoded what encoding/json refuses (%v): %q", err, in)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q:\nplan %+v\nencoding/json %+v", in, fast, want)
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		check(t, appleTransactionPlan, in, &mapping.AppleTransaction{}, &mapping.AppleTransaction{})
		check(t, appleRenewalPlan, in, &mapping.AppleRenewalInfo{}, &mapping.AppleRenewalInfo{})
		check(t, appleNotificationPlan, in, &mapping.AppleNotification{}, &mapping.AppleNotification{})
	})
}

// FuzzDecodeJWSSegment: the table decoder gives exactly what the strict
// base64url decoder gives: the bytes, their count and the error.
func FuzzDecodeJWSSegment(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9")
	f.Add("eyJhbGciOiJFUzI1NiJ9e30")
	f.Add("abcdefgh-_AZaz09x")
	f.Add("abcdefg=")
	f.Add("abcd\nefghijkl")
	f.Add("abcdefghijklmnoA")
	f.Add("abcdefghijklmnopB")
	f.Fuzz(func(t *testing.T, in string) {
		want := make([]byte, jwsBase64.DecodedLen(len(in)))
		got := make([]byte, len(want))
		wn, werr := jwsBase64.Decode(want, []byte(in))
		gn, gerr := decodeJWSSegment(got, []byte(in))
		if gn != wn || !bytes.Equal(got[:gn], want[:wn]) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("%q: %d %x %v, want %d %x %v", in, gn, got[:gn], gerr, wn, want[:wn], werr)
		}
	})
}
