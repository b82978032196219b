package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"

	"github.com/postback/postback/config"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
)

// cmdMigrate applies the embedded PostgreSQL migrations (the gateway also
// applies them at start-up, under the same advisory lock).
func cmdMigrate(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("migrate", env)
	fs.Usage = func() { flagUsage(fs, "usage: postback migrate [--dry-run] [--config PATH | --dsn DSN]") }
	cfgPath := fs.String("config", "", "path to config.yaml (its storage.dsn is the database)")
	dsn := fs.String("dsn", "", "PostgreSQL DSN instead of storage.dsn (env DATABASE_URL works through ${DATABASE_URL} in config.yaml)")
	dryRun := fs.Bool("dry-run", false, "list the migrations and whether each is applied; change nothing")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dsn == "" {
		cfg, err := loadConfig(env, *cfgPath)
		if err != nil {
			fmt.Fprintln(env.Stderr, err)
			return 1
		}
		if cfg.Storage.Driver != config.DriverPostgres {
			fmt.Fprintf(env.Stderr, "postback: storage.driver is %q in %s: migrations are for PostgreSQL (set storage.driver: postgres and storage.dsn, or pass --dsn)\n", cfg.Storage.Driver, cfg.Path)
			return 2
		}
		*dsn = cfg.Storage.DSN
	}
	steps, err := pgstore.Migrate(ctx, *dsn, *dryRun, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback:", err)
		return 1
	}
	if *dryRun {
		pending := 0
		for _, s := range steps {
			state := "applied"
			if !s.Applied {
				state, pending = "pending", pending+1
			}
			fmt.Fprintf(env.Stdout, "%5d  %-8s %s\n", s.Version, state, s.Name)
		}
		fmt.Fprintf(env.Stdout, "%d pending (dry run: nothing applied)\n", pending)
		return 0
	}
	for _, s := range steps {
		fmt.Fprintf(env.Stdout, "%5d  applied  %s\n", s.Version, s.Name)
	}
	if len(steps) == 0 {
		fmt.Fprintln(env.Stdout, "schema is current: nothing to apply")
	}
	return 0
}

