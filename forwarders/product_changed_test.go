package forwarders

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/postback/postback/mapping"
)

// Issue 13, item 8: product_changed carries an upgrade's revenue but was off
// at every destination, so that money never reached attribution. The
// defaults now send it where it carries revenue (the vendor's revenue event
// where it has no plan-change event) and keep a plan change without money
// off, except in the RevenueCat preset, which names both.
func TestProductChangedDefaults(t *testing.T) {
	paid := &mapping.Event{Type: mapping.ProductChanged, Revenue: &mapping.Revenue{AmountMicros: 49_990_000, Currency: "USD"}}
	free := &mapping.Event{Type: mapping.ProductChanged}
	for _, tc := range []struct {
		name       string
		defaults   map[string]string
		paid, free string
	}{
		{"appsflyer", appsFlyerNames(), "product_changed", ""},
		{"singular", singularNames(), "product_changed", ""},
		{"branch", branchNames(), "PURCHASE", ""},
		{"kochava", kochavaNames(), "Purchase", ""},
		{"meta", metaDefaultNames, "Subscribe", ""},
		{"tiktok app", tiktokAppNames, "Subscribe", ""},
		{"tiktok web", tiktokWebNames, "Subscribe", ""},
		{"ga4", ga4DefaultNames, "purchase", "product_changed"},
		{"preset revenuecat", revenueCatNames(), "rc_product_change_event", "rc_product_change_event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := EventName(paid, nil, tc.defaults); got != tc.paid {
				t.Errorf("with revenue: %q, want %q", got, tc.paid)
			}
			if got := EventName(free, nil, tc.defaults); got != tc.free {
				t.Errorf("without revenue: %q, want %q", got, tc.free)
			}
			// An event_names override applies with and without revenue.
			over := map[string]string{"product_changed": "my_change"}
			if EventName(paid, over, tc.defaults) != "my_change" || EventName(free, over, tc.defaults) != "my_change" {
				t.Errorf("override not applied to both")
			}
			off := map[string]string{"product_changed": ""}
			if EventName(paid, off, tc.defaults) != "" {
				t.Errorf("an empty override does not turn it off")
			}
		})
	}
}

// The same through a real AppsFlyer forwarder against a local server: an
// upgrade's charge goes out as product_changed with af_revenue; a plan
// change without money is not sent.
func TestProductChangedReachesAppsFlyer(t *testing.T) {
	srv := newMMPServer(t, nil)
	f := mmpNew(t, "appsflyer", srv.URL, afBlock, nil)
	e := mmpEvent("subscription_renewed")
	e.Type = mapping.ProductChanged
	e.Revenue = &mapping.Revenue{AmountMicros: 49_990_000, Currency: "USD"}
	if r := f.Send(context.Background(), []Item{{Key: "d", Event: e}})[0]; r.Outcome != Delivered {
		t.Fatalf("with revenue: %+v, want delivered", r)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	var body struct {
		EventName  string `json:"eventName"`
		EventValue string `json:"eventValue"`
	}
	if err := json.Unmarshal(reqs[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.EventName != "product_changed" || !strings.Contains(body.EventValue, `"af_revenue":"49.99"`) {
		t.Errorf("sent %s", reqs[0].Body)
	}
	e.Revenue = nil
	if r := f.Send(context.Background(), []Item{{Key: "d2", Event: e}})[0]; r.Outcome != Skipped || r.Reason != ReasonNoEventName {
		t.Errorf("without revenue: %+v, want skipped %s", r, ReasonNoEventName)
	}
	if len(srv.requests()) != 1 {
		t.Error("a plan change without money reached AppsFlyer")
	}
}
