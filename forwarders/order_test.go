package forwarders

import (
	"testing"

	"github.com/postback/postback/mapping"
)

// TestOrderKeys: Adjust orders per environment, device and event token;
// Singular per device; both fall back to the app user, and an event with
// neither needs no order. Other forwarders declare no order.
func TestOrderKeys(t *testing.T) {
	adj := mmpNew(t, "adjust", "https://s2s.adjust.com/event", `
app_token: 4w565xzmb54d
event_tokens: {subscription_renewed: f0ob4r, refund: r3fund}
`, nil)
	sng := mmpNew(t, "singular", "https://s2s.singular.net/api/v1/evt", "sdk_key: key-1", nil)
	ev := func(typ mapping.Type, user string, ids map[string]string) *mapping.Event {
		return &mapping.Event{Type: typ, Environment: mapping.Production, User: mapping.User{AppUserID: user, Identifiers: ids}}
	}
	a := adj.(Orderer)
	renewA := a.OrderKey(ev(mapping.SubscriptionRenewed, "u1", map[string]string{mapping.IDAdjust: "adid-1"}))
	if renewA == "" || renewA == a.OrderKey(ev(mapping.SubscriptionRenewed, "u1", map[string]string{mapping.IDAdjust: "adid-2"})) {
		t.Fatalf("Adjust: devices share a key: %q", renewA)
	}
	if renewA == a.OrderKey(ev(mapping.Refund, "u1", map[string]string{mapping.IDAdjust: "adid-1"})) {
		t.Fatal("Adjust: event tokens share a key")
	}
	if k := a.OrderKey(ev(mapping.SubscriptionRenewed, "u1", nil)); k == "" || k == renewA {
		t.Fatalf("Adjust: no device must order by user: %q", k)
	}
	if k := a.OrderKey(ev(mapping.TrialStarted, "u1", nil)); k != "" {
		t.Fatalf("Adjust: an event without a token needs no order: %q", k)
	}
	s := sng.(Orderer)
	k1 := s.OrderKey(ev(mapping.SubscriptionRenewed, "u1", map[string]string{mapping.IDIDFV: "V-1"}))
	if k1 == "" || k1 != s.OrderKey(ev(mapping.Refund, "u2", map[string]string{mapping.IDIDFV: "V-1"})) {
		t.Fatalf("Singular: one device must be one key whatever the event: %q", k1)
	}
	if s.OrderKey(ev(mapping.Refund, "", nil)) != "" {
		t.Fatal("Singular: nothing to order by must be no key")
	}
	for name, f := range map[string]any{"appsflyer": (*AppsFlyer)(nil), "branch": (*Branch)(nil), "kochava": (*Kochava)(nil),
		"meta": (*Meta)(nil), "tiktok": (*TikTok)(nil), "ga4": (*GA4)(nil), "webhook": (*Webhook)(nil)} {
		if _, ok := f.(Orderer); ok {
			t.Errorf("%s declares an order its API does not ask for", name)
		}
	}
}
