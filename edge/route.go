package edge

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The edge's part in routing (shared/route): it reports its region,
// ceilings, egress and whether it is draining with its viewers every
// second (control.go's report), serves GET /edge like every node, and
// lets an operator drain it: POST /admin/drain stops new viewers (503 /
// going away, as on shutdown) while the ones watching stay, and tells the
// router at once; POST /admin/undrain takes viewers again.

// byteCounter is a Prometheus counter of bytes whose total the edge can
// read for its egress.
type byteCounter struct {
	prometheus.Counter
	total atomic.Int64
}

func (c *byteCounter) Add(v float64) {
	c.Counter.Add(v)
	c.total.Add(int64(v))
}

// egressMeter turns byte totals into bit/s between reports.
type egressMeter struct {
	mu    sync.Mutex
	at    time.Time
	bytes int64
}

// rate returns the bit/s since the last call, given the bytes sent so far
// (0 on the first call).
func (m *egressMeter) rate(bytes int64) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	defer func() { m.at, m.bytes = now, bytes }()
	if m.at.IsZero() || !now.After(m.at) {
		return 0
	}
	return int64(float64(bytes-m.bytes) * 8 / now.Sub(m.at).Seconds())
}

// sentBytes is every byte this edge wrote to viewers and lower tiers.
func (n *Node) sentBytes() int64 {
	b := n.metrics.sent.total.Load()
	if n.wtRelay != nil {
		b += n.wtRelay.Stats.Bytes.Load()
	}
	if n.relay != nil {
		b += n.relay.Stats.Bytes.Load()
	}
	return b
}

// drainRoutes adds POST /admin/drain and /admin/undrain to the admin
// surface.
func (n *Node) drainRoutes() {
	set := func(on bool) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			n.mu.Lock()
			changed := n.draining != on
			n.draining = on
			viewers := n.viewers
			n.mu.Unlock()
			if changed {
				n.log.Warn("edge draining by an operator", "draining", on, "viewers", viewers, "remote", r.RemoteAddr)
				n.reporter.Now()
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, "{\"draining\":%t}\n", on)
		}
	}
	n.admin.HandleFunc("POST /admin/drain", set(true))
	n.admin.HandleFunc("POST /admin/undrain", set(false))
}
