package store

import (
	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
)

// State reads one per-subscription state outside any ingest ("apple:" +
// originalTransactionId, ...). A source handler uses it to learn, before
// ingesting, whether it must look something up (the Apple webhook asks the
// App Store Server API for a subscription's history only when no state
// exists). The answer may be stale by the time the notification is mapped;
// the mapping itself always reads state inside the ingest transaction.
func (db *DB) State(key string) (mapping.State, bool, error) {
	var st mapping.State
	var ok bool
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		ok, err = db.getState(tx.Bucket(bStates), []byte(key), &st)
		return err
	})
	return st, ok, err
}
