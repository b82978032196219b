package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
	"github.com/postback/postback/store/pgstore/pgtest"
	"github.com/postback/postback/store/storetest"
)

// TestStoreCopy moves a BoltDB installation with history, pending work,
// attempts, identities and forwarder memory to PostgreSQL; the copy is
// resumable and a second run changes nothing.
func TestStoreCopy(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "postback.db")
	quiet := slog.New(slog.DiscardHandler)
	src, err := store.Open(path, &store.Options{Map: storetest.FakeMap, Logger: quiet, Route: func(*mapping.Event) []string { return []string{"af", "hook"} }})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		b := storetest.Facts(fmt.Sprintf("f%d", i))
		b.Facts[0].IDs = map[string]string{"idfa": fmt.Sprintf("IDFA-%d", i)}
		n := storetest.Note(fmt.Sprintf("n%d", i), b)
		n.AltKeys = []string{fmt.Sprintf("alt%d", i)}
		if _, err := src.Ingest(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	due, err := src.Claim(ctx, "af", time.Now().Add(time.Hour), store.ClaimOptions{Limit: 10})
	if err != nil || len(due) != 10 {
		t.Fatalf("claim %d %v", len(due), err)
	}
	var cs []store.Completion
	for _, d := range due {
		cs = append(cs, store.Completion{Key: d.Delivery.Key, State: store.StateDelivered, Attempt: &store.Attempt{At: time.Now(), Outcome: "delivered", Status: 200}})
	}
	if err := src.Complete(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if _, err := src.PutUser(ctx, "u1", map[string]string{"gaid": "g-1"}); err != nil {
		t.Fatal(err)
	}
	if err := src.ForwarderMemory("adj").Put("k", time.UnixMilli(1234567)); err != nil {
		t.Fatal(err)
	}
	src.Close()

	// An interrupted earlier run had copied part of the inbox already.
	{
		part, err := store.Open(path, &store.Options{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		dst, err := pgstore.Open(ctx, dsn, &pgstore.Options{Options: store.Options{Logger: quiet}})
		if err != nil {
			t.Fatal(err)
		}
		// The keys go first (the records are copied sealed).
		if _, err := dst.ImportKeys(ctx, part.Keyring()); err != nil {
			t.Fatal(err)
		}
		err = part.Export(ctx, store.KindInbox, func(chunk []store.Record) error {
			_, err := dst.Import(ctx, chunk[:len(chunk)/2])
			return err
		})
		part.Close()
		dst.Close()
		if err != nil {
			t.Fatal(err)
		}
	}

	code, out, errOut := runWithEnv(nil, "store", "copy", "--from", path, "--to", dsn)
	if code != 0 {
		t.Fatalf("store copy exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "inbox             30 records,       15 new") || !strings.Contains(out, "attempts          10 records,       10 new") {
		t.Fatalf("copy report:\n%s", out)
	}
	code, out, errOut = runWithEnv(nil, "store", "copy", "--from", path, "--to", dsn)
	if code != 0 || !strings.Contains(out, "(0 new,") {
		t.Fatalf("second copy changed something (exit %d):\n%s%s", code, out, errOut)
	}

	dst, err := pgstore.Open(ctx, dsn, &pgstore.Options{Options: store.Options{Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Check(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		id := storetest.FactID(fmt.Sprintf("f%d", i))
		e, err := dst.Event(id)
		if err != nil || e.Identifier("idfa") != fmt.Sprintf("IDFA-%d", i) || e.Identifier("gaid") != "g-1" {
			t.Fatalf("event %d: %+v %v", i, e, err)
		}
	}
	q, err := dst.Queue("af")
	if err != nil || q.Depth != 20 {
		t.Fatalf("pending af deliveries %d (want 20): %v", q.Depth, err)
	}
	if q, _ := dst.Queue("hook"); q.Depth != 30 {
		t.Fatalf("pending hook deliveries %d, want 30", q.Depth)
	}
	atts, err := dst.Attempts(due[0].Delivery.Key)
	if err != nil || len(atts) != 1 || atts[0].Status != 200 {
		t.Fatalf("attempts %+v %v", atts, err)
	}
	if at, ok, err := dst.ForwarderMemory("adj").Get("k"); err != nil || !ok || at.UnixMilli() != 1234567 {
		t.Fatalf("memory %v %v %v", at, ok, err)
	}
	// The user is found by the keyed hash of the BoltDB file's secret.
	if u, err := dst.GetUser("u1"); err != nil || u.Identifiers["gaid"] != "g-1" {
		t.Fatalf("user after copy: %+v %v", u, err)
	}
	// Another installation's file is not copied into a database that
	// holds this one's records.
	other := filepath.Join(t.TempDir(), "other.db")
	if o, err := store.Open(other, &store.Options{Logger: quiet}); err != nil {
		t.Fatal(err)
	} else {
		o.Close()
	}
	if code, _, errOut := runWithEnv(nil, "store", "copy", "--from", other, "--to", dsn); code != 1 || !strings.Contains(errOut, "another installation") {
		t.Fatalf("copy of another installation: exit %d: %s", code, errOut)
	}
	// The alt keys came along: a re-send under another id is a duplicate.
	n := storetest.Note("n-resent", storetest.Facts("f0"))
	n.AltKeys = []string{"alt0"}
	if res, err := dst.Ingest(ctx, n); err != nil || !res.Duplicate {
		t.Fatalf("re-send after copy: %+v %v", res, err)
	}
}

// TestStoreCopyErrors: missing flags are usage errors; a file in use by a
// gateway is named.
func TestStoreCopyErrors(t *testing.T) {
	if code, _, errOut := runWithEnv(nil, "store"); code != 2 || !strings.Contains(errOut, "store copy --from") {
		t.Fatalf("bare store: %d %s", code, errOut)
	}
	if code, _, errOut := runWithEnv(nil, "store", "copy", "--to", "postgres://x"); code != 2 || !strings.Contains(errOut, "--from") {
		t.Fatalf("no --from: %d %s", code, errOut)
	}
	path := filepath.Join(t.TempDir(), "postback.db")
	db, err := store.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if code, _, errOut := runWithEnv(nil, "store", "copy", "--from", path, "--to", "postgres://127.0.0.1:1/x"); code != 1 || !strings.Contains(errOut, "in use") {
		t.Fatalf("locked file: %d %s", code, errOut)
	}
}

// TestMigrateCommand: --dry-run lists pending migrations and applies none;
// the real run applies them; a bolt config is told what migrate is for.
func TestMigrateCommand(t *testing.T) {
	dsn := pgtest.Database(t)
	code, out, errOut := runWithEnv(nil, "migrate", "--dsn", dsn, "--dry-run")
	if code != 0 || !strings.Contains(out, "pending") || !strings.Contains(out, "00001_init.sql") || !strings.Contains(out, "00002_sealing.sql") || !strings.Contains(out, "00003_queue_stats.sql") || !strings.Contains(out, "3 pending (dry run") {
		t.Fatalf("dry run exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runWithEnv(nil, "migrate", "--dsn", dsn)
	if code != 0 || !strings.Contains(out, "applied  00001_init.sql") {
		t.Fatalf("migrate exit %d:\n%s%s", code, out, errOut)
	}
	code, out, _ = runWithEnv(nil, "migrate", "--dsn", dsn)
	if code != 0 || !strings.Contains(out, "nothing to apply") {
		t.Fatalf("second migrate:\n%s", out)
	}
	code, _, errOut = runWithEnv(nil, "migrate", "--config", filepath.Join("..", "..", "config.yaml"))
	if code != 2 || !strings.Contains(errOut, "storage.driver is \"bolt\"") {
		t.Fatalf("bolt config: %d %s", code, errOut)
	}
	code, _, errOut = runWithEnv(nil, "migrate", "--dsn", "postgres://postback@127.0.0.1:1/x?connect_timeout=2")
	if code != 1 || !strings.Contains(errOut, "cannot reach PostgreSQL") {
		t.Fatalf("unreachable: %d %s", code, errOut)
	}
}

// TestServeUnreachableDatabase: a gateway whose database cannot be reached
// names the host and the fix, and exits non-zero.
func TestServeUnreachableDatabase(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	y := `server: {listen: "127.0.0.1:0"}
storage: {driver: postgres, dsn: "postgres://postback:secret-pw@127.0.0.1:1/postback?sslmode=disable&connect_timeout=2"}
sources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: false}}
destinations: []
`
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runWithEnv(nil, "serve", "--config", cfg)
	if code == 0 || !strings.Contains(errOut, "127.0.0.1:1") || !strings.Contains(errOut, "is the server running") {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	if strings.Contains(errOut, "secret-pw") {
		t.Fatalf("the password reached the log:\n%s", errOut)
	}
	// A postgres driver without a DSN is a configuration error.
	if err := os.WriteFile(cfg, []byte(strings.Replace(y, `, dsn: "postgres://postback:secret-pw@127.0.0.1:1/postback?sslmode=disable&connect_timeout=2"`, "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runWithEnv(nil, "serve", "--config", cfg); code != 1 || !strings.Contains(errOut, "storage.dsn (line 2): is required") {
		t.Fatalf("no dsn: exit %d, stderr:\n%s", code, errOut)
	}
}
