package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// Backend is what the console needs from the gateway. The server implements
// it over the store, the dispatcher and its replay jobs.
type Backend interface {
	// Events lists events newest first.
	Events(f store.EventFilter) (store.EventPage, error)
	// Event returns one event; store.ErrNotFound when there is none.
	Event(id string) (mapping.Event, error)
	// Notification returns the inbox item behind an event, rendered for
	// display with secrets and personal data removed.
	Notification(e *mapping.Event) (json.RawMessage, error)
	// EventDeliveries returns the deliveries of one event.
	EventDeliveries(eventID string) ([]store.Delivery, error)
	// Attempts returns the attempt log of a delivery, oldest first.
	Attempts(key string) ([]store.Attempt, error)
	// Deliveries lists deliveries matching a filter.
	Deliveries(f store.DeliveryFilter) ([]store.Delivery, error)
	// Replay queues one delivery again: ErrConfirm when it was delivered
	// and confirm is false, ErrNoReplay when no replay is offered.
	Replay(ctx context.Context, key string, confirm bool) (store.Delivery, error)
	// ReplayMatching counts (dryRun) or starts replaying, at a capped rate,
	// every final delivery matching f.
	ReplayMatching(ctx context.Context, f store.DeliveryFilter, dryRun bool) (ReplayJob, error)
	// ReplayJobs returns the recent bulk replays, newest first.
	ReplayJobs() []ReplayJob
	// Destinations returns every destination's health and backlog.
	Destinations() ([]Destination, error)
	// TestEvent sends a sandbox test event to a destination.
	TestEvent(ctx context.Context, name string) (TestResult, error)
	// Stats counts events and delivery states in a window.
	Stats(since, until time.Time, bucket time.Duration) (store.Stats, error)
	// DeadCounts counts dead deliveries per destination.
	DeadCounts() (map[string]int, error)
	// DeliveryLog lists deliveries with their events' fields (the held
	// destinations are filled in by the backend).
	DeliveryLog(f store.LogFilter) (store.LogPage, error)
	// HeldNames lists the destinations holding their work now.
	HeldNames() []string
	// DeadGroups counts dead deliveries per destination and reason.
	DeadGroups(destination string) ([]DeadGroup, error)
	// Resume ends a destination's pause or open circuit now.
	Resume(ctx context.Context, name string) (bool, error)
	// Export writes every delivery matching f as csv or json.
	Export(w http.ResponseWriter, f store.LogFilter, format string) error
	// Reload reads the configuration file again and applies its
	// destinations and their secrets; it returns a one-line summary.
	Reload() (string, error)
}

// ReplayJob is the progress of a bulk replay. After queueing its
// deliveries it follows them (Following) until each is final or the
// follow-up ends; Outcome counts them by state.
type ReplayJob struct {
	ID        string         `json:"id"`
	DryRun    bool           `json:"dry_run,omitempty"`
	Total     int            `json:"total"`
	Done      int            `json:"done"`
	Finished  bool           `json:"finished"`
	Following bool           `json:"following,omitempty"`
	Outcome   map[string]int `json:"outcome,omitempty"`
	// HeldBack counts delivered deliveries left out for want of a
	// confirmation; Excluded those no replay is offered for.
	HeldBack int       `json:"delivered_needing_confirmation,omitempty"`
	Excluded int       `json:"not_replayable,omitempty"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	Filter   string    `json:"filter,omitempty"`
}

// DeadGroup is a dead-letter group with its sample's last request and
// answer.
type DeadGroup struct {
	store.DeadGroup
	LastResponse string `json:"last_response,omitempty"`
	LastRequest  string `json:"last_request,omitempty"`
}

// Destination is one destination's live health and backlog.
type Destination struct {
	dispatch.Health
	Queue store.QueueStats `json:"queue"`
}

// TestResult is the outcome of a test event. Passed is true only when the
// destination's validation path received the test (Tested) and accepted
// it; anything else is shown as a failure.
type TestResult struct {
	Outcome  string `json:"outcome"`
	Status   int    `json:"status,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Error    string `json:"error,omitempty"`
	Tested   bool   `json:"tested"`
	Passed   bool   `json:"passed"`
	Path     string `json:"path,omitempty"`
	Where    string `json:"where,omitempty"`
	Response string `json:"response,omitempty"` // the vendor's answer verbatim
	Latency  time.Duration
}

// Prefix is the path the console is served under.
const Prefix = "/admin"

// Options configure a Console.
type Options struct {
	// Token is the admin token users log in with (required).
	Token string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives console logs; default slog.Default().
	Logger *slog.Logger
	// SessionTTL is how long a login lasts without use; default 12h.
	SessionTTL time.Duration
	// Live is how often live pages (overview, events, deliveries, dead
	// letters, destinations) reload themselves; default 10s, negative
	// for never. A reload is a <meta http-equiv="refresh">: no script
	// runs, so the strict Content-Security-Policy stays as it is.
	Live time.Duration
}

