package relay

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/media"
)

// BenchmarkRelayThroughput pushes objects through one relay server to one
// client over loopback QUIC, spread over several broadcasts. An op is one
// 64 KiB object appended on the server side and mirrored on the client
// side. CPU is the whole process's (server and client together) per Gbit
// of object bytes.
func BenchmarkRelayThroughput(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("broadcasts=%d", n), func(b *testing.B) { benchRelay(b, n, 64<<10) })
	}
}

func benchRelay(b *testing.B, broadcasts, size int) {
	ts := startServer(b, ServerConfig{MaxGroupsBehind: 4}, TLSFiles{})
	c := dial(b, ts.addr, ClientConfig{})
	srcs := make([]*source, broadcasts)
	subs := make([]*Subscription, broadcasts)
	for i := range srcs {
		srcs[i] = newSource(b, fmt.Sprintf("b%d", i), 1)
		srcs[i].object(b, true, size)
		ts.add(srcs[i])
		sub, err := c.Subscribe(context.Background(), srcs[i].b.Name, nil, media.New(srcs[i].b.Name, media.Limits{MaxGroups: 4}))
		if err != nil {
			b.Fatal(err)
		}
		subs[i] = sub
	}
	const window = 24 // objects in flight per broadcast
	sent := make([]int64, broadcasts)
	waitFor := func(i int, upto int64) {
		deadline := time.Now().Add(10 * time.Second)
		for subs[i].Objects.Load() < upto {
			if time.Now().After(deadline) {
				b.Fatalf("broadcast %d: mirrored %d of %d objects", i, subs[i].Objects.Load(), upto)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for op := 0; op < b.N; op++ {
		i := op % broadcasts
		keyframe := sent[i]%30 == 29
		if keyframe {
			// Newer groups go first: pushing a new group while the
			// last is still queued would starve it (by design).
			waitFor(i, sent[i])
		}
		srcs[i].object(b, keyframe, size)
		sent[i]++
		if sent[i] > window {
			waitFor(i, sent[i]-window)
		}
	}
	for i := range srcs {
		waitFor(i, sent[i]) // the first object was mirrored with the catalog's group
	}
	el := time.Since(start)
	b.StopTimer()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()).Seconds()
	gbit := float64(b.N) * float64(size) * 8 / 1e9
	b.ReportMetric(gbit/el.Seconds(), "Gbit/s")
	b.ReportMetric(float64(b.N)/el.Seconds(), "objects/s")
	b.ReportMetric(cpu/gbit, "cpu-s/Gbit")
	var resets int64
	for _, s := range subs {
		resets += s.Cut.Load()
	}
	b.ReportMetric(float64(resets), "cut-groups")
	b.ReportMetric(float64(ts.srv.Stats.Resets.Load()), "resets")
}
