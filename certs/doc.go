// Package certs embeds the Apple Root CA - G3 certificate that anchors every
// App Store Server Notification signature, so the gateway needs no download
// to verify Apple's JWS chains.
//
// The embedded bytes are checked against Apple's published SHA-256
// fingerprint before use: a mangled file (PEM instead of DER, a truncated
// download) fails at start-up with a clear message instead of rejecting
// every notification later.
package certs
