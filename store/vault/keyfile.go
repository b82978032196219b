package vault

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The key file keeps the data keys of an embedded (BoltDB) store outside
// the database file, in fixed slots that are overwritten in place: a
// destroyed key leaves no copy behind in freed pages, and a backup of the
// database holds no key at all.
//
//	header (64): "POSTBACK-KEYS-01" | secret (32) | crc32 (4) | zero (12)
//	slot   (64): kid (16) | data key (32) | crc32 (4) | zero (12); all zero = free
//
// A slot whose checksum does not match was torn by a crash while it was
// written or wiped; either way no committed record relies on it (keys are
// synced before the records that use them commit, wiped before the erasure
// that destroys them commits), so it counts as free.
const (
	fileMagic = "POSTBACK-KEYS-01"
	slotSize  = 64
)

// ErrKeyFileMissing reports a database whose key file is not there.
var ErrKeyFileMissing = errors.New("vault: key file missing")

// KeyFile is the Keyring of an embedded store.
type KeyFile struct {
	path     string
	f        *os.File
	readOnly bool
	secret   []byte

	mu    sync.Mutex
	keys  map[KID]slotKey
	free  []int64 // free slot offsets
	next  int64   // offset after the last slot
	wrote uint64  // slots written so far

	syncMu  sync.Mutex
	synced  uint64
	syncErr error       // sticky: after a failed fdatasync nothing written is known durable
	syncing atomic.Bool // a background sync runs (see kick)
}

type slotKey struct {
	off int64
	key *[32]byte
}

// KeyFilePath is where the key file of database path lives.
func KeyFilePath(dbPath string) string { return dbPath + ".keys" }

// OpenKeyFile opens (and, unless readOnly, creates) a key file.
func OpenKeyFile(path string, readOnly bool) (*KeyFile, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	switch {
	case errors.Is(err, os.ErrNotExist) && !readOnly:
		f, err = create(path)
		if err != nil {
			return nil, err
		}
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %s", ErrKeyFileMissing, path)
	case err != nil:
		return nil, fmt.Errorf("vault: open key file: %w", err)
	}
	kf := &KeyFile{path: path, f: f, readOnly: readOnly, keys: map[KID]slotKey{}}
	if err := kf.load(); err != nil {
		f.Close()
		return nil, err
	}
	return kf, nil
}

