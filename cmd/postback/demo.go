package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/config"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/server"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// mock is a local stand-in for a destination's API: it answers every
// request with a fixed success body and remembers what it received.
type mock struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []mockRequest
	// failStatus, when not 0, is answered instead (with failBody): a
	// destination that refuses or is down.
	failStatus int
	failBody   string
}

// fail makes the mock answer status with body; 0 heals it.
func (m *mock) fail(status int, body string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failStatus, m.failBody = status, body
}

type mockRequest struct {
	Method, Path string
	Body         string
}

func newMock(name, answer string) *mock {
	m := &mock{name: name}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		m.mu.Lock()
		m.reqs = append(m.reqs, mockRequest{Method: r.Method, Path: r.URL.Path, Body: string(body)})
		status, failBody := m.failStatus, m.failBody
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if status != 0 {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, failBody)
			return
		}
		_, _ = io.WriteString(w, answer)
	}))
	return m
}

func (m *mock) requests() []mockRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mockRequest(nil), m.reqs...)
}

// DemoEvent is one canonical event the demo story produced.
type DemoEvent struct {
	Source string
	Type   string
	ID     string
}

// DemoDestination is what one mock destination received.
type DemoDestination struct {
	Name, Type string
	// Requests are the HTTP requests the mock received.
	Requests []mockRequest
	// States counts the destination's deliveries by final state.
	States map[string]int
	// Reasons lists why deliveries were skipped or dead.
	Reasons []string
}

// DemoSummary is what `postback demo` did, for printing and for tests.
type DemoSummary struct {
	ConsoleURL string
	Token      string
	// Sources are the sources whose story was fired, in order.
	Sources      []string
	Events       []DemoEvent
	Destinations []DemoDestination
	// Unfinished counts deliveries not final when the demo stopped waiting
	// (the held destination's excepted).
	Unfinished int
}

// Demo destinations that fail on purpose: crm-webhook refuses every event
// (HTTP 422: dead letters) until the demo heals it for a replay;
// partner-api refuses the credentials (HTTP 401: the destination is held).
const (
	demoDeadDest = "crm-webhook"
	demoHeldDest = "partner-api"
)

// demoOptions are the flags of `postback demo`.
type demoOptions struct {
	listen string
	// traffic, when not 0, keeps sending a renewal and a purchase every
	// traffic until the demo stops.
	traffic time.Duration
}

func cmdDemo(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("demo", env)
	listen := fs.String("listen", "127.0.0.1:8080", "address of the demo gateway (falls back to a free port when taken)")
	verbose := fs.Bool("v", false, "show the gateway's logs")
	traffic := fs.Duration("traffic", 0, "keep generating traffic (a Stripe renewal and a custom purchase) every this long until stopped, e.g. 2s")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *traffic < 0 || (*traffic > 0 && *traffic < 100*time.Millisecond) {
		fmt.Fprintln(env.Stderr, "postback demo: --traffic must be at least 100ms")
		return 2
	}
	logs := io.Discard
	if *verbose {
		logs = env.Stderr
	}
	_, err := runDemoWith(ctx, env.Stdout, logs, demoOptions{listen: *listen, traffic: *traffic}, func(s *DemoSummary) {
		addr := strings.TrimPrefix(s.ConsoleURL, "http://")
		fmt.Fprintf(env.Stdout, "\nConsole: %s/admin/  (admin token: %s)\n", s.ConsoleURL, s.Token)
		fmt.Fprintf(env.Stdout, "CLI:     POSTBACK_ADMIN_TOKEN=%s postback events --addr %s\n", s.Token, addr)
		fmt.Fprintf(env.Stdout, "Replay:  POSTBACK_ADMIN_TOKEN=%s postback replay --destination %s --addr %s   (or Dead letters in the console)\n", s.Token, demoDeadDest, addr)
		if *traffic > 0 {
			fmt.Fprintf(env.Stdout, "Sending a renewal and a purchase every %s.\n", *traffic)
		}
		fmt.Fprintln(env.Stdout, "Press Ctrl-C to stop.")
	})
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback demo:", err)
		return 1
	}
	return 0
}

// runDemo starts a gateway on a temporary database with generated test
// secrets (a test Apple PKI, a Pub/Sub OIDC key server and fake Play API for
// Google, Stripe and Shopify secrets, an API key) and local mock
// destinations, fires a subscription story from each source through real
// HTTP with real signatures, prints what each destination received, calls
// ready and serves until ctx ends.
func runDemo(ctx context.Context, out, logs io.Writer, listen string, ready func(*DemoSummary)) (*DemoSummary, error) {
	return runDemoWith(ctx, out, logs, demoOptions{listen: listen}, ready)
}

