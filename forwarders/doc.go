// Package forwarders sends canonical events to destinations: one file per
// destination type, registered in one place (registry in forwarder.go).
//
// A forwarder builds requests and classifies responses; it never sleeps,
// retries or rate-limits. Like Alertmanager's notifiers, each Result says
// whether a failure is worth retrying (Retry), permanent for the event
// (Dead), a problem of the destination's own configuration or credentials
// (Pause) or a deliberate non-send (Skipped); the dispatcher owns backoff,
// rate limits, batching and circuit breaking. Secrets never appear in a
// Result: request summaries carry the URL without its query.
//
// A forwarder whose destination has a validation path for test events
// (test_event_code, a sandbox environment, test keys or apps, GA4's
// validation server) is a Tester: its Test sends one test event there and
// reports whether the vendor really tested it (TestReport.Tested), its
// answer verbatim, and where the test shows in the vendor's UI. A test that
// reached no validation path is never reported as passed.
package forwarders
