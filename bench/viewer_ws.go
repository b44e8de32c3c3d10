package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quiccast/quiccast/shared/wire"
)

// Stats are what all viewers of a run record.
type Stats struct {
	Latency     Hist // capture wall-clock to arrival, per object
	Join        Hist // connect to first object
	Second      Hist // latency this second (reset every second)
	Objects     atomic.Int64
	Bytes       atomic.Int64 // payload bytes of objects
	Missing     atomic.Int64 // objects a viewer never got within groups it got
	Skipped     atomic.Int64 // groups a viewer never got
	Disconnects atomic.Int64 // connections that ended before the run did
	Failed      atomic.Int64 // viewers that never connected
	Refused     atomic.Int64 // viewers an edge turned away with 503 (full) after every retry it hinted
	Active      atomic.Int64 // viewers receiving now
	Drop        Hist         // latency of objects that arrived during a bandwidth drop

	dropping atomic.Bool // a bandwidth drop is on (-drop)
	tl       timeline    // largest latency per 50 ms, for the recovery time (-drop)

	tiers  map[string]*Hist // latency per tier (Config.Tiers), fixed before the viewers start
	tierOf sync.Map         // viewer id → its tier's *Hist
}

// record counts the latency of one object that arrived at now.
func (st *Stats) record(shard int, lat time.Duration, now time.Time) {
	st.Latency.Record(shard, lat)
	st.Second.Record(shard, lat)
	if st.dropping.Load() {
		st.Drop.Record(shard, lat)
	}
	st.tl.record(now, lat)
	if st.tiers != nil {
		if h, ok := st.tierOf.Load(shard); ok {
			h.(*Hist).Record(shard, lat)
		}
	}
}

// tracker checks one viewer's object sequence.
type tracker struct {
	st      *Stats
	shard   int
	started time.Time
	joined  bool
	group   uint64
	next    uint32
	any     bool
}

// object records one object header received at now.
func (t *tracker) object(h wire.Header, now time.Time) {
	if h.Flags&wire.FlagEndOfGroup != 0 {
		if h.Group == t.group && h.Index > t.next {
			t.st.Missing.Add(int64(h.Index - t.next))
		}
		t.next = h.Index + 1
		return
	}
	if !t.joined {
		t.joined = true
		t.st.Join.Record(t.shard, now.Sub(t.started))
		t.st.Active.Add(1)
	}
	switch {
	case !t.any:
	case h.Group == t.group:
		if h.Index > t.next {
			t.st.Missing.Add(int64(h.Index - t.next))
		}
	case h.Group > t.group+1:
		t.st.Skipped.Add(int64(h.Group - t.group - 1))
	}
	t.any, t.group, t.next = true, h.Group, h.Index+1
	lat := now.Sub(time.UnixMicro(h.Capture))
	t.st.record(t.shard, lat, now)
	t.st.Objects.Add(1)
	t.st.Bytes.Add(int64(h.Length))
}

// skip records a skip message: the edge moved the viewer ahead.
func (t *tracker) skip(from, to uint64) {
	if to > from {
		t.st.Skipped.Add(int64(to - from))
	}
	t.any = false
}

// Dialer opens TCP connections (in a network namespace, for the emulator).
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// runWSViewer watches one broadcast over the edge's WebSocket until ctx is
// done, reading only frame headers (payloads are skipped, not copied).
func runWSViewer(ctx context.Context, id int, edge, name, token string, st *Stats, nw *network) {
	runWS(ctx, id, edge, name, token, st, nw, false)
}

// runWS is runWSViewer, over TLS (wss://, trusting nw.tls) when secure.
func runWS(ctx context.Context, id int, edge, name, token string, st *Stats, nw *network, secure bool) {
	t := &tracker{st: st, shard: id, started: time.Now()}
	u, err := url.Parse(edge)
	if err != nil {
		st.Failed.Add(1)
		return
	}
	c, err := nw.dial(ctx, "tcp", u.Host)
	if err != nil {
		st.Failed.Add(1)
		return
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.SetDeadline(time.Now()) }()
	if secure {
		tc := tls.Client(c, withServerName(nw.tls, u.Host))
		if err := tc.HandshakeContext(ctx); err != nil {
			st.Failed.Add(1)
			return
		}
		c = tc
	}
	path := "/ws/" + name
	if token != "" {
		path += "?token=" + url.QueryEscape(token)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: cXVpY2Nhc3QgYmVuY2ggIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, u.Host)
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		st.Failed.Add(1)
		return
	}
	err = readWSFrames(br, t)
	if t.joined {
		st.Active.Add(-1)
	}
	if ctx.Err() == nil && !errors.Is(err, errEnded) {
		st.Disconnects.Add(1)
	}
}

var errEnded = errors.New("bench: broadcast ended")

// readWSFrames parses server frames from br: binary frames' first 36
// payload bytes are the object header; the rest is discarded.
func readWSFrames(br *bufio.Reader, t *tracker) error {
	var hdr [14]byte
	var head [wire.HeaderLen]byte
	text := make([]byte, 0, 1024)
	for {
		if _, err := readFull(br, hdr[:2]); err != nil {
			return err
		}
		op := hdr[0] & 0x0f
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := readFull(br, hdr[2:4]); err != nil {
				return err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := readFull(br, hdr[2:10]); err != nil {
				return err
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
		switch op {
		case wire.WSBinary:
			if n < wire.HeaderLen {
				return fmt.Errorf("bench: %d-byte binary frame", n)
			}
			if _, err := readFull(br, head[:]); err != nil {
				return err
			}
			now := time.Now()
			if _, err := br.Discard(int(n - wire.HeaderLen)); err != nil {
				return err
			}
			h, err := wire.ParseHeader(head[:])
			if err != nil {
				return err
			}
			if h.Kind == wire.KindObject {
				t.object(h, now)
			}
		case wire.WSText:
			if n > 1<<20 {
				return fmt.Errorf("bench: %d-byte text frame", n)
			}
			text = append(text[:0], make([]byte, n)...)
			if _, err := readFull(br, text); err != nil {
				return err
			}
			m, err := wire.ParseMessage(text)
			if err != nil {
				return err
			}
			switch m.Type {
			case wire.MsgSkip:
				t.skip(m.From, m.To)
			case wire.MsgEnded:
				return errEnded
			}
		case wire.WSClose:
			p := make([]byte, n)
			if _, err := readFull(br, p); err != nil {
				return err
			}
			if len(p) >= 2 && wire.Code(binary.BigEndian.Uint16(p)) == wire.CodeNormal {
				return errEnded
			}
			if len(p) >= 2 {
				return fmt.Errorf("bench: edge closed with %d %s", binary.BigEndian.Uint16(p), p[2:])
			}
			return errors.New("bench: edge closed")
		default:
			if _, err := br.Discard(int(n)); err != nil {
				return err
			}
		}
	}
}

func readFull(br *bufio.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := br.Read(p[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
