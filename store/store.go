package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("store: database is in use by another process")

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// ErrSchemaNewer reports a database file written by a newer postback.
var ErrSchemaNewer = errors.New("store: the database schema is newer than this binary")

// ErrNotFound is returned when an event, delivery or user does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned when a request conflicts with stored state (for
// example a replay of a delivery that is already queued).
var ErrConflict = errors.New("store: conflict")

// Bucket names. Keys are documented where each bucket is written.
var (
	bInbox      = []byte("inbox")       // received_ms(8) source 0 key -> mapping.Notification, sealed (see Sealer; time-ordered)
	bInboxIDs   = []byte("inbox_ids")   // source 0 key -> received_ms(8): the small dedupe index
	bAltKeys    = []byte("alt_keys")    // source 0 alt key -> inbox key
	bEvents     = []byte("events")      // received_ms(8) event id -> mapping.Event, sealed (time-ordered: a commit appends)
	bEventIDs   = []byte("event_ids")   // event id -> received_ms(8): the small dedupe index
	bStates     = []byte("states")      // state key -> mapping.State, sealed
	bDeliveries = []byte("deliveries")  // event's key (ms | id) | destination -> Delivery (keys.go)
	bDue        = []byte("due")         // nested per destination: next_ms(8) delivery key -> nil
	bAttempts   = []byte("attempts")    // delivery's stored key 0 n(4) -> Attempt, sealed with its event's key
	bUsers      = []byte("users")       // user key (Sealer.UserKey) -> User, sealed
	bWaiting    = []byte("waiting")     // user key 0 delivery key -> nil
	bUserEvents = []byte("user_events") // user key 0 event id -> nil (privacy erasure)
	bMeta       = []byte("meta")        // name -> value
	bErasures   = []byte("erasures")    // inbox key -> erasureJob, sealed (queued privacy erasures)
	bFwdMemory  = []byte("fwd_memory")  // destination 0 hashed key -> unix_ms(8) (forwarders.Memory)
	bOrder      = []byte("order")       // destination 0 order key 0 event_ms(8) delivery key -> nil (unfinished ordered deliveries)
)

var allBuckets = [][]byte{bInbox, bInboxIDs, bAltKeys, bEvents, bEventIDs, bStates, bDeliveries, bDue, bAttempts, bUsers, bWaiting, bUserEvents, bMeta, bErasures, bFwdMemory, bOrder}

// Options configure a DB. The zero value is usable: nil fields get defaults.
type Options struct {
	// Map maps notifications; default mapping.Map.
	Map mapping.Func
	// Route returns the destinations an event goes to; default none.
	Route func(e *mapping.Event) []string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives store logs; default slog.Default().
	Logger *slog.Logger
	// OpenTimeout bounds the wait for the file lock; default 1s.
	OpenTimeout time.Duration
	// MaxBatch bounds operations per commit; default 1000.
	MaxBatch int
	// OrderKey, when set, returns the ordering key of an event's delivery
	// to dest ("" for none): deliveries with the same key are claimed one
	// at a time in event-time order (see Queue).
	OrderKey func(dest string, e *mapping.Event) string
	// commitHook, in tests, runs inside the writer's transaction at the
	// start of each prepared ingest.
	commitHook func(n *mapping.Notification) error
	// KeyFile is the data key file; default path + ".keys" (see
	// package vault). It is not part of the database file or its backups.
	KeyFile string
	// OnCommit, when set, is called after each commit with the destinations
	// that got new due work, so dispatchers wake without polling.
	OnCommit func(dests []string)
}

// DB is the gateway's BoltDB store. It owns a single writer goroutine that
// commits whatever operations are queued in one transaction (group commit):
// concurrent ingests share one fsync pair, and an idle writer never waits.
type DB struct {
	bolt   *bolt.DB
	opts   Options
	ops    chan *op
	done   chan struct{}
	closed chan struct{}
	once   sync.Once
	mu     sync.RWMutex // guards closing vs. submit
	isShut bool
	keys   *vault.KeyFile // data keys, beside the file (path + ".keys")
	seal   *Sealer
	users  userCache // decoded identity records (users.go)
	// preparedOutcomes counts outcomes written as Complete prepared them
	// (for tests).
	preparedOutcomes atomic.Int64
}

type op struct {
	apply func(tx *bolt.Tx) error
	err   error
	wake  *[]string // destinations woken by this op, read after commit
	done  chan struct{}
	// keys is the key file generation the op's records were sealed at
	// (prepared outside the writer, apply creates no key); 0 means apply
	// may create keys itself, and the commit syncs every key written.
	keys uint64
}

