package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/api/androidpublisher/v3"

	"github.com/postback/postback/webhooks/appletest"
	"github.com/postback/postback/webhooks/googletest"
)

// Identities of the test app that `postback demo` and `postback bench
// --self` configure and sign for.
const (
	fakeBundleID       = "com.example.app"
	fakeAppAppleID     = int64(1234567890)
	fakeGoogleAudience = "https://postback.example.com/webhooks/google"
	fakeGoogleAccount  = "pubsub-push@postback-demo.iam.gserviceaccount.com"
)

// storeFakes stand in for the app stores' side of a local gateway: a test
// Apple PKI whose root the gateway trusts (written to a file for
// sources.apple.root_certificates), a Pub/Sub OIDC key server
// (sources.google.oidc_certs_url) and a fake Android Publisher API
// (sources.google.play_api.endpoint). Everything listens on 127.0.0.1.
type storeFakes struct {
	pki      *appletest.PKI
	rootPath string
	oidc     *googletest.OIDC
	play     *googletest.Publisher

	mu       sync.Mutex
	token    string
	tokenAt  time.Time
	tokenErr error
}

// newStoreFakes generates the keys, writes the Apple root into dir and
// starts the Google servers. Close it when done.
func newStoreFakes(dir string) (*storeFakes, error) {
	pki, err := appletest.New(appletest.WithName("Postback Local"))
	if err != nil {
		return nil, fmt.Errorf("test Apple PKI: %w", err)
	}
	root := filepath.Join(dir, "apple-test-root.pem")
	if err := os.WriteFile(root, pki.RootPEM(), 0o600); err != nil {
		return nil, err
	}
	o, err := googletest.NewOIDC()
	if err != nil {
		return nil, fmt.Errorf("test OIDC key server: %w", err)
	}
	return &storeFakes{pki: pki, rootPath: root, oidc: o, play: googletest.NewPublisher()}, nil
}

// close stops the Google servers.
func (f *storeFakes) close() {
	f.oidc.Close()
	f.play.Close()
}

// sourcesYAML is the apple and google blocks of a config's sources: map,
// indented for it.
func (f *storeFakes) sourcesYAML() string {
	return fmt.Sprintf(`  apple:
    enabled: true
    apps: [{bundle_id: %s, app_apple_id: %d}]
    environments: [production, sandbox]
    root_certificates: [%q]
  google:
    enabled: true
    packages: [%s]
    push_audience: %q
    push_service_account: %q
    oidc_certs_url: %q
    play_api: {endpoint: %q}
`, fakeBundleID, fakeAppAppleID, f.rootPath, fakeBundleID, fakeGoogleAudience, fakeGoogleAccount, f.oidc.URL(), f.play.URL())
}

// newUUID returns a random RFC 4122 version 4 UUID (appAccountToken and
// notificationUUID are UUIDs).
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// appleTxn describes one App Store transaction of the test app.
type appleTxn struct {
	ID, OriginalID string
	User           string // appAccountToken
	Product        string
	Purchased      time.Time
	Expires        time.Time
	Reason         string // PURCHASE or RENEWAL
	Trial          bool   // an introductory free trial (price 0)
	PriceMilli     int64  // Apple's price: milli-units of Currency
	Currency       string
	Revoked        time.Time // set for a refunded transaction
}

func (t appleTxn) fields(signed time.Time) map[string]any {
	m := map[string]any{
		"transactionId": t.ID, "originalTransactionId": t.OriginalID, "webOrderLineItemId": t.ID + "1",
		"bundleId": fakeBundleID, "productId": t.Product, "subscriptionGroupIdentifier": "21000001",
		"purchaseDate": t.Purchased.UnixMilli(), "originalPurchaseDate": t.Purchased.UnixMilli(),
		"expiresDate": t.Expires.UnixMilli(), "quantity": 1, "type": "Auto-Renewable Subscription",
		"appAccountToken": t.User, "inAppOwnershipType": "PURCHASED", "signedDate": signed.UnixMilli(),
		"environment": "Production", "transactionReason": t.Reason, "storefront": "USA", "storefrontId": "143441",
		"price": t.PriceMilli, "currency": t.Currency,
	}
	if t.Trial {
		m["offerType"], m["offerDiscountType"], m["offerPeriod"], m["price"] = 1, "FREE_TRIAL", "P1W", 0
	}
	if !t.Revoked.IsZero() {
		m["revocationDate"], m["revocationReason"], m["revocationType"] = t.Revoked.UnixMilli(), 0, "REFUND_FULL"
	}
	return m
}

// appleBody returns the request body of an App Store Server Notification V2
// as Apple sends it: {"signedPayload": JWS}, with the transaction and
// renewal info signed into their own JWS, all by the test PKI's leaf.
func (f *storeFakes) appleBody(uuid, typ, subtype string, txn appleTxn, signed time.Time) []byte {
	renewal := map[string]any{
		"originalTransactionId": txn.OriginalID, "autoRenewProductId": txn.Product, "productId": txn.Product,
		"autoRenewStatus": 1, "signedDate": signed.UnixMilli(), "environment": "Production",
		"recentSubscriptionStartDate": txn.Purchased.UnixMilli(), "renewalDate": txn.Expires.UnixMilli(),
	}
	n := map[string]any{
		"notificationType": typ, "notificationUUID": uuid, "version": "2.0", "signedDate": signed.UnixMilli(),
		"data": map[string]any{
			"appAppleId": fakeAppAppleID, "bundleId": fakeBundleID, "bundleVersion": "42", "environment": "Production", "status": 1,
			"signedTransactionInfo": f.pki.SignJWS(txn.fields(signed)),
			"signedRenewalInfo":     f.pki.SignJWS(renewal),
		},
	}
	if subtype != "" {
		n["subtype"] = subtype
	}
	b, _ := json.Marshal(map[string]string{"signedPayload": f.pki.SignJWS(n)})
	return b
}