// ErrConfirm is returned by Backend.Replay for delivered work replayed
// without confirmation; ErrNoReplay when a replay is not offered (queued
// already, or it could only be skipped again).
var (
	ErrConfirm  = errors.New("confirmation required")
	ErrNoReplay = errors.New("no replay")
)

// ErrNoToken is returned by New without an admin token: the console is off.
var ErrNoToken = errors.New("console: admin token is required")

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console serves the web console.
type Console struct {
	b     Backend
	token [sha256.Size]byte // SHA-256 of the admin token: comparing digests hides its length
	now   func() time.Time
	log   *slog.Logger
	ttl   time.Duration
	live  time.Duration
	pages map[string]*template.Template
	mux   *http.ServeMux

	mu       sync.Mutex
	sessions map[string]*session
}

type session struct {
	csrf    string
	expires time.Time
	flash   string
	// flashBad marks the flash as a failure, shown in red.
	flashBad bool
}

// New builds a console over b.
func New(b Backend, opts Options) (*Console, error) {
	if opts.Token == "" {
		return nil, ErrNoToken
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.Live == 0 {
		opts.Live = 10 * time.Second
	}
	c := &Console{b: b, token: sha256.Sum256([]byte(opts.Token)), now: opts.Now, log: opts.Logger, ttl: opts.SessionTTL, live: opts.Live,
		pages: map[string]*template.Template{}, sessions: map[string]*session{}}
	base, err := template.New("layout.html").Funcs(funcs(c.now)).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	for _, p := range []string{"login", "overview", "events", "event", "dead", "destinations", "error", "deliveries", "confirm"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+p+".html")
		if err != nil {
			return nil, err
		}
		c.pages[p] = t
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	m := http.NewServeMux()
	if err := c.mountRequests(m, base); err != nil {
		return nil, err
	}
	m.Handle("GET "+Prefix+"/static/", http.StripPrefix(Prefix+"/static/", cacheStatic(http.FileServerFS(static))))
	m.HandleFunc("GET "+Prefix+"/login", c.loginForm)
	m.HandleFunc("POST "+Prefix+"/login", c.login)
	m.HandleFunc("POST "+Prefix+"/logout", c.authed(c.logout))
	m.HandleFunc("GET "+Prefix+"/{$}", c.authed(c.overview))
	m.HandleFunc("GET "+Prefix+"/events", c.authed(c.events))
	m.HandleFunc("GET "+Prefix+"/events/{id}", c.authed(c.event))
	m.HandleFunc("GET "+Prefix+"/dead", c.authed(c.dead))
	m.HandleFunc("POST "+Prefix+"/replay", c.authed(c.replay))
	m.HandleFunc("POST "+Prefix+"/replay/bulk", c.authed(c.replayBulk))
	m.HandleFunc("GET "+Prefix+"/destinations", c.authed(c.destinations))
	m.HandleFunc("POST "+Prefix+"/destinations/{name}/test", c.authed(c.testEvent))
	m.HandleFunc("POST "+Prefix+"/destinations/{name}/resume", c.authed(c.resume))
	m.HandleFunc("POST "+Prefix+"/reload", c.authed(c.reload))
	m.HandleFunc("GET "+Prefix+"/deliveries", c.authed(c.deliveries))
	m.HandleFunc("GET "+Prefix+"/deliveries/export", c.authed(c.export))
	m.HandleFunc(Prefix+"/", c.authed(func(w http.ResponseWriter, r *http.Request, _ *session) {
		c.fail(w, r, http.StatusNotFound, "There is no such page.")
	}))
	c.mux = m
	return c, nil
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	if r.URL.Path == Prefix {
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
		return
	}
	c.mux.ServeHTTP(w, r)
}

func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

const (
	sessionCookie = "postback_session"
	loginCookie   = "postback_login_csrf"
)

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func equal(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: Prefix + "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: isSecure(r),
	})
}

// current returns the request's live session, refreshing its expiry.
func (c *Console) current(r *http.Request) (string, *session) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return "", nil
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, s := range c.sessions {
		if now.After(s.expires) {
			delete(c.sessions, id)
		}
	}
	s, ok := c.sessions[ck.Value]
	if !ok {
		return "", nil
	}
	s.expires = now.Add(c.ttl)
	return ck.Value, s
}

