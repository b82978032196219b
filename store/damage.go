package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"
	"unsafe"

	"github.com/postback/postback/store/vault"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrDamaged reports a database file that cannot be read safely: empty,
// truncated, or with pages that do not hold what bbolt expects. The store
// refuses to open it (or stops using it, when damage shows at run time)
// instead of crashing.
var ErrDamaged = errors.New("store: database file is damaged")

// damaged builds the error that names the file and the recovery steps.
func damaged(path, why string) error {
	return fmt.Errorf("%w: %s: %s. Nothing was changed. To recover: stop postback, move %s aside, "+
		"and restore your latest backup (postback backup) to that path; notifications received since the "+
		"backup are resent by the stores that retry (Stripe, Shopify, Google for days; Apple: postback backfill apple). "+
		"`postback store check --file %s` tells what is wrong", ErrDamaged, path, why, path, path)
}

// bbolt's on-disk meta page (page header, then the meta fields).
const (
	boltMagic     = 0xED0CDAED
	boltHeader    = 16 // id(8) flags(2) count(2) overflow(4)
	boltMetaBytes = 64 // magic version pageSize flags root(16) freelist pgid txid checksum
)

type boltMeta struct {
	pageSize uint32
	pgid     uint64 // high-water mark: pages the file must hold
	txid     uint64
}

// readMeta parses one meta page at off; ok is false when it is invalid.
func readMeta(f *os.File, off int64) (boltMeta, bool) {
	buf := make([]byte, boltHeader+boltMetaBytes)
	if _, err := f.ReadAt(buf, off); err != nil {
		return boltMeta{}, false
	}
	m := buf[boltHeader:]
	le := binary.LittleEndian
	if !littleEndianHost() {
		return boltMeta{}, true // cannot check here; leave it to bbolt
	}
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: le.Uint32(m[8:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}

func littleEndianHost() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// preflight checks an existing file before bbolt maps it: an empty file, a
// file without a valid meta page, and a file shorter than its meta page
// says (a truncated file makes bbolt fault on pages past the end) are
// damaged.
func preflight(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new database
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: stat %s: %w", path, err)
	}
	if st.Size() == 0 {
		return damaged(path, "the file is empty (zero bytes): a database is never empty, so it was truncated or never written")
	}
	m0, ok0 := readMeta(f, 0)
	var m1 boltMeta
	ok1 := false
	if ok0 && m0.pageSize >= 512 {
		m1, ok1 = readMeta(f, int64(m0.pageSize))
	} else {
		// The first meta is bad: find the second at a common page size.
		for _, ps := range []int64{4096, 8192, 16384, 65536} {
			if m1, ok1 = readMeta(f, ps); ok1 {
				break
			}
		}
	}
	if !ok0 && !ok1 {
		if st.Size() < 4096 {
			return damaged(path, fmt.Sprintf("the file is %d bytes, shorter than its header", st.Size()))
		}
		return damaged(path, "neither meta page is valid (not a Postback database, or overwritten)")
	}
	m := m0
	if !ok0 || ok1 && m1.txid > m0.txid {
		m = m1
	}
	if need := int64(m.pgid) * int64(m.pageSize); m.pageSize > 0 && st.Size() < need {
		return damaged(path, fmt.Sprintf("the file is %d bytes but its last commit needs %d: it was truncated", st.Size(), need))
	}
	return nil
}

// guard runs fn with page faults turned into panics and any panic from
// bbolt (a failed page assertion, a fault reading a damaged page) turned
// into ErrDamaged.
func (db *DB) guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = damaged(db.bolt.Path(), fmt.Sprintf("reading it failed: %v", r))
			db.opts.Logger.Error("database damaged; stop postback and restore a backup", "path", db.bolt.Path(), "panic", fmt.Sprint(r))
		}
	}()
	return fn()
}

// view is bolt's View under guard.
func (db *DB) view(fn func(tx *bolt.Tx) error) error {
	err := db.guard(func() error { return db.bolt.View(fn) })
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Backup writes a consistent copy of the database to w from one read
// transaction, while the gateway keeps running (a hot backup), and returns
// the bytes written.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Compact rewrites the database file at path with only its live records:
// pages freed by deletions and privacy erasures, which still hold the old
// bytes, are not copied. The gateway must be stopped (the file is locked
// while it runs). The new file is written beside the old one, checked,
// synced and renamed over it; with keepOld the old file is kept as
// path+".before-compact" (and still holds the old bytes), otherwise it is
// removed. It returns the sizes before and after.
func Compact(path string, keepOld bool) (before, after int64, err error) {
	src, err := Open(path, &Options{OpenTimeout: time.Second})
	if err != nil {
		return 0, 0, err
	}
	st, err := os.Stat(path)
	if err != nil {
		src.Close()
		return 0, 0, err
	}
	before = st.Size()
	tmp := path + ".compact"
	_ = os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		src.Close()
		return before, 0, fmt.Errorf("store: compact into %s: %w", tmp, err)
	}
	err = src.guard(func() error { return bolt.Compact(dst, src.bolt, 64<<20) })
	src.Close()
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return before, 0, fmt.Errorf("store: compact %s: %w", path, err)
	}
	// The copy must open and check out before it replaces anything.
	chk, err := Open(tmp, &Options{OpenTimeout: time.Second, KeyFile: vault.KeyFilePath(path)})
	if err == nil {
		err = chk.Check()
		chk.Close()
	}
	if err != nil {
		_ = os.Remove(tmp)
		return before, 0, fmt.Errorf("store: the compacted copy does not check out, %s left as it was: %w", path, err)
	}
	if keepOld {
		if err := os.Rename(path, path+".before-compact"); err != nil {
			_ = os.Remove(tmp)
			return before, 0, err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return before, 0, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if st, err := os.Stat(path); err == nil {
		after = st.Size()
	}
	return before, after, nil
}

// openFileRO opens a BoltDB file that must exist read-only, after the
// checks Open makes (damage, a lock held by another process), without its
// data key file: a backup holds none (see package vault).
func openFileRO(path string) (*bolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := preflight(path); err != nil {
		return nil, err
	}
	o := &Options{OpenTimeout: 2 * time.Second}
	if err := walkFile(path, o); err != nil {
		return nil, err
	}
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: o.OpenTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (stop the other postback first)", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return ro, nil
}

// CheckFile checks a BoltDB file no process holds (a backup, or a stopped
// gateway's file): every reachable page is read and bbolt's consistency
// check runs. It needs no data key file, so it checks backups, which hold
// none.
func CheckFile(path string) error {
	ro, err := openFileRO(path)
	if err != nil {
		return err
	}
	defer ro.Close()
	return ro.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return damaged(path, errors.Join(errs...).Error())
		}
		return nil
	})
}

// BackupFile writes a consistent copy of a BoltDB file no process holds.
// The copy holds no data keys: the key file beside path is backed up on
// its own (see package vault).
func BackupFile(path string, w io.Writer) (int64, error) {
	ro, err := openFileRO(path)
	if err != nil {
		return 0, err
	}
	defer ro.Close()
	var n int64
	err = ro.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
