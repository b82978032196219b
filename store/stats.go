package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Stats summarises the events received in a time window and what became of
// their deliveries: the console's overview.
type Stats struct {
	Since  time.Time     `json:"since"`
	Until  time.Time     `json:"until"`
	Bucket time.Duration `json:"bucket_ns"`
	// Buckets[i] counts, by event type, the events received in
	// [Since+i*Bucket, Since+(i+1)*Bucket).
	Buckets []map[string]int `json:"buckets"`
	// Events is the number of events in the window.
	Events int `json:"events"`
	// Deliveries counts the deliveries of those events by destination, then
	// state.
	Deliveries map[string]map[string]int `json:"deliveries"`
	// Truncated is set when the window held more than maxStatsScan events;
	// the counts then cover only the newest of them.
	Truncated bool `json:"truncated,omitempty"`
}

// maxStatsScan bounds the events one Stats call reads so that the overview
// never holds a read transaction for long.
const maxStatsScan = 200000

// Stats counts the events received in [since, until) in buckets of the given
// width (at least one minute) and the states of their deliveries.
func (db *DB) Stats(since, until time.Time, bucket time.Duration) (Stats, error) {
	if bucket < time.Minute {
		bucket = time.Minute
	}
	if !until.After(since) {
		until = since.Add(bucket)
	}
	n := int((until.Sub(since) + bucket - 1) / bucket)
	s := Stats{Since: since.UTC(), Until: until.UTC(), Bucket: bucket, Buckets: make([]map[string]int, n), Deliveries: map[string]map[string]int{}}
	for i := range s.Buckets {
		s.Buckets[i] = map[string]int{}
	}
	err := db.view(func(tx *bolt.Tx) error {
		events, deliveries := tx.Bucket(bEvents), tx.Bucket(bDeliveries)
		c := events.Cursor()
		end := uint64(until.UnixMilli())
		// Newest first, so that a truncated window keeps the recent hours.
		k, _ := c.Seek(msKey(until))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		start := uint64(since.UnixMilli())
		for ; k != nil; k, _ = c.Prev() {
			ms := binary.BigEndian.Uint64(k[:8])
			if ms < start {
				break
			}
			if ms >= end {
				continue
			}
			if s.Events >= maxStatsScan {
				s.Truncated = true
				break
			}
			var e struct {
				Type string `json:"type"`
			}
			if v := events.Get(k); v == nil || json.Unmarshal(ClearPart(v), &e) != nil {
				continue
			}
			i := int(time.Duration(ms-start) * time.Millisecond / bucket)
			if i >= 0 && i < n {
				s.Buckets[i][e.Type]++
			}
			s.Events++
			prefix := deliveriesOf(k)
			dc := deliveries.Cursor()
			for dk, v := dc.Seek(prefix); dk != nil && bytes.HasPrefix(dk, prefix); dk, v = dc.Next() {
				var d struct {
					Destination string `json:"destination"`
					State       string `json:"state"`
				}
				if jsonUnmarshal(v, &d) != nil {
					continue
				}
				m := s.Deliveries[d.Destination]
				if m == nil {
					m = map[string]int{}
					s.Deliveries[d.Destination] = m
				}
				m[d.State]++
			}
		}
		return nil
	})
	return s, err
}

// DeadCounts counts dead deliveries per destination across the whole store
// (the dead-letter queue). It reads every delivery but decodes only the dead
// ones.
func (db *DB) DeadCounts() (map[string]int, error) {
	out := map[string]int{}
	marker := []byte(`"state":"` + StateDead + `"`)
	err := db.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bDeliveries).ForEach(func(_, v []byte) error {
			if !bytes.Contains(v, marker) {
				return nil
			}
			var d Delivery
			if jsonUnmarshal(v, &d) == nil && d.State == StateDead {
				out[d.Destination]++
			}
			return nil
		})
	})
	return out, err
}

// FileStats is the BoltDB file's page accounting, in KiB, and optionally
// the number of keys in each top-level bucket: what a long run's file size
// and bbolt's free-list bookkeeping follow.
type FileStats struct {
	FileKiB    int64          `json:"file_kib"`    // the data file's size as bbolt sees it
	FreeKiB    int64          `json:"free_kib"`    // free pages, reusable now
	PendingKiB int64          `json:"pending_kib"` // freed by recent commits, reusable once older readers finish
	InUseKiB   int64          `json:"in_use_kib"`  // the rest: live data and its tree
	Keys       map[string]int `json:"keys,omitempty"`
}

// FileStats reads the page accounting; with keys it also counts every
// top-level bucket's keys (a walk of the whole file).
func (db *DB) FileStats(keys bool) (FileStats, error) {
	var fs FileStats
	kib := int64(db.bolt.Info().PageSize) / 1024
	st := db.bolt.Stats()
	fs.FreeKiB, fs.PendingKiB = int64(st.FreePageN)*kib, int64(st.PendingPageN)*kib
	err := db.view(func(tx *bolt.Tx) error {
		fs.FileKiB = tx.Size() / 1024
		if keys {
			fs.Keys = map[string]int{}
			for _, name := range allBuckets {
				if b := tx.Bucket(name); b != nil {
					fs.Keys[string(name)] = b.Stats().KeyN
				}
			}
		}
		return nil
	})
	fs.InUseKiB = fs.FileKiB - fs.FreeKiB - fs.PendingKiB
	return fs, err
}
