package registry

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// What nodes report about themselves every second (Report), for the
// cluster-wide API. Every key has a TTL of a few reports, so what a dead
// node reported vanishes by itself; the sorted sets hold each member's
// expiry (Unix ms) as its score, so readers skip members whose node died
// before the set's own TTL ran out. A broadcast's keys share the hash tag
// {name}: one hash slot on Redis Cluster.
//
//	qc:nodes                     zset  node id -> expiry
//	qc:node:<id>                 string JSON NodeInfo
//	qc:{name}:viewers            zset  node id -> expiry (edges with viewers of name)
//	qc:{name}:viewers:<id>       string JSON {transport: count}
//	qc:{name}:pub                string JSON PublisherInfo (written by the holder)
//	qc:{name}:bar                string: the name is barred until the key expires
const keyNodes = "qc:nodes"

func keyNode(id string) string            { return "qc:node:" + id }
func keyViewerSet(name string) string     { return "qc:{" + name + "}:viewers" }
func keyViewers(name, node string) string { return "qc:{" + name + "}:viewers:" + node }
func keyPublisher(name string) string     { return "qc:{" + name + "}:pub" }
func keyBar(name string) string           { return "qc:{" + name + "}:bar" }
func expiryScore(t time.Time) string      { return strconv.FormatInt(t.UnixMilli(), 10) }
func liveRange(now time.Time) *redis.ZRangeBy {
	return &redis.ZRangeBy{Min: "(" + expiryScore(now), Max: "+inf"}
}

// NodeInfo is what a node says about itself.
type NodeInfo struct {
	ID      string    `json:"id"`
	Role    string    `json:"role"` // origin, edge
	Version string    `json:"version"`
	URL     string    `json:"url"`             // its public HTTP(S) address
	Relay   string    `json:"relay,omitempty"` // its relay address, if any
	Load    float64   `json:"load"`            // 1-minute load average of its host
	Started time.Time `json:"started"`
	// Viewers and Broadcasts are the node's own counts (an edge's viewers,
	// an origin's broadcasts).
	Viewers    int       `json:"viewers"`
	Broadcasts int       `json:"broadcasts"`
	Reported   time.Time `json:"reported"`
	// CPU is the node's process CPU time over the last report interval,
	// as a fraction of all its host's cores (0..1).
	CPU float64 `json:"cpu"`
	// What the router (shared/route) reads of an edge: its region, whether
	// it is draining (taking no new viewers), its egress to viewers and
	// lower tiers over the last interval (bit/s), and its ceilings (0:
	// none).
	Region       string `json:"region,omitempty"`
	Draining     bool   `json:"draining,omitempty"`
	NoRoute      bool   `json:"noRoute,omitempty"` // a mid-tier: never offered to viewers
	EgressBps    int64  `json:"egressBps,omitempty"`
	MaxViewers   int    `json:"maxViewers,omitempty"`
	MaxEgressBps int64  `json:"maxEgressBps,omitempty"`
}

// PublisherInfo is what the holder of a broadcast says about its
// publisher.
type PublisherInfo struct {
	Protocol string   `json:"protocol"` // websocket, rtmp
	Remote   string   `json:"remote"`
	Codecs   []string `json:"codecs"`
	Width    int      `json:"width,omitempty"`
	Height   int      `json:"height,omitempty"`
	// Bitrate is bits per second received over the last report interval.
	Bitrate int64 `json:"bitrate"`
	// Groups is the number of groups the current publisher sent.
	Groups uint64 `json:"groups"`
}

// Report is one node's report.
type Report struct {
	Node NodeInfo
	// Viewers is, per broadcast, the node's viewers by transport.
	Viewers map[string]map[string]int
	// Publishers is, per broadcast the node holds, its publisher.
	Publishers map[string]PublisherInfo
}

// Report writes rep in one pipeline; its keys live for ttl (say three
// report intervals), so a node that stops reporting vanishes. The node is
// rep.Node.ID, or this registry's NodeID when empty (two nodes in one
// process, as in the demo, share a registry).
func (r *Registry) Report(ctx context.Context, rep Report, ttl time.Duration) error {
	now := time.Now()
	if rep.Node.ID == "" {
		rep.Node.ID = r.o.NodeID
	}
	id := rep.Node.ID
	rep.Node.Reported = now
	node, err := json.Marshal(rep.Node)
	if err != nil {
		return err
	}
	exp := float64(now.Add(ttl).UnixMilli())
	err = r.call(ctx, func(ctx context.Context) error {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, keyNode(id), node, ttl)
			p.ZAdd(ctx, keyNodes, redis.Z{Score: exp, Member: id})
			p.ZRemRangeByScore(ctx, keyNodes, "-inf", expiryScore(now))
			for name, by := range rep.Viewers {
				if checkName(name) != nil {
					continue
				}
				v, _ := json.Marshal(by)
				p.Set(ctx, keyViewers(name, id), v, ttl)
				p.ZAdd(ctx, keyViewerSet(name), redis.Z{Score: exp, Member: id})
				p.ZRemRangeByScore(ctx, keyViewerSet(name), "-inf", expiryScore(now))
				p.PExpire(ctx, keyViewerSet(name), ttl)
			}
			for name, pub := range rep.Publishers {
				if checkName(name) != nil {
					continue
				}
				v, _ := json.Marshal(pub)
				p.Set(ctx, keyPublisher(name), v, ttl)
			}
			return nil
		})
		return err
	})
	return wrap("report", "", err)
}

