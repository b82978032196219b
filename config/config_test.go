package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// env builds a getenv from pairs.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// minimal is a valid configuration with every source off, so a test can
// add only the keys it is about.
const minimal = `
sources:
  apple: {enabled: false}
  google: {enabled: false}
  stripe: {enabled: false}
  shopify: {enabled: false}
`

func TestDefaultIsRootConfig(t *testing.T) {
	root, err := os.ReadFile(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(root, Default) {
		t.Fatal("config.yaml and config/default.yaml (embedded in the binary) differ; fix: cp config.yaml config/default.yaml")
	}
}

// allSecrets sets every variable the shipped config references.
var allSecrets = []string{
	"POSTBACK_ADMIN_TOKEN", "admin-token-4f9c1e",
	"POSTBACK_API_KEY", "api-key-7d2b90",
	"APPLE_ISSUER_ID", "57246542-96fe-1a63-e053-0824d011072a",
	"APPLE_KEY_ID", "2X9R4HXF34",
	"APPLE_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nMIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQg\n-----END PRIVATE KEY-----",
	"GOOGLE_PUSH_SERVICE_ACCOUNT", "pubsub-push@project.iam.gserviceaccount.com",
	"GOOGLE_APPLICATION_CREDENTIALS", "/secrets/play-credentials.json",
	"STRIPE_WEBHOOK_SECRET", "whsec_stripe0secret0value",
	"SHOPIFY_WEBHOOK_SECRET", "shpss_shopify0secret0value",
	"WEBHOOK_URL", "https://backend.example.com/postback",
	"WEBHOOK_SECRET", "whsec_d2ViaG9vay1zZWNyZXQtdmFsdWU=",
}

func TestShippedConfig(t *testing.T) {
	t.Run("empty environment", func(t *testing.T) {
		c, err := Parse(Default, env())
		if err != nil {
			t.Fatalf("shipped config with no variables set: %v", err)
		}
		// Apple needs no secret: it stays on. Everything else is off.
		if !c.Sources.Apple.Enabled || c.Sources.Google.Enabled || c.Sources.Stripe.Enabled || c.Sources.Shopify.Enabled {
			t.Errorf("sources enabled: apple %v google %v stripe %v shopify %v; want only apple",
				c.Sources.Apple.Enabled, c.Sources.Google.Enabled, c.Sources.Stripe.Enabled, c.Sources.Shopify.Enabled)
		}
		if c.Admin.Token != "" || len(c.APIKeys) != 0 || len(c.Sources.Stripe.Secrets) != 0 {
			t.Errorf("admin token %q, api keys %q, stripe secrets %q; want all empty", c.Admin.Token, c.APIKeys, c.Sources.Stripe.Secrets)
		}
		if c.Sources.Apple.API != (AppleAPI{}) {
			t.Errorf("apple api %+v, want it off", c.Sources.Apple.API)
		}
		if len(c.Destinations) != 1 || c.Destinations[0].Disabled == "" {
			t.Fatalf("destinations %+v, want my-backend disabled", c.Destinations)
		}
		want := []string{
			"admin API and console: ${POSTBACK_ADMIN_TOKEN}",
			"API key api_keys[0]: ${POSTBACK_API_KEY}",
			"destination my-backend: ${WEBHOOK_URL}",
			"source google: ${",
			"App Store Server API (backfill, history look-ups): ${APPLE_ISSUER_ID}",
			"source shopify: ${SHOPIFY_WEBHOOK_SECRET}",
			"source stripe: ${STRIPE_WEBHOOK_SECRET}",
		}
		if len(c.Disabled) != len(want) {
			t.Errorf("disabled:\n  %s\nwant %d lines", strings.Join(c.Disabled, "\n  "), len(want))
		}
		for _, w := range want {
			if !containsPrefix(c.Disabled, w) {
				t.Errorf("no disabled line starting %q in:\n  %s", w, strings.Join(c.Disabled, "\n  "))
			}
		}
	})
	t.Run("every variable set", func(t *testing.T) {
		c, err := Parse(Default, env(allSecrets...))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Disabled) != 0 {
			t.Errorf("disabled %q, want nothing", c.Disabled)
		}
		if !c.Sources.Google.Enabled || !c.Sources.Stripe.Enabled || !c.Sources.Shopify.Enabled || c.Destinations[0].Disabled != "" {
			t.Errorf("a feature is off with every variable set: %+v", c.Sources)
		}
		if c.Admin.Token != "admin-token-4f9c1e" || len(c.APIKeys) != 1 || c.Sources.Stripe.Secrets[0] != "whsec_stripe0secret0value" {
			t.Errorf("values not expanded: %q %q %q", c.Admin.Token, c.APIKeys, c.Sources.Stripe.Secrets)
		}
		if c.Sources.Apple.API.KeyID != "2X9R4HXF34" || c.Destinations[0].Endpoint != "https://backend.example.com/postback" {
			t.Errorf("apple key id %q, endpoint %q", c.Sources.Apple.API.KeyID, c.Destinations[0].Endpoint)
		}
	})
	t.Run("only stripe set", func(t *testing.T) {
		c, err := Parse(Default, env("STRIPE_WEBHOOK_SECRET", "whsec_only"))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Sources.Stripe.Enabled || c.Sources.Google.Enabled || c.Sources.Shopify.Enabled {
			t.Errorf("stripe %v google %v shopify %v; want only stripe of the three", c.Sources.Stripe.Enabled, c.Sources.Google.Enabled, c.Sources.Shopify.Enabled)
		}
		if containsPrefix(c.Disabled, "source stripe") || len(c.Disabled) != 6 {
			t.Errorf("disabled %q", c.Disabled)
		}
	})
	t.Run("defaults applied", func(t *testing.T) {
		c, err := Parse(Default, env())
		if err != nil {
			t.Fatal(err)
		}
		d := c.Destinations[0]
		if c.Server.Listen != ":8080" || c.Server.MaxBodyBytes != 1<<20 || c.Storage.Retention.D() != 720*time.Hour ||
			c.IdentityWait.D() != 10*time.Minute || c.Sources.Stripe.Tolerance.D() != 5*time.Minute ||
			d.Retry.MaxAttempts != 12 || d.Retry.MaxAge.D() != 72*time.Hour || d.RateLimit.PerSecond != 200 ||
			d.RateLimit.Burst != 400 || d.Concurrency != 16 || d.Linger == nil || d.Linger.D() != time.Second {
			t.Errorf("defaults not applied: %+v %+v", c, d)
		}
		if got := strings.Join(d.Match.Environments, ","); got != "production,sandbox" {
			t.Errorf("my-backend environments %q", got)
		}
	})
}

