package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/postback/postback/appstore"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/server"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks"
)

// cmdBackfill runs `postback backfill apple --since 72h [--until TIME]`: it
// pulls the App Store Server API's notification history for every
// configured app and runs each notification through the same
// verify-dedupe-map path as POST /webhooks/apple, so notifications missed
// during an outage are recovered and none is counted twice.
//
// With --addr it posts them to a running gateway; without, it opens the
// database directly (the gateway must then be stopped: the database admits
// one process) and queues the deliveries the gateway sends when it runs.
func cmdBackfill(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("backfill", env)
	cfgPath := fs.String("config", "", "path to config.yaml")
	since := fs.String("since", "72h", "start of the window: a duration back from now (72h, 7d) or a time (2026-11-01 or RFC 3339); keep it within storage.retention")
	until := fs.String("until", "", "end of the window (default now)")
	environment := fs.String("environment", "", "production or sandbox (default: each accepted environment)")
	addr := fs.String("addr", "", "base URL of a running gateway (e.g. http://127.0.0.1:8080); default: open the database directly")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		flagUsage(fs, "usage: postback backfill apple [--since 72h] [--until TIME] [--environment production|sandbox] [--addr URL] [--config PATH] [--json]")
	}
	if len(args) == 0 || args[0] != "apple" {
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
	if to.IsZero() {
		to = time.Now()
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.Stderr, err)
		return 1
	}
	a := cfg.Sources.Apple
	if !a.Enabled {
		fmt.Fprintln(env.Stderr, "postback: sources.apple is not enabled in", cfg.Path)
		return 1
	}
	api, err := appstore.New(a.API, appstore.Options{})
	if errors.Is(err, appstore.ErrNotConfigured) {
		fmt.Fprintln(env.Stderr, "postback: backfill needs App Store Server API credentials: set sources.apple.api.issuer_id, key_id and private_key (App Store Connect > Users and Access > Integrations > In-App Purchase)")
		return 1
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback: sources.apple.api:", err)
		return 1
	}
	envs := []string{}
	for _, e := range []string{"production", "sandbox"} {
		if slices.Contains(a.Environments, e) && (*environment == "" || *environment == e) {
			envs = append(envs, e)
		}
	}
	if len(envs) == 0 {
		fmt.Fprintf(env.Stderr, "postback: --environment %q is not one of the accepted environments %v\n", *environment, a.Environments)
		return 2
	}
	var receive appstore.Receiver
	if *addr != "" {
		receive = postTo(strings.TrimRight(*addr, "/")+"/webhooks/apple", &http.Client{Timeout: 30 * time.Second})
	} else {
		log := server.NewLogger(env.Stderr, cfg.Log, cfg.Secrets())
		db, err := server.OpenStoreOffline(ctx, cfg, log)
		if errors.Is(err, store.ErrLocked) {
			fmt.Fprintln(env.Stderr, "postback: the gateway is running and holds", cfg.Storage.Path, "- pass --addr with its URL, or stop it first")
			return 1
		}
		if err != nil {
			fmt.Fprintln(env.Stderr, "postback:", err)
			return 1
		}
		defer db.Close()
		h, err := webhooks.NewApple(a, cfg.Storage.Retention.D(), webhooks.Deps{
			Store: db, Metrics: metrics.New(), Logger: log, Now: time.Now, MaxBody: cfg.Server.MaxBodyBytes,
		})
		if err != nil {
			fmt.Fprintln(env.Stderr, "postback: sources.apple:", err)
			return 1
		}
		receive = h.Receiver()
	}
	type line struct {
		BundleID    string `json:"bundle_id"`
		Environment string `json:"environment"`
		appstore.BackfillResult
	}
	var lines []line
	var total appstore.BackfillResult
	failed := false
	for _, app := range a.Apps {
		for _, e := range envs {
			res, err := appstore.Backfill(ctx, api, e, app.BundleID, from, to, receive)
			lines = append(lines, line{app.BundleID, e, res})
			total.Fetched += res.Fetched
			total.New += res.New
			total.Duplicates += res.Duplicates
			total.Rejected += res.Rejected
			total.Pages += res.Pages
			if err != nil {
				failed = true
				fmt.Fprintf(env.Stderr, "postback: backfill %s %s: %v\n", app.BundleID, e, err)
			}
		}
	}
	if *asJSON {
		out, _ := json.MarshalIndent(map[string]any{"since": from, "until": to, "apps": lines, "total": total}, "", "  ")
		fmt.Fprintln(env.Stdout, string(out))
	} else {
		fmt.Fprintf(env.Stdout, "window      %s .. %s\n", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
		for _, l := range lines {
			fmt.Fprintf(env.Stdout, "%-30s %-10s fetched %d, new %d, duplicates %d, rejected %d\n", l.BundleID, l.Environment, l.Fetched, l.New, l.Duplicates, l.Rejected)
		}
		fmt.Fprintf(env.Stdout, "fetched     %d\nnew         %d (recovered)\nduplicates  %d (already received)\nrejected    %d (failed verification; see the log)\n", total.Fetched, total.New, total.Duplicates, total.Rejected)
	}
	if failed {
		return 1
	}
	return 0
}

// postTo returns a receiver that posts each signedPayload to a running
// gateway's Apple webhook.
func postTo(url string, client *http.Client) appstore.Receiver {
	return func(ctx context.Context, signedPayload string) (appstore.Outcome, error) {
		body, _ := json.Marshal(map[string]string{"signedPayload": signedPayload})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return appstore.OutcomeRejected, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return appstore.OutcomeRejected, fmt.Errorf("post to the gateway: %w", err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		switch {
		case resp.StatusCode == http.StatusOK:
			var ack webhooks.Ack
			if err := json.Unmarshal(data, &ack); err != nil {
				return appstore.OutcomeRejected, fmt.Errorf("gateway answer is not an ack: %w", err)
			}
			if ack.Duplicate {
				return appstore.OutcomeDuplicate, nil
			}
			return appstore.OutcomeNew, nil
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			return appstore.OutcomeRejected, nil
		}
		return appstore.OutcomeRejected, fmt.Errorf("gateway answered HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
}