// runDemoWith is runDemo with every option.
func runDemoWith(ctx context.Context, out, logs io.Writer, o demoOptions, ready func(*DemoSummary)) (*DemoSummary, error) {
	listen := o.listen
	dir, err := os.MkdirTemp("", "postback-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	mmp := newMock("mock-mmp", `ok`)
	defer mmp.srv.Close()
	mmpAndroid := newMock("mock-mmp-android", `ok`)
	defer mmpAndroid.srv.Close()
	adnet := newMock("mock-ad-network", `{"code":0,"message":"OK","data":{}}`)
	defer adnet.srv.Close()
	backend := newMock("backend", `{"received":true}`)
	defer backend.srv.Close()
	crm := newMock(demoDeadDest, `{"ok":true}`)
	defer crm.srv.Close()
	crm.fail(http.StatusUnprocessableEntity, `{"error":"unknown customer"}`)
	partner := newMock(demoHeldDest, `{"ok":true}`)
	defer partner.srv.Close()
	partner.fail(http.StatusUnauthorized, `{"error":"invalid api key"}`)

	fakes, err := newStoreFakes(dir)
	if err != nil {
		return nil, err
	}
	defer fakes.close()

	sec := demoSecrets()
	y := fmt.Sprintf(`
server: {listen: %q, shutdown_timeout: 5s}
storage: {path: %q}
admin: {token: %q}
api_keys: [%q]
log: {level: info}
sources:
%s  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
  shopify: {enabled: true, secret: %q, app_id: com.example.app}
destinations:
  - name: appsflyer-demo
    type: appsflyer
    endpoint: %q
    app_id: id1234567890
    dev_key: demo-dev-key
    bundle_id: com.example.app
    match: {environments: [production], sources: [apple, stripe, shopify, custom]}
  - name: appsflyer-android
    type: appsflyer
    endpoint: %q
    app_id: com.example.app
    dev_key: demo-dev-key
    match: {environments: [production], sources: [google]}
  - name: tiktok-demo
    type: tiktok
    endpoint: %q
    access_token: demo-access-token
    app_id: "7000000000000000000"
    app_store_ids: {ios: "1234567890"}
    pixel_code: DEMOPIXEL00
    match: {environments: [production]}
  - name: my-backend
    type: webhook
    endpoint: %q
    secret: %q
    match: {environments: [production, sandbox]}
  - name: %s
    type: webhook
    endpoint: %q
    secret: %q
    match: {environments: [production], sources: [stripe, custom]}
  - name: %s
    type: webhook
    endpoint: %q
    secret: %q
    match: {environments: [production], sources: [shopify]}
`, listen, filepath.Join(dir, "postback.db"), sec.admin, sec.apiKey, fakes.sourcesYAML(), sec.stripe, sec.shopify, mmp.srv.URL, mmpAndroid.srv.URL, adnet.srv.URL, backend.srv.URL, sec.webhook,
		demoDeadDest, crm.srv.URL, sec.webhook, demoHeldDest, partner.srv.URL, sec.webhook)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, fmt.Errorf("demo config: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	g, err := server.New(cfg, server.Options{Logger: log, Listener: ln})
	if err != nil {
		ln.Close()
		return nil, err
	}
	gctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(gctx, nil) }()
	defer func() {
		stop()
		<-done
	}()
	base := "http://" + ln.Addr().String()
	sum := &DemoSummary{ConsoleURL: base, Token: sec.admin}
	fmt.Fprintf(out, "Postback demo: gateway on %s, temporary database in %s\n", base, dir)
	fmt.Fprintf(out, "Test keys: Apple PKI root %s, Google OIDC keys %s, fake Play API %s\n", fakes.rootPath, fakes.oidc.URL(), fakes.play.URL())
	fmt.Fprintf(out, "Mock destinations: appsflyer-demo -> %s, appsflyer-android -> %s, tiktok-demo -> %s, my-backend -> %s\n", mmp.srv.URL, mmpAndroid.srv.URL, adnet.srv.URL, backend.srv.URL)
	fmt.Fprintf(out, "Failing on purpose: %s -> %s (HTTP 422: dead letters), %s -> %s (HTTP 401: held)\n\n", demoDeadDest, crm.srv.URL, demoHeldDest, partner.srv.URL)

	client := &http.Client{Timeout: 10 * time.Second}
	enriched := func(id string) error { return demoEnriched(ctx, g.Store, id) }
	stories := []struct {
		source string
		run    func() error
	}{
		{"apple", func() error { return appleStory(ctx, client, base, sec.apiKey, fakes, out) }},
		{"google", func() error { return googleStory(ctx, client, base, sec.apiKey, fakes, enriched, out) }},
		{"stripe", func() error { return stripeStory(ctx, client, base, sec.stripe, out) }},
		{"shopify", func() error { return shopifyStory(ctx, client, base, sec.shopify, out) }},
		{"custom", func() error { return customStory(ctx, client, base, sec.apiKey, out) }},
	}
	for _, st := range stories {
		if err := st.run(); err != nil {
			return nil, err
		}
		sum.Sources = append(sum.Sources, st.source)
	}

	// Wait until every delivery is final (the mocks answer at once).
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending, err := g.Store.Deliveries(store.DeliveryFilter{States: []string{store.StatePending, store.StateRetrying, store.StateWaiting}, Limit: 1000})
		if err != nil {
			return nil, err
		}
		held := 0
		for _, d := range pending {
			if d.Destination == demoHeldDest {
				held++
			}
		}
		sum.Unfinished = len(pending) - held
		if sum.Unfinished == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return sum, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	page, err := g.Store.Events(store.EventFilter{Limit: 500})
	if err != nil {
		return nil, err
	}
	for i := len(page.Events) - 1; i >= 0; i-- {
		e := page.Events[i]
		sum.Events = append(sum.Events, DemoEvent{Source: e.Source, Type: string(e.Type), ID: e.ID})
	}
	all, err := g.Store.Deliveries(store.DeliveryFilter{Limit: 10000})
	if err != nil {
		return nil, err
	}
	for _, m := range []struct {
		name, typ string
		mock      *mock
	}{{"appsflyer-demo", "appsflyer", mmp}, {"appsflyer-android", "appsflyer", mmpAndroid}, {"tiktok-demo", "tiktok", adnet}, {"my-backend", "webhook", backend},
		{demoDeadDest, "webhook", crm}, {demoHeldDest, "webhook", partner}} {
		d := DemoDestination{Name: m.name, Type: m.typ, Requests: m.mock.requests(), States: map[string]int{}}
		for _, dl := range all {
			if dl.Destination != m.name {
				continue
			}
			d.States[dl.State]++
			if dl.State == store.StateSkipped || dl.State == store.StateDead || (dl.State == store.StateRetrying && dl.Reason != "") {
				d.Reasons = append(d.Reasons, dl.State+": "+dl.Reason)
			}
		}
		sort.Strings(d.Reasons)
		sum.Destinations = append(sum.Destinations, d)
	}
	printSummary(out, sum)
	// The dead letters stay for the console; the CRM "comes back" so that a
	// replay of them succeeds.
	crm.fail(0, "")
	fmt.Fprintf(out, "%s now accepts again: replay its dead letters from the console (Dead letters) or the CLI.\n", demoDeadDest)
	fmt.Fprintf(out, "%s stays held (its API key is refused): the console shows it paused; deliveries wait with their retry budget kept.\n", demoHeldDest)
	if ready != nil {
		ready(sum)
	}
	if o.traffic > 0 {
		demoTraffic(ctx, client, base, sec, o.traffic, out)
	}
	<-ctx.Done()
	return sum, nil
}

// demoTraffic sends a Stripe renewal and a custom purchase every period
// until ctx ends, with fresh ids, as `postback send` builds them.
func demoTraffic(ctx context.Context, c *http.Client, base string, sec demoSecretSet, every time.Duration, out io.Writer) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id := fmt.Sprintf("traffic_%d_%d", time.Now().Unix(), n)
		p := sampleParams{id: id, user: fmt.Sprintf("demo-traffic-%d", n%7), now: time.Now()}
		p.secret = sec.stripe
		renewal := sampleBuilders["stripe"]["invoice.paid"](p)
		p.secret = sec.apiKey
		purchase := sampleBuilders["custom"]["purchase"](p)
		for _, s := range []sample{renewal, purchase} {
			err := demoPost(ctx, c, base+s.path, s.body, s.headers)
			if ctx.Err() != nil {
				return
			}
			status := "accepted"
			if err != nil {
				status = err.Error()
			}
			fmt.Fprintf(out, "traffic  %-6s %s %s\n", strings.TrimPrefix(s.path, "/webhooks/"), s.id, status)
		}
	}
}

