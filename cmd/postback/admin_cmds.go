package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postback/postback/mapping"
)

// parseInterspersed parses flags that may follow positional arguments
// (`postback events evt_1 --json`) and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// usageError is a command-line mistake: exit code 2.
func usageError(format string, args ...any) error {
	return &clientError{status: http.StatusBadRequest, code: "usage", msg: fmt.Sprintf(format, args...)}
}

// setQuery copies the non-empty values into q.
func setQuery(q url.Values, kv map[string]string) {
	for k, v := range kv {
		if v != "" {
			q.Set(k, v)
		}
	}
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 2, 4, 2, ' ', 0) }

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// apiEvent is the canonical event as the admin API shows it.
type apiEvent struct {
	ID             string           `json:"id"`
	Type           string           `json:"type"`
	Name           string           `json:"name,omitempty"`
	Source         string           `json:"source"`
	Environment    string           `json:"environment"`
	AppID          string           `json:"app_id"`
	ProductID      string           `json:"product_id,omitempty"`
	SubscriptionID string           `json:"subscription_id,omitempty"`
	TransactionID  string           `json:"transaction_id,omitempty"`
	Revenue        *mapping.Revenue `json:"revenue,omitempty"`
	User           struct {
		AppUserID   string            `json:"app_user_id,omitempty"`
		Identifiers map[string]string `json:"identifiers,omitempty"`
	} `json:"user"`
	OccurredAt    time.Time         `json:"occurred_at"`
	ReceivedAt    time.Time         `json:"received_at"`
	SourceEventID string            `json:"source_event_id"`
	Attributes    map[string]string `json:"attributes,omitempty"`
}

func (e *apiEvent) revenue() string {
	if e.Revenue == nil {
		return "-"
	}
	// Exact, with the currency's own decimals: "9.99 USD", "1200 JPY".
	return e.Revenue.Decimal() + " " + e.Revenue.Currency
}

type apiAttempt struct {
	N        int           `json:"n"`
	At       time.Time     `json:"at"`
	Outcome  string        `json:"outcome"`
	Status   int           `json:"status,omitempty"`
	Latency  time.Duration `json:"latency_ns"`
	Request  string        `json:"request,omitempty"`
	Response string        `json:"response,omitempty"`
	Error    string        `json:"error,omitempty"`
}

type apiDelivery struct {
	Key         string       `json:"key"`
	EventID     string       `json:"event_id"`
	Destination string       `json:"destination"`
	State       string       `json:"state"`
	Attempts    int          `json:"attempts"`
	CreatedAt   time.Time    `json:"created_at"`
	UpdatedAt   time.Time    `json:"updated_at"`
	LastStatus  int          `json:"last_status,omitempty"`
	LastError   string       `json:"last_error,omitempty"`
	Reason      string       `json:"reason,omitempty"`
	NextAt      *time.Time   `json:"next_at,omitempty"`
	Log         []apiAttempt `json:"attempt_log,omitempty"`
}

