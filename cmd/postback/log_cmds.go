package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// apiLogEntry is one row of GET /admin/api/log.
type apiLogEntry struct {
	apiDelivery
	Type           string    `json:"type"`
	Source         string    `json:"source"`
	ReceivedAt     time.Time `json:"received_at"`
	User           string    `json:"user,omitempty"`
	TransactionID  string    `json:"transaction_id,omitempty"`
	SubscriptionID string    `json:"subscription_id,omitempty"`
	Shown          string    `json:"shown_state"`
	Replay         string    `json:"replay"`
	ReplayNote     string    `json:"replay_note,omitempty"`
}

type apiLogPage struct {
	Entries []apiLogEntry `json:"entries"`
	Total   int           `json:"total"`
	Offset  int           `json:"offset"`
	Limit   int           `json:"limit"`
	Partial bool          `json:"partial,omitempty"`
	Held    []string      `json:"held,omitempty"`
}

// cmdDeliveries is `postback deliveries`: the deliveries log.
// logStateNames are the deliveries log's states: the stored ones and held.
var logStateNames = append(append([]string(nil), stateNames...), "held")

func cmdDeliveries(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("deliveries", env)
	addr, asJSON := clientFlags(fs, env)
	state := fs.String("state", "", "states, comma-separated: pending, retrying, waiting, held, dead, skipped, delivered (held: pending or retrying at a paused destination or one whose circuit is open)")
	dest := fs.String("destination", "", "only this destination")
	typ := fs.String("type", "", "only events of this type (trial_started, refund, ...)")
	source := fs.String("source", "", "only events of this source (apple, google, stripe, shopify, custom)")
	search := fs.String("search", "", "an event id, transaction id, original transaction id, purchase token or user id")
	reason := fs.String("reason", "", "only deliveries whose reason or last error contains this")
	since := fs.String("since", "", "events received at or after (RFC 3339, or a duration ago such as 24h)")
	until := fs.String("until", "", "events received at or before (RFC 3339, or a duration ago)")
	offset := fs.Int("offset", 0, "skip this many rows (paging: the footer prints the next offset)")
	limit := fs.Int("limit", 50, "rows per page (1-1000)")
	export := fs.String("export", "", "csv or json: print every matching row (up to 100,000) instead of a page")
	fs.Usage = func() { flagUsage(fs, "usage: postback deliveries [flags]   the deliveries log, newest event first") }
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		return exitErr(env, usageError("unexpected argument %q (filters are flags: --state dead --destination NAME --search ID)", pos[0]))
	}
	if *export != "" && *export != "csv" && *export != "json" {
		return exitErr(env, usageError("--export takes csv or json, not %q", *export))
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	for _, st := range strings.Split(*state, ",") {
		if err := checkChoice("state", strings.TrimSpace(st), logStateNames, nil); err != nil {
			return exitErr(env, err)
		}
	}
	if err := checkSourceType(*source, *typ); err != nil {
		return exitErr(env, err)
	}
	if err := checkDestination(ctx, c, "--destination", *dest); err != nil {
		return exitErr(env, err)
	}
	q := url.Values{}
	setQuery(q, map[string]string{"state": *state, "destination": *dest, "type": *typ, "source": *source, "q": *search,
		"reason": *reason, "since": *since, "until": *until, "offset": strconv.Itoa(*offset), "limit": strconv.Itoa(*limit), "format": *export})
	if *export != "" {
		if err := c.raw(ctx, "/admin/api/log", q, env.Stdout); err != nil {
			return exitErr(env, err)
		}
		return 0
	}
	var p apiLogPage
	if err := c.do(ctx, http.MethodGet, "/admin/api/log", q, nil, &p); err != nil {
		return exitErr(env, err)
	}
	if *asJSON {
		printJSON(env.Stdout, p)
		return 0
	}
	printLog(env.Stdout, p)
	if len(p.Entries) == 0 {
		fmt.Fprintln(env.Stderr, "no deliveries match")
	}
	return 0
}

