// Package appletest makes App Store-shaped signing material for tests, the
// demo and the load generator, the way net/http/httptest makes servers: a
// root, an intermediate and a leaf certificate carrying Apple's extension
// OIDs, and a signer producing compact JWS with an x5c header exactly as the
// App Store signs notifications and transactions.
//
// Nothing here is trusted by default: a gateway accepts these signatures
// only when the PKI's root is configured in sources.apple.root_certificates.
package appletest
