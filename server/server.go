// Package server assembles the gateway: it opens the store, builds the
// forwarders and the dispatcher from the configuration, mounts every
// enabled source on echo, serves health, readiness and metrics, runs the
// background workers, and shuts all of it down in order.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/config"
	"github.com/postback/postback/console"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// Options are the gateway's injectable collaborators; zero values get
// production defaults.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Listener, when set, is used instead of listening on server.listen
	// (tests pass a ":0" listener).
	Listener net.Listener
	// AdminListener likewise replaces admin.listen.
	AdminListener net.Listener
	// ConsoleLive is how often the console's live pages reload (console
	// Options.Live); zero for its default.
	ConsoleLive time.Duration
	// Reload, when set, reads the configuration again for a reload (SIGHUP
	// or POST /admin/api/reload); without it the gateway cannot reload.
	Reload func() (*config.Config, error)
	// Dispatch overrides engine tuning (tests shorten backoff).
	Dispatch dispatch.Options
	// Client is the HTTP client forwarders use; default one per destination
	// with its timeout.
	Client *http.Client
	// ACMEHTTPClient is the HTTP client of the ACME client (tests trust a
	// test CA's directory with it); default http.DefaultClient.
	ACMEHTTPClient *http.Client
	// Version and Commit label postback_build_info (default "dev" and the
	// binary's VCS revision).
	Version, Commit string
}

// Gateway is one running Postback.
type Gateway struct {
	Config     *config.Config
	Store      store.Store
	Dispatcher *dispatch.Dispatcher
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	Echo       *echo.Echo
	Admin      *echo.Echo // == Echo unless admin.listen is set
	Deps       webhooks.Deps

	opts     Options
	now      func() time.Time
	workers  []func(ctx context.Context) // background loops, stopped after the dispatcher
	addr     string
	mu       sync.Mutex
	dests    []config.Destination
	adminAPI *admin
	// google holds the Play API client and enricher when the Google source
	// is enabled, for the admin reconcile endpoint.
	google *googleSource
	// ipExtractor names the client of a request (server.trusted_proxies).
	ipExtractor echo.IPExtractor
	// throttle holds back addresses that keep failing authentication
	// (admin token, console login, API keys).
	throttle *webhooks.Throttle
	// proxies are server.trusted_proxies.
	proxies []netip.Prefix
	// tls is server.tls's configuration, nil for plain HTTP.
	tls *tls.Config
	// inbound is the log of recent inbound requests (this process only).
	inbound inboundLog
	// route and secrets are swapped by Reload (reload.go).
	route   atomic.Pointer[func(e *mapping.Event) []string]
	secrets atomic.Pointer[[]string]
	reload  sync.Mutex // one reload at a time
	// sources are the handlers a reload gives new secrets (sources.go).
	sources sourceHandlers
}

// Route returns the destinations an event matches.
func Route(dests []config.Destination) func(e *mapping.Event) []string {
	return func(e *mapping.Event) []string {
		var out []string
		for i := range dests {
			d := &dests[i]
			if d.Disabled != "" {
				continue
			}
			m := d.Match
			if len(m.Apps) > 0 && !slices.Contains(m.Apps, e.AppID) {
				continue
			}
			if !slices.Contains(m.Environments, e.Environment) {
				continue
			}
			if len(m.Events) > 0 && !slices.Contains(m.Events, string(e.Type)) && !(e.Type == mapping.Custom && slices.Contains(m.Events, "custom:"+e.Name)) {
				continue
			}
			if len(m.Sources) > 0 && !slices.Contains(m.Sources, e.Source) {
				continue
			}
			out = append(out, d.Name)
		}
		return out
	}
}

