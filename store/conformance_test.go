package store_test

import (
	"path/filepath"
	"testing"

	"github.com/postback/postback/store"
	"github.com/postback/postback/store/storetest"
)

// TestConformance runs the store contract's suite on BoltDB.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Managed(
		func(t testing.TB) string { return filepath.Join(t.TempDir(), "postback.db") },
		func(path string, opts *store.Options) (store.Store, error) { return store.Open(path, opts) },
		func(s store.Store) string { return s.(*store.DB).Path() },
	))
}
