package store_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/storetest"
)

// filledDB writes a database with enough records for many pages and
// returns its path, closed.
func filledDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "postback.db")
	db, err := store.Open(path, &store.Options{Map: storetest.FakeMap, Logger: slog.New(slog.DiscardHandler),
		Route: func(*mapping.Event) []string { return []string{"af", "hook"} }})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if _, err := db.Ingest(context.Background(), storetest.Note(fmt.Sprintf("n%03d", i), storetest.Facts(fmt.Sprintf("f%03d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// opensWhole reports whether path opens; when it does, every record the
// fill wrote must be there and the file must check out.
func opensWhole(t *testing.T, path string) bool {
	t.Helper()
	db, err := store.Open(path, &store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return false
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Fatalf("%s opened but does not check out: %v", path, err)
	}
	for i := 0; i < 300; i++ {
		if _, err := db.Event(storetest.FactID(fmt.Sprintf("f%03d", i))); err != nil {
			t.Fatalf("%s opened without event %d: %v", path, i, err)
		}
	}
	return true
}

func wantDamaged(t *testing.T, path, why string) {
	t.Helper()
	db, err := store.Open(path, &store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		db.Close()
		t.Fatalf("%s: opened a damaged file", why)
	}
	msg := err.Error()
	if !errors.Is(err, store.ErrDamaged) || !strings.Contains(msg, path) || !strings.Contains(msg, "restore") || !strings.Contains(msg, "postback store check") {
		t.Fatalf("%s: got %v; want ErrDamaged naming the file and the recovery steps", why, err)
	}
}

// TestDamagedFiles: a zero-length file, a truncated file and a file with
// random bytes in its pages each end in ErrDamaged with the file and the
// recovery steps, never a crash and never an empty store started silently.
func TestDamagedFiles(t *testing.T) {
	t.Run("zero length", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "postback.db")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		wantDamaged(t, path, "zero length")
	})
	t.Run("truncated", func(t *testing.T) {
		// bbolt grows its file ahead of use, so a cut may fall in unused
		// space: then the store must open and check out whole; a cut into
		// used pages must be refused.
		src := filledDB(t)
		orig, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		refused := 0
		for _, keep := range []float64{0.9, 0.5, 0.2, 0.01} {
			path := filepath.Join(t.TempDir(), "postback.db")
			if err := os.WriteFile(path, orig[:int(float64(len(orig))*keep)], 0o600); err != nil {
				t.Fatal(err)
			}
			copyKeys(t, src, path)
			if opensWhole(t, path) {
				continue
			}
			wantDamaged(t, path, fmt.Sprintf("truncated to %.0f%%", keep*100))
			refused++
		}
		if refused == 0 {
			t.Fatal("no truncation was refused")
		}
	})
	t.Run("random bytes in data pages", func(t *testing.T) {
		src := filledDB(t)
		orig, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		refused := 0
		for seed := uint64(1); seed <= 40; seed++ {
			data := append([]byte(nil), orig...)
			const page = 4096
			r := rand.New(rand.NewPCG(seed, seed))
			// A page past the two meta pages and the freelist: a branch
			// or leaf of some bucket, or a free page.
			p := 3 + r.IntN(len(data)/page-3)
			for i := p * page; i < (p+1)*page; i++ {
				data[i] = byte(r.Uint32())
			}
			path := filepath.Join(t.TempDir(), "postback.db")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			copyKeys(t, src, path)
			if opensWhole(t, path) {
				continue // the page was free or past the last commit
			}
			wantDamaged(t, path, fmt.Sprintf("seed %d, page %d", seed, p))
			refused++
		}
		if refused == 0 {
			t.Fatal("no damaged page was refused")
		}
	})
	t.Run("both meta pages overwritten", func(t *testing.T) {
		path := filledDB(t)
		data, _ := os.ReadFile(path)
		for i := 0; i < 8192; i++ {
			data[i] = 0xAB
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		wantDamaged(t, path, "meta pages")
	})
}

// TestBackupIsConsistentWhileWriting: a hot backup taken while ingests
// commit opens as a healthy store holding a prefix of them.
func TestBackupIsConsistentWhileWriting(t *testing.T) {
	path := filledDB(t)
	db, err := store.Open(path, &store.Options{Map: storetest.FakeMap, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			_, _ = db.Ingest(context.Background(), storetest.Note(fmt.Sprintf("m%03d", i), storetest.Facts(fmt.Sprintf("g%03d", i))))
		}
	}()
	out := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	n, err := db.Backup(f)
	f.Close()
	<-done
	if err != nil || n == 0 {
		t.Fatalf("backup: %d bytes, %v", n, err)
	}
	// A backup holds no data key: it is restored beside the live key file.
	if _, err := store.Open(out, &store.Options{Logger: slog.New(slog.DiscardHandler)}); !errors.Is(err, store.ErrKeys) || !strings.Contains(err.Error(), out+".keys is missing") {
		t.Fatalf("backup opened without its key file: %v", err)
	}
	copyKeys(t, path, out)
	b, err := store.Open(out, &store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer b.Close()
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Event(storetest.FactID("f299")); err != nil {
		t.Fatalf("backup lacks data committed before it: %v", err)
	}
}

// TestEraseThenCompactLeavesNoTrace: personal fields are sealed, so no
// planted identifier is in the file in any form, before or after a privacy
// deletion (which destroys their keys: see TestCryptoErasure), and
// `store compact` rewrites the file without the freed pages that still
// hold the erased records' ciphertext. Every planted value is searched
// raw, in hex and in base64.
func TestEraseThenCompactLeavesNoTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "postback.db")
	db, err := store.Open(path, &store.Options{Map: storetest.FakeMap, Logger: slog.New(slog.DiscardHandler),
		Route: func(*mapping.Event) []string { return []string{"af"} }})
	if err != nil {
		t.Fatal(err)
	}
	planted := []string{"PLANTED-IDFA-7D41C0", "planted-gaid-99e3f1"}
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		b := storetest.Facts(fmt.Sprintf("p%02d", i))
		b.Facts[0].User = "victim"
		b.Facts[0].IDs = map[string]string{"idfa": planted[0], "gaid": planted[1]}
		if _, err := db.Ingest(ctx, storetest.Note(fmt.Sprintf("pn%02d", i), b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.PutUser(ctx, "victim", map[string]string{"idfa": planted[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteUser(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	hits := func() int {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range planted {
			for _, form := range []string{v, hex.EncodeToString([]byte(v)), base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v))} {
				n += bytes.Count(data, []byte(form))
			}
		}
		return n
	}
	if n := hits(); n != 0 {
		t.Fatalf("%d copies of planted values in the file after the erasure", n)
	}
	before, after, err := store.Compact(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if n := hits(); n != 0 {
		t.Fatalf("%d copies of planted values remain after compact", n)
	}
	if after > before {
		t.Errorf("compact grew the file: %d -> %d", before, after)
	}
	if _, err := os.Stat(path + ".before-compact"); err == nil {
		t.Error("the old file was kept without keepOld")
	}
	db, err = store.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Event(storetest.FactID("p00")); err != nil {
		t.Fatalf("compact lost live records: %v", err)
	}
}

// copyKeys puts the key file of database from beside database to.
func copyKeys(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from + ".keys")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".keys", data, 0o600); err != nil {
		t.Fatal(err)
	}
}
