// Package pgstore is Postback's PostgreSQL store: the same contract as the
// BoltDB store (store.Store) on a database that several gateway replicas
// share.
//
// How replicas share the work:
//   - Ingest is one READ COMMITTED transaction: the inbox row is inserted
//     first (INSERT ... ON CONFLICT DO NOTHING on its primary key, then its
//     alternative ids), so a notification that reaches two replicas at once
//     is stored by one and recognised as a duplicate by the other, which
//     waits on the unique index until the first commits. Mapping runs
//     before the transaction, against the states as they are, recording
//     each state's version; the transaction writes a state only if its
//     version still holds (an insert only if it is still absent) and
//     share-locks the states it only read, each after that key's
//     transaction-scoped advisory lock. A conflict maps again; after three
//     in a row the mapping runs inside the transaction under those locks.
//     So notifications of one subscription apply one after the other,
//     whichever replica has them. Events are inserted with ON CONFLICT DO NOTHING
//     (a fact reported twice is stored once) together with their
//     deliveries, the states and the inbox document; the caller
//     acknowledges only after COMMIT returned (synchronous_commit on).
//   - Dispatchers claim due deliveries with SELECT ... FOR UPDATE SKIP
//     LOCKED under a per-destination advisory lock, setting leased_until
//     from the database clock; the claim counts the destination's live
//     leases, so concurrency × batch size holds for the cluster. A replica
//     that dies leaves leases that expire, and another replica retries
//     with the same idempotency key. Commits that queue work NOTIFY the
//     channel postback_due with the destination; every replica LISTENs and
//     wakes its dispatcher.
//   - Ordering keys: a delivery whose destination and key have an earlier
//     unfinished delivery is not claimable, and the head is claimable only
//     when it is not leased.
//   - Rate limits, circuit state and pauses live in rows (rate_buckets,
//     destination_health) that every replica reads and updates in single
//     statements (cluster.go).
//   - Retention pruning, erasure steps, Google enrichment passes and
//     reconcile run under pg_try_advisory_lock, held on one session: one
//     replica at a time, and a replica that dies releases its locks with
//     its connections.
package pgstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// notifyChannel is the LISTEN/NOTIFY channel that wakes dispatchers.
const notifyChannel = "postback_due"

// migrationLockID is the advisory lock under which migrations run, so that
// replicas starting together apply them once.
const migrationLockID = 0x706f73746261636b // "postback"

// Errors that name what is wrong with the database and how to fix it.
var (
	ErrUnreachable = errors.New("pgstore: cannot reach PostgreSQL")
	ErrAuth        = errors.New("pgstore: PostgreSQL refused the credentials")
	ErrNoDatabase  = errors.New("pgstore: database does not exist")
	ErrReadOnly    = errors.New("pgstore: the server is read-only")
	ErrSchemaNewer = errors.New("pgstore: the database schema is newer than this binary")
	ErrDSN         = errors.New("pgstore: invalid storage.dsn")
)

// Options configure a DB; the embedded store.Options mean what they mean
// for BoltDB (Map, Route, OrderKey, Now, Logger, OnCommit).
type Options struct {
	store.Options
	// PoolSize bounds the connections of this replica; default 10.
	PoolSize int
	// Owner names this replica in lease rows; default host:pid.
	Owner string
	// NoMigrate skips applying migrations at Open (the schema must then
	// be current).
	NoMigrate bool
	// EncryptionKey (storage.encryption_key, 32 bytes) wraps the data
	// keys; without it a random key kept in the database does (see
	// keyring.go).
	EncryptionKey []byte
	// migrateOnly opens the database for `postback migrate`: no keyring.
	migrateOnly bool
}

// DB is the PostgreSQL store.
type DB struct {
	pool   *pgxpool.Pool
	opts   Options
	where  string // user@host:port/db, for messages
	dsn    string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
	keys   *keyring
	seal   *store.Sealer

	completions completions
}

var _ store.Store = (*DB)(nil)

