package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// shopifyStates is an in-memory States for mapping tests.
type shopifyStates map[string]State

func (s shopifyStates) State(key string) (State, bool) {
	st, ok := s[key]
	return st, ok
}

// apply writes a result's states, as the store does after a mapping.
func (s shopifyStates) apply(r Result) {
	for _, st := range r.States {
		s[st.Key] = st
	}
}

const testShop = "example.myshopify.com"

var shopifyReceived = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func shopifyNote(t *testing.T, topic, file, mode string) *Notification {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "shopify", file))
	if err != nil {
		t.Fatal(err)
	}
	if mode == "" {
		mode = ShopifyCurrencyShop
	}
	return &Notification{
		Source: SourceShopify, Key: "wh-" + strings.TrimSuffix(file, ".json"), Type: topic, AppID: "shop.example.app",
		ReceivedAt: shopifyReceived,
		// The webhook handler scrubs raw emails and phones before a body is
		// stored; the mapping always sees what the store holds.
		Body: ScrubPII(body),
		Meta: map[string]string{
			ShopifyMetaShop: testShop, ShopifyMetaTopic: topic, ShopifyMetaCurrency: mode,
			ShopifyMetaAPIVersion: "2026-01", ShopifyMetaTriggered: "2026-11-30T00:00:07Z",
		},
	}
}

// goldenResult is a Result with stable JSON names.
type goldenResult struct {
	Events  []Event  `json:"events"`
	States  []State  `json:"states"`
	Ignored string   `json:"ignored,omitempty"`
	Erase   *Erasure `json:"erase,omitempty"`
}

// Prior states shared by the cases: what earlier webhooks of the same shop
// left behind.
var (
	paidOrderState = State{
		Key: "shopify:" + testShop + ":order:820982911946154508", Status: "paid", AppUserID: "u-42",
		Identifiers: map[string]string{IDAppsFlyer: "1700000000000-1234567", IDShopifyCustomer: "115310627314723954",
			IDEmailSHA256: SHA256Hex("jon@example.com")},
		Values: map[string]string{"env": Production, "purchase": "evt_prior", "amount_micros": "403000000", "currency": "USD"},
	}
	customerState = State{
		Key: "shopify:" + testShop + ":customer:115310627314723954", AppUserID: "u-42",
		Identifiers: map[string]string{IDAppsFlyer: "1700000000000-1234567", IDShopifyCustomer: "115310627314723954"},
	}
	activeContractState = State{
		Key: "shopify:" + testShop + ":contract:24681357913", Status: "active", AppUserID: "u-42",
		Identifiers: map[string]string{IDShopifyCustomer: "115310627314723954"},
		Values:      map[string]string{"customer_id": "115310627314723954", "origin_order_id": "820982911946154508"},
	}
)