// Open opens (creating if needed) the database at path. A second process on
// the same file gets ErrLocked after OpenTimeout instead of hanging.
func Open(path string, opts *Options) (*DB, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.Map == nil {
		o.Map = mapping.Map
	}
	if o.Route == nil {
		o.Route = func(*mapping.Event) []string { return nil }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = time.Second
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 1000
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", dir, err)
		}
	}
	if err := preflight(path); err != nil {
		return nil, err
	}
	if err := walkFile(path, &o); err != nil {
		return nil, err
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         o.OpenTimeout,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 8 << 30, // virtual only: no remap stall (which waits for every reader) below 8 GiB
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (stop the other postback, or point storage.path elsewhere)", ErrLocked, path)
	}
	if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) || errors.Is(err, bolterrors.ErrVersionMismatch) {
		return nil, damaged(path, err.Error())
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	probe := &DB{bolt: bdb, opts: o}
	var keys *vault.KeyFile
	err = probe.guard(func() error {
		return bdb.Update(func(tx *bolt.Tx) error {
			for _, b := range allBuckets {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			var err error
			keys, err = openKeys(tx, path, o.KeyFile)
			return err
		})
	})
	if err != nil {
		if keys != nil {
			keys.Close()
		}
		bdb.Close()
		if errors.Is(err, ErrKeys) {
			return nil, err
		}
		return nil, fmt.Errorf("store: initialise %s: %w", path, err)
	}
	// Make the new file's directory entry durable before accepting traffic.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	db := &DB{bolt: bdb, opts: o, ops: make(chan *op, 4096), done: make(chan struct{}), closed: make(chan struct{}),
		keys: keys, seal: NewSealer(keys)}
	if err := db.upgrade(); err != nil {
		keys.Close()
		bdb.Close()
		return nil, fmt.Errorf("store: upgrade %s: %w", path, err)
	}
	go db.writer()
	return db, nil
}

// Close stops the writer after the queued operations and closes the file.
func (db *DB) Close() error {
	var err error
	db.once.Do(func() {
		db.mu.Lock()
		db.isShut = true
		close(db.done)
		db.mu.Unlock()
		<-db.closed
		err = errors.Join(db.bolt.Close(), db.keys.Close())
	})
	return err
}

// Path returns the database file path.
func (db *DB) Path() string { return db.bolt.Path() }

// submit queues apply for the next group commit and waits for it. apply must
// either succeed or return an error before writing anything, because other
// operations share its transaction.
func (db *DB) submit(ctx context.Context, apply func(tx *bolt.Tx) error, wake *[]string) error {
	return db.submitSealed(ctx, apply, wake, 0)
}

// submitSealed is submit for an op whose records were sealed before it
// was queued, with keys of key file generation keys at most (see op.keys).
func (db *DB) submitSealed(ctx context.Context, apply func(tx *bolt.Tx) error, wake *[]string, keys uint64) error {
	o := &op{apply: apply, wake: wake, done: make(chan struct{}), keys: keys}
	db.mu.RLock()
	if db.isShut {
		db.mu.RUnlock()
		return ErrClosed
	}
	select {
	case db.ops <- o:
	case <-ctx.Done():
		db.mu.RUnlock()
		return ctx.Err()
	}
	db.mu.RUnlock()
	// Once queued the op will be committed or failed; wait for the result
	// even if ctx ends, so a caller never reports failure for a committed op.
	<-o.done
	return o.err
}

