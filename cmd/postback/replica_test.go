package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore"
	"github.com/postback/postback/store/pgstore/pgtest"
	"github.com/postback/postback/webhooks/appletest"
)

const (
	replicaAPIKey   = "replica-test-api-key-0123456789abcdef"
	replicaBundle   = "com.example.app"
	replicaAppleID  = 1234567890
	replicaRate     = 100 // destination rate_limit.per_second
	replicaBurst    = 10  // destination rate_limit.burst
	replicaLease    = 3 * time.Second
	replicaReceiver = 3 * time.Millisecond // time the receiver takes per request
	loadPeriod      = 2 * time.Second
	loadBurst       = 500 * time.Millisecond
)

// deliveryReceiver is the destination of the reliability tests: it counts
// deliveries by webhook-id (the event id), notices the same webhook-id in
// flight twice at once, and keeps every arrival time to measure the rate.
type deliveryReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	received map[string]int
	inflight map[string]int
	overlaps int // arrivals while the same webhook-id was in flight
	maxInFly int // most copies of one webhook-id in flight at once
	arrivals []time.Time
}

func newDeliveryReceiver(t *testing.T, hold time.Duration) *deliveryReceiver {
	r := &deliveryReceiver{received: map[string]int{}, inflight: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		id := req.Header.Get("webhook-id")
		now := time.Now()
		r.mu.Lock()
		r.arrivals = append(r.arrivals, now)
		r.received[id]++
		r.inflight[id]++
		if n := r.inflight[id]; n > 1 {
			r.overlaps++
			r.maxInFly = max(r.maxInFly, n)
		}
		r.mu.Unlock()
		time.Sleep(hold) // long enough for a second copy to overlap
		r.mu.Lock()
		if r.inflight[id]--; r.inflight[id] == 0 {
			delete(r.inflight, id)
		}
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// total returns how many requests arrived.
func (r *deliveryReceiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.arrivals)
}

func (r *deliveryReceiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.received[id]
}

// maxWindow is the most requests that arrived within any window of length w.
func (r *deliveryReceiver) maxWindow(w time.Duration) (int, time.Time) {
	r.mu.Lock()
	a := append([]time.Time(nil), r.arrivals...)
	r.mu.Unlock()
	sort.Slice(a, func(i, j int) bool { return a[i].Before(a[j]) })
	best, at := 0, time.Time{}
	lo := 0
	for hi := range a {
		for a[hi].Sub(a[lo]) >= w {
			lo++
		}
		if n := hi - lo + 1; n > best {
			best, at = n, a[lo]
		}
	}
	return best, at
}

// duplicates returns deliveries beyond the first of each webhook-id.
func (r *deliveryReceiver) duplicates() (dups, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.received {
		total += n
		dups += n - 1
	}
	return dups, total
}

// replicaNote is one notification of the load: where it is stored
// (source, key) and how to post it.
type replicaNote struct {
	source, key string
	path        string
	body        []byte
	header      http.Header
}

func (n *replicaNote) post(c *http.Client, base string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, base+n.path, bytes.NewReader(n.body))
	if err != nil {
		return 0, err
	}
	for k, v := range n.header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func stripeNote(id string) *replicaNote {
	body := []byte(fmt.Sprintf(`{"id":%q,"object":"event","api_version":"2023-10-16","created":%d,"livemode":true,"type":"customer.subscription.created","data":{"object":{"id":"sub_%s","object":"subscription","status":"trialing","customer":"cus_%s","items":{"data":[]}}}}`, id, time.Now().Unix(), id, id))
	sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: crashStripeSecret, Timestamp: time.Now()}).Header
	return &replicaNote{source: mapping.SourceStripe, key: id, path: "/webhooks/stripe", body: body,
		header: http.Header{"Stripe-Signature": {sig}, "Content-Type": {"application/json"}}}
}

func customNote(key string) *replicaNote {
	body := []byte(fmt.Sprintf(`{"type":"purchase","app_id":%q,"app_user_id":"u-%s","product_id":"gems_100","revenue":{"amount":"9.99","currency":"USD"}}`, replicaBundle, key))
	return &replicaNote{source: mapping.SourceCustom, key: key, path: "/v1/events", body: body,
		header: http.Header{"Authorization": {"Bearer " + replicaAPIKey}, "Idempotency-Key": {key}, "Content-Type": {"application/json"}}}
}