func TestShopifyGolden(t *testing.T) {
	tests := []struct {
		name, topic, file, mode string
		prior                   []State
	}{
		{name: "orders_paid", topic: "orders/paid", file: "order_paid.json"},
		{name: "orders_paid_presentment", topic: "orders/paid", file: "order_paid.json", mode: ShopifyCurrencyPresentment},
		{name: "orders_paid_test_order", topic: "orders/paid", file: "order_paid_test.json"},
		{name: "orders_paid_subscription_source", topic: "orders/paid", file: "order_paid_renewal.json"},
		{name: "orders_paid_after_billing_attempt", topic: "orders/paid", file: "order_paid_renewal.json", prior: []State{{
			Key: "shopify:" + testShop + ":order:5899171709999", Values: map[string]string{"contract": "24681357913"},
		}}},
		{name: "refunds_create", topic: "refunds/create", file: "refund.json", prior: []State{paidOrderState}},
		{name: "refunds_create_unknown_order", topic: "refunds/create", file: "refund.json"},
		{name: "refunds_create_no_money", topic: "refunds/create", file: "refund_no_money.json"},
		{name: "orders_cancelled_with_refund", topic: "orders/cancelled", file: "order_cancelled.json", prior: []State{paidOrderState}},
		{name: "orders_cancelled_without_refund", topic: "orders/cancelled", file: "order_cancelled_no_refund.json"},
		{name: "billing_success_before_order", topic: "subscription_billing_attempts/success", file: "billing_attempt_success.json", prior: []State{activeContractState}},
		{name: "billing_success_after_purchase", topic: "subscription_billing_attempts/success", file: "billing_attempt_success.json", prior: []State{activeContractState, {
			Key: "shopify:" + testShop + ":order:5899171709999", Status: "paid",
			Values: map[string]string{"env": Production, "purchase": "evt_purchase_5899171709999"},
		}}},
		{name: "billing_success_after_renewal", topic: "subscription_billing_attempts/success", file: "billing_attempt_success.json", prior: []State{{
			Key: "shopify:" + testShop + ":order:5899171709999", Status: "paid", Values: map[string]string{"renewal": "evt_x"},
		}}},
		{name: "billing_failure", topic: "subscription_billing_attempts/failure", file: "billing_attempt_failure.json", prior: []State{activeContractState, customerState}},
		{name: "subscription_contracts_create", topic: "subscription_contracts/create", file: "contract_create.json", prior: []State{paidOrderState, customerState}},
		{name: "subscription_contracts_update_cancelled", topic: "subscription_contracts/update", file: "contract_update_cancelled.json", prior: []State{activeContractState, paidOrderState}},
		{name: "subscription_contracts_update_unchanged", topic: "subscription_contracts/update", file: "contract_update_cancelled.json", prior: []State{{
			Key: activeContractState.Key, Status: "cancelled",
		}}},
		{name: "app_subscriptions_update_active", topic: "app_subscriptions/update", file: "app_subscription_active.json"},
		{name: "app_subscriptions_update_cancelled", topic: "app_subscriptions/update", file: "app_subscription_cancelled.json", prior: []State{{
			Key: "shopify:" + testShop + ":app_subscription:1029266951", Status: "ACTIVE",
		}}},
		{name: "app_subscriptions_update_frozen", topic: "app_subscriptions/update", file: "app_subscription_frozen.json", prior: []State{{
			Key: "shopify:" + testShop + ":app_subscription:1029266951", Status: "ACTIVE",
		}}},
		{name: "unknown_topic", topic: "products/update", file: "product_update.json"},
		{name: "compliance_customers_redact", topic: "customers/redact", file: "customers_redact.json"},
		{name: "compliance_shop_redact", topic: "shop/redact", file: "shop_redact.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := shopifyStates{}
			for _, s := range tt.prior {
				st[s.Key] = s
			}
			n := shopifyNote(t, tt.topic, tt.file, tt.mode)
			res, err := Map(n, st)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			golden(t, "shopify/"+tt.name, goldenResult(res))
			assertNoRawPII(t, res)
		})
	}
}

// assertNoRawPII fails if a raw email or phone reached an event or state.
func assertNoRawPII(t *testing.T, res Result) {
	t.Helper()
	b, _ := json.Marshal(goldenResult(res))
	for _, raw := range []string{"@example.com", "Example.com", "555-1212", "6505551212"} {
		if bytes.Contains(b, []byte(raw)) {
			t.Errorf("raw PII %q in mapping output: %s", raw, b)
		}
	}
}

