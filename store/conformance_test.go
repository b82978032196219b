package store_test

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/postback/postback/store"
	"github.com/postback/postback/store/storetest"
)

// closed holds the stores Reopen closed, whose cleanup has nothing to check.
var closed sync.Map

// TestConformance runs the store contract's suite on BoltDB.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		Open: func(t *testing.T, opts *store.Options) store.Store {
			return openBolt(t, filepath.Join(t.TempDir(), "postback.db"), opts)
		},
		Reopen: func(t *testing.T, s store.Store, opts *store.Options) store.Store {
			db := s.(*store.DB)
			path := db.Path()
			closed.Store(db, true)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			return openBolt(t, path, opts)
		},
	})
}

func openBolt(t *testing.T, path string, opts *store.Options) *store.DB {
	t.Helper()
	db, err := store.Open(path, opts)
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