// Open connects to the database named by dsn (URL or key=value form; TLS
// parameters such as sslmode, sslrootcert are honoured), checks that it is
// reachable and writable, applies the embedded migrations under an advisory
// lock, and starts listening for wake-ups.
func Open(ctx context.Context, dsn string, o *Options) (*DB, error) {
	opts := Options{}
	if o != nil {
		opts = *o
	}
	if opts.Map == nil {
		opts.Map = mapping.Map
	}
	if opts.Route == nil {
		opts.Route = func(*mapping.Event) []string { return nil }
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = 10
	}
	if opts.Owner == "" {
		h, _ := os.Hostname()
		opts.Owner = fmt.Sprintf("%s:%d:%08x", h, os.Getpid(), rand.Uint32())
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %v (use postgres://user:password@host:5432/dbname?sslmode=verify-full or host=... user=... dbname=...)", ErrDSN, redactErr(err, dsn))
	}
	cfg.MaxConns = int32(opts.PoolSize)
	cfg.ConnConfig.RuntimeParams["application_name"] = "postback"
	// A 2xx means COMMIT returned with the commit durable.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	db := &DB{opts: opts, where: where(cfg.ConnConfig), dsn: dsn, completions: completions{rounds: make(chan struct{}, completeRounds)}}
	db.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDSN, redactErr(err, dsn))
	}
	if err := db.check(ctx); err != nil {
		db.pool.Close()
		return nil, err
	}
	if !opts.NoMigrate {
		if _, err := db.migrate(ctx, false, nil); err != nil {
			db.pool.Close()
			return nil, err
		}
	} else if err := db.schemaCurrent(ctx); err != nil {
		db.pool.Close()
		return nil, err
	}
	if !opts.migrateOnly {
		if db.keys, err = openKeyring(ctx, cfg, opts.EncryptionKey, db.where, opts.Logger); err != nil {
			db.pool.Close()
			return nil, err
		}
		db.seal = store.NewSealer(db.keys)
		if err := db.upgrade(ctx); err != nil {
			db.keys.Close()
			db.pool.Close()
			return nil, err
		}
		if err := db.sealAttempts(ctx); err != nil {
			db.keys.Close()
			db.pool.Close()
			return nil, err
		}
	}
	lctx, cancel := context.WithCancel(context.Background())
	db.cancel = cancel
	db.wg.Add(1)
	go db.listen(lctx)
	return db, nil
}

// where describes a connection target without its password.
func where(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s/%s", c.User, net.JoinHostPort(c.Host, fmt.Sprint(c.Port)), c.Database)
}

// redactErr hides the DSN's password should a driver error quote it.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if c, perr := pgx.ParseConfig(dsn); perr == nil && c.Password != "" {
		msg = strings.ReplaceAll(msg, c.Password, "[redacted]")
	}
	return msg
}

// check connects once and classifies the failure: unreachable, refused
// credentials, missing database, read-only server.
func (db *DB) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return db.classify(err)
	}
	defer conn.Release()
	var ro string
	var recovery bool
	if err := conn.QueryRow(ctx, "SELECT current_setting('transaction_read_only'), pg_is_in_recovery()").Scan(&ro, &recovery); err != nil {
		return db.classify(err)
	}
	if ro == "on" || recovery {
		return fmt.Errorf("%w: %s accepts no writes (a standby or a read-only user/database); point storage.dsn at the primary", ErrReadOnly, db.where)
	}
	return nil
}

func (db *DB) classify(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01", "28000":
			return fmt.Errorf("%w: %s: %s (check the user and password in storage.dsn / DATABASE_URL, and pg_hba.conf)", ErrAuth, db.where, pe.Message)
		case "3D000":
			return fmt.Errorf("%w: %s: %s (create it: createdb, or CREATE DATABASE, then start again)", ErrNoDatabase, db.where, pe.Message)
		case "25006":
			return fmt.Errorf("%w: %s: %s (point storage.dsn at the primary)", ErrReadOnly, db.where, pe.Message)
		}
		return fmt.Errorf("pgstore: %s: %w", db.where, err)
	}
	return fmt.Errorf("%w at %s: %v (is the server running, and are storage.dsn's host and port right? sslmode=disable for a local server without TLS)", ErrUnreachable, db.where, err)
}

// Describe names the backend without the password.
func (db *DB) Describe() string { return "postgres " + db.where }

