// Package config loads, expands, validates and redacts config.yaml.
//
// Every string may reference the environment as ${VAR} (or ${VAR:-default}).
// A variable that is unset disables the feature it belongs to (a source, a
// destination, the admin API, one API key) instead of crashing, so the
// shipped config.yaml runs with no secrets set; an unset variable anywhere
// else is an error naming the key and the variable.
package config

import (
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Default is the config.yaml shipped at the repository root and embedded in
// the binary, used when no file exists at the configured path.
//
//go:embed default.yaml
var Default []byte

// ErrInvalid wraps every validation failure; the message names the key.
var ErrInvalid = errors.New("config: invalid")

// Duration is a time.Duration that reads "90s", "5m", "72h" or "30d".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ParseDuration accepts Go durations plus a whole-day suffix "d".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 90s, 5m, 72h or 30d)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 90s, 5m, 72h or 30d)", s)
	}
	return d, nil
}

// Config is the whole gateway configuration.
type Config struct {
	Server       Server        `yaml:"server"`
	Storage      Storage       `yaml:"storage"`
	Admin        Admin         `yaml:"admin"`
	Log          Log           `yaml:"log"`
	APIKeys      []string      `yaml:"api_keys"`
	IdentityWait Duration      `yaml:"identity_wait"`
	Dispatch     Dispatch      `yaml:"dispatch"`
	Sources      Sources       `yaml:"sources"`
	Destinations []Destination `yaml:"destinations"`

	// Disabled lists features switched off because a variable they reference
	// is unset, one human-readable line each, for the start-up log.
	Disabled []string `yaml:"-"`
	// Path is the file the configuration was read from ("(embedded)" when
	// the built-in default was used).
	Path string `yaml:"-"`
	node yaml.Node
}

