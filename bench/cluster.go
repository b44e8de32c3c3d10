package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The cluster run (`quiccast bench -cluster`, `go tool task
// bench-cluster`): issue 14's measured cluster on one machine. A Redis
// Cluster of RedisMasters masters, Origins origins, Mids mid-tier edges
// and Edges edges, each its own process; the first MidEdges edges pull
// through a mid-tier (-parent-first, round the mids), the others straight
// from the origins; every node reports to Redis. Broadcasts are published
// round the origins; every viewer asks the first origin's router (GET
// /edge) where to watch and uses the first edge it names, with the
// transports in turn (ws, wt, hls). Each step of Steps runs on the same
// cluster; the report gives per step what Redis, the relay and the
// origins did during the measured window.

// ClusterConfig is one cluster run.
type ClusterConfig struct {
	RedisMasters, Origins, Mids, Edges, MidEdges int
	Steps                                        []ClusterStep
	Bitrate                                      int64
	Duration                                     time.Duration
	Transport                                    string
	// EdgeFlags are added to every edge's and mid-tier's command line.
	EdgeFlags string
}

// ClusterStep is one load on the cluster.
type ClusterStep struct{ Broadcasts, Viewers int }

// ParseSteps reads "100x3000,200x3000" (broadcasts x viewers).
func ParseSteps(s string) ([]ClusterStep, error) {
	var out []ClusterStep
	for _, f := range strings.Split(s, ",") {
		b, v, ok := strings.Cut(strings.TrimSpace(f), "x")
		nb, err1 := strconv.Atoi(b)
		nv, err2 := strconv.Atoi(v)
		if !ok || err1 != nil || err2 != nil || nb <= 0 || nv <= 0 || nb > 10000 || nv > 100000 {
			return nil, fmt.Errorf("bench: step %q: want BROADCASTSxVIEWERS, e.g. 100x3000", f)
		}
		out = append(out, ClusterStep{nb, nv})
	}
	return out, nil
}

// ClusterResult is what one step measured.
type ClusterResult struct {
	Step   ClusterStep
	Report *Report
	// Window is the measured window; RedisOps the commands all masters
	// processed in it.
	Window   time.Duration
	RedisOps float64
	// Per node: relay subscriptions served now, relay bytes sent and CPU
	// seconds in the window.
	Nodes []ClusterNode
	Err   error
	Load  string
}

// ClusterNode is one node's figures in a step.
type ClusterNode struct {
	Name, Tier    string
	Subscriptions float64 // relay subscriptions served at the window's end (origins, mid-tiers)
	RelayMbps     float64 // relay egress in the window (origins, mid-tiers)
	ViewerMbps    float64 // egress to viewers in the window (edges)
	Viewers       float64
	CPU           float64 // CPU seconds in the window
	RSS           float64
}

