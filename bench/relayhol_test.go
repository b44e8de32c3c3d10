package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quiccast/quiccast/bench/netem"
	"github.com/quiccast/quiccast/bench/tcpmux"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

// TestRelayHeadOfLine is issue 10's relay measurement: one origin relay
// server sends the same broadcasts to one subscriber over one QUIC
// connection (a stream per group, the relay as it is) and over one TCP
// connection (the same protocol multiplexed on one byte stream,
// bench/tcpmux), both at once across the same lossy link. A lost packet
// should delay only its own broadcast over QUIC, and every broadcast over
// TCP. Needs root (the emulator). QC_RELAY_HOL_SECONDS lengthens it (default
// 15); QC_RELAY_HOL_NETWORK changes the link (default delay=10ms,loss=1%).
//
//	go test -count=1 -v -run '^TestRelayHeadOfLine$' ./bench
func TestRelayHeadOfLine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the emulator needs root")
	}
	const broadcasts, objectRate, bitrate = 6, 30, 1_000_000
	seconds := 15
	if s, err := strconv.Atoi(os.Getenv("QC_RELAY_HOL_SECONDS")); err == nil && s > 3 {
		seconds = s
	}
	network := "delay=10ms,loss=1%"
	if s := os.Getenv("QC_RELAY_HOL_NETWORK"); s != "" {
		network = s
	}
	link, err := netem.ParseLink(network)
	if err != nil {
		t.Fatal(err)
	}
	e, err := netem.Start(link)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The origin's broadcasts and its relay server, on QUIC and on TCP.
	srcs := map[string]*media.Broadcast{}
	var names []string
	for i := range broadcasts {
		name := fmt.Sprintf("hol/%d", i+1)
		b := media.New(name, media.Limits{MaxGroups: 8})
		cat, err := media.NewCatalog(wire.Catalog{Broadcast: name, Epoch: 1, Tracks: []wire.TrackInfo{{ID: 0, Kind: "video", Codec: "avc1.42E01E", Timescale: 90000}}}, [][]byte{[]byte("init")})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.SetCatalog(cat); err != nil {
			t.Fatal(err)
		}
		srcs[name] = b
		names = append(names, name)
	}
	srv := relay.NewServer(relay.ServerConfig{Node: "origin", Logger: quiet,
		Lookup: func(_ context.Context, name string) (*media.Broadcast, func(), error) {
			if b, ok := srcs[name]; ok {
				return b, func() {}, nil
			}
			return nil, nil, wire.Errorf(wire.CodeNotFound, "no broadcast %q", name)
		}})
	stc, err := relay.ServerTLS(relay.TLSFiles{}, []string{e.AddrA})
	if err != nil {
		t.Fatal(err)
	}
	var ql *quic.Listener
	var tl net.Listener
	if err := e.InA(func() error {
		var err error
		if ql, err = quic.ListenAddr(e.AddrA+":0", stc, relay.ServerQUICConfig()); err != nil {
			return err
		}
		tl, err = net.Listen("tcp", e.AddrA+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ql.Close()
	defer tl.Close()
	go srv.Serve(ctx, ql)
	go func() {
		for {
			nc, err := tl.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(ctx, tcpmux.Server(nc))
		}
	}()

	// The subscriber (an edge), in namespace B, across the link.
	ctc, err := relay.ClientTLS(relay.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := e.ListenPacketB()
	if err != nil {
		t.Fatal(err)
	}
	qt := &quic.Transport{Conn: pc}
	defer qt.Close()
	qconn, err := qt.Dial(ctx, ql.Addr(), ctc, relay.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := e.DialB(ctx, "tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"QUIC, a stream per group", "TCP, one multiplexed connection"}
	conns := []relay.Conn{relay.QUIC(qconn), tcpmux.Client(nc)}
	mirrors := make([][]*media.Broadcast, len(conns))
	for k, conn := range conns {
		c, err := relay.NewClient(ctx, conn, relay.ClientConfig{Node: "edge", Logger: quiet})
		if err != nil {
			t.Fatalf("%s: %v", kinds[k], err)
		}
		defer c.Close()
		for _, name := range names {
			m := media.New(name, media.Limits{MaxGroups: 4 * seconds, MaxAge: time.Hour})
			if _, err := c.Subscribe(ctx, name, nil, m); err != nil {
				t.Fatalf("%s: subscribe %s: %v", kinds[k], name, err)
			}
			mirrors[k] = append(mirrors[k], m)
		}
	}

	// Publish: every broadcast gets an object every 1/30 s, a keyframe
	// (four times the size) at each 1 s group, as bench's synthetic stream;
	// the broadcasts' keyframes are spread over the second, as independent
	// encoders' would be.
	small := bitrate / 8 / objectRate * objectRate / (objectRate + 3)
	tick := time.NewTicker(time.Second / objectRate)
	defer tick.Stop()
	start := time.Now()
	measureFrom := start.Add(2 * time.Second) // after the first groups and slow start
	groups := make([]uint64, broadcasts)
	indexes := make([]uint32, broadcasts)
	for n := 0; n < seconds*objectRate; n++ {
		<-tick.C
		now := time.Now().UnixNano()
		for i, name := range names {
			b, k := srcs[name], n+i*objectRate/broadcasts
			key := k%objectRate == 0
			if key && n > 0 {
				b.Finish(0, groups[i], now)
				groups[i]++
			}
			size := small
			if key {
				indexes[i], size = 0, 4*small
			} else if n > 0 {
				indexes[i]++
			}
			h := wire.Header{Kind: wire.KindObject, Capture: now / 1000, Group: groups[i], Index: indexes[i], DecodeTime: uint64(n)}
			if key || n == 0 {
				h.Flags = wire.FlagKeyframe // each broadcast's first object starts its first group
			}
			if err := b.Append(media.NewObject(h, bytes.Repeat([]byte{byte(n)}, size), now)); err != nil {
				t.Fatal(err)
			}
		}
	}
	sent := time.Now()
	// Wait until both subscribers have the last object of every broadcast.
	deadline := time.Now().Add(10 * time.Second)
	for k := range conns {
		for i, m := range mirrors[k] {
			for !hasObject(m, groups[i], indexes[i]) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s never got group %d object %d", kinds[k], m.Name, groups[i], indexes[i])
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}

	// Latency of every object; an object is delayed when it took more than
	// one round trip longer than the link's one-way delay (a loss cost it).
	oneWay := link.Delay
	late := oneWay + 2*link.Delay + 10*time.Millisecond
	var rows []string
	var together [2]float64
	for k := range conns {
		var lats []time.Duration
		stalls := map[int64]map[int]bool{} // 50 ms slot of arrival → broadcasts delayed in it
		delayed := 0
		for bi, m := range mirrors[k] {
			for _, g := range m.Groups(0) {
				objs, _ := m.Objects(g, 0, nil)
				for _, o := range objs {
					if o.Kind != wire.KindObject || o.Flags&wire.FlagEndOfGroup != 0 || o.Capture*1000 < measureFrom.UnixNano() {
						continue
					}
					lat := time.Duration(o.Arrival - o.Capture*1000)
					lats = append(lats, lat)
					if lat > late {
						delayed++
						slot := o.Arrival / int64(50*time.Millisecond)
						if stalls[slot] == nil {
							stalls[slot] = map[int]bool{}
						}
						stalls[slot][bi] = true
					}
				}
			}
		}
		if len(lats) == 0 {
			t.Fatalf("%s: no object measured", kinds[k])
		}
		slices.Sort(lats)
		q := func(p float64) float64 { return float64(lats[int(p*float64(len(lats)-1))]) / 1e6 }
		var sum, many int
		for _, bs := range stalls {
			sum += len(bs)
			if len(bs) >= broadcasts/2 {
				many++
			}
		}
		mean := 0.0
		if len(stalls) > 0 {
			mean = float64(sum) / float64(len(stalls))
		}
		together[k] = mean
		rows = append(rows, fmt.Sprintf("| %s | %d | %.1f ms | %.1f ms | %.1f ms | %.1f %% | %d | %.2f | %d |",
			kinds[k], len(lats), q(0.5), q(0.99), q(1), 100*float64(delayed)/float64(len(lats)), len(stalls), mean, many))
	}
	load := loadAvg()
	t.Logf("%d broadcasts of %.1f Mbit/s (%d objects/s, keyframe 4×) from one relay server to one subscriber over each connection at once, %s, %.0f s measured; delayed: later than %s; load average %s\n\n"+
		"| connection | objects | latency p50 | p99 | max | objects delayed | 50 ms slots with a delayed object | broadcasts delayed per such slot | slots with ≥ %d of %d broadcasts delayed |\n|---|---|---|---|---|---|---|---|---|\n%s",
		broadcasts, float64(bitrate)/1e6, objectRate, link, sent.Sub(measureFrom).Seconds(), late, load, broadcasts/2, broadcasts, strings.Join(rows, "\n"))
	// The claim: a loss over QUIC delays its own broadcast, over TCP all
	// of them. Held when QUIC's stalls involve fewer broadcasts at once.
	if together[0] >= together[1] {
		t.Fatalf("QUIC stalls involve %.2f broadcasts at once, TCP's %.2f: no head-of-line benefit", together[0], together[1])
	}
}

func hasObject(b *media.Broadcast, group uint64, index uint32) bool {
	for _, g := range b.Groups(0) {
		if g.Seq != group {
			continue
		}
		objs, _ := b.Objects(g, 0, nil)
		for _, o := range objs {
			if o.Index == index && o.Flags&wire.FlagEndOfGroup == 0 {
				return true
			}
		}
	}
	return false
}
