package version

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLinkerValuesWinOverBuildInfo(t *testing.T) {
	bi := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-2026"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "feedface"}, {Key: "vcs.time", Value: "2026-01-01T00:00:00Z"}, {Key: "vcs.modified", Value: "true"},
		}}, true
	}
	for _, ca := range []struct {
		name, v, c, b string
		want          Info
	}{
		{"stamped", "v1.2.0", "abc", "2026-12-03T05:50:00Z", Info{Version: "v1.2.0", Commit: "abc", Built: "2026-12-03T05:50:00Z", Modified: true}},
		{"from build info", "", "", "", Info{Version: "v0.0.0-2026", Commit: "feedface", Built: "2026-01-01T00:00:00Z", Modified: true}},
	} {
		t.Run(ca.name, func(t *testing.T) {
			got := read(ca.v, ca.c, ca.b, bi)
			got.GoVersion = ""
			if got != ca.want {
				t.Fatalf("got %+v, want %+v", got, ca.want)
			}
		})
	}
	got := read("", "", "", func() (*debug.BuildInfo, bool) { return nil, false })
	if got.Version != "devel" || got.Commit != "unknown" || got.Built != "unknown" {
		t.Fatalf("without any information: %+v", got)
	}
	if s := got.String(); !strings.HasPrefix(s, "quiccast devel commit unknown built unknown go") {
		t.Fatalf("String() = %q", s)
	}
}

func TestBuildInfoGaugeIsOneWithTheVersionLabel(t *testing.T) {
	r := prometheus.NewRegistry()
	r.MustRegister(Collector())
	mfs, err := r.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].Metric) != 1 {
		t.Fatalf("gather: %v %v", err, mfs)
	}
	mf := mfs[0]
	if mf.GetName() != "quiccast_build_info" || mf.Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("got %v", mf)
	}
	labels := map[string]string{}
	for _, l := range mf.Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	i := Get()
	if labels["version"] != i.Version || labels["commit"] != i.Commit || labels["built"] != i.Built || labels["goversion"] != i.GoVersion {
		t.Fatalf("labels %v, want %+v", labels, i)
	}
}
