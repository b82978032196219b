package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/webhooks"
)

// sample is one signed request `postback send` posts.
type sample struct {
	path    string
	body    []byte
	headers map[string]string
	id      string // the notification's own id (dedupe key)
}

// sampleParams are what a sample is built from.
type sampleParams struct {
	id, user, secret, shop string
	now                    time.Time
}

// sampleBuilders lists, per source, the notification types `postback send`
// builds: the vendor's own type names.
var sampleBuilders = map[string]map[string]func(p sampleParams) sample{
	"stripe": {
		"customer.subscription.created": func(p sampleParams) sample {
			return stripeSample(p, "customer.subscription.created", stripeSub(p, "trialing"), "")
		},
		"customer.subscription.updated": func(p sampleParams) sample {
			return stripeSample(p, "customer.subscription.updated", stripeSub(p, "active"), `{"status":"trialing"}`)
		},
		"customer.subscription.deleted": func(p sampleParams) sample {
			return stripeSample(p, "customer.subscription.deleted", stripeSub(p, "canceled"), "")
		},
		"invoice.paid": func(p sampleParams) sample {
			start := p.now.Unix()
			inv := fmt.Sprintf(`{"id":"in_%s","object":"invoice","billing_reason":"subscription_cycle","amount_paid":999,"currency":"usd","subscription":"sub_%s","customer":"cus_%s","subscription_details":{"metadata":{%s}},"lines":{"data":[{"period":{"start":%d,"end":%d},"price":{"id":"price_pro_monthly","product":"prod_pro","currency":"usd","unit_amount":999,"recurring":{"interval":"month","interval_count":1}}}]}}`,
				p.id, p.user, p.user, stripeMetadata(p), start, start+30*86400)
			return stripeSample(p, "invoice.paid", inv, "")
		},
		"charge.refunded": func(p sampleParams) sample {
			ch := fmt.Sprintf(`{"id":"ch_%s","object":"charge","amount":999,"amount_refunded":999,"refunded":true,"currency":"usd","customer":"cus_%s","invoice":"in_%s","metadata":{%s}}`, p.id, p.user, p.id, stripeMetadata(p))
			return stripeSample(p, "charge.refunded", ch, "")
		},
	},
	"shopify": {
		"orders/paid": func(p sampleParams) sample {
			at := p.now.UTC().Format(time.RFC3339)
			body := fmt.Sprintf(`{"id":%d,"name":"#%d","test":true,"created_at":%q,"processed_at":%q,"financial_status":"paid","currency":"USD","total_price":"14.99","total_price_set":{"shop_money":{"amount":"14.99","currency_code":"USD"},"presentment_money":{"amount":"14.99","currency_code":"USD"}},"source_name":"web","note_attributes":[{"name":"app_user_id","value":%q}],"line_items":[{"id":%d,"product_id":632910392,"variant_id":39072856,"sku":"COFFEE-MONTHLY","title":"Coffee subscription","quantity":1,"price":"14.99"}],"refunds":[]}`,
				shopifyNumber(p.id), shopifyNumber(p.id)%100000, at, at, p.user, shopifyNumber(p.id)+1)
			return shopifySample(p, "orders/paid", body)
		},
		"refunds/create": func(p sampleParams) sample {
			at := p.now.UTC().Format(time.RFC3339)
			n := shopifyNumber(p.id)
			body := fmt.Sprintf(`{"id":%d,"order_id":%d,"created_at":%q,"processed_at":%q,"restock":false,"refund_line_items":[],"transactions":[{"id":%d,"order_id":%d,"kind":"refund","status":"success","amount":"14.99","currency":"USD","test":true}]}`,
				n, n, at, at, n+1, n)
			return shopifySample(p, "refunds/create", body)
		},
	},
	"custom": {},
}

func init() {
	// /v1/events: every canonical type (custom as custom:NAME).
	for _, t := range mapping.Types {
		typ := string(t)
		if t == mapping.Custom {
			typ = "custom:level_up"
		}
		sampleBuilders["custom"][typ] = func(p sampleParams) sample { return customSample(p, typ) }
	}
}

func stripeMetadata(p sampleParams) string {
	return fmt.Sprintf(`"app_user_id":%q`, p.user)
}

