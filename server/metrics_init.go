package server

import (
	"runtime/debug"
	"slices"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/webhooks"
)

// commonRejectReasons are the reason codes every source can answer.
var commonRejectReasons = []string{
	webhooks.CodeTooLarge, webhooks.CodeMalformed, webhooks.CodeUnauthorized, webhooks.CodeSignature,
	webhooks.CodeStale, webhooks.CodeUnknownApp, webhooks.CodeEnvironment, webhooks.CodeUnavailable,
	webhooks.CodeClientClosed, webhooks.CodeInvalid,
}

// sourceRejectReasons are the reason codes particular to one source.
var sourceRejectReasons = map[string][]string{
	"apple": {
		webhooks.CodeAppleAlg, webhooks.CodeAppleCrit, webhooks.CodeAppleCertificate, webhooks.CodeAppleUntrustedChain,
		webhooks.CodeAppleExpired, webhooks.CodeAppleNotYetValid, webhooks.CodeAppleLeafOID, webhooks.CodeAppleIntermediateOID,
		webhooks.CodeAppleLeafKey, webhooks.CodeAppleRevoked, webhooks.CodeAppleOCSPUnavailable, webhooks.CodeAppleAppAppleID,
		webhooks.CodeAppleNestedBundle, webhooks.CodeAppleNestedEnvironment,
	},
	"shopify": {webhooks.CodeShopMismatch, webhooks.CodeWrongShape},
}

// initMetrics creates every series of the configured sources and
// destinations at zero, and postback_build_info.
func (g *Gateway) initMetrics(sources []string, destinations []string) {
	version, commit := g.opts.Version, g.opts.Commit
	if version == "" {
		version = "dev"
	}
	if commit == "" {
		commit = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	g.Metrics.SetBuildInfo(version, commit)
	for _, s := range sources {
		g.Metrics.InitSource(s, append(append([]string(nil), commonRejectReasons...), sourceRejectReasons[s]...))
	}
	if slices.Contains(sources, mapping.SourceGoogle) {
		for _, why := range []string{mapping.GoogleOrderNotFound, mapping.GoogleOrderUnavailable} {
			g.Metrics.RevenueUnknown.WithLabelValues(mapping.SourceGoogle, why)
		}
	}
	for _, d := range destinations {
		g.Metrics.InitDestination(d)
	}
}
