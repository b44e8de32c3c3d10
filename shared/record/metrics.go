package record

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the recorder's Prometheus metrics, quiccast_record_*.
type Metrics struct {
	bytes        prometheus.Counter
	segments     prometheus.Counter
	errors       prometheus.Counter
	gaps         prometheus.Counter
	refused      prometheus.Counter
	deleted      prometheus.Counter
	deletedBytes prometheus.Counter
	active       prometheus.Gauge
	free         prometheus.Gauge
}

// NewMetrics registers the metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes:        prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_record_bytes_total", Help: "Bytes written to recordings (segments and init segments)."}),
		segments:     prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_record_segments_total", Help: "Recorded segments written, synced and indexed."}),
		errors:       prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_record_errors_total", Help: "Recordings that failed to start or broke on a write error."}),
		gaps:         prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_record_gaps_total", Help: "Gaps in recordings: groups skipped because the recorder fell behind (slow disk) or the cache dropped them."}),
		refused:      prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_record_refused_total", Help: "Recordings refused or stopped because free disk space was below -record-min-free."}),
		deleted:      prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_record_deleted_segments_total", Help: "Segments deleted by retention."}),
		deletedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "quiccast_record_deleted_bytes_total", Help: "Bytes deleted by retention."}),
		active:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "quiccast_record_active", Help: "Recordings being written now."}),
		free:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "quiccast_record_disk_free_bytes", Help: "Free bytes on the recording disk at the last check."}),
	}
	if reg != nil {
		reg.MustRegister(m.bytes, m.segments, m.errors, m.gaps, m.refused, m.deleted, m.deletedBytes, m.active, m.free)
	}
	return m
}

func (m *Metrics) setFree(n int64) { m.free.Set(float64(n)) }