// BuildDestinations constructs the forwarder of every enabled destination.
// Constructors validate without I/O, so check-config runs this too. A
// destination whose secrets are unset comes back disabled, not as an error.
func BuildDestinations(cfg *config.Config, client *http.Client, now func() time.Time) ([]dispatch.Destination, error) {
	var out []dispatch.Destination
	var errs []error
	for i := range cfg.Destinations {
		d := &cfg.Destinations[i]
		if d.Disabled != "" {
			continue
		}
		c := client
		if c == nil {
			c = forwarders.NewClient(d.Timeout.D())
		}
		f, err := forwarders.New(forwarders.Settings{
			Name: d.Name, Type: d.Type, Endpoint: d.Endpoint, EventNames: d.EventNames,
			Decode: d.Decode, Client: c, Now: now,
		})
		if errors.Is(err, forwarders.ErrDisabled) {
			d.Disabled = err.Error()
			cfg.Disabled = append(cfg.Disabled, fmt.Sprintf("destination %s: %v", d.Name, err))
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, dispatch.Destination{
			Name: d.Name, Type: d.Type, Forwarder: f,
			PerSecond: d.RateLimit.PerSecond, Burst: d.RateLimit.Burst, Concurrency: d.Concurrency,
			BatchSize: d.BatchSize, Linger: d.Linger.D(), MaxAttempts: d.Retry.MaxAttempts, MaxAge: d.Retry.MaxAge.D(),
			Timeout: d.Timeout.D(),
		})
	}
	// Errors are printed by check-config and at start-up: no secret in them.
	return out, config.MaskError(errors.Join(errs...), cfg.Secrets())
}

