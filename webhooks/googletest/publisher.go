package googletest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Publisher is a fake Android Publisher API (configure its URL as
// sources.google.play_api.endpoint). It serves purchases.subscriptionsv2.get,
// orders.get, purchases.products.get and purchases.voidedpurchases.list from
// fixtures, answers 404 for anything unknown in Google's error format, and
// can be told to fail the next calls of an operation with given statuses.
type Publisher struct {
	Server *httptest.Server
	// PageSize is the voided-purchase page size; default 2, so that tests
	// exercise pagination.
	PageSize int

	mu            sync.Mutex
	subscriptions map[string]json.RawMessage // pkg/token
	orders        map[string]json.RawMessage // pkg/orderId
	products      map[string]json.RawMessage // pkg/productId/token
	voided        map[string][]voidedEntry   // pkg
	failures      map[string][]int           // op -> statuses to answer next
	calls         []string                   // "op pkg id"
}

type voidedEntry struct {
	voidedMs int64
	raw      json.RawMessage
}

// Operation names used by FailNext and Calls.
const (
	OpSubscription = "subscriptionsv2.get"
	OpOrder        = "orders.get"
	OpProduct      = "products.get"
	OpVoided       = "voidedpurchases.list"
)

// NewPublisher starts a fake API server. Close it when done.
func NewPublisher() *Publisher {
	p := &Publisher{
		PageSize:      2,
		subscriptions: map[string]json.RawMessage{},
		orders:        map[string]json.RawMessage{},
		products:      map[string]json.RawMessage{},
		voided:        map[string][]voidedEntry{},
		failures:      map[string][]int{},
	}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	return p
}

// URL is the endpoint to configure (sources.google.play_api.endpoint).
func (p *Publisher) URL() string { return p.Server.URL + "/" }

// Close shuts the server down.
func (p *Publisher) Close() { p.Server.Close() }

func mustJSON(v any) json.RawMessage {
	if b, ok := v.([]byte); ok {
		return b
	}
	if b, ok := v.(json.RawMessage); ok {
		return b
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(errorf("fixture does not marshal: %v", err))
	}
	return b
}

// SetSubscription serves v (a SubscriptionPurchaseV2) for the token.
func (p *Publisher) SetSubscription(pkg, token string, v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subscriptions[pkg+"/"+token] = mustJSON(v)
}

// SetOrder serves v (an Order) for the order id.
func (p *Publisher) SetOrder(pkg, orderID string, v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.orders[pkg+"/"+orderID] = mustJSON(v)
}

// SetProduct serves v (a ProductPurchase) for the product and token.
func (p *Publisher) SetProduct(pkg, productID, token string, v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.products[pkg+"/"+productID+"/"+token] = mustJSON(v)
}

// AddVoided adds a voided purchase (a VoidedPurchase) voided at voidedMs.
func (p *Publisher) AddVoided(pkg string, voidedMs int64, v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.voided[pkg] = append(p.voided[pkg], voidedEntry{voidedMs, mustJSON(v)})
	sort.SliceStable(p.voided[pkg], func(i, j int) bool { return p.voided[pkg][i].voidedMs < p.voided[pkg][j].voidedMs })
}

// FailNext makes the next calls of op answer the given statuses in turn.
func (p *Publisher) FailNext(op string, statuses ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures[op] = append(p.failures[op], statuses...)
}

// Calls returns every call received, as "op pkg id", in order.
func (p *Publisher) Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

// Count returns how many calls of op were received.
func (p *Publisher) Count(op string) int {
	n := 0
	for _, c := range p.Calls() {
		if strings.HasPrefix(c, op+" ") {
			n++
		}
	}
	return n
}

func writeError(w http.ResponseWriter, code int, status, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "status": status}})
}

