package webhooks

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Shopify signs the body only: X-Shopify-Topic and X-Shopify-Shop-Domain
// are outside the HMAC. These checks bind them to the signed body as far as
// the body allows, so that a captured body cannot be replayed under another
// topic or, for the compliance topics, another shop.

// Shopify binding errors.
var (
	ErrShopifyBadDomain    = errors.New("shopify: X-Shopify-Shop-Domain is not <name>.myshopify.com")
	ErrShopifyBadTopic     = errors.New("shopify: X-Shopify-Topic is not <resource>/<action>")
	ErrShopifyShape        = errors.New("shopify: body does not have the shape of the topic's resource")
	ErrShopifyShopMismatch = errors.New("shopify: body's shop_domain or shop_id does not match the request")
)

// Codes of the binding errors (metric label and error code).
const (
	CodeShopMismatch = "shop_mismatch"
	CodeWrongShape   = "wrong_shape"
)

// shopDomainRE is a shop's permanent domain: Shopify sends the
// <name>.myshopify.com form in X-Shopify-Shop-Domain, never a custom domain.
var shopDomainRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}\.myshopify\.com$`)

// ValidShopDomain reports whether s (lower-case) is a <name>.myshopify.com
// domain.
func ValidShopDomain(s string) bool { return shopDomainRE.MatchString(s) }

// topicRE is the shape of a webhook topic ("orders/paid",
// "subscription_billing_attempts/success").
var topicRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}/[a-z][a-z0-9_]{0,63}$`)

// IsShopifyCompliance reports whether topic is one of Shopify's mandatory
// compliance topics. They erase or disclose data, so they are accepted only
// when signed with the app's own secret (never a store's webhook key) and
// only when the body names the shop of the request.
func IsShopifyCompliance(topic string) bool {
	switch topic {
	case "customers/data_request", "customers/redact", "shop/redact":
		return true
	}
	return false
}

// fieldKind is what a required key must hold.
type fieldKind int

const (
	kindID     fieldKind = iota // a positive integer (number or decimal string)
	kindString                  // a non-empty string
	kindObject                  // a JSON object
	kindArray                   // a JSON array
	kindScalar                  // a non-null string or number (money is either)
	kindNull                    // absent or null
	kindSet                     // present and not null
)

type fieldRule struct {
	key  string
	kind fieldKind
}

// topicShape is what the body of one topic must hold: required keys, and the
// GraphQL type its admin_graphql_api_id names when present.
type topicShape struct {
	gid   string
	rules []fieldRule
}

// The shapes of the topics Postback maps or that erase data. The key lists
// are the documented resource fields the mapping relies on plus the ones
// that tell the resources apart (an order has total_price and line items, a
// contract a billing policy and a customer id, a billing attempt an
// idempotency key), so that a body signed for one resource is refused under
// another resource's topic. Other topics are stored as ignored and need no
// shape.
var shopifyShapes = func() map[string]topicShape {
	order := topicShape{gid: "Order", rules: []fieldRule{
		{"id", kindID}, {"name", kindString}, {"currency", kindString}, {"total_price", kindScalar}, {"cancelled_at", kindNull},
	}}
	cancelled := topicShape{gid: "Order", rules: []fieldRule{
		{"id", kindID}, {"name", kindString}, {"currency", kindString}, {"total_price", kindScalar}, {"cancelled_at", kindSet},
	}}
	contract := topicShape{gid: "SubscriptionContract", rules: []fieldRule{
		{"id", kindID}, {"status", kindString}, {"billing_policy", kindObject}, {"customer_id", kindID},
	}}
	attempt := topicShape{gid: "SubscriptionBillingAttempt", rules: []fieldRule{
		{"id", kindID}, {"subscription_contract_id", kindID}, {"idempotency_key", kindString},
	}}
	m := map[string]topicShape{
		"orders/paid":      order,
		"orders/cancelled": cancelled,
		"refunds/create": {gid: "Refund", rules: []fieldRule{
			{"id", kindID}, {"order_id", kindID}, {"transactions", kindArray}, {"refund_line_items", kindArray},
		}},
		"subscription_billing_attempts/success": attempt,
		"subscription_billing_attempts/failure": attempt,
		"app_subscriptions/update":              {rules: []fieldRule{{"app_subscription", kindObject}}},
		"customers/redact": {rules: []fieldRule{
			{"shop_id", kindID}, {"shop_domain", kindString}, {"customer", kindObject}, {"orders_to_redact", kindArray},
		}},
		"customers/data_request": {rules: []fieldRule{
			{"shop_id", kindID}, {"shop_domain", kindString}, {"customer", kindObject}, {"orders_requested", kindArray},
		}},
		"shop/redact": {rules: []fieldRule{{"shop_id", kindID}, {"shop_domain", kindString}}},
	}
	for _, t := range []string{"create", "update", "activate", "cancel", "pause", "expire"} {
		m["subscription_contracts/"+t] = contract
	}
	return m
}()

