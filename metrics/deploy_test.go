package metrics

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var deployDir = filepath.Join("..", "deploy")

// metricRE finds the Postback metric names an expression uses.
var metricRE = regexp.MustCompile(`postback_[a-z_]+`)

// known is every metric family the gateway exposes (histograms by their
// series names too), with every configurable part initialised.
func known(t *testing.T) map[string]bool {
	m := New()
	m.SetBuildInfo("v", "c")
	m.InitSource("stripe", []string{"invalid_signature"})
	m.InitDestination("d")
	m.RevenueUnknown.WithLabelValues("google", "order_not_found")
	out := map[string]bool{}
	for _, n := range metricRE.FindAllString(scrape(t, m), -1) {
		out[n] = true
	}
	return out
}

// Issue 16, item 10: the alert rules pass promtool (check and unit tests),
// and the rules and the Grafana dashboard only use metrics that exist.
func TestDeployRules(t *testing.T) {
	rules := filepath.Join(deployDir, "prometheus", "postback-alerts.yml")
	names := known(t)
	for _, f := range []string{rules, filepath.Join(deployDir, "grafana", "postback-dashboard.json")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".json") {
			var d struct {
				Panels []struct {
					Title   string
					Targets []struct{ Expr string }
				}
			}
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(d.Panels) < 10 {
				t.Errorf("%s: %d panels", f, len(d.Panels))
			}
		}
		for _, n := range metricRE.FindAllString(string(b), -1) {
			if !names[n] {
				t.Errorf("%s uses %s, which the gateway does not expose", filepath.Base(f), n)
			}
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found; CI installs Debian's prometheus package")
		}
		t.Skip("promtool not found (apt-get install prometheus); CI runs this")
	}
	for _, args := range [][]string{{"check", "rules", "postback-alerts.yml"}, {"test", "rules", "postback-alerts.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(deployDir, "prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