func stripeSub(p sampleParams, status string) string {
	return fmt.Sprintf(`{"id":"sub_%s","object":"subscription","status":%q,"customer":"cus_%s","currency":"usd","trial_end":%d,"metadata":{%s},"items":{"data":[{"quantity":1,"price":{"id":"price_pro_monthly","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}`,
		p.user, status, p.user, p.now.Add(7*24*time.Hour).Unix(), stripeMetadata(p))
}

// stripeSample wraps object in an event signed like Stripe signs it
// (Stripe-Signature: t=...,v1=HMAC-SHA256 with the endpoint's whsec_ secret).
func stripeSample(p sampleParams, typ, object, prev string) sample {
	if prev != "" {
		prev = `,"previous_attributes":` + prev
	}
	id := "evt_" + p.id
	body := fmt.Appendf(nil, `{"id":%q,"object":"event","api_version":"2024-06-20","created":%d,"livemode":false,"type":%q,"data":{"object":%s%s}}`, id, p.now.Unix(), typ, object, prev)
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: p.secret, Timestamp: p.now}).Header
	return sample{path: "/webhooks/stripe", body: body, id: id, headers: map[string]string{"Stripe-Signature": sig}}
}

func shopifyNumber(id string) int64 {
	var n int64
	for _, c := range id {
		n = (n*31 + int64(c)) % 1_000_000_000_000
	}
	return 5_000_000_000_000 + n
}

// shopifySample signs body like Shopify (X-Shopify-Hmac-Sha256: base64
// HMAC-SHA256 with the app's client secret).
func shopifySample(p sampleParams, topic, body string) sample {
	b := []byte(body)
	id := "send-" + p.id
	return sample{path: "/webhooks/shopify", body: b, id: id, headers: map[string]string{
		"X-Shopify-Topic":        topic,
		"X-Shopify-Hmac-Sha256":  webhooks.SignShopify(b, p.secret),
		"X-Shopify-Webhook-Id":   id,
		"X-Shopify-Event-Id":     "ev-" + id,
		"X-Shopify-Shop-Domain":  p.shop,
		"X-Shopify-API-Version":  "2025-01",
		"X-Shopify-Triggered-At": p.now.UTC().Format(time.RFC3339),
	}}
}

// customSample is a POST /v1/events with an API key and an Idempotency-Key.
func customSample(p sampleParams, typ string) sample {
	name := ""
	if n, ok := strings.CutPrefix(typ, "custom:"); ok {
		typ, name = "custom", fmt.Sprintf(`,"name":%q`, n)
	}
	rev := ""
	switch mapping.Type(typ) {
	case mapping.Purchase, mapping.SubscriptionStarted, mapping.SubscriptionRenewed, mapping.TrialConverted:
		rev = `,"revenue":{"amount":"9.99","currency":"USD"}`
	case mapping.Refund:
		rev = `,"revenue":{"amount":"-9.99","currency":"USD"}`
	}
	body := fmt.Appendf(nil, `{"type":%q%s,"app_id":"com.example.app","app_user_id":%q,"product_id":"pro_monthly"%s}`, typ, name, p.user, rev)
	id := "send-" + p.id
	return sample{path: "/v1/events", body: body, id: id, headers: map[string]string{"Authorization": "Bearer " + p.secret, "Idempotency-Key": id}}
}

// sendSecretEnv names the variable each source's secret comes from (the
// shipped config.yaml's names).
var sendSecretEnv = map[string]string{"stripe": "STRIPE_WEBHOOK_SECRET", "shopify": "SHOPIFY_WEBHOOK_SECRET", "custom": "POSTBACK_API_KEY"}