// checkShopifyBody checks that body has the shape of topic's resource and,
// for the compliance topics, that it names shop. The caller has checked
// that body is one JSON object.
func checkShopifyBody(topic, shop string, body []byte) error {
	shape, ok := shopifyShapes[topic]
	if !ok {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return fmt.Errorf("%w: %v", ErrShopifyShape, err)
	}
	if topic == "app_subscriptions/update" {
		// The resource is one level down.
		if err := checkFields(obj, shape.rules); err != nil {
			return err
		}
		var inner map[string]json.RawMessage
		if err := json.Unmarshal(obj["app_subscription"], &inner); err != nil {
			return fmt.Errorf("%w: app_subscription: %v", ErrShopifyShape, err)
		}
		obj, shape = inner, topicShape{gid: "AppSubscription", rules: []fieldRule{{"admin_graphql_api_id", kindString}, {"status", kindString}}}
	}
	if err := checkFields(obj, shape.rules); err != nil {
		return err
	}
	if raw, ok := obj["admin_graphql_api_id"]; ok && shape.gid != "" {
		var gid string
		if json.Unmarshal(raw, &gid) != nil || !strings.HasPrefix(gid, "gid://shopify/"+shape.gid+"/") {
			return fmt.Errorf("%w: admin_graphql_api_id is not a %s (topic %s)", ErrShopifyShape, shape.gid, topic)
		}
	}
	if IsShopifyCompliance(topic) {
		var domain string
		if json.Unmarshal(obj["shop_domain"], &domain) != nil || strings.ToLower(strings.TrimSpace(domain)) != shop {
			return fmt.Errorf("%w: shop_domain is not the X-Shopify-Shop-Domain header", ErrShopifyShopMismatch)
		}
	}
	return nil
}

// checkFields applies rules to a decoded object.
func checkFields(obj map[string]json.RawMessage, rules []fieldRule) error {
	for _, r := range rules {
		raw, ok := obj[r.key]
		raw = bytes.TrimSpace(raw)
		isNull := !ok || len(raw) == 0 || bytes.Equal(raw, []byte("null"))
		var good bool
		switch r.kind {
		case kindNull:
			good = isNull
		case kindSet:
			good = !isNull
		case kindObject:
			good = !isNull && raw[0] == '{'
		case kindArray:
			good = !isNull && raw[0] == '['
		case kindString:
			var s string
			good = !isNull && json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != ""
		case kindScalar:
			good = !isNull && raw[0] != '{' && raw[0] != '[' && raw[0] != 't' && raw[0] != 'f'
		case kindID:
			good = !isNull && positiveInteger(raw)
		}
		if !good {
			return fmt.Errorf("%w: %s %s", ErrShopifyShape, r.key, kindWord[r.kind])
		}
	}
	return nil
}

var kindWord = map[fieldKind]string{
	kindID: "must be a positive integer id", kindString: "must be a non-empty string", kindObject: "must be an object",
	kindArray: "must be an array", kindScalar: "must be a string or number", kindNull: "must be null", kindSet: "is required",
}

// positiveInteger reports whether raw is a JSON number or string holding a
// positive decimal integer (Shopify ids exceed 2^53 and are kept as text).
func positiveInteger(raw []byte) bool {
	s := string(raw)
	if len(raw) > 1 && raw[0] == '"' {
		if json.Unmarshal(raw, &s) != nil {
			return false
		}
	}
	if s == "" || len(s) > 20 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// shopifyBodyKey is the alternative dedupe key of a body under a topic: one
// signed fact is stored once, whatever X-Shopify-Webhook-Id or shop header
// it is replayed with (Shopify ids are global, so two shops never send the
// same bytes). The topic is part of it because Shopify may send
// byte-identical bodies for orders/create and orders/paid.
func shopifyBodyKey(topic string, body []byte) string {
	sum := sha256.Sum256(body)
	return "body:" + topic + ":" + hex.EncodeToString(sum[:])
}
