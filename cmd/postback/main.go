// Command postback is the store-notification webhook gateway.
//
//	postback [serve] [--config PATH]     run the gateway (default)
//	postback check-config [--config PATH]
//	postback version
//
// plus the admin clients and tools listed by `postback help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"syscall"

	"github.com/postback/postback/config"
	"github.com/postback/postback/server"
	"github.com/postback/postback/webhooks"
)

// Env is what a command may use from the outside world, injected so that
// commands are testable in-process.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) (string, bool)
}

// command runs one subcommand and returns the process exit code.
type command struct {
	run     func(ctx context.Context, env *Env, args []string) int
	summary string
}

// commands lists every subcommand: one line each.
var commands = map[string]command{
	"serve":        {cmdServe, "run the gateway (the default)"},
	"check-config": {cmdCheckConfig, "validate config.yaml and print it with secrets redacted"},
	"version":      {cmdVersion, "print version, commit and Go version"},
	"reprocess":    {cmdReprocess, "re-map stored notifications after a mapping fix (admin API client)"},
	"events":       {cmdEvents, "list events, or show one with its deliveries (admin API client)"},
	"deliveries":   {cmdDeliveries, "the deliveries log: filter by state (held too), destination, type, source, time; search by id; page; --export csv|json (admin API client)"},
	"dead":         {cmdDead, "dead letters grouped by destination and reason, with the last response (admin API client)"},
	"replay":       {cmdReplay, "replay deliveries by key or by filter, with --dry-run (admin API client)"},
	"demo":         {cmdDemo, "run a gateway with mock sources and destinations, no accounts needed"},
	"destinations": {cmdDestinations, "destination health; 'destinations test NAME' sends a test event (admin API client)"},
	"backfill":     {cmdBackfill, "recover Apple notifications missed during an outage: backfill apple --since 72h"},
	"bench":        {cmdBench, "load-test a gateway with signed notifications, or --self with an in-process one"},
	"migrate":      {cmdMigrate, "apply the PostgreSQL schema migrations (--dry-run lists them)"},
	"store":        {cmdStore, "store copy --from FILE --to DSN: move a BoltDB installation to PostgreSQL (resumable)"},
	"reconcile":    {cmdReconcile, "find Google Play refunds that RTDN missed (gateway stopped): reconcile google --since 72h"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], &Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.LookupEnv})
	stop()
	os.Exit(code)
}

// Main dispatches to a subcommand; it is main without the process.
func Main(ctx context.Context, args []string, env *Env) int {
	name := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if name == "help" || name == "-h" || name == "--help" {
		usage(env.Stdout)
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(env.Stderr, "postback: unknown command %q\n\n", name)
		usage(env.Stderr)
		return 2
	}
	return c.run(ctx, env, args)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: postback <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'postback <command> -h' for a command's flags.")
}

// configPath resolves --config, then POSTBACK_CONFIG, then ./config.yaml.
func configPath(env *Env, flagValue string) (string, bool) {
	if flagValue != "" {
		return flagValue, false
	}
	if p, ok := env.Getenv("POSTBACK_CONFIG"); ok && p != "" {
		return p, false
	}
	// The default path may be missing: then the embedded default runs.
	return "config.yaml", true
}

func loadConfig(env *Env, flagValue string) (*config.Config, error) {
	path, allowDefault := configPath(env, flagValue)
	return config.Load(path, env.Getenv, allowDefault)
}

func newFlags(name string, env *Env) *flag.FlagSet {
	fs := flag.NewFlagSet("postback "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

func cmdServe(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("serve", env)
	cfgPath := fs.String("config", "", "path to config.yaml (env POSTBACK_CONFIG; default ./config.yaml, else the embedded default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err != nil {
		fmt.Fprintln(env.Stderr, err)
		return 1
	}
	log := server.NewLogger(env.Stderr, cfg.Log, cfg.Secrets())
	// SIGHUP and POST /admin/api/reload read the same file again.
	g, err := server.New(cfg, server.Options{Logger: log, Reload: func() (*config.Config, error) { return loadConfig(env, *cfgPath) }})
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	if err := g.Run(ctx, nil); err != nil {
		log.Error("gateway stopped with an error", "err", err)
		return 1
	}
	return 0
}

func cmdCheckConfig(_ context.Context, env *Env, args []string) int {
	fs := newFlags("check-config", env)
	cfgPath := fs.String("config", "", "path to config.yaml")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(env, *cfgPath)
	if err == nil {
		_, err = server.BuildDestinations(cfg, nil, nil)
	}
	if err == nil && cfg.Sources.Apple.Enabled {
		// Parses the roots (fingerprint of the embedded one) and the .p8 key.
		_, err = webhooks.NewApple(cfg.Sources.Apple, cfg.Storage.Retention.D(), webhooks.Deps{})
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, err)
		return 1
	}
	out, err := cfg.Redacted()
	if err != nil {
		fmt.Fprintln(env.Stderr, err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "# resolved from %s; secrets redacted\n%s", cfg.Path, out)
	for _, d := range cfg.Disabled {
		fmt.Fprintf(env.Stderr, "disabled: %s\n", d)
	}
	fmt.Fprintln(env.Stderr, "config OK")
	return 0
}

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

func cmdVersion(_ context.Context, env *Env, _ []string) int {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	fmt.Fprintf(env.Stdout, "postback %s (commit %s, %s %s/%s)\n", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}

// exitErr prints err and returns the exit code for it: 1 for failures the
// server reported, 2 for usage errors, 3 when the gateway is unreachable.
func exitErr(env *Env, err error) int {
	fmt.Fprintln(env.Stderr, "postback:", err)
	var ce *clientError
	if errors.As(err, &ce) {
		return ce.exitCode()
	}
	return 1
}
