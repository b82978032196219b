package pgstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postback/postback/store/vault"
)

// The PostgreSQL keyring keeps the data keys in data_keys, each wrapped
// (vault.Wrap) with the key-encryption key (KEK): storage.encryption_key
// when set, else a random KEK made once and kept in the installation row
// (then a copy of the database holds what unwraps its keys). The
// installation secret of the keyed hashes is in that row too, wrapped, the
// same for every replica.
//
// Keys are created and read on a pool of their own, in autocommit
// statements: a key is committed before any record sealed with it, and a
// transaction that needs a key never waits for a connection its own pool
// may not have. A destroyed key is deleted in the erasing transaction,
// which also NOTIFYs keysChannel; every replica LISTENs there and drops the
// key from its cache. The cache is used only while that LISTEN connection
// is up (it is emptied whenever it is (re)established), so a replica never
// uses a cached key another replica destroyed, beyond the moment between
// the erasure's commit and the notification's arrival.

// keysChannel carries the hex ids of destroyed data keys.
const keysChannel = "postback_keys"

// keyCacheSize bounds the cached (unwrapped) data keys of a replica.
const keyCacheSize = 100_000

// ErrEncryptionKey reports a key-encryption key that does not fit the
// database.
var ErrEncryptionKey = errors.New("pgstore: storage.encryption_key")

// secretKID binds the wrapped installation secret (vault.Wrap's data).
var secretKID = vault.KID{'p', 'o', 's', 't', 'b', 'a', 'c', 'k', '-', 's', 'e', 'c', 'r', 'e', 't'}

