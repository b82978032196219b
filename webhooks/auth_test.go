package webhooks

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header, want string
		ok           bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"Bearer   abc  ", "abc", true},
		{"  Bearer abc", "abc", true},
		{"", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearer    ", "", false},
		{"Basic abc", "", false},
		{"Bearerabc", "", false},
		{"Bearer a b", "", false},
		{"Token abc", "", false},
	}
	for _, tt := range tests {
		got, ok := BearerToken(tt.header)
		if got != tt.want || ok != tt.ok {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

func TestTokenSet(t *testing.T) {
	s := NewTokenSet("first-key-0123456789", " ", "", "second-key")
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2 (blank tokens dropped)", s.Len())
	}
	for tok, want := range map[string]bool{
		"first-key-0123456789": true, "second-key": true, "first-key": false, "first-key-0123456789x": false,
		"": false, "SECOND-KEY": false,
	} {
		if got := s.Match(tok); got != want {
			t.Errorf("Match(%q) = %v, want %v", tok, got, want)
		}
	}
	if NewTokenSet().Match("") {
		t.Errorf("an empty set matched the empty token")
	}
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestThrottleBackoff(t *testing.T) {
	clock := &testClock{t: testNow}
	var failures, throttled int
	th := NewThrottle(ThrottleOptions{Free: 3, Base: time.Second, Max: 10 * time.Second, Now: clock.Now,
		OnFailure: func(string) { failures++ }, OnThrottle: func(string) { throttled++ }})
	const addr = "198.51.100.7:5555"
	for i := 0; i < 3; i++ {
		if _, ok := th.Allow("api", addr); !ok {
			t.Fatalf("held back after %d failures, want %d free", i, 3)
		}
		th.Fail("api", addr)
	}
	if _, ok := th.Allow("api", addr); !ok {
		t.Fatalf("held back after the free failures, before one more")
	}
	// Holds double: 1s, 2s, 4s, 8s, then the 10s cap.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		th.Fail("api", addr)
		wait, ok := th.Allow("api", "198.51.100.7") // the port does not matter
		if ok || wait != want {
			t.Fatalf("after failure %d: wait %v ok %v, want %v", 4+i, wait, ok, want)
		}
		clock.Add(want)
		if _, ok := th.Allow("api", addr); !ok {
			t.Fatalf("still held after the hold of %v", want)
		}
	}
	if failures != 9 || throttled != 6 {
		t.Errorf("callbacks: %d failures, %d throttled; want 9 and 6", failures, throttled)
	}
	th.Succeed(addr)
	if th.Len() != 0 {
		t.Errorf("a success did not forget the address")
	}
	// Another address is not affected by this one.
	th.Fail("api", "198.51.100.8")
	if _, ok := th.Allow("api", "198.51.100.9"); !ok {
		t.Errorf("an innocent address is held back")
	}
}

func TestThrottleGroupsIPv6By64(t *testing.T) {
	th := NewThrottle(ThrottleOptions{Free: 1, Now: (&testClock{t: testNow}).Now})
	th.Fail("admin", "[2001:db8:1:2::1]:443")
	th.Fail("admin", "2001:db8:1:2:ffff::9")
	if _, ok := th.Allow("admin", "2001:db8:1:2:aaaa::5"); ok {
		t.Errorf("another address of the same /64 escaped the hold")
	}
	if _, ok := th.Allow("admin", "2001:db8:1:3::1"); !ok {
		t.Errorf("another /64 is held back")
	}
	if _, ok := th.Allow("admin", "::ffff:192.0.2.1"); !ok {
		t.Errorf("a v4-mapped address is held back")
	}
}

// An attacker with many addresses cannot grow the table past its capacity;
// the address that failed least recently is forgotten first.
func TestThrottleMemoryIsBounded(t *testing.T) {
	th := NewThrottle(ThrottleOptions{Free: 1, Capacity: 100, Now: (&testClock{t: testNow}).Now})
	th.Fail("api", "192.0.2.1")
	th.Fail("api", "192.0.2.1") // held
	for i := 0; i < 10000; i++ {
		th.Fail("api", "10.0."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256))
		if i == 50 {
			th.Fail("api", "192.0.2.1") // fails again: most recent
		}
		if th.Len() > 100 {
			t.Fatalf("table grew to %d addresses, capacity 100", th.Len())
		}
	}
	if th.Len() != 100 {
		t.Errorf("table holds %d addresses, want 100", th.Len())
	}
	th.Fail("api", "10.0.39.15") // the last one, second failure: held
	if _, ok := th.Allow("api", "10.0.39.15"); ok {
		t.Errorf("a recent failing address was forgotten")
	}
	if _, ok := th.Allow("api", "192.0.2.1"); !ok {
		t.Errorf("the least recent address was kept over newer ones")
	}
}

func TestNilThrottleAllows(t *testing.T) {
	var th *Throttle
	th.Fail("api", "192.0.2.1")
	th.Succeed("192.0.2.1")
	if _, ok := th.Allow("api", "192.0.2.1"); !ok {
		t.Errorf("a nil throttle held back")
	}
}

// Guessing API keys through the real /v1 handler: after the free failures
// the address is answered 429 with Retry-After, even with the right key,
// until the hold ends.
func TestCustomAPIKeyGuessesThrottled(t *testing.T) {
	clock := &testClock{t: testNow}
	h := NewCustom(testDeps(&fakeIngester{}, nil), failingUsers{}, []string{"the-right-api-key-0123"}, 720*time.Hour)
	h.Throttle = NewThrottle(ThrottleOptions{Free: 2, Base: 30 * time.Second, Now: clock.Now})
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		we := AsError(err)
		_ = c.JSON(we.Status, we.Body())
	}
	h.Mount(e)
	do := func(auth, from string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodDelete, "/v1/users/u-1", nil)
		req.RemoteAddr = from + ":1234"
		req.Header.Set("X-Forwarded-For", "203.0.113.99") // ignored: e has no trusted proxy
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	e.IPExtractor = echo.ExtractIPDirect()
	for i, auth := range []string{"Bearer wrong-1", "", "Basic the-right-api-key-0123"} {
		if rec := do(auth, "192.0.2.10"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("guess %d: status %d, want 401", i, rec.Code)
		}
	}
	rec := do("Bearer the-right-api-key-0123", "192.0.2.10")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "30" {
		t.Fatalf("held back: status %d Retry-After %q, want 429 and 30", rec.Code, rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(rec.Body.String(), CodeThrottled) || strings.Contains(rec.Body.String(), "the-right-api-key") {
		t.Errorf("429 body = %s", rec.Body)
	}
	// Served: the (failing) store answers 503, past authentication.
	if rec := do("Bearer the-right-api-key-0123", "192.0.2.11"); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("another address: status %d, want it served (503 from the store)", rec.Code)
	}
	clock.Add(30 * time.Second)
	if rec := do("Bearer the-right-api-key-0123", "192.0.2.10"); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("after the hold: status %d, want it served (503 from the store)", rec.Code)
	}
	if h.Throttle.Len() != 0 {
		t.Errorf("a success did not forget the address")
	}
}
