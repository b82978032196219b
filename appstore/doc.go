// Package appstore is a small client of Apple's App Store Server API: the
// two endpoints Postback needs to recover what notifications alone cannot
// tell.
//
//   - Get Notification History (POST /inApps/v1/notifications/history)
//     returns the original signedPayloads Apple sent, or tried to send, in a
//     time range: Backfill replays them through the webhook's own
//     verify-dedupe-map path after an outage.
//   - Get Transaction History (GET /inApps/v2/history/{transactionId})
//     returns a customer's signed transactions: the Apple webhook reads it
//     when a renewal arrives for a subscription it has no state for, to tell
//     whether the previous period was a free trial.
//
// Requests are authorized with an ES256 JWT signed by the App Store Connect
// in-app purchase key (.p8): iss = issuer id, kid = key id, aud
// "appstoreconnect-v1", bid = the app's bundle id, lifetime 20 minutes (Apple
// allows at most 60). The client returns signed JWS strings untouched:
// verifying them is the webhook verifier's job.
package appstore
