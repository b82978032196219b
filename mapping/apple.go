package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// App Store Server Notifications V2 notification types (notificationType).
// Types not listed here are stored and ignored, never rejected.
const (
	AppleConsumptionRequest      = "CONSUMPTION_REQUEST"
	AppleDidChangeRenewalPref    = "DID_CHANGE_RENEWAL_PREF"
	AppleDidChangeRenewalStatus  = "DID_CHANGE_RENEWAL_STATUS"
	AppleDidFailToRenew          = "DID_FAIL_TO_RENEW"
	AppleDidRenew                = "DID_RENEW"
	AppleExpired                 = "EXPIRED"
	AppleExternalPurchaseTokenNT = "EXTERNAL_PURCHASE_TOKEN"
	AppleGracePeriodExpired      = "GRACE_PERIOD_EXPIRED"
	AppleMetadataUpdate          = "METADATA_UPDATE"
	AppleMigration               = "MIGRATION"
	AppleOfferRedeemed           = "OFFER_REDEEMED"
	AppleOneTimeCharge           = "ONE_TIME_CHARGE"
	ApplePriceChange             = "PRICE_CHANGE"
	ApplePriceIncrease           = "PRICE_INCREASE"
	AppleRefund                  = "REFUND"
	AppleRefundDeclined          = "REFUND_DECLINED"
	AppleRefundReversed          = "REFUND_REVERSED"
	AppleRenewalExtended         = "RENEWAL_EXTENDED"
	AppleRenewalExtension        = "RENEWAL_EXTENSION"
	AppleRescindConsent          = "RESCIND_CONSENT"
	AppleRevoke                  = "REVOKE"
	AppleSubscribed              = "SUBSCRIBED"
	AppleTest                    = "TEST"
)

// App Store Server Notifications V2 subtypes (subtype).
const (
	AppleInitialBuy         = "INITIAL_BUY"
	AppleResubscribe        = "RESUBSCRIBE"
	AppleDowngrade          = "DOWNGRADE"
	AppleUpgrade            = "UPGRADE"
	AppleAutoRenewEnabled   = "AUTO_RENEW_ENABLED"
	AppleAutoRenewDisabled  = "AUTO_RENEW_DISABLED"
	AppleVoluntary          = "VOLUNTARY"
	AppleBillingRetry       = "BILLING_RETRY"
	ApplePriceIncreaseSub   = "PRICE_INCREASE"
	AppleGracePeriod        = "GRACE_PERIOD"
	ApplePending            = "PENDING"
	AppleAccepted           = "ACCEPTED"
	AppleBillingRecovery    = "BILLING_RECOVERY"
	AppleProductNotForSale  = "PRODUCT_NOT_FOR_SALE"
	AppleSummarySub         = "SUMMARY"
	AppleFailure            = "FAILURE"
	AppleUnreported         = "UNREPORTED"
	AppleFamilyShared       = "FAMILY_SHARED"
	AppleFreeTrial          = "FREE_TRIAL"
	AppleRevocationProrated = "REFUND_PRORATED"
)

// AppleMillis is an App Store timestamp in milliseconds since the Unix epoch.
// Data signed by Xcode carries fractional milliseconds, which are truncated
// rather than rejected.
type AppleMillis int64

// UnmarshalJSON accepts an integer, a number with a fraction, or null.
func (m *AppleMillis) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if s == "null" || s == "" {
		*m = 0
		return nil
	}
	whole, _, _ := strings.Cut(s, ".")
	v, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return fmt.Errorf("apple timestamp %q: %w", s, err)
	}
	*m = AppleMillis(v)
	return nil
}

// Time returns the timestamp in UTC, or the zero time when unset.
func (m AppleMillis) Time() time.Time {
	if m == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(m)).UTC()
}

// AppleNotification is the decoded signedPayload of an App Store Server
// Notification V2 (ResponseBodyV2DecodedPayload). data, summary,
// externalPurchaseToken and appData are mutually exclusive. In the inbox the
// webhook stores it with the nested JWS already verified and decoded into
// TransactionInfo, RenewalInfo and AppTransactionInfo; fields this model
// does not name are kept in the stored body all the same.
type AppleNotification struct {
	NotificationType      string                      `json:"notificationType"`
	Subtype               string                      `json:"subtype,omitempty"`
	NotificationUUID      string                      `json:"notificationUUID"`
	Version               string                      `json:"version,omitempty"`
	SignedDate            AppleMillis                 `json:"signedDate,omitempty"`
	Data                  *AppleData                  `json:"data,omitempty"`
	Summary               *AppleSummary               `json:"summary,omitempty"`
	ExternalPurchaseToken *AppleExternalPurchaseToken `json:"externalPurchaseToken,omitempty"`
	AppData               *AppleAppData               `json:"appData,omitempty"`
}

// AppleData is the data object of a notification about one transaction.
type AppleData struct {
	AppAppleID               int64  `json:"appAppleId,omitempty"`
	BundleID                 string `json:"bundleId,omitempty"`
	BundleVersion            string `json:"bundleVersion,omitempty"`
	Environment              string `json:"environment,omitempty"`
	Status                   int    `json:"status,omitempty"` // 1 active, 2 expired, 3 billing retry, 4 grace period, 5 revoked
	ConsumptionRequestReason string `json:"consumptionRequestReason,omitempty"`
	SignedTransactionInfo    string `json:"signedTransactionInfo,omitempty"`
	SignedRenewalInfo        string `json:"signedRenewalInfo,omitempty"`
	// TransactionInfo and RenewalInfo are the verified, decoded nested JWS
	// (set by the webhook; Apple sends only the signed forms).
	TransactionInfo *AppleTransaction `json:"transactionInfo,omitempty"`
	RenewalInfo     *AppleRenewalInfo `json:"renewalInfo,omitempty"`
}

