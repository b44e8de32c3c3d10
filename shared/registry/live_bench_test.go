package registry

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quiccast/quiccast/shared/testenv"
)

// BenchmarkReport is one edge's per-second report with 100 watched
// broadcasts on a real redis-server: Report (one pipeline) against the
// straightforward way (the same commands, one round trip each).
//
//	go test -run '^$' -bench BenchmarkReport -benchtime 200x ./shared/registry/
func BenchmarkReport(b *testing.B) {
	srv := testenv.StartRedis(b)
	r, err := Open(b.Context(), Options{URL: srv.URL(), NodeID: "edge-1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	rep := Report{Node: NodeInfo{Role: "edge", URL: "http://e:8080"}, Viewers: map[string]map[string]int{}}
	for i := range 100 {
		rep.Viewers[fmt.Sprintf("show/%d", i)] = map[string]int{"ws": 40, "wt": 10}
	}
	const ttl = 3 * time.Second
	b.Run("pipeline", func(b *testing.B) {
		for b.Loop() {
			if err := r.Report(b.Context(), rep, ttl); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("per-command", func(b *testing.B) {
		ctx, c := b.Context(), r.rdb
		for b.Loop() {
			now := time.Now()
			exp := float64(now.Add(ttl).UnixMilli())
			node, _ := json.Marshal(rep.Node)
			must := func(err error) {
				if err != nil {
					b.Fatal(err)
				}
			}
			must(c.Set(ctx, keyNode("edge-1"), node, ttl).Err())
			must(c.ZAdd(ctx, keyNodes, redis.Z{Score: exp, Member: "edge-1"}).Err())
			must(c.ZRemRangeByScore(ctx, keyNodes, "-inf", expiryScore(now)).Err())
			for name, by := range rep.Viewers {
				v, _ := json.Marshal(by)
				must(c.Set(ctx, keyViewers(name, "edge-1"), v, ttl).Err())
				must(c.ZAdd(ctx, keyViewerSet(name), redis.Z{Score: exp, Member: "edge-1"}).Err())
				must(c.ZRemRangeByScore(ctx, keyViewerSet(name), "-inf", expiryScore(now)).Err())
				must(c.PExpire(ctx, keyViewerSet(name), ttl).Err())
			}
		}
	})
}

// BenchmarkDetails is the API's list of 100 broadcasts watched on 4
// edges, on a real redis-server: Details (two pipelines) against the
// straightforward way (per broadcast: its viewer set, its publisher, then
// each edge's counts, one round trip each).
//
//	go test -run '^$' -bench BenchmarkDetails -benchtime 100x ./shared/registry/
func BenchmarkDetails(b *testing.B) {
	srv := testenv.StartRedis(b)
	ctx := b.Context()
	var names []string
	for i := range 100 {
		names = append(names, fmt.Sprintf("show/%d", i))
	}
	var r *Registry
	for e := range 4 {
		reg, err := Open(ctx, Options{URL: srv.URL(), NodeID: fmt.Sprintf("edge-%d", e), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer reg.Close()
		rep := Report{Viewers: map[string]map[string]int{}, Publishers: map[string]PublisherInfo{}}
		for _, n := range names {
			rep.Viewers[n] = map[string]int{"ws": 40, "wt": 10}
			rep.Publishers[n] = PublisherInfo{Protocol: "rtmp", Codecs: []string{"avc1.64001f"}}
		}
		if err := reg.Report(ctx, rep, time.Minute); err != nil {
			b.Fatal(err)
		}
		r = reg
	}
	b.Run("two-pipelines", func(b *testing.B) {
		for b.Loop() {
			d, err := r.Details(ctx, names)
			if err != nil || len(d["show/7"].Viewers) != 4 {
				b.Fatal(d["show/7"], err)
			}
		}
	})
	b.Run("per-broadcast", func(b *testing.B) {
		c := r.rdb
		for b.Loop() {
			for _, n := range names {
				nodes, err := c.ZRangeByScore(ctx, keyViewerSet(n), liveRange(time.Now())).Result()
				if err != nil || len(nodes) != 4 {
					b.Fatal(nodes, err)
				}
				c.Get(ctx, keyPublisher(n))
				for _, node := range nodes {
					c.Get(ctx, keyViewers(n, node))
				}
			}
		}
	})
}
