package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster started for one test: masters ×
// (1 + replicas) redis-servers on loopback, joined with
// `redis-cli --cluster create`.
type RedisCluster struct {
	t     testing.TB
	Nodes []*Redis
	pw    string
	tls   bool
}

// ClusterNodeTimeout is the cluster-node-timeout of StartRedisCluster: a
// master that does not answer for it is failing, and a replica takes over
// its slots.
const ClusterNodeTimeout = 500 * time.Millisecond

// StartRedisCluster starts a cluster of masters masters with replicas
// replicas each (full coverage not required: the slots of the living
// masters keep serving while one fails over) and returns once every node
// sees every slot served.
func StartRedisCluster(t testing.TB, masters, replicas int, opts ...RedisOption) *RedisCluster {
	t.Helper()
	cli := RequireTool(t, "redis-cli")
	c := &RedisCluster{t: t}
	args := []string{"--cluster", "create"}
	probe := &Redis{}
	for _, o := range opts {
		o(probe)
	}
	if probe.password != "" { // a replica authenticates to its master
		opts = append(opts, RedisArgs("--masterauth", probe.password))
	}
	for i := range masters * (1 + replicas) {
		o := append([]RedisOption{RedisArgs("--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("nodes-%d.conf", i),
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout.Milliseconds())),
			"--cluster-require-full-coverage", "no", "--cluster-replica-validity-factor", "0")}, opts...)
		r := StartRedis(t, o...)
		c.Nodes, c.pw, c.tls = append(c.Nodes, r), r.password, r.ca != nil
		args = append(args, r.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if probe.ca != nil {
		cert, key := probe.ca.Issue(t, "redis-cli")
		args = append(args, "--tls", "--cacert", probe.ca.File, "--cert", cert, "--key", key)
	}
	cmd := exec.Command(cli, args...)
	if c.pw != "" {
		cmd.Env = append(cmd.Environ(), "REDISCLI_AUTH="+c.pw)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	WaitFor(t, 30*time.Second, "every cluster node to see all slots served and its replicas in sync", func() bool {
		for _, n := range c.Nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			info, err := n.client().ClusterInfo(ctx).Result()
			repl, rerr := n.Info(ctx, "replication")
			cancel()
			if err != nil || rerr != nil || !strings.Contains(info, "cluster_state:ok") ||
				!strings.Contains(info, "cluster_slots_ok:16384") ||
				!strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", len(c.Nodes))) {
				return false
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return false
			}
		}
		return true
	})
	return c
}

// URL is the redis-cluster:// URL with every node as a seed.
func (c *RedisCluster) URL() string {
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.Addr())
	}
	u := "redis-cluster://"
	if c.tls {
		u = "rediss-cluster://"
	}
	if c.pw != "" {
		u += ":" + c.pw + "@"
	}
	return u + strings.Join(addrs, ",")
}

// MasterOf returns the node that serves key's slot now (as the first
// running node sees it).
func (c *RedisCluster) MasterOf(ctx context.Context, key string) (*Redis, error) {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl := n.client()
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		slots, err := cl.ClusterSlots(ctx).Result()
		if err != nil {
			return nil, err
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				_, port, _ := net.SplitHostPort(s.Nodes[0].Addr)
				for _, m := range c.Nodes {
					if strconv.Itoa(m.port) == port {
						return m, nil
					}
				}
			}
		}
		return nil, fmt.Errorf("no master serves slot %d", slot)
	}
	return nil, fmt.Errorf("no cluster node runs")
}

// client is a plain client of one node (closed when the test ends).
func (r *Redis) client() *redis.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cl == nil {
		r.cl = redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.password, TLSConfig: r.probe,
			DisableIdentity: true, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
		r.t.Cleanup(func() { r.cl.Close() })
	}
	return r.cl
}