// cmdStore runs the store subcommands: copy, check, compact.
func cmdStore(ctx context.Context, env *Env, args []string) int {
	if len(args) > 0 && args[0] == "check" {
		return storeCheck(ctx, env, args[1:])
	}
	if len(args) > 0 && args[0] == "compact" {
		return storeCompact(env, args[1:])
	}
	fs := newFlags("store copy", env)
	fs.Usage = func() {
		flagUsage(fs, "usage: postback store copy --from ./data/postback.db --to postgres://...\n       postback store check [--file ./data/postback.db]\n       postback store compact [--file ./data/postback.db] [--keep-old]")
	}
	from := fs.String("from", "", "the BoltDB file to copy (stop the gateway that uses it first)")
	to := fs.String("to", "", "the PostgreSQL DSN to copy into (default storage.dsn of --config)")
	cfgPath := fs.String("config", "", "path to config.yaml (for the default --to)")
	if len(args) == 0 || args[0] != "copy" {
		fs.Usage()
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *from == "" {
		fmt.Fprintln(env.Stderr, "postback store copy: --from FILE is required")
		return 2
	}
	// The target's key-encryption key: storage.encryption_key of the
	// config, else $POSTBACK_ENCRYPTION_KEY.
	var keyCfg config.Storage
	if env.Getenv != nil {
		keyCfg.EncryptionKey, _ = env.Getenv("POSTBACK_ENCRYPTION_KEY")
	}
	if *to == "" || *cfgPath != "" {
		cfg, err := loadConfig(env, *cfgPath)
		if err != nil {
			fmt.Fprintln(env.Stderr, err)
			return 1
		}
		if *to == "" {
			if cfg.Storage.Driver != config.DriverPostgres || cfg.Storage.DSN == "" {
				fmt.Fprintln(env.Stderr, "postback store copy: --to DSN is required (or a config with storage.driver: postgres and storage.dsn)")
				return 2
			}
			*to = cfg.Storage.DSN
		}
		if cfg.Storage.Driver == config.DriverPostgres {
			keyCfg.EncryptionKey = cfg.Storage.EncryptionKey
		}
	}
	kek, err := keyCfg.EncryptionKeyBytes()
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback store copy: storage.encryption_key:", err)
		return 2
	}
	quiet := slog.New(slog.DiscardHandler)
	src, err := store.Open(*from, &store.Options{Logger: quiet, OpenTimeout: 2e9})
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(env.Stderr, "postback store copy: %s is in use: stop the gateway that uses it, then copy\n", *from)
		return 1
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback store copy:", err)
		return 1
	}
	defer src.Close()
	dst, err := pgstore.Open(ctx, *to, &pgstore.Options{Options: store.Options{Logger: quiet}, PoolSize: 4, EncryptionKey: kek})
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback store copy:", err)
		return 1
	}
	defer dst.Close()
	// The records are copied sealed, as stored: their data keys and the
	// installation secret of their keyed hashes come first.
	keys, err := dst.ImportKeys(ctx, src.Keyring())
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback store copy:", err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "%-11s %8d keys,    %8d new\n", "data_keys", src.Keyring().Len(), keys)
	var total, fresh int
	for _, kind := range store.ExportKinds {
		var n, added int
		err := src.Export(ctx, kind, func(chunk []store.Record) error {
			c, err := dst.Import(ctx, chunk)
			n, added = n+len(chunk), added+c
			return err
		})
		if err != nil {
			fmt.Fprintf(env.Stderr, "postback store copy: %s: %v (run the same command again to resume)\n", kind, err)
			return 1
		}
		fmt.Fprintf(env.Stdout, "%-11s %8d records, %8d new\n", kind, n, added)
		total, fresh = total+n, fresh+added
	}
	fmt.Fprintf(env.Stdout, "copied %d records from %s to %s (%d new, %d already there)\n", total, *from, dst.Describe(), fresh, total-fresh)
	return 0
}

