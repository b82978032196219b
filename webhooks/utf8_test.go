package webhooks

import (
	"net/http"
	"testing"
)

// Invalid UTF-8 in a verified body is refused with 400 and never stored:
// encoding/json would turn each invalid byte into U+FFFD, so "u\xff" and
// "u\xfe" would become one user (issue 13, item 7). The valid twin of each
// body is accepted, so the refusal is about the bytes, not the request.
func TestInvalidUTF8Refused(t *testing.T) {
	stripeFor := func(user string) []byte {
		return []byte(`{"id":"evt_utf8","object":"event","created":1764471600,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_utf8","status":"trialing","customer":"cus_1","metadata":{"app_user_id":"` + user + `"},"items":{"data":[]}}}}`)
	}
	shopifyFor := func(user string) []byte {
		return []byte(`{"id":820982911946154508,"name":"#1001","cancelled_at":null,"email":"` + user + `@example.com","total_price":"10.00","currency":"EUR"}`)
	}
	customFor := func(user string) string {
		return `{"type":"custom","name":"level_up","app_id":"com.example.app","app_user_id":"` + user + `"}`
	}
	for _, user := range []string{"u\xff", "u\xfe", "u"} {
		valid := user == "u"
		want := http.StatusBadRequest
		if valid {
			want = http.StatusOK
		}
		t.Run("stripe "+user, func(t *testing.T) {
			st := &fakeIngester{}
			s := &Stripe{Deps: testDeps(st, nil), Secrets: []string{secretA}}
			body := stripeFor(user)
			rec := post(t, s.Handle, body, map[string]string{"Stripe-Signature": sign(body, secretA, testNow)})
			if rec.Code != want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, want)
			}
			if !valid && (errCode(t, rec) != CodeMalformed || st.count() != 0) {
				t.Errorf("code %q, %d stored; want %q and nothing stored", errCode(t, rec), st.count(), CodeMalformed)
			}
		})
		t.Run("shopify "+user, func(t *testing.T) {
			st := &fakeIngester{}
			body := shopifyFor(user)
			rec := post(t, newShopify(st, nil).Handle, body, shopifyHeaders(body, shopSecret, "orders/paid", "wh-utf8"))
			if rec.Code != want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, want)
			}
			if !valid && (errCode(t, rec) != CodeMalformed || st.count() != 0) {
				t.Errorf("code %q, %d stored; want %q and nothing stored", errCode(t, rec), st.count(), CodeMalformed)
			}
		})
		t.Run("custom "+user, func(t *testing.T) {
			h, db := newCustom(t, apiKeyA)
			rec := call(v1(h), http.MethodPost, "/v1/events", customFor(user), authed(apiKeyA, "Idempotency-Key", "k-utf8"))
			wantCustom := http.StatusAccepted
			if !valid {
				wantCustom = http.StatusBadRequest
			}
			if rec.Code != wantCustom {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, wantCustom)
			}
			if valid {
				return
			}
			n, _ := db.Notification("custom", "k-utf8")
			if got := errorBody(t, rec); got.Error.Code != CodeInvalid || len(got.Error.Fields) != 1 || got.Error.Fields[0].Field != "body" || n != nil {
				t.Errorf("got %+v, stored %v; want one invalid field \"body\" and nothing stored", got, n != nil)
			}
		})
		t.Run("users API "+user, func(t *testing.T) {
			h, _ := newCustom(t, apiKeyA)
			rec := call(v1(h), http.MethodPut, "/v1/users/u-1", `{"identifiers":{"appsflyer_id":"`+user+`"}}`, authed(apiKeyA))
			wantPut := http.StatusOK
			if !valid {
				wantPut = http.StatusBadRequest
			}
			if rec.Code != wantPut {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, wantPut)
			}
		})
	}
}