// New builds a gateway from a validated configuration: it opens the store
// (failing fast if another process holds it) and wires every component, but
// starts nothing until Run.
func New(cfg *config.Config, opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Gateway{Config: cfg, Logger: opts.Logger, Metrics: metrics.New(), opts: opts, now: opts.Now}
	proxies, err := cfg.Server.TrustedPrefixes()
	if err != nil {
		return nil, err
	}
	g.proxies = proxies
	if g.tls, err = g.tlsConfig(); err != nil {
		return nil, err
	}
	var warned atomic.Bool
	g.ipExtractor = clientIP(proxies, func(peer string) {
		// Behind a proxy that is not listed, every client has the proxy's
		// address: one client's failed guesses hold back all of them.
		if !warned.Swap(true) {
			g.Logger.Warn("X-Forwarded-For / X-Real-IP ignored: the peer is not in server.trusted_proxies; list your reverse proxy there, or every client behind it shares one address (logs, auth throttling)", "peer", peer)
		}
	})
	g.throttle = webhooks.NewThrottle(webhooks.ThrottleOptions{
		Now:        opts.Now,
		OnFailure:  func(realm string) { g.Metrics.AuthFailures.WithLabelValues(realm).Inc() },
		OnThrottle: func(realm string) { g.Metrics.AuthThrottled.WithLabelValues(realm).Inc() },
	})
	dests, err := BuildDestinations(cfg, opts.Client, opts.Now)
	if err != nil {
		return nil, err
	}
	g.dests = cfg.Destinations
	route := Route(cfg.Destinations)
	g.route.Store(&route)
	secrets := cfg.Secrets()
	g.secrets.Store(&secrets)
	var disp *dispatch.Dispatcher
	g.Store, err = OpenStore(context.Background(), cfg, store.Options{
		Route:    func(e *mapping.Event) []string { return (*g.route.Load())(e) },
		OrderKey: OrderKeys(dests),
		Now:      opts.Now,
		Logger:   opts.Logger,
		OnCommit: func(d []string) {
			if disp != nil {
				disp.Wake(d)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	do := opts.Dispatch
	do.Now, do.Logger, do.Metrics = opts.Now, opts.Logger, g.Metrics
	if do.Mask == nil {
		do.Mask = func(s string) string { return config.MaskText(s, *g.secrets.Load()) }
	}
	if do.Poll == 0 {
		do.Poll = cfg.Dispatch.PollInterval.D()
	}
	if do.Lease == 0 {
		do.Lease = cfg.Dispatch.Lease.D()
	}
	if do.IdentityWait == 0 {
		do.IdentityWait = cfg.IdentityWait.D()
	}
	for _, d := range dests {
		if r, ok := d.Forwarder.(forwarders.Rememberer); ok {
			r.SetMemory(g.Store.ForwarderMemory(d.Name))
		}
	}
	disp = dispatch.New(g.Store, dests, do)
	g.Dispatcher = disp

	g.Echo = newEcho(g)
	g.Admin = g.Echo
	if cfg.Admin.Listen != "" || opts.AdminListener != nil {
		g.Admin = newEcho(g)
	}
	g.Deps = webhooks.Deps{Store: g.Store, Metrics: g.Metrics, Logger: g.Logger, Now: g.now, MaxBody: cfg.Server.MaxBodyBytes, Observe: observeIngest}
	g.Echo.GET("/healthz", g.healthz)
	g.Echo.GET("/readyz", g.readyz)
	// With a separate admin listener, /metrics lives there (it tells an
	// outsider traffic, sources and destinations); admin.public_metrics
	// keeps it on the public listener too.
	if g.Admin == g.Echo || cfg.Admin.PublicMetrics {
		g.Echo.GET("/metrics", echo.WrapHandler(g.Metrics.Handler()))
	}
	if g.Admin != g.Echo {
		g.Admin.GET("/metrics", echo.WrapHandler(g.Metrics.Handler()))
	}
	if err := g.mountSources(); err != nil {
		g.Store.Close()
		return nil, err
	}
	if err := g.mountAdmin(); err != nil {
		g.Store.Close()
		return nil, err
	}
	g.mountInbound()
	var sources, destNames []string
	for name, on := range map[string]bool{"apple": cfg.Sources.Apple.Enabled, "google": cfg.Sources.Google.Enabled,
		"stripe": cfg.Sources.Stripe.Enabled, "shopify": cfg.Sources.Shopify.Enabled, "custom": len(cfg.APIKeys) > 0} {
		if on {
			sources = append(sources, name)
		}
	}
	for _, d := range dests {
		destNames = append(destNames, d.Name)
	}
	g.initMetrics(sources, destNames)
	g.workers = append(g.workers, g.pruneLoop, g.checkLoop, g.erasureLoop, g.reloadOnHangup)
	for _, line := range cfg.Disabled {
		g.Logger.Warn("disabled: " + line)
	}
	for _, d := range dests {
		g.Logger.Info("destination enabled", "destination", d.Name, "type", d.Type)
	}
	return g, nil
}

// Addr returns the address the public listener is bound to (after Run
// started it).
func (g *Gateway) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addr
}

// Run serves until ctx ends, then shuts down in order: stop accepting and
// finish in-flight requests, let deliveries in progress finish and record
// their outcomes, stop background workers, close the store. ready, when not
// nil, is called once the listeners are bound.
func (g *Gateway) Run(ctx context.Context, ready func(addr string)) error {
	ln := g.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", g.Config.Server.Listen); err != nil {
			g.Store.Close()
			return fmt.Errorf("server.listen %s: %w", g.Config.Server.Listen, err)
		}
	}
	var adminLn net.Listener
	if g.Admin != g.Echo {
		adminLn = g.opts.AdminListener
		if adminLn == nil {
			var err error
			if adminLn, err = net.Listen("tcp", g.Config.Admin.Listen); err != nil {
				ln.Close()
				g.Store.Close()
				return fmt.Errorf("admin.listen %s: %w", g.Config.Admin.Listen, err)
			}
		}
	}
	g.mu.Lock()
	g.addr = ln.Addr().String()
	g.mu.Unlock()
	if g.tls != nil {
		// HTTPS on server.listen; with ACME the same listener answers the
		// TLS-ALPN-01 challenges. A separate admin listener stays plain
		// (keep it on loopback or a private network).
		ln = tls.NewListener(ln, g.tls)
	}

	dctx, stopDispatch := context.WithCancel(context.Background())
	dispatchDone := make(chan struct{})
	go func() {
		g.Dispatcher.Run(dctx)
		close(dispatchDone)
	}()
	wctx, stopWorkers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range g.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w(wctx)
		}()
	}

	srvErr := make(chan error, 2)
	srv := g.httpServer(g.Echo)
	go func() { srvErr <- srv.Serve(ln) }()
	var adminSrv *http.Server
	if adminLn != nil {
		adminSrv = g.httpServer(g.Admin)
		go func() { srvErr <- adminSrv.Serve(adminLn) }()
		g.Logger.Info("admin listening", "addr", adminLn.Addr().String())
	}
	startArgs := []any{"addr", ln.Addr().String(), "store", g.Store.Describe(), "config", g.Config.Path}
	if g.tls != nil {
		startArgs = append(startArgs, "tls", tlsMode(g.Config.Server.TLS))
	}
	if g.adminAPI != nil {
		consoleAddr := ln.Addr().String()
		if adminLn != nil {
			consoleAddr = adminLn.Addr().String()
		}
		startArgs = append(startArgs, "console", ConsoleURL(consoleAddr, g.tls != nil && adminLn == nil))
	}
	g.Logger.Info("postback listening", startArgs...)
	if ready != nil {
		ready(ln.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-srvErr:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = err
		}
	}
	g.Logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), g.Config.Server.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		g.Logger.Error("http shutdown", "err", err)
	}
	if adminSrv != nil {
		_ = adminSrv.Shutdown(sctx)
	}
	stopDispatch()
	select {
	case <-dispatchDone:
	case <-sctx.Done():
		g.Logger.Error("deliveries still in progress at shutdown timeout; they will be retried after restart")
	}
	stopWorkers()
	wg.Wait()
	if err := g.Store.Close(); err != nil && runErr == nil {
		runErr = err
	}
	g.Logger.Info("stopped")
	return runErr
}

