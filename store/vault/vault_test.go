package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpen(t *testing.T) {
	h := NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	kid := h.KID("user\x00u-1")
	key, err := NewDataKey()
	if err != nil {
		t.Fatal(err)
	}
	v, err := Seal(kid, key, []byte(`{"id":"e1"}`), []byte(`{"user":{"app_user_id":"u-1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed(v) || bytes.Contains(v, []byte("u-1")) {
		t.Fatalf("sealed record shows its personal part: %q", v)
	}
	p, err := Split(v)
	if err != nil || p.KID != kid || string(p.Clear) != `{"id":"e1"}` {
		t.Fatalf("split: %+v %v", p, err)
	}
	plain, err := p.Open(key)
	if err != nil || string(plain) != `{"user":{"app_user_id":"u-1"}}` {
		t.Fatalf("open: %q %v", plain, err)
	}
	// Another key (a destroyed key made anew for the same subject) does
	// not open it.
	other, _ := NewDataKey()
	if _, err := p.Open(other); !errors.Is(err, ErrNoKey) {
		t.Errorf("opened with another key: %v", err)
	}
	// The clear part is authenticated: a personal part moved to another
	// record does not open.
	tampered := bytes.Replace(v, []byte(`"e1"`), []byte(`"e2"`), 1)
	if p2, err := Split(tampered); err != nil {
		t.Fatal(err)
	} else if _, err := p2.Open(key); err == nil {
		t.Error("a record whose clear part changed still opens")
	}
	for _, bad := range [][]byte{nil, {1}, append([]byte{1}, make([]byte, 16)...), append(append([]byte{1}, kid[:]...), 0xff, 0xff, 0xff, 0xff, 0x0f)} {
		if _, err := Split(bad); !errors.Is(err, ErrSealed) {
			t.Errorf("Split(%x) = %v, want ErrSealed", bad, err)
		}
	}
	if h.Hash("user", "u-1") == h.Hash("memory", "u-1") || h.Hash("user", "") != "" {
		t.Error("hash purposes are not separated")
	}
	if NewHasher([]byte("another secret 0123456789abcdef!")).Hash("user", "u-1") == h.Hash("user", "u-1") {
		t.Error("the hash does not depend on the secret")
	}
}

func TestWrap(t *testing.T) {
	kek, _ := NewDataKey()
	dek, _ := NewDataKey()
	var kid KID
	kid[0] = 7
	w, err := Wrap(kek, kid, dek)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unwrap(kek, kid, w)
	if err != nil || *got != *dek {
		t.Fatalf("unwrap: %v", err)
	}
	var other KID
	if _, err := Unwrap(kek, other, w); err == nil {
		t.Error("a wrapped key unwraps under another kid")
	}
	kek2, _ := NewDataKey()
	if _, err := Unwrap(kek2, kid, w); err == nil {
		t.Error("a wrapped key unwraps with another KEK")
	}
}

// TestKeyFile: keys persist across opens, a destroyed key's slot is
// zeroed on disk (its bytes are nowhere in the file) and reused, a torn
// slot counts as free, and a damaged header is refused.
func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.keys")
	if _, err := OpenKeyFile(path, true); !errors.Is(err, ErrKeyFileMissing) {
		t.Fatalf("read-only open of a missing file: %v", err)
	}
	kf, err := OpenKeyFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	h := NewHasher(kf.Secret())
	a, b, c := h.KID("a"), h.KID("b"), h.KID("c")
	if _, err := kf.DataKey(a, false); !errors.Is(err, ErrNoKey) {
		t.Fatalf("absent key: %v", err)
	}
	ka, _ := kf.DataKey(a, true)
	kb, _ := kf.DataKey(b, true)
	if again, _ := kf.DataKey(a, true); *again != *ka {
		t.Fatal("a second create made a new key")
	}
	if err := kf.Sync(); err != nil {
		t.Fatal(err)
	}
	fp := kf.Fingerprint()
	kf.Close()

	kf, err = OpenKeyFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if kf.Fingerprint() != fp || kf.Len() != 2 {
		t.Fatalf("reopened: fingerprint %s (was %s), %d keys", kf.Fingerprint(), fp, kf.Len())
	}
	if got, err := kf.DataKey(b, false); err != nil || *got != *kb {
		t.Fatalf("key b after reopening: %v", err)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, ka[:]) {
		t.Fatal("key a is not in the file: the next check would prove nothing")
	}
	if err := kf.Destroy([]KID{a}); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(path)
	if bytes.Contains(raw, ka[:]) || bytes.Contains(raw, a[:]) {
		t.Error("a destroyed key (or its id) is still in the file")
	}
	size := len(raw)
	if _, err := kf.DataKey(c, true); err != nil {
		t.Fatal(err)
	}
	if raw, _ = os.ReadFile(path); len(raw) != size {
		t.Errorf("the freed slot was not reused: %d -> %d bytes", size, len(raw))
	}
	if _, err := kf.DataKey(a, false); !errors.Is(err, ErrNoKey) {
		t.Errorf("destroyed key still served: %v", err)
	}
	kf.Close()

	// A torn slot (a crash mid-write) is free; a short tail is ignored.
	raw, _ = os.ReadFile(path)
	raw[slotSize+20] ^= 0xff
	raw = append(raw, 1, 2, 3)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	kf, err = OpenKeyFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if kf.Len() != 1 {
		t.Errorf("%d keys after a torn slot, want 1", kf.Len())
	}
	if _, err := kf.DataKey(h.KID("d"), true); err == nil {
		t.Error("a read-only key file made a key")
	}
	if err := kf.Destroy([]KID{b}); err == nil {
		t.Error("a read-only key file destroyed a key")
	}
	kf.Close()

	raw[3] ^= 0xff
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeyFile(path, false); err == nil {
		t.Error("a damaged header was accepted")
	}
}

// TestKeyFileSyncTo: SyncTo syncs only when a generation it is asked for
// is not durable yet, and a failed sync is sticky for every newer one.
func TestKeyFileSyncTo(t *testing.T) {
	kf, err := OpenKeyFile(filepath.Join(t.TempDir(), "db.keys"), false)
	if err != nil {
		t.Fatal(err)
	}
	h := NewHasher(kf.Secret())
	if _, err := kf.DataKey(h.KID("a"), true); err != nil {
		t.Fatal(err)
	}
	ga := kf.Gen()
	if err := kf.SyncTo(ga); err != nil {
		t.Fatal(err)
	}
	// Key b is written while no sync can run, then the file is closed
	// under it, so that any fdatasync from here on fails.
	kf.syncMu.Lock()
	if _, err := kf.DataKey(h.KID("b"), true); err != nil {
		t.Fatal(err)
	}
	gb := kf.Gen()
	kf.f.Close()
	kf.syncMu.Unlock()
	if gb <= ga {
		t.Fatalf("a new key left the generation at %d (was %d)", gb, ga)
	}
	if err := kf.SyncTo(ga); err != nil {
		t.Fatalf("a durable generation needed a sync: %v", err)
	}
	if err := kf.SyncTo(gb); err == nil {
		t.Fatal("a sync of the closed file succeeded")
	}
	if err := kf.Sync(); err == nil {
		t.Error("a failed sync is not sticky")
	}
}
