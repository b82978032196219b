package console_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
	"golang.org/x/net/websocket"

	"github.com/postback/postback/config"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/server"
)

const (
	chromiumPath  = "/usr/bin/chromium"
	browserToken  = "browser-test-admin-token-0123456789"
	browserStripe = "whsec_browser_test_stripe_secret"
)

// cdp is a minimal Chrome DevTools Protocol client over one page target's
// websocket: enough to navigate, run script, and take screenshots.
type cdp struct {
	ws *websocket.Conn
	id int
}

type cdpMessage struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params any             `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// call sends one command and waits for its answer, skipping events.
func (c *cdp) call(method string, params any, result any) error {
	c.id++
	id := c.id
	if params == nil {
		params = struct{}{}
	}
	if err := c.ws.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	if err := websocket.JSON.Send(c.ws, cdpMessage{ID: id, Method: method, Params: params}); err != nil {
		return err
	}
	for {
		var m cdpMessage
		if err := websocket.JSON.Receive(c.ws, &m); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		if m.ID != id {
			continue
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	}
}

// eval runs JavaScript in the page and returns its JSON-able value.
func (c *cdp) eval(js string) (json.RawMessage, error) {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := c.call("Runtime.evaluate", map[string]any{"expression": js, "returnByValue": true}, &r); err != nil {
		return nil, err
	}
	if r.Exception != nil {
		return nil, fmt.Errorf("script %q: %s", js, r.Exception.Text)
	}
	return r.Result.Value, nil
}

// browser starts headless Chromium and connects to its first page.
func browser(t *testing.T) *cdp {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %s is missing: .ci/run must install Debian's chromium package", chromiumPath)
		}
		t.Skipf("browser test skipped: %s is not installed (apt-get install chromium); CI runs it", chromiumPath)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=http://127.0.0.1",
		"--user-data-dir="+dir, "about:blank")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	// Chromium writes its port to DevToolsActivePort once it listens.
	var port string
	for deadline := time.Now().Add(30 * time.Second); port == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("chromium did not start: %s", stderr.String())
		}
		if b, err := os.ReadFile(filepath.Join(dir, "DevToolsActivePort")); err == nil {
			if p, _, ok := strings.Cut(string(b), "\n"); ok && p != "" {
				port = p
			}
		}
	}
	var targets []struct {
		Type string `json:"type"`
		WS   string `json:"webSocketDebuggerUrl"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://127.0.0.1:" + port + "/json/list")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		if len(targets) > 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, tg := range targets {
		if tg.Type != "page" {
			continue
		}
		ws, err := websocket.Dial(tg.WS, "", "http://127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		ws.MaxPayloadBytes = 64 << 20
		t.Cleanup(func() { ws.Close() })
		c := &cdp{ws: ws}
		if err := c.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Fatalf("no page target in %+v", targets)
	return nil
}

// waitJS polls a boolean expression until it is true.
func waitJS(t *testing.T, c *cdp, what, js string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		v, err := c.eval(js)
		if err == nil && string(v) == "true" {
			return
		}
		if err != nil {
			last = err.Error()
		}
	}
	loc, _ := c.eval("location.href + ' ' + document.title")
	t.Fatalf("timed out waiting for %s (%s) at %s %s", what, js, loc, last)
}

