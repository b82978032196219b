// Package play is Postback's client of the Google Play Developer (Android
// Publisher) API: purchases.subscriptionsv2.get, orders.get,
// purchases.products.get and purchases.voidedpurchases.list, plus the
// reconciliation sweep that finds refunds real-time notifications missed.
//
// Calls are made once each; the caller owns retries. Errors are *Error with
// a kind that tells the caller what to do: ErrNotFound (404/410) is final,
// ErrTemporary (408, 429, 5xx, network) should be retried with backoff, and
// ErrRejected (400, 401, 403) needs an operator (API access, service account
// permissions) and is retried slowly. Answers are returned as the API's JSON
// so that the inbox keeps exactly what Google said and the mapping, which
// imports nothing outside the standard library, decodes it.
//
// In production the client authenticates with a service account key file
// (Options.CredentialsFile). Tests point Options.Endpoint at a fake server
// (see webhooks/googletest) and send no credentials.
package play
