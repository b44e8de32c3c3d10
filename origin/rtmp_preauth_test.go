package origin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// rtmpChunk0 is a type-0 chunk header on chunk stream cs.
func rtmpChunk0(cs byte, typ byte, length int) []byte {
	h := []byte{cs, 0, 0, 0, byte(length >> 16), byte(length >> 8), byte(length), typ, 0, 0, 0, 0}
	return h
}

// rtmpSetChunkSize is a whole Set Chunk Size message.
func rtmpSetChunkSize(v uint32) []byte {
	b := rtmpChunk0(2, 1, 4)
	return binary.BigEndian.AppendUint32(b, v)
}

// heapPeak samples the heap in use until stop is closed and returns the
// highest figure.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// Issue 9, finding 4: connections without a key that set a 10 MiB chunk
// size and send most of a 10 MiB message made the origin hold 10 MiB each
// for the 15 s setup time. Now the message is refused at its header.
func TestRTMPUnauthenticatedBigMessageIsCutAndHeapStaysBounded(t *testing.T) {
	const conns = 20
	n, logs := startRTMPOrigin(t, Config{PublishTokens: "s3cret", RTMPMaxPendingPerIP: 2 * conns})
	metric := func() float64 {
		return max(testenv.Metric(t, n.Registry(), "quiccast_origin_publish_errors_total", "code", fmt.Sprint(uint16(wire.CodeBadRequest))), 0)
	}
	before := metric()
	base := heapInuse()
	stop := make(chan struct{})
	peakc := heapPeak(stop)

	var wg sync.WaitGroup
	var slowest atomic.Int64
	var sent atomic.Int64
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			nc, err := net.Dial("tcp", n.RTMPAddr().String())
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(40 * time.Second))
			if _, _, err := handshake.DoClient(nc, false, false); err != nil {
				errs <- fmt.Errorf("handshake: %w", err)
				return
			}
			const size = 10 << 20
			msg := append(rtmpSetChunkSize(size), rtmpChunk0(4, 9, size-1)...)
			if _, err := nc.Write(msg); err != nil {
				errs <- err
				return
			}
			done := make(chan struct{})
			go func() { // half of the message, until the origin cuts us
				defer close(done)
				buf := make([]byte, 64<<10)
				for total := 0; total < 5<<20; total += len(buf) { // under the rate limit's burst
					k, err := nc.Write(buf)
					sent.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
			io.Copy(io.Discard, nc) // until the origin closes
			slowest.Store(max(slowest.Load(), int64(time.Since(start))))
			nc.Close()
			<-done
		}()
	}
	wg.Wait()
	close(stop)
	peak := <-peakc
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	grew := int64(peak) - int64(base)
	t.Logf("%d connections: heap in use %d MiB before, peak %d MiB (+%d MiB); slowest cut after %v; %d MiB sent by them",
		conns, base>>20, peak>>20, grew>>20, time.Duration(slowest.Load()).Round(time.Millisecond), sent.Load()>>20)
	if grew > 24<<20 {
		t.Errorf("heap grew by %d MiB for %d unauthenticated connections, want under 24 MiB", grew>>20, conns)
	}
	if d := time.Duration(slowest.Load()); d > 4*time.Second {
		t.Errorf("a connection lived %v, want it cut at its oversized header", d)
	}
	testenv.WaitFor(t, 5*time.Second, "every refusal counted", func() bool { return metric() >= before+conns })
	if len(logs.Lines("publish refused", "before publish")) == 0 {
		t.Errorf("refusal not logged with its reason")
	}
}

// rtmpStream is what a real client sends after its handshake, written by
// gortmplib's own writer: commands, chunk size changes, interleaved media
// on several chunk streams with timestamps past the 24-bit field.
func rtmpStream(t testing.TB, chunkSize uint32, bigBeforePublish bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := message.NewWriter(&buf, bytecounter.NewWriter(io.Discard), false)
	write := func(m message.Message) {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	au := func(cs byte, size int, dts time.Duration) *message.Video {
		return &message.Video{ChunkStreamID: cs, DTS: dts, MessageStreamID: 1, Codec: message.CodecH264, Type: message.VideoTypeAU, AU: bytes.Repeat([]byte{1}, size)}
	}
	write(&message.SetChunkSize{Value: chunkSize})
	write(&message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{amf0.Object{{Key: "app", Value: "live"}, {Key: "tcUrl", Value: "rtmp://h/live"}}}})
	write(&message.CommandAMF0{ChunkStreamID: 3, Name: "createStream", CommandID: 2, Arguments: []any{nil}})
	if bigBeforePublish {
		write(au(6, 100<<10, 0))
	}
	write(&message.CommandAMF0{ChunkStreamID: 8, MessageStreamID: 1, Name: "publish", CommandID: 3, Arguments: []any{nil, "cam?key=k", "live"}})
	for i := range 20 {
		dts := time.Duration(i) * 40 * time.Millisecond
		if i >= 10 {
			dts += 0x1000000 * time.Millisecond // past the 24-bit timestamp
		}
		write(au(6, 200+i*7919, dts))
		write(au(7, 50+i*13, dts))
		if i == 12 {
			write(&message.SetChunkSize{Value: 4096})
		}
	}
	return buf.Bytes()
}

