package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/config"
)

const (
	authAdminToken = "admin-token-for-throttle-tests-0123456789"
	authAPIKey     = "api-key-for-throttle-tests-0123456789"
)

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// authGateway runs a gateway with the admin API, the console and the /v1
// API on a clock the test moves.
func authGateway(t *testing.T, extraServer string, logs io.Writer) (*testGateway, *stepClock) {
	t.Helper()
	y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 1s%s}
storage: {path: %q}
admin: {token: %q}
api_keys: [%q]
sources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: false}}
`, extraServer, t.TempDir()+"/pb.db", authAdminToken, authAPIKey)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	clock := &stepClock{t: time.Now().UTC()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{Logger: NewLogger(logs, config.Log{Level: "info"}, cfg.Secrets()), Listener: ln, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{g: g, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx, nil) }()
	t.Cleanup(tg.stop)
	return tg, clock
}

func authRequest(t *testing.T, method, u, auth string, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func metricLine(t *testing.T, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

// Issue 15, item 8: guesses of the admin token and of API keys are held
// back per address, with a metric; X-Forwarded-For from an untrusted peer
// does not give a new address.
func TestAuthGuessesThrottled(t *testing.T) {
	for _, realm := range []struct{ name, path, right string }{
		{"admin", "/admin/api/destinations", "Bearer " + authAdminToken},
		{"api", "/v1/users/u-1", "Bearer " + authAPIKey},
	} {
		t.Run(realm.name, func(t *testing.T) {
			tg, clock := authGateway(t, "", nil)
			u := tg.url + realm.path
			for i := 0; i < 6; i++ {
				// Each guess claims another client: untrusted, ignored.
				spoof := map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i), "X-Real-IP": fmt.Sprintf("198.51.100.%d", i)}
				if resp := authRequest(t, http.MethodGet, u, fmt.Sprintf("Bearer guess-%d", i), spoof); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("guess %d: status %d, want 401", i, resp.StatusCode)
				}
			}
			resp := authRequest(t, http.MethodGet, u, realm.right, nil)
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("after 6 guesses: status %d Retry-After %q, want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if got := metricLine(t, tg.url, `postback_auth_failures_total{realm="`+realm.name+`"}`); !strings.HasSuffix(got, " 6") {
				t.Errorf("failures metric: %q, want 6", got)
			}
			if got := metricLine(t, tg.url, `postback_auth_throttled_total{realm="`+realm.name+`"}`); !strings.HasSuffix(got, " 1") {
				t.Errorf("throttled metric: %q, want 1", got)
			}
			// Each further guess doubles the hold.
			clock.Add(time.Second)
			authRequest(t, http.MethodGet, u, "Bearer guess-again", nil)
			if resp := authRequest(t, http.MethodGet, u, realm.right, nil); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
				t.Fatalf("after a 7th guess: status %d Retry-After %q, want 429 and 2", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			clock.Add(2 * time.Second)
			if resp := authRequest(t, http.MethodGet, u, realm.right, nil); resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusUnauthorized {
				t.Fatalf("after the hold with the right token: status %d", resp.StatusCode)
			}
		})
	}
}

// The console's login form shares the admin token's throttle.
func TestConsoleLoginGuessesThrottled(t *testing.T) {
	tg, clock := authGateway(t, "", nil)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	csrfRE := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	login := func(token string) *http.Response {
		t.Helper()
		resp, err := client.Get(tg.url + "/admin/login")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := csrfRE.FindSubmatch(page)
		if m == nil {
			t.Fatalf("no csrf token in the login page")
		}
		resp, err = client.PostForm(tg.url+"/admin/login", url.Values{"csrf": {string(m[1])}, "token": {token}})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := 0; i < 6; i++ {
		if resp := login(fmt.Sprintf("guess-%d", i)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: status %d, want 401", i, resp.StatusCode)
		}
	}
	if resp := login(authAdminToken); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("held back: status %d, want 429 with Retry-After", resp.StatusCode)
	}
	// The same address is held back on the admin API too.
	if resp := authRequest(t, http.MethodGet, tg.url+"/admin/api/destinations", "Bearer "+authAdminToken, nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("admin API while held back: status %d, want 429", resp.StatusCode)
	}
	if got := metricLine(t, tg.url, `postback_auth_failures_total{realm="console"}`); !strings.HasSuffix(got, " 6") {
		t.Errorf("failures metric: %q, want 6", got)
	}
	clock.Add(time.Second)
	if resp := login(authAdminToken); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right token after the hold: status %d, want 303", resp.StatusCode)
	}
}

// Issue 15, item 9: /admin and /v1 parse "Authorization: Bearer" the same
// way.
func TestBearerParsingSameForAdminAndAPI(t *testing.T) {
	tg, _ := authGateway(t, "", nil)
	for _, form := range []struct {
		name, header string
		ok           bool
	}{
		{"canonical", "Bearer %s", true},
		{"lower-case scheme", "bearer %s", true},
		{"extra spaces", "Bearer    %s  ", true},
		{"basic scheme", "Basic %s", false},
		{"no space", "Bearer%s", false},
		{"two tokens", "Bearer %s extra", false},
		{"token prefix", "Bearer %.10s", false},
	} {
		for _, realm := range []struct{ path, token string }{
			{"/admin/api/destinations", authAdminToken}, {"/v1/users/u-1", authAPIKey},
		} {
			resp := authRequest(t, http.MethodGet, tg.url+realm.path, fmt.Sprintf(form.header, realm.token), nil)
			if got := resp.StatusCode != http.StatusUnauthorized; got != form.ok {
				t.Errorf("%s on %s: status %d, want accepted=%v", form.name, realm.path, resp.StatusCode, form.ok)
			}
			if !form.ok && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("%s on %s: WWW-Authenticate %q", form.name, realm.path, resp.Header.Get("WWW-Authenticate"))
			}
			// A success forgets the failures, so the throttle stays out of
			// this test.
			authRequest(t, http.MethodGet, tg.url+realm.path, "Bearer "+realm.token, nil)
		}
	}
}

// Issue 15, item 6: X-Forwarded-For names the client only when the peer is
// a trusted proxy; then two clients behind it are throttled apart and
// logged by their own address.
func TestTrustedProxies(t *testing.T) {
	var logs safeBuffer
	tg, _ := authGateway(t, `, trusted_proxies: ["127.0.0.1/32", "::1"]`, &logs)
	u := tg.url + "/admin/api/destinations"
	for i := 0; i < 6; i++ {
		authRequest(t, http.MethodGet, u, "Bearer guess", map[string]string{"X-Forwarded-For": "203.0.113.5, 127.0.0.1"})
	}
	if resp := authRequest(t, http.MethodGet, u, "Bearer "+authAdminToken, map[string]string{"X-Forwarded-For": "203.0.113.5"}); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the guessing client behind the proxy: status %d, want 429", resp.StatusCode)
	}
	if resp := authRequest(t, http.MethodGet, u, "Bearer "+authAdminToken, map[string]string{"X-Forwarded-For": "203.0.113.6"}); resp.StatusCode != http.StatusOK {
		t.Errorf("another client behind the proxy: status %d, want 200", resp.StatusCode)
	}
	// A client cannot prepend its own choice: the rightmost untrusted hop
	// is the client.
	if resp := authRequest(t, http.MethodGet, u, "Bearer "+authAdminToken, map[string]string{"X-Forwarded-For": "203.0.113.77, 203.0.113.5"}); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("spoofed left-most hop: status %d, want 429", resp.StatusCode)
	}
	if resp := authRequest(t, http.MethodGet, u, "Bearer "+authAdminToken, map[string]string{"X-Real-IP": "203.0.113.5"}); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("X-Real-IP from the proxy: status %d, want 429", resp.StatusCode)
	}
	tg.stop()
	if !strings.Contains(logs.String(), "remote=203.0.113.5") || !strings.Contains(logs.String(), "remote=203.0.113.6") {
		t.Errorf("request log does not name the clients behind the proxy:\n%s", logs.String())
	}
}

func TestClientIPWithoutTrustedProxies(t *testing.T) {
	var ignored []string
	f := clientIP(nil, func(peer string) { ignored = append(ignored, peer) })
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "192.0.2.1:4444"
	req.Header.Set("X-Forwarded-For", "203.0.113.1")
	req.Header.Set("X-Real-IP", "203.0.113.2")
	if got := f(req); got != "192.0.2.1" {
		t.Errorf("clientIP = %q, want the peer", got)
	}
	if len(ignored) != 1 || ignored[0] != "192.0.2.1" {
		t.Errorf("ignored headers reported for %v, want [192.0.2.1]", ignored)
	}
	trusted := clientIP(mustPrefixes(t, "192.0.2.0/24"))
	req.Header.Set("X-Forwarded-For", "not-an-ip, 203.0.113.9")
	if got := trusted(req); got != "203.0.113.9" {
		t.Errorf("clientIP = %q, want 203.0.113.9", got)
	}
	req.Header.Set("X-Forwarded-For", "203.0.113.9, garbage")
	if got := trusted(req); got != "192.0.2.1" {
		t.Errorf("clientIP with a garbled last hop = %q, want the proxy itself", got)
	}
}

func mustPrefixes(t *testing.T, cidrs ...string) []netip.Prefix {
	t.Helper()
	p, err := config.Server{TrustedProxies: cidrs}.TrustedPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Issue 15, item 7: with a separate admin listener, /metrics is served
// there and not on the public listener, unless admin.public_metrics.
func TestMetricsOnAdminListener(t *testing.T) {
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public_metrics=%v", public), func(t *testing.T) {
			y := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 1s}
storage: {path: %q}
admin: {token: %q, public_metrics: %v}
sources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: false}}
`, t.TempDir()+"/pb.db", authAdminToken, public)
			cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			aln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			g, err := New(cfg, Options{Logger: NewLogger(io.Discard, config.Log{Level: "info"}, nil), Listener: ln, AdminListener: aln})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			tg := &testGateway{g: g, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
			go func() { tg.done <- g.Run(ctx, nil) }()
			t.Cleanup(tg.stop)
			waitFor(t, "ready", func() bool {
				resp, err := http.Get(tg.url + "/healthz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
			want := map[string]int{"http://" + aln.Addr().String(): http.StatusOK, tg.url: http.StatusNotFound}
			if public {
				want[tg.url] = http.StatusOK
			}
			for base, code := range want {
				resp, err := http.Get(base + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != code {
					t.Errorf("%s/metrics: HTTP %d, want %d", base, resp.StatusCode, code)
				}
			}
		})
	}
}

// A forwarded-for header from a peer that is not a trusted proxy is
// ignored, and the operator is told once.
func TestUntrustedForwardedForIsReportedOnce(t *testing.T) {
	var logs safeBuffer
	tg, _ := authGateway(t, "", &logs)
	for i := 0; i < 3; i++ {
		authRequest(t, http.MethodGet, tg.url+"/no-such-page", "", map[string]string{"X-Forwarded-For": "203.0.113.50"})
	}
	tg.stop()
	out := logs.String()
	if n := strings.Count(out, "not in server.trusted_proxies"); n != 1 {
		t.Errorf("warning logged %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "203.0.113.50") {
		t.Errorf("the spoofed address was logged as the client:\n%s", out)
	}
}
