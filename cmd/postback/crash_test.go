package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// TestMain lets the crash test run this test binary as the gateway process:
// with POSTBACK_TEST_MAIN set, the binary is `postback` itself.
func TestMain(m *testing.M) {
	if os.Getenv("POSTBACK_TEST_MAIN") != "" {
		// As main does: SIGTERM stops the gateway cleanly.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := Main(ctx, []string{"serve"}, &Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.LookupEnv})
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

const crashStripeSecret = "whsec_crash_test_secret_0123456789"

// TestCrashKill9 posts signed Stripe events from several goroutines, kills
// the gateway with SIGKILL at random moments, restarts it, and checks that
// every acknowledged notification is stored and delivered and that no
// canonical event is duplicated. POSTBACK_CRASH_CYCLES sets the number of
// kill cycles (default 3 here; the reliability suite runs 50).
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	cycles := 3
	if v, err := strconv.Atoi(os.Getenv("POSTBACK_CRASH_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	var mu sync.Mutex
	received := map[string]int{} // webhook-id -> deliveries
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		received[r.Header.Get("webhook-id")]++
		mu.Unlock()
	}))
	defer rcv.Close()

	dir := t.TempDir()
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	hookSecret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	cfg := fmt.Sprintf(`server: {listen: %q, shutdown_timeout: 2s}
storage: {path: %q}
log: {level: warn}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: com.example.app}
destinations:
  - {name: hook, type: webhook, endpoint: %q, secret: %q, match: {environments: [production]}, rate_limit: {per_second: 5000}, concurrency: 16}
`, addr, filepath.Join(dir, "postback.db"), crashStripeSecret, rcv.URL, hookSecret)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	var ackMu sync.Mutex
	acked := map[string]bool{} // Stripe event ids answered 2xx
	seq := 0
	var seqMu sync.Mutex
	nextID := func() string {
		seqMu.Lock()
		defer seqMu.Unlock()
		seq++
		return fmt.Sprintf("evt_crash_%06d", seq)
	}
	client := &http.Client{Timeout: 3 * time.Second}
	for cycle := 0; cycle <= cycles; cycle++ {
		proc := startChild(t, cfgPath, dir, cycle)
		waitHealthy(t, "http://"+addr)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					id := nextID()
					if postCrashStripe(client, "http://"+addr, id) {
						ackMu.Lock()
						acked[id] = true
						ackMu.Unlock()
					}
				}
			}()
		}
		if cycle < cycles {
			time.Sleep(time.Duration(150+rand.IntN(450)) * time.Millisecond)
			_ = proc.Process.Signal(syscall.SIGKILL) // crash at a random moment
			_ = proc.Wait()
			close(stop)
			wg.Wait()
			continue
		}
		// Last cycle: stop posting, let everything be delivered, then stop cleanly.
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()
		deadline := time.Now().Add(30 * time.Second)
		lastTotal, stableSince := -1, time.Now()
		for {
			mu.Lock()
			missing, total := 0, 0
			for id := range acked {
				if received[mapping.EventID(mapping.SourceStripe, "trial_started", "sub_"+id)] == 0 {
					missing++
				}
			}
			for _, n := range received {
				total += n
			}
			mu.Unlock()
			if total != lastTotal {
				lastTotal, stableSince = total, time.Now()
			}
			// Every acknowledged event is delivered, and deliveries have
			// stopped: events stored but not acknowledged (the process
			// died before answering) are delivered too.
			if missing == 0 && time.Since(stableSince) > time.Second {
				break
			}
			if time.Now().After(deadline) {
				logs, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("gateway-%d.log", cycle)))
				if len(logs) > 3000 {
					logs = logs[len(logs)-3000:]
				}
				t.Fatalf("%d acknowledged notifications never delivered; gateway log tail:\n%s", missing, logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = proc.Process.Signal(syscall.SIGTERM)
		_ = proc.Wait()
	}

	db, err := store.Open(filepath.Join(dir, "postback.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
	for id := range acked {
		n, err := db.Notification(mapping.SourceStripe, id)
		if err != nil {
			t.Fatalf("acknowledged %s lost: %v", id, err)
		}
		if len(n.EventIDs) != 1 {
			t.Fatalf("%s produced %d events", id, len(n.EventIDs))
		}
	}
	// No duplicate canonical event: one event per stored notification.
	events := map[string]bool{}
	for page := (store.EventPage{}); ; {
		p, err := db.Events(store.EventFilter{Limit: 500, Cursor: page.Next})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Events {
			if events[e.ID] {
				t.Fatalf("duplicate canonical event %s", e.ID)
			}
			events[e.ID] = true
		}
		if p.Next == "" {
			break
		}
		page = p
	}
	ds, err := db.Deliveries(store.DeliveryFilter{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	dupDeliveries, total := 0, 0
	mu.Lock()
	for _, n := range received {
		total += n
		dupDeliveries += n - 1
	}
	mu.Unlock()
	for _, d := range ds {
		if d.State != store.StateDelivered {
			t.Errorf("delivery %s is %s, want delivered", d.Key, d.State)
		}
	}
	t.Logf("%d kill cycles: %d acknowledged, %d events, %d deliveries received, %d duplicate deliveries (%.2f%%)",
		cycles, len(acked), len(events), total, dupDeliveries, 100*float64(dupDeliveries)/float64(max(total, 1)))
	if len(acked) == 0 {
		t.Fatal("no notification was acknowledged")
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startChild(t *testing.T, cfgPath, dir string, cycle int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "POSTBACK_TEST_MAIN=1", "POSTBACK_CONFIG="+cfgPath)
	logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("gateway-%d.log", cycle)))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		logf.Close()
	})
	return cmd
}

func waitHealthy(t *testing.T, base string, logs ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Logf("log %s:\n%s", l, b)
	}
	t.Fatalf("gateway at %s did not become healthy in 30s", base)
}

func postCrashStripe(c *http.Client, base, id string) bool {
	body := []byte(fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2023-10-16","created":%d,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_%s","object":"subscription","status":"trialing","customer":"cus_1","items":{"data":[]}}}}`, id, time.Now().Unix(), id))
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: crashStripeSecret, Timestamp: time.Now()}).Header
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", sig)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}