func (db *DB) writer() {
	defer close(db.closed)
	batch := make([]*op, 0, db.opts.MaxBatch)
	for {
		var first *op
		select {
		case first = <-db.ops:
		case <-db.done:
			// Drain what was queued before Close.
			for {
				select {
				case o := <-db.ops:
					db.commit([]*op{o})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < db.opts.MaxBatch {
			select {
			case o := <-db.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		db.commit(batch)
	}
}

// softError marks an op failure that must not abort the shared transaction
// (the op wrote nothing).
type softError struct{ err error }

func (e softError) Error() string { return e.err.Error() }
func (e softError) Unwrap() error { return e.err }

// appendFill is the fill percent of the buckets keyed by time (events,
// inbox items, deliveries and their attempts): new records go to their
// end, so a page that splits there is left nearly full instead of half
// full (bbolt's default, right for random keys), with room for a record
// rewritten a little longer (a delivery's outcome).
const appendFill = 0.9

// appendOrdered sets appendFill on tx's time-ordered buckets; tx hands out
// the same bucket for the rest of the transaction.
func appendOrdered(tx *bolt.Tx) {
	for _, name := range [][]byte{bEvents, bInbox, bDeliveries, bAttempts} {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = appendFill
		}
	}
}

// commit runs a batch in one transaction. If the transaction fails, each op
// is retried alone so one bad op cannot fail its neighbours.
func (db *DB) commit(batch []*op) {
	err := db.guard(func() error {
		return db.bolt.Update(func(tx *bolt.Tx) error {
			appendOrdered(tx)
			var need uint64
			for _, o := range batch {
				if o.keys == 0 {
					need = math.MaxUint64
				} else {
					need = max(need, o.keys)
				}
				o.err = o.apply(tx)
				var se softError
				if o.err != nil && !errors.As(o.err, &se) {
					return o.err
				}
			}
			// Data keys made for this batch's records are durable before
			// the records are. Records sealed outside the writer need only
			// the keys of their own generation, which the key file's
			// background sync has usually made durable by now; keys other
			// requests are creating meanwhile are not waited for.
			if need == math.MaxUint64 {
				return db.keys.Sync()
			}
			return db.keys.SyncTo(need)
		})
	})
	if err != nil && len(batch) > 1 && !errors.Is(err, ErrDamaged) {
		for _, o := range batch {
			db.commit([]*op{o})
		}
		return
	}
	var woken []string
	for _, o := range batch {
		if err != nil {
			o.err = err
		}
		var se softError
		if errors.As(o.err, &se) {
			o.err = se.err
		}
		if err == nil && o.wake != nil {
			woken = append(woken, *o.wake...)
		}
		close(o.done)
	}
	if err == nil && len(woken) > 0 && db.opts.OnCommit != nil {
		db.opts.OnCommit(dedupe(woken))
	}
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	out := s[:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// Ping proves the store is writable by committing a heartbeat.
func (db *DB) Ping(ctx context.Context) error {
	return db.submit(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bMeta).Put([]byte("heartbeat"), msKey(db.opts.Now()))
	}, nil)
}

// Check runs bbolt's consistency check (the test and reliability suites).
//
// It runs in a write transaction that is rolled back: bbolt's check compares
// the pages it reaches with the in-memory free list, which a concurrent
// writer changes, so a check from a read transaction while the gateway
// writes can report pages "reachable freed" that are not.
func (db *DB) Check() error {
	return db.guard(func() error {
		if err := db.bolt.View(walk); err != nil {
			return err
		}
		return checkAll(db.bolt)
	})
}

func checkAll(b *bolt.DB) error {
	tx, err := b.Begin(true)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var errs []error
	for err := range tx.Check() {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// walkFile reads every reachable page of an existing file through a
// read-only handle, in this goroutine, before the file is opened for
// writing: bbolt's write-mode open rebuilds the free list by scanning the
// pages in a goroutine of its own, where a damaged page would crash the
// process. A damaged page is found here as ErrDamaged, at the cost of one
// more read of the file.
func walkFile(path string, o *Options) error {
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		return nil // new (preflight refused an empty one)
	}
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: o.OpenTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("%w: %s (stop the other postback, or point storage.path elsewhere)", ErrLocked, path)
	}
	if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) || errors.Is(err, bolterrors.ErrVersionMismatch) {
		return damaged(path, err.Error())
	}
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	defer ro.Close()
	probe := &DB{bolt: ro, opts: *o}
	if err := probe.guard(func() error { return ro.View(walk) }); err != nil {
		if !errors.Is(err, ErrDamaged) {
			err = damaged(path, err.Error())
		}
		return err
	}
	return nil
}

// walk reads every key and value of every bucket, nested ones included, so
// that each reachable branch, leaf and overflow page is read once.
func walk(tx *bolt.Tx) error {
	var sum byte
	var bucket func(b *bolt.Bucket)
	bucket = func(b *bolt.Bucket) {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					bucket(nb)
				}
				continue
			}
			if len(v) > 0 {
				sum ^= v[0] ^ v[len(v)-1]
			}
		}
	}
	err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
		bucket(b)
		return nil
	})
	_ = sum
	return err
}

func msKey(t time.Time) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(t.UnixMilli()))
	return k
}

func timeKey(t time.Time, rest string) []byte {
	return append(msKey(t), rest...)
}

// putJSON and getJSON store records that carry nothing personal
// (deliveries, attempts); the others go through the Sealer.
func putJSON(b *bolt.Bucket, key []byte, v any) error {
	if err := plainRecord(v); err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	if err := plainRecord(v); err != nil {
		return false, err
	}
	if key == nil {
		return false, nil // a delivery whose event is not stored
	}
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	return true, json.Unmarshal(data, v)
}

// plainRecord refuses a record type that must be sealed.
func plainRecord(v any) error {
	switch v.(type) {
	case *mapping.Event, *mapping.State, *mapping.Notification, *User, *erasureJob, *Attempt, Attempt:
		return fmt.Errorf("store: %T must be stored through the Sealer", v)
	}
	return nil
}
