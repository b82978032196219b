package store

import (
	"context"

	"github.com/postback/postback/store/vault"
	bolt "go.etcd.io/bbolt"
)

// Record is one stored record as `postback store copy` moves it: its kind
// (the BoltDB bucket), key and value, exactly as stored (sealed records
// stay sealed: see Sealer and Keyring; keys that are keyed hashes stay
// hashed).
type Record struct {
	Kind  string
	Key   []byte
	Value []byte
}

// Record kinds, in the order an export yields them (inbox before events,
// events before their deliveries, deliveries before attempts).
const (
	KindInbox     = "inbox"
	KindEvent     = "events"
	KindState     = "states"
	KindDelivery  = "deliveries"
	KindAttempt   = "attempts"
	KindUser      = "users"
	KindErasure   = "erasures"
	KindFwdMemory = "fwd_memory"
)

// ExportKinds lists the kinds an export yields, in order.
var ExportKinds = []string{KindInbox, KindEvent, KindState, KindDelivery, KindAttempt, KindUser, KindErasure, KindFwdMemory}

// exportChunk bounds the records read in one read transaction, so an
// export of a large file never holds a reader long.
const exportChunk = 1000

// Keyring is the store's data key file: `postback store copy` moves its
// secret and keys with the records (which it copies sealed, as stored).
func (db *DB) Keyring() *vault.KeyFile { return db.keys }

// Export calls fn with every record of kind, in key order, a chunk at a
// time (each chunk read in its own short read transaction).
func (db *DB) Export(ctx context.Context, kind string, fn func(chunk []Record) error) error {
	var last []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var chunk []Record
		err := db.view(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(kind))
			if b == nil {
				return nil
			}
			c := b.Cursor()
			for k, v := seekAfter(c, last); k != nil && len(chunk) < exportChunk; k, v = c.Next() {
				chunk = append(chunk, Record{Kind: kind, Key: append([]byte(nil), k...), Value: append([]byte(nil), v...)})
			}
			return nil
		})
		if err != nil || len(chunk) == 0 {
			return err
		}
		if err := fn(chunk); err != nil {
			return err
		}
		last = chunk[len(chunk)-1].Key
		if len(chunk) < exportChunk {
			return nil
		}
	}
}