// AppleSummary is the summary object of RENEWAL_EXTENSION/SUMMARY.
type AppleSummary struct {
	Environment            string   `json:"environment,omitempty"`
	AppAppleID             int64    `json:"appAppleId,omitempty"`
	BundleID               string   `json:"bundleId,omitempty"`
	ProductID              string   `json:"productId,omitempty"`
	RequestIdentifier      string   `json:"requestIdentifier,omitempty"`
	StorefrontCountryCodes []string `json:"storefrontCountryCodes,omitempty"`
	SucceededCount         int64    `json:"succeededCount,omitempty"`
	FailedCount            int64    `json:"failedCount,omitempty"`
}

// AppleExternalPurchaseToken is the externalPurchaseToken object of
// EXTERNAL_PURCHASE_TOKEN. A token id starting with "SANDBOX" is sandbox.
type AppleExternalPurchaseToken struct {
	ExternalPurchaseID string      `json:"externalPurchaseId,omitempty"`
	TokenCreationDate  AppleMillis `json:"tokenCreationDate,omitempty"`
	AppAppleID         int64       `json:"appAppleId,omitempty"`
	BundleID           string      `json:"bundleId,omitempty"`
}

// AppleAppData is the appData object of RESCIND_CONSENT.
type AppleAppData struct {
	AppAppleID               int64           `json:"appAppleId,omitempty"`
	BundleID                 string          `json:"bundleId,omitempty"`
	Environment              string          `json:"environment,omitempty"`
	SignedAppTransactionInfo string          `json:"signedAppTransactionInfo,omitempty"`
	AppTransactionInfo       json.RawMessage `json:"appTransactionInfo,omitempty"` // verified, decoded
}

// AppleTransaction is a decoded signed transaction
// (JWSTransactionDecodedPayload). Price is in milliunits of Currency; enum
// fields are kept as sent so unknown values never fail decoding.
type AppleTransaction struct {
	TransactionID               string      `json:"transactionId,omitempty"`
	OriginalTransactionID       string      `json:"originalTransactionId,omitempty"`
	WebOrderLineItemID          string      `json:"webOrderLineItemId,omitempty"`
	BundleID                    string      `json:"bundleId,omitempty"`
	ProductID                   string      `json:"productId,omitempty"`
	SubscriptionGroupIdentifier string      `json:"subscriptionGroupIdentifier,omitempty"`
	PurchaseDate                AppleMillis `json:"purchaseDate,omitempty"`
	OriginalPurchaseDate        AppleMillis `json:"originalPurchaseDate,omitempty"`
	ExpiresDate                 AppleMillis `json:"expiresDate,omitempty"`
	Quantity                    int         `json:"quantity,omitempty"`
	Type                        string      `json:"type,omitempty"` // Auto-Renewable Subscription, Non-Consumable, Consumable, Non-Renewing Subscription
	AppAccountToken             string      `json:"appAccountToken,omitempty"`
	InAppOwnershipType          string      `json:"inAppOwnershipType,omitempty"` // PURCHASED, FAMILY_SHARED
	SignedDate                  AppleMillis `json:"signedDate,omitempty"`
	RevocationReason            *int        `json:"revocationReason,omitempty"` // 0 other, 1 app issue
	RevocationDate              AppleMillis `json:"revocationDate,omitempty"`
	RevocationType              string      `json:"revocationType,omitempty"`       // REFUND_FULL, REFUND_PRORATED, FAMILY_REVOKE
	RevocationPercentage        *int64      `json:"revocationPercentage,omitempty"` // milli-percent: 100000 = 100 %
	IsUpgraded                  bool        `json:"isUpgraded,omitempty"`
	OfferType                   *int        `json:"offerType,omitempty"` // 1 introductory, 2 promotional, 3 offer code, 4 win-back
	OfferIdentifier             string      `json:"offerIdentifier,omitempty"`
	OfferDiscountType           string      `json:"offerDiscountType,omitempty"` // FREE_TRIAL, PAY_AS_YOU_GO, PAY_UP_FRONT, ONE_TIME
	OfferPeriod                 string      `json:"offerPeriod,omitempty"`
	Environment                 string      `json:"environment,omitempty"`
	Storefront                  string      `json:"storefront,omitempty"`
	StorefrontID                string      `json:"storefrontId,omitempty"`
	TransactionReason           string      `json:"transactionReason,omitempty"` // PURCHASE, RENEWAL
	Price                       *int64      `json:"price,omitempty"`
	Currency                    string      `json:"currency,omitempty"`
	AppTransactionID            string      `json:"appTransactionId,omitempty"`
	BillingPlanType             string      `json:"billingPlanType,omitempty"`
}

