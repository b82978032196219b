package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// visitor is a browser-like HTTP client: cookies kept, redirects not
// followed (so tests see them).
type visitor struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newVisitor(t *testing.T, base string) *visitor {
	jar, _ := cookiejar.New(nil)
	return &visitor{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (v *visitor) do(method, path string, form url.Values) (*http.Response, string) {
	v.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, v.base+path, body)
	if err != nil {
		v.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := v.c.Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func csrfOf(t *testing.T, html string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no CSRF token in page:\n%s", html)
	}
	return m[1]
}

// login logs v in and returns the session's CSRF token.
func (v *visitor) login(t *testing.T) string {
	t.Helper()
	_, page := v.do(http.MethodGet, "/admin/login", nil)
	resp, _ := v.do(http.MethodPost, "/admin/login", url.Values{"csrf": {csrfOf(t, page)}, "token": {browserToken}, "next": {"/admin/events"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/events" {
		t.Fatalf("login: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, page = v.do(http.MethodGet, "/admin/", nil)
	return csrfOf(t, page)
}

func TestConsoleLogin(t *testing.T) {
	bg := startBrowserGateway(t, 0)

	t.Run("pages need a session", func(t *testing.T) {
		v := newVisitor(t, bg.url)
		for _, p := range []string{"/admin/", "/admin/events?user=x", "/admin/events/evt_1", "/admin/dead", "/admin/destinations"} {
			resp, _ := v.do(http.MethodGet, p, nil)
			if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/admin/login?next=") {
				t.Errorf("%s: HTTP %d to %q, want a redirect to the login", p, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
		resp, _ := v.do(http.MethodPost, "/admin/replay", url.Values{"key": {"x"}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST without a session: HTTP %d, want 401", resp.StatusCode)
		}
		resp, _ = v.do(http.MethodGet, "/admin", nil)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/admin/" {
			t.Errorf("/admin: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	for _, tc := range []struct {
		name   string
		csrf   func(page string) string
		token  string
		status int
	}{
		{"no csrf", func(string) string { return "" }, browserToken, http.StatusForbidden},
		{"wrong csrf", func(string) string { return "forged" }, browserToken, http.StatusForbidden},
		{"no token", nil, "", http.StatusUnauthorized},
		{"wrong token", nil, browserToken + "x", http.StatusUnauthorized},
		{"right token", nil, browserToken, http.StatusSeeOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVisitor(t, bg.url)
			resp, page := v.do(http.MethodGet, "/admin/login", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("login page: HTTP %d", resp.StatusCode)
			}
			tok := csrfOf(t, page)
			if tc.csrf != nil {
				tok = tc.csrf(page)
			}
			resp, body := v.do(http.MethodPost, "/admin/login", url.Values{"csrf": {tok}, "token": {tc.token}})
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if strings.Contains(body, browserToken) {
				t.Error("page echoes the admin token")
			}
			var session *http.Cookie
			for _, c := range resp.Cookies() {
				if c.Name == "postback_session" && c.Value != "" {
					session = c
				}
			}
			if (session != nil) != (tc.status == http.StatusSeeOther) {
				t.Fatalf("session cookie %v after HTTP %d", session, resp.StatusCode)
			}
			if session != nil && (!session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/admin/") {
				t.Errorf("session cookie attributes %+v", session)
			}
		})
	}

	t.Run("next stays inside the console", func(t *testing.T) {
		for next, want := range map[string]string{
			"/admin/dead":         "/admin/dead",
			"https://evil.test/":  "/admin/",
			"//evil.test/admin/":  "/admin/",
			"/\\evil.test/admin/": "/admin/",
			"/metrics":            "/admin/",
		} {
			v := newVisitor(t, bg.url)
			_, page := v.do(http.MethodGet, "/admin/login", nil)
			resp, _ := v.do(http.MethodPost, "/admin/login", url.Values{"csrf": {csrfOf(t, page)}, "token": {browserToken}, "next": {next}})
			if got := resp.Header.Get("Location"); got != want {
				t.Errorf("next %q: redirected to %q, want %q", next, got, want)
			}
		}
	})

	t.Run("session expires", func(t *testing.T) {
		v := newVisitor(t, bg.url)
		v.login(t)
		bg.offset.Store(int64(-13 * time.Hour)) // the clock jumps 13 h ahead
		defer bg.offset.Store(0)
		resp, _ := v.do(http.MethodGet, "/admin/", nil)
		if resp.StatusCode != http.StatusFound {
			t.Errorf("after 13 idle hours: HTTP %d, want a redirect to the login", resp.StatusCode)
		}
	})

	t.Run("logout", func(t *testing.T) {
		v := newVisitor(t, bg.url)
		csrf := v.login(t)
		if resp, _ := v.do(http.MethodPost, "/admin/logout", url.Values{}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("logout without CSRF: HTTP %d, want 403", resp.StatusCode)
		}
		resp, _ := v.do(http.MethodPost, "/admin/logout", url.Values{"csrf": {csrf}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: HTTP %d", resp.StatusCode)
		}
		resp, _ = v.do(http.MethodGet, "/admin/", nil)
		if resp.StatusCode != http.StatusFound {
			t.Errorf("after logout: HTTP %d, want a redirect to the login", resp.StatusCode)
		}
	})
}

func TestConsolePages(t *testing.T) {
	bg := startBrowserGateway(t, 0)
	bg.post(t, "evt_p1", "customer.subscription.created", subscription("sub_p1", "user-dead", "active"), "", true)
	v := newVisitor(t, bg.url)
	csrf := v.login(t)
	// Wait until the delivery to analytics is dead.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, page := v.do(http.MethodGet, "/admin/dead", nil)
		if strings.Contains(page, "http_422") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead delivery")
		}
	}
	_, events := v.do(http.MethodGet, "/admin/events", nil)
	id := regexp.MustCompile(`/admin/events/(evt_[0-9a-f]+)`).FindStringSubmatch(events)
	if id == nil {
		t.Fatalf("no event link in %s", events)
	}

	for _, tc := range []struct {
		name, method, path string
		form               url.Values
		status             int
		contains           string
	}{
		{"overview", "GET", "/admin/", nil, 200, "Events per hour by type"},
		{"events", "GET", "/admin/events", nil, 200, "subscription_started"},
		{"events filtered", "GET", "/admin/events?user=user-dead&type=subscription_started&since=1h", nil, 200, id[1][:14]},
		{"events no match", "GET", "/admin/events?user=nobody", nil, 200, "No events match."},
		{"events bad type", "GET", "/admin/events?type=bogus", nil, 400, "unknown event type"},
		{"events bad since", "GET", "/admin/events?since=soon", nil, 400, "is not a time"},
		{"event", "GET", "/admin/events/" + id[1], nil, 200, "HTTP 422"},
		{"event unknown", "GET", "/admin/events/evt_nope", nil, 404, "There is no event"},
		{"dead", "GET", "/admin/dead?destination=analytics", nil, 200, "http_422"},
		{"dead bad until", "GET", "/admin/dead?until=later", nil, 400, "is not a time"},
		{"destinations", "GET", "/admin/destinations", nil, 200, "Send test event"},
		{"unknown page", "GET", "/admin/nothing", nil, 404, "no such page"},
		{"static css", "GET", "/admin/static/style.css", nil, 200, "--brand"},
		{"replay without csrf", "POST", "/admin/replay", url.Values{"key": {id[1] + "|analytics"}}, 403, "security token"},
		{"replay unknown", "POST", "/admin/replay", url.Values{"csrf": {csrf}, "key": {"evt_nope|analytics"}}, 404, "There is no delivery"},
		{"bulk without csrf", "POST", "/admin/replay/bulk", url.Values{}, 403, "security token"},
		{"bulk dry run", "POST", "/admin/replay/bulk", url.Values{"csrf": {csrf}, "destination": {"analytics"}}, 200, "<strong>1</strong> dead deliveries match"},
		{"bulk dry run bad since", "POST", "/admin/replay/bulk", url.Values{"csrf": {csrf}, "since": {"x"}}, 400, "is not a time"},
		{"test event without csrf", "POST", "/admin/destinations/backend/test", url.Values{}, 403, "security token"},
		{"test event unknown", "POST", "/admin/destinations/nowhere/test", url.Values{"csrf": {csrf}}, 404, "There is no destination"},
		{"deliveries", "GET", "/admin/deliveries", nil, 200, "http_422"},
		{"deliveries search", "GET", "/admin/deliveries?q=user-dead&state=dead", nil, 200, "1–1 of 1"},
		{"deliveries bad state", "GET", "/admin/deliveries?state=lost", nil, 400, "unknown state"},
		{"deliveries export csv", "GET", "/admin/deliveries/export?format=csv&state=dead", nil, 200, ",analytics,dead,"},
		{"deliveries export json", "GET", "/admin/deliveries/export?format=json", nil, 200, `"shown_state"`},
		{"deliveries export bad format", "GET", "/admin/deliveries/export?format=xml", nil, 400, "format=csv"},
		{"dead groups", "GET", "/admin/dead", nil, 200, `group-count"><strong>1</strong>`},
		{"resume without csrf", "POST", "/admin/destinations/backend/resume", url.Values{}, 403, "security token"},
		{"resume unknown", "POST", "/admin/destinations/nowhere/resume", url.Values{"csrf": {csrf}}, 404, "There is no destination"},
		{"replay delivered asks first", "POST", "/admin/replay", url.Values{"csrf": {csrf}, "key": {id[1] + "|backend"}}, 200, "counts it twice"},
		{"live page reloads", "GET", "/admin/deliveries", nil, 200, `<meta http-equiv="refresh" content="10">`},
		{"reload without a file", "POST", "/admin/reload", url.Values{"csrf": {csrf}}, 303, ""},
		{"reload without csrf", "POST", "/admin/reload", url.Values{}, 403, "security token"},
		{"live page paused", "GET", "/admin/deliveries?live=0", nil, 200, "Live updates paused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := v.do(tc.method, tc.path, tc.form)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.contains) {
				t.Errorf("HTTP %d, want %d containing %q:\n%s", resp.StatusCode, tc.status, tc.contains, body)
			}
			if tc.method == "GET" && resp.Header.Get("Content-Security-Policy") == "" {
				t.Error("no Content-Security-Policy")
			}
			if strings.Contains(body, "someone@example.com") {
				t.Error("page shows a raw email")
			}
		})
	}

	t.Run("replay then bulk", func(t *testing.T) {
		bg.healed.Store(true)
		resp, _ := v.do(http.MethodPost, "/admin/replay", url.Values{"csrf": {csrf}, "key": {id[1] + "|analytics"}, "back": {"/admin/events/" + id[1]}})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/events/"+id[1] {
			t.Fatalf("replay: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, page := v.do(http.MethodGet, "/admin/events/"+id[1], nil)
			if !strings.Contains(page, `state">dead`) && strings.Count(page, `state">delivered`) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replayed delivery not delivered:\n%s", page)
			}
		}
		resp, _ = v.do(http.MethodPost, "/admin/replay/bulk", url.Values{"csrf": {csrf}, "confirm": {"yes"}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("bulk: HTTP %d", resp.StatusCode)
		}
		_, page := v.do(http.MethodGet, "/admin/dead", nil)
		if !strings.Contains(page, "Replay 1 started: 0 deliveries") {
			t.Errorf("no flash for the bulk replay:\n%s", page)
		}
	})

	t.Run("test event", func(t *testing.T) {
		resp, _ := v.do(http.MethodPost, "/admin/destinations/backend/test", url.Values{"csrf": {csrf}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("HTTP %d", resp.StatusCode)
		}
		_, page := v.do(http.MethodGet, "/admin/destinations", nil)
		if !strings.Contains(page, `<div class="flash" role="status">Test event to backend: passed, delivered (HTTP 200)`) {
			t.Errorf("no green test result:\n%s", page)
		}
	})

	// A destination whose test reached no validation path (Branch without
	// a key_test_ key) is shown in red, never as a success.
	t.Run("untested test event is red", func(t *testing.T) {
		resp, _ := v.do(http.MethodPost, "/admin/destinations/branch/test", url.Values{"csrf": {csrf}})
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("HTTP %d", resp.StatusCode)
		}
		_, page := v.do(http.MethodGet, "/admin/destinations", nil)
		if !strings.Contains(page, `<div class="flash alert" role="alert">Test event to branch: NOT TESTED, skipped, not_tested: add sandbox: {branch_key: key_test_...}`) {
			t.Errorf("no red untested result:\n%s", page)
		}
		if !strings.Contains(page, "Test mode: Liveview") {
			t.Errorf("the result does not say where to look:\n%s", page)
		}
	})
}
