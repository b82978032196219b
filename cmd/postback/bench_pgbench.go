package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgTarget is issue 12's target: durable ingest on PostgreSQL at half the
// rate of pgbench's insert-only transactions on the same database, with
// the same number of clients.
const pgTarget = 0.5

// pgbenchTable is the table the insert-only floor writes; it is made
// before pgbench runs and dropped after, so the gateway still finds an
// empty database.
const pgbenchTable = "postback_pgbench_floor"

// pgbenchScript is one transaction of the floor: pgbench's insert-only
// script, one row with an md5 text and bytea, autocommit.
const pgbenchScript = `INSERT INTO ` + pgbenchTable + ` (k, v) VALUES (md5(random()::text), decode(md5(random()::text), 'hex'));` + "\n"

var errNoPgbench = errors.New("pgbench not found on PATH or in /usr/lib/postgresql/*/bin: install PostgreSQL's server package (Debian: postgresql, which ships pgbench), or pass --pgbench /path/to/pgbench")

// findPgbench returns the pgbench to run: the one named, else the first on
// PATH, else the newest of Debian's /usr/lib/postgresql/*/bin.
func findPgbench(named string) (string, error) {
	isFile := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && !st.IsDir()
	}
	if named != "" {
		if !isFile(named) {
			return "", fmt.Errorf("%w (%s: not a file)", errNoPgbench, named)
		}
		return named, nil
	}
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	for i := len(found) - 1; i >= 0; i-- {
		if isFile(found[i]) {
			return found[i], nil
		}
	}
	return "", errNoPgbench
}

// tpsLine is pgbench's result line ("tps = 12709.873621 (without initial
// connection time)").
var tpsLine = regexp.MustCompile(`(?m)^tps = ([0-9]+(?:\.[0-9]+)?)`)

// parsePgbenchTPS reads the transactions per second from pgbench's output.
func parsePgbenchTPS(out []byte) (float64, error) {
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps line")
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || tps <= 0 {
		return 0, fmt.Errorf("pgbench tps %q", m[1])
	}
	return tps, nil
}

// pgbenchFloor runs pgbench's insert-only transactions against o.DSN with
// o.Concurrency clients for o.Duration (whole seconds, at least one) and
// returns its tps, the seconds it ran and the clients.
func pgbenchFloor(ctx context.Context, o benchOptions) (float64, int, error) {
	bin, err := findPgbench(o.PGBench)
	if err != nil {
		return 0, 0, err
	}
	conn, err := pgx.Connect(ctx, o.DSN)
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench floor: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `CREATE TABLE `+pgbenchTable+` (id bigserial PRIMARY KEY, k text, v bytea, at timestamptz DEFAULT now())`); err != nil {
		return 0, 0, fmt.Errorf("pgbench floor: create %s: %w (bench --dsn needs an empty database)", pgbenchTable, err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+pgbenchTable)
	}()
	script, err := os.CreateTemp("", "postback-pgbench-*.sql")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(script.Name())
	if _, err := script.WriteString(pgbenchScript); err != nil {
		script.Close()
		return 0, 0, err
	}
	if err := script.Close(); err != nil {
		return 0, 0, err
	}
	secs := max(1, int((o.Duration+time.Second-1)/time.Second))
	out, err := pgbenchCommand(ctx, bin, o, script.Name(), secs).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench floor: %s: %w: %s", filepath.Base(bin), err, lastLine(out))
	}
	tps, err := parsePgbenchTPS(out)
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench floor: %w: %s", err, lastLine(out))
	}
	return tps, secs, nil
}

// pgbenchCommand is pgbench's insert-only run of script on o.DSN with
// o.Concurrency clients for secs seconds. The password travels in
// PGPASSWORD, not on the command line, which every local user can read.
func pgbenchCommand(ctx context.Context, bin string, o benchOptions, script string, secs int) *exec.Cmd {
	threads := min(o.Concurrency, runtime.NumCPU())
	dsn, password := splitPassword(o.DSN)
	cmd := exec.CommandContext(ctx, bin, "-n", "-c", strconv.Itoa(o.Concurrency), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(secs), "-f", script, dsn)
	if password != "" {
		cmd.Env = append(os.Environ(), "PGPASSWORD="+password)
	}
	return cmd
}

// kvPassword is the password of a key=value connection string.
var kvPassword = regexp.MustCompile(`(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']\S*)`)

// splitPassword takes the password out of a connection string (URL or
// key=value form) and returns the string without it and the password.
func splitPassword(dsn string) (string, string) {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if u.User == nil {
			return dsn, ""
		}
		pw, ok := u.User.Password()
		if !ok {
			return dsn, ""
		}
		u.User = url.User(u.User.Username())
		return u.String(), pw
	}
	m := kvPassword.FindStringSubmatchIndex(dsn)
	if m == nil {
		return dsn, ""
	}
	pw := dsn[m[2]:m[3]]
	if strings.HasPrefix(pw, "'") {
		pw = strings.NewReplacer(`\'`, "'", `\\`, `\`).Replace(pw[1 : len(pw)-1])
	}
	return strings.TrimSpace(strings.TrimSpace(dsn[:m[0]]) + " " + strings.TrimSpace(dsn[m[1]:])), pw
}

// lastLine is the last non-empty line of out, for an error message.
func lastLine(out []byte) string {
	lines := strings.FieldsFunc(string(out), func(r rune) bool { return r == '\n' || r == '\r' })
	if len(lines) == 0 {
		return "(no output)"
	}
	return lines[len(lines)-1]
}