type keyring struct {
	pool   *pgxpool.Pool
	kek    *[32]byte
	secret []byte
	logger *slog.Logger

	mu    sync.Mutex
	cache map[vault.KID]*[32]byte
	live  atomic.Bool // the LISTEN connection is up: the cache may be used

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ vault.Keyring = (*keyring)(nil)

// openKeyring opens the keyring of the database cfg names: it creates the
// installation row once (the first replica wins; the others read its
// secret) and checks that the KEK unwraps it.
func openKeyring(ctx context.Context, cfg *pgxpool.Config, encKey []byte, where string, logger *slog.Logger) (*keyring, error) {
	kc := cfg.Copy()
	kc.MaxConns = 4
	kc.MinConns = 0
	// Every statement of the keyring reads or writes keys by primary key,
	// most with "kid = ANY($1)", which PostgreSQL would otherwise plan
	// afresh on every execution (its generic plan assumes ten elements and
	// loses to each custom plan); the generic plan is the right one.
	kc.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pool, err := pgxpool.NewWithConfig(ctx, kc)
	if err != nil {
		return nil, err
	}
	kr := &keyring{pool: pool, logger: logger, cache: map[vault.KID]*[32]byte{}}
	if err := kr.load(ctx, encKey, where); err != nil {
		pool.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	kr.cancel = cancel
	kr.wg.Add(1)
	go kr.listen(lctx)
	return kr, nil
}

func (kr *keyring) load(ctx context.Context, encKey []byte, where string) error {
	var configured *[32]byte
	if len(encKey) > 0 {
		if len(encKey) != 32 {
			return fmt.Errorf("%w must be 32 bytes (base64), not %d", ErrEncryptionKey, len(encKey))
		}
		configured = new([32]byte)
		copy(configured[:], encKey)
	}
	// Made once: the first replica's insert wins, every other replica
	// reads what it wrote.
	kek := configured
	var storedKEK []byte
	if kek == nil {
		var err error
		if kek, err = vault.NewDataKey(); err != nil {
			return err
		}
		storedKEK = kek[:]
	}
	secret, err := vault.NewDataKey()
	if err != nil {
		return err
	}
	wrapped, err := vault.Wrap(kek, secretKID, secret)
	if err != nil {
		return err
	}
	if _, err := kr.pool.Exec(ctx, `INSERT INTO installation (id, secret, kek) VALUES (true, $1, $2) ON CONFLICT (id) DO NOTHING`, wrapped, storedKEK); err != nil {
		return fmt.Errorf("pgstore: installation row at %s: %w", where, err)
	}
	var rowKEK []byte
	if err := kr.pool.QueryRow(ctx, `SELECT secret, kek FROM installation WHERE id`).Scan(&wrapped, &rowKEK); err != nil {
		return fmt.Errorf("pgstore: installation row at %s: %w", where, err)
	}
	switch {
	case configured == nil && rowKEK == nil:
		return fmt.Errorf("%w is not set, but the data keys at %s are wrapped with it: set storage.encryption_key (POSTBACK_ENCRYPTION_KEY) to the key the other replicas use", ErrEncryptionKey, where)
	case configured == nil && len(rowKEK) != 32:
		return fmt.Errorf("pgstore: the installation row at %s holds a malformed key-encryption key", where)
	case configured == nil:
		kek = new([32]byte)
		copy(kek[:], rowKEK)
		kr.logger.Warn("storage.encryption_key is not set: the key that wraps the data keys is kept in the database itself, so a copy of the database (a backup, a dump) holds what unwraps them. Set storage.encryption_key (base64 of 32 random bytes) on a new database to keep it apart", "db", where)
	case rowKEK != nil:
		return fmt.Errorf("%w is set, but the data keys at %s are wrapped with a key kept in the database (it was first opened without storage.encryption_key): unset storage.encryption_key, or start from a new database", ErrEncryptionKey, where)
	}
	s, err := vault.Unwrap(kek, secretKID, wrapped)
	if err != nil {
		return fmt.Errorf("%w does not unwrap the keys at %s (it is not the key this database was made with): set storage.encryption_key to the key the other replicas use", ErrEncryptionKey, where)
	}
	kr.kek, kr.secret = kek, s[:]
	return nil
}

// Secret is the installation secret.
func (kr *keyring) Secret() []byte { return kr.secret }

func (kr *keyring) cached(kid vault.KID) *[32]byte {
	if !kr.live.Load() {
		return nil
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	return kr.cache[kid]
}

func (kr *keyring) remember(kid vault.KID, key *[32]byte) {
	if !kr.live.Load() {
		return
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if len(kr.cache) >= keyCacheSize {
		for k := range kr.cache { // an arbitrary one
			delete(kr.cache, k)
			break
		}
	}
	kr.cache[kid] = key
}

func (kr *keyring) forget(kids []vault.KID) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	for _, k := range kids {
		delete(kr.cache, k)
	}
}

func (kr *keyring) reset() {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	clear(kr.cache)
}

// DataKey returns kid's key; with create, a key that does not exist is
// made and committed (when two replicas race, both use the one that was
// inserted first).
func (kr *keyring) DataKey(kid vault.KID, create bool) (*[32]byte, error) {
	if k := kr.cached(kid); k != nil {
		return k, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if create {
		return kr.createKey(ctx, kid)
	}
	var wrapped []byte
	err := kr.pool.QueryRow(ctx, "SELECT wrapped FROM data_keys WHERE kid = $1", kid[:]).Scan(&wrapped)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", vault.ErrNoKey, kid)
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: read data key: %w", err)
	}
	key, err := vault.Unwrap(kr.kek, kid, wrapped)
	if err != nil {
		return nil, err
	}
	kr.remember(kid, key)
	return key, nil
}

// createKey makes kid's key unless it has one, and returns the key kid
// has then. The insert comes first (one round trip for a new subject's
// key); a key another replica inserted first is read back in the same
// round trip. Destroyed between the two, it is tried again.
func (kr *keyring) createKey(ctx context.Context, kid vault.KID) (*[32]byte, error) {
	key, err := vault.NewDataKey()
	if err != nil {
		return nil, err
	}
	for range 4 {
		got, err := kr.insertKeys(ctx, map[vault.KID]*[32]byte{kid: key})
		if err != nil {
			return nil, fmt.Errorf("pgstore: create data key: %w", err)
		}
		if k := got[kid]; k != nil {
			kr.remember(kid, k)
			return k, nil
		}
	}
	return nil, fmt.Errorf("pgstore: create data key: %w", pgx.ErrNoRows)
}

// MakeKeys makes the keys of kids that are not cached, in one round trip
// where DataKey takes one each, and caches them (see insertKeys). Without
// the cache (its LISTEN connection down) it does nothing: DataKey then
// reads each key anyway.
func (kr *keyring) MakeKeys(ctx context.Context, kids []vault.KID) error {
	if !kr.live.Load() {
		return nil
	}
	keys := map[vault.KID]*[32]byte{}
	for _, kid := range kids {
		if _, dup := keys[kid]; dup || kr.cached(kid) != nil {
			continue
		}
		key, err := vault.NewDataKey()
		if err != nil {
			return err
		}
		keys[kid] = key
	}
	if len(keys) == 0 {
		return nil
	}
	got, err := kr.insertKeys(ctx, keys)
	if err != nil {
		return fmt.Errorf("pgstore: create data keys: %w", err)
	}
	for kid, key := range got {
		kr.remember(kid, key)
	}
	return nil
}

// insertKeys inserts the keys of the kids that have none, in one
// transaction, and returns the key each kid has then: the one given, or
// the one another transaction inserted first, read back in a statement of
// its own after the COMMIT, in the same round trip (its snapshot sees that
// key). A kid whose key was destroyed between the two is missing. The
// insert commits without waiting for its WAL flush (synchronous_commit
// off): every record sealed with a key commits after it with
// synchronous_commit on, and flushing that commit's WAL flushes the key's,
// which comes before it in the WAL. A key whose insert is lost in a crash
// was used by no committed record.
func (kr *keyring) insertKeys(ctx context.Context, keys map[vault.KID]*[32]byte) (map[vault.KID]*[32]byte, error) {
	var ids, wrapped [][]byte
	for kid, key := range keys {
		w, err := vault.Wrap(kr.kek, kid, key)
		if err != nil {
			return nil, err
		}
		ids, wrapped = append(ids, append([]byte(nil), kid[:]...)), append(wrapped, w)
	}
	made := map[vault.KID]bool{}
	stored := map[vault.KID][]byte{}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit TO OFF")
	b.Queue(`INSERT INTO data_keys (kid, wrapped) SELECT * FROM unnest($1::bytea[], $2::bytea[])
		ON CONFLICT (kid) DO NOTHING RETURNING kid`, ids, wrapped).Query(func(rows pgx.Rows) error {
		var kid []byte
		_, err := pgx.ForEachRow(rows, []any{&kid}, func() error {
			made[vault.KID(kid)] = true
			return nil
		})
		return err
	})
	b.Queue("COMMIT")
	b.Queue(`SELECT kid, wrapped FROM data_keys WHERE kid = ANY($1)`, ids).Query(func(rows pgx.Rows) error {
		var kid, w []byte
		_, err := pgx.ForEachRow(rows, []any{&kid, &w}, func() error {
			stored[vault.KID(kid)] = append([]byte(nil), w...)
			return nil
		})
		return err
	})
	if err := kr.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	out := make(map[vault.KID]*[32]byte, len(keys))
	for kid, key := range keys {
		if made[kid] {
			out[kid] = key
			continue
		}
		w, ok := stored[kid]
		if !ok {
			continue
		}
		k, err := vault.Unwrap(kr.kek, kid, w)
		if err != nil {
			return nil, err
		}
		out[kid] = k
	}
	return out, nil
}

// Destroy deletes data keys for good (outside any erasure transaction:
// the store destroys them in its transactions with destroyTx).
func (kr *keyring) Destroy(kids []vault.KID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return destroyTx(ctx, kr.pool, kr, kids)
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// destroyTx deletes data keys in tx and tells every replica (at commit)
// to drop them from its cache; this replica drops them at once.
func destroyTx(ctx context.Context, tx execer, kr *keyring, kids []vault.KID) error {
	if len(kids) == 0 {
		return nil
	}
	ids := make([][]byte, len(kids))
	for i := range kids {
		ids[i] = kids[i][:]
	}
	kr.forget(kids)
	_, err := tx.Exec(ctx, `WITH gone AS (DELETE FROM data_keys WHERE kid = ANY($1) RETURNING kid)
		SELECT pg_notify('`+keysChannel+`', encode(kid, 'hex')) FROM gone`, ids)
	return err
}

// Sync does nothing: a key is committed when it is created.
func (kr *keyring) Sync() error { return nil }

// Close stops listening and closes the keyring's pool.
func (kr *keyring) Close() error {
	if kr.cancel != nil {
		kr.cancel()
	}
	kr.wg.Wait()
	kr.pool.Close()
	return nil
}

// listen keeps a LISTEN connection on keysChannel; the cache is used only
// while it is up.
func (kr *keyring) listen(ctx context.Context) {
	defer kr.wg.Done()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := kr.listenOnce(ctx)
		kr.live.Store(false)
		kr.reset()
		if ctx.Err() != nil {
			return
		}
		kr.logger.Warn("data key LISTEN connection lost; keys are read from the database until it is back", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (kr *keyring) listenOnce(ctx context.Context) error {
	conn, err := kr.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+keysChannel); err != nil {
		return err
	}
	// Whatever was destroyed while nobody listened is not in the cache.
	kr.reset()
	kr.live.Store(true)
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var kid vault.KID
		if b, err := hex.DecodeString(n.Payload); err == nil && len(b) == vault.KIDSize {
			copy(kid[:], b)
			kr.forget([]vault.KID{kid})
		} else {
			kr.reset()
		}
	}
}
