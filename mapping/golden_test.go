package mapping

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// update rewrites the golden files under testdata/ instead of comparing
// against them: go test ./mapping -update. It is declared once for the whole
// package; every mapping test reuses it through golden.
var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got, encoded as indented JSON, with testdata/<name>.golden
// (name may contain a folder, e.g. "stripe/trial_started"). With -update it
// writes the file instead.
func golden(t *testing.T, name string, got any) {
	t.Helper()
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatalf("golden %s: encode: %v", name, err)
	}
	b = append(b, '\n')
	path := filepath.Join("testdata", filepath.FromSlash(name)+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("golden %s: %v", name, err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatalf("golden %s: %v", name, err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden %s: %v (run go test ./mapping -update to create it)", name, err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("golden %s mismatch (run go test ./mapping -update after checking the change)\ngot:\n%s\nwant:\n%s", name, b, want)
	}
}
