package route

import (
	"slices"
	"testing"

	"github.com/quiccast/quiccast/shared/registry"
)

func ids(es []Edge) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func edge(id string, viewers, maxViewers int) registry.NodeInfo {
	return registry.NodeInfo{ID: id, Role: "edge", URL: "http://" + id, Viewers: viewers, MaxViewers: maxViewers}
}

// The order rules, one at a time.
func TestRankOrder(t *testing.T) {
	drain := edge("drain", 0, 100)
	drain.Draining = true
	origin := registry.NodeInfo{ID: "origin", Role: "origin", URL: "http://origin"}
	mid := edge("mid", 0, 100)
	mid.NoRoute = true
	full := edge("full", 100, 100)
	egressFull := edge("egress-full", 0, 100)
	egressFull.EgressBps, egressFull.MaxEgressBps = 2e9, 1e9
	busy, idle := edge("busy", 50, 100), edge("idle", 10, 100)
	hot := edge("hot", 10, 100)
	hot.CPU = 0.9
	eu := edge("eu", 60, 100)
	eu.Region = "eu"
	for _, c := range []struct {
		name    string
		nodes   []registry.NodeInfo
		pulling []string
		region  string
		want    []string
	}{
		{"no draining edge, no origin, no mid-tier", []registry.NodeInfo{drain, origin, mid, busy}, nil, "", []string{"busy"}},
		{"least loaded first", []registry.NodeInfo{busy, idle}, nil, "", []string{"idle", "busy"}},
		{"ties by CPU", []registry.NodeInfo{hot, idle}, nil, "", []string{"idle", "hot"}},
		{"pulling before less loaded", []registry.NodeInfo{idle, busy}, []string{"busy"}, "", []string{"busy", "idle"}},
		{"region before pulling", []registry.NodeInfo{busy, eu}, []string{"busy"}, "eu", []string{"eu", "busy"}},
		{"an unknown region changes nothing", []registry.NodeInfo{busy, idle}, nil, "mars", []string{"idle", "busy"}},
		{"over a ceiling: last, whatever else", []registry.NodeInfo{full, egressFull, busy}, []string{"full"}, "", []string{"busy", "full", "egress-full"}},
		{"only over ceilings: still listed, least loaded first", []registry.NodeInfo{egressFull, full}, nil, "", []string{"full", "egress-full"}},
		{"nothing to offer", []registry.NodeInfo{drain, origin}, nil, "", []string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pulling := map[string]bool{}
			for _, p := range c.pulling {
				pulling[p] = true
			}
			if got := ids(Rank(c.nodes, pulling, c.region, MaxEdges)); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
	many := make([]registry.NodeInfo, 20)
	for i := range many {
		many[i] = edge(string(rune('a'+i)), i, 100)
	}
	if got := Rank(many, nil, "", MaxEdges); len(got) != MaxEdges || got[0].ID != "a" {
		t.Errorf("20 edges: %v", ids(got))
	}
}