func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func TestLoad(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "postback.yaml")
		if err := os.WriteFile(p, []byte(minimal+"server: {listen: \"127.0.0.1:9999\"}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p, env(), false)
		if err != nil || c.Path != p || c.Server.Listen != "127.0.0.1:9999" {
			t.Fatalf("Load = %+v, %v", c, err)
		}
	})
	t.Run("missing file uses the embedded default", func(t *testing.T) {
		c, err := Load(filepath.Join(t.TempDir(), "none.yaml"), env(), true)
		if err != nil || c.Path != "(embedded)" {
			t.Fatalf("Load = %+v, %v", c, err)
		}
	})
	t.Run("missing file is an error without default", func(t *testing.T) {
		if _, err := Load(filepath.Join(t.TempDir(), "none.yaml"), env(), false); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
	t.Run("unreadable path is an error even with default", func(t *testing.T) {
		if _, err := Load(t.TempDir(), env(), true); err == nil || errors.Is(err, os.ErrNotExist) {
			t.Fatalf("reading a directory: err = %v", err)
		}
	})
}

func TestExpand(t *testing.T) {
	tests := []struct {
		name   string
		yaml   string
		env    []string
		listen string
	}{
		{"plain variable", `server: {listen: "${LISTEN}"}`, []string{"LISTEN", ":7000"}, ":7000"},
		{"default when unset", `server: {listen: "${LISTEN:-:9090}"}`, nil, ":9090"},
		{"default when empty", `server: {listen: "${LISTEN:-:9090}"}`, []string{"LISTEN", ""}, ":9090"},
		{"set beats default", `server: {listen: "${LISTEN:-:9090}"}`, []string{"LISTEN", ":7000"}, ":7000"},
		{"several in one string", `server: {listen: "${HOST}:${PORT}"}`, []string{"HOST", "127.0.0.1", "PORT", "7001"}, "127.0.0.1:7001"},
		{"text around", `server: {listen: "127.0.0.1:${PORT:-80}"}`, nil, "127.0.0.1:80"},
		{"empty default", `server: {listen: "${LISTEN:-}"}`, nil, ":8080"}, // empty, then the default applies
		{"not a reference", `server: {listen: "$LISTEN"}`, []string{"LISTEN", "x"}, "$LISTEN"},
		{"value is not re-expanded", `server: {listen: "${LISTEN}"}`, []string{"LISTEN", "${OTHER}"}, "${OTHER}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(minimal+tt.yaml), env(tt.env...))
			if err != nil {
				t.Fatal(err)
			}
			if c.Server.Listen != tt.listen {
				t.Errorf("listen = %q, want %q", c.Server.Listen, tt.listen)
			}
		})
	}
	t.Run("expanded number", func(t *testing.T) {
		c, err := Parse([]byte(minimal+`server: {max_body_bytes: "${MAX:-2048}"}`), env())
		if err != nil || c.Server.MaxBodyBytes != 2048 {
			t.Fatalf("max_body_bytes = %d, %v", c.Server.MaxBodyBytes, err)
		}
	})
	t.Run("expanded bool", func(t *testing.T) {
		c, err := Parse([]byte(`sources: {apple: {enabled: "${APPLE_ON:-false}"}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: "${STRIPE_ON}", secrets: [whsec_x]}}`), env("STRIPE_ON", "true"))
		if err != nil || c.Sources.Apple.Enabled || !c.Sources.Stripe.Enabled {
			t.Fatalf("apple %v stripe %v, %v; want false, true", c.Sources.Apple.Enabled, c.Sources.Stripe.Enabled, err)
		}
	})
	t.Run("secret that looks like YAML stays text", func(t *testing.T) {
		for _, v := range []string{"null", "~", "123", "true", "0x1F", "a: b", "[x]"} {
			c, err := Parse([]byte(minimal+`admin: {token: "${ADMIN}"}`), env("ADMIN", v))
			if err != nil || c.Admin.Token != v {
				t.Errorf("token from %q = %q, %v", v, c.Admin.Token, err)
			}
		}
	})
	t.Run("list item that expands to nothing is dropped", func(t *testing.T) {
		c, err := Parse([]byte(minimal+`api_keys: ["${KEY_A}", "${KEY_B}"]`), env("KEY_B", "key-b-123456"))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.APIKeys) != 1 || c.APIKeys[0] != "key-b-123456" {
			t.Errorf("api keys %q", c.APIKeys)
		}
		if !containsPrefix(c.Disabled, "API key api_keys[0]: ${KEY_A}") {
			t.Errorf("disabled %q", c.Disabled)
		}
	})
	t.Run("one of two stripe secrets set keeps stripe on", func(t *testing.T) {
		c, err := Parse([]byte(`sources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false},
  stripe: {enabled: true, secrets: ["${OLD_SECRET}", "${NEW_SECRET}"]}}`), env("NEW_SECRET", "whsec_new"))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Sources.Stripe.Enabled || len(c.Sources.Stripe.Secrets) != 1 {
			t.Errorf("stripe %+v", c.Sources.Stripe)
		}
	})
}