// cmdBackup writes a consistent copy of the BoltDB database: from the
// running gateway through the admin API (a hot backup), or with --db from
// a file no gateway holds.
func cmdBackup(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("backup", env)
	fs.Usage = func() { flagUsage(fs, "usage: postback backup --out FILE [--addr URL] [--db FILE]") }
	addr, _ := clientFlags(fs, env)
	out := fs.String("out", "", "file to write the copy to (required)")
	dbPath := fs.String("db", "", "copy this BoltDB file directly instead of asking the running gateway (stop the gateway first)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" {
		fmt.Fprintln(env.Stderr, "postback backup: --out FILE is required")
		return 2
	}
	tmp := *out + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback backup:", err)
		return 1
	}
	defer os.Remove(tmp)
	var n int64
	if *dbPath != "" {
		// The copy holds no data keys: the key file is backed up on its own.
		n, err = store.BackupFile(*dbPath, f)
		if err != nil {
			f.Close()
			fmt.Fprintln(env.Stderr, "postback backup:", err)
			return 1
		}
	} else {
		c, err := newAdminClient(env, *addr)
		if err != nil {
			f.Close()
			return exitErr(env, err)
		}
		if n, err = c.download(ctx, "/admin/api/store/backup", f); err != nil {
			f.Close()
			return exitErr(env, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		fmt.Fprintln(env.Stderr, "postback backup:", err)
		return 1
	}
	f.Close()
	// The copy must check out before it replaces anything (it holds no
	// data keys, so it is checked without them).
	if err := store.CheckFile(tmp); err != nil {
		fmt.Fprintf(env.Stderr, "postback backup: the copy does not check out (%v); nothing written to %s\n", err, *out)
		return 1
	}
	if err := os.Rename(tmp, *out); err != nil {
		fmt.Fprintln(env.Stderr, "postback backup:", err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "wrote %s (%d bytes), checked\n", *out, n)
	fmt.Fprintln(env.Stdout, "the data keys are not in the backup: restore it beside the gateway's key file (storage.path + \".keys\"); see README, Backups")
	return 0
}

// download streams an admin API answer into w.
func (c *adminClient) download(ctx context.Context, path string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.addr+path, nil)
	if err != nil {
		return 0, &clientError{status: http.StatusBadRequest, code: "usage", msg: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := (&http.Client{}).Do(req) // no overall timeout: a large file takes long
	if err != nil {
		return 0, &clientError{err: fmt.Errorf("cannot reach the gateway at %s: %w", c.addr, errors.Unwrap(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error struct{ Code, Message string }
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = json.Unmarshal(data, &eb)
		return 0, &clientError{status: resp.StatusCode, code: eb.Error.Code, msg: eb.Error.Message}
	}
	return io.Copy(w, resp.Body)
}

// storeCheck checks a store: a BoltDB file no gateway holds (--file), or
// the running gateway's store through the admin API.
func storeCheck(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("store check", env)
	fs.Usage = func() { flagUsage(fs, "usage: postback store check [--file FILE] [--addr URL]") }
	addr, asJSON := clientFlags(fs, env)
	file := fs.String("file", "", "check this BoltDB file directly (stop the gateway that uses it first)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file != "" {
		// Without the data key file: a backup holds none.
		if err := store.CheckFile(*file); err != nil {
			fmt.Fprintln(env.Stderr, "postback store check:", err)
			return 1
		}
		fmt.Fprintf(env.Stdout, "%s: ok\n", *file)
		return 0
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	var res struct {
		OK     bool   `json:"ok"`
		Store  string `json:"store"`
		Error  string `json:"error"`
		TookMs int64  `json:"took_ms"`
	}
	if err := c.do(ctx, http.MethodPost, "/admin/api/store/check", nil, nil, &res); err != nil {
		return exitErr(env, err)
	}
	if *asJSON {
		printJSON(env.Stdout, res)
	} else if res.OK {
		fmt.Fprintf(env.Stdout, "%s: ok (%d ms)\n", res.Store, res.TookMs)
	} else {
		fmt.Fprintf(env.Stdout, "%s: DAMAGED: %s\n", res.Store, res.Error)
	}
	if !res.OK {
		return 1
	}
	return 0
}

// storeCompact rewrites a BoltDB file without its freed pages (which still
// hold erased bytes); the gateway must be stopped.
func storeCompact(env *Env, args []string) int {
	fs := newFlags("store compact", env)
	fs.Usage = func() { flagUsage(fs, "usage: postback store compact [--file FILE] [--keep-old]") }
	file := fs.String("file", "", "the BoltDB file (default storage.path of --config)")
	cfgPath := fs.String("config", "", "path to config.yaml")
	keep := fs.Bool("keep-old", false, "keep the old file as FILE.before-compact (it still holds the erased bytes)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		cfg, err := loadConfig(env, *cfgPath)
		if err != nil {
			fmt.Fprintln(env.Stderr, err)
			return 1
		}
		if cfg.Storage.Driver == config.DriverPostgres {
			fmt.Fprintln(env.Stderr, "postback store compact: storage.driver is postgres: PostgreSQL reuses freed space itself; to rewrite tables without dead rows run VACUUM FULL (it locks each table while it runs)")
			return 2
		}
		*file = cfg.Storage.Path
	}
	before, after, err := store.Compact(*file, *keep)
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(env.Stderr, "postback store compact: %s is in use: stop the gateway, compact, start it again\n", *file)
		return 1
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback store compact:", err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "compacted %s: %d -> %d bytes; freed pages (and the bytes erasures left in them) are gone\n", *file, before, after)
	return 0
}