// AppleRenewalInfo is a decoded signed renewal info
// (JWSRenewalInfoDecodedPayload). RenewalPrice is in milliunits of Currency.
type AppleRenewalInfo struct {
	OriginalTransactionID       string      `json:"originalTransactionId,omitempty"`
	ProductID                   string      `json:"productId,omitempty"`
	AutoRenewProductID          string      `json:"autoRenewProductId,omitempty"`
	AutoRenewStatus             *int        `json:"autoRenewStatus,omitempty"`  // 0 off, 1 on
	ExpirationIntent            *int        `json:"expirationIntent,omitempty"` // 1 cancelled, 2 billing error, 3 price increase, 4 not available, 5 other
	IsInBillingRetryPeriod      *bool       `json:"isInBillingRetryPeriod,omitempty"`
	PriceIncreaseStatus         *int        `json:"priceIncreaseStatus,omitempty"`
	GracePeriodExpiresDate      AppleMillis `json:"gracePeriodExpiresDate,omitempty"`
	OfferType                   *int        `json:"offerType,omitempty"`
	OfferIdentifier             string      `json:"offerIdentifier,omitempty"`
	OfferDiscountType           string      `json:"offerDiscountType,omitempty"`
	OfferPeriod                 string      `json:"offerPeriod,omitempty"`
	SignedDate                  AppleMillis `json:"signedDate,omitempty"`
	Environment                 string      `json:"environment,omitempty"`
	RecentSubscriptionStartDate AppleMillis `json:"recentSubscriptionStartDate,omitempty"`
	RenewalDate                 AppleMillis `json:"renewalDate,omitempty"`
	RenewalPrice                *int64      `json:"renewalPrice,omitempty"`
	Currency                    string      `json:"currency,omitempty"`
	EligibleWinBackOfferIDs     []string    `json:"eligibleWinBackOfferIds,omitempty"`
	AppAccountToken             string      `json:"appAccountToken,omitempty"`
	AppTransactionID            string      `json:"appTransactionId,omitempty"`
}

// BundleID returns the notification's bundle id from whichever of data,
// summary, externalPurchaseToken or appData it carries.
func (p *AppleNotification) BundleID() string {
	switch {
	case p.Data != nil:
		return p.Data.BundleID
	case p.Summary != nil:
		return p.Summary.BundleID
	case p.ExternalPurchaseToken != nil:
		return p.ExternalPurchaseToken.BundleID
	case p.AppData != nil:
		return p.AppData.BundleID
	}
	return ""
}

// AppAppleID returns the notification's numeric App Store app id, or 0.
func (p *AppleNotification) AppAppleID() int64 {
	switch {
	case p.Data != nil:
		return p.Data.AppAppleID
	case p.Summary != nil:
		return p.Summary.AppAppleID
	case p.ExternalPurchaseToken != nil:
		return p.ExternalPurchaseToken.AppAppleID
	case p.AppData != nil:
		return p.AppData.AppAppleID
	}
	return 0
}

// AppleEnvironment returns Apple's environment name (Production, Sandbox,
// Xcode, LocalTesting) in the order Apple's libraries read it: data, then
// summary, then the external purchase token's prefix, then appData.
func (p *AppleNotification) AppleEnvironment() string {
	switch {
	case p.Data != nil:
		return p.Data.Environment
	case p.Summary != nil:
		return p.Summary.Environment
	case p.ExternalPurchaseToken != nil:
		if strings.HasPrefix(p.ExternalPurchaseToken.ExternalPurchaseID, "SANDBOX") {
			return "Sandbox"
		}
		return "Production"
	case p.AppData != nil:
		return p.AppData.Environment
	}
	return ""
}

// TypeKey is "TYPE/SUBTYPE", or "TYPE" without a subtype.
func (p *AppleNotification) TypeKey() string {
	if p.Subtype == "" {
		return p.NotificationType
	}
	return p.NotificationType + "/" + p.Subtype
}

// AppleCanonicalEnvironment maps Apple's environment to the canonical one:
// Production is production; Sandbox, Xcode and LocalTesting are sandbox.
func AppleCanonicalEnvironment(appleEnv string) string {
	if appleEnv == "Production" {
		return Production
	}
	return Sandbox
}

// FreeTrial reports whether the transaction's period is a free trial: a
// FREE_TRIAL offer, or (for transactions signed before Apple sent
// offerDiscountType) an introductory offer with a price of zero.
func (t *AppleTransaction) FreeTrial() bool {
	if t.OfferDiscountType != "" {
		return t.OfferDiscountType == AppleFreeTrial
	}
	return t.OfferType != nil && *t.OfferType == 1 && t.Price != nil && *t.Price == 0
}

// Offer names the transaction's offer for the canonical "offer" attribute:
// free_trial, pay_as_you_go, pay_up_front, introductory, promotional,
// offer_code or win_back; "" when the period has no offer.
func (t *AppleTransaction) Offer() string {
	if t.OfferType == nil {
		if t.OfferDiscountType == AppleFreeTrial {
			return "free_trial"
		}
		return ""
	}
	switch *t.OfferType {
	case 1:
		switch {
		case t.FreeTrial():
			return "free_trial"
		case t.OfferDiscountType == "PAY_AS_YOU_GO":
			return "pay_as_you_go"
		case t.OfferDiscountType == "PAY_UP_FRONT":
			return "pay_up_front"
		}
		return "introductory"
	case 2:
		return "promotional"
	case 3:
		return "offer_code"
	case 4:
		return "win_back"
	}
	return "offer_type_" + strconv.Itoa(*t.OfferType)
}