// scanInPieces feeds p to g in pieces of the given sizes, cycling.
func scanInPieces(g *rtmpGuard, p []byte, sizes ...int) error {
	for i := 0; len(p) > 0; i++ {
		k := min(sizes[i%len(sizes)], len(p))
		if err := g.scan(p[:k]); err != nil {
			return err
		}
		p = p[k:]
	}
	return nil
}

func TestRTMPGuardFollowsRealChunkStreams(t *testing.T) {
	for _, cs := range []uint32{128, 1000, 65536, 10 << 20} {
		data := rtmpStream(t, cs, false)
		// gortmplib reads all of it back.
		r := message.NewReader(bytes.NewReader(data), bytecounter.NewReader(bytes.NewReader(nil)), func(uint32) error { return nil })
		msgs := 0
		for {
			if _, err := r.Read(); err != nil {
				if err != io.EOF {
					t.Fatalf("chunk size %d: gortmplib: %v", cs, err)
				}
				break
			}
			msgs++
		}
		for _, sizes := range [][]int{{len(data)}, {1}, {3, 7, 1, 4096}, {13, 128, 2}} {
			g := newRTMPGuard()
			g.handshake = 0
			if err := scanInPieces(g, data, sizes...); err != nil {
				t.Fatalf("chunk size %d, pieces %v: %v", cs, sizes, err)
			}
			if g.preAuth || g.need != 0 || g.body != 0 || g.chunkSize != 4096 {
				t.Fatalf("chunk size %d, pieces %v: guard ends in state preAuth=%v need=%d body=%d chunk=%d", cs, sizes, g.preAuth, g.need, g.body, g.chunkSize)
			}
		}
		if msgs != 45 {
			t.Fatalf("gortmplib read %d messages", msgs)
		}
	}
}

func TestRTMPGuardRefusals(t *testing.T) {
	g := newRTMPGuard()
	g.handshake = 0
	err := scanInPieces(g, rtmpStream(t, 65536, true), 5)
	if err == nil || wire.CodeOf(err) != wire.CodeBadRequest || !strings.Contains(err.Error(), "before publish") {
		t.Fatalf("100 KiB message before publish: %v", err)
	}
	// Messages open on several chunk streams count together.
	g = newRTMPGuard()
	g.handshake = 0
	var two []byte
	two = append(two, rtmpChunk0(4, 9, 40<<10)...)
	two = append(two, make([]byte, 128)...)
	two = append(two, rtmpChunk0(5, 9, 40<<10)...)
	if err := g.scan(two); err == nil {
		t.Fatal("two open messages of 40 KiB before publish accepted")
	}
	// After publish: messages open at once on several chunk streams are
	// bounded too (gortmplib would keep 10 MiB on each of 62).
	g = newRTMPGuard()
	g.handshake = 0
	g.preAuth = false
	var open []byte
	for cs := byte(4); cs < 7; cs++ {
		open = append(open, rtmpChunk0(cs, 9, 9<<20)...)
		open = append(open, make([]byte, 128)...)
	}
	if err := g.scan(open[:2*(12+128)]); err != nil {
		t.Fatalf("two open messages of 9 MiB after publish: %v", err)
	}
	if err := g.scan(open[2*(12+128):]); err == nil || !strings.Contains(err.Error(), "open at once") {
		t.Fatalf("three open messages of 9 MiB after publish: %v", err)
	}
	// A chunk size under 128 is refused (0 made gortmplib grow a list forever).
	for _, v := range []uint32{0, 1, 127} {
		g = newRTMPGuard()
		g.handshake = 0
		if err := g.scan(rtmpSetChunkSize(v)); err == nil || !strings.Contains(err.Error(), "chunk size") {
			t.Fatalf("chunk size %d: %v", v, err)
		}
	}
	// RTMPE (C0 = 6) cannot be followed: refused with a pointer to RTMPS.
	g = newRTMPGuard()
	if err := g.scan([]byte{6}); err == nil || !strings.Contains(err.Error(), "rtmps://") {
		t.Fatalf("RTMPE: %v", err)
	}
}