func TestErrorsNameKey(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string // substrings of the error
	}{
		{"unset variable in a required key", "storage:\n  path: ${DB_PATH}", nil, []string{"storage.path", "DB_PATH"}},
		{"unset variable in a server key", "server: {listen: \"${LISTEN}\"}", nil, []string{"server.listen", "LISTEN"}},
		{"unknown top-level key", "servr: {listen: x}", nil, []string{"servr", "unknown key"}},
		{"unknown nested key", "server: {listne: x}", nil, []string{"server.listne", "unknown key"}},
		{"unknown source key", "sources: {stripe: {secret: x}}", nil, []string{"sources.stripe.secret", "unknown key"}},
		{"unknown source", "sources: {paypal: {enabled: true}}", nil, []string{"sources.paypal"}},
		{"bad duration", "storage: {retention: 5x}", nil, []string{"storage.retention", `"5x"`}},
		{"bad duration in a destination", "destinations: [{name: a, type: webhook, retry: {max_age: 3q}}]", nil, []string{"destinations[0].retry.max_age", `"3q"`}},
		{"wrong type", "server: {max_body_bytes: lots}", nil, []string{"server.max_body_bytes", "lots"}},
		{"wrong shape", "server: [1]", nil, []string{"server"}},
		{"small body limit", "server: {max_body_bytes: 100}", nil, []string{"server.max_body_bytes"}},
		{"log level", "log: {level: verbose}", nil, []string{"log.level", "verbose"}},
		{"log format", "log: {format: xml}", nil, []string{"log.format", "xml"}},
		{"short retention", "storage: {retention: 30m}", nil, []string{"storage.retention"}},
		{"encryption key not base64", "storage: {driver: postgres, dsn: x, encryption_key: \"not base64!\"}", nil, []string{"storage.encryption_key", "base64"}},
		{"short encryption key", "storage: {driver: postgres, dsn: x, encryption_key: \"${KEK}\"}", []string{"KEK", "c2hvcnQ="}, []string{"storage.encryption_key", "must be 32"}},
		{"unset encryption key", "storage: {driver: postgres, dsn: x, encryption_key: \"${KEK}\"}", nil, []string{"storage.encryption_key", "KEK"}},
		{"encryption key with bolt", "storage: {encryption_key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}", nil, []string{"storage.encryption_key", "postgres"}},
		{"apple environment", "sources: {apple: {enabled: false, environments: [staging]}}", nil, []string{"sources.apple.environments[0]", "staging"}},
		{"apple without apps", "sources: {apple: {enabled: true}}", nil, []string{"sources.apple.apps"}},
		{"apple app without bundle id", "sources: {apple: {enabled: true, apps: [{app_apple_id: 1}]}}", nil, []string{"sources.apple.apps[0].bundle_id"}},
		{"google without packages", "sources: {google: {enabled: true, push_audience: a, push_service_account: b}}", nil, []string{"sources.google.packages"}},
		{"google without audience", "sources: {google: {enabled: true, packages: [p], push_service_account: b}}", nil, []string{"sources.google.push_audience"}},
		{"google without service account", "sources: {google: {enabled: true, packages: [p], push_audience: a}}", nil, []string{"sources.google.push_service_account"}},
		{"stripe without secrets", "sources: {stripe: {enabled: true}}", nil, []string{"sources.stripe.secrets"}},
		{"stripe secret not whsec", "sources: {stripe: {enabled: true, secrets: [sk_live_123]}}", nil, []string{"sources.stripe.secrets[0]", "whsec_"}},
		{"shopify without secret", "sources: {shopify: {enabled: true}}", nil, []string{"sources.shopify.secret"}},
		{"shopify currency", "sources: {shopify: {enabled: false, currency: usd}}", nil, []string{"sources.shopify.currency", "usd"}},
		{"destination without name", "destinations: [{type: webhook}]", nil, []string{"destinations[0].name"}},
		{"duplicate destination", "destinations: [{name: a, type: webhook}, {name: a, type: webhook}]", nil, []string{"destinations[1].name", `"a"`}},
		{"destination name with slash", "destinations: [{name: a/b, type: webhook}]", nil, []string{"destinations[0].name"}},
		{"destination without type", "destinations: [{name: a}]", nil, []string{"destinations[0].type"}},
		{"destination endpoint not http", "destinations: [{name: a, type: webhook, endpoint: ftp://x}]", nil, []string{"destinations[0].endpoint"}},
		{"destination endpoint without host", "destinations: [{name: a, type: webhook, endpoint: \"https://\"}]", nil, []string{"destinations[0].endpoint"}},
		{"destination environment", "destinations: [{name: a, type: webhook, match: {environments: [staging]}}]", nil, []string{"destinations[0].match.environments[0]"}},
		{"negative rate", "destinations: [{name: a, type: webhook, rate_limit: {per_second: -1}}]", nil, []string{"destinations[0].rate_limit.per_second"}},
		{"negative attempts", "destinations: [{name: a, type: webhook, retry: {max_attempts: -1}}]", nil, []string{"destinations[0].retry.max_attempts"}},
		{"concurrency", "destinations: [{name: a, type: webhook, concurrency: 300}]", nil, []string{"destinations[0].concurrency"}},
		{"batch size", "destinations: [{name: a, type: webhook, batch_size: -1}]", nil, []string{"destinations[0].batch_size"}},
		{"timeout not below the lease", "dispatch: {lease: 10s}\ndestinations: [{name: a, type: webhook, timeout: 10s}]", nil, []string{"destinations[0].timeout", "dispatch.lease (10s)"}},
		{"top level not a mapping", "- a\n- b", nil, []string{"top level"}},
		{"not YAML", "server: {listen: [", nil, []string{"yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.yaml
			if !strings.Contains(body, "sources:") && !strings.HasPrefix(body, "-") {
				body = minimal + body
			}
			_, err := Parse([]byte(body), env(tt.env...))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	t.Run("all problems reported at once", func(t *testing.T) {
		_, err := Parse([]byte(minimal+"log: {level: x, format: y}\nstorage: {retention: 1m}"), env())
		for _, k := range []string{"log.level", "log.format", "storage.retention"} {
			if err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("error %v does not name %s", err, k)
			}
		}
	})
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"30d", 30 * 24 * time.Hour, false},
		{"1d", 24 * time.Hour, false},
		{"0d", 0, false},
		{"72h", 72 * time.Hour, false},
		{"90s", 90 * time.Second, false},
		{"1h30m", 90 * time.Minute, false},
		{" 5m ", 5 * time.Minute, false},
		{"", 0, false},
		{"-1d", 0, true},
		{"1.5d", 0, true},
		{"d", 0, true},
		{"-5m", 0, true},
		{"5x", 0, true},
		{"5", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
	t.Run("in config", func(t *testing.T) {
		c, err := Parse([]byte(minimal+"storage: {retention: 30d}\nidentity_wait: 90s\ndestinations: [{name: a, type: webhook, retry: {max_age: 3d}, linger: 0s}]"), env())
		if err != nil {
			t.Fatal(err)
		}
		if c.Storage.Retention.D() != 720*time.Hour || c.IdentityWait.D() != 90*time.Second || c.Destinations[0].Retry.MaxAge.D() != 72*time.Hour {
			t.Errorf("retention %v, identity_wait %v, max_age %v", c.Storage.Retention.D(), c.IdentityWait.D(), c.Destinations[0].Retry.MaxAge.D())
		}
		if l := c.Destinations[0].Linger; l == nil || *l != 0 {
			t.Errorf("explicit linger 0s = %v, want 0 (not the default)", l)
		}
	})
}

// secretConfig uses every kind of secret key: source secrets, the admin
// token, API keys, Apple's private key and type-specific destination keys,
// including a sandbox block.
const secretConfig = `
admin: {token: "${ADMIN}"}
api_keys: ["${APIKEY}"]
sources:
  apple:
    enabled: true
    apps: [{bundle_id: com.example.app, app_apple_id: 1}]
    api: {issuer_id: iss-1, key_id: KEYID12345, private_key: "${APPLE_PEM}"}
  google: {enabled: false, play_api: {credentials_file: "${GOOGLE_CREDS}"}}
  stripe: {enabled: true, secrets: ["${STRIPE_OLD}", "${STRIPE_NEW}"]}
  shopify: {enabled: true, secret: "${SHOPIFY}", secrets: ["${SHOPIFY_ROTATED}"]}
destinations:
  - name: appsflyer-ios
    type: appsflyer
    app_id: id1234567890
    dev_key: "${AF_DEV_KEY}"
    api_token: "${AF_API_TOKEN}"
    sandbox: {dev_key: "${AF_SANDBOX_KEY}"}
  - name: meta
    type: meta
    pixel_id: "1234567890"
    access_token: "${META_TOKEN}"
  - name: hook
    type: webhook
    endpoint: https://example.com/hook
    secret: "${HOOK_SECRET}"
`

var secretEnv = []string{
	"ADMIN", "s3cret-admin-token",
	"APIKEY", "s3cret-api-key",
	"APPLE_PEM", "-----BEGIN PRIVATE KEY-----\ns3cretPEMbody\n-----END PRIVATE KEY-----",
	"GOOGLE_CREDS", "/run/s3cret/creds.json",
	"STRIPE_OLD", "whsec_s3cretOld",
	"STRIPE_NEW", "whsec_s3cretNew",
	"SHOPIFY", "s3cret-shopify",
	"SHOPIFY_ROTATED", "s3cret-shopify-2",
	"AF_DEV_KEY", "s3cret-af-dev-key",
	"AF_API_TOKEN", "s3cret-af-api-token",
	"AF_SANDBOX_KEY", "s3cret-af-sandbox",
	"META_TOKEN", "s3cret-meta-token",
	"HOOK_SECRET", "whsec_s3cretHook",
}

func TestRedacted(t *testing.T) {
	c, err := Parse([]byte(secretConfig), env(secretEnv...))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(secretEnv); i += 2 {
		for _, part := range strings.Split(secretEnv[i], "\n") {
			if strings.Contains(part, "s3cret") && bytes.Contains(out, []byte(part)) {
				t.Errorf("Redacted() contains the value of %s (%q):\n%s", secretEnv[i-1], part, out)
			}
		}
	}
	if bytes.Contains(out, []byte("s3cret")) {
		t.Errorf("Redacted() leaks a secret:\n%s", out)
	}
	if n := bytes.Count(out, []byte("[redacted]")); n < 13 {
		t.Errorf("Redacted() has %d [redacted] values, want at least 13:\n%s", n, out)
	}
	// What is not secret stays readable, defaults included.
	for _, keep := range []string{"appsflyer-ios", "id1234567890", "KEYID12345", "https://example.com/hook", "max_attempts: 12", "pixel_id"} {
		if !bytes.Contains(out, []byte(keep)) {
			t.Errorf("Redacted() lost %q:\n%s", keep, out)
		}
	}
	t.Run("secret copied into a key that is not secret", func(t *testing.T) {
		c, err := Parse([]byte(minimal+"destinations:\n  - {name: \"hook-${HOOK_SECRET}\", type: webhook, endpoint: \"https://example.com/${HOOK_SECRET}\", secret: \"${HOOK_SECRET}\"}\n"), env(secretEnv...))
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Redacted()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out, []byte("s3cret")) {
			t.Errorf("Redacted() leaks a secret through a name or URL:\n%s", out)
		}
		if !bytes.Contains(out, []byte("hook-[redacted]")) || !bytes.Contains(out, []byte("https://example.com/[redacted]")) {
			t.Errorf("the rest of the name and URL is lost:\n%s", out)
		}
	})
	t.Run("shipped config", func(t *testing.T) {
		c, err := Parse(Default, env(allSecrets...))
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Redacted()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"admin-token-4f9c1e", "api-key-7d2b90", "MIGTAgEAMBMGByqGSM49", "whsec_stripe0secret0value", "shpss_shopify0secret0value", "whsec_d2ViaG9vay1zZWNyZXQtdmFsdWU="} {
			if bytes.Contains(out, []byte(s)) {
				t.Errorf("Redacted() contains %q", s)
			}
		}
		if !bytes.Contains(out, []byte("[redacted]")) {
			t.Error("no [redacted] in the output")
		}
	})
}