type demoSecretSet struct{ admin, apiKey, stripe, shopify, webhook string }

// demoSecrets generates fresh test secrets for one demo run.
func demoSecrets() demoSecretSet {
	r := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
		return b
	}
	return demoSecretSet{
		admin:   "demo-" + hex.EncodeToString(r(12)),
		apiKey:  "demo-api-" + hex.EncodeToString(r(12)),
		stripe:  "whsec_demo" + hex.EncodeToString(r(16)),
		shopify: "shpss_demo" + hex.EncodeToString(r(16)),
		webhook: "whsec_" + base64.StdEncoding.EncodeToString(r(32)),
	}
}

func printSummary(w io.Writer, s *DemoSummary) {
	fmt.Fprintf(w, "\nCanonical events (%d):\n", len(s.Events))
	tw := table(w)
	for _, e := range s.Events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.Source, e.Type, e.ID)
	}
	tw.Flush()
	for _, d := range s.Destinations {
		var states []string
		for st, n := range d.States {
			states = append(states, fmt.Sprintf("%s %d", st, n))
		}
		sort.Strings(states)
		fmt.Fprintf(w, "\n%s (%s) received %d requests; deliveries: %s\n", d.Name, d.Type, len(d.Requests), strings.Join(states, ", "))
		for _, r := range d.Requests {
			fmt.Fprintf(w, "  %s %s %s\n", r.Method, r.Path, clip(r.Body, 160))
		}
		for _, reason := range d.Reasons {
			fmt.Fprintf(w, "  not sent: %s\n", reason)
		}
	}
	if s.Unfinished > 0 {
		fmt.Fprintf(w, "\n%d deliveries were still in progress.\n", s.Unfinished)
	}
	fmt.Fprintln(w)
}

