// Package console is Postback's operator web console, served at /admin/:
// an overview (events per hour by type for the last 24 hours, delivery
// success per destination, the dead-letter count), event search and event
// detail with its delivery timeline, the dead-letter list with single and
// bulk replay, and destination health with a "send test event" button.
//
// Pages are rendered on the server with html/template from templates
// embedded in the binary; the stylesheet is hand-written and embedded too,
// and no page loads anything from another origin. The console needs no
// JavaScript.
//
// Login is with the admin token. A successful login creates a random
// session id held in memory (so a restart logs everyone out) and sent as an
// HttpOnly, SameSite=Strict cookie, Secure when the request came over TLS.
// Every POST form carries a CSRF token: the session's own token once logged
// in, and a double-submit cookie token on the login form itself. Tokens are
// compared in constant time.
//
// The console does not know the gateway: it is given a Backend, a small
// interface of the store queries, dispatcher health and replay actions it
// needs, which the server implements.
package console
