package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/postback/postback/config"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
)

// cmdMigrate applies the embedded PostgreSQL migrations (the gateway also
// applies them at start-up, under the same advisory lock).
func cmdMigrate(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("migrate", env)
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

// cmdStore runs the store subcommands: copy.
func cmdStore(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("store copy", env)
	fs.Usage = func() { flagUsage(fs, "usage: postback store copy --from ./data/postback.db --to postgres://...") }
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
	if *to == "" {
		cfg, err := loadConfig(env, *cfgPath)
		if err != nil {
			fmt.Fprintln(env.Stderr, err)
			return 1
		}
		if cfg.Storage.Driver != config.DriverPostgres || cfg.Storage.DSN == "" {
			fmt.Fprintln(env.Stderr, "postback store copy: --to DSN is required (or a config with storage.driver: postgres and storage.dsn)")
			return 2
		}
		*to = cfg.Storage.DSN
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
	dst, err := pgstore.Open(ctx, *to, &pgstore.Options{Options: store.Options{Logger: quiet}, PoolSize: 4})
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback store copy:", err)
		return 1
	}
	defer dst.Close()
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
