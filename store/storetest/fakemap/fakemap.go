// Package fakemap is the fake mapping of the store tests: notifications
// whose body lists the canonical facts they report. It imports nothing of
// the store, so the store's own (internal) tests and the conformance suite
// (storetest) share it.
package fakemap

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/postback/postback/mapping"
)

// Fact is one canonical fact in a fake notification body.
type Fact struct {
	Fact string            `json:"fact"` // the event id derives from it
	Type mapping.Type      `json:"type"`
	User string            `json:"user,omitempty"`
	IDs  map[string]string `json:"ids,omitempty"`
	// Sub names the subscription whose state counts this fact's runs.
	Sub string `json:"sub,omitempty"`
	// AtMs overrides the event's occurred time (Unix ms).
	AtMs int64 `json:"at_ms,omitempty"`
	// SubID is the event's subscription id.
	SubID string `json:"sub_id,omitempty"`
	// State, when set, names a subscription state that remembers the
	// fact's user and identifiers (as source mappings keep them).
	State string `json:"state,omitempty"`
}

// Body is what Map reads.
type Body struct {
	Facts  []Fact `json:"facts,omitempty"`
	Ignore string `json:"ignore,omitempty"`
	Fail   string `json:"fail,omitempty"` // malformed | currency | amount | unknown | hard
	// Sub, when set, is the subscription state the notification counts in
	// (default "test:count").
	Sub string `json:"sub,omitempty"`
}

// ErrHard is the fake mapping's failure that is not a mapping error.
var ErrHard = errors.New("fake: not a mapping error")

// Map maps Body notifications (or, for deferred ones, their
// enrichment). It counts its runs in the subscription state (value
// "count", and the list of keys seen in "seen"), so tests can tell
// whether and in which order states were written.
func Map(n *mapping.Notification, st mapping.States) (mapping.Result, error) {
	body := n.Body
	if n.Deferred {
		body = n.Enriched
	}
	var b Body
	if err := json.Unmarshal(body, &b); err != nil {
		return mapping.Result{}, fmt.Errorf("%w: %v", mapping.ErrMalformed, err)
	}
	switch b.Fail {
	case "malformed":
		return mapping.Result{}, fmt.Errorf("%w: fake", mapping.ErrMalformed)
	case "currency":
		return mapping.Result{}, fmt.Errorf("%w: fake", mapping.ErrCurrency)
	case "amount":
		return mapping.Result{}, fmt.Errorf("%w: fake", mapping.ErrAmount)
	case "unknown":
		return mapping.Result{}, fmt.Errorf("%w: fake", mapping.ErrUnknownSource)
	case "hard":
		return mapping.Result{}, ErrHard
	}
	key := b.Sub
	if key == "" {
		key = "test:count"
	}
	s, _ := st.State(key)
	s.Key = key
	c := 0
	fmt.Sscan(s.Value("count"), &c)
	s.SetValue("count", fmt.Sprint(c+1))
	s.SetValue("seen", s.Value("seen")+n.Key+";")
	out := mapping.Result{Ignored: b.Ignore, States: []mapping.State{s}}
	for _, f := range b.Facts {
		if f.State != "" {
			out.States = append(out.States, mapping.State{Key: f.State, AppUserID: f.User, Identifiers: f.IDs})
		}
		at := n.ReceivedAt
		if f.AtMs != 0 {
			at = time.UnixMilli(f.AtMs).UTC()
		}
		out.Events = append(out.Events, mapping.Event{
			ID: mapping.EventID("test", f.Fact), Type: f.Type, Source: n.Source, Environment: mapping.Production,
			AppID: "com.example.app", User: mapping.User{AppUserID: f.User, Identifiers: f.IDs},
			OccurredAt: at, SourceEventID: n.Key, SubscriptionID: f.SubID,
		})
	}
	return out, nil
}

// FactID is the event id of a fact.
func FactID(fact string) string { return mapping.EventID("test", fact) }

// Note builds a Stripe-like notification.
func Note(key string, b Body) *mapping.Notification {
	body, err := json.Marshal(b)
	if err != nil {
		panic(err)
	}
	return &mapping.Notification{Source: mapping.SourceStripe, Key: key, Type: "invoice.paid", AppID: "com.example.app", Body: body}
}

// Facts is a body of renewals of user u1.
func Facts(ff ...string) Body {
	var b Body
	for _, f := range ff {
		b.Facts = append(b.Facts, Fact{Fact: f, Type: mapping.SubscriptionRenewed, User: "u1"})
	}
	return b
}