func TestShopifyRawAndScrubbedBodiesMapAlike(t *testing.T) {
	n := shopifyNote(t, "orders/paid", "order_paid.json", "")
	scrubbed, err := Map(n, shopifyStates{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join("testdata", "shopify", "order_paid.json"))
	n.Body = raw
	fromRaw, err := Map(n, shopifyStates{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(scrubbed, fromRaw) {
		t.Errorf("raw body maps differently from the scrubbed body:\nraw %+v\nscrubbed %+v", fromRaw, scrubbed)
	}
}

func TestShopifyLargeIDsAreExact(t *testing.T) {
	res, err := Map(shopifyNote(t, "orders/paid", "order_paid.json", ""), shopifyStates{})
	if err != nil {
		t.Fatal(err)
	}
	e := res.Events[0]
	if e.TransactionID != "820982911946154508" {
		t.Errorf("transaction id = %q, want 820982911946154508 (beyond 2^53, must not pass through float64)", e.TransactionID)
	}
	if got := e.Identifier(IDShopifyCustomer); got != "115310627314723954" {
		t.Errorf("customer id = %q, want 115310627314723954", got)
	}
}

// A cancellation with a refund and the refund's own webhook are one fact:
// whichever arrives first creates the event, the second repeats its id.
func TestShopifyRefundOnceAcrossTopics(t *testing.T) {
	orders := []struct {
		name   string
		topics [2]string
		files  [2]string
	}{
		{"cancelled first", [2]string{"orders/cancelled", "refunds/create"}, [2]string{"order_cancelled.json", "refund.json"}},
		{"refund first", [2]string{"refunds/create", "orders/cancelled"}, [2]string{"refund.json", "order_cancelled.json"}},
	}
	for _, tt := range orders {
		t.Run(tt.name, func(t *testing.T) {
			st := shopifyStates{paidOrderState.Key: paidOrderState}
			var ids []string
			for i := range tt.topics {
				res, err := Map(shopifyNote(t, tt.topics[i], tt.files[i], ""), st)
				if err != nil {
					t.Fatal(err)
				}
				st.apply(res)
				if len(res.Events) != 1 || res.Events[0].Type != Refund {
					t.Fatalf("%s: events = %+v, want one refund", tt.topics[i], res.Events)
				}
				if got := res.Events[0].Revenue; got == nil || got.AmountMicros != -89_990_000 || got.Currency != "USD" {
					t.Errorf("%s: revenue = %+v, want -89.99 USD", tt.topics[i], got)
				}
				ids = append(ids, res.Events[0].ID)
			}
			if ids[0] != ids[1] {
				t.Errorf("the two topics gave ids %s and %s; a refund must be one event", ids[0], ids[1])
			}
		})
	}
}

// However the billing attempt and its order's orders/paid are ordered, the
// renewal's money is reported exactly once.
func TestShopifyRenewalMoneyOnce(t *testing.T) {
	web := func() *Notification {
		n := shopifyNote(t, "orders/paid", "order_paid_renewal.json", "")
		n.Body = bytes.Replace(n.Body, []byte("subscription_contract_checkout_one"), []byte("web"), 1)
		return n
	}
	attempt := func() *Notification {
		return shopifyNote(t, "subscription_billing_attempts/success", "billing_attempt_success.json", "")
	}
	tests := []struct {
		name     string
		steps    []func() *Notification
		wantType []Type
	}{
		{"attempt then order", []func() *Notification{attempt, web}, []Type{SubscriptionRenewed}},
		{"order then attempt", []func() *Notification{web, attempt}, []Type{Purchase, SubscriptionRenewed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := shopifyStates{activeContractState.Key: activeContractState}
			var types []Type
			var money int64
			for _, step := range tt.steps {
				res, err := Map(step(), st)
				if err != nil {
					t.Fatal(err)
				}
				st.apply(res)
				for _, e := range res.Events {
					types = append(types, e.Type)
					if e.Revenue != nil {
						money += e.Revenue.AmountMicros
					}
				}
			}
			if !reflect.DeepEqual(types, tt.wantType) {
				t.Errorf("types = %v, want %v", types, tt.wantType)
			}
			if money != 9_990_000 {
				t.Errorf("revenue reported = %d micros, want 9990000 exactly once", money)
			}
		})
	}
}

func TestShopifyMalformed(t *testing.T) {
	tests := []struct {
		name, topic, body string
		meta              map[string]string
	}{
		{name: "not JSON", topic: "orders/paid", body: `{"id":`},
		{name: "order without id", topic: "orders/paid", body: `{"total_price":"1.00","currency":"USD"}`},
		{name: "fractional id", topic: "orders/paid", body: `{"id": 1.5}`},
		{name: "unknown currency", topic: "orders/paid", body: `{"id": 1, "total_price": "1.00", "currency": "XXX"}`},
		{name: "exponent amount", topic: "orders/paid", body: `{"id": 1, "total_price": "1e3", "currency": "USD"}`},
		{name: "over-precise amount", topic: "orders/paid", body: `{"id": 1, "total_price": "1.0000001", "currency": "USD"}`},
		{name: "negative total", topic: "orders/paid", body: `{"id": 1, "total_price": "-5.00", "currency": "USD"}`},
		{name: "refund without id", topic: "refunds/create", body: `{"order_id": 1}`},
		{name: "refund with bad amount", topic: "refunds/create", body: `{"id": 2, "transactions": [{"kind":"refund","status":"success","amount":"abc","currency":"USD"}]}`},
		{name: "refund mixing currencies", topic: "refunds/create", body: `{"id": 2, "transactions": [{"kind":"refund","status":"success","amount":"1","currency":"USD"},{"kind":"refund","status":"success","amount":"1","currency":"EUR"}]}`},
		{name: "cancelled order refund without id", topic: "orders/cancelled", body: `{"id": 3, "refunds": [{"transactions": []}]}`},
		{name: "contract without id", topic: "subscription_contracts/create", body: `{"status": "active"}`},
		{name: "billing attempt without contract", topic: "subscription_billing_attempts/success", body: `{"id": 4, "order_id": 5}`},
		{name: "app subscription without object", topic: "app_subscriptions/update", body: `{}`},
		{name: "app subscription bad price", topic: "app_subscriptions/update", body: `{"app_subscription":{"admin_graphql_api_id":"gid://shopify/AppSubscription/1","status":"ACTIVE","price":"ten","currency":"USD"}}`},
		{name: "note attribute value not a scalar", topic: "orders/paid", body: `{"id": 6, "note_attributes": [{"name":"x","value":{"a":1}}]}`},
		{name: "no shop domain", topic: "orders/paid", body: `{"id": 7}`, meta: map[string]string{ShopifyMetaShop: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Notification{Source: SourceShopify, Key: "k", Type: tt.topic, ReceivedAt: shopifyReceived, Body: []byte(tt.body),
				Meta: map[string]string{ShopifyMetaShop: testShop, ShopifyMetaTopic: tt.topic}}
			for k, v := range tt.meta {
				n.Meta[k] = v
			}
			_, err := Map(n, shopifyStates{})
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

// TestMapLeavesStatesUnchanged: a mapping works on its own copy of the
// states it reads. The billing attempt below records its order in the
// contract's state; the States it was given must not see it.
func TestMapLeavesStatesUnchanged(t *testing.T) {
	prior := State{
		Key: activeContractState.Key, Status: "active", AppUserID: "u-42",
		Identifiers: map[string]string{IDShopifyCustomer: "115310627314723954"},
		Values:      map[string]string{"customer_id": "115310627314723954", "origin_order_id": "820982911946154508"},
	}
	st := shopifyStates{prior.Key: prior}
	before := maps.Clone(prior.Identifiers)
	beforeValues := maps.Clone(prior.Values)
	res, err := Map(shopifyNote(t, "subscription_billing_attempts/success", "billing_attempt_success.json", ""), st)
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	for _, s := range res.States {
		changed = changed || (s.Key == prior.Key && !maps.Equal(s.Values, beforeValues))
	}
	if !changed {
		t.Fatal("the mapping no longer changes the contract's values; pick a case that does")
	}
	if !maps.Equal(prior.Identifiers, before) || !maps.Equal(prior.Values, beforeValues) {
		t.Errorf("Map changed the States' maps: identifiers %v, values %v", prior.Identifiers, prior.Values)
	}
}

func TestShopifyComplianceForAnotherShopIsRefused(t *testing.T) {
	for _, tc := range []struct{ topic, body string }{
		{"shop/redact", `{"shop_id":954889,"shop_domain":"victim.myshopify.com"}`},
		{"customers/redact", `{"shop_id":954889,"shop_domain":"victim.myshopify.com","customer":{"id":1},"orders_to_redact":[]}`},
		{"customers/data_request", `{"shop_id":954889,"orders_requested":[]}`},
	} {
		n := &Notification{Source: SourceShopify, Key: "wh", Type: tc.topic, Body: []byte(tc.body),
			Meta: map[string]string{ShopifyMetaShop: "example.myshopify.com", ShopifyMetaTopic: tc.topic}}
		res, err := Shopify(n, nil)
		if !errors.Is(err, ErrMalformed) || res.Erase != nil {
			t.Errorf("%s: err = %v, erase = %+v; want ErrMalformed and no erasure", tc.topic, err, res.Erase)
		}
	}
}