func navigate(t *testing.T, c *cdp, url string) {
	t.Helper()
	if err := c.call("Page.navigate", map[string]any{"url": url}, nil); err != nil {
		t.Fatal(err)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// screenshot saves the whole page as a PNG when POSTBACK_SCREENSHOTS is set
// (docs/screenshots/ is regenerated on purpose, not by every test run).
func screenshot(t *testing.T, c *cdp, name string) {
	t.Helper()
	if os.Getenv("POSTBACK_SCREENSHOTS") == "" {
		return
	}
	h, err := c.eval("Math.ceil(document.documentElement.scrollHeight)")
	if err != nil {
		t.Fatal(err)
	}
	height, _ := strconv.Atoi(string(h))
	height = min(max(height, 600), 2400)
	if err := c.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		t.Fatal(err)
	}
	var r struct {
		Data string `json:"data"`
	}
	if err := c.call("Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "docs", "screenshots", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = c.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil)
	t.Logf("wrote %s", path)
}

// browserGateway runs a gateway whose clock the test can set back, so the
// overview chart has a day of history, with a webhook destination "backend"
// and a second one, "analytics", that refuses user-dead's events until
// healed.
type browserGateway struct {
	url    string
	offset atomic.Int64 // the gateway's clock runs this many ns behind
	healed atomic.Bool
	// partner refuses its credentials (401: the destination pauses) until
	// partnerOK.
	partnerOK atomic.Bool
}

func (bg *browserGateway) now() time.Time { return time.Now().Add(-time.Duration(bg.offset.Load())) }

func startBrowserGateway(t *testing.T, live time.Duration) *browserGateway {
	t.Helper()
	bg := &browserGateway{}
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if !bg.partnerOK.Load() {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid api key"}`)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(partner.Close)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(ok.Close)
	picky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte("user-dead")) && !bg.healed.Load() {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, `{"error":"unknown customer"}`)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(picky.Close)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 2s}
storage: {path: %q}
admin: {token: %q}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
destinations:
  - {name: backend, type: webhook, endpoint: %q, secret: %q, match: {environments: [production, sandbox]}}
  - {name: analytics, type: webhook, endpoint: %q, secret: %q, match: {environments: [production, sandbox]}}
  - {name: branch, type: branch, endpoint: %q, branch_key: key_live_console1, match: {apps: [com.example.none]}}
  - {name: partner, type: webhook, endpoint: %q, secret: %q, match: {environments: [production, sandbox], types: [trial_converted]}}
`, t.TempDir()+"/pb.db", browserToken, browserStripe, ok.URL, secret, picky.URL, secret, ok.URL, partner.URL, secret)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := server.New(cfg, server.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Listener: ln, Now: bg.now, ConsoleLive: live,
		Reload: func() (*config.Config, error) {
			return config.Parse([]byte(y), func(string) (string, bool) { return "", false })
		},
		Dispatch: dispatch.Options{BackoffBase: time.Millisecond, Poll: 20 * time.Millisecond, BreakerFailures: 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	bg.url = "http://" + ln.Addr().String()
	return bg
}

// post sends one signed Stripe event at the gateway's current clock.
func (bg *browserGateway) post(t *testing.T, id, typ, object, prev string, live bool) {
	t.Helper()
	if prev != "" {
		prev = `,"previous_attributes":` + prev
	}
	now := bg.now()
	body := fmt.Appendf(nil, `{"id":%q,"object":"event","api_version":"2024-06-20","created":%d,"livemode":%t,"type":%q,"data":{"object":%s%s}}`, id, now.Unix(), live, typ, object, prev)
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: browserStripe, Timestamp: now}).Header
	req, _ := http.NewRequest(http.MethodPost, bg.url+"/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stripe %s: HTTP %d %s", id, resp.StatusCode, b)
	}
}

func subscription(id, user, status string) string {
	return fmt.Sprintf(`{"id":%q,"object":"subscription","status":%q,"customer":"cus_%s","currency":"usd","trial_end":1900000000,"metadata":{"app_user_id":%q,"appsflyer_id":"1700000000000-%07d","email":"someone@example.com"},"items":{"data":[{"quantity":1,"price":{"id":"price_pro_monthly","product":"prod_pro","unit_amount":999,"currency":"usd","recurring":{"interval":"month","interval_count":1}}}]}}`,
		id, status, user, user, len(id)*7919%10000000)
}

// history fills the last 24 hours with a plausible mix of events.
func (bg *browserGateway) history(t *testing.T) {
	t.Helper()
	n := 0
	for h := 23; h >= 1; h-- {
		bg.offset.Store(int64(time.Duration(h)*time.Hour - 7*time.Minute))
		k := 1 + (h*7)%4
		for i := range k {
			n++
			sub, user := fmt.Sprintf("sub_h%d_%d", h, i), fmt.Sprintf("user-%d", n)
			switch (h + i) % 5 {
			case 0, 1:
				bg.post(t, fmt.Sprintf("evt_h%d_%d", h, i), "customer.subscription.created", subscription(sub, user, "trialing"), "", true)
			case 2:
				bg.post(t, fmt.Sprintf("evt_h%d_%d", h, i), "customer.subscription.created", subscription(sub, user, "active"), "", true)
			case 3:
				bg.post(t, fmt.Sprintf("evt_h%d_%d", h, i), "customer.subscription.updated", subscription(sub, user, "active"), `{"status":"trialing"}`, true)
			case 4:
				bg.post(t, fmt.Sprintf("evt_h%d_%d", h, i), "charge.refunded", fmt.Sprintf(`{"id":"ch_h%d_%d","object":"charge","amount_refunded":999,"currency":"usd","customer":"cus_%s","metadata":{"app_user_id":%q}}`, h, i, user, user), "", true)
			}
		}
	}
	bg.offset.Store(0)
}

func TestBrowserConsole(t *testing.T) {
	c := browser(t)
	bg := startBrowserGateway(t, time.Hour) // no reload during the test; TestBrowserLive drives it
	bg.history(t)
	// The event the operator will look for: a trial that converted, whose
	// delivery to analytics failed permanently.
	bg.post(t, "evt_story_trial", "customer.subscription.created", subscription("sub_story", "user-dead", "trialing"), "", true)
	bg.post(t, "evt_story_convert", "customer.subscription.updated", subscription("sub_story", "user-dead", "active"), `{"status":"trialing"}`, true)

	navigate(t, c, bg.url+"/admin/")
	waitJS(t, c, "login form", `!!document.querySelector('#token')`)
	if _, err := c.eval(`document.querySelector('#token').value = ` + jsString(browserToken) + `; document.querySelector('#login').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "overview with two dead letters", `location.pathname === '/admin/' && document.querySelector('#dead-total') !== null && document.querySelector('#dead-total').textContent.trim() === '2'`)
	waitJS(t, c, "chart bars", `document.querySelectorAll('svg.chart rect').length >= 23`)
	screenshot(t, c, "overview.png")

	navigate(t, c, bg.url+"/admin/events")
	waitJS(t, c, "event search form", `!!document.querySelector('#user')`)
	if _, err := c.eval(`document.querySelector('#user').value = 'user-dead'; document.querySelector('#search').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "two events of user-dead", `location.search.includes('user=user-dead') && document.querySelectorAll('table.events tbody a.mono').length === 2`)
	// Newest first: the conversion.
	if _, err := c.eval(`document.querySelector('table.events tbody a.mono').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "event detail", `location.pathname.startsWith('/admin/events/evt_') && document.querySelector('#delivery-analytics .state') !== null`)
	if v, _ := c.eval(`document.querySelector('#delivery-analytics .state').textContent.trim()`); string(v) != `"dead"` {
		t.Fatalf("analytics delivery state %s, want dead", v)
	}
	if v, _ := c.eval(`document.body.innerText.includes('trial_converted') && document.body.innerText.includes('HTTP 422')`); string(v) != "true" {
		t.Error("event page lacks the event type or the failed attempt")
	}
	if v, _ := c.eval(`document.body.innerText.includes('someone@example.com')`); string(v) != "false" {
		t.Error("event page shows a raw email")
	}
	eventURL, _ := c.eval(`location.href`)

	bg.healed.Store(true)
	if _, err := c.eval(`document.querySelector('#delivery-analytics button.replay').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "replay acknowledged", `document.querySelector('.flash') !== null && document.querySelector('.flash').textContent.includes('queued again')`)
	for deadline := time.Now().Add(15 * time.Second); ; {
		v, _ := c.eval(`document.querySelector('#delivery-analytics .state') && document.querySelector('#delivery-analytics .state').textContent.trim()`)
		if string(v) == `"delivered"` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replayed delivery is %s, want delivered", v)
		}
		time.Sleep(100 * time.Millisecond)
		var u string
		_ = json.Unmarshal(eventURL, &u)
		navigate(t, c, u)
		waitJS(t, c, "event page reloaded", `document.readyState === 'complete' && !!document.querySelector('#event-id')`)
	}
	waitJS(t, c, "two attempts on the timeline", `document.querySelectorAll('#delivery-analytics ol.timeline li').length >= 4`)
	screenshot(t, c, "event.png")

	navigate(t, c, bg.url+"/admin/dead")
	waitJS(t, c, "dead-letter page", `!!document.querySelector('#bulk-count')`)
	if v, _ := c.eval(`document.querySelectorAll('table.dead button.replay').length`); string(v) != "1" {
		t.Errorf("dead letters after the replay: %s, want 1 (the trial start)", v)
	}
	if _, err := c.eval(`document.querySelector('#bulk-count').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "dry-run count", `!!document.querySelector('#dry-run-count') && document.querySelector('#dry-run-count').textContent.includes('1 dead deliveries match')`)
	if _, err := c.eval(`document.querySelector('#bulk-confirm').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "bulk replay started", `document.querySelector('.flash') !== null && document.querySelector('.flash').textContent.includes('1 deliveries')`)
	for deadline := time.Now().Add(15 * time.Second); ; {
		navigate(t, c, bg.url+"/admin/dead")
		waitJS(t, c, "dead-letter page", `document.readyState === 'complete' && !!document.querySelector('#bulk-count')`)
		v, _ := c.eval(`document.querySelectorAll('table.dead button.replay').length`)
		if string(v) == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters left after the bulk replay: %s", v)
		}
		time.Sleep(100 * time.Millisecond)
	}

	navigate(t, c, bg.url+"/admin/destinations")
	waitJS(t, c, "destinations", `!!document.querySelector('#dest-analytics') && !!document.querySelector('#dest-backend')`)
	if _, err := c.eval(`document.querySelector('#dest-backend form button').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "test event result", `document.querySelector('.flash') !== null && document.querySelector('.flash').textContent.includes('Test event to backend: passed, delivered')`)
	screenshot(t, c, "destinations.png")

	browseDeliveries(t, c, bg)
}

