package pgstore_test

import (
	"context"
	"sync"
	"testing"

	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
	"github.com/postback/postback/store/pgstore/pgtest"
	"github.com/postback/postback/store/storetest"
)

// closed holds the stores Reopen closed, whose cleanup has nothing to check.
var closed sync.Map

// TestConformance runs the store contract's suite on PostgreSQL.
func TestConformance(t *testing.T) {
	pgtest.Base(t)
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T, opts *store.Options) store.Store {
			return openPG(t, pgtest.Database(t), opts)
		},
		Reopen: func(t *testing.T, s store.Store, opts *store.Options) store.Store {
			db := s.(*pgstore.DB)
			dsn := db.DSN()
			closed.Store(db, true)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			return openPG(t, dsn, opts)
		},
	})
}

func openPG(t *testing.T, dsn string, opts *store.Options) *pgstore.DB {
	t.Helper()
	o := &pgstore.Options{PoolSize: 8}
	if opts != nil {
		o.Options = *opts
	}
	db, err := pgstore.Open(context.Background(), dsn, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, ok := closed.Load(db); ok {
			return // closed by Reopen; the reopened store is checked
		}
		if err := db.Check(); err != nil {
			t.Errorf("consistency check: %v", err)
		}
		_ = db.Close()
	})
	return db
}
