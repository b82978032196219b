package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/postback/postback/config"
	"github.com/postback/postback/dispatch"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
)

// OpenStore opens the configured backend: the BoltDB file at
// storage.path, or the PostgreSQL database at storage.dsn (migrated under
// an advisory lock first).
func OpenStore(ctx context.Context, cfg *config.Config, o store.Options) (store.Store, error) {
	if cfg.Storage.Driver == config.DriverPostgres {
		kek, err := cfg.Storage.EncryptionKeyBytes()
		if err != nil {
			return nil, fmt.Errorf("storage.encryption_key: %w", err)
		}
		return pgstore.Open(ctx, cfg.Storage.DSN, &pgstore.Options{Options: o, PoolSize: cfg.Storage.PoolSize, EncryptionKey: kek})
	}
	return store.Open(cfg.Storage.Path, &o)
}

// OrderKeys returns the store's ordering-key function for the built
// destinations: a forwarder that is a forwarders.Orderer (Adjust) orders
// its deliveries per key.
func OrderKeys(dests []dispatch.Destination) func(dest string, e *mapping.Event) string {
	orderers := map[string]forwarders.Orderer{}
	for _, d := range dests {
		if o, ok := d.Forwarder.(forwarders.Orderer); ok {
			orderers[d.Name] = o
		}
	}
	return func(dest string, e *mapping.Event) string {
		if o, ok := orderers[dest]; ok {
			return o.OrderKey(e)
		}
		return ""
	}
}

// leader runs fn on one replica of the cluster at a time (the store's
// Singleton): a replica that does not hold the job tries again every
// retry, so the job moves to another replica within that time after its
// holder dies. On BoltDB fn simply runs.
func (g *Gateway) leader(ctx context.Context, name string, retry time.Duration, fn func(ctx context.Context)) {
	for ctx.Err() == nil {
		ran, err := g.Store.Singleton(ctx, name, fn)
		if err != nil && ctx.Err() == nil {
			g.Logger.Warn("background job: could not take its lock; retrying", "job", name, "err", err)
		}
		if ran && ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// OpenStoreOffline opens the configured store for a command that runs
// beside (PostgreSQL) or instead of (BoltDB) the gateway: backfill,
// reconcile. New events are routed, and ordered, as the gateway would.
func OpenStoreOffline(ctx context.Context, cfg *config.Config, log *slog.Logger) (store.Store, error) {
	dests, err := BuildDestinations(cfg, nil, time.Now)
	if err != nil {
		return nil, err
	}
	return OpenStore(ctx, cfg, store.Options{Route: Route(cfg.Destinations), OrderKey: OrderKeys(dests), Logger: log})
}
