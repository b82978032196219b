package store

import (
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ForwarderMemory is the durable memory of one destination's forwarder (see
// forwarders.Memory): a time per key, in bFwdMemory under "name\x00key".
// Entries older than storage.retention are pruned: no delivery that old is
// still pending.
type ForwarderMemory struct {
	db     *DB
	prefix string
}

// ForwarderMemory returns the memory of destination name.
func (db *DB) ForwarderMemory(name string) Memory {
	return &ForwarderMemory{db: db, prefix: name + "\x00"}
}

// Get reads the time stored for key.
func (m *ForwarderMemory) Get(key string) (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := m.db.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bFwdMemory).Get([]byte(m.prefix + m.db.seal.HashMemoryKey(key))); len(v) == 8 {
			at, ok = time.UnixMilli(int64(binary.BigEndian.Uint64(v))), true
		}
		return nil
	})
	return at, ok, err
}

// Put stores at for key unless a later time is already stored: a key only
// ever advances, whatever order concurrent writers commit in.
func (m *ForwarderMemory) Put(key string, at time.Time) error {
	k := []byte(m.prefix + m.db.seal.HashMemoryKey(key))
	return m.db.submit(context.Background(), func(tx *bolt.Tx) error {
		b := tx.Bucket(bFwdMemory)
		if v := b.Get(k); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= at.UnixMilli() {
			return nil
		}
		return b.Put(k, msKey(at))
	}, nil)
}

// pruneMemory deletes forwarder memory entries older than cutoff (Unix ms),
// up to pruneChunk per call, resuming after from; it returns where to resume,
// or nil when done.
func pruneMemory(tx *bolt.Tx, cutoff uint64, from []byte, deleted *int) ([]byte, error) {
	b := tx.Bucket(bFwdMemory)
	c := b.Cursor()
	k, v := seekAfter(c, from)
	var old [][]byte
	var last []byte
	for i := 0; k != nil && i < pruneChunk; i++ {
		last = k
		if len(v) != 8 || binary.BigEndian.Uint64(v) < cutoff {
			old = append(old, append([]byte(nil), k...))
		}
		k, v = c.Next()
	}
	var next []byte
	if k != nil {
		next = append([]byte(nil), last...)
	}
	return next, deleteKeys(b, old, deleted)
}

func deleteKeys(b *bolt.Bucket, keys [][]byte, deleted *int) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
		*deleted++
	}
	return nil
}