// Nodes lists the nodes whose last report is still alive, by id.
func (r *Registry) Nodes(ctx context.Context) ([]NodeInfo, error) {
	var ids []string
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		ids, err = r.rdb.ZRangeByScore(ctx, keyNodes, liveRange(time.Now())).Result()
		return err
	})
	if err != nil {
		return nil, wrap("nodes", "", err)
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = keyNode(id)
	}
	vals, err := r.getAll(ctx, keys)
	if err != nil {
		return nil, wrap("nodes", "", err)
	}
	out := make([]NodeInfo, 0, len(vals))
	for _, v := range vals {
		var n NodeInfo
		if v != "" && json.Unmarshal([]byte(v), &n) == nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// getAll GETs keys in one pipeline; a missing key reads "". The keys may
// be in different slots, so no MGET.
func (r *Registry) getAll(ctx context.Context, keys []string) ([]string, error) {
	out := make([]string, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(keys))
	err := r.call(ctx, func(ctx context.Context) error {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.Get(ctx, k)
			}
			return nil
		})
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// Bar refuses new publishers of name, on every origin, for d.
func (r *Registry) Bar(ctx context.Context, name string, d time.Duration) error {
	if err := checkName(name); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	err := r.call(ctx, func(ctx context.Context) error {
		return r.rdb.Set(ctx, keyBar(name), time.Now().Add(d).UnixMilli(), d).Err()
	})
	return wrap("bar", name, err)
}

// Barred returns how much longer name is barred (0: not barred).
func (r *Registry) Barred(ctx context.Context, name string) (time.Duration, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	var left time.Duration
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		left, err = r.rdb.PTTL(ctx, keyBar(name)).Result()
		return err
	})
	if err != nil {
		return 0, wrap("barred", name, err)
	}
	return max(left, 0), nil // -2: no key, -1: no TTL (never written so)
}

// Live is what the reports say about one broadcast.
type Live struct {
	Publisher *PublisherInfo            // nil if its holder reported none
	Viewers   map[string]map[string]int // node -> transport -> viewers
}

// Details returns what the reports say about each of names in two
// pipelines, however many names: the viewer sets and publishers, then
// the viewer counts of the live members.
func (r *Registry) Details(ctx context.Context, names []string) (map[string]Live, error) {
	out := make(map[string]Live, len(names))
	valid := names[:0:0]
	for _, n := range names {
		if checkName(n) == nil {
			valid = append(valid, n)
		}
	}
	if len(valid) == 0 {
		return out, nil
	}
	sets := make([]*redis.StringSliceCmd, len(valid))
	pubs := make([]*redis.StringCmd, len(valid))
	now := liveRange(time.Now())
	err := r.call(ctx, func(ctx context.Context) error {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, n := range valid {
				sets[i] = p.ZRangeByScore(ctx, keyViewerSet(n), now)
				pubs[i] = p.Get(ctx, keyPublisher(n))
			}
			return nil
		})
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		return err
	})
	if err != nil {
		return nil, wrap("details", "", err)
	}
	var keys []string
	var owner []struct{ name, node string }
	for i, n := range valid {
		l := Live{Viewers: map[string]map[string]int{}}
		var p PublisherInfo
		if v := pubs[i].Val(); v != "" && json.Unmarshal([]byte(v), &p) == nil {
			l.Publisher = &p
		}
		out[n] = l
		for _, node := range sets[i].Val() {
			keys = append(keys, keyViewers(n, node))
			owner = append(owner, struct{ name, node string }{n, node})
		}
	}
	vals, err := r.getAll(ctx, keys)
	if err != nil {
		return nil, wrap("details", "", err)
	}
	for i, v := range vals {
		var by map[string]int
		if v != "" && json.Unmarshal([]byte(v), &by) == nil && len(by) > 0 {
			out[owner[i].name].Viewers[owner[i].node] = by
		}
	}
	return out, nil
}