// Close stops listening, gives back this replica's leases (the process is
// ending: its sends in progress end with it, so another replica may retry
// them at once instead of after the lease) and closes the pool.
func (db *DB) Close() error {
	db.closed.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := db.pool.Exec(ctx, "UPDATE deliveries SET leased_until = NULL, lease_owner = NULL WHERE lease_owner = $1", db.opts.Owner); err != nil {
			db.opts.Logger.Warn("give back leases at close (they expire instead)", "err", err)
		}
		cancel()
		if db.cancel != nil {
			db.cancel()
		}
		db.wg.Wait()
		if db.keys != nil {
			db.keys.Close()
		}
		db.pool.Close()
	})
	return nil
}

// DSN returns the connection string the store was opened with (it may
// hold a password: never log it).
func (db *DB) DSN() string { return db.dsn }

// Pool exposes the connection pool (tests and store copy).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// MigrationStep is one migration as `postback migrate` reports it.
type MigrationStep struct {
	Version int64
	Name    string
	Applied bool
}

func (db *DB) provider() (*goose.Provider, *sql.DB, error) {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, nil, err
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID), lock.WithLockTimeout(1, 120))
	if err != nil {
		return nil, nil, err
	}
	sqldb := stdlib.OpenDBFromPool(db.pool)
	p, err := goose.NewProvider(goose.DialectPostgres, sqldb, sub,
		goose.WithSessionLocker(locker), goose.WithTableName("postback_schema"), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		sqldb.Close()
		return nil, nil, err
	}
	return p, sqldb, nil
}

// latest is the newest migration version this binary carries.
func latest(p *goose.Provider) int64 {
	var v int64
	for _, s := range p.ListSources() {
		v = max(v, s.Version)
	}
	return v
}

// schemaCurrent refuses a database whose schema is newer than the binary
// (a rollback to an older binary after a newer one migrated).
func (db *DB) schemaCurrent(ctx context.Context) error {
	p, sqldb, err := db.provider()
	if err != nil {
		return err
	}
	defer sqldb.Close()
	defer p.Close()
	return db.newer(ctx, p)
}

func (db *DB) newer(ctx context.Context, p *goose.Provider) error {
	cur, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: read schema version at %s: %w", db.where, err)
	}
	if want := latest(p); cur > want {
		return fmt.Errorf("%w: %s is at schema version %d, this postback knows up to %d; run the newer postback (or restore a backup from before the upgrade)", ErrSchemaNewer, db.where, cur, want)
	}
	return nil
}

// migrate applies pending migrations (or, with dryRun, lists them) under
// the migration advisory lock.
func (db *DB) migrate(ctx context.Context, dryRun bool, out io.Writer) ([]MigrationStep, error) {
	p, sqldb, err := db.provider()
	if err != nil {
		return nil, err
	}
	defer sqldb.Close()
	defer p.Close()
	if err := db.newer(ctx, p); err != nil {
		return nil, err
	}
	var steps []MigrationStep
	if dryRun {
		st, err := p.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("pgstore: migration status at %s: %w", db.where, err)
		}
		for _, s := range st {
			steps = append(steps, MigrationStep{Version: s.Source.Version, Name: baseName(s.Source.Path), Applied: s.State == goose.StateApplied})
		}
		return steps, nil
	}
	res, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgstore: migrate %s: %w", db.where, err)
	}
	for _, r := range res {
		steps = append(steps, MigrationStep{Version: r.Source.Version, Name: baseName(r.Source.Path), Applied: true})
		db.opts.Logger.Info("schema migrated", "version", r.Source.Version, "name", baseName(r.Source.Path), "took", r.Duration.Round(time.Millisecond))
	}
	return steps, nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// Migrate connects to dsn and applies the pending migrations; with dryRun
// it only reports each migration and whether it is applied.
func Migrate(ctx context.Context, dsn string, dryRun bool, logger *slog.Logger) ([]MigrationStep, error) {
	db, err := Open(ctx, dsn, &Options{Options: store.Options{Logger: logger}, PoolSize: 2, NoMigrate: true, migrateOnly: true})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return db.migrate(ctx, dryRun, nil)
}

