package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/quiccast/quiccast/bench"
	"github.com/quiccast/quiccast/edge"
	"github.com/quiccast/quiccast/origin"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/publish"
)

func runOrigin(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg origin.Config
	var lf logFlags
	s := config.New("origin", "An origin accepts broadcasts (WebSocket ingest at /publish/{broadcast}, fragmented MP4; RTMP at rtmp://HOST:1935/live/{broadcast} from OBS or ffmpeg), records them in Redis and serves them to edges over the QUIC relay.")
	cfg.Flags(s)
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	n, err := origin.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

func runEdge(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg edge.Config
	var lf logFlags
	s := config.New("edge", "An edge delivers broadcasts to viewers (WebTransport at /wt/{broadcast} over HTTP/3, WebSocket at /ws/{broadcast}, LL-HLS at /hls/{broadcast}/index.m3u8, the player at /watch/{broadcast}), pulling each once over the QUIC relay from its origin (found in Redis) or a parent.")
	cfg.Flags(s)
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	n, err := edge.New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

func runPublish(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg publish.Config
	var lf logFlags
	s := config.New("publish", "Publish runs ffmpeg (a file in a loop, or a test pattern) to fragmented MP4 and streams it to an origin's /publish/{broadcast}, reconnecting with backoff.")
	cfg.Flags(s)
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	return publish.Run(ctx, cfg)
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg bench.Config
	var lf logFlags
	var edges, out string
	s := config.New("bench", "Bench publishes a broadcast and watches it with many viewers, reporting join time, per-object latency percentiles, losses and each node's CPU per delivered Gbit and memory per viewer. Every run stops by itself.")
	cfg.Flags(s, &edges)
	s.String(&out, "out", "", "directory for report.txt, report.json and report.html; empty prints the summary only")
	var standard, lossSet, shedSet, tlsSet, naiveSet, cluster bool
	var naiveRuns int
	var clusterSteps string
	cc := bench.ClusterConfig{}
	var results, only, shedCounts string
	var shedRuns int
	s.Bool(&standard, "standard", false, "run the standard set (bench/RESULTS.md's scenarios) and write each report under -out (default bench/results)")
	s.Bool(&lossSet, "loss-set", false, "run the loss set (2 % and 5 % loss, a bandwidth drop; each over ws, then wt) behind the emulator (root) and print the side-by-side table; reports under -out (default bench/results/loss-set)")
	s.Bool(&shedSet, "shed-set", false, "run the shed set: -runs runs of WebTransport viewers at each of -viewers-list, every viewer dialling within one second, on one -local edge; prints the table; reports under -out (default bench/results/shed-set)")
	s.Bool(&tlsSet, "tls-set", false, "run the TLS set: ws://, wss://, wss:// with the edge's '-ws-writer goroutines' (the control) and WebTransport at each of -viewers-list, on one -local edge; prints the table (and writes it into -results); reports under -out (default bench/results/tls-set)")
	s.Bool(&naiveSet, "naive-set", false, "run the naive set: at each of -viewers-list, -naive-runs runs each of the edge (WebTransport, every session admitted) and the naive webtransport-go server (-server naive) in turn, on one -local node; prints the table with the ratio of medians (and writes it into -results); reports under -out (default bench/results/naive-set)")
	s.Int(&naiveRuns, "naive-runs", 2, "with -naive-set: runs of each server at each viewer count")
	s.Bool(&cluster, "cluster", false, "start a cluster here (a Redis Cluster, origins, mid-tier edges, edges; each a process) and run -cluster-steps on it with routed viewers; prints the table")
	s.String(&clusterSteps, "cluster-steps", "100x3000", "with -cluster: loads to run in turn, BROADCASTSxVIEWERS, comma-separated")
	s.Int(&cc.RedisMasters, "cluster-redis", 3, "with -cluster: Redis Cluster masters")
	s.Int(&cc.Origins, "cluster-origins", 2, "with -cluster: origins")
	s.Int(&cc.Mids, "cluster-mids", 2, "with -cluster: mid-tier edges")
	s.Int(&cc.Edges, "cluster-edges", 6, "with -cluster: edges viewers use")
	s.Int(&cc.MidEdges, "cluster-mid-edges", 4, "with -cluster: how many of the edges pull through a mid-tier (the rest pull from the origins)")
	s.Int(&shedRuns, "runs", 8, "with -shed-set: runs at each viewer count")
	s.String(&shedCounts, "viewers-list", "", "with -shed-set, -tls-set or -naive-set: the viewer counts, comma-separated (default 500,1000 for -shed-set, 250,1000 for -tls-set, 250,500,1000 for -naive-set)")
	s.String(&results, "results", "", "with -standard, -loss-set, -tls-set or -naive-set: the results file whose section is rewritten")
	s.String(&only, "only", "", "with -standard or -loss-set: comma-separated scenario names to run")
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	// The sets start their nodes from this very binary.
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	if cluster {
		if cc.Steps, err = bench.ParseSteps(clusterSteps); err != nil {
			return err
		}
		if cc.RedisMasters < 3 || cc.Origins < 1 || cc.Edges < 1 || cc.Mids < 0 || cc.Origins+cc.Mids+cc.Edges > 64 {
			return fmt.Errorf("bench: -cluster: want at least 3 Redis masters, 1 origin, 1 edge, at most 64 nodes")
		}
		cc.Bitrate, cc.Duration, cc.Transport, cc.EdgeFlags = cfg.Bitrate, cfg.Duration, cfg.Transport, cfg.EdgeFlags
		_, err = bench.RunCluster(ctx, cc, bin, stdout, log)
		return err
	}
	if naiveSet {
		if out == "" {
			out = "bench/results/naive-set"
		}
		if shedCounts == "" {
			shedCounts = "250,500,1000"
		}
		counts, err := viewerCounts(shedCounts)
		if err != nil {
			return err
		}
		if naiveRuns <= 0 || naiveRuns > 100 {
			return fmt.Errorf("bench: -naive-runs %d: want 1 to 100", naiveRuns)
		}
		return bench.RunNaiveSet(ctx, cfg, bin, out, results, counts, naiveRuns, stdout, log)
	}
	if tlsSet {
		if out == "" {
			out = "bench/results/tls-set"
		}
		if shedCounts == "" {
			shedCounts = "250,1000"
		}
		counts, err := viewerCounts(shedCounts)
		if err != nil {
			return err
		}
		return bench.RunTLSSet(ctx, cfg, bin, out, results, counts, stdout, log)
	}
	if shedSet {
		if out == "" {
			out = "bench/results/shed-set"
		}
		if shedCounts == "" {
			shedCounts = "500,1000"
		}
		counts, err := viewerCounts(shedCounts)
		if err != nil {
			return err
		}
		if shedRuns <= 0 || shedRuns > 100 {
			return fmt.Errorf("bench: -runs %d: want 1 to 100", shedRuns)
		}
		return bench.RunShedSet(ctx, cfg, bin, out, counts, shedRuns, stdout, log)
	}
	if lossSet {
		if out == "" {
			out = "bench/results/loss-set"
		}
		var names []string
		if only != "" {
			names = strings.Split(only, ",")
		}
		return bench.RunLossSet(ctx, bin, out, results, names, log)
	}
	if standard {
		if out == "" {
			out = "bench/results"
		}
		var names []string
		if only != "" {
			names = strings.Split(only, ",")
		}
		return bench.RunStandard(ctx, bin, out, results, names, log)
	}
	for _, e := range strings.Split(edges, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.Edges = append(cfg.Edges, e)
		}
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.WriteText(stdout)
	if out == "" {
		return nil
	}
	return rep.Save(out)
}

// viewerCounts parses -viewers-list.
func viewerCounts(list string) ([]int, error) {
	var counts []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bench: -viewers-list %q: want positive numbers, comma-separated", list)
		}
		counts = append(counts, n)
	}
	return counts, nil
}