// sendElsewhere explains the sources whose notifications only the vendor
// can sign.
var sendElsewhere = map[string]string{
	"apple":  "Apple signs its notifications with its own certificate chain, which no local tool can forge: ask Apple for one with the App Store Server API's \"Request a Test Notification\" (POST /inApps/v1/notifications/test; see the README), or run 'postback demo', whose gateway trusts a test chain",
	"google": "Google signs its Pub/Sub pushes with its own OIDC tokens: use Play Console > Monetization setup > Real-time developer notifications > \"Send test notification\" (see the README), or run 'postback demo', whose gateway trusts a test key",
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func cmdSend(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("send", env)
	to := fs.String("to", "http://127.0.0.1:8080", "the gateway's base URL, or the full webhook URL (env POSTBACK_ADDR)")
	secret := fs.String("secret", "", "signing secret or API key (default env STRIPE_WEBHOOK_SECRET, SHOPIFY_WEBHOOK_SECRET or POSTBACK_API_KEY by source)")
	user := fs.String("user", "test-user-1", "app_user_id of the sample")
	id := fs.String("id", "", "the notification's id (default random; send the same id twice to see a duplicate)")
	shop := fs.String("shop", "example.myshopify.com", "Shopify shop domain (X-Shopify-Shop-Domain)")
	dry := fs.Bool("print", false, "print the signed request instead of sending it")
	fs.Usage = func() {
		var lines []string
		lines = append(lines, "usage: postback send SOURCE TYPE [--to URL] [--secret S] [--user ID] [--print]",
			"       build a realistic sample notification of TYPE, sign it as SOURCE does, and post it to a running gateway", "", "types:")
		for _, src := range sortedKeys(sampleBuilders) {
			lines = append(lines, fmt.Sprintf("  %-8s %s", src, strings.Join(sortedKeys(sampleBuilders[src]), ", ")))
		}
		for _, src := range sortedKeys(sendElsewhere) {
			lines = append(lines, fmt.Sprintf("  %-8s not here: %s", src, strings.SplitN(sendElsewhere[src], ":", 2)[0]))
		}
		flagUsage(fs, lines...)
	}
	if v, ok := env.Getenv("POSTBACK_ADDR"); ok && v != "" {
		_ = fs.Set("to", v)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 2 {
		fs.Usage()
		return 2
	}
	src, typ := pos[0], pos[1]
	if why, ok := sendElsewhere[src]; ok {
		return exitErr(env, usageError("%s: %s", src, why))
	}
	builders, ok := sampleBuilders[src]
	if !ok {
		return exitErr(env, usageError("source %q is not one of: %s", src, strings.Join(sortedKeys(sampleBuilders), ", ")))
	}
	build, ok := builders[typ]
	if !ok {
		return exitErr(env, usageError("%s type %q is not one of: %s", src, typ, strings.Join(sortedKeys(builders), ", ")))
	}
	if *secret == "" {
		*secret, _ = env.Getenv(sendSecretEnv[src])
	}
	if *secret == "" {
		return exitErr(env, usageError("%s: pass --secret or set %s to the gateway's secret", src, sendSecretEnv[src]))
	}
	if *id == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		*id = "send_" + hex.EncodeToString(b[:])
	}
	s := build(sampleParams{id: *id, user: *user, secret: *secret, shop: *shop, now: time.Now()})
	target, err := sendURL(*to, s.path)
	if err != nil {
		return exitErr(env, usageError("--to: %v", err))
	}
	if *dry {
		fmt.Fprintf(env.Stdout, "POST %s\n", target)
		for _, k := range sortedKeys(s.headers) {
			fmt.Fprintf(env.Stdout, "%s: %s\n", k, s.headers[k])
		}
		fmt.Fprintf(env.Stdout, "\n%s\n", s.body)
		return 0
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(s.body))
	if err != nil {
		return exitErr(env, usageError("--to: %v", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "postback-send")
	for k, v := range s.headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return exitErr(env, &clientError{err: fmt.Errorf("cannot reach %s: %w", target, err)})
	}
	defer resp.Body.Close()
	ack, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprintf(env.Stdout, "%s %s %s -> %s: HTTP %d %s\n", src, typ, s.id, target, resp.StatusCode, strings.TrimSpace(string(ack)))
	if rid := resp.Header.Get("X-Request-Id"); rid != "" {
		fmt.Fprintf(env.Stdout, "request id %s (in the gateway's log and on its Requests page)\n", rid)
	}
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}

// sendURL appends the source's webhook path to a base URL; a URL that has
// a path already is used as it is (a tunnel, a proxy's path).
func sendURL(to, path string) (string, error) {
	if !strings.Contains(to, "://") {
		to = "http://" + to
	}
	u, err := url.Parse(to)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%q is not a URL", to)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = path
	}
	return u.String(), nil
}
