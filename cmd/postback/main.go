// Command postback is the store-notification webhook gateway.
//
//	postback serve [--config PATH]       run the gateway
//	postback check-config [--strict] [--config PATH]
//	postback version | --version
//	postback help [COMMAND]
//
// plus the admin clients and tools listed by `postback help`. With no
// arguments it prints the command list and exits 2: it never starts a
// server unless told `serve`.
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
	"strings"
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
	// token is --token of the admin clients (else POSTBACK_ADMIN_TOKEN).
	token string
}

// command runs one subcommand and returns the process exit code.
type command struct {
	run     func(ctx context.Context, env *Env, args []string) int
	summary string
}

// commands lists every subcommand: one line each.
var commands = map[string]command{
	"serve":        {cmdServe, "run the gateway"},
	"check-config": {cmdCheckConfig, "validate config.yaml (every error, with its line) and print it with secrets redacted; --strict for production"},
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
	"store":        {cmdStore, "store copy --from FILE --to DSN: move a BoltDB installation to PostgreSQL (resumable); store check: consistency check; store compact: drop freed pages"},
	"backup":       {cmdBackup, "write a checked, consistent copy of the BoltDB database while the gateway runs: backup --out FILE"},
	"healthcheck":  {cmdHealthcheck, "exit 0 when the gateway at --addr is ready (GET /readyz): the Docker HEALTHCHECK"},
	"requests":     {cmdRequests, "recent inbound webhook requests: accepted, ignored, rejected with their reason (admin API client)"},
	"send":         {cmdSend, "sign and post a sample store notification to a running gateway: send stripe invoice.paid --to URL"},
	"reconcile":    {cmdReconcile, "find Google Play refunds that RTDN missed (gateway stopped): reconcile google --since 72h"},
}

func main() {
	if pct, ok := gcPercent(os.LookupEnv); ok {
		debug.SetGCPercent(pct)
	}
	if n, ok := maxProcs(os.LookupEnv, runtime.GOMAXPROCS(0)); ok {
		runtime.GOMAXPROCS(n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], &Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.LookupEnv})
	stop()
	os.Exit(code)
}

// defaultGCPercent is the garbage collector's target when GOGC is not set.
// The gateway's live heap is small (about 10 MB), so with Go's default of
// 100 the collector starts every ~10 MB allocated: at full ingest its mark
// work took 9.4 % of the CPU; at 400 it takes 2 %, for a heap that peaks
// near five times the live heap (about 50 MB) instead of twice.
const defaultGCPercent = 400

// gcPercent returns the GC target to set: defaultGCPercent unless the
// environment sets GOGC (the runtime then follows it; GOMEMLIMIT applies
// either way).
func gcPercent(lookup func(string) (string, bool)) (int, bool) {
	if _, set := lookup("GOGC"); set {
		return 0, false
	}
	return defaultGCPercent, true
}

// maxProcs returns the number of Ps to run when GOMAXPROCS is not set:
// one more than the runtime's default (the CPUs, or the container's CPU
// limit). The store's writer spends much of its time in fdatasync, and a
// goroutine in a system call keeps its P until the runtime's monitor
// takes it back, which under a steady load of commits can take
// milliseconds: on two cores the gateway then used 1.45 of them, and
// durable ingest ran 25 % slower, with the other goroutines waiting to
// run. The spare P is used only while another is held by a system call.
// The runtime's own default then no longer follows a changed CPU limit.
func maxProcs(lookup func(string) (string, bool), def int) (int, bool) {
	if _, set := lookup("GOMAXPROCS"); set {
		return 0, false
	}
	return def + 1, true
}

// Main dispatches to a subcommand; it is main without the process.
func Main(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 {
		// Never a server by surprise: `postback serve` runs one.
		usage(env.Stderr)
		return 2
	}
	name, args := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		usage(env.Stdout)
		return 0
	case "-version", "--version":
		return cmdVersion(ctx, env, nil)
	case "help":
		if len(args) == 0 {
			usage(env.Stdout)
			return 0
		}
		c, ok := commands[args[0]]
		if !ok {
			return unknownCommand(env, args[0])
		}
		// The command's own usage and flags, on stdout, exit 0.
		henv := *env
		henv.Stderr = env.Stdout
		c.run(ctx, &henv, []string{"-h"})
		return 0
	}
	c, ok := commands[name]
	if !ok {
		return unknownCommand(env, name)
	}
	return c.run(ctx, env, args)
}

func unknownCommand(env *Env, name string) int {
	fmt.Fprintf(env.Stderr, "postback: unknown command %q\n\n", name)
	usage(env.Stderr)
	return 2
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
	fmt.Fprintln(w, "\nflags:\n  -h, --help     this list\n  --version      same as 'postback version'\n\nRun 'postback help <command>' for a command's usage and flags.")
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
	// One usage format for every command; commands with positional
	// arguments replace the first line with theirs.
	fs.Usage = func() { flagUsage(fs, "usage: postback "+name+" [flags]") }
	return fs
}

// flagUsage prints "usage: ..." lines, then the flags.
func flagUsage(fs *flag.FlagSet, lines ...string) {
	w := fs.Output()
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w, "\nflags:")
	fs.PrintDefaults()
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
	g, err := server.New(cfg, server.Options{Logger: log, Version: version, Commit: buildCommit(), Reload: func() (*config.Config, error) { return loadConfig(env, *cfgPath) }})
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
	strict := fs.Bool("strict", false, "also fail on placeholders from the example configuration, disabled destinations or sources, and an empty destination list")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "postback: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	path, allowDefault := configPath(env, *cfgPath)
	cfg, err := config.LoadForCheck(path, env.Getenv, allowDefault)
	if err != nil && (cfg == nil || !errors.Is(err, config.ErrInvalid)) {
		fmt.Fprintln(env.Stderr, err)
		return 1
	}
	// Every problem at once: the file's, the forwarders' and Apple's.
	problems := config.Problems(err)
	if _, err := server.BuildDestinations(cfg, nil, nil); err != nil {
		problems = append(problems, strings.Split(cfg.AnnotateLines(err.Error()), "\n")...)
	}
	if cfg.Sources.Apple.Enabled {
		// Parses the roots (fingerprint of the embedded one) and the .p8 key.
		if _, err := webhooks.NewApple(cfg.Sources.Apple, cfg.Storage.Retention.D(), webhooks.Deps{}); err != nil {
			problems = append(problems, cfg.AnnotateLines(err.Error()))
		}
	}
	if *strict {
		problems = append(problems, cfg.Placeholders()...)
		for _, d := range cfg.Disabled {
			problems = append(problems, "disabled: "+d)
		}
		enabled := 0
		for _, d := range cfg.Destinations {
			if d.Disabled == "" {
				enabled++
			}
		}
		if enabled == 0 {
			problems = append(problems, fmt.Sprintf("destinations (line %d): no destination is enabled; events would be stored and sent nowhere", cfg.Line("destinations")))
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(env.Stderr, "%s: %d problem(s):\n", cfg.Path, len(problems))
		for _, p := range problems {
			fmt.Fprintln(env.Stderr, "  "+p)
		}
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

// buildCommit is -X main.commit, else the binary's VCS revision, else
// "unknown".
func buildCommit() string {
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
	return c
}

func cmdVersion(_ context.Context, env *Env, args []string) int {
	fs := newFlags("version", env)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := buildCommit()
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