// Apple state keys and values (State.Values).
const (
	applePeriodTxn      = "period_txn"      // transactionId of the latest period start mapped
	applePeriodType     = "period_type"     // canonical type emitted for it
	applePeriodPurchase = "period_purchase" // its purchaseDate (ms)
	appleOffer          = "offer"           // its offer ("" when paid at full price)
	appleAutoRenew      = "auto_renew"      // on | off
	appleAutoRenewAt    = "auto_renew_at"   // signedDate (ms) of the notification that set auto_renew
)

// Meta keys the Apple webhook sets before ingest.
const (
	// AppleMetaPreviousOffer is the offer of the period before the
	// notification's transaction, looked up in the App Store Server API's
	// transaction history when no state exists ("free_trial", "paid").
	AppleMetaPreviousOffer = "previous_offer"
)

// AppleStateKey is the state key of a subscription lineage.
func AppleStateKey(originalTransactionID string) string { return "apple:" + originalTransactionID }

// appleMapper carries one notification through the mapping.
type appleMapper struct {
	n        *Notification
	p        AppleNotification
	st       States
	out      Result
	txn      *AppleTransaction
	ren      *AppleRenewalInfo
	s        State
	hadState bool
}

// Apple maps a verified App Store Server Notification V2. The body is the
// decoded payload with the nested transaction and renewal info already
// verified and decoded by the webhook, so the mapping never parses a JWS.
//
// Per-subscription state (key "apple:"+originalTransactionId) remembers the
// latest period's offer so that a renewal after a free trial is a trial
// conversion. Every event of one period shares an id derived from its
// transactionId, so the same renewal re-sent under a new notificationUUID
// is recognised as the same fact and not counted twice.
func Apple(n *Notification, st States) (Result, error) {
	m := &appleMapper{n: n, st: st}
	if err := json.Unmarshal(n.Body, &m.p); err != nil {
		return Result{}, malformed("apple notification: %v", err)
	}
	if m.p.NotificationType == "" || m.p.NotificationUUID == "" {
		return Result{}, malformed("apple notification without notificationType or notificationUUID")
	}
	if m.p.Data != nil {
		m.txn, m.ren = m.p.Data.TransactionInfo, m.p.Data.RenewalInfo
	}
	if m.txn != nil {
		if m.txn.TransactionID == "" {
			return Result{}, malformed("apple transaction without transactionId")
		}
		if m.txn.OriginalTransactionID == "" {
			m.txn.OriginalTransactionID = m.txn.TransactionID
		}
		m.s, m.hadState = st.State(AppleStateKey(m.txn.OriginalTransactionID))
		if !m.hadState {
			m.s = State{Key: AppleStateKey(m.txn.OriginalTransactionID)}
		}
	}
	if err := m.route(); err != nil {
		return Result{}, err
	}
	if len(m.out.Events) == 0 && m.out.Ignored == "" {
		m.out.Ignored = "no conversion in " + m.p.TypeKey()
	}
	return m.out, nil
}

// route dispatches on notificationType and subtype.
func (m *appleMapper) route() error {
	p := &m.p
	switch p.NotificationType {
	case AppleTest:
		m.out.Ignored = "test notification"
		return nil
	case AppleSubscribed:
		switch p.Subtype {
		case AppleInitialBuy:
			return m.periodStart(periodInitial)
		case AppleResubscribe:
			return m.periodStart(periodResubscribe)
		}
		return m.ignore("SUBSCRIBED with unknown subtype " + p.Subtype)
	case AppleOfferRedeemed:
		switch p.Subtype {
		case AppleInitialBuy:
			return m.periodStart(periodInitial)
		case AppleResubscribe:
			return m.periodStart(periodResubscribe)
		case AppleUpgrade, AppleDowngrade:
			return m.productChanged()
		}
		return m.ignore("offer redeemed for the active subscription; it applies at the next renewal")
	case AppleDidRenew:
		if p.Subtype == AppleBillingRecovery {
			return m.periodStart(periodRecovery)
		}
		return m.periodStart(periodRenewal)
	case AppleDidChangeRenewalStatus:
		return m.renewalStatus()
	case AppleDidChangeRenewalPref:
		if p.Subtype == AppleUpgrade || p.Subtype == AppleDowngrade {
			return m.productChanged()
		}
		return m.ignore("pending product change reverted to the current product")
	case AppleDidFailToRenew:
		return m.billingIssue()
	case AppleExpired, AppleGracePeriodExpired:
		return m.expired()
	case AppleRefund:
		return m.refund(false)
	case AppleRevoke:
		return m.refund(true)
	case AppleOneTimeCharge:
		return m.purchase()
	case AppleRenewalExtended:
		return m.ignore("renewal date extended by the developer")
	case AppleRenewalExtension:
		return m.ignore("renewal date extension " + strings.ToLower(p.Subtype))
	case AppleConsumptionRequest:
		reason := ""
		if p.Data != nil {
			reason = p.Data.ConsumptionRequestReason
		}
		return m.ignore("consumption request for a refund (" + reason + "); answer it with the App Store Server API")
	case ApplePriceIncrease:
		return m.ignore("price increase consent " + strings.ToLower(p.Subtype))
	case AppleRefundDeclined:
		return m.ignore("refund request declined")
	case AppleRefundReversed:
		return m.ignore("refund reversed; the original purchase event stands")
	case AppleExternalPurchaseTokenNT:
		return m.ignore("external purchase token " + strings.ToLower(p.Subtype))
	case AppleMetadataUpdate, AppleMigration, ApplePriceChange:
		return m.ignore("Advanced Commerce " + p.NotificationType)
	case AppleRescindConsent:
		return m.ignore("consent rescinded")
	}
	return m.ignore("unknown notification type " + p.TypeKey() + " (stored)")
}

