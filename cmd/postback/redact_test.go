package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 15, item 4: check-config redacts by the value's place (header
// values, URL userinfo and query values), in its output and its errors.
func TestCheckConfigRedactsByPlace(t *testing.T) {
	dir := t.TempDir()
	const sources = "sources: {apple: {enabled: false}, google: {enabled: false}, stripe: {enabled: false}, shopify: {enabled: false}}\n"
	planted := []string{"pw-0f3a9c2e71", "qs_9b7e5d3c1a2f", "tok_live_51HxYz0123abcdef"}
	ok := sources + `destinations:
  - name: backend
    type: webhook
    endpoint: "https://svc:pw-0f3a9c2e71@hooks.example.com/in?token=qs_9b7e5d3c1a2f"
    secret: whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz
    headers: {Authorization: "Bearer tok_live_51HxYz0123abcdef"}
`
	bad := sources + `destinations:
  - name: backend
    type: webhook
    endpoint: "ftp://svc:pw-0f3a9c2e71@hooks.example.com/in?token=qs_9b7e5d3c1a2f"
    secret: whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz
    headers: {Authorization: "Bearer tok_live_51HxYz0123abcdef"}
`
	for name, tc := range map[string]struct {
		yaml string
		code int
		want string
	}{
		"valid":          {ok, 0, "token=[redacted]"},
		"invalid values": {bad, 1, "destinations[0].endpoint"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runWithEnv(nil, "check-config", "--config", p)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s\n%s", code, tc.code, tc.want, out, errOut)
			}
			for _, s := range planted {
				if strings.Contains(out+errOut, s) {
					t.Errorf("check-config printed %q:\n%s\n%s", s, out, errOut)
				}
			}
		})
	}
}