// pushToken returns a Pub/Sub push token for the test audience, minted again
// when the last one is half an hour old (tokens are valid for an hour).
func (f *storeFakes) pushToken(now time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != "" && now.Sub(f.tokenAt) < 30*time.Minute {
		return f.token, nil
	}
	f.token, f.tokenErr = f.oidc.Token(googletest.PushClaims(fakeGoogleAudience, fakeGoogleAccount, now.Add(-time.Second)))
	f.tokenAt = now
	return f.token, f.tokenErr
}

// googlePush returns the body and headers of a Pub/Sub push of a Play
// developer notification.
func (f *storeFakes) googlePush(messageID string, notification any, now time.Time) ([]byte, map[string]string, error) {
	body, err := googletest.PushBody(messageID, notification, now)
	if err != nil {
		return nil, nil, err
	}
	tok, err := f.pushToken(now)
	if err != nil {
		return nil, nil, err
	}
	return body, map[string]string{"Authorization": "Bearer " + tok}, nil
}

// googleMoney converts micros to the Play API's Money.
func googleMoney(micros int64, currency string) *androidpublisher.Money {
	return &androidpublisher.Money{CurrencyCode: currency, Units: micros / 1_000_000, Nanos: (micros % 1_000_000) * 1000}
}

// googleSub is what the fake Play API serves for one subscription token.
type googleSub struct {
	Token, User, Product string
	OrderID              string // latest successful order
	Started, Expires     time.Time
	Trial                bool // the current offer phase is a free trial
	PriceMicros          int64
	Currency             string
}

// set serves the subscription and its latest order from the fake Play API;
// refunded adds a full refund to the order's history.
func (f *storeFakes) setGoogle(s googleSub, refunded bool) {
	phase := &androidpublisher.OfferPhase{BasePrice: &androidpublisher.BasePriceOfferPhase{}}
	orderPhase, details := "BASE", &androidpublisher.OfferPhaseDetails{BaseDetails: &androidpublisher.BaseDetails{}}
	total := googleMoney(s.PriceMicros, s.Currency)
	if s.Trial {
		phase = &androidpublisher.OfferPhase{FreeTrial: &androidpublisher.FreeTrialOfferPhase{}}
		orderPhase, details = "FREE_TRIAL", &androidpublisher.OfferPhaseDetails{FreeTrialDetails: &androidpublisher.FreeTrialDetails{}}
		total = googleMoney(0, s.Currency)
	}
	f.play.SetSubscription(fakeBundleID, s.Token, &androidpublisher.SubscriptionPurchaseV2{
		Kind: "androidpublisher#subscriptionPurchaseV2", RegionCode: "US", StartTime: s.Started.UTC().Format(time.RFC3339),
		SubscriptionState:          "SUBSCRIPTION_STATE_ACTIVE",
		AcknowledgementState:       "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED",
		ExternalAccountIdentifiers: &androidpublisher.ExternalAccountIdentifiers{ObfuscatedExternalAccountId: s.User},
		LineItems: []*androidpublisher.SubscriptionPurchaseLineItem{{
			ProductId: s.Product, ExpiryTime: s.Expires.UTC().Format(time.RFC3339), LatestSuccessfulOrderId: s.OrderID,
			AutoRenewingPlan: &androidpublisher.AutoRenewingPlan{AutoRenewEnabled: true, RecurringPrice: googleMoney(s.PriceMicros, s.Currency)},
			OfferDetails:     &androidpublisher.OfferDetails{BasePlanId: "monthly", OfferId: "free-week"},
			OfferPhase:       phase,
		}},
	})
	o := &androidpublisher.Order{
		OrderId: s.OrderID, State: "PROCESSED", Total: total, CreateTime: s.Started.UTC().Format(time.RFC3339),
		PurchaseToken: s.Token,
		LineItems: []*androidpublisher.LineItem{{ProductId: s.Product, Total: total,
			SubscriptionDetails: &androidpublisher.SubscriptionDetails{BasePlanId: "monthly", OfferPhase: orderPhase, OfferPhaseDetails: details}}},
	}
	if refunded {
		o.State = "REFUNDED"
		o.OrderHistory = &androidpublisher.OrderHistory{RefundEvent: &androidpublisher.RefundEvent{
			EventTime: time.Now().UTC().Format(time.RFC3339), RefundDetails: &androidpublisher.RefundDetails{Total: total}}}
	}
	f.play.SetOrder(fakeBundleID, s.OrderID, o)
}

// googleOrderID is Google's order id of the n-th renewal of a subscription
// (n = 0 is the first order: GPA.x, then GPA.x..0, GPA.x..1, ...).
func googleOrderID(base string, n int) string {
	if n == 0 {
		return base
	}
	return base + ".." + strconv.Itoa(n-1)
}
