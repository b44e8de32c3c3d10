package edge

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/metrics"
	"github.com/quiccast/quiccast/shared/wire"
)

type edgeMetrics struct {
	viewers     *prometheus.GaugeVec
	sent        *byteCounter
	skips       prometheus.Counter
	subscribes  prometheus.Counter
	disconnects *prometheus.CounterVec
	// wsWriters counts WebSocket viewers by how they are written: events
	// (plain TCP, the fan-out), tls (wss://, records sealed by the
	// fan-out), ktls (wss://, sealed by the kernel) or goroutines.
	wsWriters *prometheus.CounterVec
	// wtStarved counts WebTransport sessions refused because the process
	// was CPU-starved (-wt-max-sched-delay).
	wtStarved prometheus.Counter
	// delay: capture wall-clock to the write to a viewer, per transport.
	delay                                *prometheus.HistogramVec
	delayWS, delayWT, delayHLS, delayRly prometheus.Observer
}

func newEdgeMetrics(r prometheus.Registerer, n *Node) *edgeMetrics {
	m := &edgeMetrics{
		viewers:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "quiccast_edge_viewers", Help: "Viewers connected now, by transport."}, []string{"transport"}),
		sent:       &byteCounter{Counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_edge_sent_bytes_total", Help: "Bytes written to viewers, framing included."})},
		skips:      prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_edge_skipped_groups_total", Help: "Times a viewer fell behind and skipped to the newest group."}),
		subscribes: prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_edge_upstream_subscribes_total", Help: "Upstream subscriptions made (one per broadcast while it has viewers)."}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quiccast_edge_viewer_disconnects_total",
			Help: "Viewers refused or disconnected by the edge, by close code; code 0 counts viewers that left by themselves.",
		}, []string{"code"}),
		wsWriters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quiccast_edge_ws_viewers_total",
			Help: "WebSocket viewers admitted, by how they are written: events (plain TCP, shared fan-out goroutines), tls (wss://, TLS records sealed by the fan-out), ktls (wss://, sealed by the kernel) or goroutines (two per viewer: -ws-writer goroutines, or a TLS session the fan-out cannot take over).",
		}, []string{"writer"}),
	}
	m.wtStarved = prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_edge_wt_refused_starved_total", Help: "WebTransport sessions refused before the upgrade because this process's goroutines waited longer than -wt-max-sched-delay for a CPU."})
	r.MustRegister(m.wtStarved)
	if n.sched != nil {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_edge_sched_delay_p99_seconds", Help: "The 99th percentile of how long this process's runnable goroutines waited for a CPU over the last 0.5 s (0 when not measured)."},
			func() float64 { return n.sched.delay(time.Now()).Seconds() }))
	}
	m.delay = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "quiccast_edge_object_delay_seconds",
		Help:    "From an object's capture wall-clock (set by the publisher or the origin) to its write to a viewer (ws, wt, hls) or a lower-tier edge (relay), by transport; once per object and viewer.",
		Buckets: metrics.DelayBuckets,
	}, []string{"transport"})
	m.delayWS, m.delayWT = m.delay.WithLabelValues("ws"), m.delay.WithLabelValues("wt")
	m.delayHLS, m.delayRly = m.delay.WithLabelValues("hls"), m.delay.WithLabelValues("relay")
	r.MustRegister(m.delay)
	if n.cluster != nil {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_upstream_resubscribes_total", Help: "Upstream subscriptions moved to another upstream (origin lost, broadcast moved) without dropping viewers."},
			func() float64 { return float64(n.cluster.Resubscribes.Load()) }))
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_upstream_restarts_total", Help: "Pooled upstream connections dropped because the upstream announced a restart on the same relay address (a new incarnation)."},
			func() float64 { return float64(n.cluster.Restarts.Load()) }))
		const help = "Failures to use an upstream that viewers see as 502/503 \"upstream unavailable\", by cause: refused (the upstream did not accept this edge's -cluster-token) or unreachable (a dial to the origin or -parent failed)."
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_upstream_failures_total", Help: help, ConstLabels: prometheus.Labels{"cause": "refused"}},
			func() float64 { return float64(n.cluster.Refused.Load()) }))
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_upstream_failures_total", Help: help, ConstLabels: prometheus.Labels{"cause": "unreachable"}},
			func() float64 { return float64(n.cluster.Unreachable.Load()) }))
	}
	if n.relay != nil {
		rs := &n.relay.Stats
		r.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_edge_relay_subscriptions", Help: "Relay subscriptions served to lower-tier edges now."},
				func() float64 { return float64(rs.Subscriptions.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_relay_sent_bytes_total", Help: "Frame bytes sent to lower-tier edges."},
				func() float64 { return float64(rs.Bytes.Load()) }),
		)
	}
	if n.certs != nil {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_edge_cert_expiry_timestamp_seconds", Help: "When the TLS certificate served now expires (Unix time)."},
			n.certNotAfter))
	}
	if f := n.files; f != nil {
		r.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_cert_reloads_total", Help: "Certificate files reloaded after they changed."},
				func() float64 { return float64(f.Reloads.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_cert_reload_failures_total", Help: "Changed certificate files that could not be loaded (the previous certificate stays)."},
				func() float64 { return float64(f.Failures.Load()) }),
		)
	}
	if d := n.dev; d != nil {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "quiccast_edge_cert_rotations_total", Help: "Development certificate rotations."},
			func() float64 { return float64(d.Rotations.Load()) }))
	}
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_edge_cache_bytes", Help: "Bytes held by mirrored broadcasts."},
		func() float64 { return float64(n.budget.Used()) }))
	r.MustRegister(m.viewers, m.sent, m.skips, m.subscribes, m.disconnects, m.wsWriters,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_edge_upstreams", Help: "Upstream subscriptions held now."},
			func() float64 { n.mu.Lock(); defer n.mu.Unlock(); return float64(len(n.ups)) }))
	return m
}

// disconnect counts a viewer's end by the code it was sent (0: it left).
func (m *edgeMetrics) disconnect(err error) {
	code := "0"
	if err != nil {
		code = fmt.Sprint(uint16(wire.CodeOf(err)))
	}
	m.disconnects.WithLabelValues(code).Inc()
}

// observeObjects records the delay of the objects among items, written to
// a viewer just now.
func observeObjects(o prometheus.Observer, items []media.Item) {
	now := int64(0)
	for _, it := range items {
		if it.Object == nil || it.Object.Flags&wire.FlagEndOfGroup != 0 {
			continue
		}
		if now == 0 {
			now = time.Now().UnixMicro()
		}
		metrics.ObserveDelay(o, it.Object.Capture, now)
	}
}

// observeObject records the delay of one object written just now.
func observeObject(o prometheus.Observer, obj *media.Object) {
	if obj.Flags&wire.FlagEndOfGroup == 0 {
		metrics.ObserveDelay(o, obj.Capture, time.Now().UnixMicro())
	}
}
