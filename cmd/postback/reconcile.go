package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/postback/postback/config"
	"github.com/postback/postback/play"
	"github.com/postback/postback/server"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// cmdReconcile runs `postback reconcile google --since 72h`: it lists the
// purchases Google voided in the window, stores the ones the inbox does not
// know (RTDN missed them) and enriches them into refund events; refunds RTDN
// already delivered are recognised and not repeated. With --addr it asks a
// running gateway to do it (POST /admin/api/google/reconcile); without, it
// opens the database directly, for when the gateway is stopped (the
// database admits one process), and the gateway sends the deliveries when
// it runs.
func cmdReconcile(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("reconcile", env)
	cfgPath := fs.String("config", "", "path to config.yaml")
	since := fs.String("since", "72h", "start of the window: a duration back from now (72h, 30d) or a time (2026-11-01 or RFC 3339); Google keeps 30 days")
	until := fs.String("until", "", "end of the window (default now)")
	wait := fs.Duration("wait", 2*time.Minute, "how long to wait for the Play API to enrich what was found")
	asJSON := fs.Bool("json", false, "print JSON")
	addr := fs.String("addr", "", "a running gateway's admin address (token from POSTBACK_ADMIN_TOKEN): reconcile through it instead of opening the database")
	fs.StringVar(&env.token, "token", "", "admin token with --addr (default env POSTBACK_ADMIN_TOKEN)")
	fs.Usage = func() {
		flagUsage(fs, "usage: postback reconcile google [--since 72h] [--until TIME] [--addr http://127.0.0.1:8080 | --config PATH] [--json]")
	}
	if len(args) == 0 || args[0] != "google" {
		fs.Usage()
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	from, to, ok := parseWindow(env, *since, *until)
	if !ok {
		return 2
	}
	if *addr != "" {
		return reconcileRemote(ctx, env, *addr, from, to, *asJSON)
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.Stderr, err)
		return 1
	}
	g := cfg.Sources.Google
	if !g.Enabled {
		fmt.Fprintln(env.Stderr, "postback: sources.google is not enabled in", cfg.Path)
		return 1
	}
	log := server.NewLogger(env.Stderr, cfg.Log, cfg.Secrets())
	api, err := play.New(ctx, play.Options{CredentialsFile: g.PlayAPI.CredentialsFile, Endpoint: g.PlayAPI.Endpoint})
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback: sources.google.play_api:", err)
		return 1
	}
	db, err := server.OpenStoreOffline(ctx, cfg, log)
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintln(env.Stderr, "postback: the gateway is running and holds", cfg.Storage.Path, "- run reconcile through it with --addr (and POSTBACK_ADMIN_TOKEN)")
		return 1
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback:", err)
		return 1
	}
	defer db.Close()
	var res play.ReconcileResult
	ran, lerr := db.Singleton(ctx, "reconcile-google", func(ctx context.Context) {
		res, err = play.Reconcile(ctx, api, db, play.ReconcileOptions{Packages: g.Packages, Since: from, Until: to})
	})
	if lerr == nil && !ran {
		lerr = errors.New("another gateway replica is reconciling Google refunds now; try again when it has finished")
	}
	if lerr != nil {
		fmt.Fprintln(env.Stderr, "postback:", lerr)
		return 1
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback:", err)
		return 1
	}
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	enricher := webhooks.NewGoogleEnricher(db, api, webhooks.GoogleEnricherOptions{Logger: log})
	drainErr := enricher.Drain(wctx)
	if *asJSON {
		out, _ := json.MarshalIndent(struct {
			play.ReconcileResult
			Complete bool `json:"enrichment_complete"`
		}{res, drainErr == nil}, "", "  ")
		fmt.Fprintln(env.Stdout, string(out))
	} else {
		if res.Clamped {
			fmt.Fprintln(env.Stderr, "note: --since is older than the 30 days Google keeps; the window starts at", res.Since.Format(time.RFC3339))
		}
		fmt.Fprintf(env.Stdout, "window   %s .. %s\nlisted   %d voided purchases\nknown    %d (already received)\nnew      %d (refund events queued)\n",
			res.Since.Format(time.RFC3339), res.Until.Format(time.RFC3339), res.Listed, res.Known, res.New)
	}
	if drainErr != nil {
		fmt.Fprintln(env.Stderr, "postback: some refunds are still waiting for the Play API; the gateway completes them when it runs:", drainErr)
		return 1
	}
	return 0
}

// reconcileRemote asks a running gateway to reconcile (POST
// /admin/api/google/reconcile); its enrichment worker makes the refunds.
func reconcileRemote(ctx context.Context, env *Env, addr string, from, to time.Time, asJSON bool) int {
	c, err := newAdminClient(env, addr)
	if err != nil {
		return exitErr(env, err)
	}
	q := url.Values{"since": {from.UTC().Format(time.RFC3339)}}
	if !to.IsZero() {
		q.Set("until", to.UTC().Format(time.RFC3339))
	}
	var res play.ReconcileResult
	if err := c.do(ctx, http.MethodPost, "/admin/api/google/reconcile", q, nil, &res); err != nil {
		return exitErr(env, err)
	}
	if asJSON {
		printJSON(env.Stdout, res)
		return 0
	}
	fmt.Fprintf(env.Stdout, "window   %s .. %s\nlisted   %d voided purchases\nknown    %d (already received)\nnew      %d (refund events queued in the gateway)\n",
		res.Since.Format(time.RFC3339), res.Until.Format(time.RFC3339), res.Listed, res.Known, res.New)
	return 0
}

// parseWindow reads --since and --until (zero to when until is empty),
// printing a usage error naming the flag; ok is false on a bad value.
func parseWindow(env *Env, since, until string) (from, to time.Time, ok bool) {
	now := time.Now()
	from, err := parseWhen(since, now)
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback: --since:", err)
		return from, to, false
	}
	if until != "" {
		if to, err = parseWhen(until, now); err != nil {
			fmt.Fprintln(env.Stderr, "postback: --until:", err)
			return from, to, false
		}
	}
	return from, to, true
}

// parseWhen reads a duration back from now (72h, 30d) or a time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := config.ParseDuration(s); err == nil && s != "" {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (72h, 30d) nor a time (2026-11-01, RFC 3339)", s)
}
