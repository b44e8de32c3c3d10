package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// probeTrack is the track of the probe's group-log entries.
const probeTrack = 0xffff

// firstWriteAfter appends a probe entry (track probeTrack) to the group
// log of name through reg every 20 ms until one succeeds, and returns
// when that write was sent: the registry's own path (a Sentinel client
// asking the sentinels again, a Cluster client reloading its slot map).
func firstWriteAfter(ctx context.Context, reg *registry.Registry, name string) (time.Time, error) {
	for {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := reg.LogGroup(cctx, name, registry.Group{Track: probeTrack, Seq: uint64(start.UnixMilli())})
		cancel()
		if err == nil {
			return start, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// failoverFigures is what a Redis failover test measured.
type failoverFigures struct {
	mode            string
	firstWrite      time.Duration // master killed -> first successful write
	maxGap          time.Duration // longest wait between two objects at any viewer
	groupsLogged    int           // group-log entries written while the failover ran
	lastBefore      uint64        // the newest group viewers had before the kill
	firstAfterCheck uint64        // the newest group viewers had at the end
}

func (f failoverFigures) String() string {
	return fmt.Sprintf("FIGURES %s failover: kill->first write %s, longest viewer gap %s, groups %d->%d, %d group-log entries across the failover, none missing",
		f.mode, f.firstWrite.Round(time.Millisecond), f.maxGap.Round(time.Millisecond), f.lastBefore, f.firstAfterCheck, f.groupsLogged)
}

// playThroughRedisFailover runs an origin and an edge (real processes) on
// the registry at url, a 500 ms-GOP ffmpeg broadcast and three WebSocket
// viewers; then calls kill (SIGKILL of the Redis master holding the
// broadcast), waits for writes to succeed again and checks that the
// viewers never waited more than 1 s, group numbers kept rising, and the
// group log on the new master has every group finished around the kill.
func playThroughRedisFailover(t *testing.T, mode, url string, kill func()) failoverFigures {
	testenv.RequireTool(t, "ffmpeg")
	bin := buildBinary(t)
	node := func(kind, id string, extra ...string) *proc {
		args := []string{kind, "-listen", "127.0.0.1:0", "-relay-listen", "127.0.0.1:0", "-node-id", id, "-redis-url", url, "-cluster-token", "t0ken"}
		return startProc(t, bin, id, kind+" listening", append(args, extra...)...)
	}
	origin := node("origin", "origin-a")
	edge := node("edge", "edge-1")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	reg, err := registry.Open(ctx, registry.Options{URL: url, NodeID: "test", Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	const name, gop = "cam/redis", 500 * time.Millisecond
	sent := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	runPublisher(ctx, fmt.Sprintf("ws://%s/publish/%s", origin.field("addr"), name), sent, gop)
	testenv.WaitFor(t, time.Minute, "the broadcast in the registry", func() bool {
		b, err := reg.Lookup(ctx, name)
		return err == nil && b.Origin == "origin-a" && b.Publishing
	})
	var ws []*watcher
	for range 3 {
		ws = append(ws, startWatcher(ctx, &wg, name, fmt.Sprintf("ws://%s/ws/%s", edge.field("addr"), name)))
	}
	testenv.WaitFor(t, time.Minute, "3 groups at every viewer", func() bool {
		for _, w := range ws {
			if w.keyframes() < 3 {
				return false
			}
		}
		return true
	})

	var f failoverFigures
	f.mode = mode
	newest := func() uint64 {
		var g uint64
		for _, w := range ws {
			if hs, _ := w.objectsSince(time.Time{}); len(hs) > 0 {
				g = max(g, hs[len(hs)-1].Group)
			}
		}
		return g
	}
	f.lastBefore = newest()
	killed := time.Now()
	kill()
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	written, err := firstWriteAfter(pctx, reg, name)
	pcancel()
	if err != nil {
		t.Fatalf("no write succeeded within 30 s of the kill: %v", err)
	}
	f.firstWrite = written.Sub(killed)
	t.Logf("%s: master killed; first successful write %s later", mode, f.firstWrite.Round(time.Millisecond))

	// Play on well past the failover: 6 more groups at every viewer.
	testenv.WaitFor(t, time.Minute, "every viewer 6 groups past the kill", func() bool {
		for _, w := range ws {
			hs, _ := w.objectsSince(killed)
			if len(hs) == 0 || hs[len(hs)-1].Group < f.lastBefore+6 {
				return false
			}
		}
		return true
	})
	end := time.Now()
	f.firstAfterCheck = newest()
	for i, w := range ws {
		if _, _, err := w.snapshot(); err != nil {
			t.Errorf("viewer %d disconnected: %v", i, err)
		}
		gap := w.maxGap(killed, end)
		f.maxGap = max(f.maxGap, gap)
		if gap > time.Second {
			t.Errorf("viewer %d waited %s for media during the Redis failover, want at most 1 s", i, gap)
		}
		// Group numbers rise (per track).
		prev := map[uint16]uint64{}
		evs, _, _ := w.snapshot()
		for _, ev := range evs {
			if ev.Control == nil && ev.Header.Kind == wire.KindObject && ev.Header.Flags&wire.FlagKeyframe != 0 {
				if p, ok := prev[ev.Header.Track]; ok && ev.Header.Group <= p {
					t.Errorf("viewer %d: track %d group %d after group %d", i, ev.Header.Track, ev.Header.Group, p)
					break
				}
				prev[ev.Header.Track] = ev.Header.Group
			}
		}
	}

	// The group log on the new master: every group of every track from
	// 2 s before the kill to the newest logged one, no hole. That is
	// what the next origin continues numbering from (LastGroup + 2).
	var gs []registry.Group
	var lastErr error
	defer func() {
		if t.Failed() {
			t.Logf("last group-log read: %d entries, %v", len(gs), lastErr)
		}
	}()
	testenv.WaitFor(t, 20*time.Second, "the group log caught up with the viewers", func() bool {
		gs, lastErr = reg.Groups(ctx, name, 0)
		if lastErr != nil || len(gs) == 0 {
			return false
		}
		var top uint64
		for _, g := range gs {
			if g.Track != probeTrack {
				top = max(top, g.Seq)
			}
		}
		return top+1 >= f.firstAfterCheck
	})
	byTrack := map[uint16][]uint64{}
	for _, g := range gs {
		if g.Track != probeTrack && !g.Start.Before(killed.Add(-2*time.Second)) {
			byTrack[g.Track] = append(byTrack[g.Track], g.Seq)
		}
	}
	if len(byTrack) == 0 {
		t.Fatalf("no group-log entries around the kill (log: %d entries)", len(gs))
	}
	for track, seqs := range byTrack {
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		f.groupsLogged += len(seqs)
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[i-1]+1 {
				t.Errorf("track %d: the group log jumps from group %d to %d across the failover: %v", track, seqs[i-1], seqs[i], seqs)
				break
			}
		}
	}
	if b, err := reg.Lookup(ctx, name); err != nil || b.Origin != "origin-a" {
		t.Errorf("after the failover Lookup = %+v, %v; want origin-a", b, err)
	}
	for _, p := range []*proc{origin, edge} {
		p.mu.Lock()
		for _, l := range p.logs {
			if s := fmt.Sprint(l); strings.Contains(s, "redis-pw") {
				t.Errorf("%s logged the Redis password: %s", p.name, s)
			}
		}
		p.mu.Unlock()
	}
	if !t.Failed() {
		t.Log(f)
	}
	return f
}

// TestSentinelFailover: 1 master + 2 replicas + 3 sentinels; an origin
// and an edge on redis-sentinel:// with a broadcast playing; SIGKILL the
// master → a replica is promoted, writes succeed again, viewers never
// wait over 1 s, group numbers keep rising, no group-log entry is lost.
func TestSentinelFailover(t *testing.T) {
	const pw = "redis-pw-sentinel"
	master := testenv.StartRedis(t, testenv.RedisPassword(pw))
	testenv.StartRedis(t, testenv.RedisReplicaOf(master))
	testenv.StartRedis(t, testenv.RedisReplicaOf(master))
	var ss []*testenv.Sentinel
	var addrs []string
	for range 3 {
		s := testenv.StartSentinel(t, master, "qcmaster", 2)
		ss, addrs = append(ss, s), append(addrs, s.Addr())
	}
	testenv.WaitSentinelSet(t, ss, 2)
	url := "redis-sentinel://:" + pw + "@" + strings.Join(addrs, ",") + "/qcmaster"
	playThroughRedisFailover(t, "sentinel", url, func() {
		master.Stop()
	})
	now, err := ss[0].MasterAddr(context.Background())
	if err != nil || now == master.Addr() {
		t.Errorf("sentinel's master is %s (%v), want a promoted replica", now, err)
	}
}

// TestRedisClusterFailover: a Redis Cluster of 3 masters and 3 replicas;
// an origin and an edge on redis-cluster:// with a broadcast playing;
// SIGKILL the master of the broadcast's hash slot → its replica takes the
// slots over, writes succeed again, viewers never wait over 1 s, group
// numbers keep rising, no group-log entry is lost.
func TestRedisClusterFailover(t *testing.T) {
	cl := testenv.StartRedisCluster(t, 3, 1, testenv.RedisPassword("redis-pw-cluster"))
	key := "qc:bcast:{cam/redis}"
	var killed *testenv.Redis
	playThroughRedisFailover(t, "cluster", cl.URL(), func() {
		var err error
		if killed, err = cl.MasterOf(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		killed.Stop()
	})
	now, err := cl.MasterOf(context.Background(), key)
	if err != nil || now == killed {
		t.Errorf("the slot of %s is served by %v (%v), want the promoted replica", key, now, err)
	}
}