func (m *appleMapper) ignore(reason string) error {
	m.out.Ignored = reason
	return nil
}

// need returns an error unless the notification carries a transaction.
func (m *appleMapper) need() error {
	if m.txn == nil {
		return malformed("apple %s without a transaction", m.p.TypeKey())
	}
	return nil
}

func (m *appleMapper) environment() string {
	if m.n.Environment != "" {
		return m.n.Environment
	}
	return AppleCanonicalEnvironment(m.p.AppleEnvironment())
}

// event starts a canonical event with the fields every Apple event shares.
func (m *appleMapper) event(t Type, occurred time.Time, idParts ...string) Event {
	txn := m.txn
	if occurred.IsZero() {
		occurred = m.p.SignedDate.Time()
	}
	if occurred.IsZero() {
		occurred = m.n.ReceivedAt.UTC()
	}
	appID := m.n.AppID
	if appID == "" {
		appID = m.p.BundleID()
	}
	e := Event{
		ID:            EventID(SourceApple, idParts...),
		Type:          t,
		Source:        SourceApple,
		Environment:   m.environment(),
		AppID:         appID,
		ProductID:     txn.ProductID,
		TransactionID: txn.TransactionID,
		OccurredAt:    occurred,
		ReceivedAt:    m.n.ReceivedAt.UTC(),
		SourceEventID: m.p.NotificationUUID,
	}
	if txn.Type != "Consumable" && txn.Type != "Non-Consumable" {
		e.SubscriptionID = txn.OriginalTransactionID
	}
	e.User.AppUserID = txn.AppAccountToken
	if e.User.AppUserID == "" && m.ren != nil {
		e.User.AppUserID = m.ren.AppAccountToken
	}
	if e.User.AppUserID == "" {
		e.User.AppUserID = m.s.AppUserID
	}
	if len(m.s.Identifiers) > 0 {
		e.User.Identifiers = map[string]string{}
		for k, v := range m.s.Identifiers {
			e.User.Identifiers[k] = v
		}
	}
	e.SetAttribute("notification", m.p.TypeKey())
	e.SetAttribute("offer", txn.Offer())
	e.SetAttribute("offer_id", txn.OfferIdentifier)
	if txn.Offer() != "" {
		e.SetAttribute("period", txn.OfferPeriod)
	}
	e.SetAttribute("country", countryAlpha2(txn.Storefront))
	e.SetAttribute("storefront", txn.Storefront)
	e.SetAttribute("app_transaction_id", txn.AppTransactionID)
	if txn.InAppOwnershipType == AppleFamilyShared {
		e.SetAttribute("family_shared", "true")
	}
	return e
}

// revenue is the transaction's price in micros, or nil when no money moved
// (free period, family sharing).
func (m *appleMapper) revenue() (*Revenue, error) {
	txn := m.txn
	if txn.InAppOwnershipType == AppleFamilyShared || txn.Price == nil || *txn.Price == 0 {
		return nil, nil
	}
	r, err := MicrosFromMilli(*txn.Price, txn.Currency)
	if err != nil {
		return nil, malformed("apple transaction %s price: %v", txn.TransactionID, err)
	}
	return &r, nil
}

func (m *appleMapper) emit(e Event) { m.out.Events = append(m.out.Events, e) }

// save records the state with the user's identity and renewal info.
func (m *appleMapper) save() {
	if m.txn.AppAccountToken != "" {
		m.s.AppUserID = m.txn.AppAccountToken
	}
	m.s.UpdatedAt = m.n.ReceivedAt.UTC()
	m.out.States = append(m.out.States, m.s)
}

// periodKind says what started the period a transaction pays for.
type periodKind int

const (
	periodInitial periodKind = iota
	periodResubscribe
	periodRenewal
	periodRecovery
)

// inTrialBefore reports whether the period before the transaction was a
// free trial: from state, else from the App Store Server API history
// look-up the webhook made, else false (a plain renewal is never guessed
// to be a conversion).
func (m *appleMapper) inTrialBefore() (bool, string) {
	if m.hadState {
		return m.s.InTrial, "state"
	}
	switch m.n.Meta[AppleMetaPreviousOffer] {
	case "free_trial":
		return true, "history"
	case "":
		return false, "unknown"
	}
	return false, "history"
}

