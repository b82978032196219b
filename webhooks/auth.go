package webhooks

import (
	"container/list"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// BearerToken reads the token of an "Authorization: Bearer <token>" header,
// the one parser of the admin API and the /v1 API. The scheme is matched
// case-insensitively (RFC 9110 section 11.1), spaces around the token are
// ignored; ok is false without the header, with another scheme, or with an
// empty token.
func BearerToken(header string) (token string, ok bool) {
	scheme, rest, found := strings.Cut(strings.TrimSpace(header), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(rest)
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

// TokenSet holds the SHA-256 digests of accepted secrets (the admin token,
// API keys). A presented token is hashed and compared with every digest in
// constant time: neither the time nor the answer tells which key matched or
// how long any key is.
type TokenSet struct {
	digests [][sha256.Size]byte
}

// NewTokenSet builds a set of the non-empty tokens, trimmed.
func NewTokenSet(tokens ...string) TokenSet {
	var s TokenSet
	for _, t := range tokens {
		if t = strings.TrimSpace(t); t != "" {
			s.digests = append(s.digests, sha256.Sum256([]byte(t)))
		}
	}
	return s
}

// Len is the number of accepted tokens.
func (s TokenSet) Len() int { return len(s.digests) }

// Match reports whether token is one of the set.
func (s TokenSet) Match(token string) bool {
	got := sha256.Sum256([]byte(token))
	ok := 0
	for i := range s.digests {
		ok |= subtle.ConstantTimeCompare(got[:], s.digests[i][:])
	}
	return ok == 1 && token != ""
}

// ErrThrottled reports a client held back after failed guesses.
var ErrThrottled = errors.New("too many failed authentication attempts from this address")

// CodeThrottled is the error code of a throttled request (429).
const CodeThrottled = "too_many_attempts"

// ThrottleOptions tune a Throttle; zero values get defaults.
type ThrottleOptions struct {
	// Free is the number of failures an address may make before it is
	// held back (default 5): an operator mistyping a token is not blocked.
	Free int
	// Base is the first hold (default 1s); each further failure doubles it
	// up to Max (default 15m).
	Base, Max time.Duration
	// Capacity bounds the addresses remembered (default 10000). When full,
	// the address that failed least recently is forgotten, so memory stays
	// bounded whatever number of addresses an attacker uses.
	Capacity int
	// Now is the clock (tests inject one; default time.Now).
	Now func() time.Time
	// OnThrottle is called for each request refused while held back, with
	// the realm (metrics).
	OnThrottle func(realm string)
	// OnFailure is called for each failed attempt, with the realm.
	OnFailure func(realm string)
}

// Throttle holds back addresses that keep failing authentication (admin
// token, console login, API keys): after Free failures each further attempt
// must wait an exponentially growing hold, answered 429 with Retry-After
// without checking the guess. A success forgets the address. IPv6
// addresses are grouped by /64, what one client usually holds. Safe for
// concurrent use.
type Throttle struct {
	o     ThrottleOptions
	mu    sync.Mutex
	lru   *list.List // of *throttleEntry, most recent failure first
	addrs map[string]*list.Element
}

type throttleEntry struct {
	key   string
	fails int
	until time.Time
}

// NewThrottle builds a Throttle. A nil *Throttle allows everything.
func NewThrottle(o ThrottleOptions) *Throttle {
	if o.Free <= 0 {
		o.Free = 5
	}
	if o.Base <= 0 {
		o.Base = time.Second
	}
	if o.Max <= 0 {
		o.Max = 15 * time.Minute
	}
	if o.Capacity <= 0 {
		o.Capacity = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Throttle{o: o, lru: list.New(), addrs: map[string]*list.Element{}}
}

// throttleKey groups an address: IPv4 as is, IPv6 by /64.
func throttleKey(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// Allow reports whether addr may try now; when not, it returns how long
// until it may.
func (t *Throttle) Allow(realm, addr string) (time.Duration, bool) {
	if t == nil {
		return 0, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.addrs[throttleKey(addr)]
	if !ok {
		return 0, true
	}
	wait := el.Value.(*throttleEntry).until.Sub(t.o.Now())
	if wait <= 0 {
		return 0, true
	}
	if t.o.OnThrottle != nil {
		t.o.OnThrottle(realm)
	}
	return wait, false
}

// Fail records a failed attempt of addr.
func (t *Throttle) Fail(realm, addr string) {
	if t == nil {
		return
	}
	if t.o.OnFailure != nil {
		t.o.OnFailure(realm)
	}
	key := throttleKey(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.addrs[key]
	if !ok {
		if t.lru.Len() >= t.o.Capacity {
			old := t.lru.Back()
			t.lru.Remove(old)
			delete(t.addrs, old.Value.(*throttleEntry).key)
		}
		el = t.lru.PushFront(&throttleEntry{key: key})
		t.addrs[key] = el
	} else {
		t.lru.MoveToFront(el)
	}
	e := el.Value.(*throttleEntry)
	e.fails++
	if over := e.fails - t.o.Free; over > 0 {
		hold := t.o.Max
		if over <= 30 && t.o.Base<<(over-1) < t.o.Max {
			hold = t.o.Base << (over - 1)
		}
		e.until = t.o.Now().Add(hold)
	}
}

// Succeed forgets addr's failures.
func (t *Throttle) Succeed(addr string) {
	if t == nil {
		return
	}
	key := throttleKey(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.addrs[key]; ok {
		t.lru.Remove(el)
		delete(t.addrs, key)
	}
}

// Len is the number of addresses remembered.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// SetRetryAfter sets Retry-After to wait in whole seconds (at least 1).
func SetRetryAfter(c echo.Context, wait time.Duration) {
	secs := int64((wait + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	c.Response().Header().Set("Retry-After", strconv.FormatInt(secs, 10))
}

// Throttled answers a held-back client: 429 too_many_attempts with
// Retry-After.
func Throttled(c echo.Context, wait time.Duration) *Error {
	SetRetryAfter(c, wait)
	return Wrap(http.StatusTooManyRequests, CodeThrottled, "too many failed attempts from this address; retry later", ErrThrottled)
}