// ConsoleURL is the console's URL on a listener's address, as a person on
// the machine types it: a wildcard host becomes localhost.
func ConsoleURL(addr string, tls bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + console.Prefix + "/"
}

func (g *Gateway) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       g.Config.Server.ReadTimeout.D(),
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.Logger.Handler(), slog.LevelWarn),
	}
}

func (g *Gateway) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (g *Gateway) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := g.Store.Ping(ctx); err != nil {
		return webhooks.Wrap(http.StatusServiceUnavailable, "not_ready", "store is not writable", err)
	}
	if !g.Dispatcher.Running() {
		return webhooks.Errorf(http.StatusServiceUnavailable, "not_ready", "dispatcher is not running")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// maxPruneInterval is how often retention is applied at the most: with the
// default 720 h retention a prune every 10 minutes removes about 1/4000 of
// what is kept.
const maxPruneInterval = 10 * time.Minute

// PruneInterval is how often pruneLoop applies a retention: a tenth of the
// retention, at most maxPruneInterval and at least a second. A short
// retention is pruned often enough to keep up with arrivals, so what is
// kept stays within about 1.1 retentions of traffic.
func PruneInterval(retention time.Duration) time.Duration {
	return min(maxPruneInterval, max(time.Second, retention/10))
}

// pruneLoop applies storage.retention every PruneInterval.
func (g *Gateway) pruneLoop(ctx context.Context) {
	every(ctx, PruneInterval(g.Config.Storage.Retention.D()), func() {
		// One replica prunes at a time; the others skip this round.
		_, err := g.Store.Singleton(ctx, "prune", func(ctx context.Context) {
			r, err := g.Store.Prune(ctx, g.Config.Storage.Retention.D())
			if err != nil {
				g.Logger.Error("prune", "err", err)
				return
			}
			if r.Events+r.Notifications+r.Memory > 0 {
				g.Logger.Info("pruned", "events", r.Events, "notifications", r.Notifications, "forwarder_memory", r.Memory, "kept_unfinished", r.Kept)
			}
		})
		if err != nil && ctx.Err() == nil {
			g.Logger.Error("prune", "err", err)
		}
	})
}

// every calls fn each period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// erasureLoop carries out queued privacy erasures (Shopify's
// customers/redact) a chunk per commit, checking every second for new ones.
func (g *Gateway) erasureLoop(ctx context.Context) {
	pending := func() int {
		n, err := g.Store.PendingErasures()
		if err != nil {
			return 0
		}
		g.Metrics.ErasuresPending.Set(float64(n))
		return n
	}
	every(ctx, time.Second, func() {
		// A read transaction when idle; the erasure steps (commits) only
		// when something is queued.
		if pending() == 0 {
			return
		}
		defer pending()
		// One replica erases at a time (each step also locks its job).
		_, err := g.Store.Singleton(ctx, "erasure", g.eraseAll)
		if err != nil && ctx.Err() == nil {
			g.Logger.Error("privacy erasure", "err", err)
		}
	})
}

// eraseAll carries out queued erasures until none is left.
func (g *Gateway) eraseAll(ctx context.Context) {
	for ctx.Err() == nil {
		more, done, err := g.Store.EraseStep(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.Logger.Error("privacy erasure", "err", err)
			}
			return
		}
		if done != nil {
			g.Metrics.ErasuresDone.Inc()
			g.Logger.Info("privacy erasure done", "source", done.Source, "key", done.Key,
				"events", done.Events, "states", done.States, "took", time.Since(done.QueuedAt).Round(time.Millisecond))
		}
		if !more {
			return
		}
	}
}

