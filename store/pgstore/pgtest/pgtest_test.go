package pgtest

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestAnnounceOncePerRun: the skip line is written by the first package of
// a go test run and not by the others, and says how to run the tests.
func TestAnnounceOncePerRun(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "run")
	var first, second bytes.Buffer
	if !announce(&first, marker) || announce(&second, marker) {
		t.Fatal("want the first package to announce and the second not to")
	}
	if !strings.Contains(first.String(), EnvDSN) || !strings.Contains(first.String(), "scripts/pg-cluster.sh start") || second.Len() != 0 {
		t.Fatalf("first %q, second %q", first.String(), second.String())
	}
	if m := runMarker(); m == "" || !strings.Contains(m, "postback-pgtest-skip-") {
		t.Errorf("run marker %q", m)
	}
	if m1, m2 := runMarker(), runMarker(); m1 != m2 {
		t.Errorf("the marker of one run changed: %q, %q", m1, m2)
	}
}
