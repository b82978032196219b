package server

import (
	"github.com/postback/postback/webhooks"
)

// mountSources registers the handler of every enabled source: one block per
// source. A source that is disabled (enabled: false, or its secrets unset) has
// no route, so its URL answers 404.
func (g *Gateway) mountSources() error {
	cfg := g.Config.Sources
	if c := cfg.Stripe; c.Enabled {
		s := &webhooks.Stripe{Deps: g.Deps, Secrets: c.Secrets, Tolerance: c.Tolerance.D(), AppID: c.AppID}
		g.Echo.POST("/webhooks/stripe", s.Handle)
		g.Logger.Info("source enabled", "source", "stripe", "path", "/webhooks/stripe", "secrets", len(c.Secrets))
	}
	return nil
}
