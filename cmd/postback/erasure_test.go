package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/config"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/server"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
	"github.com/postback/postback/webhooks/googletest"
)

// plantedUser is one app user and the values planted for it through every
// source: device ids, an email, a phone and attribute values.
type plantedUser struct {
	id                  string // app_user_id: a UUID, so Apple's appAccountToken can carry it
	idfa, gaid, adid    string
	email, phone, attr  string
	stripeSub, googleTk string
}

func newPlantedUser(tag string) plantedUser {
	return plantedUser{
		id:   newUUID(),
		idfa: strings.ToUpper(newUUID()), gaid: newUUID(), adid: "adid" + strings.ReplaceAll(newUUID(), "-", "")[:28],
		email: tag + ".planted." + strings.ReplaceAll(newUUID(), "-", "")[:10] + "@example.org",
		phone: fmt.Sprintf("+1 415 555 %04d", time.Now().UnixNano()%10000), attr: tag + "-attr-" + strings.ReplaceAll(newUUID(), "-", "")[:12],
		stripeSub: "sub_" + tag + strings.ReplaceAll(newUUID(), "-", "")[:12], googleTk: tag + "-token-" + newUUID(),
	}
}

// values are the planted values an erasure must make unreadable.
func (u plantedUser) values() []string {
	return []string{u.id, u.idfa, u.gaid, u.adid, u.email, u.phone, u.attr}
}

// forms are the ways a value may sit in a file: raw, case-folded, base64
// and hex (and the digits of a phone number).
func forms(v string) map[string]string {
	f := map[string]string{"raw": v, "lower": strings.ToLower(v), "upper": strings.ToUpper(v),
		"base64": base64.StdEncoding.EncodeToString([]byte(v)), "base64url": base64.RawURLEncoding.EncodeToString([]byte(v)),
		"hex": hex.EncodeToString([]byte(v))}
	if d := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, v); len(d) >= 10 && d != v {
		f["digits"] = d
	}
	return f
}