// authed wraps a handler that needs a session. GETs without one are sent to
// the login page; every POST must carry the session's CSRF token.
func (c *Console) authed(h func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, s := c.current(r)
		if s == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, Prefix+"/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusFound)
				return
			}
			c.fail(w, r, http.StatusUnauthorized, "Your session has expired: log in again.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !equal(r.PostFormValue("csrf"), s.csrf) {
				c.fail(w, r, http.StatusForbidden, "The form's security token did not match: reload the page and try again.")
				return
			}
		}
		h(w, r, s)
	}
}

// setFlash stores a one-time message shown on the next page.
func (c *Console) setFlash(s *session, msg string) {
	c.mu.Lock()
	s.flash, s.flashBad = msg, false
	c.mu.Unlock()
}

// setFlashBad stores a one-time failure message, shown in red.
func (c *Console) setFlashBad(s *session, msg string) {
	c.mu.Lock()
	s.flash, s.flashBad = msg, true
	c.mu.Unlock()
}

func (c *Console) takeFlash(s *session) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, bad := s.flash, s.flashBad
	s.flash, s.flashBad = "", false
	return f, bad
}

// page is the data every template gets.
type page struct {
	Title string
	Nav   string
	CSRF  string
	Flash string
	// FlashBad shows Flash as a failure (red).
	FlashBad bool
	Error    string
	Data     any
	Now      time.Time
	Authed   bool
	// Live is the reload interval in seconds of a live page (0: none);
	// LiveOff says the user paused it, LiveToggle is the link that flips it.
	Live       int
	LiveOff    bool
	LiveToggle string
}

// livePages reload themselves.
var livePages = map[string]bool{"overview": true, "events": true, "deliveries": true, "dead": true, "destinations": true}

// setLive fills the page's live reload for a GET of a live page.
func (c *Console) setLive(p *page, r *http.Request, name string) {
	if !livePages[name] || r.Method != http.MethodGet || c.live <= 0 {
		return
	}
	q := r.URL.Query()
	off := q.Get("live") == "0"
	if off {
		q.Del("live")
	} else {
		q.Set("live", "0")
	}
	p.LiveOff, p.LiveToggle = off, r.URL.Path+"?"+q.Encode()
	if !off {
		p.Live = max(1, int(c.live/time.Second))
	}
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, status int, name, title string, data any) {
	p := page{Title: title, Nav: name, Data: data, Now: c.now()}
	c.setLive(&p, r, name)
	if s != nil {
		c.mu.Lock()
		p.CSRF = s.csrf
		c.mu.Unlock()
		p.Flash, p.FlashBad = c.takeFlash(s)
		p.Authed = true
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	_, s := c.current(r)
	c.render(w, r, s, status, "error", http.StatusText(status), msg)
}

// internal logs err and shows a generic error page: store errors are not
// for the browser.
func (c *Console) internal(w http.ResponseWriter, r *http.Request, err error) {
	c.log.Error("console: internal error", "path", r.URL.Path, "err", err)
	c.fail(w, r, http.StatusInternalServerError, "Something went wrong on the gateway; the log has the details.")
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, s := c.current(r); s != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusFound)
		return
	}
	c.showLogin(w, r, http.StatusOK, "")
}

type loginData struct {
	CSRF string
	Next string
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	c.setCookie(w, r, loginCookie, tok, 3600)
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostFormValue("next")
	}
	p := page{Title: "Log in", Nav: "login", Error: msg, Now: c.now(), Data: loginData{CSRF: tok, Next: safeNext(next)}}
	var buf bytes.Buffer
	if err := c.pages["login"].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		c.log.Error("console: render login", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	ck, err := r.Cookie(loginCookie)
	if err != nil || !equal(r.PostFormValue("csrf"), ck.Value) {
		c.showLogin(w, r, http.StatusForbidden, "The login form expired: try again.")
		return
	}
	if got := sha256.Sum256([]byte(r.PostFormValue("token"))); subtle.ConstantTimeCompare(got[:], c.token[:]) != 1 {
		c.log.Warn("console: failed login", "remote", r.RemoteAddr)
		c.showLogin(w, r, http.StatusUnauthorized, "That is not the admin token.")
		return
	}
	id := randomToken()
	c.mu.Lock()
	c.sessions[id] = &session{csrf: randomToken(), expires: c.now().Add(c.ttl)}
	c.mu.Unlock()
	c.setCookie(w, r, sessionCookie, id, 0)
	c.setCookie(w, r, loginCookie, "", -1)
	c.log.Info("console: login", "remote", r.RemoteAddr)
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, _ *session) {
	if id, _ := c.current(r); id != "" {
		c.mu.Lock()
		delete(c.sessions, id)
		c.mu.Unlock()
	}
	c.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	if len(next) > 1 && next[0] == '/' && next[1] != '/' && next[1] != '\\' && len(next) >= len(Prefix)+1 && next[:len(Prefix)+1] == Prefix+"/" {
		return next
	}
	return Prefix + "/"
}
