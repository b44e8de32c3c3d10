// Package route sends viewers to an edge: any node answers
// GET /edge?broadcast=NAME[&region=R] with the edges to use, best first,
// from what the edges report to the registry every second (shared/api's
// reporter: viewers, egress, CPU, ceilings, draining, region).
//
// The order (Rank):
//  1. only edges whose report is alive (the registry drops the others
//     after its TTL), that are not draining and that take viewers (not
//     -no-route, a mid-tier);
//  2. edges below every ceiling (-max-viewers, -max-egress) before those at
//     or over one, which are listed last, least loaded first, so that a
//     cluster where every edge is over its routing ceiling still sends
//     viewers somewhere (each edge still enforces its own hard limits);
//  3. within each: the requested region first (the query, else the
//     X-Quiccast-Region header a geo-aware load balancer sets);
//  4. then the edges that already pull the broadcast (they have viewers of
//     it: one more costs no upstream subscription);
//  5. then the least loaded: the larger of viewers/-max-viewers and
//     egress/-max-egress, ties broken by CPU, then by id.
package route

import (
	"cmp"
	"slices"

	"github.com/quiccast/quiccast/shared/registry"
)

// MaxEdges bounds the edges one answer lists.
const MaxEdges = 5

// Edge is one edge in an answer.
type Edge struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Region string `json:"region,omitempty"`
	// Load is the larger of viewers/max-viewers and egress/max-egress.
	Load    float64 `json:"load"`
	Viewers int     `json:"viewers"`
	CPU     float64 `json:"cpu"`
	// Pulling: it already has viewers of the broadcast.
	Pulling bool `json:"pulling"`
	// Overloaded: at or over a ceiling; listed only after every edge
	// below its ceilings.
	Overloaded bool `json:"overloaded"`
}

// load is how full n is, by its ceilings.
func load(n registry.NodeInfo) float64 {
	l := 0.0
	if n.MaxViewers > 0 {
		l = float64(n.Viewers) / float64(n.MaxViewers)
	}
	if n.MaxEgressBps > 0 {
		l = max(l, float64(n.EgressBps)/float64(n.MaxEgressBps))
	}
	return l
}

// overloaded reports whether n is at or over one of its ceilings.
func overloaded(n registry.NodeInfo) bool {
	return n.MaxViewers > 0 && n.Viewers >= n.MaxViewers || n.MaxEgressBps > 0 && n.EgressBps >= n.MaxEgressBps
}

// Rank orders the edges among nodes for a viewer of a broadcast that the
// edges in pulling already pull, from region (may be ""), and returns at
// most limit of them.
func Rank(nodes []registry.NodeInfo, pulling map[string]bool, region string, limit int) []Edge {
	out := make([]Edge, 0, len(nodes))
	for _, n := range nodes {
		if n.Role != "edge" || n.Draining || n.NoRoute || n.URL == "" {
			continue
		}
		out = append(out, Edge{ID: n.ID, URL: n.URL, Region: n.Region, Load: load(n), Viewers: n.Viewers, CPU: n.CPU,
			Pulling: pulling[n.ID], Overloaded: overloaded(n)})
	}
	rank := func(b bool) int {
		if b {
			return 0
		}
		return 1
	}
	slices.SortFunc(out, func(a, b Edge) int {
		if c := cmp.Compare(rank(!a.Overloaded), rank(!b.Overloaded)); c != 0 {
			return c
		}
		if region != "" {
			if c := cmp.Compare(rank(a.Region == region), rank(b.Region == region)); c != 0 {
				return c
			}
		}
		if !a.Overloaded { // over a ceiling, only the load counts
			if c := cmp.Compare(rank(a.Pulling), rank(b.Pulling)); c != 0 {
				return c
			}
		}
		if c := cmp.Compare(a.Load, b.Load); c != 0 {
			return c
		}
		if c := cmp.Compare(a.CPU, b.CPU); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}