// AddWorker registers a background loop started by Run and stopped after
// the dispatcher (the Google enricher, periodic destination checks).
func (g *Gateway) AddWorker(w func(ctx context.Context)) { g.workers = append(g.workers, w) }

// newEcho configures an echo instance: JSON errors, request logs.
func newEcho(g *Gateway) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = g.ipExtractor
	e.HTTPErrorHandler = g.errorHandler
	e.Use(g.requestLog)
	e.Use(recoverer(g.Logger))
	return e
}

func (g *Gateway) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	var we *webhooks.Error
	if errors.As(err, &he) {
		code := strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "_"))
		we = webhooks.Errorf(he.Code, code, "%v", he.Message)
	} else {
		we = webhooks.AsError(err)
		if we.Status >= 500 && we.Code == webhooks.CodeInternal {
			g.Logger.Error("internal error", "path", c.Path(), "err", err)
		}
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(we.Status)
		return
	}
	// Every error body is {"error": {"code", "message", "fields"?}}.
	_ = c.JSON(we.Status, we.Body())
}

// requestLog logs one line per request: never the query string (keys can be
// there) nor bodies. Each request gets an id (the caller's X-Request-Id when
// plain, else a new one), answered in X-Request-Id and logged on the request
// line and on every line logged with the request's context (the
// notification line).
func (g *Gateway) requestLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		r := c.Request()
		id := r.Header.Get(echo.HeaderXRequestID)
		if !validRequestID.MatchString(id) {
			id = newRequestID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		r = markSecure(r, g.proxies)
		ctx := withRequestID(r.Context(), id)
		source := inboundSource(r.Method, r.URL.Path)
		var note *inboundNote
		if source != "" {
			ctx, note = withInboundNote(ctx)
		}
		c.SetRequest(r.WithContext(ctx))
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		path := c.Request().URL.Path
		if path == "/metrics" || path == "/healthz" || path == "/readyz" {
			return nil
		}
		status := c.Response().Status
		reason := ""
		if err != nil {
			we := webhooks.AsError(err)
			reason = we.Code
			if we.Status == webhooks.StatusClientClosed {
				// The client is gone: what it would have been answered
				// is not what happened.
				status = webhooks.StatusClientClosed
			}
		}
		if source != "" {
			g.recordInbound(c, note, source, status, reason, start)
		}
		lvl := slog.LevelInfo
		if status >= 500 {
			lvl = slog.LevelError
		}
		took := time.Since(start)
		args := []any{"method", c.Request().Method, "path", path, "status", status,
			"bytes", c.Response().Size, "duration", humanDuration(took), "remote", c.RealIP()}
		if reason != "" {
			args = append(args, "reason", reason)
		}
		if g.Config.Log.Format == "json" {
			// Machines sum numbers: json logs keep the milliseconds too.
			args = append(args, "duration_ms", float64(took.Microseconds())/1000)
		}
		g.Logger.Log(c.Request().Context(), lvl, "request", args...)
		return nil
	}
}

// humanDuration rounds d for a log line: 850µs, 12.3ms, 1.25s.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

// recoverer turns a handler panic into a 500 without killing the process.
func recoverer(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					log.Error("panic in handler", "path", c.Request().URL.Path, "panic", fmt.Sprint(r))
					err = webhooks.Errorf(http.StatusInternalServerError, webhooks.CodeInternal, "internal error")
				}
			}()
			return next(c)
		}
	}
}
