package pgstore_test

import (
	"context"
	"testing"

	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
	"github.com/postback/postback/store/pgstore/pgtest"
	"github.com/postback/postback/store/storetest"
)

// TestConformance runs the store contract's suite on PostgreSQL.
func TestConformance(t *testing.T) {
	pgtest.Base(t)
	storetest.Run(t, storetest.Managed(
		pgtest.Database,
		func(dsn string, opts *store.Options) (store.Store, error) {
			o := &pgstore.Options{PoolSize: 8}
			if opts != nil {
				o.Options = *opts
			}
			return pgstore.Open(context.Background(), dsn, o)
		},
		func(s store.Store) string { return s.(*pgstore.DB).DSN() },
	))
}
