// Package mapping turns verified store notifications into canonical
// conversion events.
//
// A mapping is a pure function (Func) from a notification and the prior
// per-subscription state to events and new state: no I/O and no clock reads,
// so every case is table-tested with golden files. Money is exact: Revenue
// holds integer micros and an ISO 4217 code, converted from each store's unit
// (Stripe's minor units, Apple's milliunits, Google's units+nanos, Shopify's
// decimal strings) without floating point. Event ids are deterministic
// (EventID), which is what makes a store's retry, or the same fact reported
// by two notifications, a single canonical event.
//
// Emails and phones are hashed (normalized, SHA-256) the moment they are read
// from a notification; the raw values never leave this package.
package mapping
