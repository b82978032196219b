package mapping

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode"
)

// Identifier names used in User.Identifiers. Sources, the identity store and
// forwarders all use these keys; raw emails and phones never appear, only
// their normalized SHA-256 hashes.
const (
	IDAppsFlyer       = "appsflyer_id"
	IDAdjust          = "adid"
	IDIDFA            = "idfa"
	IDIDFV            = "idfv"
	IDGAID            = "gaid"
	IDAndroidID       = "android_id"
	IDAppSetID        = "app_set_id"
	IDSingular        = "sdid"
	IDBranch          = "branch_developer_identity"
	IDKochava         = "kochava_device_id"
	IDFirebase        = "firebase_app_instance_id"
	IDGAClient        = "ga_client_id"
	IDFacebookAnon    = "fb_anon_id"
	IDFBP             = "fbp"
	IDFBC             = "fbc"
	IDTTCLID          = "ttclid"
	IDTTP             = "ttp"
	IDIP              = "ip"
	IDUserAgent       = "user_agent"
	IDOS              = "os" // "ios" or "android"
	IDOSVersion       = "os_version"
	IDDeviceModel     = "device_model"
	IDATTStatus       = "att_status" // 0..3 as Apple's ATTrackingManager.AuthorizationStatus
	IDCountry         = "country"
	IDLocale          = "locale"
	IDExternalID      = "external_id"
	IDEmailSHA256     = "email_sha256"
	IDPhoneSHA256     = "phone_sha256"      // digits only, country code, no '+' (Meta, Google)
	IDPhoneE164SHA256 = "phone_e164_sha256" // E.164 with '+' (TikTok)
	IDStripeCustomer  = "stripe_customer_id"
	IDShopifyCustomer = "shopify_customer_id"
)

// IdentifierNames lists every identifier key accepted from metadata and the
// identity API, with email and phone standing for their hashed forms.
var IdentifierNames = []string{
	IDAppsFlyer, IDAdjust, IDIDFA, IDIDFV, IDGAID, IDAndroidID, IDAppSetID, IDSingular, IDBranch,
	IDKochava, IDFirebase, IDGAClient, IDFacebookAnon, IDFBP, IDFBC, IDTTCLID, IDTTP, IDIP, IDUserAgent,
	IDOS, IDOSVersion, IDDeviceModel, IDATTStatus, IDCountry, IDLocale, IDExternalID,
}

// IsIdentifierName reports whether k is a known identifier key.
func IsIdentifierName(k string) bool {
	for _, n := range IdentifierNames {
		if n == k {
			return true
		}
	}
	return k == IDEmailSHA256 || k == IDPhoneSHA256 || k == IDPhoneE164SHA256 ||
		k == IDStripeCustomer || k == IDShopifyCustomer
}

// NormalizeEmail trims and lower-cases an email, the rule Meta, TikTok and
// Google share. It returns "" for something that is not an email.
func NormalizeEmail(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	at := strings.IndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t") {
		return ""
	}
	return s
}

// NormalizePhone returns the phone's digits with the country code and no
// symbols ("+1 (650) 555-1234" -> "16505551234"): Meta's and AppsFlyer's
// rule of removing symbols, letters and leading zeros. Leading zeros are
// never part of an E.164 number (no country code starts with 0), so dropping
// them turns an international "00" prefix into the bare country code.
// Numbers without a country code cannot be told apart and are accepted as
// given. More than 15 digits (E.164's maximum) or fewer than 7 is not a phone.
func NormalizePhone(s string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(s) {
		if unicode.IsDigit(r) && r < 128 {
			b.WriteRune(r)
		}
	}
	d := strings.TrimLeft(b.String(), "0")
	if len(d) < 7 || len(d) > 15 {
		return ""
	}
	return d
}

// SHA256Hex returns the lowercase hex SHA-256 of s.
func SHA256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// IsSHA256Hex reports whether s already looks like a SHA-256 hex digest, so a
// value hashed by the app is not hashed twice.
func IsSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// SetEmail stores the hashed, normalized email in ids. A raw email is never
// kept. It reports whether a value was set.
func SetEmail(ids map[string]string, email string) bool {
	email = strings.TrimSpace(email)
	if IsSHA256Hex(strings.ToLower(email)) {
		ids[IDEmailSHA256] = strings.ToLower(email)
		return true
	}
	if n := NormalizeEmail(email); n != "" {
		ids[IDEmailSHA256] = SHA256Hex(n)
		return true
	}
	return false
}

// SetPhone stores both hashed phone forms in ids: digits only (Meta, Google)
// and E.164 with '+' (TikTok). A raw phone is never kept.
func SetPhone(ids map[string]string, phone string) bool {
	p := strings.ToLower(strings.TrimSpace(phone))
	if IsSHA256Hex(p) {
		ids[IDPhoneSHA256] = p
		return true
	}
	if a, b, ok := strings.Cut(p, ":"); ok && IsSHA256Hex(a) && IsSHA256Hex(b) {
		ids[IDPhoneSHA256], ids[IDPhoneE164SHA256] = a, b // ScrubPII's stored form
		return true
	}
	if n := NormalizePhone(phone); n != "" {
		ids[IDPhoneSHA256] = SHA256Hex(n)
		ids[IDPhoneE164SHA256] = SHA256Hex("+" + n)
		return true
	}
	return false
}

// IdentifiersFromMetadata copies known identifier keys from free-form
// metadata (Stripe metadata, Shopify note attributes), hashing email and
// phone at once. It returns the identifiers and the app_user_id if present.
func IdentifiersFromMetadata(md map[string]string) (appUserID string, ids map[string]string) {
	ids = map[string]string{}
	for k, v := range md {
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		switch {
		case k == "app_user_id":
			appUserID = v
		case k == "email":
			SetEmail(ids, v)
		case k == "phone":
			SetPhone(ids, v)
		case IsIdentifierName(k) && k != IDEmailSHA256 && k != IDPhoneSHA256 && k != IDPhoneE164SHA256:
			ids[k] = v
		}
	}
	return appUserID, ids
}
