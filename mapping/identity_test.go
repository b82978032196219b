package mapping

import (
	"reflect"
	"strings"
	"testing"
)

// Vectors from forwarders.md 0.4: Meta's documented examples (the full
// digests were checked against their published prefixes and suffixes:
// 62a14e44…0f62f for the email, e323ec62…3176 for the phone).
const (
	metaEmailSHA = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f" // john_smith@gmail.com
	metaPhoneSHA = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176" // 16505551212
	tiktokPhone  = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8" // +16505551212
)

func TestNormalizeEmail(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"meta example lower-cased", "John_Smith@gmail.com", "john_smith@gmail.com"},
		{"surrounding whitespace trimmed", "  Jane.Doe@Example.COM \n", "jane.doe@example.com"},
		{"plus tag kept", "a+tag@b.io", "a+tag@b.io"},
		{"no at sign", "not-an-email", ""},
		{"at sign first", "@example.com", ""},
		{"at sign last", "user@", ""},
		{"inner space", "us er@example.com", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NormalizeEmail(tt.in); got != tt.want {
				t.Errorf("NormalizeEmail(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalizePhone(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"E.164 with symbols (Meta, AppsFlyer)", "+1 (650) 555-1212", "16505551212"},
		{"international 00 prefix", "0044 20 7946 0958", "442079460958"},
		{"leading zeros removed (Meta)", "0016505551212", "16505551212"},
		{"letters and dots removed", "tel: 1.650.555.1212", "16505551212"},
		{"no country code kept as given", "(650) 555-1212", "6505551212"},
		{"non-ASCII digits ignored", "+1 650 555 1212 ٣", "16505551212"},
		{"too short", "12345", ""},
		{"longer than E.164 allows", "+1234567890123456", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NormalizePhone(tt.in); got != tt.want {
				t.Errorf("NormalizePhone(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSetEmail(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[string]string
		ok       bool
	}{
		{"Meta documented vector", "John_Smith@gmail.com", map[string]string{IDEmailSHA256: metaEmailSHA}, true},
		{"whitespace and case do not change the hash", "  JOHN_SMITH@GMAIL.COM ", map[string]string{IDEmailSHA256: metaEmailSHA}, true},
		{"already hashed passes through", metaEmailSHA, map[string]string{IDEmailSHA256: metaEmailSHA}, true},
		{"upper-case hash is lower-cased, not hashed again", strings.ToUpper(metaEmailSHA), map[string]string{IDEmailSHA256: metaEmailSHA}, true},
		{"not an email sets nothing", "nobody", map[string]string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := map[string]string{}
			if ok := SetEmail(ids, tt.in); ok != tt.ok {
				t.Errorf("SetEmail(%q) = %v, want %v", tt.in, ok, tt.ok)
			}
			if !reflect.DeepEqual(ids, tt.want) {
				t.Errorf("SetEmail(%q) ids = %v, want %v", tt.in, ids, tt.want)
			}
			for _, v := range ids {
				if strings.Contains(v, "@") {
					t.Errorf("a raw email was kept: %q", v)
				}
			}
		})
	}
}

func TestSetPhone(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[string]string
		ok       bool
	}{
		{"digits for Meta and AppsFlyer, E.164 with + for TikTok", "+1 (650) 555-1212",
			map[string]string{IDPhoneSHA256: metaPhoneSHA, IDPhoneE164SHA256: tiktokPhone}, true},
		{"00 prefix is the same number", "001 650 555 1212",
			map[string]string{IDPhoneSHA256: metaPhoneSHA, IDPhoneE164SHA256: tiktokPhone}, true},
		{"already hashed passes through", metaPhoneSHA, map[string]string{IDPhoneSHA256: metaPhoneSHA}, true},
		{"scrubbed pair passes through", metaPhoneSHA + ":" + tiktokPhone,
			map[string]string{IDPhoneSHA256: metaPhoneSHA, IDPhoneE164SHA256: tiktokPhone}, true},
		{"not a phone sets nothing", "call me", map[string]string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := map[string]string{}
			if ok := SetPhone(ids, tt.in); ok != tt.ok {
				t.Errorf("SetPhone(%q) = %v, want %v", tt.in, ok, tt.ok)
			}
			if !reflect.DeepEqual(ids, tt.want) {
				t.Errorf("SetPhone(%q) ids = %v, want %v", tt.in, ids, tt.want)
			}
		})
	}
}

func TestIdentifiersFromMetadata(t *testing.T) {
	md := map[string]string{
		"App_User_ID":  " u-42 ",
		"email":        "John_Smith@gmail.com",
		"phone":        "+1 650 555 1212",
		"appsflyer_id": "1700000000000-1234567",
		"fbp":          "fb.1.1700000000.123",
		"ttclid":       "E.C.P.abc",
		"email_sha256": "forged", // hashed keys are only set by SetEmail/SetPhone
		"coupon":       "SAVE10", // not an identifier
		"idfa":         "  ",     // empty after trimming
	}
	user, ids := IdentifiersFromMetadata(md)
	if user != "u-42" {
		t.Errorf("app user = %q, want u-42", user)
	}
	want := map[string]string{
		IDEmailSHA256:     metaEmailSHA,
		IDPhoneSHA256:     metaPhoneSHA,
		IDPhoneE164SHA256: tiktokPhone,
		IDAppsFlyer:       "1700000000000-1234567",
		IDFBP:             "fb.1.1700000000.123",
		IDTTCLID:          "E.C.P.abc",
	}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("ids = %v\nwant %v", ids, want)
	}
}

func TestIsIdentifierName(t *testing.T) {
	for _, n := range IdentifierNames {
		if !IsIdentifierName(n) {
			t.Errorf("IsIdentifierName(%q) = false for a listed name", n)
		}
	}
	for _, n := range []string{IDEmailSHA256, IDPhoneSHA256, IDPhoneE164SHA256, IDStripeCustomer, IDShopifyCustomer} {
		if !IsIdentifierName(n) {
			t.Errorf("IsIdentifierName(%q) = false", n)
		}
	}
	for _, n := range []string{"", "email", "phone", "coupon", "IDFA"} {
		if IsIdentifierName(n) {
			t.Errorf("IsIdentifierName(%q) = true", n)
		}
	}
}