// printLog renders a page of the deliveries log.
func printLog(w io.Writer, p apiLogPage) {
	tw := table(w)
	fmt.Fprintln(tw, "RECEIVED\tEVENT\tTYPE\tSOURCE\tUSER\tDESTINATION\tSTATE\tATTEMPTS\tSTATUS\tREASON")
	for _, e := range p.Entries {
		st := e.Shown
		if st == "" {
			st = e.State
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", ts(e.ReceivedAt), e.EventID, e.Type, e.Source, dash(clip(e.User, 24)),
			e.Destination, st, e.Attempts, statusOrDash(e.LastStatus), dash(clip(e.Reason, 50)))
	}
	tw.Flush()
	if len(p.Entries) > 0 {
		fmt.Fprintf(w, "rows %d-%d of %d", p.Offset+1, p.Offset+len(p.Entries), p.Total)
		if p.Partial {
			fmt.Fprint(w, "+ (counting stopped at the scan limit: narrow --since/--until)")
		}
		if p.Offset > 0 {
			fmt.Fprintf(w, "; newer: --offset %d", max(0, p.Offset-p.Limit))
		}
		if p.Offset+len(p.Entries) < p.Total {
			fmt.Fprintf(w, "; older: --offset %d", p.Offset+len(p.Entries))
		}
		fmt.Fprintln(w)
	}
	if len(p.Held) > 0 {
		fmt.Fprintf(w, "held now: %s (see 'postback destinations'; resume with 'postback destinations resume NAME')\n", strings.Join(p.Held, ", "))
	}
}

func statusOrDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// raw copies an admin API answer to w as it is (exports).
func (c *adminClient) raw(ctx context.Context, path string, q url.Values, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.addr+path+"?"+q.Encode(), nil)
	if err != nil {
		return &clientError{status: http.StatusBadRequest, code: "usage", msg: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return &clientError{err: fmt.Errorf("cannot reach the gateway at %s: %w", c.addr, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return &clientError{status: resp.StatusCode, code: "error", msg: strings.TrimSpace(string(data))}
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// apiDeadGroup is one group of GET /admin/api/dead/groups.
type apiDeadGroup struct {
	Destination  string      `json:"destination"`
	Reason       string      `json:"reason"`
	Count        int         `json:"count"`
	Newest       time.Time   `json:"newest"`
	Sample       apiDelivery `json:"sample"`
	LastResponse string      `json:"last_response,omitempty"`
}

// cmdDead is `postback dead`: dead letters grouped by destination and
// reason, with the last response of each group.
func cmdDead(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("dead", env)
	addr, asJSON := clientFlags(fs, env)
	dest := fs.String("destination", "", "only this destination")
	fs.Usage = func() {
		flagUsage(fs, "usage: postback dead [flags]   dead letters grouped by destination and reason\n       replay a group with: postback replay --destination NAME --reason '=REASON' (a leading = matches exactly)")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		return exitErr(env, usageError("unexpected argument %q (use --destination NAME)", pos[0]))
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	q := url.Values{}
	setQuery(q, map[string]string{"destination": *dest})
	var out struct {
		Groups []apiDeadGroup `json:"groups"`
	}
	if err := c.do(ctx, http.MethodGet, "/admin/api/dead/groups", q, nil, &out); err != nil {
		return exitErr(env, err)
	}
	if *asJSON {
		printJSON(env.Stdout, out)
		return 0
	}
	printDeadGroups(env.Stdout, out.Groups)
	return 0
}

func printDeadGroups(w io.Writer, gs []apiDeadGroup) {
	if len(gs) == 0 {
		fmt.Fprintln(w, "no dead letters")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "DESTINATION\tREASON\tDEAD\tNEWEST\tSTATUS\tLAST RESPONSE")
	total := 0
	for _, g := range gs {
		total += g.Count
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", g.Destination, dash(clip(g.Reason, 40)), g.Count, ts(g.Newest), statusOrDash(g.Sample.LastStatus), dash(clip(g.LastResponse, 60)))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d dead in %d groups; replay a group: postback replay --destination NAME --reason '=REASON'\n", total, len(gs))
}

// apiHeld is a destination's held state (dispatch.Held).
type apiHeld struct {
	Reason       string    `json:"reason"`
	Detail       string    `json:"detail,omitempty"`
	Since        time.Time `json:"since,omitzero"`
	NextProbe    time.Time `json:"next_probe,omitzero"`
	LastStatus   int       `json:"last_status,omitempty"`
	LastResponse string    `json:"last_response,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
}

// printHeld explains each held destination under the destinations table.
func printHeld(w io.Writer, held map[string]*apiHeld) {
	names := make([]string, 0, len(held))
	for n, h := range held {
		if h != nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		h := held[n]
		fmt.Fprintf(w, "\n%s is held: %s", n, h.Reason)
		if h.Detail != "" {
			fmt.Fprintf(w, " (%s)", h.Detail)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  since:         %s\n", ts(h.Since))
		fmt.Fprintf(w, "  next probe:    %s\n", ts(h.NextProbe))
		last := ""
		if h.LastStatus != 0 {
			last = "HTTP " + strconv.Itoa(h.LastStatus) + " "
		}
		last += clip(h.LastResponse, 200)
		if strings.TrimSpace(last) == "" {
			last = clip(h.LastError, 200)
		}
		fmt.Fprintf(w, "  last response: %s\n", dash(strings.TrimSpace(last)))
		fmt.Fprintf(w, "  resume now:    postback destinations resume %s\n", n)
	}
}

// resumeDestination is `postback destinations resume NAME`.
func resumeDestination(ctx context.Context, env *Env, c *adminClient, name string, asJSON bool) int {
	var out struct {
		Destination string `json:"destination"`
		WasHeld     bool   `json:"was_held"`
	}
	if err := c.do(ctx, http.MethodPost, "/admin/api/destinations/"+url.PathEscape(name)+"/resume", nil, nil, &out); err != nil {
		return exitErr(env, err)
	}
	if asJSON {
		printJSON(env.Stdout, out)
	} else if out.WasHeld {
		fmt.Fprintf(env.Stdout, "%s resumed: its queued deliveries go now\n", name)
	} else {
		fmt.Fprintf(env.Stdout, "%s was not held; its queued deliveries go now\n", name)
	}
	return 0
}

// outcomeText renders a bulk replay's outcome by state after prefix, in a
// fixed order ("" when there is none yet).
func outcomeText(m map[string]int, prefix string) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, st := range []string{"delivered", "dead", "skipped", "retrying", "pending", "waiting", "gone"} {
		if n := m[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	return prefix + strings.Join(parts, ", ")
}

// reloadDestinations is `postback destinations reload`.
func reloadDestinations(ctx context.Context, env *Env, c *adminClient, asJSON bool) int {
	var out struct {
		Applied   []string `json:"applied"`
		Added     []string `json:"added,omitempty"`
		Removed   []string `json:"removed,omitempty"`
		Restart   []string `json:"restart_needed,omitempty"`
		Unchanged string   `json:"unchanged"`
	}
	if err := c.do(ctx, http.MethodPost, "/admin/api/reload", nil, nil, &out); err != nil {
		return exitErr(env, err)
	}
	if asJSON {
		printJSON(env.Stdout, out)
		return 0
	}
	fmt.Fprintf(env.Stdout, "reloaded: %s\n", dash(strings.Join(out.Applied, ", ")))
	for _, l := range []struct {
		what  string
		names []string
	}{{"added, start after a restart", out.Added}, {"removed, still running until a restart", out.Removed}, {"concurrency or rate limit changed, applies after a restart", out.Restart}} {
		if len(l.names) > 0 {
			fmt.Fprintf(env.Stdout, "%s: %s\n", l.what, strings.Join(l.names, ", "))
		}
	}
	fmt.Fprintf(env.Stdout, "not reloaded: %s\n", out.Unchanged)
	return 0
}

// apiDestStatus is one destination's state for an event of the list.
type apiDestStatus struct {
	Destination string `json:"destination"`
	State       string `json:"state"`
}

// statusChips renders an event's delivery states: "backend:delivered
// mmp:held".
func statusChips(ss []apiDestStatus) string {
	if len(ss) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(ss))
	for _, s := range ss {
		parts = append(parts, s.Destination+":"+s.State)
	}
	return strings.Join(parts, " ")
}

// confirmHint turns the gateway's request for a confirmation into the
// CLI's words: re-sending delivered work takes --confirm.
func confirmHint(err error) error {
	var ce *clientError
	if errors.As(err, &ce) && ce.code == "confirm" {
		return &clientError{status: ce.status, code: ce.code, msg: strings.SplitN(ce.msg, ";", 2)[0] + "; pass --confirm to re-send it"}
	}
	return err
}
