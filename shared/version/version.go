// Package version says which build of quiccast is running: the version,
// commit and build time stamped at link time (-ldflags -X), or what the Go
// toolchain recorded (debug.ReadBuildInfo) when nothing was stamped.
//
//	go build -ldflags "-X github.com/quiccast/quiccast/shared/version.version=v1.2.0 \
//	  -X github.com/quiccast/quiccast/shared/version.commit=$(git rev-parse HEAD) \
//	  -X github.com/quiccast/quiccast/shared/version.built=$(date -u +%FT%TZ)"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Set by the linker (-X); empty when the binary was built without them.
var version, commit, built string

// Info is one build's identity.
type Info struct {
	Version   string // "v1.2.0", a pseudo-version, or "devel"
	Commit    string // full VCS revision, "unknown" when not known
	Built     string // RFC 3339 time of the build (or of the commit), "unknown" when not known
	GoVersion string
	Modified  bool // the work tree had uncommitted changes (from the Go toolchain's stamp)
}

var (
	once sync.Once
	info Info
)

// Get returns this binary's Info.
func Get() Info {
	once.Do(func() { info = read(version, commit, built, debug.ReadBuildInfo) })
	return info
}

// read merges the linker's values with the toolchain's build info; the
// linker's win.
func read(v, c, b string, bi func() (*debug.BuildInfo, bool)) Info {
	i := Info{Version: v, Commit: c, Built: b, GoVersion: runtime.Version()}
	if d, ok := bi(); ok {
		if i.Version == "" && d.Main.Version != "" && d.Main.Version != "(devel)" {
			i.Version = d.Main.Version
		}
		for _, s := range d.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.time":
				if i.Built == "" {
					i.Built = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.Built == "" {
		i.Built = "unknown"
	}
	return i
}

// String is the one line `quiccast version` prints:
// "quiccast v1.2.0 commit 0123abcd built 2026-12-03T05:50:00Z go1.26.0".
func (i Info) String() string {
	c := i.Commit
	if i.Modified {
		c += "+dirty"
	}
	return fmt.Sprintf("quiccast %s commit %s built %s %s", i.Version, c, i.Built, i.GoVersion)
}

// Collector is the quiccast_build_info gauge: always 1, labelled with
// the version, commit, build time and Go version.
func Collector() prometheus.Collector {
	i := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "quiccast_build_info",
		Help:        "Always 1; labels name the running build.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "built": i.Built, "goversion": i.GoVersion},
	})
	g.Set(1)
	return g
}
