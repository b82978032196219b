package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of the CLI output tests")

// golden compares got with testdata/golden/NAME (go test -update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// `postback`, -h, --help and help print the command list; none starts a
// server (a server would block: the test would time out).
func TestGoldenCommandList(t *testing.T) {
	code, out, errOut := runWithEnv(nil)
	if code != 2 || out != "" {
		t.Errorf("no arguments: exit %d, stdout %q", code, out)
	}
	golden(t, "usage.txt", errOut)
	for _, arg := range []string{"-h", "--help", "help"} {
		code, out, errOut := runWithEnv(nil, arg)
		if code != 0 || errOut != "" {
			t.Errorf("%s: exit %d, stderr %q", arg, code, errOut)
		}
		if out != "" && out != mustRead(t, "usage.txt") {
			t.Errorf("%s: output differs from usage.txt:\n%s", arg, out)
		}
	}
	code, out, _ = runWithEnv(nil, "--version")
	if code != 0 || !strings.HasPrefix(out, "postback dev (commit ") {
		t.Errorf("--version: exit %d %q", code, out)
	}
}

func mustRead(t *testing.T, name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil && !*update {
		t.Fatal(err)
	}
	return string(b)
}

// help CMD prints the command's usage on stdout in the one format:
// "usage: postback CMD ..." then "flags:".
func TestGoldenHelpCommand(t *testing.T) {
	for _, name := range []string{"check-config", "deliveries", "serve"} {
		code, out, errOut := runWithEnv(nil, "help", name)
		if code != 0 || errOut != "" {
			t.Errorf("help %s: exit %d, stderr %q", name, code, errOut)
		}
		golden(t, "help-"+name+".txt", out)
	}
	for name := range commands {
		_, out, _ := runWithEnv(nil, "help", name)
		if !strings.HasPrefix(out, "usage: postback "+strings.Fields(name)[0]) || !strings.Contains(out, "\nflags:\n") {
			t.Errorf("help %s: not the usage format:\n%s", name, out)
		}
	}
	if code, _, errOut := runWithEnv(nil, "help", "nosuch"); code != 2 || !strings.Contains(errOut, `unknown command "nosuch"`) {
		t.Errorf("help nosuch: exit %d %q", code, errOut)
	}
}

// check-config reports every problem at once, each with its line; --strict
// adds placeholders, disabled destinations and an empty destination list.
func TestGoldenCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, y string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", `server:
  listn: ":8080"
log: {level: loud}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [nope]}
destinations:
  - name: a
    type: nosuch
    endpoint: https://a.test/x
  - name: b
    type: webhook
    endpoint: https://b.test/x
`)
	code, out, errOut := runWithEnv(nil, "check-config", "--config", bad)
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
	golden(t, "check-config-errors.txt", strings.ReplaceAll(errOut, dir, "DIR"))

	// A file that parses: the forwarders' own checks, all at once, by line.
	fwd := write("fwd.yaml", `sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: false}
destinations:
  - name: a
    type: nosuch
    endpoint: https://a.test/x
  - name: b
    type: webhook
    endpoint: https://b.test/x
    secret: short
`)
	code, _, errOut = runWithEnv(nil, "check-config", "--config", fwd)
	if code != 1 {
		t.Errorf("forwarder errors: exit %d", code)
	}
	golden(t, "check-config-forwarders.txt", strings.ReplaceAll(errOut, dir, "DIR"))

	ok := write("ok.yaml", `sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: ["${STRIPE_SECRET}"], app_id: com.example.app}
destinations:
  - name: hook
    type: webhook
    endpoint: https://hooks.example.com/postback
    secret: ${WEBHOOK_SECRET}
`)
	env := map[string]string{"STRIPE_SECRET": "whsec_golden_test_secret"}
	if code, _, errOut := runWithEnv(env, "check-config", "--config", ok); code != 0 {
		t.Fatalf("without --strict: exit %d\n%s", code, errOut)
	}
	code, _, errOut = runWithEnv(env, "check-config", "--strict", "--config", ok)
	if code != 1 {
		t.Errorf("--strict: exit %d", code)
	}
	golden(t, "check-config-strict.txt", strings.ReplaceAll(errOut, dir, "DIR"))
}

// Unknown --source, --type, --state and destination values are usage errors
// (exit 2) listing the valid ones.
func TestUnknownValuesListTheValidOnes(t *testing.T) {
	addr := admGateway(t, newAdmSink(t, 200))
	env := map[string]string{"POSTBACK_ADDR": addr}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"events", "--token", admToken, "--source", "itunes"}, `postback: --source "itunes" is not one of: apple, google, stripe, shopify, custom (HTTP 400 usage)`},
		{[]string{"events", "--token", admToken, "--type", "renewal"}, `--type "renewal" is not one of: trial_started,`},
		{[]string{"deliveries", "--token", admToken, "--state", "failed"}, `--state "failed" is not one of: pending, retrying, waiting, delivered, dead, skipped, held`},
		{[]string{"deliveries", "--token", admToken, "--destination", "nosuch"}, `--destination "nosuch" is not one of the gateway's destinations: backend, mmp`},
		{[]string{"replay", "--token", admToken, "--destination", "nosuch"}, `--destination "nosuch" is not one of the gateway's destinations: backend, mmp`},
		{[]string{"reprocess", "--token", admToken, "--source", "x"}, `--source "x" is not one of`},
	}
	for _, tc := range cases {
		code, _, errOut := runWithEnv(env, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 with %q", tc.args, code, errOut, tc.want)
		}
	}
	// An unknown destination to test is "not found" (exit 5), with the list.
	if code, _, errOut := runWithEnv(env, "destinations", "--token", admToken, "test", "nosuch"); code != 5 || !strings.Contains(errOut, `destination "nosuch" is not one of the gateway's destinations: backend, mmp`) {
		t.Errorf("destinations test nosuch: exit %d %q", code, errOut)
	}
	// --token works without POSTBACK_ADMIN_TOKEN, and a wrong one is exit 4.
	if code, _, errOut := runWithEnv(env, "deliveries", "--token", admToken); code != 0 {
		t.Errorf("--token: exit %d %s", code, errOut)
	}
	if code, _, _ := runWithEnv(env, "deliveries", "--token", "wrong-token-0123456789"); code != 4 {
		t.Errorf("wrong --token: exit %d, want 4", code)
	}
}
