package mapping

import "testing"

func TestPageURL(t *testing.T) {
	tests := []struct{ name, raw, host, want string }{
		{"absolute, query and fragment dropped", "https://shop.example.com/thanks?key=SECRETKEY#top", "", "https://shop.example.com/thanks"},
		{"relative landing site resolved against the shop", "/products/pro?utm_source=tiktok&email=a@b.c", "example.myshopify.com", "https://example.myshopify.com/products/pro"},
		{"relative without a host", "/products/pro", "", ""},
		{"user info dropped", "https://user:pw@example.com/a", "", "https://example.com/a"},
		{"scheme-relative is not a path", "//evil.example/x", "example.myshopify.com", ""},
		{"not http", "javascript:alert(1)", "", ""},
		{"no host", "https:///x", "", ""},
		{"empty", "  ", "example.myshopify.com", ""},
		{"stripe template kept as path only", "https://example.com/success?session_id={CHECKOUT_SESSION_ID}", "", "https://example.com/success"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PageURL(tt.raw, tt.host); got != tt.want {
				t.Errorf("PageURL(%q, %q) = %q, want %q", tt.raw, tt.host, got, tt.want)
			}
		})
	}
}

// TestShopifyOrderPageURLs: an order's landing site (relative to the shop)
// and order status page become page URLs without their queries; the order
// status page's key never reaches an event.
func TestShopifyOrderPageURLs(t *testing.T) {
	body := `{"id": 8, "total_price": "10.00", "currency": "USD", "landing_site": "/products/pro?utm_source=x",
		"order_status_url": "https://` + testShop + `/1/orders/abc/authenticate?key=ORDERSECRET"}`
	n := &Notification{Source: SourceShopify, Key: "k", Type: "orders/paid", ReceivedAt: shopifyReceived, Body: []byte(body),
		Meta: map[string]string{ShopifyMetaShop: testShop, ShopifyMetaTopic: "orders/paid"}}
	res, err := Map(n, shopifyStates{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 1 {
		t.Fatalf("%d events", len(res.Events))
	}
	a := res.Events[0].Attributes
	if a[AttrLandingPageURL] != "https://"+testShop+"/products/pro" || a[AttrOrderStatusURL] != "https://"+testShop+"/1/orders/abc/authenticate" {
		t.Errorf("attributes = %v", a)
	}
}
