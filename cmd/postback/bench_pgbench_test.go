package main

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/store/pgstore/pgtest"
)

func TestSplitPassword(t *testing.T) {
	for _, tc := range []struct{ dsn, rest, pw string }{
		{"postgres://u:s3cr%2Ft@127.0.0.1:5432/db?sslmode=disable", "postgres://u@127.0.0.1:5432/db?sslmode=disable", "s3cr/t"},
		{"postgresql://u@host/db", "postgresql://u@host/db", ""},
		{"postgres://host/db", "postgres://host/db", ""},
		{"host=h user=u password=pw dbname=d", "host=h user=u dbname=d", "pw"},
		{"password='a b\\'c' host=h", "host=h", "a b'c"},
		{"host=h dbname=d", "host=h dbname=d", ""},
		{"host=h old_password=x", "host=h old_password=x", ""},
	} {
		rest, pw := splitPassword(tc.dsn)
		if rest != tc.rest || pw != tc.pw {
			t.Errorf("splitPassword(%q) = %q, %q; want %q, %q", tc.dsn, rest, pw, tc.rest, tc.pw)
		}
	}
}

func TestPgbenchCommandKeepsThePasswordOffItsArguments(t *testing.T) {
	o := benchOptions{DSN: "postgres://u:hunter2@127.0.0.1:5432/db", Concurrency: 16}
	cmd := pgbenchCommand(context.Background(), "/usr/bin/pgbench", o, "/tmp/s.sql", 10)
	args := strings.Join(cmd.Args, " ")
	if strings.Contains(args, "hunter2") || !strings.Contains(args, "postgres://u@127.0.0.1:5432/db") ||
		!strings.Contains(args, "-c 16") || !strings.Contains(args, "-T 10") || !strings.Contains(args, "-f /tmp/s.sql") {
		t.Errorf("args %q", args)
	}
	if !slices.Contains(cmd.Env, "PGPASSWORD=hunter2") {
		t.Errorf("PGPASSWORD not in the environment")
	}
	if cmd := pgbenchCommand(context.Background(), "/usr/bin/pgbench", benchOptions{DSN: "host=/run/pg dbname=d", Concurrency: 1}, "s", 1); cmd.Env != nil {
		t.Errorf("no password, yet the environment is set: %v", cmd.Env)
	}
}

func TestParsePgbenchTPS(t *testing.T) {
	out := []byte("transaction type: insert.sql\nnumber of clients: 16\nlatency average = 1.3 ms\ninitial connection time = 12.3 ms\ntps = 12709.873621 (without initial connection time)\n")
	if tps, err := parsePgbenchTPS(out); err != nil || tps != 12709.873621 {
		t.Errorf("tps %v, %v", tps, err)
	}
	for _, bad := range []string{"", "pgbench: error: connection to server failed\n", "tps = 0 (without initial connection time)\n"} {
		if _, err := parsePgbenchTPS([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if got := lastLine([]byte("a\nb: failed\n\n")); got != "b: failed" {
		t.Errorf("lastLine %q", got)
	}
}

func TestFindPgbenchNamed(t *testing.T) {
	for _, named := range []string{"/nonexistent/pgbench", t.TempDir()} {
		if _, err := findPgbench(named); !errors.Is(err, errNoPgbench) {
			t.Errorf("%s: %v, want errNoPgbench", named, err)
		}
	}
	f, err := os.CreateTemp(t.TempDir(), "pgbench")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, err := findPgbench(f.Name()); err != nil || got != f.Name() {
		t.Errorf("named file: %q, %v", got, err)
	}
}

// TestBenchFloorsPostgres: with --dsn, --floors runs pgbench's insert-only
// transactions on the run's database with the run's clients, then the
// gateway on the same database (left empty by the floor), and reports
// the ingest over pgbench's tps against issue 12's 0.5.
func TestBenchFloorsPostgres(t *testing.T) {
	dsn := pgtest.Database(t)
	if _, err := findPgbench(""); err != nil {
		if os.Getenv(pgtest.EnvRequire) == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	defer func(w time.Duration) { p256Window = w }(p256Window)
	p256Window = 100 * time.Millisecond
	rep := benchJSON(t, "--self", "--dsn", dsn, "--pool-size", "4", "--floors", "--destinations", "none",
		"--mix", "stripe=1", "--duration", "1s", "--concurrency", "2")
	f := rep.Floors
	if f == nil || f.PGBenchTPS <= 0 || f.PGBenchClients != 2 || f.PGBenchSeconds != 1 || f.BarePS != 0 {
		t.Fatalf("floors %+v, want pgbench measured with 2 clients for 1 s and no bare handler", f)
	}
	if len(f.Ratios) != 1 {
		t.Fatalf("ratios %+v, want one", f.Ratios)
	}
	r := f.Ratios[0]
	if r.Name != "stripe ingest / pgbench insert-only" || r.FloorPS != f.PGBenchTPS || r.Target != pgTarget || r.AcceptedPS != rep.AcceptedPS || rep.AcceptedPS <= 0 {
		t.Errorf("ratio %+v, accepted %.1f", r, rep.AcceptedPS)
	}
	if want := rep.AcceptedPS / f.PGBenchTPS; math.Abs(r.Ratio-want) > 0.5e-4 || r.Met != (want >= pgTarget) {
		t.Errorf("ratio %.4f met %v, want %.4f", r.Ratio, r.Met, want)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var left bool
	if err := conn.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", pgbenchTable).Scan(&left); err != nil || left {
		t.Errorf("the floor's table is still there (%v)", err)
	}
	var events int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM events").Scan(&events); err != nil || events == 0 {
		t.Errorf("the gateway stored %d events on the same database (%v)", events, err)
	}
}

// TestPgbenchFloorErrors: a pgbench that fails or prints no result, a
// database the floor cannot reach, and one that is not empty each end the
// floor with an error naming the cause; the floor's table is never left
// behind.
func TestPgbenchFloorErrors(t *testing.T) {
	dsn := pgtest.Database(t)
	dir := t.TempDir()
	fake := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, tc := range []struct {
		name, bin, dsn, want string
	}{
		{"pgbench fails", fake("fails", `echo "pgbench: error: connection refused" >&2; exit 1`), dsn, "connection refused"},
		{"no tps line", fake("silent", `echo "transaction type: x"`), dsn, "no tps line"},
		{"unreachable database", fake("unused", "exit 0"), "postgres://u:p@127.0.0.1:1/db?connect_timeout=2", "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := pgbenchFloor(ctx, benchOptions{DSN: tc.dsn, PGBench: tc.bin, Concurrency: 2, Duration: time.Second})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %q", err, tc.want)
			}
			var left bool
			if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgbenchTable).Scan(&left); err != nil || left {
				t.Errorf("the floor's table was left behind (%v)", err)
			}
		})
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE "+pgbenchTable+" (id int)"); err != nil {
		t.Fatal(err)
	}
	_, _, err = pgbenchFloor(ctx, benchOptions{DSN: dsn, PGBench: fake("ok", "exit 0"), Concurrency: 2, Duration: time.Second})
	if err == nil || !strings.Contains(err.Error(), "empty database") {
		t.Errorf("a database that already has the table: %v", err)
	}
}
