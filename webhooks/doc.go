// Package webhooks receives store notifications: one file per source with its
// verifier and echo handler, plus the request plumbing they share.
//
// Every handler follows the same order: read the raw body once under the
// size cap, verify authenticity (signature, certificate chain or token)
// before decoding anything, derive the source's dedupe key, and hand the
// verified notification to the store. The answer is 2xx only after the
// store's commit is durable; a store failure is a 503 so that the source
// retries. Verification failures never touch the store.
//
// Headers a source does not sign are bound to what it does sign (Shopify's
// topic and shop, shopify_shape.go). auth.go holds what the admin API and
// the /v1 API share: the one Bearer parser, digest comparison of tokens and
// the per-address throttle of failed guesses.
package webhooks
