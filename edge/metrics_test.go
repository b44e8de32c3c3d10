package edge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// TestObjectDelayIsMeasuredPerTransport publishes objects captured 300 ms
// before they reach the edge and checks quiccast_edge_object_delay_seconds
// for a WebSocket viewer, a WebTransport viewer and an LL-HLS part: each
// object written counts once per viewer, with its delay from capture.
func TestObjectDelayIsMeasuredPerTransport(t *testing.T) {
	const lag = 300 * time.Millisecond
	src := newFakeSource()
	f := src.addClip(t, "live/delay")
	f.lag = lag
	f.groups(t, 1, 1) // group 0 done, group 1 begun: viewers start there
	n, _ := startWTEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ws := dialViewer(t, n, "live/delay")
	wt, err := watchWT(ctx, n, certHashes(t, n).Hashes, "live/delay", "")
	if err != nil {
		t.Fatal(err)
	}
	defer wt.close()
	next(t, ws) // the catalog: the viewer is attached
	const more = 5
	for range more {
		f.step(t)
	}
	part := get(t, nil, hlsURL(n, "live/delay", fmt.Sprintf("part-%s-0-1-%d.m4s", instance(f.b.Catalog()), more)))
	if part.status != 200 {
		t.Fatalf("part: %d", part.status)
	}

	reg := n.Registry()
	want := map[string]uint64{"ws": 1 + more, "wt": 1 + more, "hls": 1}
	testenv.WaitFor(t, 15*time.Second, "every object's delay counted on each transport", func() bool {
		for tr, k := range want {
			if c, _ := testenv.Histogram(t, reg, "quiccast_edge_object_delay_seconds", "transport", tr); c < k {
				return false
			}
		}
		return true
	})
	for tr, k := range want {
		c, sum := testenv.Histogram(t, reg, "quiccast_edge_object_delay_seconds", "transport", tr)
		mean := time.Duration(sum / float64(c) * float64(time.Second))
		if c > k || mean < lag || mean > lag+5*time.Second {
			t.Errorf("%s: %d objects, mean delay %v; want %d objects, at least %v", tr, c, mean, k, lag)
		}
	}
}

// BenchmarkObjectDelayObserve is what the delay histogram adds to one
// delivery (one object to one viewer): compare with BenchmarkFanout1000's
// ns/delivery.
func BenchmarkObjectDelayObserve(b *testing.B) {
	m := newEdgeMetrics(prometheus.NewRegistry(), &Node{})
	items := []media.Item{{Object: media.NewObject(wire.Header{Kind: wire.KindObject, Capture: time.Now().UnixMicro()}, make([]byte, 100), 0)}}
	b.ReportAllocs()
	for b.Loop() {
		observeObjects(m.delayWS, items)
	}
}
