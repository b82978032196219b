package server

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/webhooks/appletest"
)

// TestPIINeverOnDisk (issue 15, item 3) plants emails and phones through
// every source of a running gateway, under keys that say so and keys that
// do not (Stripe metadata, a Shopify note, custom attributes, an
// app_user_id, an Idempotency-Key, the identity API's path and an
// identifier), including values that fail normalization, then searches the
// raw database file for each in raw, base64 and hex form, and the logs.
func TestPIINeverOnDisk(t *testing.T) {
	var logs safeBuffer
	pki := appletest.NewPKI(t)
	tg := hostileGateway(t, pki)
	tg.stop() // restarted with a log buffer on the same config
	tg = startGateway(t, tg.g.Config, &logs)
	dbPath := tg.g.Config.Storage.Path

	const (
		stripeMetaEmail = "stripe.meta.owner@example.org"
		stripeMetaPhone = "+33 6 12 34 56 78"
		stripeBadEmail  = "broken mail@example"
		shopNoteEmail   = "shop.note.buyer@example.net"
		shopNotePhone   = "(415) 555-0199"
		shopBadPhone    = "555-12"
		customAttrEmail = "custom.attr@example.com"
		customAttrPhone = "+44 20 7946 0958"
		customUserEmail = "app.user.email@example.com"
		idemKeyEmail    = "idem.key.email@example.com"
		pathUserEmail   = "path.user@example.com"
		externalIDEmail = "external.id@example.com"
	)
	planted := []string{stripeMetaEmail, stripeMetaPhone, stripeBadEmail, shopNoteEmail, shopNotePhone, shopBadPhone,
		customAttrEmail, customAttrPhone, customUserEmail, idemKeyEmail, pathUserEmail, externalIDEmail}

	// Stripe: metadata under keys that do not say email or phone, and an
	// email that fails normalization under one that does.
	stripe := []byte(fmt.Sprintf(`{"id":"evt_pii","object":"event","api_version":"2023-10-16","created":%d,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_pii","object":"subscription","status":"trialing","customer":"cus_pii","trial_end":1765000000,"metadata":{"app_user_id":"u-pii","owner":%q,"hotline":%q,"customer_email":%q},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}}}`,
		time.Now().Unix(), stripeMetaEmail, stripeMetaPhone, stripeBadEmail))
	if status := postStripe(t, tg.url, stripe); status != http.StatusOK {
		t.Fatalf("stripe: status %d", status)
	}

	// Shopify: the order note and a note attribute, and a phone that fails
	// normalization.
	order := []byte(fmt.Sprintf(`{"id":5899171700001,"name":"#9001","currency":"USD","total_price":"9.99","financial_status":"paid","note":"deliver to %s, call %s","phone":%q,"customer":{"id":9001},"note_attributes":[{"name":"gift_for","value":%q}]}`,
		shopNoteEmail, shopNotePhone, shopBadPhone, shopNoteEmail))
	if status, code := send(t, tg.url+"/webhooks/shopify", order, shopifySigned(order, "wh-pii")); status != http.StatusOK {
		t.Fatalf("shopify: status %d (%s)", status, code)
	}

	// Custom event: app_user_id and attributes, under an email
	// Idempotency-Key.
	custom := []byte(fmt.Sprintf(`{"type":"purchase","app_user_id":%q,"app_id":%q,"product_id":"pro","revenue":{"amount":"9.99","currency":"USD"},"attributes":{"contact":%q,"whatsapp":%q}}`,
		customUserEmail, hostileBundle, customAttrEmail, customAttrPhone))
	if status, code := send(t, tg.url+"/v1/events", custom, apiHeaders(idemKeyEmail)); status != http.StatusAccepted {
		t.Fatalf("custom: status %d (%s)", status, code)
	}
	// The retry with the same key is still the same request.
	if status, code := send(t, tg.url+"/v1/events", custom, apiHeaders(idemKeyEmail)); status != http.StatusAccepted {
		t.Fatalf("custom retry: status %d (%s)", status, code)
	}

	// Identity API: an email as the path's app_user_id and as external_id.
	req, _ := http.NewRequest(http.MethodPut, tg.url+"/v1/users/"+url.PathEscape(pathUserEmail),
		strings.NewReader(fmt.Sprintf(`{"identifiers":{"external_id":%q}}`, externalIDEmail)))
	req.Header.Set("Authorization", "Bearer "+hostileAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT user: status %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, tg.url+"/v1/users/"+url.PathEscape(pathUserEmail), nil)
	req.Header.Set("Authorization", "Bearer "+hostileAPIKey)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET user by the same email: status %d, want 200", resp.StatusCode)
	}

	tg.stop()
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range planted {
		forms := map[string]string{"raw": v, "lower": strings.ToLower(v), "base64": base64.StdEncoding.EncodeToString([]byte(v)),
			"base64url": base64.RawURLEncoding.EncodeToString([]byte(v)), "hex": hex.EncodeToString([]byte(v))}
		if d := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, v); len(d) >= 7 {
			forms["digits"] = d
		}
		for form, s := range forms {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("%q found in the database file (%s form)", v, form)
			}
		}
		if strings.Contains(logs.String(), v) {
			t.Errorf("%q found in the logs", v)
		}
	}
	if !strings.Contains(logs.String(), "notification accepted") {
		t.Errorf("expected request logs")
	}
}
