package grafana

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var metricName = regexp.MustCompile(`\b(quiccast_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)\b`)

// exported collects the metric names the nodes' code registers (a
// name in a string literal of origin/, edge/ or shared/).
func exported(t *testing.T) map[string]bool {
	names := map[string]bool{"process_cpu_seconds_total": true, "process_resident_memory_bytes": true}
	lit := regexp.MustCompile(`"(quiccast_[a-z0-9_]+)"`)
	for _, dir := range []string{"../../origin", "../../edge", "../../shared"} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
				names[m[1]] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// Every series the dashboard asks for is one the nodes export.
func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(Dashboard, &d); err != nil {
		t.Fatal(err)
	}
	have := exported(t)
	used := 0
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				used++
				base := m
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, s); ok && have[b] {
						base = b
					}
				}
				if !have[base] {
					t.Errorf("panel %q uses %s, which no node exports", p.Title, m)
				}
			}
		}
	}
	if used < 20 {
		t.Fatalf("only %d metric references found", used)
	}
}