// periodStart maps a transaction that starts a paid or free period.
func (m *appleMapper) periodStart(kind periodKind) error {
	if err := m.need(); err != nil {
		return err
	}
	txn := m.txn
	var t Type
	basis := ""
	resent := m.s.Value(applePeriodTxn) == txn.TransactionID && m.s.Value(applePeriodType) != ""
	switch {
	case resent:
		// The same period re-sent (new notificationUUID, backfill): the
		// same type and id as the first time.
		t = Type(m.s.Value(applePeriodType))
	case kind == periodInitial && txn.FreeTrial():
		t = TrialStarted
	case kind == periodInitial:
		t = SubscriptionStarted
	case kind == periodResubscribe:
		t = SubscriptionReactivated
	default:
		// A renewal, or a recovery from billing retry or a grace period:
		// either ends a free trial when the period before was one.
		var trial bool
		trial, basis = m.inTrialBefore()
		switch {
		case trial && !txn.FreeTrial():
			t = TrialConverted
		case kind == periodRecovery:
			t = BillingRecovered
		default:
			t = SubscriptionRenewed
		}
	}
	e := m.event(t, txn.PurchaseDate.Time(), "period", txn.TransactionID)
	if t != TrialStarted {
		rev, err := m.revenue()
		if err != nil {
			return err
		}
		e.Revenue = rev
	}
	if t == TrialConverted {
		// The offer that converted is the trial; the paid period's own
		// offer (an introductory price after the trial) is kept apart.
		if o := txn.Offer(); o != "" {
			e.SetAttribute("paid_offer", o)
		}
		delete(e.Attributes, "period")
		e.SetAttribute("offer", "free_trial")
	}
	if kind == periodRecovery && t == TrialConverted {
		// The trial's first payment failed and was recovered.
		e.SetAttribute("recovered", "true")
	}
	if basis == "unknown" {
		e.SetAttribute("previous_period", "unknown")
	}
	m.emit(e)
	// Out-of-order delivery: an older period never overwrites a newer one.
	if prev, _ := strconv.ParseInt(m.s.Value(applePeriodPurchase), 10, 64); int64(txn.PurchaseDate) >= prev {
		m.s.Status = "active"
		m.s.ProductID = txn.ProductID
		m.s.InTrial = txn.FreeTrial()
		if m.s.InTrial {
			m.s.TrialUsed = true
		}
		m.s.SetValue(applePeriodTxn, txn.TransactionID)
		m.s.SetValue(applePeriodType, string(t))
		m.s.SetValue(applePeriodPurchase, strconv.FormatInt(int64(txn.PurchaseDate), 10))
		m.s.SetValue(appleOffer, txn.Offer())
	}
	m.trackRenewal()
	m.save()
	return nil
}

// learnPeriod records the notification's transaction as the current period
// when the state knows none yet (first seen through a billing failure, a
// renewal status change or a downgrade): the transaction is the latest
// period's, so a later renewal or recovery can tell whether it ends a free
// trial. No event is made for it.
func (m *appleMapper) learnPeriod() {
	if m.s.Value(applePeriodTxn) != "" || m.txn.TransactionID == "" {
		return
	}
	m.s.ProductID = m.txn.ProductID
	m.s.InTrial = m.txn.FreeTrial()
	m.s.SetValue(applePeriodTxn, m.txn.TransactionID)
	m.s.SetValue(applePeriodPurchase, strconv.FormatInt(int64(m.txn.PurchaseDate), 10))
	m.s.SetValue(appleOffer, m.txn.Offer())
}

// trackRenewal records auto-renew from the renewal info, when it is newer
// than what the state holds.
func (m *appleMapper) trackRenewal() {
	if m.ren == nil || m.ren.AutoRenewStatus == nil {
		return
	}
	at := int64(m.ren.SignedDate)
	if at == 0 {
		at = int64(m.p.SignedDate)
	}
	if prev, _ := strconv.ParseInt(m.s.Value(appleAutoRenewAt), 10, 64); at < prev {
		return
	}
	on := *m.ren.AutoRenewStatus == 1
	m.setAutoRenew(on, at)
}

func (m *appleMapper) setAutoRenew(on bool, at int64) {
	v := "off"
	if on {
		v = "on"
	}
	m.s.SetValue(appleAutoRenew, v)
	m.s.SetValue(appleAutoRenewAt, strconv.FormatInt(at, 10))
	m.s.CancelAtPeriodEnd = !on
}

// renewalStatus maps DID_CHANGE_RENEWAL_STATUS: a cancellation (auto-renew
// off) or an uncancellation (back on), once per change.
func (m *appleMapper) renewalStatus() error {
	if err := m.need(); err != nil {
		return err
	}
	var on bool
	switch {
	case m.p.Subtype == AppleAutoRenewEnabled:
		on = true
	case m.p.Subtype == AppleAutoRenewDisabled:
	case m.ren != nil && m.ren.AutoRenewStatus != nil:
		on = *m.ren.AutoRenewStatus == 1
	default:
		return m.ignore("renewal status change without subtype or renewal info")
	}
	at := int64(m.p.SignedDate)
	prevAt, _ := strconv.ParseInt(m.s.Value(appleAutoRenewAt), 10, 64)
	prev := m.s.Value(appleAutoRenew)
	switch {
	case at < prevAt:
		m.out.Ignored = "older than the auto-renew change already recorded"
		return nil
	case on && prev == "on":
		m.out.Ignored = "auto-renew already on"
		return nil
	case !on && prev == "off":
		m.out.Ignored = "auto-renew already off"
		return nil
	}
	var t Type
	switch {
	case on:
		t = SubscriptionUncancelled
	case m.trialNow():
		t = TrialCancelled
	default:
		t = SubscriptionCancelled
	}
	e := m.event(t, m.p.SignedDate.Time(), string(t), m.txn.OriginalTransactionID, m.txn.TransactionID, strconv.FormatInt(at, 10))
	if m.ren != nil && m.ren.ExpirationIntent != nil {
		e.SetAttribute("expiration_intent", strconv.Itoa(*m.ren.ExpirationIntent))
	}
	if exp := m.txn.ExpiresDate.Time(); !exp.IsZero() {
		e.SetAttribute("expires_at", exp.Format(time.RFC3339))
	}
	m.emit(e)
	m.learnPeriod()
	m.setAutoRenew(on, at)
	m.save()
	return nil
}