// create writes a new key file with a fresh secret, durably.
func create(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vault: create key file: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		f.Close()
		return nil, err
	}
	hdr := make([]byte, slotSize)
	copy(hdr, fileMagic)
	copy(hdr[16:48], secret)
	putCRC(hdr[48:52], hdr[:48])
	if _, err = f.WriteAt(hdr, 0); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("vault: create key file: %w", err)
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func putCRC(dst, data []byte) {
	c := crc32.ChecksumIEEE(data)
	dst[0], dst[1], dst[2], dst[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
}

func crcOK(sum, data []byte) bool {
	var want [4]byte
	putCRC(want[:], data)
	return bytes.Equal(sum, want[:])
}

func (kf *KeyFile) load() error {
	data, err := io.ReadAll(io.NewSectionReader(kf.f, 0, 1<<40))
	if err != nil {
		return fmt.Errorf("vault: read key file %s: %w", kf.path, err)
	}
	if len(data) < slotSize || string(data[:16]) != fileMagic || !crcOK(data[48:52], data[:48]) {
		return fmt.Errorf("vault: %s is not a Postback key file (damaged header)", kf.path)
	}
	kf.secret = append([]byte(nil), data[16:48]...)
	var zero [slotSize]byte
	off := int64(slotSize)
	for ; off+slotSize <= int64(len(data)); off += slotSize {
		s := data[off : off+slotSize]
		if bytes.Equal(s, zero[:]) || !crcOK(s[48:52], s[:48]) {
			kf.free = append(kf.free, off)
			continue
		}
		var kid KID
		copy(kid[:], s[:16])
		var k [32]byte
		copy(k[:], s[16:48])
		kf.keys[kid] = slotKey{off: off, key: &k}
	}
	kf.next = off // a torn tail shorter than a slot is overwritten
	return nil
}

// Secret is the installation secret.
func (kf *KeyFile) Secret() []byte { return kf.secret }

// Fingerprint names the secret without revealing it; the database
// remembers it to notice a key file that belongs to another database.
func (kf *KeyFile) Fingerprint() string {
	sum := sha256.Sum256(append([]byte("postback-keyfile\x00"), kf.secret...))
	return hex.EncodeToString(sum[:8])
}

// Len counts the live data keys.
func (kf *KeyFile) Len() int {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	return len(kf.keys)
}

// DataKey returns (or creates) kid's key. A created key is written at
// once and durable after the next Sync.
func (kf *KeyFile) DataKey(kid KID, create bool) (*[32]byte, error) {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if sk, ok := kf.keys[kid]; ok {
		return sk.key, nil
	}
	if !create {
		return nil, fmt.Errorf("%w: %s", ErrNoKey, kid)
	}
	if kf.readOnly {
		return nil, fmt.Errorf("vault: key file %s is open read-only", kf.path)
	}
	key, err := NewDataKey()
	if err != nil {
		return nil, err
	}
	off := kf.next
	if n := len(kf.free); n > 0 {
		off = kf.free[n-1]
	}
	slot := make([]byte, slotSize)
	copy(slot, kid[:])
	copy(slot[16:48], key[:])
	putCRC(slot[48:52], slot[:48])
	if _, err := kf.f.WriteAt(slot, off); err != nil {
		return nil, fmt.Errorf("vault: write key file: %w", err)
	}
	if n := len(kf.free); n > 0 && kf.free[n-1] == off {
		kf.free = kf.free[:n-1]
	} else {
		kf.next += slotSize
	}
	kf.keys[kid] = slotKey{off: off, key: key}
	kf.wrote++
	kf.kick()
	return key, nil
}

// kick syncs the keys written so far in the background, so that by the
// time a store commits the records sealed with them (and calls Sync) the
// keys are usually durable already: the key file's fdatasync overlaps the
// store's work instead of adding to each commit.
func (kf *KeyFile) kick() {
	if !kf.syncing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		for {
			_ = kf.Sync() // a failure is sticky: the store's own Sync reports it
			kf.syncing.Store(false)
			if !kf.pending() || !kf.syncing.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// pending reports keys written and not yet synced.
func (kf *KeyFile) pending() bool {
	kf.mu.Lock()
	gen := kf.wrote
	kf.mu.Unlock()
	kf.syncMu.Lock()
	defer kf.syncMu.Unlock()
	return gen > kf.synced && kf.syncErr == nil
}

// Gen counts the key slots written so far (created or wiped): a key
// DataKey returned before the call is durable once SyncTo(Gen()) returns.
func (kf *KeyFile) Gen() uint64 {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	return kf.wrote
}

// Sync makes every key created before the call durable.
func (kf *KeyFile) Sync() error { return kf.SyncTo(kf.Gen()) }

// SyncTo makes the keys of generations up to need durable (see Gen), with
// one fdatasync at most, and none when a sync since has covered them: the
// store's writer waits only for the keys of the records it commits, not
// for those other requests are sealing meanwhile.
func (kf *KeyFile) SyncTo(need uint64) error {
	kf.syncMu.Lock()
	defer kf.syncMu.Unlock()
	if need <= kf.synced {
		return nil // durable before any failure
	}
	if kf.syncErr != nil {
		return kf.syncErr
	}
	gen := kf.Gen() // everything written so far goes in this fdatasync
	if err := unix.Fdatasync(int(kf.f.Fd())); err != nil {
		// After a failed fdatasync the kernel may have dropped the dirty
		// pages: a later one could succeed without them. Every later
		// Sync fails, so no record sealed with an unsynced key commits.
		kf.syncErr = fmt.Errorf("vault: sync key file %s: %w", kf.path, err)
		return kf.syncErr
	}
	kf.synced = gen
	return nil
}

// Destroy overwrites the keys' slots with zeros and syncs the file.
func (kf *KeyFile) Destroy(kids []KID) error {
	if kf.readOnly {
		return fmt.Errorf("vault: key file %s is open read-only", kf.path)
	}
	zero := make([]byte, slotSize)
	kf.mu.Lock()
	n := 0
	for _, kid := range kids {
		sk, ok := kf.keys[kid]
		if !ok {
			continue
		}
		if _, err := kf.f.WriteAt(zero, sk.off); err != nil {
			kf.mu.Unlock()
			return fmt.Errorf("vault: wipe key: %w", err)
		}
		delete(kf.keys, kid)
		kf.free = append(kf.free, sk.off)
		n++
	}
	kf.wrote++
	kf.mu.Unlock()
	if n == 0 {
		return nil
	}
	return kf.Sync()
}

// Each calls fn with every live data key (for `postback store copy`,
// which moves the keys with the records they seal).
func (kf *KeyFile) Each(fn func(kid KID, key *[32]byte) error) error {
	kf.mu.Lock()
	keys := make(map[KID]*[32]byte, len(kf.keys))
	for kid, sk := range kf.keys {
		keys[kid] = sk.key
	}
	kf.mu.Unlock()
	for kid, key := range keys {
		if err := fn(kid, key); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the file, after a background sync in progress.
func (kf *KeyFile) Close() error {
	kf.syncMu.Lock()
	defer kf.syncMu.Unlock()
	return kf.f.Close()
}
