package restream

import "github.com/prometheus/client_golang/prometheus"

// States of a target.
const (
	StateConnecting   = "connecting"
	StateLive         = "live"
	StateReconnecting = "reconnecting"
	StateRefused      = "refused"
	StateStopped      = "stopped"
)

var states = []string{StateConnecting, StateLive, StateReconnecting, StateRefused, StateStopped}

// Reasons a session ended and another is tried, as counted.
const (
	ReasonNetwork = "network"
	ReasonRefused = "refused"
	ReasonParams  = "params"
)

// Metrics are the restreamer's Prometheus metrics,
// quiccast_origin_restream_*. Labels carry target ids, never URLs or keys.
type Metrics struct {
	bytes      *prometheus.CounterVec
	state      *prometheus.GaugeVec
	reconnects *prometheus.CounterVec
	targets    prometheus.Gauge
}

// NewMetrics registers the metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "quiccast_origin_restream_bytes_total",
			Help: "Bytes sent to a restream target (RTMP, before TLS), by target id (GET /api/v1/restreams maps ids to redacted URLs)."}, []string{"target_id"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "quiccast_origin_restream_state",
			Help: "1 for the state a restream target is in (connecting, live, reconnecting, refused, stopped), 0 for the others."}, []string{"target_id", "state"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "quiccast_origin_restream_reconnects_total",
			Help: "Restream sessions that ended and were tried again, by reason: network (unreachable, broken, timed out), refused (the server refused the publish), params (the broadcast's codecs changed)."}, []string{"reason"}),
		targets: prometheus.NewGauge(prometheus.GaugeOpts{Name: "quiccast_origin_restream_targets", Help: "Restream targets being pushed or retried now."}),
	}
	for _, r := range []string{ReasonNetwork, ReasonRefused, ReasonParams} {
		m.reconnects.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.bytes, m.state, m.reconnects, m.targets)
	}
	return m
}

func (m *Metrics) setState(id, state string) {
	for _, s := range states {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(id, s).Set(v)
	}
}

// forget drops a target's series once it ended and fell out of the list.
func (m *Metrics) forget(id string) {
	m.bytes.DeleteLabelValues(id)
	for _, s := range states {
		m.state.DeleteLabelValues(id, s)
	}
}