func TestSecrets(t *testing.T) {
	c, err := Parse([]byte(secretConfig), env(secretEnv...))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range c.Secrets() {
		got[s] = true
	}
	for i := 1; i < len(secretEnv); i += 2 {
		if !got[secretEnv[i]] {
			t.Errorf("Secrets() lacks the value of %s", secretEnv[i-1])
		}
	}
	for s := range got {
		if !strings.Contains(s, "s3cret") {
			t.Errorf("Secrets() returned a value that is not a secret: %q", s)
		}
	}
}

func TestDestinationDecode(t *testing.T) {
	c, err := Parse([]byte(secretConfig), env(secretEnv...))
	if err != nil {
		t.Fatal(err)
	}
	var af struct {
		AppID   string `yaml:"app_id"`
		DevKey  string `yaml:"dev_key"`
		Sandbox struct {
			DevKey string `yaml:"dev_key"`
		} `yaml:"sandbox"`
	}
	if err := c.Destinations[0].Decode(&af); err != nil {
		t.Fatal(err)
	}
	if af.AppID != "id1234567890" || af.DevKey != "s3cret-af-dev-key" || af.Sandbox.DevKey != "s3cret-af-sandbox" {
		t.Errorf("decoded %+v", af)
	}
	if !c.Destinations[0].HasSandbox() || c.Destinations[1].HasSandbox() {
		t.Error("HasSandbox wrong")
	}
	if got := strings.Join(c.Destinations[0].Match.Environments, ","); got != "production,sandbox" {
		t.Errorf("a destination with sandbox credentials matches %q, want production,sandbox", got)
	}
	if got := strings.Join(c.Destinations[1].Match.Environments, ","); got != "production" {
		t.Errorf("a destination without sandbox credentials matches %q, want production", got)
	}
	t.Run("unset variable disables only that destination", func(t *testing.T) {
		c, err := Parse([]byte(secretConfig), env())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range c.Destinations[:2] {
			if d.Disabled == "" {
				t.Errorf("%s enabled with its key unset", d.Name)
			}
		}
		if !strings.Contains(c.Destinations[2].Disabled, "HOOK_SECRET") {
			t.Errorf("hook disabled = %q", c.Destinations[2].Disabled)
		}
	})
}

