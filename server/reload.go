package server

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/config"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/webhooks"
)

// ErrNoReload is returned by Reload when the gateway was started without a
// way to read its configuration again (Options.Reload).
var ErrNoReload = errors.New("this gateway was started without a configuration file to reload")

// ReloadResult is what a reload changed (see dispatch.ReloadResult).
type ReloadResult struct {
	dispatch.ReloadResult
	// Sources lists the sources whose secrets were applied (stripe,
	// shopify, api_keys); SourcesRestart those enabled or disabled by the
	// file, which needs a restart.
	Sources        []string `json:"sources_applied,omitempty"`
	SourcesRestart []string `json:"sources_need_restart,omitempty"`
	// Unchanged lists the settings a reload never changes.
	Unchanged string `json:"unchanged"`
}

const reloadScope = "enabling or disabling a source, Apple and Google source settings, admin, server, storage and the destination list itself (adding, removing, concurrency, rate limits) need a restart"

// Reload reads the configuration again (Options.Reload) and applies its
// destinations: each running destination gets a forwarder built from the
// new file (endpoint, credentials and other secrets, event names, retry
// limits), routing follows the new match rules, and the new secrets are
// masked in attempt logs. Invalid configuration changes nothing.
func (g *Gateway) Reload() (ReloadResult, error) {
	if g.opts.Reload == nil {
		return ReloadResult{}, ErrNoReload
	}
	g.reload.Lock()
	defer g.reload.Unlock()
	cfg, err := g.opts.Reload()
	if err != nil {
		return ReloadResult{}, err
	}
	dests, err := BuildDestinations(cfg, g.opts.Client, g.now)
	if err != nil {
		return ReloadResult{}, err
	}
	for _, d := range dests {
		if r, ok := d.Forwarder.(forwarders.Rememberer); ok {
			r.SetMemory(g.Store.ForwarderMemory(d.Name))
		}
	}
	secrets := append(*g.secrets.Load(), cfg.Secrets()...) // old ones stay masked in logs written meanwhile
	g.secrets.Store(&secrets)
	r := g.Dispatcher.Reload(dests)
	srcApplied, srcRestart := g.reloadSources(cfg)
	// Route only to destinations that run: one added by the file waits
	// for a restart rather than queueing work nobody sends.
	running := g.Dispatcher.Names()
	var routed []config.Destination
	for _, d := range cfg.Destinations {
		if slices.Contains(running, d.Name) {
			routed = append(routed, d)
		}
	}
	route := Route(routed)
	g.route.Store(&route)
	g.mu.Lock()
	g.dests = routed
	g.mu.Unlock()
	g.Logger.Info("configuration reloaded", "applied", r.Applied, "added_need_restart", r.Added, "removed_need_restart", r.Removed, "restart_needed", r.Restart,
		"sources_applied", srcApplied, "sources_need_restart", srcRestart)
	return ReloadResult{ReloadResult: r, Sources: srcApplied, SourcesRestart: srcRestart, Unchanged: reloadScope}, nil
}

// reloadOnHangup reloads on SIGHUP until ctx ends.
func (g *Gateway) reloadOnHangup(ctx context.Context) {
	if g.opts.Reload == nil {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if _, err := g.Reload(); err != nil {
				g.Logger.Error("reload failed: the running configuration is kept", "err", config.MaskText(err.Error(), *g.secrets.Load()))
			}
		}
	}
}

// reloadConfig is POST /admin/api/reload.
func (a *admin) reloadConfig(c echo.Context) error {
	r, err := a.g.Reload()
	if errors.Is(err, ErrNoReload) {
		return webhooks.Errorf(http.StatusConflict, "no_reload", "%v", err)
	}
	if err != nil {
		return webhooks.Errorf(http.StatusUnprocessableEntity, "invalid_config", "reload failed, the running configuration is kept: %s", config.MaskText(err.Error(), *a.g.secrets.Load()))
	}
	return c.JSON(http.StatusOK, r)
}