func appleNote(pki *appletest.PKI, uuid, txn string) *replicaNote {
	now := time.Now().UnixMilli()
	info := map[string]any{"transactionId": txn, "originalTransactionId": txn, "bundleId": replicaBundle, "productId": "pro_monthly",
		"purchaseDate": now, "expiresDate": now + 30*24*3600*1000, "type": "Auto-Renewable Subscription", "environment": "Production",
		"signedDate": now, "price": 9990, "currency": "USD"}
	payload := map[string]any{"notificationType": "SUBSCRIBED", "subtype": "INITIAL_BUY", "notificationUUID": uuid, "version": "2.0", "signedDate": now,
		"data": map[string]any{"appAppleId": replicaAppleID, "bundleId": replicaBundle, "environment": "Production", "signedTransactionInfo": pki.SignJWS(info)}}
	body, _ := json.Marshal(map[string]string{"signedPayload": pki.SignJWS(payload)})
	return &replicaNote{source: mapping.SourceApple, key: uuid, path: "/webhooks/apple", body: body,
		header: http.Header{"Content-Type": {"application/json"}}}
}

// replicaLoad posts notifications to random replicas until stopped: a
// notification refused (connection refused, 5xx) is posted again to
// another replica, as a source behind a load balancer retries; every
// fifth one is posted to two replicas at the same instant. The load comes
// in bursts (loadBurst of every loadPeriod, as fast as the gateways take
// it) faster than the destination's rate limit, with quiet gaps in which
// the queue drains and the dispatchers go idle.
type replicaLoad struct {
	began  time.Time
	bases  []string
	pki    *appletest.PKI
	client *http.Client
	seq    atomic.Int64

	mu         sync.Mutex
	acked      map[[2]string]bool // (source, key) answered 2xx
	posted     int
	dual       int
	statuses   map[int]int
	unexpected []string
}

func (l *replicaLoad) next() *replicaNote {
	n := l.seq.Add(1)
	switch n % 3 {
	case 0:
		return stripeNote(fmt.Sprintf("evt_rep_%07d", n))
	case 1:
		return customNote(fmt.Sprintf("cus-rep-%07d", n))
	default:
		return appleNote(l.pki, fmt.Sprintf("00000000-0000-4000-8000-%012d", n), fmt.Sprintf("7%014d", n))
	}
}

// answer records one response; it reports whether it is a 2xx.
func (l *replicaLoad) answer(n *replicaNote, code int, err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.statuses[0]++
		return false
	}
	l.statuses[code]++
	switch {
	case code/100 == 2:
		l.acked[[2]string{n.source, n.key}] = true
		return true
	case code != http.StatusServiceUnavailable && len(l.unexpected) < 20:
		l.unexpected = append(l.unexpected, fmt.Sprintf("%s %s: %d", n.source, n.key, code))
	}
	return false
}

func (l *replicaLoad) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if time.Since(l.began)%loadPeriod >= loadBurst {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		n := l.next()
		first := rand.IntN(len(l.bases))
		l.mu.Lock()
		l.posted++
		dual := l.posted%5 == 0
		if dual {
			l.dual++
		}
		l.mu.Unlock()
		if dual {
			second := (first + 1 + rand.IntN(len(l.bases)-1)) % len(l.bases)
			var wg sync.WaitGroup
			for _, b := range []int{first, second} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, err := n.post(l.client, l.bases[b])
					l.answer(n, code, err)
				}()
			}
			wg.Wait()
			continue
		}
		for try := 0; try < 3; try++ {
			code, err := n.post(l.client, l.bases[(first+try)%len(l.bases)])
			if l.answer(n, code, err) || err == nil && code != http.StatusServiceUnavailable {
				break
			}
		}
	}
}

