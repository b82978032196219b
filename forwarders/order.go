package forwarders

import "github.com/postback/postback/mapping"

// Orderer is a forwarder whose API takes events of one key in
// chronological order only. The dispatcher then sends deliveries with the
// same key one at a time, in event-time order (across restarts and
// replicas: the order lives in the store), while different keys still go
// in parallel.
type Orderer interface {
	// OrderKey returns e's ordering key, "" when e needs no order. The
	// store keeps only a hash of it.
	OrderKey(e *mapping.Event) string
}

// OrderKey implements Orderer: "Events must be submitted chronologically
// for each device and event token" (Adjust S2S). The device is the one
// the event carries when it is queued; an event that has none yet is
// ordered by its app user, whose device it will get from the identity
// store.
func (a *Adjust) OrderKey(e *mapping.Event) string {
	t := &a.prod
	if e.Sandboxed() && a.sandbox != nil {
		t = a.sandbox
	}
	token := adjustToken(e, t.tokens)
	if token == "" {
		return ""
	}
	device := adjustDevice(e)
	if device == "" {
		if e.User.AppUserID == "" {
			return ""
		}
		device = "user:" + e.User.AppUserID
	}
	return t.environment + "|" + device + "|" + token
}

// OrderKey implements Orderer: Singular asks senders to keep each device's
// events in order ("maintaining order" when retrying, Singular's
// server-to-server response codes article), so the key is the device, or
// the app user when the event has no device id yet.
func (g *Singular) OrderKey(e *mapping.Event) string {
	for _, k := range []string{mapping.IDSingular, mapping.IDIDFV, mapping.IDIDFA, mapping.IDGAID, mapping.IDAndroidID, mapping.IDAppSetID} {
		if v := e.Identifier(k); v != "" {
			return k + ":" + v
		}
	}
	if e.User.AppUserID != "" {
		return "user:" + e.User.AppUserID
	}
	return ""
}