// TestShopifyStoreKeys: sources.shopify.shop_secrets holds the keys that sign
// webhooks created in a store's admin, one per shop.
func TestShopifyStoreKeys(t *testing.T) {
	const base = `
sources:
  apple: {enabled: false}
  google: {enabled: false}
  stripe: {enabled: false}
  shopify:
    enabled: true
    secret: ${SHOPIFY_APP}
`
	t.Run("parsed, redacted and masked", func(t *testing.T) {
		c, err := Parse([]byte(base+"    shop_secrets:\n      example.myshopify.com: ${STORE_A}\n"), env("SHOPIFY_APP", "shpss_app_secret_value", "STORE_A", "store-a-webhook-key-123456"))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Sources.Shopify.ShopSecrets["example.myshopify.com"]; got != "store-a-webhook-key-123456" {
			t.Fatalf("shop secret = %q", got)
		}
		out, err := c.Redacted()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out, []byte("store-a-webhook-key")) || !bytes.Contains(out, []byte("example.myshopify.com: '[redacted]'")) {
			t.Errorf("store key not redacted under its shop:\n%s", out)
		}
		if !slices.Contains(c.Secrets(), "store-a-webhook-key-123456") {
			t.Error("the store key is not among Secrets(), so logs would not mask it")
		}
	})
	t.Run("an unset key disables that store only", func(t *testing.T) {
		c, err := Parse([]byte(base+"    shop_secrets:\n      example.myshopify.com: ${STORE_A}\n      other.myshopify.com: ${STORE_B}\n"), env("SHOPIFY_APP", "shpss_app_secret_value", "STORE_A", "store-a-webhook-key-123456"))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Sources.Shopify.Enabled || len(c.Sources.Shopify.ShopSecrets) != 1 {
			t.Fatalf("enabled %v, shop secrets %v", c.Sources.Shopify.Enabled, c.Sources.Shopify.ShopSecrets)
		}
		if !containsPrefix(c.Disabled, "Shopify admin webhooks of other.myshopify.com: ${STORE_B} is not set") {
			t.Errorf("disabled: %q", c.Disabled)
		}
	})
	t.Run("store keys alone enable the source", func(t *testing.T) {
		c, err := Parse([]byte(strings.Replace(base, "secret: ${SHOPIFY_APP}", `secret: ""`, 1)+"    shop_secrets: {example.myshopify.com: store-a-webhook-key-123456}\n"), env())
		if err != nil {
			t.Fatal(err)
		}
		if !c.Sources.Shopify.Enabled {
			t.Fatal("disabled")
		}
	})
	for name, tc := range map[string]struct{ yaml, want string }{
		"upper-case shop": {"    shop_secrets: {Example.myshopify.com: k-123456789}\n", "sources.shopify.shop_secrets.Example.myshopify.com (line 9): name the shop by its lower-case domain"},
		"empty key":       {"    shop_secrets: {example.myshopify.com: \"\"}\n", "sources.shopify.shop_secrets.example.myshopify.com (line 9): empty"},
		"shop not listed": {"    shops: [a.myshopify.com]\n    shop_secrets: {b.myshopify.com: k-123456789}\n", "sources.shopify.shop_secrets.b.myshopify.com (line 10): b.myshopify.com is not in sources.shopify.shops"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(base+tc.yaml), env("SHOPIFY_APP", "shpss_app_secret_value"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestDestinationTestAndRoutingKeys: the per-destination keys of issue 14
// are kept readable in check-config output (they are ids, URLs and
// durations), except api_secrets, a mapping of GA4 secrets per platform.
func TestDestinationTestAndRoutingKeys(t *testing.T) {
	y := minimal + `destinations:
  - name: meta
    type: meta
    dataset_id: "1234567890123456"
    access_token: meta-s3cret-token
    test_event_code: TEST4821
    event_source_url: https://example.com/checkout
  - name: branch
    type: branch
    branch_key: key_live_s3cret
    max_event_age: 24h
    sandbox:
      branch_key: key_test_s3cret
  - name: firebase
    type: ga4
    firebase_app_ids: {ios: "1:42:ios:aaaa", android: "1:42:android:bbbb"}
    api_secret: ga4-s3cret-shared
    api_secrets: {android: ga4-s3cret-android}
  - name: tiktok
    type: tiktok
    access_token: tt-s3cret-token
    app_id: "7123456789012345678"
    app_store_ids: {ios: "1234567890", android: com.example.app}
    app_name: Example
`
	c, err := Parse([]byte(y), env())
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("s3cret")) {
		t.Errorf("Redacted() leaks a secret:\n%s", out)
	}
	for _, keep := range []string{"TEST4821", "https://example.com/checkout", "max_event_age: 24h", "1:42:ios:aaaa", "1:42:android:bbbb", "\"1234567890\"", "com.example.app", "app_name: Example"} {
		if !bytes.Contains(out, []byte(keep)) {
			t.Errorf("Redacted() lost %q:\n%s", keep, out)
		}
	}
	secrets := strings.Join(c.Secrets(), " ")
	for _, s := range []string{"ga4-s3cret-android", "ga4-s3cret-shared", "key_test_s3cret"} {
		if !strings.Contains(secrets, s) {
			t.Errorf("Secrets() misses %s", s)
		}
	}
}

// check-config reports every problem at once, each with its YAML line, and
// --strict's placeholder list names the example values.
func TestEveryProblemWithItsLine(t *testing.T) {
	yml := "server:\n  listn: x\n  max_body_bytes: 10\nlog:\n  level: loud\nstorage: {retention: 1m}\nsourcez: {}\ndestinations:\n  - name: a\n    type: webhook\n    concurrency: 999\n"
	_, err := Parse([]byte(yml), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"server.listn (line 2): unknown key",
		"sourcez (line 7): unknown key",
		"server.max_body_bytes (line 3): must be at least 1024",
		"log.level (line 5): \"loud\"",
		"storage.retention (line 6): must be at least 1h",
		"destinations[0].concurrency (line 11): must be between 1 and 256",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	c, err := Parse([]byte("destinations:\n  - name: a\n    type: webhook\n    endpoint: https://hooks.example.com/x\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if got := c.AnnotateLines("destinations[a].endpoint: bad"); got != "destinations[a].endpoint (line 4): bad" {
		t.Errorf("AnnotateLines = %q", got)
	}
	if got := c.AnnotateLines("destinations[a].secret: missing"); got != "destinations[a].secret (line 2): missing" {
		t.Errorf("absent key: %q (want the destination's line)", got)
	}
	ph := c.Placeholders()
	if len(ph) != 1 || !strings.HasPrefix(ph[0], "destinations[0].endpoint (line 4)") {
		t.Errorf("placeholders = %q", ph)
	}
}

// Issue 16, item 11: server.tls keys are checked, with their lines.
func TestTLSConfig(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	c, err := Parse([]byte("server:\n  tls:\n    acme: {domains: [pb.example.org]}\n"), none)
	if err != nil || !c.Server.TLS.Enabled() || c.Server.TLS.ACME.CacheDir != "./data/acme" {
		t.Fatalf("acme: %v %+v", err, c)
	}
	for yml, want := range map[string]string{
		"server:\n  tls: {cert_file: a.pem}\n":                                   "server.tls (line 2): set both cert_file and key_file",
		"server:\n  tls: {cert_file: a, key_file: b, acme: {domains: [x.y]}}\n":  "use certificate files or ACME, not both",
		"server:\n  tls:\n    acme: {domains: [localhost]}\n":                    "server.tls.acme.domains[0] (line 3): \"localhost\" is not a fully qualified host name",
		"server:\n  tls:\n    acme: {domains: [a.b], directory_url: http://x}\n": "must be an https:// URL",
		"server:\n  tls: {certfile: a}\n":                                        "server.tls.certfile (line 2): unknown key",
	} {
		if _, err := Parse([]byte(yml), none); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yml, err, want)
		}
	}
}