// RunCluster starts the cluster, runs each step and writes the table.
func RunCluster(ctx context.Context, cc ClusterConfig, bin string, w io.Writer, log *slog.Logger) ([]ClusterResult, error) {
	dir, err := os.MkdirTemp("", "quiccast-cluster-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rc, err := startRedisCluster(ctx, dir, cc.RedisMasters)
	if err != nil {
		return nil, err
	}
	defer rc.stop()
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	common := []string{"-listen", "127.0.0.1:0", "-redis-url", rc.url(), "-cluster-token", token, "-admin-token", token}
	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	tiers := map[string]string{}
	start := func(name, kind, tier string, args ...string) (*node, error) {
		n, err := startNode(ctx, bin, name, kind, nil, append(append(append([]string{}, common...), "-node-id", name), args...)...)
		if err != nil {
			return nil, err
		}
		n.tier = tier
		nodes = append(nodes, n)
		return n, nil
	}
	var origins, mids, edges []*node
	for i := range cc.Origins {
		n, err := start(fmt.Sprintf("origin-%d", i+1), "origin", "origin", "-relay-listen", "127.0.0.1:0", "-rtmp-listen", "", "-max-rate", "1000000000", "-max-messages", "100000")
		if err != nil {
			return nil, err
		}
		origins = append(origins, n)
	}
	ef := strings.Fields(cc.EdgeFlags)
	for i := range cc.Mids {
		n, err := start(fmt.Sprintf("mid-%d", i+1), "edge", "mid-tier", append([]string{"-relay-listen", "127.0.0.1:0", "-max-viewers", "100000", "-no-route"}, ef...)...)
		if err != nil {
			return nil, err
		}
		mids = append(mids, n)
	}
	for i := range cc.Edges {
		args := append([]string{"-max-viewers", "100000"}, ef...)
		tier := "edge, straight from the origins"
		if i < cc.MidEdges && len(mids) > 0 {
			args = append(args, "-parent", mids[i%len(mids)].relay, "-parent-first")
			tier = "edge under a mid-tier"
		}
		n, err := start(fmt.Sprintf("edge-%d", i+1), "edge", tier, args...)
		if err != nil {
			return nil, err
		}
		edges = append(edges, n)
		tiers[n.http] = tier
	}
	router := origins[0].http + "/edge"
	if err := waitRouter(ctx, router, min(cc.Edges, 5)); err != nil {
		return nil, err
	}
	log.Info("bench: cluster up", "redis", rc.url(), "origins", len(origins), "mids", len(mids), "edges", len(edges))
	var results []ClusterResult
	for si, step := range cc.Steps {
		res := ClusterResult{Step: step, Load: loadAvg()}
		var before, after map[string]Metrics
		var opsBefore float64
		var began time.Time
		cfg := Config{
			Edges: urls(edges), Origin: origins[0].http, PublishTo: urls(origins), Router: router, Tiers: tiers,
			Broadcast: fmt.Sprintf("step%d", si+1), Broadcasts: step.Broadcasts, Bitrate: cc.Bitrate, ObjectRate: 30, GroupLength: time.Second,
			Viewers: step.Viewers, Transport: cc.Transport, Ramp: 500, Duration: cc.Duration, Settle: 3 * time.Second,
			AdminToken: token, Logger: log,
			Window: func(begin bool) {
				m := scrapeNodes(ctx, nodes, token)
				ops := rc.ops(ctx)
				if begin {
					before, opsBefore, began = m, ops, time.Now()
					return
				}
				after, res.RedisOps, res.Window = m, ops-opsBefore, time.Since(began)
			},
		}
		log.Info("bench: cluster step", "broadcasts", step.Broadcasts, "viewers", step.Viewers)
		res.Report, res.Err = Run(ctx, cfg)
		if res.Err == nil && after != nil {
			res.Nodes = nodeFigures(nodes, before, after, res.Window)
		}
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	writeCluster(w, cc, results)
	return results, nil
}

func urls(ns []*node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.http
	}
	return out
}

// waitRouter waits until the router names want edges.
func waitRouter(ctx context.Context, router string, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if countEdges(ctx, router) >= want {
			return nil
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return fmt.Errorf("bench: the router did not name %d edges within 30 s", want)
}

// countEdges is how many edges the router names for any broadcast.
func countEdges(ctx context.Context, router string) int {
	req, _ := http.NewRequestWithContext(ctx, "GET", router+"?broadcast=probe", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var a struct{ Edges []json.RawMessage }
	if json.NewDecoder(resp.Body).Decode(&a) != nil {
		return 0
	}
	return len(a.Edges)
}

func scrapeNodes(ctx context.Context, nodes []*node, token string) map[string]Metrics {
	var mu sync.Mutex
	out := map[string]Metrics{}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m, err := Scrape(ctx, n.http, token, nil, nil); err == nil {
				mu.Lock()
				out[n.name] = m
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func nodeFigures(nodes []*node, before, after map[string]Metrics, window time.Duration) []ClusterNode {
	var out []ClusterNode
	s := window.Seconds()
	for _, n := range nodes {
		b, a := before[n.name], after[n.name]
		if a == nil || b == nil {
			continue
		}
		delta := func(k string) float64 { return a[k] - b[k] }
		cn := ClusterNode{Name: n.name, Tier: n.tier, CPU: delta("process_cpu_seconds_total"), RSS: a["process_resident_memory_bytes"]}
		if n.kind == "origin" {
			cn.Subscriptions = a["quiccast_origin_relay_subscriptions"]
			cn.RelayMbps = delta("quiccast_origin_relay_sent_bytes_total") * 8 / s / 1e6
		} else {
			cn.Subscriptions = a["quiccast_edge_relay_subscriptions"]
			cn.RelayMbps = delta("quiccast_edge_relay_sent_bytes_total") * 8 / s / 1e6
			cn.ViewerMbps = (delta("quiccast_edge_sent_bytes_total") + delta("quiccast_edge_webtransport_sent_bytes_total")) * 8 / s / 1e6
			cn.Viewers = a["quiccast_edge_viewers"] // Scrape sums the transports
		}
		out = append(out, cn)
	}
	return out
}

func writeCluster(w io.Writer, cc ClusterConfig, results []ClusterResult) {
	fmt.Fprintf(w, "`quiccast bench -cluster` — %s, %s. Redis Cluster of %d masters, %d origins, %d mid-tier edges, %d edges (%d under a mid-tier); broadcasts of %.1f Mbit/s (30 objects/s, 1 s groups) published round the origins; viewers routed by the first origin's GET /edge, transports %s; each step measured %s after the ramp.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), machineLine(), cc.RedisMasters, cc.Origins, cc.Mids, cc.Edges, min(cc.MidEdges, cc.Edges), float64(cc.Bitrate)/1e6, cc.Transport, cc.Duration)
	fmt.Fprintln(w, "| broadcasts × viewers | receiving | failed / refused | join p50 / p99 | latency p50 / p99 (all) | p99 under a mid-tier / straight | missing, skipped | Redis commands/s (per broadcast, per viewer) | origin relay egress | origin relay subscriptions | mid-tier relay egress / subscriptions | edge CPU (sum) | load average |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(w, "| %d × %d | failed: %v | | | | | | | | | | | %s |\n", r.Step.Broadcasts, r.Step.Viewers, r.Err, r.Load)
			continue
		}
		st := r.Report.Steps[len(r.Report.Steps)-1]
		ops := r.RedisOps / r.Window.Seconds()
		var oMbps, oSubs, mMbps, mSubs, eCPU float64
		for _, n := range r.Nodes {
			switch n.Tier {
			case "origin":
				oMbps += n.RelayMbps
				oSubs += n.Subscriptions
			case "mid-tier":
				mMbps += n.RelayMbps
				mSubs += n.Subscriptions
			default:
				eCPU += n.CPU / r.Window.Seconds()
			}
		}
		tier := func(name string) string {
			if s, ok := r.Report.Tiers[name]; ok && s.Count > 0 {
				return fmt.Sprintf("%.0f ms", s.P99)
			}
			return "–"
		}
		fmt.Fprintf(w, "| %d × %d | %d | %d / %d | %.0f / %.0f ms | %.0f / %.0f ms | %s / %s | %d, %d | %.0f (%.2f, %.3f) | %.1f Mbit/s | %.0f | %.1f Mbit/s / %.0f | %.2f cores | %s |\n",
			r.Step.Broadcasts, r.Step.Viewers, st.Active, st.Failed, st.Refused, r.Report.Join.P50, r.Report.Join.P99,
			st.Latency.P50, st.Latency.P99, tier("edge under a mid-tier"), tier("edge, straight from the origins"), st.Missing, st.Skipped,
			ops, ops/float64(r.Step.Broadcasts), ops/float64(r.Step.Viewers), oMbps, oSubs, mMbps, mSubs, eCPU, r.Load)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Per node, last step (CPU cores over the window, resident memory, relay and viewer egress, viewers):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| node | tier | CPU (cores) | RSS | relay egress | relay subscriptions | viewer egress | viewers |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	if n := len(results); n > 0 && results[n-1].Err == nil {
		r := results[n-1]
		ns := append([]ClusterNode(nil), r.Nodes...)
		sort.Slice(ns, func(i, j int) bool { return ns[i].Name < ns[j].Name })
		for _, c := range ns {
			fmt.Fprintf(w, "| %s | %s | %.2f | %.0f MiB | %.1f Mbit/s | %.0f | %.1f Mbit/s | %.0f |\n",
				c.Name, c.Tier, c.CPU/r.Window.Seconds(), c.RSS/(1<<20), c.RelayMbps, c.Subscriptions, c.ViewerMbps, c.Viewers)
		}
	}
}

// redisCluster is the run's Redis Cluster.
type redisCluster struct {
	addrs []string
	cmds  []*exec.Cmd
}

func (rc *redisCluster) url() string { return "redis-cluster://" + strings.Join(rc.addrs, ",") }

func (rc *redisCluster) stop() {
	for _, c := range rc.cmds {
		c.Process.Kill()
		c.Wait()
	}
}

// ops sums total_commands_processed over the masters.
func (rc *redisCluster) ops(ctx context.Context) float64 {
	total := 0.0
	for _, a := range rc.addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		info, err := c.Info(ctx, "stats").Result()
		c.Close()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, "total_commands_processed:"); ok {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
	}
	return total
}

// startRedisCluster starts masters redis-servers on loopback in dir and
// joins them with redis-cli --cluster create.
func startRedisCluster(ctx context.Context, dir string, masters int) (*redisCluster, error) {
	server, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err1 != nil || err2 != nil {
		return nil, errors.New("bench: -cluster needs redis-server and redis-cli (go tool task deps installs them)")
	}
	rc := &redisCluster{}
	for i := range masters {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			rc.stop()
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		d := filepath.Join(dir, fmt.Sprintf("redis-%d", i))
		os.MkdirAll(d, 0o755)
		cmd := exec.CommandContext(ctx, server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", d, "--save", "", "--appendonly", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		if err := cmd.Start(); err != nil {
			rc.stop()
			return nil, err
		}
		rc.cmds = append(rc.cmds, cmd)
		rc.addrs = append(rc.addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	for _, a := range rc.addrs {
		if err := waitRedis(ctx, a, func(c *redis.Client) bool { return c.Ping(ctx).Err() == nil }); err != nil {
			rc.stop()
			return nil, err
		}
	}
	args := append(append([]string{"--cluster", "create"}, rc.addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		rc.stop()
		return nil, fmt.Errorf("bench: redis-cli --cluster create: %v: %s", err, out)
	}
	for _, a := range rc.addrs {
		if err := waitRedis(ctx, a, func(c *redis.Client) bool {
			info, err := c.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		}); err != nil {
			rc.stop()
			return nil, err
		}
	}
	return rc, nil
}

func waitRedis(ctx context.Context, addr string, ok func(*redis.Client) bool) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ok(c) {
			return nil
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return fmt.Errorf("bench: redis %s not ready in 20 s", addr)
}
