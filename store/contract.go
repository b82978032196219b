package store

import (
	"context"
	"time"

	"github.com/postback/postback/mapping"
)

// The store contract. Both backends implement Store: *DB (BoltDB, the
// embedded default: one process, one file) and pgstore.DB (PostgreSQL,
// several replicas on one database). Each consumer depends on the narrowest
// of the interfaces below; the conformance suite in store/storetest runs
// the same behaviour tests against both backends.

// Ingester is what the source handlers need: store a verified notification
// (dedupe, mapping, events, state and deliveries in one durable
// transaction) and read a subscription's state before ingesting.
type Ingester interface {
	Ingest(ctx context.Context, n *mapping.Notification) (IngestResult, error)
	State(key string) (mapping.State, bool, error)
}

// Enricher is what a deferred source (Google: the Play Developer API answer)
// needs to finish an inbox item.
type Enricher interface {
	Pending(source string, limit int) ([]mapping.Notification, error)
	Enrich(ctx context.Context, source, key string, enriched []byte) (IngestResult, error)
}

// ClaimOptions select what one dispatcher pass takes.
type ClaimOptions struct {
	// Limit bounds the deliveries returned.
	Limit int
	// Lease is how long a claim holds a delivery before another dispatcher
	// (another replica) may take it again.
	Lease time.Duration
	// MaxInFlight caps the destination's claimed deliveries across every
	// replica (concurrency × batch size); 0 means no cap. A single-process
	// store leaves the cap to the dispatcher.
	MaxInFlight int
	// Answered lists the caller's leased deliveries whose destination has
	// answered (their outcome is being recorded): they keep their lease,
	// but no longer count against MaxInFlight, which caps requests the
	// destination has not answered yet.
	Answered []string
	// Skip reports keys the caller already holds (its in-memory leases).
	Skip func(key string) bool
}

// Queue is what the dispatcher needs: claim due work, give back what it
// did not send, record outcomes.
//
// Ordering keys: a delivery created with an ordering key (Options.OrderKey;
// Adjust: device and event token) is claimed only when no delivery of the
// same destination and key is in flight and none with an earlier event time
// is still unfinished, so deliveries of one key go one at a time in
// event-time order while different keys still go in parallel.
type Queue interface {
	Claim(ctx context.Context, dest string, now time.Time, o ClaimOptions) ([]Due, error)
	Release(ctx context.Context, keys []string) error
	Complete(ctx context.Context, cs []Completion) error
	NextDue(dest string) time.Time
	Queue(dest string) (QueueStats, error)
}

// Reader is what the admin API and console read.
type Reader interface {
	Events(f EventFilter) (EventPage, error)
	Event(id string) (mapping.Event, error)
	Notification(source, key string) (*mapping.Notification, error)
	NotificationOf(e *mapping.Event) (*mapping.Notification, error)
	EventDeliveries(eventID string) ([]Delivery, error)
	Delivery(key string) (Delivery, error)
	Attempts(key string) ([]Attempt, error)
	Deliveries(f DeliveryFilter) ([]Delivery, error)
	Stats(since, until time.Time, bucket time.Duration) (Stats, error)
	DeadCounts() (map[string]int, error)
	// DeliveryLog lists deliveries joined with their events, newest event
	// first, with the total of matching deliveries (see LogFilter).
	DeliveryLog(f LogFilter) (LogPage, error)
	// DeadGroups counts dead deliveries per destination and reason, with
	// a sample delivery per group; destination, when set, narrows them.
	DeadGroups(destination string) ([]DeadGroup, error)
}

// Operator is what the admin API changes: replays and reprocessing.
type Operator interface {
	Replay(ctx context.Context, key string) (Delivery, error)
	ReplayMatching(ctx context.Context, f DeliveryFilter, perSecond float64, dryRun bool, progress func(done, total int)) (int, error)
	Reprocess(ctx context.Context, f ReprocessFilter) (ReprocessResult, error)
	// Expedite makes a destination's pending and retrying deliveries due
	// at now (after an operator resumes it) and returns how many moved.
	Expedite(ctx context.Context, dest string, now time.Time) (int, error)
}

