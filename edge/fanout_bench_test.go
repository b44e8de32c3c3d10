package edge

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// BenchmarkFanout1000 measures delivering one object to 1,000 WebSocket
// viewers on loopback: an op is one 8 KiB object (a 2 Mbit/s, 30 objects/s
// broadcast's typical chunk) appended and then read in full by every
// viewer. allocs/op are the process's allocations per object, server and
// clients together (the clients read into fixed buffers and allocate
// nothing per object).
func BenchmarkFanout1000(b *testing.B) { benchFanout(b, 1000, 8<<10) }

func benchFanout(b *testing.B, viewers, size int) {
	src := newFakeSource()
	f := src.add(&testing.T{}, "bench")
	f.object(b, true, size)
	n, err := New(Config{Listen: "127.0.0.1:0", Source: src, Logger: (&testenv.Logs{}).Logger(),
		MaxLag: time.Hour, MaxViewers: viewers + 1})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go n.Run(ctx)
	defer func() { cancel(); n.Close() }()

	var got atomic.Int64  // bytes received by all viewers
	var want atomic.Int64 // bytes all viewers must have received
	arrived := make(chan struct{}, 1)
	var wg sync.WaitGroup
	conns := make([]net.Conn, viewers)
	for i := range viewers {
		c, err := rawViewer(n.Addr().String(), "bench")
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				k, err := c.Read(buf)
				if k > 0 && got.Add(int64(k)) >= want.Load() {
					select {
					case arrived <- struct{}{}:
					default:
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	cat := f.b.Catalog()
	first := f.b.Latest(0)
	objs, _ := f.b.Objects(first, 0, nil)
	perViewer := int64(len(cat.WebSocketMessage()) + len(cat.Inits[0].WebSocketMessage()) + len(objs[0].WebSocketMessage()))
	wait := func(target int64) {
		want.Store(target)
		for got.Load() < target {
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				b.Fatalf("viewers got %d of %d bytes", got.Load(), target)
			}
		}
	}
	wait(perViewer * int64(viewers))
	total := perViewer * int64(viewers)

	b.ReportAllocs()
	b.SetBytes(int64(size * viewers))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		keyframe := (i+1)%30 == 0
		f.object(b, keyframe, size)
		g := f.b.Latest(0)
		objs, _ := f.b.Objects(g, 0, nil)
		if keyframe { // the end-of-group marker of the previous group goes out too
			prev := f.b.Groups(0)
			pg := prev[len(prev)-2]
			po, _ := f.b.Objects(pg, 0, nil)
			total += int64(len(po[len(po)-1].WebSocketMessage())) * int64(viewers)
		}
		total += int64(len(objs[len(objs)-1].WebSocketMessage())) * int64(viewers)
		wait(total)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(viewers)/el.Seconds(), "deliveries/s")
	b.ReportMetric(el.Seconds()/float64(b.N)/float64(viewers)*1e9, "ns/delivery")
}

// rawViewer opens a viewer WebSocket and returns the bare connection, past
// the handshake, so the benchmark's readers allocate nothing.
func rawViewer(addr, name string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "GET /ws/%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", name, addr)
	br := bufio.NewReaderSize(c, 64)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, fmt.Errorf("handshake: %s", resp.Status)
	}
	if br.Buffered() > 0 { // the 64-byte reader may hold the first frame's start
		return &prefixConn{Conn: c, pre: must(br.Peek(br.Buffered()))}, nil
	}
	return c, nil
}

func must(b []byte, _ error) []byte { return append([]byte(nil), b...) }

type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		k := copy(b, p.pre)
		p.pre = p.pre[k:]
		return k, nil
	}
	return p.Conn.Read(b)
}

var _ = wire.HeaderLen
var _ = media.ErrClosed
