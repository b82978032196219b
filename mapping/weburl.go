package mapping

import (
	"net/url"
	"strings"
)

// Attributes that name the web page a web purchase happened on, for ad
// networks that require it (Meta's event_source_url for action_source
// website). Each holds scheme, host and path only.
const (
	AttrLandingPageURL = "landing_page_url" // Shopify: the shop's URL of the order's landing_site
	AttrOrderStatusURL = "order_status_url" // Shopify: the order status page
	AttrSuccessURL     = "success_url"      // Stripe Checkout: the page shown after payment
)

// PageURL returns raw as an absolute http(s) URL without its query,
// fragment or user info, or "" when it is not one. A page URL is sent to ad
// networks: the query of an order status page holds the key that opens it
// (with the buyer's address), and a landing page's query may carry
// personal data, so neither is ever kept. A path relative to a shop
// ("/products/x?utm_source=y") is resolved against host when host is set.
func PageURL(raw, host string) string {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return ""
	}
	if strings.HasPrefix(raw, "/") && !strings.HasPrefix(raw, "//") && host != "" {
		raw = "https://" + host + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
