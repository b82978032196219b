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
// from a notification; the raw values never leave this package. One detector
// (IsEmail, IsPhone) serves the log masker (MaskPII) and the disk (ScrubPII,
// ScrubValue): a stored body holds no value the logs would mask, whatever
// key it sits under. Amounts written as decimals follow one precision rule
// (ErrPrecision).
package mapping
