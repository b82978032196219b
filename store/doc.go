// Package store is Postback's durable state on BoltDB: the inbox of verified
// notifications, canonical events, per-subscription state, deliveries with a
// per-destination due-time index, the attempt log and the identity store.
//
// One writer goroutine owns every write. It commits whatever operations are
// queued in a single transaction (group commit) and never waits when idle, so
// concurrent ingests share one fsync pair instead of paying one each. Ingest
// returns only after its commit is on disk: a caller may acknowledge the
// source then, and a crash at any instant loses nothing acknowledged.
//
// Ingest maps outside the writer: against a read snapshot, recording the
// bytes of every subscription state the mapping read, and encodes every
// record. The writer then checks for a duplicate, re-checks that those
// states are unchanged, and stores the encoded records; if a state changed
// (another notification of the subscription committed in between), the
// notification is mapped again, and after three conflicts in a row it is
// mapped inside the writer. Two notifications of one subscription thus
// apply one after the other, and the writer does little besides commit.
//
// Caveats a user of this package must know:
//   - Only one process may open the file; a second gets ErrLocked after
//     Options.OpenTimeout instead of hanging.
//   - Keys are fixed-width big-endian times followed by ids, so cursors scan
//     in time order; values are JSON.
//   - Read transactions are kept short (listings scan at most maxScan keys)
//     because a long reader pins pages and stalls remaps.
//   - Nothing is in flight durably: a delivery's due key stays until its
//     outcome is committed, so a delivery in progress at a crash is retried
//     after restart (at least once).
package store
