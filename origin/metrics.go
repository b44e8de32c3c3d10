package origin

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/metrics"
	"github.com/quiccast/quiccast/shared/wire"
)

type originMetrics struct {
	publishers prometheus.Gauge
	objects    prometheus.Counter
	groups     prometheus.Counter
	bytes      prometheus.Counter
	errors     *prometheus.CounterVec
	delay      prometheus.Histogram

	groupLogDropped prometheus.Counter
}

func newOriginMetrics(r prometheus.Registerer, n *Node) *originMetrics {
	m := &originMetrics{
		publishers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "quiccast_origin_publishers", Help: "Publishers connected now."}),
		objects:    prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_origin_ingest_objects_total", Help: "Objects (CMAF chunks) ingested."}),
		groups:     prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_origin_ingest_groups_total", Help: "Groups (GOPs) finished."}),
		bytes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_origin_ingest_bytes_total", Help: "CMAF chunk bytes ingested."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quiccast_origin_publish_errors_total",
			Help: "Publish requests refused or publishers dropped, by the wire close code they were sent.",
		}, []string{"code"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "quiccast_origin_ingest_delay_seconds",
			Help:    "From an object's capture wall-clock (the publisher's prft box, else its arrival; RTMP: its frame's arrival) to its append to the origin's cache.",
			Buckets: metrics.DelayBuckets,
		}),
	}
	m.groupLogDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_origin_group_log_dropped_total", Help: "Finished groups not written to the registry's group log (queue full, or Redis down for over 30 s)."})
	rs := &n.cluster.srv.Stats
	counter := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	gauge := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	r.MustRegister(m.groupLogDropped,
		gauge("quiccast_origin_relay_connections", "Relay connections from edges now.", rs.Conns.Load),
		gauge("quiccast_origin_relay_subscriptions", "Relay subscriptions served now (one per edge and broadcast).", rs.Subscriptions.Load),
		counter("quiccast_origin_relay_subscribes_total", "Relay subscriptions started.", rs.Subscribes.Load),
		counter("quiccast_origin_relay_groups_total", "Group streams opened to edges.", rs.Groups.Load),
		counter("quiccast_origin_relay_group_resets_total", "Group streams reset because they fell behind.", rs.Resets.Load),
		counter("quiccast_origin_relay_sent_bytes_total", "Frame bytes sent to edges.", rs.Bytes.Load),
		counter("quiccast_origin_relay_refused_total", "Relay connections or subscriptions refused.", rs.Refused.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_origin_registry_up", Help: "1 when the last registry call succeeded."},
			func() float64 {
				if n.cluster.reg.Healthy() {
					return 1
				}
				return 0
			}),
	)
	r.MustRegister(m.publishers, m.objects, m.groups, m.bytes, m.errors, m.delay,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_origin_broadcasts", Help: "Broadcasts held (publishing or waiting for their publisher)."},
			func() float64 { n.mu.Lock(); defer n.mu.Unlock(); return float64(len(n.bcasts)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_origin_cache_bytes", Help: "Bytes charged to the memory budget: group caches and boxes being received."},
			func() float64 { return float64(n.budget.Used()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "quiccast_origin_cache_budget_bytes", Help: "The memory budget: limit on the bytes the group caches and boxes being received may hold."},
			func() float64 { return float64(n.budget.Limit()) }),
	)
	return m
}

// refuse counts a refused or dropped publisher by its close code.
func (m *originMetrics) refuse(err error) {
	m.errors.WithLabelValues(fmt.Sprint(uint16(wire.CodeOf(err)))).Inc()
}
