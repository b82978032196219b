package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/pgstore"
	"github.com/postback/postback/store/pgstore/pgtest"
)

// privateCluster starts a throwaway PostgreSQL cluster for one test with
// scripts/pg-cluster.sh (so stopping it disturbs no other package's
// tests) and returns its DSN and a function running pg_ctl on it. Without
// PostgreSQL server binaries the test skips (fails under
// POSTBACK_REQUIRE_PG=1).
func privateCluster(t *testing.T) (dsn string, pgctl func(args ...string) error) {
	t.Helper()
	if !havePostgresBinaries() {
		msg := "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql to run this test"
		if os.Getenv(pgtest.EnvRequire) == "1" {
			t.Fatal(msg + " (" + pgtest.EnvRequire + "=1)")
		}
		t.Skip(msg)
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "pg-cluster.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(script, "start")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s start: %v\n%s", script, err, stderr.String())
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok {
			env[k] = strings.Trim(v, "'")
		}
	}
	dir, bin := env["PGDATA_DIR"], env["PG_BIN"]
	if env[pgtest.EnvDSN] == "" || dir == "" || bin == "" {
		t.Fatalf("%s start printed no DSN, PGDATA_DIR or PG_BIN:\n%s", script, out)
	}
	t.Cleanup(func() { _ = exec.Command(script, "stop", dir).Run() })
	pgctl = func(args ...string) error {
		argv := append([]string{filepath.Join(bin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "server.log")}, args...)
		if os.Getuid() == 0 { // the cluster belongs to the postgres user
			argv = append([]string{"runuser", "-u", "postgres", "--"}, argv...)
		}
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_ctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	return env[pgtest.EnvDSN], pgctl
}

func havePostgresBinaries() bool {
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl"); len(m) > 0 {
		return true
	}
	_, err1 := exec.LookPath("initdb")
	_, err2 := exec.LookPath("pg_ctl")
	return err1 == nil && err2 == nil
}

// postResult is one post of the restart test's load.
type postResult struct {
	id         string
	start, end time.Time
	status     int // 0: no answer
}

// TestPostgresRestartUnderLoad stops PostgreSQL under a gateway taking
// signed Stripe notifications and starts it again two seconds later: while
// the database is down every post is answered 503 and /readyz answers 503;
// no 2xx is given for work that was not committed (every acknowledged
// notification is in the database afterwards); and the gateway recovers by
// itself, without a restart, and delivers everything it acknowledged. The
// database is stopped once with pg_ctl's fast mode (sessions ended, clean
// shutdown) and once with immediate mode (a crash: recovery from the WAL
// at start).
func TestPostgresRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("PostgreSQL restart test skipped in -short mode")
	}
	dsn, pgctl := privateCluster(t)
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) { pgRestartUnderLoad(t, dsn, pgctl, mode) })
	}
}

func pgRestartUnderLoad(t *testing.T, dsn string, pgctl func(args ...string) error, mode string) {
	rcv := newDeliveryReceiver(t, 0)
	dir := t.TempDir()
	addr := freeAddr(t)
	base := "http://" + addr
	hookSecret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))
	cfg := fmt.Sprintf(`server: {listen: %q, shutdown_timeout: 5s}
storage: {driver: postgres, dsn: %q, pool_size: 10}
log: {level: warn}
dispatch: {lease: 5s}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
destinations:
  - {name: hook, type: webhook, endpoint: %q, secret: %q, timeout: 2s, retry: {max_attempts: 100}, rate_limit: {per_second: 2000}, concurrency: 8}
`, addr, dsn, crashStripeSecret, rcv.srv.URL, hookSecret)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startChild(t, cfgPath, dir, 0)
	waitHealthy(t, base)
	client := &http.Client{Timeout: 10 * time.Second}
	ready := func() int {
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz answers %d before the restart", code)
	}

	var mu sync.Mutex
	var results []postResult
	var seq atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := stripeNote(fmt.Sprintf("evt_pgr_%s_%07d", mode, seq.Add(1)))
				r := postResult{id: n.key, start: time.Now()}
				r.status, _ = n.post(client, base)
				r.end = time.Now()
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := pgctl("-m", mode, "-w", "stop"); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	var readyDown []int
	for time.Since(down) < 2*time.Second {
		readyDown = append(readyDown, ready())
		time.Sleep(200 * time.Millisecond)
	}
	up := time.Now()
	if err := pgctl("-w", "-t", "60", "start"); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	// Recovery: a 2xx for a post begun after the start, and /readyz 200.
	var recovered time.Time
	for deadline := started.Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		ok2xx := false
		for i := len(results) - 1; i >= 0 && !ok2xx; i-- {
			ok2xx = results[i].start.After(started) && results[i].status/100 == 2
		}
		mu.Unlock()
		if ok2xx && ready() == http.StatusOK {
			recovered = time.Now()
			break
		}
	}
	if recovered.IsZero() {
		logs, _ := os.ReadFile(filepath.Join(dir, "gateway-0.log"))
		t.Fatalf("the gateway did not recover within 30s of PostgreSQL's start; log:\n%s", tail(logs, 3000))
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	acked := map[string]bool{}
	codes := map[int]int{}
	downPosts, downCodes := 0, map[int]int{}
	for _, r := range results {
		codes[r.status]++
		if r.status/100 == 2 {
			acked[r.id] = true
		}
		// Posts made entirely while the database was down.
		if r.start.After(down) && r.end.Before(up) {
			downPosts++
			downCodes[r.status]++
		}
	}
	if downPosts == 0 {
		t.Error("no post was made while PostgreSQL was down")
	}
	if downCodes[http.StatusServiceUnavailable] != downPosts {
		t.Errorf("posts while PostgreSQL was down answered %v, want only 503", downCodes)
	}
	for _, c := range readyDown {
		if c != http.StatusServiceUnavailable {
			t.Errorf("/readyz answered %v while PostgreSQL was down, want 503 each time", readyDown)
			break
		}
	}

	// Everything acknowledged is delivered, then the gateway stops cleanly.
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for id := range acked {
			if rcv.count(mapping.EventID(mapping.SourceStripe, "trial_started", "sub_"+id)) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(dir, "gateway-0.log"))
			t.Fatalf("%d acknowledged notifications never delivered; log:\n%s", missing, tail(logs, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = proc.Process.Signal(syscall.SIGTERM)
	if err := proc.Wait(); err != nil {
		t.Errorf("gateway did not stop cleanly: %v", err)
	}
	db, err := pgstore.Open(context.Background(), dsn, &pgstore.Options{PoolSize: 2, NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lost := 0
	for id := range acked {
		n, err := db.Notification(mapping.SourceStripe, id)
		if err != nil {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged %s is not in the database: %v", id, err)
			}
			continue
		}
		if len(n.EventIDs) != 1 {
			t.Errorf("%s has %d events", id, len(n.EventIDs))
		}
	}
	if err := db.Check(); err != nil {
		t.Errorf("store check: %v", err)
	}
	dups, total := rcv.duplicates()
	t.Logf("stop -m %s: %d posts (answers %v), %d acknowledged, %d lost; PostgreSQL down %s: %d posts answered %v, /readyz %v; recovered %s after the start; %d deliveries, %d duplicate",
		mode, len(results), codes, len(acked), lost, up.Sub(down).Round(time.Millisecond), downPosts, downCodes, readyDown, recovered.Sub(started).Round(time.Millisecond), total, dups)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