// Server holds the HTTP listener settings.
type Server struct {
	Listen          string   `yaml:"listen"`
	MaxBodyBytes    int64    `yaml:"max_body_bytes"`
	ReadTimeout     Duration `yaml:"read_timeout"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// TrustedProxies are the addresses (CIDRs or single IPs) of reverse
	// proxies whose X-Forwarded-For / X-Real-IP headers name the client.
	// Empty: the client is the TCP peer and those headers are ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// TLS serves HTTPS on server.listen (stores only call HTTPS URLs).
	TLS TLS `yaml:"tls"`
}

// TLS is server.tls: certificate files (reloaded when they change) or
// automatic certificates over ACME.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	ACME     ACME   `yaml:"acme"`
}

// ACME is server.tls.acme: certificates from Let's Encrypt (or another
// ACME CA) for Domains, validated with TLS-ALPN-01 on server.listen.
type ACME struct {
	Domains      []string `yaml:"domains"`
	Email        string   `yaml:"email"`
	CacheDir     string   `yaml:"cache_dir"`
	DirectoryURL string   `yaml:"directory_url"`
}

// Enabled reports whether HTTPS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || len(t.ACME.Domains) > 0 }

// TrustedPrefixes parses server.trusted_proxies.
func (s Server) TrustedPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, v := range s.TrustedProxies {
		v = strings.TrimSpace(v)
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("server.trusted_proxies[%d]: %q is neither a CIDR (10.0.0.0/8) nor an IP address", i, v)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Storage selects and configures the store backend: BoltDB (the embedded
// default, one process) or PostgreSQL (several replicas on one database).
type Storage struct {
	Driver    string   `yaml:"driver"` // bolt | postgres
	Path      string   `yaml:"path"`   // bolt
	DSN       string   `yaml:"dsn"`    // postgres: URL or key=value form
	PoolSize  int      `yaml:"pool_size"`
	Retention Duration `yaml:"retention"`
	// EncryptionKey (postgres) is the base64 of the 32-byte key that wraps
	// the data keys sealing personal fields, normally
	// ${POSTBACK_ENCRYPTION_KEY}; unset, a random key kept in the database
	// does (see README "Storage").
	EncryptionKey string `yaml:"encryption_key"`
}

// EncryptionKeyBytes decodes storage.encryption_key (nil when unset).
func (s *Storage) EncryptionKeyBytes() ([]byte, error) {
	if s.EncryptionKey == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s.EncryptionKey))
	if err != nil {
		if b, err = base64.RawURLEncoding.DecodeString(strings.TrimSpace(s.EncryptionKey)); err != nil {
			return nil, fmt.Errorf("not base64: make one with: openssl rand -base64 32")
		}
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("is %d bytes, must be 32 (openssl rand -base64 32)", len(b))
	}
	return b, nil
}

// Storage drivers.
const (
	DriverBolt     = "bolt"
	DriverPostgres = "postgres"
)

// Admin holds the admin API and console settings.
type Admin struct {
	Token  string `yaml:"token"`
	Listen string `yaml:"listen"` // optional separate address for /admin
	// PublicMetrics keeps /metrics on the public listener as well when
	// admin.listen is set (by default it moves to the admin listener, out
	// of the internet's reach).
	PublicMetrics bool `yaml:"public_metrics"`
}

// Log holds logging settings.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error
	Format string `yaml:"format"` // text|json
}

// Dispatch holds delivery engine settings shared by every destination.
type Dispatch struct {
	PollInterval Duration `yaml:"poll_interval"`
	Linger       Duration `yaml:"linger"`
	Lease        Duration `yaml:"lease"`
}

// Sources holds each source's settings.
type Sources struct {
	Apple   Apple   `yaml:"apple"`
	Google  Google  `yaml:"google"`
	Stripe  Stripe  `yaml:"stripe"`
	Shopify Shopify `yaml:"shopify"`
}

// AppleApp is one configured App Store app.
type AppleApp struct {
	BundleID   string `yaml:"bundle_id"`
	AppAppleID int64  `yaml:"app_apple_id"`
}

// AppleAPI holds App Store Server API credentials (backfill and history).
type AppleAPI struct {
	IssuerID   string `yaml:"issuer_id"`
	KeyID      string `yaml:"key_id"`
	PrivateKey string `yaml:"private_key"` // path to the .p8 file, or the PEM itself
	Endpoint   string `yaml:"endpoint"`    // override for tests
}

// Apple is the App Store Server Notifications V2 source.
type Apple struct {
	Enabled          bool       `yaml:"enabled"`
	Apps             []AppleApp `yaml:"apps"`
	Environments     []string   `yaml:"environments"`
	RootCertificates []string   `yaml:"root_certificates"`
	OnlineChecks     bool       `yaml:"online_checks"`
	API              AppleAPI   `yaml:"api"`
}

// PlayAPI holds the Android Publisher API client settings.
type PlayAPI struct {
	CredentialsFile string `yaml:"credentials_file"`
	Endpoint        string `yaml:"endpoint"`
}

// Google is the Google Play RTDN (Pub/Sub push) source.
type Google struct {
	Enabled            bool     `yaml:"enabled"`
	Packages           []string `yaml:"packages"`
	PushAudience       string   `yaml:"push_audience"`
	PushServiceAccount string   `yaml:"push_service_account"`
	OIDCCertsURL       string   `yaml:"oidc_certs_url"`
	PlayAPI            PlayAPI  `yaml:"play_api"`
}

// Stripe is the Stripe webhook source.
type Stripe struct {
	Enabled   bool     `yaml:"enabled"`
	Secrets   []string `yaml:"secrets"`
	Tolerance Duration `yaml:"tolerance"`
	AppID     string   `yaml:"app_id"` // app_id of Stripe events unless metadata says otherwise
}

// Shopify is the Shopify webhook source.
type Shopify struct {
	Enabled  bool     `yaml:"enabled"`
	Secret   string   `yaml:"secret"`
	Secrets  []string `yaml:"secrets"`  // extra secrets during rotation
	Shops    []string `yaml:"shops"`    // accepted X-Shopify-Shop-Domain values; empty accepts any
	Currency string   `yaml:"currency"` // presentment|shop
	AppID    string   `yaml:"app_id"`
	// ShopSecrets maps a shop domain to the store's own webhook key, which
	// signs webhooks created in that store's admin (Settings > Notifications)
	// instead of the app's client secret. A key authenticates webhooks from
	// its own shop only.
	ShopSecrets map[string]string `yaml:"shop_secrets"`
}

// Match selects which events a destination receives.
type Match struct {
	Apps         []string `yaml:"apps"`
	Environments []string `yaml:"environments"`
	Events       []string `yaml:"events"`
	Sources      []string `yaml:"sources"`
}

// RateLimit caps requests (not events) per second to a destination.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Retry bounds retries of one delivery.
type Retry struct {
	MaxAttempts int      `yaml:"max_attempts"`
	MaxAge      Duration `yaml:"max_age"`
}

// Destination is one forwarding target. Keys other than the shared ones are
// type-specific and decoded by the forwarder from Node.
type Destination struct {
	Name        string            `yaml:"name"`
	Type        string            `yaml:"type"`
	Endpoint    string            `yaml:"endpoint"`
	Match       Match             `yaml:"match"`
	EventNames  map[string]string `yaml:"event_names"`
	RateLimit   RateLimit         `yaml:"rate_limit"`
	Retry       Retry             `yaml:"retry"`
	Concurrency int               `yaml:"concurrency"`
	BatchSize   int               `yaml:"batch_size"`
	Linger      *Duration         `yaml:"linger"`
	Timeout     Duration          `yaml:"timeout"`
	// Node is the destination's whole YAML block, expanded.
	Node yaml.Node `yaml:"-"`
	// Disabled says why the destination is off ("" when enabled).
	Disabled string `yaml:"-"`
}

// HasSandbox reports whether the destination declares sandbox credentials.
func (d *Destination) HasSandbox() bool {
	for i := 0; i+1 < len(d.Node.Content); i += 2 {
		if d.Node.Content[i].Value == "sandbox" {
			return true
		}
	}
	return false
}

// Decode decodes the destination's block into a type-specific struct.
func (d *Destination) Decode(v any) error { return d.Node.Decode(v) }

// Load reads path (or the embedded default when path does not exist and
// allowDefault is set), expands ${VAR} with getenv, applies defaults and
// validates. Every error names the key.
func Load(path string, getenv func(string) (string, bool), allowDefault bool) (*Config, error) {
	return load(path, getenv, allowDefault, false)
}

// LoadForCheck is Load for check-config: when the file parses but values
// are invalid, the configuration comes back with the error listing them,
// so that the destinations' own checks can be reported too. Never run with
// it.
func LoadForCheck(path string, getenv func(string) (string, bool), allowDefault bool) (*Config, error) {
	return load(path, getenv, allowDefault, true)
}

func load(path string, getenv func(string) (string, bool), allowDefault, partial bool) (*Config, error) {
	data, err := os.ReadFile(path)
	src := path
	if err != nil {
		if !allowDefault || !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config: %w", err)
		}
		data, src = Default, "(embedded)"
	}
	c, err := parse(data, getenv)
	if c != nil {
		c.Path = src
	}
	if err != nil && !partial {
		return nil, err
	}
	return c, err
}

// Parse is Load on bytes.
func Parse(data []byte, getenv func(string) (string, bool)) (*Config, error) {
	c, err := parse(data, getenv)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// parse is Parse that also returns the configuration when only values are
// invalid (LoadForCheck).
func parse(data []byte, getenv func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(root.Content) == 0 {
		root = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	if root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: the top level must be a mapping of keys", ErrInvalid)
	}
	unset := map[string]string{} // key path -> variable
	if err := expand(root.Content[0], "", getenv, unset); err != nil {
		return nil, err
	}
	// Errors quote values; none of them may print a secret.
	secrets := secretsOf(&root)
	c := &Config{}
	if err := root.Content[0].Decode(c); err != nil {
		// yaml reports type errors by line; name the key as well.
		lines := map[int][]keyPos{}
		keyLines(root.Content[0], "", lines)
		return nil, MaskError(fmt.Errorf("%w: %s", ErrInvalid, nameKeys(err.Error(), lines)), secrets)
	}
	// Every problem is reported at once, each with its key and YAML line.
	problems := rejectUnknown(root.Content[0])
	c.node = root
	// Destination blocks are kept whole for their forwarder.
	if dn := child(root.Content[0], "destinations"); dn != nil {
		for i, n := range dn.Content {
			if i < len(c.Destinations) {
				c.Destinations[i].Node = *n
			}
		}
	}
	c.applyDefaults()
	problems = append(problems, splitProblems(c.resolveUnset(unset))...)
	problems = append(problems, splitProblems(c.Validate())...)
	if len(problems) > 0 {
		for i, p := range problems {
			problems[i] = c.withLine(p)
		}
		// The configuration comes back with the error for LoadForCheck
		// (Parse and Load drop it).
		return c, MaskError(fmt.Errorf("%w:\n  %s", ErrInvalid, strings.Join(problems, "\n  ")), secrets)
	}
	return c, nil
}

// Problems returns the problems an ErrInvalid error lists, one a line.
func Problems(err error) []string { return splitProblems(err) }

// splitProblems turns a "config: invalid:\n  a\n  b" error back into its
// lines.
func splitProblems(err error) []string {
	if err == nil {
		return nil
	}
	msg := strings.TrimPrefix(err.Error(), ErrInvalid.Error()+":")
	var out []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// withLine adds "(line N)" after the key a problem starts with ("key:
// problem"), unless it names a line already.
func (c *Config) withLine(p string) string {
	if strings.Contains(p, "(line ") {
		return p
	}
	m := keyRE.FindStringSubmatchIndex(p)
	if m == nil {
		return p
	}
	key := p[m[2]:m[3]]
	if n := c.Line(key); n > 0 {
		return fmt.Sprintf("%s (line %d)%s", p[:m[3]], n, p[m[3]:])
	}
	return p
}

// keyRE finds the key path a problem names: "server.listen: ...",
// "forwarders: invalid configuration: destinations[a].type: ...".
var keyRE = regexp.MustCompile(`(?:^|\s)((?:server|storage|admin|log|api_keys|identity_wait|dispatch|sources|destinations)(?:\[[^\]]*\]|\.[A-Za-z0-9_.\-]+)*): `)

// AnnotateLines adds the YAML line to each "key: problem" line of msg
// (errors of forwarder constructors, which name destinations by name:
// destinations[NAME].key).
func (c *Config) AnnotateLines(msg string) string {
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		lines[i] = l[:len(l)-len(trimmed)] + c.withLine(trimmed)
	}
	return strings.Join(lines, "\n")
}

// Line returns the YAML line of a key path ("server.listen",
// "destinations[0].type" or "destinations[NAME].type"); for a key that is
// absent, the line of its nearest present parent; 0 when unknown (the
// embedded default, or an empty file).
func (c *Config) Line(path string) int {
	if len(c.node.Content) == 0 {
		return 0
	}
	// destinations[NAME] -> destinations[i]
	if rest, ok := strings.CutPrefix(path, "destinations["); ok {
		if name, tail, ok := strings.Cut(rest, "]"); ok {
			if _, err := strconv.Atoi(name); err != nil {
				for i, d := range c.Destinations {
					if d.Name == name {
						path = fmt.Sprintf("destinations[%d]%s", i, tail)
						break
					}
				}
			}
		}
	}
	lines := map[string]int{}
	byLine := map[int][]keyPos{}
	keyLines(c.node.Content[0], "", byLine)
	for ln, ks := range byLine {
		for _, k := range ks {
			if _, ok := lines[k.path]; !ok || ln < lines[k.path] {
				lines[k.path] = ln
			}
		}
	}
	for path != "" {
		if n, ok := lines[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// placeholderRE matches values left from the shipped example configuration.
var placeholderRE = regexp.MustCompile(`(?i)(^|[./@:])example\.(com|org|net|app)\b|^com\.example\.|^1234567890$|change[_-]?me|replace[_-]?me|^todo$|^xxx+$`)

// Placeholders lists the values that look like the example configuration's
// placeholders (com.example.app, postback.example.com, 1234567890), each as
// "key (line N): value": check-config --strict refuses them.
func (c *Config) Placeholders() []string {
	if len(c.node.Content) == 0 {
		return nil
	}
	byLine := map[int][]keyPos{}
	keyLines(c.node.Content[0], "", byLine)
	lns := make([]int, 0, len(byLine))
	for ln := range byLine {
		lns = append(lns, ln)
	}
	sort.Ints(lns)
	var out []string
	for _, ln := range lns {
		for _, k := range byLine[ln] {
			if k.value != "" && placeholderRE.MatchString(k.value) {
				out = append(out, fmt.Sprintf("%s (line %d): %q looks like a placeholder from the example configuration", k.path, ln, k.value))
			}
		}
	}
	return out
}

var varRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expand replaces ${VAR} in every scalar, recording unset variables by path.
// A list item that expands to nothing is dropped (api_keys, secrets).
func expand(n *yaml.Node, path string, getenv func(string) (string, bool), unset map[string]string) error {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			if err := expand(n.Content[i+1], p, getenv, unset); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		kept := n.Content[:0]
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if err := expand(c, p, getenv, unset); err != nil {
				return err
			}
			if c.Kind == yaml.ScalarNode && c.Value == "" && unset[p] != "" {
				continue
			}
			kept = append(kept, c)
		}
		n.Content = kept
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return nil
		}
		n.Value = varRE.ReplaceAllStringFunc(n.Value, func(m string) string {
			sm := varRE.FindStringSubmatch(m)
			if v, ok := getenv(sm[1]); ok && v != "" {
				return v
			}
			if sm[2] != "" {
				return sm[3]
			}
			unset[path] = sm[1]
			return ""
		})
		// The tag is resolved from the expanded text, so ${PORT:-8080}
		// can fill a number and ${ENABLED:-true} a bool; string fields
		// take any scalar as text. Only a value that YAML would read as
		// null is pinned to a string, so a secret "null" is kept.
		n.Tag, n.Style = "", 0
		switch n.Value {
		case "null", "Null", "NULL", "~":
			n.Tag = "!!str"
		}
	}
	return nil
}

// keyPos is a key path and its scalar value, indexed by the line the value
// starts on.
type keyPos struct{ path, value string }

// keyLines records, for each line, the key paths whose values start there,
// outermost first.
func keyLines(n *yaml.Node, path string, out map[int][]keyPos) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			v := n.Content[i+1]
			out[v.Line] = append(out[v.Line], keyPos{p, v.Value})
			keyLines(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out[c.Line] = append(out[c.Line], keyPos{p, c.Value})
			keyLines(c, p, out)
		}
	}
}

var lineRE = regexp.MustCompile(`line (\d+): ([^\n]*)`)

// nameKeys rewrites each "line N: problem" of a yaml error as "key (line N):
// problem". Of the keys on that line it names the one whose value the
// problem quotes (flow style puts several keys on a line), else the
// outermost.
func nameKeys(msg string, lines map[int][]keyPos) string {
	return lineRE.ReplaceAllStringFunc(msg, func(m string) string {
		sm := lineRE.FindStringSubmatch(m)
		ln, _ := strconv.Atoi(sm[1])
		cands := lines[ln]
		if len(cands) == 0 {
			return m
		}
		key := cands[0].path
		for _, k := range cands {
			if k.value != "" && (strings.Contains(sm[2], "`"+k.value+"`") || strings.Contains(sm[2], strconv.Quote(k.value))) {
				key = k.path
				break
			}
		}
		return fmt.Sprintf("%s (line %s): %s", key, sm[1], sm[2])
	})
}

func child(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// rejectUnknown reports top-level and source keys that do not exist, so a
// typo is an error instead of a silently ignored setting.
func rejectUnknown(root *yaml.Node) []string {
	known := map[string][]string{
		"":                {"server", "storage", "admin", "log", "api_keys", "identity_wait", "dispatch", "sources", "destinations"},
		"server":          {"listen", "max_body_bytes", "read_timeout", "shutdown_timeout", "trusted_proxies", "tls"},
		"server.tls":      {"cert_file", "key_file", "acme"},
		"server.tls.acme": {"domains", "email", "cache_dir", "directory_url"},
		"storage":         {"driver", "path", "dsn", "pool_size", "retention", "encryption_key"},
		"admin":           {"token", "listen", "public_metrics"},
		"log":             {"level", "format"},
		"dispatch":        {"poll_interval", "linger", "lease"},
		"sources":         {"apple", "google", "stripe", "shopify"},
		"sources.apple":   {"enabled", "apps", "environments", "root_certificates", "online_checks", "api"},
		"sources.google":  {"enabled", "packages", "push_audience", "push_service_account", "oidc_certs_url", "play_api"},
		"sources.stripe":  {"enabled", "secrets", "tolerance", "app_id"},
		"sources.shopify": {"enabled", "secret", "secrets", "shops", "currency", "app_id", "shop_secrets"},
	}
	var out []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		keys, ok := known[path]
		if !ok || n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			found := false
			for _, kk := range keys {
				found = found || kk == k
			}
			p := k
			if path != "" {
				p = path + "." + k
			}
			if !found {
				out = append(out, fmt.Sprintf("%s (line %d): unknown key; known keys here: %s", p, n.Content[i].Line, strings.Join(keys, ", ")))
				continue
			}
			walk(n.Content[i+1], p)
		}
	}
	walk(root, "")
	return out
}

func (c *Config) applyDefaults() {
	if c.Server.Listen == "" {
		c.Server.Listen = ":8080"
	}
	if c.Server.MaxBodyBytes == 0 {
		c.Server.MaxBodyBytes = 1 << 20
	}
	if len(c.Server.TLS.ACME.Domains) > 0 && c.Server.TLS.ACME.CacheDir == "" {
		// Next to the default BoltDB file: certificates survive restarts
		// (Let's Encrypt limits how many it issues per week).
		c.Server.TLS.ACME.CacheDir = "./data/acme"
	}
	if c.Server.ReadTimeout == 0 {
		c.Server.ReadTimeout = Duration(10 * time.Second)
	}
	if c.Server.ShutdownTimeout == 0 {
		c.Server.ShutdownTimeout = Duration(20 * time.Second)
	}
	if c.Storage.Driver == "" {
		c.Storage.Driver = DriverBolt
	}
	if c.Storage.Path == "" {
		c.Storage.Path = "./data/postback.db"
	}
	if c.Storage.PoolSize == 0 {
		c.Storage.PoolSize = 10
	}
	if c.Storage.Retention == 0 {
		c.Storage.Retention = Duration(720 * time.Hour)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.IdentityWait == 0 {
		c.IdentityWait = Duration(10 * time.Minute)
	}
	if c.Dispatch.PollInterval == 0 {
		c.Dispatch.PollInterval = Duration(250 * time.Millisecond)
	}
	if c.Dispatch.Linger == 0 {
		c.Dispatch.Linger = Duration(time.Second)
	}
	if c.Dispatch.Lease == 0 {
		c.Dispatch.Lease = Duration(2 * time.Minute)
	}
	if len(c.Sources.Apple.Environments) == 0 {
		c.Sources.Apple.Environments = []string{"production", "sandbox"}
	}
	if c.Sources.Stripe.Tolerance == 0 {
		c.Sources.Stripe.Tolerance = Duration(5 * time.Minute)
	}
	if c.Sources.Stripe.AppID == "" {
		c.Sources.Stripe.AppID = "stripe"
	}
	if c.Sources.Shopify.Currency == "" {
		c.Sources.Shopify.Currency = "shop"
	}
	if c.Sources.Shopify.AppID == "" {
		c.Sources.Shopify.AppID = "shopify"
	}
	for i := range c.Destinations {
		d := &c.Destinations[i]
		if len(d.Match.Environments) == 0 {
			d.Match.Environments = []string{"production"}
			if d.HasSandbox() {
				d.Match.Environments = append(d.Match.Environments, "sandbox")
			}
		}
		if d.RateLimit.PerSecond == 0 {
			d.RateLimit.PerSecond = 200
		}
		if d.RateLimit.Burst == 0 {
			d.RateLimit.Burst = int(d.RateLimit.PerSecond * 2)
			if d.RateLimit.Burst < 1 {
				d.RateLimit.Burst = 1
			}
		}
		if d.Retry.MaxAttempts == 0 {
			d.Retry.MaxAttempts = 12
		}
		if d.Retry.MaxAge == 0 {
			d.Retry.MaxAge = Duration(72 * time.Hour)
		}
		if d.Concurrency == 0 {
			d.Concurrency = 16
		}
		if d.Timeout == 0 {
			d.Timeout = Duration(15 * time.Second)
		}
		if d.Linger == nil {
			l := c.Dispatch.Linger
			d.Linger = &l
		}
	}
}

// resolveUnset turns unset variables into disabled features or errors.
func (c *Config) resolveUnset(unset map[string]string) error {
	var errs []string
	paths := make([]string, 0, len(unset))
	for p := range unset {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	appleAPI := false
	for _, path := range paths {
		v := unset[path]
		switch {
		case path == "admin.token":
			c.Disabled = append(c.Disabled, fmt.Sprintf("admin API and console: ${%s} is not set", v))
		case strings.HasPrefix(path, "api_keys"):
			c.Disabled = append(c.Disabled, fmt.Sprintf("API key %s: ${%s} is not set", path, v))
		case strings.HasPrefix(path, "sources."):
			name := strings.SplitN(strings.TrimPrefix(path, "sources."), ".", 2)[0]
			if name == "apple" && strings.HasPrefix(path, "sources.apple.api.") {
				if !appleAPI {
					c.Disabled = append(c.Disabled, fmt.Sprintf("App Store Server API (backfill, history look-ups): ${%s} is not set", v))
				}
				appleAPI = true
				c.Sources.Apple.API = AppleAPI{Endpoint: c.Sources.Apple.API.Endpoint}
				continue
			}
			if shop, ok := strings.CutPrefix(path, "sources.shopify.shop_secrets."); ok {
				// One store's key missing disables that store's admin
				// webhooks only.
				delete(c.Sources.Shopify.ShopSecrets, shop)
				c.Disabled = append(c.Disabled, fmt.Sprintf("Shopify admin webhooks of %s: ${%s} is not set", shop, v))
				continue
			}
			if c.disableSource(name) {
				c.Disabled = append(c.Disabled, fmt.Sprintf("source %s: ${%s} is not set (%s)", name, v, path))
			}
		case strings.HasPrefix(path, "destinations["):
			i, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(path, "]", 2)[0], "destinations["))
			if i < len(c.Destinations) {
				d := &c.Destinations[i]
				if d.Disabled == "" {
					d.Disabled = fmt.Sprintf("${%s} is not set (%s)", v, path)
					c.Disabled = append(c.Disabled, fmt.Sprintf("destination %s: %s", d.Name, d.Disabled))
				}
			}
		default:
			errs = append(errs, fmt.Sprintf("%s: environment variable %s is not set; export it or write the value in the file", path, v))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w:\n  %s", ErrInvalid, strings.Join(errs, "\n  "))
	}
	return nil
}

func (c *Config) disableSource(name string) bool {
	switch name {
	case "apple":
		was := c.Sources.Apple.Enabled
		c.Sources.Apple.Enabled = false
		return was
	case "google":
		was := c.Sources.Google.Enabled
		c.Sources.Google.Enabled = false
		return was
	case "stripe":
		// Stripe stays on while at least one secret is set (rotation).
		if len(c.Sources.Stripe.Secrets) > 0 {
			return false
		}
		was := c.Sources.Stripe.Enabled
		c.Sources.Stripe.Enabled = false
		return was
	case "shopify":
		if c.Sources.Shopify.Secret != "" || len(c.Sources.Shopify.Secrets) > 0 || len(c.Sources.Shopify.ShopSecrets) > 0 {
			return false
		}
		was := c.Sources.Shopify.Enabled
		c.Sources.Shopify.Enabled = false
		return was
	}
	return false
}

// Validate checks the resolved configuration; each problem names its key and
// says how to fix it.
func (c *Config) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	if c.Server.MaxBodyBytes < 1024 {
		bad("server.max_body_bytes", "must be at least 1024 (default 1048576)")
	}
	if _, err := c.Server.TrustedPrefixes(); err != nil {
		errs = append(errs, err.Error())
	}
	if t := c.Server.TLS; t.Enabled() {
		switch {
		case (t.CertFile == "") != (t.KeyFile == ""):
			bad("server.tls", "set both cert_file and key_file (PEM files), or neither")
		case t.CertFile != "" && len(t.ACME.Domains) > 0:
			bad("server.tls.acme.domains", "use certificate files or ACME, not both")
		}
		for i, d := range t.ACME.Domains {
			if d == "" || strings.ContainsAny(d, "/: ") || !strings.Contains(strings.Trim(d, "."), ".") {
				bad(fmt.Sprintf("server.tls.acme.domains[%d]", i), "%q is not a fully qualified host name such as postback.example.com", d)
			}
		}
		if u := t.ACME.DirectoryURL; u != "" && !strings.HasPrefix(u, "https://") {
			bad("server.tls.acme.directory_url", "must be an https:// URL (default Let's Encrypt's production directory)")
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if c.Storage.Retention.D() < time.Hour {
		bad("storage.retention", "must be at least 1h (default 720h)")
	}
	switch c.Storage.Driver {
	case DriverBolt:
	case DriverPostgres:
		if c.Storage.DSN == "" {
			bad("storage.dsn", "is required with driver postgres: postgres://user:password@host:5432/db?sslmode=verify-full, or set it to ${DATABASE_URL}")
		}
	default:
		bad("storage.driver", "%q is not one of bolt, postgres", c.Storage.Driver)
	}
	if _, err := c.Storage.EncryptionKeyBytes(); err != nil {
		bad("storage.encryption_key", "%v", err)
	}
	if c.Storage.EncryptionKey != "" && c.Storage.Driver == DriverBolt {
		bad("storage.encryption_key", "is for driver postgres (BoltDB keeps its data keys in a file beside the database)")
	}
	if c.Storage.PoolSize < 2 || c.Storage.PoolSize > 1000 {
		bad("storage.pool_size", "must be between 2 and 1000 (default 10)")
	}
	for i, e := range c.Sources.Apple.Environments {
		switch strings.ToLower(e) {
		case "production", "sandbox", "xcode", "localtesting":
		default:
			bad(fmt.Sprintf("sources.apple.environments[%d]", i), "%q is not one of production, sandbox, xcode, localtesting", e)
		}
	}
	if a := c.Sources.Apple; a.Enabled {
		for i, app := range a.Apps {
			if app.BundleID == "" {
				bad(fmt.Sprintf("sources.apple.apps[%d].bundle_id", i), "is required")
			}
		}
		if len(a.Apps) == 0 {
			bad("sources.apple.apps", "list at least one app (bundle_id, app_apple_id) or set enabled: false")
		}
	}
	if g := c.Sources.Google; g.Enabled {
		if len(g.Packages) == 0 {
			bad("sources.google.packages", "list at least one package name or set enabled: false")
		}
		if g.PushAudience == "" {
			bad("sources.google.push_audience", "set it to the audience configured on the Pub/Sub push subscription")
		}
		if g.PushServiceAccount == "" {
			bad("sources.google.push_service_account", "set it to the service account email of the push subscription")
		}
	}
	if s := c.Sources.Stripe; s.Enabled {
		if len(s.Secrets) == 0 {
			bad("sources.stripe.secrets", "list the endpoint's signing secret (whsec_...) or set enabled: false")
		}
		for i, sec := range s.Secrets {
			if !strings.HasPrefix(sec, "whsec_") {
				bad(fmt.Sprintf("sources.stripe.secrets[%d]", i), "a Stripe signing secret starts with whsec_ (Dashboard > Workbench > Webhooks > your destination > Signing secret)")
			}
		}
	}
	if s := c.Sources.Shopify; s.Enabled && s.Secret == "" && len(s.Secrets) == 0 && len(s.ShopSecrets) == 0 {
		bad("sources.shopify.secret", "set the app's client secret (or a store's webhook key under shop_secrets) or set enabled: false")
	}
	if s := c.Sources.Shopify; s.Enabled {
		shops := make([]string, 0, len(s.ShopSecrets))
		for shop := range s.ShopSecrets {
			shops = append(shops, shop)
		}
		sort.Strings(shops)
		for _, shop := range shops {
			key := "sources.shopify.shop_secrets." + shop
			switch {
			case strings.TrimSpace(s.ShopSecrets[shop]) == "":
				bad(key, "empty; write the store's webhook key (Settings > Notifications > Webhooks) or remove the entry")
			case shop != strings.ToLower(strings.TrimSpace(shop)) || !strings.Contains(shop, "."):
				bad(key, "name the shop by its lower-case domain as Shopify sends it in X-Shopify-Shop-Domain, e.g. example.myshopify.com")
			case len(s.Shops) > 0 && !containsFold(s.Shops, shop):
				bad(key, "%s is not in sources.shopify.shops; add it there too", shop)
			}
		}
	}
	if s := c.Sources.Shopify.Currency; s != "shop" && s != "presentment" {
		bad("sources.shopify.currency", "%q is not one of shop, presentment", s)
	}
	names := map[string]bool{}
	for i, d := range c.Destinations {
		key := fmt.Sprintf("destinations[%d]", i)
		if d.Name == "" {
			bad(key+".name", "is required (unique; used in metrics, admin and replay)")
		} else if names[d.Name] {
			bad(key+".name", "%q is used twice; names must be unique", d.Name)
		} else if strings.ContainsAny(d.Name, "|/ \t") {
			bad(key+".name", "%q may not contain spaces, '/' or '|'", d.Name)
		}
		names[d.Name] = true
		if d.Type == "" {
			bad(key+".type", "is required (appsflyer, adjust, singular, branch, kochava, meta, tiktok, ga4 or webhook)")
		}
		if d.Endpoint != "" {
			if u, err := url.Parse(d.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(key+".endpoint", "%q is not an http(s) URL", d.Endpoint)
			}
		}
		for j, e := range d.Match.Environments {
			if e != "production" && e != "sandbox" {
				bad(fmt.Sprintf("%s.match.environments[%d]", key, j), "%q is not one of production, sandbox", e)
			}
		}
		if d.RateLimit.PerSecond < 0 {
			bad(key+".rate_limit.per_second", "must be positive")
		}
		if d.Retry.MaxAttempts < 1 {
			bad(key+".retry.max_attempts", "must be at least 1")
		}
		if d.Concurrency < 1 || d.Concurrency > 256 {
			bad(key+".concurrency", "must be between 1 and 256")
		}
		if d.BatchSize < 0 {
			bad(key+".batch_size", "must be positive")
		}
		if d.Timeout >= c.Dispatch.Lease && c.Dispatch.Lease > 0 {
			bad(key+".timeout", "must be shorter than dispatch.lease (%s): a request still running when its lease ends could be sent again by another dispatcher", c.Dispatch.Lease.D())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w:\n  %s", ErrInvalid, strings.Join(errs, "\n  "))
	}
	return nil
}

// secretKey matches key names whose values are redacted.
var secretKey = regexp.MustCompile(`(?i)(secret|token|password|^dsn$|api_key|dev_key|private_key|encryption_key|access_key|^key$|^sdk_key$|^branch_key$|credentials)`)

// Redacted renders the resolved configuration as YAML with every secret
// replaced by "[redacted]" (or "" when it is empty).
func (c *Config) Redacted() ([]byte, error) {
	var doc yaml.Node
	if err := doc.Encode(c); err != nil {
		return nil, err
	}
	// Re-attach the full destination blocks (type-specific keys included).
	if dn := child(&doc, "destinations"); dn != nil {
		for i := range dn.Content {
			if i < len(c.Destinations) && c.Destinations[i].Node.Kind == yaml.MappingNode {
				n := c.Destinations[i].Node
				cp := deepCopy(&n)
				setDefaults(cp, dn.Content[i])
				dn.Content[i] = cp
			}
		}
	}
	redact(&doc, "")
	// A secret's value copied into a key that is not secret (a name, a URL
	// built from ${VAR}) is masked there too.
	scrubValues(&doc, c.Secrets())
	return yaml.Marshal(&doc)
}

// scrubValues masks every occurrence of a secret value in any scalar, keys
// included.
func scrubValues(n *yaml.Node, secrets []string) {
	if n.Kind == yaml.ScalarNode {
		for _, s := range secrets {
			if strings.Contains(n.Value, s) {
				n.Value, n.Tag, n.Style = strings.ReplaceAll(n.Value, s, "[redacted]"), "!!str", 0
			}
		}
	}
	for _, ch := range n.Content {
		scrubValues(ch, secrets)
	}
}

func deepCopy(n *yaml.Node) *yaml.Node {
	cp := *n
	cp.Content = nil
	for _, ch := range n.Content {
		cp.Content = append(cp.Content, deepCopy(ch))
	}
	return &cp
}

// setDefaults adds keys present in resolved (the struct with defaults) but
// missing from the user's block.
func setDefaults(user, resolved *yaml.Node) {
	for i := 0; i+1 < len(resolved.Content); i += 2 {
		if child(user, resolved.Content[i].Value) == nil {
			user.Content = append(user.Content, resolved.Content[i], resolved.Content[i+1])
		}
	}
}

// childKey is the key a mapping's entry is judged by: inside a mapping of
// secrets (shop_secrets: {shop: key}) every value is a secret, whatever its
// own key. (Other mappings under a secret-like name, such as Adjust's
// event_tokens, hold identifiers that stay readable.)
func childKey(parent, key string) string {
	// Every value of a header mapping is judged as a header value, whatever
	// the header is called (Authorization, X-Custom-Auth).
	if strings.HasSuffix(strings.ToLower(parent), "secrets") || headerKey(parent) {
		return parent
	}
	return key
}

// containsFold reports whether list holds v, ignoring case and spaces.
func containsFold(list []string, v string) bool {
	for _, s := range list {
		if strings.EqualFold(strings.TrimSpace(s), v) {
			return true
		}
	}
	return false
}

func redact(n *yaml.Node, key string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			redact(n.Content[i+1], childKey(key, n.Content[i].Value))
		}
	case yaml.SequenceNode:
		for _, ch := range n.Content {
			redact(ch, key)
		}
	case yaml.ScalarNode:
		if isSecretKey(key) && n.Value != "" {
			n.Value, n.Tag, n.Style = "[redacted]", "!!str", 0
		} else if v := RedactURLs(n.Value); v != n.Value {
			// Credentials by their place: URL userinfo and query values.
			n.Value, n.Tag, n.Style = v, "!!str", 0
		}
	}
}

// Secrets returns every secret value in the configuration (non-empty):
// by key name, every header value, and the credentials in URLs (see
// redact.go), so tests, start-up errors and the log handler can make sure
// none of them is ever printed.
func (c *Config) Secrets() []string {
	return secretsOf(&c.node)
}
