package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postback/postback/store"
)

// TestBackupAndStoreCheck: a hot backup through the running gateway is a
// checked copy that opens; store check works on the running store and on
// a file; damaged files are reported, never a crash.
func TestBackupAndStoreCheck(t *testing.T) {
	mmp := newAdmSink(t, 200)
	addr := admGateway(t, mmp)
	for _, id := range []string{"evt_bk_1", "evt_bk_2", "evt_bk_3"} {
		admPost(t, addr, id, "u-"+id)
	}
	out := filepath.Join(t.TempDir(), "copy.db")
	code, stdout, stderr := admRun("", "backup", "--addr", addr, "--out", out)
	if code != 0 || !strings.Contains(stdout, "checked") {
		t.Fatalf("backup: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = admRun("", "store", "check", "--file", out)
	if code != 0 || !strings.Contains(stdout, "ok") {
		t.Fatalf("store check --file: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = admRun("", "store", "check", "--addr", addr)
	if code != 0 || !strings.Contains(stdout, ": ok") {
		t.Fatalf("store check through the gateway: exit %d\n%s%s", code, stdout, stderr)
	}
	// The copy holds what was acknowledged before it.
	code, stdout, _ = admRun("", "backup", "--db", out, "--out", out+".2")
	if code != 0 {
		t.Fatalf("backup --db: exit %d %s", code, stdout)
	}
	if code, _, stderr := admRun("", "backup", "--addr", addr); code != 2 || !strings.Contains(stderr, "--out") {
		t.Fatalf("backup without --out: %d %s", code, stderr)
	}
	if code, _, stderr := admRun("-", "backup", "--addr", addr, "--out", out); code == 0 || !strings.Contains(stderr, "POSTBACK_ADMIN_TOKEN") {
		t.Fatalf("backup without a token: %d %s", code, stderr)
	}

	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = admRun("", "store", "check", "--file", empty)
	if code != 1 || !strings.Contains(stderr, "damaged") || !strings.Contains(stderr, "restore") {
		t.Fatalf("store check of an empty file: exit %d %s", code, stderr)
	}
	if code, _, stderr := admRun("", "backup", "--db", empty, "--out", out+".3"); code != 1 || !strings.Contains(stderr, "damaged") {
		t.Fatalf("backup of a damaged file: exit %d %s", code, stderr)
	}

	// serve on a damaged file: the clear error and exit 1, no crash dump.
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	y := "server: {listen: \"127.0.0.1:0\"}\nstorage: {path: " + empty + "}\nsources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: false}}\ndestinations: []\n"
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runWithEnv(nil, "serve", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, "damaged") || strings.Contains(stderr, "goroutine ") {
		t.Fatalf("serve on an empty file: exit %d\n%s", code, stderr)
	}
}

// TestStoreCompactCommand: compact rewrites a stopped gateway's file; a
// file in use is named; PostgreSQL is pointed at VACUUM FULL.
func TestStoreCompactCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pb.db")
	db, err := store.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runWithEnv(nil, "store", "compact", "--file", path)
	if code != 1 || !strings.Contains(stderr, "in use") {
		t.Fatalf("compact of a file in use: exit %d %s", code, stderr)
	}
	db.Close()
	code, stdout, stderr := runWithEnv(nil, "store", "compact", "--file", path, "--keep-old")
	if code != 0 || !strings.Contains(stdout, "compacted") {
		t.Fatalf("compact: exit %d %s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(path + ".before-compact"); err != nil {
		t.Fatalf("--keep-old did not keep the old file: %v", err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("storage: {driver: postgres, dsn: \"postgres://x@127.0.0.1:1/x\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runWithEnv(nil, "store", "compact", "--config", cfg); code != 2 || !strings.Contains(stderr, "VACUUM FULL") {
		t.Fatalf("compact on postgres: exit %d %s", code, stderr)
	}
}