// click clicks the first element matching sel.
func click(t *testing.T, c *cdp, sel string) {
	t.Helper()
	if _, err := c.eval(`document.querySelector(` + jsString(sel) + `).click(); true`); err != nil {
		t.Fatal(err)
	}
}

// browseDeliveries drives the deliveries log, the held destination and
// its Resume, the request shown beside the response, the confirmation
// before re-sending delivered work and the dead-letter groups.
func browseDeliveries(t *testing.T, c *cdp, bg *browserGateway) {
	// Status chips on the events list.
	navigate(t, c, bg.url+"/admin/events?user=user-dead")
	waitJS(t, c, "status chips", `document.querySelectorAll('td.chips .chip').length >= 4 && document.body.innerText.includes('partner · held')`)

	// The deliveries log: held work of the paused partner.
	navigate(t, c, bg.url+"/admin/deliveries")
	waitJS(t, c, "deliveries log", `!!document.querySelector('#log-total') && document.querySelectorAll('tr.log-row').length === 50 && !!document.querySelector('#log-next')`)
	click(t, c, `#log-filter input[value="held"]`)
	click(t, c, "#log-search")
	waitJS(t, c, "held filter", `location.search.includes('state=held') && document.querySelectorAll('tr.log-row').length >= 1 && [...document.querySelectorAll('tr.log-row .state')].every(e => e.textContent.trim() === 'held') && !!document.querySelector('.held-note')`)
	screenshot(t, c, "deliveries.png")
	navigate(t, c, bg.url+"/admin/deliveries?limit=5")
	waitJS(t, c, "first page", `document.querySelector('#log-total').textContent.trim().startsWith('1–5 of ')`)
	click(t, c, "#log-next")
	waitJS(t, c, "second page", `document.querySelector('#log-total').textContent.trim().startsWith('6–10 of ') && !!document.querySelector('#log-prev')`)
	click(t, c, "#log-prev")
	waitJS(t, c, "back to the first page", `document.querySelector('#log-total').textContent.trim().startsWith('1–5 of ')`)
	if v, _ := c.eval(`document.querySelector('#export-csv').getAttribute('href').includes('format=csv') && document.querySelector('#export-json').getAttribute('href').includes('format=json')`); string(v) != "true" {
		t.Error("no export links")
	}
	// Search by user id.
	navigate(t, c, bg.url+"/admin/deliveries")
	waitJS(t, c, "search box", `!!document.querySelector('#q')`)
	if _, err := c.eval(`document.querySelector('#q').value = 'user-dead'; document.querySelector('#log-search').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "search result", `location.search.includes('q=user-dead') && document.querySelector('#log-total').textContent.includes(' of ') && [...document.querySelectorAll('tr.log-row')].length >= 4`)

	// The event: request beside the response, then re-send delivered work
	// only after confirming.
	if _, err := c.eval(`[...document.querySelectorAll('tr.log-row')].find(r => r.dataset.key.endsWith('|backend')).querySelector('a.mono').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "event page", `!!document.querySelector('#delivery-backend details.exchange')`)
	if _, err := c.eval(`document.querySelectorAll('details.exchange').forEach(d => d.open = true); true`); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.eval(`document.querySelector('#delivery-backend pre.request').textContent.includes('Webhook-Signature: [masked]') && document.querySelector('#delivery-backend pre.response').textContent.includes('"ok":true')`); string(v) != "true" {
		t.Error("the attempt does not show the masked request beside the response")
	}
	click(t, c, "#delivery-backend button.replay")
	waitJS(t, c, "confirmation", `!!document.querySelector('#confirm') && document.body.innerText.includes('counts it twice')`)
	click(t, c, "#confirm-replay")
	waitJS(t, c, "re-sent", `document.querySelector('.flash') !== null && document.querySelector('.flash').textContent.includes('queued again')`)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		v, _ := c.eval(`document.querySelectorAll('#delivery-backend .replayed').length`)
		if string(v) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replayed attempt is not marked")
		}
		if _, err := c.eval(`location.reload(); true`); err != nil {
			t.Fatal(err)
		}
		waitJS(t, c, "event page reloaded", `document.readyState === 'complete' && !!document.querySelector('#event-id')`)
	}
	if _, err := c.eval(`document.querySelectorAll('details.exchange').forEach(d => d.open = true); true`); err != nil {
		t.Fatal(err)
	}
	screenshot(t, c, "event-request.png")

	// Dead letters in groups: replay a group, follow it to its outcome.
	bg.healed.Store(false)
	bg.post(t, "evt_story_again", "customer.subscription.created", subscription("sub_story2", "user-dead", "active"), "", true)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		navigate(t, c, bg.url+"/admin/dead")
		waitJS(t, c, "dead-letter page", `document.readyState === 'complete' && !!document.querySelector('#bulk-count')`)
		if v, _ := c.eval(`document.querySelectorAll('table.groups tr.group').length`); string(v) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead-letter group")
		}
	}
	if v, _ := c.eval(`document.querySelector('tr.group .group-count').textContent.trim() === '1' && document.querySelector('tr.group pre.response').textContent.includes('unknown customer')`); string(v) != "true" {
		t.Error("the group lacks its count or response body")
	}
	screenshot(t, c, "dead.png")
	bg.healed.Store(true)
	click(t, c, "tr.group .group-replay")
	waitJS(t, c, "group count", `!!document.querySelector('#dry-run-count') && document.querySelector('#dry-run-count').textContent.includes('1 dead deliveries match at analytics')`)
	click(t, c, "#bulk-confirm")
	waitJS(t, c, "bulk started", `document.querySelector('.flash') !== null && document.querySelector('.flash').textContent.includes('1 deliveries')`)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		navigate(t, c, bg.url+"/admin/dead")
		waitJS(t, c, "dead-letter page", `document.readyState === 'complete' && !!document.querySelector('#bulk-count')`)
		v, _ := c.eval(`[...document.querySelectorAll('tr.job')].some(r => r.querySelector('.job-done') && r.querySelector('.outcome').textContent.includes('1 delivered'))`)
		if string(v) == "true" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bulk replay does not report its outcome")
		}
	}

	// The held destination says why; Resume sends its work.
	navigate(t, c, bg.url+"/admin/destinations")
	waitJS(t, c, "held partner", `!!document.querySelector('#dest-partner .held') && document.querySelector('#dest-partner .held').innerText.includes('HTTP 401') && document.querySelector('#dest-partner .held').innerText.includes('invalid api key')`)
	if v, _ := c.eval(`document.querySelector('#dest-partner .held-since').textContent.trim() !== '—' && document.querySelector('#dest-partner .held-probe').textContent.trim() !== ''`); string(v) != "true" {
		t.Error("held partner lacks since or next probe")
	}
	screenshot(t, c, "destinations-held.png")
	click(t, c, "#reload")
	waitJS(t, c, "configuration reloaded", `document.querySelector('.flash') !== null && document.querySelector('.flash').textContent.includes('Configuration reloaded. Applied to: backend, analytics, branch, partner.')`)
	bg.partnerOK.Store(true)
	click(t, c, "#dest-partner button.resume")
	waitJS(t, c, "resumed", `document.querySelector('.flash') !== null && document.querySelector('.flash').textContent.includes('partner resumed')`)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		navigate(t, c, bg.url+"/admin/deliveries?destination=partner&state=pending&state=retrying&state=held")
		waitJS(t, c, "partner log", `document.readyState === 'complete' && !!document.querySelector('#log-total')`)
		if v, _ := c.eval(`document.querySelectorAll('tr.log-row').length`); string(v) == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("partner's work is still queued after Resume")
		}
	}
}