// trialNow reports whether the subscription is in a free trial: from state,
// else from the notification's own (latest) transaction while it runs.
func (m *appleMapper) trialNow() bool {
	if m.hadState && m.s.Value(applePeriodTxn) != "" {
		return m.s.InTrial
	}
	if !m.txn.FreeTrial() {
		return false
	}
	exp := m.txn.ExpiresDate
	return exp == 0 || m.p.SignedDate == 0 || exp > m.p.SignedDate
}

// productChanged maps an upgrade (immediate, a new paid transaction) or a
// downgrade (effective at the next renewal).
func (m *appleMapper) productChanged() error {
	if err := m.need(); err != nil {
		return err
	}
	txn := m.txn
	newProduct, previous := txn.ProductID, m.s.ProductID
	if m.p.Subtype == AppleDowngrade {
		previous = txn.ProductID
		if m.ren != nil && m.ren.AutoRenewProductID != "" {
			newProduct = m.ren.AutoRenewProductID
		}
	}
	e := m.event(ProductChanged, txn.PurchaseDate.Time(), string(ProductChanged), txn.TransactionID, m.p.Subtype, newProduct)
	e.ProductID = newProduct
	if previous != newProduct {
		e.SetAttribute("previous_product_id", previous)
	}
	e.SetAttribute("direction", strings.ToLower(m.p.Subtype))
	if m.p.Subtype == AppleUpgrade {
		e.SetAttribute("effective", "immediately")
		if txn.TransactionReason == "PURCHASE" {
			rev, err := m.revenue()
			if err != nil {
				return err
			}
			e.Revenue = rev
		}
		if prev, _ := strconv.ParseInt(m.s.Value(applePeriodPurchase), 10, 64); int64(txn.PurchaseDate) >= prev {
			m.s.ProductID = txn.ProductID
			m.s.InTrial = txn.FreeTrial()
			m.s.SetValue(applePeriodTxn, txn.TransactionID)
			m.s.SetValue(applePeriodType, string(ProductChanged))
			m.s.SetValue(applePeriodPurchase, strconv.FormatInt(int64(txn.PurchaseDate), 10))
			m.s.SetValue(appleOffer, txn.Offer())
		}
	} else {
		e.SetAttribute("effective", "next_renewal")
		e.OccurredAt = m.p.SignedDate.Time()
	}
	m.emit(e)
	m.trackRenewal()
	m.save()
	return nil
}

// billingIssue maps DID_FAIL_TO_RENEW (in grace period or billing retry).
func (m *appleMapper) billingIssue() error {
	if err := m.need(); err != nil {
		return err
	}
	e := m.event(BillingIssue, m.p.SignedDate.Time(), string(BillingIssue), m.txn.TransactionID, m.p.Subtype)
	m.s.Status = "billing_retry"
	if m.p.Subtype == AppleGracePeriod {
		m.s.Status = "grace_period"
		e.SetAttribute("grace_period", "true")
		if m.ren != nil && m.ren.GracePeriodExpiresDate != 0 {
			e.SetAttribute("grace_period_expires_at", m.ren.GracePeriodExpiresDate.Time().Format(time.RFC3339))
		}
	}
	m.emit(e)
	m.learnPeriod()
	m.trackRenewal()
	m.save()
	return nil
}

// expired maps EXPIRED and GRACE_PERIOD_EXPIRED: one expiry per period.
func (m *appleMapper) expired() error {
	if err := m.need(); err != nil {
		return err
	}
	reason := strings.ToLower(m.p.Subtype)
	if m.p.NotificationType == AppleGracePeriodExpired {
		reason = "grace_period_expired"
	}
	occurred := m.txn.ExpiresDate.Time()
	if occurred.IsZero() || m.p.NotificationType == AppleGracePeriodExpired {
		occurred = m.p.SignedDate.Time()
	}
	e := m.event(SubscriptionExpired, occurred, string(SubscriptionExpired), m.txn.OriginalTransactionID, m.txn.TransactionID)
	e.SetAttribute("reason", reason)
	if m.hadState && m.s.InTrial || !m.hadState && m.txn.FreeTrial() {
		e.SetAttribute("in_trial", "true")
	}
	m.emit(e)
	m.s.Status, m.s.InTrial = "expired", false
	m.trackRenewal()
	m.save()
	return nil
}

// refund maps REFUND (money returned: the refunded transaction's price,
// negative, prorated when Apple says so) and REVOKE (family-shared access
// withdrawn: no money moved).
func (m *appleMapper) refund(revoke bool) error {
	if err := m.need(); err != nil {
		return err
	}
	txn := m.txn
	occurred := txn.RevocationDate.Time()
	e := m.event(Refund, occurred, string(Refund), txn.TransactionID)
	if revoke {
		e.SetAttribute("reason", "family_revoke")
	} else {
		rev, err := m.revenue()
		if err != nil {
			return err
		}
		if rev != nil {
			r := rev.Negate()
			if txn.RevocationType == AppleRevocationProrated && txn.RevocationPercentage != nil {
				r.AmountMicros = prorate(r.AmountMicros, *txn.RevocationPercentage)
				e.SetAttribute("revocation_percentage", strconv.FormatInt(*txn.RevocationPercentage, 10))
			}
			e.Revenue = &r
		}
		if txn.RevocationReason != nil {
			reason := "other"
			if *txn.RevocationReason == 1 {
				reason = "app_issue"
			}
			e.SetAttribute("reason", reason)
		}
	}
	e.SetAttribute("revocation_type", strings.ToLower(txn.RevocationType))
	m.emit(e)
	if e.SubscriptionID != "" && m.s.Value(applePeriodTxn) == txn.TransactionID {
		m.s.Status = "revoked"
		m.s.InTrial = false
	}
	m.save()
	return nil
}

