package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/postback/postback/config"
	"github.com/postback/postback/play"
	"github.com/postback/postback/webhooks"
)

// mountSources registers the handler of every enabled source: one block per
// source. A source that is disabled (enabled: false, or its secrets unset) has
// no route, so its URL answers 404.
func (g *Gateway) mountSources() error {
	cfg := g.Config.Sources
	if c := cfg.Stripe; c.Enabled {
		g.sources.stripe.Store(g.stripeHandler(c))
		g.Echo.POST("/webhooks/stripe", func(ec echo.Context) error { return (*g.sources.stripe.Load())(ec) })
		g.Logger.Info("source enabled", "source", "stripe", "path", "/webhooks/stripe", "secrets", len(c.Secrets))
	}
	if c := cfg.Apple; c.Enabled {
		a, err := webhooks.NewApple(c, g.Config.Storage.Retention.D(), g.Deps)
		if err != nil {
			return fmt.Errorf("sources.apple: %w", err)
		}
		g.Echo.POST("/webhooks/apple", a.Handle)
		g.Logger.Info("source enabled", "source", "apple", "path", "/webhooks/apple", "apps", len(c.Apps), "environments", c.Environments, "online_checks", c.OnlineChecks, "app_store_server_api", a.API != nil)
	}
	if c := cfg.Google; c.Enabled {
		api, err := play.New(context.Background(), play.Options{CredentialsFile: c.PlayAPI.CredentialsFile, Endpoint: c.PlayAPI.Endpoint})
		if err != nil {
			return fmt.Errorf("sources.google.play_api: %w", err)
		}
		enricher := webhooks.NewGoogleEnricher(g.Store, api, webhooks.GoogleEnricherOptions{Logger: g.Logger, Metrics: g.Metrics, Now: g.now})
		h := &webhooks.Google{
			Deps:     g.Deps,
			Packages: c.Packages,
			Verifier: &webhooks.GoogleVerifier{
				Keys:     &webhooks.GoogleKeys{URL: c.OIDCCertsURL, Now: g.now},
				Audience: c.PushAudience, ServiceAccount: c.PushServiceAccount, Now: g.now,
			},
			Wake: enricher.Nudge,
		}
		g.google = &googleSource{api: api, enricher: enricher, packages: c.Packages}
		g.Echo.POST("/webhooks/google", h.Handle)
		// One replica enriches at a time; the others take over within 5s
		// of its end.
		g.AddWorker(func(ctx context.Context) {
			g.leader(ctx, "google-enrich", 5*time.Second, func(ctx context.Context) { _ = enricher.Run(ctx) })
		})
		g.Logger.Info("source enabled", "source", "google", "path", "/webhooks/google", "packages", len(c.Packages))
	}
	if c := cfg.Shopify; c.Enabled {
		g.sources.shopify.Store(g.shopifyHandler(c))
		g.Echo.POST("/webhooks/shopify", func(ec echo.Context) error { return (*g.sources.shopify.Load())(ec) })
		g.Logger.Info("source enabled", "source", "shopify", "path", "/webhooks/shopify", "shops", len(c.Shops), "store_keys", len(c.ShopSecrets))
	}
	// The app's own API: /v1/events and /v1/users. Always mounted, so that
	// without api_keys it answers 404 with a message saying how to turn it on.
	v1 := webhooks.NewCustom(g.Deps, g.Store, g.Config.APIKeys, g.Config.Storage.Retention.D())
	v1.Throttle = g.throttle
	v1.Mount(g.Echo)
	g.sources.custom = v1
	if len(v1.APIKeys) > 0 {
		g.Logger.Info("api enabled", "paths", "/v1/events, /v1/users/:id", "api_keys", len(v1.APIKeys))
	}
	return nil
}

// googleSource is what the admin reconcile endpoint needs of the running
// Google source.
type googleSource struct {
	api      *play.Client
	enricher *webhooks.GoogleEnricher
	packages []string
}

// sourceHandlers are the handlers whose secrets a reload replaces: Stripe
// and Shopify are swapped whole (they keep no state between requests), the
// /v1 API gets its new keys.
type sourceHandlers struct {
	stripe, shopify atomic.Pointer[echo.HandlerFunc]
	custom          *webhooks.Custom
}

func (g *Gateway) stripeHandler(c config.Stripe) *echo.HandlerFunc {
	s := &webhooks.Stripe{Deps: g.Deps, Secrets: c.Secrets, Tolerance: c.Tolerance.D(), AppID: c.AppID}
	h := echo.HandlerFunc(s.Handle)
	return &h
}

func (g *Gateway) shopifyHandler(c config.Shopify) *echo.HandlerFunc {
	secrets := append([]string{c.Secret}, c.Secrets...)
	s := &webhooks.Shopify{Deps: g.Deps, Secrets: secrets, ShopSecrets: c.ShopSecrets, Shops: c.Shops, Currency: c.Currency, AppID: c.AppID}
	h := echo.HandlerFunc(s.Handle)
	return &h
}

// reloadSources applies a reloaded configuration's source secrets: Stripe
// and Shopify secrets and settings (when the source stays enabled) and the
// API keys. It returns the sources whose enabling changed, which need a
// restart.
func (g *Gateway) reloadSources(cfg *config.Config) (applied, restart []string) {
	old := g.Config.Sources
	if cfg.Sources.Stripe.Enabled != old.Stripe.Enabled {
		restart = append(restart, "stripe")
	} else if cfg.Sources.Stripe.Enabled {
		g.sources.stripe.Store(g.stripeHandler(cfg.Sources.Stripe))
		applied = append(applied, "stripe")
	}
	if cfg.Sources.Shopify.Enabled != old.Shopify.Enabled {
		restart = append(restart, "shopify")
	} else if cfg.Sources.Shopify.Enabled {
		g.sources.shopify.Store(g.shopifyHandler(cfg.Sources.Shopify))
		applied = append(applied, "shopify")
	}
	if g.sources.custom != nil {
		g.sources.custom.SetAPIKeys(cfg.APIKeys)
		applied = append(applied, "api_keys")
	}
	return applied, restart
}
