// Package metrics gives each node its own Prometheus registry, so that
// several nodes can live in one process (the demo, tests) without clashing.
package metrics

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quiccast/quiccast/shared/version"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors (CPU seconds, resident memory, open files) and
// quiccast_build_info (version, commit, build time).
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.Collector())
	return r
}

// Handler serves r at /metrics.
func Handler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{Registry: r})
}

// Profiling mounts Go's profiler at /debug/pprof/ on mux. Nodes do it only
// when asked (-pprof): profiles show internals and cost CPU while taken.
func Profiling(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// DelayBuckets are the buckets of the quiccast_*_delay_seconds
// histograms: from a few milliseconds (an object through one node) to
// 10 s (a viewer far behind), finest around the sub-second goal.
var DelayBuckets = []float64{.005, .01, .025, .05, .075, .1, .15, .2, .3, .4, .5, .75, 1, 1.5, 2, 3, 5, 10}

// ObserveDelay records the time from an object's capture wall-clock to
// now (both Unix microseconds) in o; a capture in the future (a
// publisher's clock ahead of ours) counts as 0, no capture is not
// counted.
func ObserveDelay(o prometheus.Observer, capture, now int64) {
	if capture == 0 {
		return
	}
	o.Observe(float64(max(now-capture, 0)) / 1e6)
}