// Users is the identity store and privacy deletion.
type Users interface {
	PutUser(ctx context.Context, appUserID string, ids map[string]string) (User, error)
	GetUser(appUserID string) (User, error)
	DeleteUser(ctx context.Context, appUserID string) (int, error)
}

// Maintenance is the background work: retention, queued erasures, health.
type Maintenance interface {
	Prune(ctx context.Context, retention time.Duration) (PruneResult, error)
	PendingErasures() (int, error)
	EraseStep(ctx context.Context) (more bool, done *ErasureDone, err error)
	// Ping proves the store is writable (readiness).
	Ping(ctx context.Context) error
	// Check runs the backend's consistency check.
	Check() error
}

// Memory is a forwarder's durable memory (forwarders.Memory): a time per
// key that only ever advances.
type Memory interface {
	Get(key string) (time.Time, bool, error)
	Put(key string, at time.Time) error
}

// Coordinator is how background jobs run once across replicas.
type Coordinator interface {
	// Singleton runs fn if no other process of the cluster is running the
	// job name, and reports whether it ran. A single-process store always
	// runs it. The claim ends when fn returns or the process dies.
	Singleton(ctx context.Context, name string, fn func(ctx context.Context)) (bool, error)
	ForwarderMemory(name string) Memory
}

// Store is the whole contract.
type Store interface {
	Ingester
	Enricher
	Queue
	Reader
	Operator
	Users
	Maintenance
	Coordinator
	// Describe names the backend for logs ("bolt ./data/postback.db",
	// "postgres db@host"), never with a password.
	Describe() string
	Close() error
}

var _ Store = (*DB)(nil)

// Claim returns due deliveries of dest (see Queue). BoltDB has one process,
// whose dispatcher keeps its leases in memory (o.Skip), so claiming writes
// nothing; ordering keys are honoured from the order index.
func (db *DB) Claim(_ context.Context, dest string, now time.Time, o ClaimOptions) ([]Due, error) {
	return db.DueFor(dest, now, o.Limit, o.Skip)
}

// Release is a no-op on BoltDB: claims live in the dispatcher's memory.
func (db *DB) Release(context.Context, []string) error { return nil }

// Singleton runs fn: one process owns a BoltDB file.
func (db *DB) Singleton(ctx context.Context, _ string, fn func(ctx context.Context)) (bool, error) {
	fn(ctx)
	return true, nil
}

// Describe names the backend.
func (db *DB) Describe() string { return "bolt " + db.Path() }

// SharedHealth is a destination's delivery control state as replicas
// share it: the hold (throttle, open circuit, pause probe), the circuit
// and the pause.
type SharedHealth struct {
	HoldUntil time.Time
	Circuit   string // closed | open | half-open
	Cooldown  time.Duration
	Paused    bool
	PausedWhy string
}

// Cluster is what a store shared by several replicas offers the
// dispatcher so that limits hold for the whole cluster, not per replica.
// BoltDB (one process) does not implement it.
type Cluster interface {
	// TakeTokens takes up to n tokens from dest's token bucket (refilled at
	// perSecond up to burst) and returns how many it got and, when none,
	// how long until one is there.
	TakeTokens(ctx context.Context, dest string, n int, perSecond float64, burst int) (granted int, wait time.Duration, err error)
	// LoadHealth and SaveHealth read and write the shared state.
	LoadHealth(ctx context.Context, dest string) (SharedHealth, bool, error)
	SaveHealth(ctx context.Context, dest string, h SharedHealth) error
	// TakeProbe lets one replica probe an open circuit whose hold ended
	// (now): the winner's hold moves to until, so the others keep waiting.
	TakeProbe(ctx context.Context, dest string, now, until time.Time) (bool, error)
	// SharedQueue returns dest's queue figures (Queue) as counted at most
	// maxAge ago by any replica; when they are older, this replica counts
	// them, while the others wait and then read its count. The gauges of
	// every replica cost one count per maxAge for the cluster.
	SharedQueue(ctx context.Context, dest string, maxAge time.Duration) (QueueStats, error)
}
