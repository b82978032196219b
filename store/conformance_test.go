package store_test

import (
	"path/filepath"
	"testing"

	"github.com/postback/postback/store"
	"github.com/postback/postback/store/storetest"
)

var bolt = storetest.Managed(
	func(t testing.TB) string { return filepath.Join(t.TempDir(), "postback.db") },
	func(path string, opts *store.Options) (store.Store, error) { return store.Open(path, opts) },
	func(s store.Store) string { return s.(*store.DB).Path() },
)

// TestConformance runs the store contract's suite on BoltDB.
func TestConformance(t *testing.T) { storetest.Run(t, bolt) }

// TestErasureOneRecordSteps runs the erasure cases with every record in an
// erasure step of its own, so the resume cursor must continue exactly.
func TestErasureOneRecordSteps(t *testing.T) {
	defer store.SetErasureChunk(1)()
	storetest.Run(t, bolt, storetest.ErasureCases...)
}