// retryable reports errors after which the whole transaction may simply be
// run again: serialization failures and deadlocks.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// inTx runs fn in a transaction, again on a serialization failure or a
// deadlock (fn must be safe to re-run: it sees a fresh transaction).
func (db *DB) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, db.pool, fn)
		if err == nil || !retryable(err) || attempt >= 20 {
			return err
		}
		time.Sleep(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6))))
	}
}

// notifySQL queues, for each destination in $1, a wake-up of every
// replica's dispatcher, sent by PostgreSQL when the transaction commits.
// The payload is the destination, a tab and the notifying replica's
// Owner ($2): the replica that committed wakes its own dispatcher at once
// (woke) and skips its echo.
const notifySQL = "SELECT pg_notify('" + notifyChannel + "', d || E'\\t' || $2) FROM unnest($1::text[]) AS d"

// notify queues the wake-up of dests (notifySQL).
func (db *DB) notify(ctx context.Context, tx dbtx, dests []string) error {
	if len(dests) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, notifySQL, dedupe(dests), db.opts.Owner)
	return err
}

// notified reads a NOTIFY payload: the destination to wake, unless this
// replica sent it (see notifySQL). A payload without an owner (a replica
// of an earlier version) wakes.
func (db *DB) notified(payload string) (string, bool) {
	dest, owner, _ := strings.Cut(payload, "\t")
	return dest, owner != db.opts.Owner
}

func dedupe(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := make([]string, 0, len(s))
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// woke tells this process's dispatcher at once (the NOTIFY reaches the
// other replicas).
func (db *DB) woke(dests []string) {
	if len(dests) > 0 && db.opts.OnCommit != nil {
		db.opts.OnCommit(dedupe(dests))
	}
}

// listen waits for NOTIFY on a dedicated connection and wakes the
// dispatcher; it reconnects with backoff while the database is away.
func (db *DB) listen(ctx context.Context) {
	defer db.wg.Done()
	if db.opts.OnCommit == nil {
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := db.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		db.opts.Logger.Warn("LISTEN connection lost; dispatchers poll until it is back", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is dedicated to LISTEN: it leaves the pool for good.
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if dest, ok := db.notified(n.Payload); ok {
			db.opts.OnCommit([]string{dest})
		}
	}
}

// lockKey maps a name to an advisory lock key.
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("postback:" + name))
	return int64(h.Sum64())
}

// singletonCheck is how often Singleton checks that the session holding
// its lock is alive; it is well below the retry interval of the jobs that
// wait for the lock (server.leader: 5s).
var singletonCheck = time.Second

// Singleton runs fn while holding the session advisory lock of name, if no
// other session (replica) holds it; it reports whether fn ran. A replica
// that dies loses its session and so its locks. A session that dies under
// a live replica (PostgreSQL restarted, the connection cut) loses the lock
// too, and another replica may take the job: fn's context is then
// cancelled, within singletonCheck, so the job does not run twice.
func (db *DB) Singleton(ctx context.Context, name string, fn func(ctx context.Context)) (bool, error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	key := lockKey(name)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
		return false, err
	}
	if !ok {
		return false, nil
	}
	fctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		// fn does not use conn: the watchdog alone talks on it until fn
		// has returned.
		defer close(watched)
		t := time.NewTicker(singletonCheck)
		defer t.Stop()
		for {
			select {
			case <-fctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := context.WithTimeout(fctx, singletonCheck)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil && fctx.Err() == nil {
				db.opts.Logger.Warn("background job: its lock's database session was lost; stopping it (a replica takes it over)", "job", name, "err", err)
				cancel()
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-watched
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key); err != nil {
			// The session keeps the lock (or is gone): close it rather
			// than return a locked connection to the pool.
			_ = conn.Conn().Close(context.Background())
		}
	}()
	fn(fctx)
	return true, nil
}

// Ping proves the database is reachable and writable: it commits a
// heartbeat.
func (db *DB) Ping(ctx context.Context) error {
	_, err := db.pool.Exec(ctx, "INSERT INTO meta (name, value) VALUES ('heartbeat', $1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
		db.opts.Now().UTC().Format(time.RFC3339Nano))
	return err
}

