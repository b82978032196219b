// Package webhooks receives store notifications: one file per source with its
// verifier and echo handler, plus the request plumbing they share.
//
// Every handler follows the same order: read the raw body once under the
// size cap, verify authenticity (signature, certificate chain or token)
// before decoding anything, derive the source's dedupe key, and hand the
// verified notification to the store. The answer is 2xx only after the
// store's commit is durable; a store failure is a 503 so that the source
// retries. Verification failures never touch the store.
package webhooks