func cmdEvents(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("events", env)
	addr, asJSON := clientFlags(fs, env)
	source := fs.String("source", "", "only this source (apple, google, stripe, shopify, custom)")
	typ := fs.String("type", "", "only this event type (trial_started, refund, ...)")
	app := fs.String("app", "", "only this app id")
	envName := fs.String("environment", "", "production or sandbox")
	user := fs.String("user", "", "only this app_user_id")
	sub := fs.String("subscription", "", "only this subscription id")
	since := fs.String("since", "", "received at or after (RFC 3339, or a duration ago such as 24h)")
	until := fs.String("until", "", "received at or before (RFC 3339, or a duration ago)")
	limit := fs.Int("limit", 50, "events per page (1-500)")
	cursor := fs.String("cursor", "", "continue from a previous page's next cursor")
	fs.Usage = func() {
		flagUsage(fs, "usage: postback events [flags]          list events, newest first\n       postback events [flags] <event id>  one event with its notification, deliveries and attempts")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 1 {
		return exitErr(env, usageError("at most one event id"))
	}
	if err := checkSourceType(*source, *typ); err != nil {
		return exitErr(env, err)
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	if len(pos) == 1 {
		return showEvent(ctx, env, c, pos[0], *asJSON)
	}
	q := url.Values{}
	setQuery(q, map[string]string{"source": *source, "type": *typ, "app": *app, "environment": *envName,
		"user": *user, "subscription": *sub, "since": *since, "until": *until, "cursor": *cursor})
	q.Set("limit", strconv.Itoa(*limit))
	var out struct {
		Events     []apiEvent                 `json:"events"`
		Next       string                     `json:"next,omitempty"`
		Deliveries map[string][]apiDestStatus `json:"deliveries,omitempty"`
	}
	if err := c.do(ctx, http.MethodGet, "/admin/api/events", q, nil, &out); err != nil {
		return exitErr(env, err)
	}
	if *asJSON {
		printJSON(env.Stdout, out)
		return 0
	}
	tw := table(env.Stdout)
	fmt.Fprintln(tw, "RECEIVED\tTYPE\tSOURCE\tENV\tAPP\tUSER\tSUBSCRIPTION\tREVENUE\tDELIVERIES\tID")
	for _, e := range out.Events {
		t := e.Type
		if e.Name != "" {
			t += ":" + e.Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ts(e.ReceivedAt), t, e.Source, e.Environment, dash(e.AppID),
			dash(e.User.AppUserID), dash(e.SubscriptionID), e.revenue(), statusChips(out.Deliveries[e.ID]), e.ID)
	}
	tw.Flush()
	if len(out.Events) == 0 {
		fmt.Fprintln(env.Stderr, "no events match")
	}
	if out.Next != "" {
		fmt.Fprintf(env.Stderr, "more: --cursor %s\n", out.Next)
	}
	return 0
}

func showEvent(ctx context.Context, env *Env, c *adminClient, id string, asJSON bool) int {
	var v struct {
		Event        apiEvent       `json:"event"`
		Notification map[string]any `json:"notification,omitempty"`
		Deliveries   []apiDelivery  `json:"deliveries"`
	}
	if err := c.do(ctx, http.MethodGet, "/admin/api/events/"+url.PathEscape(id), nil, nil, &v); err != nil {
		return exitErr(env, err)
	}
	if asJSON {
		printJSON(env.Stdout, v)
		return 0
	}
	e := &v.Event
	w := env.Stdout
	tw := table(w)
	fmt.Fprintf(tw, "id\t%s\n", e.ID)
	fmt.Fprintf(tw, "type\t%s\n", e.Type)
	fmt.Fprintf(tw, "source\t%s (%s)\n", e.Source, e.Environment)
	fmt.Fprintf(tw, "app\t%s\n", dash(e.AppID))
	fmt.Fprintf(tw, "product\t%s\n", dash(e.ProductID))
	fmt.Fprintf(tw, "subscription\t%s\n", dash(e.SubscriptionID))
	fmt.Fprintf(tw, "transaction\t%s\n", dash(e.TransactionID))
	fmt.Fprintf(tw, "revenue\t%s\n", e.revenue())
	fmt.Fprintf(tw, "user\t%s\n", dash(e.User.AppUserID))
	fmt.Fprintf(tw, "occurred\t%s\n", ts(e.OccurredAt))
	fmt.Fprintf(tw, "received\t%s\n", ts(e.ReceivedAt))
	fmt.Fprintf(tw, "source event\t%s\n", e.SourceEventID)
	tw.Flush()
	fmt.Fprintln(w, "\ndeliveries:")
	if len(v.Deliveries) == 0 {
		fmt.Fprintln(w, "  (none: the event matched no destination)")
	}
	for _, d := range v.Deliveries {
		fmt.Fprintf(w, "  %s  %s  attempts %d", d.Destination, d.State, d.Attempts)
		if d.Reason != "" {
			fmt.Fprintf(w, "  (%s)", d.Reason)
		}
		fmt.Fprintf(w, "  key %s\n", d.Key)
		for _, a := range d.Log {
			fmt.Fprintf(w, "    #%d %s %s", a.N, ts(a.At), a.Outcome)
			if a.Status != 0 {
				fmt.Fprintf(w, " HTTP %d", a.Status)
			}
			fmt.Fprintf(w, " %.1fms  %s\n", float64(a.Latency.Microseconds())/1000, a.Request)
			if a.Error != "" {
				fmt.Fprintf(w, "       error: %s\n", clip(a.Error, 200))
			}
		}
	}
	return 0
}

// deliveryFilterFlags registers the flags shared by deliveries and replay.
type deliveryFilterFlags struct {
	state, destination, reason, since, until *string
}

func addDeliveryFilter(fs *flag.FlagSet, defState string) deliveryFilterFlags {
	return deliveryFilterFlags{
		state:       fs.String("state", defState, "states, comma-separated: pending, retrying, waiting, delivered, dead, skipped"),
		destination: fs.String("destination", "", "only this destination"),
		reason:      fs.String("reason", "", "only deliveries whose reason or last error contains this"),
		since:       fs.String("since", "", "created at or after (RFC 3339, or a duration ago such as 24h)"),
		until:       fs.String("until", "", "created at or before (RFC 3339, or a duration ago)"),
	}
}

// stateNames are the values of --state.
var stateNames = []string{"pending", "retrying", "waiting", "delivered", "dead", "skipped"}

// check refuses unknown states and destinations, listing the valid ones.
func (f deliveryFilterFlags) check(ctx context.Context, c *adminClient) error {
	if err := checkChoice("state", *f.state, stateNames, nil); err != nil {
		return err
	}
	return checkDestination(ctx, c, "--destination", *f.destination)
}

func (f deliveryFilterFlags) query() url.Values {
	q := url.Values{}
	setQuery(q, map[string]string{"state": *f.state, "destination": *f.destination, "reason": *f.reason, "since": *f.since, "until": *f.until})
	return q
}

type apiJob struct {
	ID        string         `json:"id"`
	Total     int            `json:"total"`
	Done      int            `json:"done"`
	Finished  bool           `json:"finished"`
	Following bool           `json:"following,omitempty"`
	Outcome   map[string]int `json:"outcome,omitempty"`
	Error     string         `json:"error,omitempty"`
	Started   time.Time      `json:"started"`
	Filter    string         `json:"filter,omitempty"`
}

func cmdReplay(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("replay", env)
	addr, asJSON := clientFlags(fs, env)
	f := addDeliveryFilter(fs, "dead")
	all := fs.Bool("all", false, "replay every matching delivery even with no other filter")
	dry := fs.Bool("dry-run", false, "only count what would be replayed")
	rate := fs.Float64("rate", 50, "replays per second (a cap so replays never starve live traffic)")
	noWait := fs.Bool("no-wait", false, "start a bulk replay and return at once instead of following its progress")
	poll := fs.Duration("poll", time.Second, "progress poll interval")
	confirm := fs.Bool("confirm", false, "also re-send delivered work (a destination without deduplication counts it twice)")
	noFollow := fs.Bool("no-follow", false, "stop once the deliveries are queued, without following them to their final state")
	fs.Usage = func() {
		flagUsage(fs, "usage: postback replay <delivery key>...   replay these deliveries (keys from 'postback deliveries')\n       postback replay [filters] [--dry-run]  replay every matching delivery (default state dead)")
	}
	keys, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	if len(keys) > 0 {
		if *dry || *all || *f.destination != "" || *f.reason != "" || *f.since != "" || *f.until != "" {
			return exitErr(env, usageError("give delivery keys or filters, not both"))
		}
		var replayed []any
		for _, k := range keys {
			var d apiDelivery
			if err := c.do(ctx, http.MethodPost, "/admin/api/deliveries/replay", nil, map[string]any{"key": k, "confirm": *confirm}, &d); err != nil {
				return exitErr(env, confirmHint(err))
			}
			replayed = append(replayed, d)
			if !*asJSON {
				fmt.Fprintf(env.Stdout, "queued %s (%s)\n", d.Key, d.State)
			}
		}
		if *asJSON {
			printJSON(env.Stdout, map[string]any{"replayed": replayed})
		}
		return 0
	}
	if err := f.check(ctx, c); err != nil {
		return exitErr(env, err)
	}
	q := f.query()
	if *f.destination == "" && *f.reason == "" && *f.since == "" && *f.until == "" && !*all {
		return exitErr(env, usageError("name delivery keys, or filter with --destination/--reason/--since/--until, or pass --all"))
	}
	q.Set("rate_per_second", strconv.FormatFloat(*rate, 'f', -1, 64))
	if *confirm {
		q.Set("confirm_delivered", "true")
	}
	if *dry {
		q.Set("dry_run", "true")
		var out struct {
			DryRun bool   `json:"dry_run"`
			Count  int    `json:"count"`
			Filter string `json:"filter"`
		}
		if err := c.do(ctx, http.MethodPost, "/admin/api/replay", q, nil, &out); err != nil {
			return exitErr(env, err)
		}
		if *asJSON {
			printJSON(env.Stdout, out)
		} else {
			fmt.Fprintf(env.Stdout, "%d deliveries would be replayed (%s)\n", out.Count, out.Filter)
		}
		return 0
	}
	var job apiJob
	if err := c.do(ctx, http.MethodPost, "/admin/api/replay", q, nil, &job); err != nil {
		return exitErr(env, confirmHint(err))
	}
	if !*asJSON {
		fmt.Fprintf(env.Stderr, "replay %s started: %d deliveries at up to %g/s\n", job.ID, job.Total, *rate)
	}
	for !*noWait && (!job.Finished || job.Following && !*noFollow) {
		select {
		case <-ctx.Done():
			fmt.Fprintf(env.Stderr, "stopped following; replay %s continues on the gateway\n", job.ID)
			return 1
		case <-time.After(*poll):
		}
		id := job.ID
		job = apiJob{} // omitted fields (following: false) must not keep old values
		if err := c.do(ctx, http.MethodGet, "/admin/api/replay/"+url.PathEscape(id), nil, nil, &job); err != nil {
			return exitErr(env, err)
		}
		if !*asJSON {
			fmt.Fprintf(env.Stderr, "  %d/%d queued%s\n", job.Done, job.Total, outcomeText(job.Outcome, ", "))
		}
	}
	if *asJSON {
		printJSON(env.Stdout, job)
	} else if job.Finished {
		fmt.Fprintf(env.Stdout, "replay %s: %d of %d deliveries queued again%s\n", job.ID, job.Done, job.Total, outcomeText(job.Outcome, "; outcome: "))
	} else {
		fmt.Fprintf(env.Stdout, "replay %s running: follow it with GET /admin/api/replay/%s\n", job.ID, job.ID)
	}
	if job.Error != "" {
		fmt.Fprintf(env.Stderr, "postback: replay %s stopped: %s\n", job.ID, job.Error)
		return 1
	}
	return 0
}

type apiRate struct {
	OK    int     `json:"ok"`
	Total int     `json:"total"`
	Ratio float64 `json:"ratio"`
}

func (r apiRate) String() string {
	if r.Total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%% of %d", 100*r.Ratio, r.Total)
}

func cmdDestinations(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("destinations", env)
	addr, asJSON := clientFlags(fs, env)
	fs.Usage = func() {
		flagUsage(fs, "usage: postback destinations [flags]              health and backlog of every destination\n       postback destinations [flags] test <name>  send a test event through the destination's validation path (exit 1 unless the vendor really tested and accepted it)\n       postback destinations [flags] resume <name>  end a pause or open circuit now and send the queued deliveries\n       postback destinations [flags] reload  read the configuration file again and apply its destinations and their secrets (as SIGHUP does)")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	switch {
	case len(pos) == 2 && pos[0] == "test":
		return testDestination(ctx, env, c, pos[1], *asJSON)
	case len(pos) == 2 && pos[0] == "resume":
		return resumeDestination(ctx, env, c, pos[1], *asJSON)
	case len(pos) == 1 && pos[0] == "reload":
		return reloadDestinations(ctx, env, c, *asJSON)
	case len(pos) != 0:
		return exitErr(env, usageError("usage: postback destinations [test <name> | resume <name> | reload]"))
	}
	var out struct {
		Destinations []struct {
			Name        string    `json:"name"`
			Type        string    `json:"type"`
			Circuit     string    `json:"circuit"`
			Paused      bool      `json:"paused"`
			PausedWhy   string    `json:"paused_reason,omitempty"`
			LastError   string    `json:"last_error,omitempty"`
			LastErrorAt time.Time `json:"last_error_at,omitzero"`
			Success5m   apiRate   `json:"success_5m"`
			Success1h   apiRate   `json:"success_1h"`
			InFlight    int       `json:"in_flight"`
			Held        *apiHeld  `json:"held,omitempty"`
			Queue       struct {
				Depth   int `json:"depth"`
				Waiting int `json:"waiting"`
			} `json:"queue"`
			OldestPending float64 `json:"oldest_pending_seconds"`
		} `json:"destinations"`
	}
	if err := c.do(ctx, http.MethodGet, "/admin/api/destinations", nil, nil, &out); err != nil {
		return exitErr(env, err)
	}
	if *asJSON {
		printJSON(env.Stdout, out)
		return 0
	}
	tw := table(env.Stdout)
	fmt.Fprintln(tw, "NAME\tTYPE\tCIRCUIT\tPAUSED\tQUEUE\tOLDEST\tSUCCESS 5M\tSUCCESS 1H\tLAST ERROR")
	held := map[string]*apiHeld{}
	defer func() { printHeld(env.Stdout, held) }()
	for _, d := range out.Destinations {
		held[d.Name] = d.Held
		paused := "no"
		if d.Paused {
			paused = "yes: " + clip(d.PausedWhy, 30)
		}
		oldest := "-"
		if d.Queue.Depth > 0 {
			oldest = (time.Duration(d.OldestPending) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.Name, d.Type, d.Circuit, paused, d.Queue.Depth, oldest,
			d.Success5m, d.Success1h, dash(clip(d.LastError, 60)))
	}
	tw.Flush()
	return 0
}

func testDestination(ctx context.Context, env *Env, c *adminClient, name string, asJSON bool) int {
	var out struct {
		Tested    bool   `json:"tested"`
		Passed    bool   `json:"passed"`
		Path      string `json:"path,omitempty"`
		Where     string `json:"where,omitempty"`
		Outcome   string `json:"outcome"`
		Status    int    `json:"status,omitempty"`
		Reason    string `json:"reason,omitempty"`
		Request   string `json:"request,omitempty"`
		Response  string `json:"response,omitempty"`
		Error     string `json:"error,omitempty"`
		LatencyMs int64  `json:"latency_ms"`
		Event     struct {
			ID string `json:"id"`
		} `json:"event"`
	}
	if err := c.do(ctx, http.MethodPost, "/admin/api/destinations/"+url.PathEscape(name)+"/test", nil, nil, &out); err != nil {
		var ce *clientError
		if errors.As(err, &ce) && ce.status == http.StatusNotFound {
			// Not found: say which names exist (still exit 5).
			var ue *clientError
			if errors.As(checkDestination(ctx, c, "destination", name), &ue) {
				ce.msg = ue.msg
			}
		}
		return exitErr(env, err)
	}
	if asJSON {
		printJSON(env.Stdout, out)
	} else {
		verdict := "PASSED"
		switch {
		case !out.Tested:
			verdict = "NOT TESTED"
		case !out.Passed:
			verdict = "FAILED"
		}
		fmt.Fprintf(env.Stdout, "%s: %s: %s", name, verdict, out.Outcome)
		if out.Status != 0 {
			fmt.Fprintf(env.Stdout, " (HTTP %d)", out.Status)
		}
		fmt.Fprintf(env.Stdout, " in %dms", out.LatencyMs)
		if out.Event.ID != "" {
			fmt.Fprintf(env.Stdout, ", test event %s", out.Event.ID)
		}
		fmt.Fprintln(env.Stdout)
		if out.Path != "" {
			fmt.Fprintf(env.Stdout, "path:     %s\n", out.Path)
		}
		if out.Request != "" {
			fmt.Fprintf(env.Stdout, "request:  %s\n", out.Request)
		}
		if out.Response != "" {
			// The vendor's answer, verbatim.
			fmt.Fprintf(env.Stdout, "response: %s\n", out.Response)
		}
		if out.Reason != "" || out.Error != "" {
			fmt.Fprintf(env.Stdout, "reason:   %s %s\n", out.Reason, out.Error)
		}
		if out.Where != "" {
			fmt.Fprintf(env.Stdout, "see:      %s\n", out.Where)
		}
	}
	if !out.Passed {
		return 1
	}
	return 0
}

// checkSourceType validates --source and --type (a canonical type, or
// custom:NAME).
func checkSourceType(source, typ string) error {
	if err := checkChoice("source", source, sourceNames, nil); err != nil {
		return err
	}
	return checkChoice("type", typ, typeNames(), func(v string) bool { return strings.HasPrefix(v, "custom:") })
}

// sourceNames are the values of --source.
var sourceNames = []string{mapping.SourceApple, mapping.SourceGoogle, mapping.SourceStripe, mapping.SourceShopify, mapping.SourceCustom}

// typeNames are the values of --type (plus custom:NAME).
func typeNames() []string {
	out := make([]string, len(mapping.Types))
	for i, t := range mapping.Types {
		out[i] = string(t)
	}
	return out
}

// checkChoice is a usage error unless every comma-separated value of flag
// --name is one of valid (or allowed by extra); the error lists the valid
// values.
func checkChoice(name, value string, valid []string, extra func(string) bool) error {
	if value == "" {
		return nil
	}
	for _, v := range strings.Split(value, ",") {
		v = strings.TrimSpace(v)
		if slices.Contains(valid, v) || (extra != nil && extra(v)) {
			continue
		}
		return usageError("--%s %q is not one of: %s", name, v, strings.Join(valid, ", "))
	}
	return nil
}

// checkDestination is a usage error unless name is one of the gateway's
// destinations; the error lists them.
func checkDestination(ctx context.Context, c *adminClient, flagName, name string) error {
	if name == "" {
		return nil
	}
	var out struct {
		Destinations []struct {
			Name string `json:"name"`
		} `json:"destinations"`
	}
	if err := c.do(ctx, http.MethodGet, "/admin/api/destinations", nil, nil, &out); err != nil {
		return err
	}
	names := make([]string, 0, len(out.Destinations))
	for _, d := range out.Destinations {
		names = append(names, d.Name)
	}
	if slices.Contains(names, name) {
		return nil
	}
	if len(names) == 0 {
		return usageError("%s %q: the gateway has no enabled destination", flagName, name)
	}
	return usageError("%s %q is not one of the gateway's destinations: %s", flagName, name, strings.Join(names, ", "))
}