// Check looks for records that break the store's invariants: deliveries
// without their event, unfinished deliveries without a due time, final
// ones with one.
func (db *DB) Check() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	checks := []struct{ what, q string }{
		{"deliveries without their event", "SELECT count(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id)"},
		{"unfinished deliveries without a due time", "SELECT count(*) FROM deliveries WHERE state NOT IN ('delivered','dead','skipped') AND next_at_ms IS NULL"},
		{"final deliveries still due", "SELECT count(*) FROM deliveries WHERE state IN ('delivered','dead','skipped') AND next_at_ms IS NOT NULL"},
		{"attempts without their delivery", "SELECT count(*) FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.key = a.delivery_key)"},
	}
	var errs []error
	for _, c := range checks {
		var n int
		if err := db.pool.QueryRow(ctx, c.q).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			errs = append(errs, fmt.Errorf("pgstore: %d %s", n, c.what))
		}
	}
	return errors.Join(errs...)
}

// dbtx is a transaction: pgx.Tx, or a pipe that sends BEGIN and COMMIT
// with its first and last batch.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// pipe is a transaction on one connection whose BEGIN travels with its
// first statements and whose COMMIT travels with its last batch (see
// commitWith), saving two round trips per ingest.
type pipe struct {
	conn      *pgxpool.Conn
	begun     bool
	committed bool
}

func (p *pipe) begin(ctx context.Context) error {
	if p.begun {
		return nil
	}
	p.begun = true
	_, err := p.conn.Exec(ctx, "BEGIN")
	return err
}

func (p *pipe) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := p.begin(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return p.conn.Exec(ctx, sql, args...)
}

func (p *pipe) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := p.begin(ctx); err != nil {
		return nil, err
	}
	return p.conn.Query(ctx, sql, args...)
}

func (p *pipe) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := p.begin(ctx); err != nil {
		return errRow{err}
	}
	return p.conn.QueryRow(ctx, sql, args...)
}

// SendBatch sends b, preceded by BEGIN when the transaction has not begun.
func (p *pipe) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if p.begun {
		return p.conn.SendBatch(ctx, b)
	}
	p.begun = true
	nb := &pgx.Batch{}
	nb.Queue("BEGIN")
	nb.QueuedQueries = append(nb.QueuedQueries, b.QueuedQueries...)
	br := p.conn.SendBatch(ctx, nb)
	if _, err := br.Exec(); err != nil {
		return failedBatch{br, err}
	}
	return br
}

// commitWith sends b followed by COMMIT (a pipe) or just b (a pgx.Tx,
// which its caller commits).
func commitWith(ctx context.Context, tx dbtx, b *pgx.Batch) error {
	p, ok := tx.(*pipe)
	if !ok {
		return tx.SendBatch(ctx, b).Close()
	}
	b.Queue("COMMIT")
	err := p.SendBatch(ctx, b).Close()
	if err == nil {
		p.committed = true
	}
	return err
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type failedBatch struct {
	pgx.BatchResults
	err error
}

func (f failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, f.err }
func (f failedBatch) Query() (pgx.Rows, error)         { return nil, f.err }
func (f failedBatch) QueryRow() pgx.Row                { return errRow{f.err} }
func (f failedBatch) Close() error {
	_ = f.BatchResults.Close()
	return f.err
}

// inPipe runs fn in a pipe transaction on one connection, again on a
// serialization failure or a deadlock. fn ends the transaction with
// commitWith; if it returns without committing, the transaction is
// committed (nil error) or rolled back (an error) here.
func (db *DB) inPipe(ctx context.Context, fn func(tx dbtx) error) error {
	for attempt := 0; ; attempt++ {
		err := db.pipeOnce(ctx, fn)
		if err == nil || !retryable(err) || attempt >= 20 {
			return err
		}
		time.Sleep(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6))))
	}
}

func (db *DB) pipeOnce(ctx context.Context, fn func(tx dbtx) error) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	p := &pipe{conn: conn}
	err = fn(p)
	if err == nil && !p.committed && p.begun {
		_, err = conn.Exec(ctx, "COMMIT")
		if err == nil {
			return nil
		}
	}
	if err != nil && p.begun && !p.committed {
		// Whatever failed, the connection goes back to the pool outside
		// any transaction, or not at all.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if _, rerr := conn.Exec(rctx, "ROLLBACK"); rerr != nil {
			_ = conn.Conn().Close(rctx)
		}
		cancel()
	}
	return err
}
