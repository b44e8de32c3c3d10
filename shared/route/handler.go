package route

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/registry"
)

// Path is where nodes serve the router.
const Path = "/edge"

// RegionHeader is the request header a geo-aware load balancer may set
// with the viewer's region; the query's region= wins over it.
const RegionHeader = "X-Quiccast-Region"

// fresh: the node list and a broadcast's pulling edges this young are
// served from memory, so a flood of requests does not reach Redis.
const fresh = time.Second

// maxCached bounds the broadcasts whose pulling edges are kept.
const maxCached = 4096

// Answer is the JSON of GET /edge.
type Answer struct {
	Broadcast string `json:"broadcast"`
	Edges     []Edge `json:"edges"`
}

// Router serves GET /edge from a registry.
type Router struct {
	reg *registry.Registry
	log *slog.Logger

	mu      sync.Mutex // held while the registry is read: one read at a time
	nodesAt time.Time
	nodes   []registry.NodeInfo
	pulls   map[string]pulled
	// sent counts the viewers this router sent to each edge since the
	// reports it holds, so that a join burst within one report interval
	// spreads instead of going all to the edge that was least loaded a
	// second ago; a broadcast's viewers sent somewhere count as pulling.
	sent map[string]int
}

type pulled struct {
	at    time.Time
	nodes map[string]bool
}

// New returns the router on reg (nil: every answer is 503, the node has
// no registry).
func New(reg *registry.Registry, log *slog.Logger) *Router {
	if log == nil {
		log = slog.Default()
	}
	return &Router{reg: reg, log: log.With("component", "route"), pulls: map[string]pulled{}, sent: map[string]int{}}
}

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*") // public: edge URLs only
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "application/json")
	fail := func(status int, msg string) {
		if status == http.StatusServiceUnavailable {
			h.Set("Retry-After", "2")
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	name := r.URL.Query().Get("broadcast")
	if err := media.ValidName(name); err != nil {
		fail(http.StatusBadRequest, "broadcast: "+err.Error())
		return
	}
	region := r.URL.Query().Get("region")
	if region == "" {
		region = r.Header.Get(RegionHeader)
	}
	if len(region) > 64 {
		fail(http.StatusBadRequest, "region: at most 64 bytes")
		return
	}
	if rt.reg == nil {
		fail(http.StatusServiceUnavailable, "this node has no registry to route from (-redis-url)")
		return
	}
	edges, err := rt.rank(r.Context(), name, region)
	if err != nil {
		rt.log.Warn("router: registry unavailable", "err", err)
		fail(http.StatusServiceUnavailable, "registry unavailable; retry shortly")
		return
	}
	if len(edges) == 0 {
		fail(http.StatusServiceUnavailable, "no edge is taking viewers now; retry shortly")
		return
	}
	json.NewEncoder(w).Encode(Answer{Broadcast: name, Edges: edges})
}

// rank reads the live nodes and the edges with viewers of name (from
// memory when they are fresh), ranks them with the viewers sent since
// counted in, and counts the viewer it sends to the first.
func (rt *Router) rank(ctx context.Context, name, region string) ([]Edge, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	now := time.Now()
	if now.Sub(rt.nodesAt) >= fresh {
		nodes, err := rt.reg.Nodes(ctx)
		if err != nil {
			return nil, err
		}
		rt.nodes, rt.nodesAt = nodes, now
		clear(rt.sent)
	}
	p, ok := rt.pulls[name]
	if !ok || now.Sub(p.at) >= fresh {
		live, err := rt.reg.Details(ctx, []string{name})
		if err != nil {
			return nil, err
		}
		p = pulled{at: now, nodes: map[string]bool{}}
		for node := range live[name].Viewers {
			p.nodes[node] = true
		}
		if len(rt.pulls) >= maxCached {
			clear(rt.pulls)
		}
		rt.pulls[name] = p
	}
	nodes := rt.nodes
	if len(rt.sent) > 0 {
		nodes = slices.Clone(nodes)
		for i := range nodes {
			nodes[i].Viewers += rt.sent[nodes[i].ID]
		}
	}
	edges := Rank(nodes, p.nodes, region, MaxEdges)
	if len(edges) > 0 && len(rt.sent) < maxCached {
		rt.sent[edges[0].ID]++
		p.nodes[edges[0].ID] = true // its next viewers follow it there
	}
	return edges, nil
}