func TestRTMPPendingConnectionsAreBoundedPerAddressAndInTotal(t *testing.T) {
	n, logs := startRTMPOrigin(t, Config{PublishTokens: "s3cret", RTMPMaxPending: 5, RTMPMaxPendingPerIP: 3, RTMPAuthTimeout: time.Second})
	refused := func(reason string) float64 {
		return max(testenv.Metric(t, n.Registry(), "quiccast_origin_rtmp_refused_total", "reason", reason), 0)
	}
	pending := func() float64 { return testenv.Metric(t, n.Registry(), "quiccast_origin_rtmp_pending") }
	dial := func(local string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		nc, err := d.Dial("tcp", n.RTMPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	// closed says whether the origin closed nc (it sends nothing first).
	closed := func(nc net.Conn, within time.Duration) bool {
		nc.SetReadDeadline(time.Now().Add(within))
		_, err := nc.Read(make([]byte, 1))
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
	var held []net.Conn
	for range 3 {
		held = append(held, dial("127.0.0.1"))
	}
	testenv.WaitFor(t, 3*time.Second, "3 pending", func() bool { return pending() == 3 })
	extra := dial("127.0.0.1")
	if !closed(extra, 3*time.Second) {
		t.Fatal("a 4th pending connection from one address was kept")
	}
	testenv.WaitFor(t, 3*time.Second, "the per-address refusal counted", func() bool { return refused("per_ip") == 1 })
	// Other addresses still get in, up to the total.
	held = append(held, dial("127.0.0.2"), dial("127.0.0.3"))
	testenv.WaitFor(t, 3*time.Second, "5 pending", func() bool { return pending() == 5 })
	if !closed(dial("127.0.0.4"), 3*time.Second) {
		t.Fatal("a connection past the total was kept")
	}
	testenv.WaitFor(t, 3*time.Second, "the total refusal counted", func() bool { return refused("total") == 1 })
	if len(logs.Lines("RTMP connection refused: too many not yet authorised")) == 0 {
		t.Error("refusal not logged")
	}
	// The held ones sent nothing: the auth timeout (1 s) closes them and
	// frees their places.
	start := time.Now()
	for _, nc := range held {
		if !closed(nc, 5*time.Second) {
			t.Fatal("an idle unauthenticated connection outlived -rtmp-auth-timeout")
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle connections closed after %v with -rtmp-auth-timeout 1s", d)
	}
	testenv.WaitFor(t, 3*time.Second, "no pending", func() bool { return pending() == 0 })
	// An authorised publisher leaves the pending count at once.
	c, err := rtmpClient(t, rtmpURL(n, "ok?key=s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c
	testenv.WaitFor(t, 3*time.Second, "the publisher no longer pending", func() bool { return pending() == 0 && len(logs.Lines("RTMP publisher connected")) == 1 })
}

// Issue 9, finding 10: a stream key that is not a valid URL put the
// publish token into the origin's log (url.Parse quotes its input).
func TestRTMPMalformedKeyDoesNotLogTheToken(t *testing.T) {
	n, logs := startRTMPOrigin(t, Config{PublishTokens: "s3cret-token"})
	nc, err := net.Dial("tcp", n.RTMPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := handshake.DoClient(nc, false, false); err != nil {
		t.Fatal(err)
	}
	w := message.NewWriter(nc, bytecounter.NewWriter(io.Discard), false)
	for _, m := range []message.Message{
		&message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{amf0.Object{{Key: "app", Value: "live"}, {Key: "tcUrl", Value: "rtmp://" + n.RTMPAddr().String() + "/live"}}}},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "createStream", CommandID: 2, Arguments: []any{nil}},
		&message.CommandAMF0{ChunkStreamID: 8, MessageStreamID: 1, Name: "publish", CommandID: 3, Arguments: []any{nil, "cam%zz?key=s3cret-token", "live"}},
	} {
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := io.ReadAll(nc)
	testenv.WaitFor(t, 5*time.Second, "the refusal logged", func() bool { return len(logs.Lines("publish refused")) > 0 })
	for _, l := range logs.Lines("") {
		if strings.Contains(l, "s3cret-token") {
			t.Errorf("the token is in the log: %s", l)
		}
	}
	if bytes.Contains(got, []byte("s3cret")) {
		t.Errorf("the token is echoed to the client: %q", got)
	}
}

// The recordings of a real ffmpeg publisher (FuzzRTMPIngest's seeds) pass
// the guard whole, however they are split.
func TestRTMPGuardPassesRecordedFFmpeg(t *testing.T) {
	files, _ := filepath.Glob("testdata/fuzz/FuzzRTMPIngest/ffmpeg-*")
	if len(files) == 0 {
		t.Fatal("no recordings")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, lit, _ := strings.Cut(string(raw), "[]byte(")
		s, err := strconv.Unquote(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(lit), ")")))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, sizes := range [][]int{{4096}, {1}, {1537, 3, 700}} {
			g := newRTMPGuard()
			if err := scanInPieces(g, []byte(s), sizes...); err != nil {
				t.Fatalf("%s in pieces of %v: %v", f, sizes, err)
			}
			if g.preAuth || g.handshake != 0 {
				t.Fatalf("%s: guard still before publish (handshake left %d)", f, g.handshake)
			}
		}
	}
}
