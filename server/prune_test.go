package server

import (
	"testing"
	"time"

	"github.com/postback/postback/config"
	"github.com/postback/postback/store"
)

func TestPruneInterval(t *testing.T) {
	for _, c := range []struct {
		retention, want time.Duration
	}{
		{720 * time.Hour, 10 * time.Minute}, // the default: capped
		{time.Hour, 6 * time.Minute},
		{2 * time.Minute, 12 * time.Second},
		{5 * time.Second, time.Second},
		{time.Millisecond, time.Second}, // never a busy loop
	} {
		if got := PruneInterval(c.retention); got != c.want {
			t.Errorf("PruneInterval(%v) = %v, want %v", c.retention, got, c.want)
		}
	}
}

// TestShortRetentionIsPruned: with a short retention the gateway prunes
// every tenth of it (a second at the least), not every 10 minutes, so a
// delivered event goes within a few seconds (on a real BoltDB file).
func TestShortRetentionIsPruned(t *testing.T) {
	rcv := newReceiver(t)
	cfg := e2eConfig(t, t.TempDir()+"/db", rcv.srv.URL, "")
	// Below the configuration's 1 h minimum, as bench --retention does.
	cfg.Storage.Retention = config.Duration(200 * time.Millisecond)
	tg := startGateway(t, cfg, nil)
	if code := postStripe(t, tg.url, stripeEvent("evt_prune_1")); code != 200 {
		t.Fatalf("stripe: %d", code)
	}
	waitFor(t, "the delivery", func() bool {
		ds, err := tg.g.Store.Deliveries(store.DeliveryFilter{})
		return err == nil && len(ds) == 1 && store.Final(ds[0].State)
	})
	waitFor(t, "the prune", func() bool {
		p, err := tg.g.Store.Events(store.EventFilter{})
		return err == nil && len(p.Events) == 0
	})
	if ds, err := tg.g.Store.Deliveries(store.DeliveryFilter{}); err != nil || len(ds) != 0 {
		t.Errorf("deliveries after the prune: %d (%v), want 0", len(ds), err)
	}
}
