package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runWithEnv(env map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	e := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}}
	code := Main(context.Background(), args, e)
	return code, out.String(), errb.String()
}

func TestCheckConfigShippedRedactsSecrets(t *testing.T) {
	env := map[string]string{
		"STRIPE_WEBHOOK_SECRET":  "whsec_check_config_secret_value",
		"SHOPIFY_WEBHOOK_SECRET": "shpss_check_config_secret",
		"POSTBACK_ADMIN_TOKEN":   "admin-check-config-token",
		"POSTBACK_API_KEY":       "api-key-check-config",
		"WEBHOOK_URL":            "https://example.com/hook",
		"WEBHOOK_SECRET":         "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz",
	}
	code, out, errOut := runWithEnv(env, "check-config", "--config", filepath.Join("..", "..", "config.yaml"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, v := range env {
		if strings.Contains(v, "secret") || strings.Contains(v, "token") || strings.Contains(v, "key") || strings.HasPrefix(v, "whsec_") {
			if strings.Contains(out+errOut, v) {
				t.Errorf("check-config printed the secret %q", v)
			}
		}
	}
	if !strings.Contains(out, "[redacted]") || !strings.Contains(errOut, "config OK") {
		t.Errorf("output lacks redaction or the OK line:\n%s\n%s", out, errOut)
	}
}

func TestCheckConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct{ yaml, want string }{
		"unknown key":       {"server: {listn: x}\n", "server.listn"},
		"bad destination":   {"destinations: [{name: d, type: nosuch}]\n", "destinations[d].type"},
		"apple root":        {"sources:\n  apple:\n    enabled: true\n    apps: [{bundle_id: a.b, app_apple_id: 1}]\n    root_certificates: [" + filepath.Join(dir, "missing.cer") + "]\n", "sources.apple.root_certificates"},
		"webhook no secret": {"destinations: [{name: d, type: webhook, endpoint: \"https://e.com\"}]\n", "destinations[d].secret"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, errOut := runWithEnv(nil, "check-config", "--config", p)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want 1 naming %s", code, errOut, tc.want)
			}
		})
	}
}

func TestUnknownCommandAndVersion(t *testing.T) {
	if code, _, errOut := runWithEnv(nil, "nosuch"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: exit %d %q", code, errOut)
	}
	if code, out, _ := runWithEnv(nil, "version"); code != 0 || !strings.HasPrefix(out, "postback ") {
		t.Errorf("version: exit %d %q", code, out)
	}
	if code, out, _ := runWithEnv(nil, "help"); code != 0 || !strings.Contains(out, "check-config") {
		t.Errorf("help: exit %d %q", code, out)
	}
}

// TestMaxProcs: the gateway runs one P more than the runtime's default,
// only when GOMAXPROCS is not in the environment.
func TestMaxProcs(t *testing.T) {
	if n, ok := maxProcs(func(string) (string, bool) { return "", false }, 2); !ok || n != 3 {
		t.Errorf("without GOMAXPROCS: %d %v", n, ok)
	}
	for _, v := range []string{"2", "1", ""} {
		if _, ok := maxProcs(func(k string) (string, bool) { return v, k == "GOMAXPROCS" }, 2); ok {
			t.Errorf("GOMAXPROCS=%q overridden", v)
		}
	}
}

// TestGCPercent: the gateway sets its own GC target only when GOGC is not
// in the environment.
func TestGCPercent(t *testing.T) {
	if pct, ok := gcPercent(func(string) (string, bool) { return "", false }); !ok || pct != defaultGCPercent {
		t.Errorf("without GOGC: %d %v", pct, ok)
	}
	for _, v := range []string{"100", "off", ""} {
		if _, ok := gcPercent(func(k string) (string, bool) { return v, k == "GOGC" }); ok {
			t.Errorf("GOGC=%q overridden", v)
		}
	}
}