// demoEnriched waits until the gateway has looked a Google push up in the
// Play API (its inbox item is no longer "enriching").
func demoEnriched(ctx context.Context, db store.Reader, messageID string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := db.Notification(mapping.SourceGoogle, messageID)
		if err != nil {
			return err
		}
		if n.Status != mapping.StatusEnriching {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not enriched after 10s: %s", n.Reason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// demoPost POSTs body and expects a 2xx answer.
func demoPost(ctx context.Context, c *http.Client, url string, body []byte, headers map[string]string) error {
	return demoRequest(ctx, c, http.MethodPost, url, body, headers)
}

// demoRequest sends one request and expects a 2xx answer.
func demoRequest(ctx context.Context, c *http.Client, method, url string, body []byte, headers map[string]string) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	ack, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered HTTP %d: %s", url, resp.StatusCode, ack)
	}
	return nil
}

// stripeStory is one customer's month and a half: a free trial starts, the
// trial converts, the subscription renews, and the renewal is refunded.
func stripeStory(ctx context.Context, c *http.Client, base, secret string, out io.Writer) error {
	now := time.Now()
	md := `"app_user_id":"demo-user-stripe","appsflyer_id":"1700000000000-1111111","idfa":"6D92078A-8246-4BA4-AE5B-76104861E7DC","ttclid":"E.C.P.demo-stripe","email":"jane@example.com"`
	item := `"items":{"data":[{"quantity":1,"price":{"id":"price_pro_monthly","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}`
	sub := func(status string) string {
		return fmt.Sprintf(`{"id":"sub_demo","object":"subscription","status":%q,"customer":"cus_demo","currency":"usd","trial_end":%d,"metadata":{%s},%s}`, status, now.Add(7*24*time.Hour).Unix(), md, item)
	}
	invoice := func(id string, period int) string {
		start := now.AddDate(0, period, 0).Unix()
		return fmt.Sprintf(`{"id":%q,"object":"invoice","billing_reason":"subscription_cycle","amount_paid":999,"currency":"usd","subscription":"sub_demo","customer":"cus_demo","subscription_details":{"metadata":{%s}},"lines":{"data":[{"period":{"start":%d,"end":%d},"price":{"id":"price_pro_monthly","product":"prod_pro","currency":"usd","unit_amount":999,"recurring":{"interval":"month","interval_count":1}}}]}}`, id, md, start, start+30*86400)
	}
	steps := []struct{ id, typ, object, prev, label string }{
		{"evt_demo_trial", "customer.subscription.created", sub("trialing"), "", "trial starts"},
		{"evt_demo_convert", "customer.subscription.updated", sub("active"), `{"status":"trialing"}`, "trial converts"},
		{"evt_demo_invoice1", "invoice.paid", invoice("in_demo_1", 0), "", "first invoice paid (the same conversion)"},
		{"evt_demo_invoice2", "invoice.paid", invoice("in_demo_2", 1), "", "subscription renews"},
		{"evt_demo_refund", "charge.refunded", fmt.Sprintf(`{"id":"ch_demo_2","object":"charge","amount_refunded":999,"currency":"usd","customer":"cus_demo","invoice":"in_demo_2","metadata":{%s}}`, md), "", "renewal refunded"},
	}
	for i, s := range steps {
		prev := ""
		if s.prev != "" {
			prev = `,"previous_attributes":` + s.prev
		}
		body := fmt.Appendf(nil, `{"id":%q,"object":"event","api_version":"2024-06-20","created":%d,"livemode":true,"type":%q,"data":{"object":%s%s}}`,
			s.id, now.Add(time.Duration(i)*time.Second).Unix(), s.typ, s.object, prev)
		sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: time.Now()}).Header
		if err := demoPost(ctx, c, base+"/webhooks/stripe", body, map[string]string{"Stripe-Signature": sig}); err != nil {
			return fmt.Errorf("stripe %s: %w", s.typ, err)
		}
		fmt.Fprintf(out, "stripe   %-32s %s\n", s.typ, s.label)
	}
	return nil
}