// TestBrowserLive: a live page picks up new work by itself (a meta
// refresh: no script, the CSP unchanged), and the user can pause it.
func TestBrowserLive(t *testing.T) {
	c := browser(t)
	bg := startBrowserGateway(t, time.Second)
	bg.post(t, "evt_live_1", "customer.subscription.created", subscription("sub_live1", "user-live", "active"), "", true)
	navigate(t, c, bg.url+"/admin/")
	waitJS(t, c, "login form", `!!document.querySelector('#token')`)
	if _, err := c.eval(`document.querySelector('#token').value = ` + jsString(browserToken) + `; document.querySelector('#login').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "overview", `location.pathname === '/admin/' && !!document.querySelector('#live-toggle')`)
	navigate(t, c, bg.url+"/admin/deliveries?q=user-live")
	waitJS(t, c, "first event's deliveries", `document.readyState === 'complete' && document.querySelectorAll('tr.log-row').length >= 1`)
	first, _ := c.eval(`document.querySelectorAll('tr.log-row').length`)
	// Another event arrives; the page shows it without being navigated.
	bg.post(t, "evt_live_2", "customer.subscription.created", subscription("sub_live2", "user-live", "active"), "", true)
	waitJS(t, c, "the new event's deliveries, live", `document.querySelectorAll('tr.log-row').length > `+string(first))
	if v, _ := c.eval(`document.querySelector('meta[http-equiv="refresh"]').content`); string(v) != `"1"` {
		t.Errorf("refresh %s, want 1", v)
	}
	click(t, c, "#live-toggle")
	waitJS(t, c, "paused", `location.search.includes('live=0') && !document.querySelector('meta[http-equiv="refresh"]') && document.querySelector('#live-toggle').textContent.includes('paused')`)
}
