// Package pgtest gives tests a fresh PostgreSQL database on the cluster
// named by POSTBACK_TEST_PG (scripts/pg-cluster.sh starts a throwaway one;
// .ci/run does). Without it the tests that need PostgreSQL skip with one
// line saying how to run them; with POSTBACK_REQUIRE_PG=1 (CI) that skip is
// a failure instead.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable holding the test cluster's DSN.
const EnvDSN = "POSTBACK_TEST_PG"

// EnvRequire, when "1", turns a missing cluster into a failure (CI).
const EnvRequire = "POSTBACK_REQUIRE_PG"

var skipOnce sync.Once

// Base returns the cluster's DSN, or skips (fails under EnvRequire) when
// there is none.
func Base(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s is not set but %s=1: the PostgreSQL tests must run here (eval \"$(scripts/pg-cluster.sh start)\")", EnvDSN, EnvRequire)
		}
		skipOnce.Do(announceSkip)
		t.Skip("no PostgreSQL: set " + EnvDSN + ` (eval "$(scripts/pg-cluster.sh start)")`)
	}
	return dsn
}

// skipLine is what a run without a cluster is told once.
const skipLine = "pgtest: PostgreSQL tests skipped: set " + EnvDSN + ` (eval "$(scripts/pg-cluster.sh start)") to run them`

// announceSkip tells whoever runs the tests, once per go test run, that
// the PostgreSQL tests were skipped. go test ./... shows a passing
// package's output only with -v, so the line goes to the terminal
// (/dev/tty) when there is one, else to stderr (shown with -v); the test
// binaries of one go test run (children of one go command) say it once
// between them.
func announceSkip() {
	w := io.Writer(os.Stderr)
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		w = tty
	}
	announce(w, runMarker())
}

// announce writes skipLine to w unless marker exists, and creates it; it
// reports whether it wrote. An empty marker always writes.
func announce(w io.Writer, marker string) bool {
	if marker != "" {
		f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return false // another package of this run said it
		}
		f.Close()
	}
	fmt.Fprintln(w, skipLine)
	return true
}

// runMarker names a file for this go test run: the go command's process
// id and start time (so a later run with a reused id is a new run).
func runMarker() string {
	ppid := os.Getppid()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ppid))
	if err != nil {
		return ""
	}
	// Field 22 (start time) counts from the end of the command name,
	// which may contain spaces but ends at the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(stat)[i+1:])
	if len(fields) < 20 {
		return ""
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("postback-pgtest-skip-%d-%s", ppid, fields[19]))
}

// Database creates an empty database for this test and returns its DSN;
// it is dropped when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	base := Base(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect %s: %v", EnvDSN, err)
	}
	defer conn.Close(context.Background())
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "pbt_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return WithDatabase(t, base, name)
}

// WithDatabase returns base with its database replaced by name.
func WithDatabase(t testing.TB, base, name string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %s must be a URL: %v", EnvDSN, err)
	}
	u.Path = "/" + name
	return u.String()
}