// shopifyStory is a subscription bought in a Shopify store, renewed by its
// contract, and refunded.
func shopifyStory(ctx context.Context, c *http.Client, base, secret string, out io.Writer) error {
	notes := `[{"name":"app_user_id","value":"demo-user-shopify"},{"name":"_appsflyer_id","value":"1700000000000-2222222"},{"name":"ttclid","value":"E.C.P.demo-shopify"}]`
	order := func(id int64, name, source string, at time.Time) string {
		return fmt.Sprintf(`{"id":%d,"name":%q,"test":false,"created_at":%q,"processed_at":%q,"financial_status":"paid","currency":"USD","total_price":"14.99","total_price_set":{"shop_money":{"amount":"14.99","currency_code":"USD"},"presentment_money":{"amount":"14.99","currency_code":"USD"}},"email":"sam@example.com","source_name":%q,"customer":{"id":7001,"email":"sam@example.com"},"note_attributes":%s,"line_items":[{"id":%d,"product_id":632910392,"variant_id":39072856,"sku":"COFFEE-MONTHLY","quantity":1,"price":"14.99"}],"refunds":[]}`,
			id, name, at.Format(time.RFC3339), at.Format(time.RFC3339), source, notes, id+1)
	}
	now := time.Now().UTC()
	steps := []struct{ topic, id, body, label string }{
		{"orders/paid", "wh-demo-1", order(5900000000001, "#1001", "web", now), "first order paid"},
		{"orders/paid", "wh-demo-2", order(5900000000002, "#1002", "subscription_contract_checkout_one", now.Add(time.Second)), "contract renews"},
		{"refunds/create", "wh-demo-3", fmt.Sprintf(`{"id":890000000003,"order_id":5900000000002,"created_at":%q,"processed_at":%q,"restock":false,"refund_line_items":[],"transactions":[{"id":245000000003,"order_id":5900000000002,"kind":"refund","status":"success","amount":"14.99","currency":"USD","test":false}]}`, now.Add(2*time.Second).Format(time.RFC3339), now.Add(2*time.Second).Format(time.RFC3339)), "renewal refunded"},
	}
	for _, s := range steps {
		body := []byte(s.body)
		h := map[string]string{
			"X-Shopify-Topic":        s.topic,
			"X-Shopify-Hmac-Sha256":  webhooks.SignShopify(body, secret),
			"X-Shopify-Webhook-Id":   s.id,
			"X-Shopify-Event-Id":     "ev-" + s.id,
			"X-Shopify-Shop-Domain":  "demo.myshopify.com",
			"X-Shopify-API-Version":  "2025-01",
			"X-Shopify-Triggered-At": now.Format(time.RFC3339),
		}
		if err := demoPost(ctx, c, base+"/webhooks/shopify", body, h); err != nil {
			return fmt.Errorf("shopify %s: %w", s.topic, err)
		}
		fmt.Fprintf(out, "shopify  %-32s %s\n", s.topic, s.label)
	}
	return nil
}
