package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