// TestReplicaKill9 runs three gateway processes on one PostgreSQL
// database, posts signed Stripe, custom (/v1/events) and Apple
// notifications to random replicas (some to two replicas at once), and
// every few seconds kills a random replica with SIGKILL and restarts it.
// Afterwards every acknowledged notification is stored once with exactly
// one canonical event, every event is delivered, duplicate deliveries stay
// under 0.5 %, no delivery was in flight twice at once, and the
// destination's cluster-wide rate limit held at the receiver.
// POSTBACK_REPLICA_CYCLES sets the number of kills (default 3; the
// reliability suite runs 20 or more).
func TestReplicaKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("replica kill test skipped in -short mode")
	}
	dsn := pgtest.Database(t)
	cycles := 3
	if v, err := strconv.Atoi(os.Getenv("POSTBACK_REPLICA_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	rcv := newDeliveryReceiver(t, replicaReceiver)
	pki := appletest.NewPKI(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root.der")
	if err := os.WriteFile(root, pki.RootDER(), 0o600); err != nil {
		t.Fatal(err)
	}
	hookSecret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	const replicas = 3
	var cfgs, bases []string
	for i := range replicas {
		addr := freeAddr(t)
		// The destination's timeout (1s) stays below the lease (3s): a
		// lease outlives every request made under it.
		cfg := fmt.Sprintf(`server: {listen: %q, shutdown_timeout: 5s}
storage: {driver: postgres, dsn: %q, pool_size: 10}
log: {level: warn}
api_keys: [%q]
dispatch: {lease: %s}
sources:
  apple:
    enabled: true
    apps: [{bundle_id: %s, app_apple_id: %d}]
    environments: [production]
    root_certificates: [%q]
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: %s}
destinations:
  - {name: hook, type: webhook, endpoint: %q, secret: %q, timeout: 1s, rate_limit: {per_second: %d, burst: %d}, concurrency: 8}
`, addr, dsn, replicaAPIKey, replicaLease, replicaBundle, replicaAppleID, root, crashStripeSecret, replicaBundle, rcv.srv.URL, hookSecret, replicaRate, replicaBurst)
		p := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", i))
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, p)
		bases = append(bases, "http://"+addr)
	}

	procs := make([]*exec.Cmd, replicas)
	starts := 0
	start := func(i int) {
		starts++
		procs[i] = startChild(t, cfgs[i], dir, starts)
	}
	for i := range replicas {
		start(i)
	}
	for i := range replicas {
		waitHealthy(t, bases[i], filepath.Join(dir, fmt.Sprintf("gateway-%d.log", i+1)))
	}

	load := &replicaLoad{began: time.Now(), bases: bases, pki: pki, client: &http.Client{Timeout: 5 * time.Second},
		acked: map[[2]string]bool{}, statuses: map[int]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			load.run(stop)
		}()
	}
	began := time.Now()
	for cycle := 0; cycle < cycles; cycle++ {
		// Every few seconds, at a random moment of a burst (deliveries
		// and ingests in flight), one replica dies.
		time.Sleep(time.Duration(1000+rand.IntN(1500)) * time.Millisecond)
		into := time.Since(load.began) % loadPeriod
		time.Sleep(loadPeriod - into + time.Duration(rand.Int64N(int64(loadBurst))))
		victim := rand.IntN(replicas)
		_ = procs[victim].Process.Signal(syscall.SIGKILL)
		_ = procs[victim].Wait()
		start(victim)
		waitHealthy(t, bases[victim], filepath.Join(dir, fmt.Sprintf("gateway-%d.log", starts)))
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	loadFor := time.Since(began)

	// Wait until every delivery is final and the receiver is quiet.
	check, err := pgstore.Open(context.Background(), dsn, &pgstore.Options{PoolSize: 2, NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	lastTotal, stableSince := -1, time.Now()
	for {
		var open int
		if err := check.Pool().QueryRow(context.Background(), "SELECT count(*) FROM deliveries WHERE next_at_ms IS NOT NULL").Scan(&open); err != nil {
			t.Fatal(err)
		}
		if n := rcv.total(); n != lastTotal {
			lastTotal, stableSince = n, time.Now()
		}
		if open == 0 && time.Since(stableSince) > time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries still unfinished a minute after the load stopped", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
	check.Close()
	for i, p := range procs {
		_ = p.Process.Signal(syscall.SIGTERM)
		if err := p.Wait(); err != nil {
			t.Errorf("replica %d did not stop cleanly: %v", i, err)
		}
	}

	db, err := pgstore.Open(context.Background(), dsn, &pgstore.Options{PoolSize: 2, NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Errorf("store check: %v", err)
	}
	load.mu.Lock()
	defer load.mu.Unlock()
	if len(load.unexpected) > 0 {
		t.Errorf("answers other than 2xx or 503: %v", load.unexpected)
	}
	lost, missing := 0, 0
	bySource := map[string]int{}
	for k := range load.acked {
		n, err := db.Notification(k[0], k[1])
		if err != nil {
			lost++
			t.Errorf("acknowledged %s/%s not stored: %v", k[0], k[1], err)
			continue
		}
		bySource[k[0]]++
		if len(n.EventIDs) != 1 {
			t.Errorf("%s/%s produced %d events, want 1 (status %s %s)", k[0], k[1], len(n.EventIDs), n.Status, n.Reason)
			continue
		}
		if rcv.count(n.EventIDs[0]) == 0 {
			missing++
			t.Errorf("event %s of %s/%s never delivered", n.EventIDs[0], k[0], k[1])
		}
	}
	// No duplicate canonical event: the events are exactly the stored
	// notifications' events, one each, and each event is delivered.
	ctx := context.Background()
	owner := map[string]string{}
	rows, err := db.Pool().Query(ctx, "SELECT source, key, doc FROM inbox")
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for rows.Next() {
		var src, key string
		var doc []byte
		if err := rows.Scan(&src, &key, &doc); err != nil {
			t.Fatal(err)
		}
		// The event ids are in the clear part of the sealed document.
		var n mapping.Notification
		if err := json.Unmarshal(store.ClearPart(doc), &n); err != nil {
			rows.Close()
			t.Fatal(err)
		}
		stored++
		if len(n.EventIDs) != 1 {
			t.Errorf("stored %s/%s has %d events", src, key, len(n.EventIDs))
		}
		for _, id := range n.EventIDs {
			if o, dup := owner[id]; dup {
				t.Errorf("event %s belongs to %s and %s/%s", id, o, src, key)
			}
			owner[id] = src + "/" + key
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var events, undelivered int
	if err := db.Pool().QueryRow(ctx, "SELECT count(*) FROM events").Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events != len(owner) {
		t.Errorf("%d events stored for %d notification events: duplicate canonical events", events, len(owner))
	}
	for id := range owner {
		if rcv.count(id) == 0 {
			undelivered++
		}
	}
	ds, err := db.Deliveries(store.DeliveryFilter{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.State != store.StateDelivered {
			t.Errorf("delivery %s is %s (%s), want delivered", d.Key, d.State, d.Reason)
		}
	}
	if undelivered > 0 {
		t.Errorf("%d stored events never reached the receiver", undelivered)
	}
	dups, total := rcv.duplicates()
	dupPct := 100 * float64(dups) / float64(max(total, 1))
	peak, peakAt := rcv.maxWindow(time.Second)
	// The bucket grants at most burst + rate × 1s tokens in any second. A
	// replica takes tokens in blocks (a tenth of a second's worth) and
	// spends a block within a tenth of a second (dispatch/cluster.go), and
	// arrival times at the receiver are send times plus network and
	// scheduling jitter: the tolerance is one block plus 50 ms of jitter
	// at the full rate.
	limit := replicaBurst + replicaRate
	tolerance := replicaRate/10 + replicaRate/20
	rcv.mu.Lock()
	overlaps, maxInFly := rcv.overlaps, rcv.maxInFly
	rcv.mu.Unlock()
	t.Logf("%d kill cycles, 3 replicas, %s of load: %d posted (%d to two replicas at once), %d acknowledged (stripe %d, custom %d, apple %d), answers %v",
		cycles, loadFor.Round(time.Second), load.posted, load.dual, len(load.acked), bySource[mapping.SourceStripe], bySource[mapping.SourceCustom], bySource[mapping.SourceApple], load.statuses)
	t.Logf("%d notifications stored, %d events, %d lost, %d acknowledged undelivered; %d deliveries received, %d duplicate (%.2f%%); %d in flight twice at once (max copies %d); max %d requests in 1s at %s (limit %d/s burst %d: bound %d + %d tolerance)",
		stored, events, lost, missing, total, dups, dupPct, overlaps, maxInFly, peak, peakAt.Sub(began).Round(time.Millisecond), replicaRate, replicaBurst, limit, tolerance)
	if len(load.acked) == 0 {
		t.Fatal("no notification was acknowledged")
	}
	if dupPct >= 0.5 {
		t.Errorf("duplicate deliveries %.2f%%, want < 0.5%%", dupPct)
	}
	if overlaps > 0 {
		t.Errorf("%d deliveries arrived while the same webhook-id was in flight", overlaps)
	}
	if peak > limit+tolerance {
		t.Errorf("%d requests within one second: the cluster-wide limit %d/s (burst %d) was exceeded", peak, replicaRate, replicaBurst)
	}
}