// prorate applies Apple's revocationPercentage (milli-percent, 100000 =
// 100 %) to micros, rounding half away from zero.
func prorate(micros, milliPercent int64) int64 {
	if milliPercent >= 100000 || milliPercent < 0 {
		return micros
	}
	neg := micros < 0
	if neg {
		micros = -micros
	}
	v := (micros*milliPercent + 50000) / 100000
	if neg {
		v = -v
	}
	return v
}

// purchase maps ONE_TIME_CHARGE: a consumable, non-consumable or
// non-renewing purchase.
func (m *appleMapper) purchase() error {
	if err := m.need(); err != nil {
		return err
	}
	e := m.event(Purchase, m.txn.PurchaseDate.Time(), string(Purchase), m.txn.TransactionID)
	rev, err := m.revenue()
	if err != nil {
		return err
	}
	e.Revenue = rev
	if m.txn.Quantity > 1 {
		e.SetAttribute("quantity", strconv.Itoa(m.txn.Quantity))
	}
	e.SetAttribute("product_type", m.txn.Type)
	m.emit(e)
	if m.txn.AppAccountToken != "" {
		m.save()
	}
	return nil
}

// iso3166 pairs ISO 3166-1 alpha-3 codes (Apple's storefront) with alpha-2
// codes (the canonical country attribute), six bytes per entry.
const iso3166 = `ABWAW AFGAF AGOAO AIAAI ALAAX ALBAL ANDAD AREAE ARGAR ARMAM ASMAS ATAAQ ATFTF ATGAG AUSAU AUTAT
AZEAZ BDIBI BELBE BENBJ BESBQ BFABF BGDBD BGRBG BHRBH BHSBS BIHBA BLMBL BLRBY BLZBZ BMUBM BOLBO
BRABR BRBBB BRNBN BTNBT BVTBV BWABW CAFCF CANCA CCKCC CHECH CHLCL CHNCN CIVCI CMRCM CODCD COGCG
COKCK COLCO COMKM CPVCV CRICR CUBCU CUWCW CXRCX CYMKY CYPCY CZECZ DEUDE DJIDJ DMADM DNKDK DOMDO
DZADZ ECUEC EGYEG ERIER ESHEH ESPES ESTEE ETHET FINFI FJIFJ FLKFK FRAFR FROFO FSMFM GABGA GBRGB
GEOGE GGYGG GHAGH GIBGI GINGN GLPGP GMBGM GNBGW GNQGQ GRCGR GRDGD GRLGL GTMGT GUFGF GUMGU GUYGY
HKGHK HMDHM HNDHN HRVHR HTIHT HUNHU IDNID IMNIM INDIN IOTIO IRLIE IRNIR IRQIQ ISLIS ISRIL ITAIT
JAMJM JEYJE JORJO JPNJP KAZKZ KENKE KGZKG KHMKH KIRKI KNAKN KORKR KWTKW LAOLA LBNLB LBRLR LBYLY
LCALC LIELI LKALK LSOLS LTULT LUXLU LVALV MACMO MAFMF MARMA MCOMC MDAMD MDGMG MDVMV MEXMX MHLMH
MKDMK MLIML MLTMT MMRMM MNEME MNGMN MNPMP MOZMZ MRTMR MSRMS MTQMQ MUSMU MWIMW MYSMY MYTYT NAMNA
NCLNC NERNE NFKNF NGANG NICNI NIUNU NLDNL NORNO NPLNP NRUNR NZLNZ OMNOM PAKPK PANPA PCNPN PERPE
PHLPH PLWPW PNGPG POLPL PRIPR PRKKP PRTPT PRYPY PSEPS PYFPF QATQA REURE ROURO RUSRU RWARW SAUSA
SDNSD SENSN SGPSG SGSGS SHNSH SJMSJ SLBSB SLESL SLVSV SMRSM SOMSO SPMPM SRBRS SSDSS STPST SURSR
SVKSK SVNSI SWESE SWZSZ SXMSX SYCSC SYRSY TCATC TCDTD TGOTG THATH TJKTJ TKLTK TKMTM TLSTL TONTO
TTOTT TUNTN TURTR TUVTV TWNTW TZATZ UGAUG UKRUA UMIUM URYUY USAUS UZBUZ VATVA VCTVC VENVE VGBVG
VIRVI VNMVN VUTVU WLFWF WSMWS XKSXK YEMYE ZAFZA ZMBZM ZWEZW`

// countryAlpha2 converts an alpha-3 storefront to alpha-2; an unknown code
// is returned as given.
func countryAlpha2(alpha3 string) string {
	if len(alpha3) != 3 {
		return alpha3
	}
	a := strings.ToUpper(alpha3)
	for i := 0; i+5 <= len(iso3166); i += 6 {
		if iso3166[i:i+3] == a {
			return iso3166[i+3 : i+5]
		}
	}
	return alpha3
}