// TestErasureLeavesNothingReadable (issue 15, item 2) plants device ids,
// emails, phones and attribute values through every source (Apple, Google,
// Stripe, Shopify, custom events and the identity API) for two users,
// forwards them to Adjust (whose per-device memory is stored), takes a
// backup, erases one user with DELETE /v1/users/{id}, takes another backup,
// and then searches the database file, both backups and the key file for
// every planted value in raw, base64 and hex form: zero hits. The erased
// user's records in the first backup do not open with the live key file
// (their keys are destroyed), while the other user's still do.
func TestErasureLeavesNothingReadable(t *testing.T) {
	dir := t.TempDir()
	fakes, err := newStoreFakes(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fakes.close()
	adjust := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer adjust.Close()
	const (
		adminToken   = "erasure-admin-token-0123456789"
		apiKey       = "erasure-api-key-0123456789abcdef"
		stripeSecret = "whsec_erasure_0123456789abcdef"
		shopSecret   = "shpss_erasure_0123456789abcdef"
		shop         = "erasure.myshopify.com"
	)
	dbPath := filepath.Join(dir, "postback.db")
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 2s}
storage: {path: %q}
admin: {token: %q}
api_keys: [%q]
sources:
%s  stripe: {enabled: true, secrets: [%q], app_id: %s}
  shopify: {enabled: true, secret: %q, app_id: %s}
destinations:
  - name: adjust
    type: adjust
    endpoint: %q
    app_token: 4w565xzmb54d
    event_tokens: {trial_started: t1a1a1, subscription_started: s2b2b2, purchase: p3c3c3}
    match: {environments: [production, sandbox]}
`, dbPath, adminToken, apiKey, fakes.sourcesYAML(), stripeSecret, fakeBundleID, shopSecret, fakeBundleID, adjust.URL)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := server.New(cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Listener: ln,
		Dispatch: dispatch.Options{Poll: 10 * time.Millisecond, BackoffBase: 5 * time.Millisecond, BackoffCap: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	defer stop()
	base := "http://" + ln.Addr().String()
	c := &http.Client{Timeout: 10 * time.Second}
	call := func(method, path string, body []byte, headers map[string]string, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, out)
		}
		return out
	}
	api := map[string]string{"Authorization": "Bearer " + apiKey}
	now := time.Now()

	victim, bystander := newPlantedUser("victim"), newPlantedUser("bystander")
	for i, u := range []plantedUser{victim, bystander} {
		// Apple: the app user as appAccountToken.
		txn := appleTxn{ID: fmt.Sprint(2000000900 + i*10), OriginalID: fmt.Sprint(2000000900 + i*10), User: u.id, Product: "pro_monthly",
			Purchased: now.Add(-time.Minute), Expires: now.Add(7 * 24 * time.Hour), Reason: "PURCHASE", Trial: true, Currency: "USD"}
		call(http.MethodPost, "/webhooks/apple", fakes.appleBody(newUUID(), "SUBSCRIBED", "INITIAL_BUY", txn, now), nil, http.StatusOK)

		// Google: the app user as the obfuscated account id the Play API
		// answers with.
		fakes.setGoogle(googleSub{Token: u.googleTk, User: u.id, Product: "pro_monthly", OrderID: fmt.Sprintf("GPA.3300-%d", i),
			Started: now.Add(-time.Minute), Expires: now.Add(7 * 24 * time.Hour), Trial: true, PriceMicros: 9_990_000, Currency: "USD"}, false)
		body, headers, err := fakes.googlePush(fmt.Sprint(770000+i), googletest.SubscriptionNotification(fakeBundleID, u.googleTk, "pro_monthly", 4, now), now)
		if err != nil {
			t.Fatal(err)
		}
		call(http.MethodPost, "/webhooks/google", body, headers, http.StatusNoContent)

		// Stripe: identifiers, an email and a phone in metadata, one under
		// a key that does not say email.
		sb := []byte(fmt.Sprintf(`{"id":"evt_erase_%d","object":"event","api_version":"2023-10-16","created":%d,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":%q,"object":"subscription","status":"trialing","customer":"cus_erase_%d","trial_end":%d,"metadata":{"app_user_id":%q,"idfa":%q,"email":%q,"phone":%q,"nickname":%q,"owner":%q},"items":{"data":[{"quantity":1,"price":{"id":"price_1","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}}}`,
			i, now.Unix(), u.stripeSub, i, now.Add(7*24*time.Hour).Unix(), u.id, u.idfa, u.email, u.phone, u.attr, u.email))
		sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: sb, Secret: stripeSecret, Timestamp: now}).Header
		call(http.MethodPost, "/webhooks/stripe", sb, map[string]string{"Stripe-Signature": sig}, http.StatusOK)

		// Shopify: an order with the app user and a device id in note
		// attributes, the customer's email and phone, an email in the note.
		ob := []byte(fmt.Sprintf(`{"id":%d,"name":"#%d","currency":"USD","total_price":"9.99","financial_status":"paid","created_at":%q,"email":%q,"phone":%q,"note":"gift from %s","customer":{"id":%d,"email":%q,"phone":%q},"note_attributes":[{"name":"app_user_id","value":%q},{"name":"idfa","value":%q},{"name":"nickname","value":%q}],"line_items":[{"id":1,"product_id":632910392,"variant_id":39072856,"sku":"PRO","quantity":1,"price":"9.99"}]}`,
			5899171700100+i, 9100+i, now.Format(time.RFC3339), u.email, u.phone, u.email, 9100+i, u.email, u.phone, u.id, u.idfa, u.attr))
		call(http.MethodPost, "/webhooks/shopify", ob, map[string]string{
			"X-Shopify-Hmac-Sha256": webhooks.SignShopify(ob, shopSecret), "X-Shopify-Topic": "orders/paid",
			"X-Shopify-Webhook-Id": fmt.Sprintf("wh-erase-%d", i), "X-Shopify-Shop-Domain": shop,
		}, http.StatusOK)

		// Custom event: identifiers and attributes.
		cb := []byte(fmt.Sprintf(`{"type":"purchase","app_user_id":%q,"app_id":%q,"product_id":"coins","transaction_id":"tx-erase-%d","revenue":{"amount":"1.99","currency":"USD"},"identifiers":{"idfa":%q,"gaid":%q,"email":%q},"attributes":{"nickname":%q,"contact":%q}}`,
			u.id, fakeBundleID, i, u.idfa, u.gaid, u.email, u.attr, u.phone))
		call(http.MethodPost, "/v1/events", cb, map[string]string{"Authorization": "Bearer " + apiKey, "Idempotency-Key": u.email}, http.StatusAccepted)

		// Identity API: device ids and an email for the user.
		ub := []byte(fmt.Sprintf(`{"identifiers":{"adid":%q,"gaid":%q,"email":%q}}`, u.adid, u.gaid, u.email))
		call(http.MethodPut, "/v1/users/"+u.id, ub, api, http.StatusOK)
	}

	// Every source gave the victim events (Google's after enrichment), and
	// Adjust got the device ids (its per-device memory is stored).
	sources := func(u plantedUser) map[string]bool {
		p, err := g.Store.Events(store.EventFilter{AppUserID: u.id, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range p.Events {
			seen[e.Source] = true
		}
		return seen
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(sources(victim)) < 5 || len(sources(bystander)) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("events by source: victim %v, bystander %v; want all five sources", sources(victim), sources(bystander))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		ds, err := g.Store.Deliveries(store.DeliveryFilter{Destination: "adjust", States: []string{store.StateDelivered}})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries to adjust, want at least 4", len(ds))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok, err := g.Store.ForwarderMemory("adjust").Get("production|idfa:" + victim.idfa + "|p3c3c3"); err != nil || !ok {
		t.Fatalf("adjust memory of the victim's device: %v %v; the test would not cover it", ok, err)
	}

	backup := func(name string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, call(http.MethodGet, "/admin/api/store/backup", nil, map[string]string{"Authorization": "Bearer " + adminToken}, http.StatusOK), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	before := backup("before.db")
	call(http.MethodDelete, "/v1/users/"+victim.id, nil, api, http.StatusOK)
	after := backup("after.db")
	if ok := sources(victim); len(ok) != 0 {
		t.Errorf("the victim's events still name them: %v", ok)
	}
	if _, ok, _ := g.Store.ForwarderMemory("adjust").Get("production|idfa:" + victim.idfa + "|p3c3c3"); ok {
		t.Error("adjust still remembers the victim's device")
	}
	if len(sources(bystander)) != 5 {
		t.Errorf("the bystander lost events: %v", sources(bystander))
	}
	stop()

	for _, f := range []string{dbPath, before, after, dbPath + ".keys"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range victim.values() {
			for form, s := range forms(v) {
				if i := bytes.Index(raw, []byte(s)); i >= 0 {
					lo := max(0, i-150)
					t.Errorf("%s: planted %q found (%s form): %q", filepath.Base(f), v, form, raw[lo:min(len(raw), i+60)])
				}
			}
		}
	}

	// The backup taken before the erasure, restored beside the live key
	// file: the victim's records no longer open, the bystander's do.
	restored := filepath.Join(t.TempDir(), "restored.db")
	raw, err := os.ReadFile(before)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := os.ReadFile(dbPath + ".keys")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(restored, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(restored+".keys", keys, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(restored, &store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := db.Events(store.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	readable := map[string]int{}
	for _, e := range p.Events {
		for _, u := range []plantedUser{victim, bystander} {
			if e.User.AppUserID == u.id || e.Identifier(mapping.IDIDFA) == u.idfa || e.Attributes["nickname"] == u.attr {
				readable[u.id]++
			}
		}
	}
	if readable[victim.id] != 0 {
		t.Errorf("%d of the victim's events open in the earlier backup", readable[victim.id])
	}
	if readable[bystander.id] < 5 {
		t.Errorf("only %d of the bystander's events open in the earlier backup, want all", readable[bystander.id])
	}
	if u, err := db.GetUser(victim.id); err == nil && len(u.Identifiers) > 0 {
		t.Errorf("the victim's identity record opens in the earlier backup: %+v", u)
	}
	if u, err := db.GetUser(bystander.id); err != nil || u.Identifiers[mapping.IDAdjust] != bystander.adid {
		t.Errorf("the bystander's identity record in the earlier backup: %+v, %v", u, err)
	}
}
