package server

import (
	"context"
	"time"

	"github.com/postback/postback/forwarders"
)

// intervalChecker is a Checker that asks to be re-checked periodically.
type intervalChecker interface {
	CheckInterval() time.Duration
}

// checkLoop validates every destination that can check its own
// configuration (GA4's debug endpoint) at start-up and, where the
// destination opts in, every CheckInterval. Findings are logged; they never
// stop the gateway.
func (g *Gateway) checkLoop(ctx context.Context) {
	type item struct {
		name  string
		c     forwarders.Checker
		every time.Duration
		next  time.Time
	}
	var items []*item
	for _, name := range g.Dispatcher.Names() {
		f, _ := g.Dispatcher.Forwarder(name)
		c, ok := f.(forwarders.Checker)
		if !ok {
			continue
		}
		it := &item{name: name, c: c}
		if ic, ok := f.(intervalChecker); ok {
			it.every = ic.CheckInterval()
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		now := time.Now()
		for _, it := range items {
			if !it.next.IsZero() && (it.every <= 0 || now.Before(it.next)) {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := it.c.Check(cctx)
			cancel()
			if err != nil {
				g.Logger.Warn("destination check failed", "destination", it.name, "err", err)
			} else {
				g.Logger.Info("destination check passed", "destination", it.name)
			}
			it.next = now.Add(max(it.every, time.Minute))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