func (p *Publisher) serve(w http.ResponseWriter, r *http.Request) {
	const prefix = "/androidpublisher/v3/applications/"
	path := r.URL.EscapedPath()
	if r.Method != http.MethodGet || !strings.HasPrefix(path, prefix) || r.URL.Query().Get("alt") != "json" {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "unknown method")
		return
	}
	parts := strings.Split(strings.TrimPrefix(path, prefix), "/")
	for i := range parts {
		s, err := url.PathUnescape(parts[i])
		if err != nil {
			writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "bad path")
			return
		}
		parts[i] = s
	}
	var op, key, id string
	switch {
	case len(parts) == 5 && parts[1] == "purchases" && parts[2] == "subscriptionsv2" && parts[3] == "tokens":
		op, key, id = OpSubscription, parts[0]+"/"+parts[4], parts[4]
	case len(parts) == 3 && parts[1] == "orders":
		op, key, id = OpOrder, parts[0]+"/"+parts[2], parts[2]
	case len(parts) == 6 && parts[1] == "purchases" && parts[2] == "products" && parts[4] == "tokens":
		op, key, id = OpProduct, parts[0]+"/"+parts[3]+"/"+parts[5], parts[3]+"/"+parts[5]
	case len(parts) == 3 && parts[1] == "purchases" && parts[2] == "voidedpurchases":
		op, key, id = OpVoided, parts[0], r.URL.Query().Get("token")
	default:
		writeError(w, http.StatusNotFound, "NOT_FOUND", "unknown method")
		return
	}
	p.mu.Lock()
	p.calls = append(p.calls, op+" "+parts[0]+" "+id)
	if f := p.failures[op]; len(f) > 0 {
		p.failures[op] = f[1:]
		p.mu.Unlock()
		writeError(w, f[0], http.StatusText(f[0]), "injected failure")
		return
	}
	var body json.RawMessage
	var ok bool
	switch op {
	case OpSubscription:
		body, ok = p.subscriptions[key]
	case OpOrder:
		body, ok = p.orders[key]
	case OpProduct:
		body, ok = p.products[key]
	case OpVoided:
		body, ok = p.voidedPage(key, r.URL.Query())
	}
	p.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "No application or purchase was found for the given identifiers.")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_, _ = w.Write(body)
}

// voidedPage answers one page of voidedpurchases.list. Like Google, it
// ignores startTime and endTime when a page token is given: the token
// ("index:from:to") carries the first page's window. It requires type=1 and
// includeQuantityBasedPartialRefund=true, which Postback always sends.
func (p *Publisher) voidedPage(pkg string, q url.Values) (json.RawMessage, bool) {
	if q.Get("type") != "1" || q.Get("includeQuantityBasedPartialRefund") != "true" {
		return nil, false
	}
	start, from, to := 0, q.Get("startTime"), q.Get("endTime")
	if tok := q.Get("token"); tok != "" {
		f := strings.Split(tok, ":")
		n, err := strconv.Atoi(f[0])
		if len(f) != 3 || err != nil || n < 0 {
			return nil, false
		}
		start, from, to = n, f[1], f[2]
	}
	fromMs, _ := strconv.ParseInt(from, 10, 64)
	toMs, err := strconv.ParseInt(to, 10, 64)
	var all []voidedEntry
	for _, v := range p.voided[pkg] {
		if v.voidedMs < fromMs || (err == nil && v.voidedMs > toMs) {
			continue
		}
		all = append(all, v)
	}
	start = min(start, len(all))
	return p.page(all[start:], start, from+":"+to), true
}

func (p *Publisher) page(list []voidedEntry, start int, window string) json.RawMessage {
	size := p.PageSize
	if size <= 0 {
		size = 2
	}
	resp := map[string]any{}
	n := min(size, len(list))
	items := make([]json.RawMessage, 0, n)
	for _, v := range list[:n] {
		items = append(items, v.raw)
	}
	if len(items) > 0 {
		resp["voidedPurchases"] = items
	}
	if n < len(list) {
		resp["tokenPagination"] = map[string]string{"nextPageToken": strconv.Itoa(start+n) + ":" + window}
	}
	resp["pageInfo"] = map[string]int{"resultPerPage": n, "startIndex": start}
	return mustJSON(resp)
}
