package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/postback/postback/webhooks/googletest"
)

// demoPutUser stores a user's device identifiers through PUT /v1/users, as
// the app does after its SDKs start, so that store notifications (which
// carry only the app user id) reach MMPs that need a device id.
func demoPutUser(ctx context.Context, c *http.Client, base, apiKey, user string, ids map[string]string) error {
	body, err := json.Marshal(map[string]any{"identifiers": ids})
	if err != nil {
		return err
	}
	return demoRequest(ctx, c, http.MethodPut, base+"/v1/users/"+url.PathEscape(user), body, map[string]string{"Authorization": "Bearer " + apiKey})
}

// appleStory is an App Store subscriber's story: a one-week free trial
// starts (SUBSCRIBED/INITIAL_BUY), converts (DID_RENEW), renews (DID_RENEW)
// and the renewal is refunded (REFUND). Each notification is signed by the
// test PKI the gateway trusts; the app account token is the app user id.
// The story is compressed into the last few seconds so that every
// destination takes the events (ad networks refuse old ones).
func appleStory(ctx context.Context, c *http.Client, base, apiKey string, f *storeFakes, out io.Writer) error {
	user := newUUID()
	if err := demoPutUser(ctx, c, base, apiKey, user, map[string]string{
		"appsflyer_id": "1700000000000-3333333", "idfa": "A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF", "att_status": "3",
	}); err != nil {
		return fmt.Errorf("apple: PUT /v1/users: %w", err)
	}
	now := time.Now().Add(-4 * time.Second).Truncate(time.Millisecond)
	origN := 2_000_000_000_000_000 + now.UnixMilli()%1_000_000_000*10
	txn := func(i int, reason string, trial bool) appleTxn {
		at := now.Add(time.Duration(i) * time.Second)
		return appleTxn{ID: strconv.FormatInt(origN+int64(i), 10), OriginalID: strconv.FormatInt(origN, 10), User: user, Product: "pro_monthly",
			Purchased: at, Expires: at.AddDate(0, 1, 0), Reason: reason, Trial: trial, PriceMilli: 9990, Currency: "USD"}
	}
	trial := txn(0, "PURCHASE", true)
	trial.Expires = trial.Purchased.AddDate(0, 0, 7)
	refunded := txn(2, "RENEWAL", false)
	refunded.Revoked = now.Add(3 * time.Second)
	steps := []struct {
		typ, subtype string
		txn          appleTxn
		label        string
	}{
		{"SUBSCRIBED", "INITIAL_BUY", trial, "free trial starts"},
		{"DID_RENEW", "", txn(1, "RENEWAL", false), "trial converts"},
		{"DID_RENEW", "", txn(2, "RENEWAL", false), "subscription renews"},
		{"REFUND", "", refunded, "renewal refunded"},
	}
	for i, s := range steps {
		body := f.appleBody(newUUID(), s.typ, s.subtype, s.txn, now.Add(time.Duration(i)*time.Second))
		if err := demoRequest(ctx, c, http.MethodPost, base+"/webhooks/apple", body, nil); err != nil {
			return fmt.Errorf("apple %s: %w", s.typ, err)
		}
		name := s.typ
		if s.subtype != "" {
			name += "/" + s.subtype
		}
		fmt.Fprintf(out, "apple    %-32s %s\n", name, s.label)
	}
	return nil
}

// googleStory is a Google Play subscriber's story told through Pub/Sub
// pushes signed by the test OIDC key server, with the fake Android
// Publisher answering the gateway's look-ups: a free trial is purchased
// (SUBSCRIPTION_PURCHASED), converts (SUBSCRIPTION_RENEWED), renews
// (SUBSCRIPTION_RENEWED) and the renewal order is voided (refund). enriched
// waits until the gateway has looked a push up, so that the fake API can
// move on to the next state.
func googleStory(ctx context.Context, c *http.Client, base, apiKey string, f *storeFakes, enriched func(messageID string) error, out io.Writer) error {
	const user, token, product = "demo-user-google", "demo-purchase-token-google", "pro_monthly"
	if err := demoPutUser(ctx, c, base, apiKey, user, map[string]string{
		"appsflyer_id": "1700000000000-4444444", "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d",
	}); err != nil {
		return fmt.Errorf("google: PUT /v1/users: %w", err)
	}
	now := time.Now().Add(-4 * time.Second).Truncate(time.Millisecond)
	orderBase := fmt.Sprintf("GPA.3312-5544-7788-%05d", now.UnixMilli()%100000)
	sub := func(n int, trial bool) googleSub {
		start := now.Add(time.Duration(n) * time.Second)
		return googleSub{Token: token, User: user, Product: product, OrderID: googleOrderID(orderBase, n),
			Started: now, Expires: start.AddDate(0, 1, 0), Trial: trial, PriceMicros: 4_990_000, Currency: "USD"}
	}
	steps := []struct {
		sub      googleSub
		refunded bool
		note     map[string]any
		label    string
	}{
		{sub(0, true), false, googletest.SubscriptionNotification(fakeBundleID, token, product, 4, now), "free trial starts"},
		{sub(1, false), false, googletest.SubscriptionNotification(fakeBundleID, token, product, 2, now.Add(time.Second)), "trial converts"},
		{sub(2, false), false, googletest.SubscriptionNotification(fakeBundleID, token, product, 2, now.Add(2*time.Second)), "subscription renews"},
		{sub(2, false), true, googletest.VoidedNotification(fakeBundleID, token, googleOrderID(orderBase, 2), 1, 1, now.Add(3*time.Second)), "renewal refunded"},
	}
	names := map[int]string{2: "SUBSCRIPTION_RENEWED", 4: "SUBSCRIPTION_PURCHASED"}
	for i, s := range steps {
		f.setGoogle(s.sub, s.refunded)
		id := fmt.Sprintf("demo-google-%d-%d", now.UnixMilli(), i+1)
		body, headers, err := f.googlePush(id, s.note, time.Now())
		if err != nil {
			return err
		}
		if err := demoRequest(ctx, c, http.MethodPost, base+"/webhooks/google", body, headers); err != nil {
			return fmt.Errorf("google push %s: %w", id, err)
		}
		if err := enriched(id); err != nil {
			return fmt.Errorf("google push %s: %w", id, err)
		}
		name := "VOIDED_PURCHASE"
		if sn, ok := s.note["subscriptionNotification"].(map[string]any); ok {
			name = names[sn["notificationType"].(int)]
		}
		fmt.Fprintf(out, "google   %-32s %s\n", name, s.label)
	}
	return nil
}

// customStory is a web purchase reported by the app's backend through
// POST /v1/events, with the identifiers its web page collected.
func customStory(ctx context.Context, c *http.Client, base, apiKey string, out io.Writer) error {
	body := []byte(`{"type":"purchase","app_id":"com.example.app","app_user_id":"demo-user-web","product_id":"lifetime_unlock",` +
		`"transaction_id":"web-order-1001","revenue":{"amount":"49.99","currency":"USD"},` +
		`"identifiers":{"appsflyer_id":"1700000000000-5555555","ttclid":"E.C.P.demo-web","email":"alex@example.com"},` +
		`"attributes":{"channel":"web","page":"/checkout"}}`)
	h := map[string]string{"Authorization": "Bearer " + apiKey, "Idempotency-Key": "demo-web-order-1001"}
	if err := demoRequest(ctx, c, http.MethodPost, base+"/v1/events", body, h); err != nil {
		return fmt.Errorf("custom event: %w", err)
	}
	fmt.Fprintf(out, "custom   %-32s %s\n", "POST /v1/events purchase", "web purchase reported by the backend")
	return nil
}
