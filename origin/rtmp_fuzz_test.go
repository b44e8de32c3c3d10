package origin

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// replayConn is a publisher's connection that sends recorded bytes and
// swallows what the origin answers.
type replayConn struct {
	r *bytes.Reader
}

func (c *replayConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *replayConn) Close() error                { return nil }
func (c *replayConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1935}
}
func (c *replayConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *replayConn) SetDeadline(t time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(t time.Time) error { return nil }

var (
	fuzzOnce sync.Once
	fuzzNode *Node
)

// FuzzRTMPIngest feeds arbitrary client bytes (handshake, commands, FLV
// audio and video messages) through the whole RTMP ingest path: gortmplib,
// the remuxer, the CMAF validation and the session. It must never crash or
// hang, and whatever reaches the cache must be CMAF that parses against
// its catalog's init segment. Seeds: testdata/fuzz/FuzzRTMPIngest (a real
// ffmpeg publisher, recorded by TestRecordRTMPFuzzSeed).
func FuzzRTMPIngest(f *testing.F) {
	fuzzOnce.Do(func() {
		n, err := New(Config{Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0", Grace: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			f.Fatal(err)
		}
		fuzzNode = n
	})
	n := fuzzNode
	f.Fuzz(func(t *testing.T, data []byte) { fuzzRTMPIngest(t, n, data) })
}

// fuzzRTMPIngest is one execution of FuzzRTMPIngest.
func fuzzRTMPIngest(t testing.TB, n *Node, data []byte) {
	{
		c := &rtmpConn{
			n:      n,
			nc:     &replayConn{r: bytes.NewReader(data)},
			remote: "fuzz",
			log:    n.log,
		}
		c.rw = newIngestConn(c.nc, time.Second, 1<<30)
		err := c.run()
		if err == nil && c.sess == nil {
			t.Fatal("no session and no error")
		}
		if err != nil && wire.CodeOf(err) == wire.CodeInternal {
			t.Fatalf("uncoded error: %v", err)
		}
		if c.sess == nil {
			return
		}
		b := c.sess.Broadcast()
		cat := b.Catalog()
		if cat == nil {
			return
		}
		in, err := cmaf.ParseInit(cat.Inits[0].Payload())
		if err != nil {
			t.Fatalf("cached init does not parse: %v", err)
		}
		for _, g := range b.Groups(0) {
			objs, _ := b.Objects(g, 0, nil)
			for _, o := range objs {
				if len(o.Payload()) == 0 {
					continue
				}
				if _, err := in.ParseChunk(o.Payload()); err != nil && g.Catalog == cat {
					t.Fatalf("cached object %d/%d does not parse: %v", o.Group, o.Index, err)
				}
			}
		}
	}
}

// recorder is a TCP proxy that records what the client sends.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

// TestRecordRTMPFuzzSeed records a real ffmpeg RTMP publisher's bytes into
// the fuzz seed corpus. It runs only with QC_WRITE_FUZZ_SEEDS=1.
func TestRecordRTMPFuzzSeed(t *testing.T) {
	if os.Getenv("QC_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set QC_WRITE_FUZZ_SEEDS=1 to record the seed corpus")
	}
	n, _ := startRTMPOrigin(t, Config{})
	for _, ca := range []struct {
		name string
		args []string
	}{
		{"ffmpeg-h264-aac", []string{"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10", "-s", "96x64", "-r", "10", "-b:v", "30k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "16k", "-ar", "22050", "-ac", "1"}},
		{"ffmpeg-h264-only", []string{"-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10", "-s", "96x64", "-r", "10", "-b:v", "30k", "-pix_fmt", "yuv420p"}},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		go func() {
			cc, err := ln.Accept()
			if err != nil {
				return
			}
			defer cc.Close()
			sc, err := net.Dial("tcp", n.RTMPAddr().String())
			if err != nil {
				return
			}
			defer sc.Close()
			go io.Copy(cc, sc)
			io.Copy(io.MultiWriter(sc, rec), cc)
		}()
		ff := startFFmpeg(t, fmt.Sprintf("rtmp://%s/live/fuzz", ln.Addr()), 3, ca.args...)
		if err, stderr := ff.wait(t, 20*time.Second); err != nil {
			t.Fatalf("ffmpeg: %v %s", err, stderr)
		}
		ln.Close()
		testenv.WaitFor(t, 2*time.Second, "the recording", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.buf.Len() > 0 })
		rec.mu.Lock()
		data := bytes.Clone(rec.buf.Bytes())
		rec.mu.Unlock()
		dir := filepath.Join("testdata", "fuzz", "FuzzRTMPIngest")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ca.name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", ca.name, len(data))
	}
}

// TestRTMPFuzzSeedsReachTheCache makes sure the recorded seeds go all the
// way through: a catalog and cached objects, so the fuzzer starts deep.
func TestRTMPFuzzSeedsReachTheCache(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzRTMPIngest", "ffmpeg-*"))
	if len(files) == 0 {
		t.Fatal("no recorded seeds")
	}
	n, _ := startOrigin(t, Config{})
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		q := strings.TrimSuffix(strings.TrimPrefix(string(raw), "go test fuzz v1\n[]byte("), ")\n")
		data, err := strconv.Unquote(q)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		c := &rtmpConn{n: n, nc: &replayConn{r: bytes.NewReader([]byte(data))}, remote: "seed", log: n.log}
		c.rw = newIngestConn(c.nc, time.Second, 1<<30)
		err = c.run()
		if c.sess == nil {
			t.Fatalf("%s: no session: %v", file, err)
		}
		b := c.sess.Broadcast()
		if b.Catalog() == nil || b.ObjectsAppended() < 10 {
			t.Fatalf("%s: catalog %v, %d objects (err %v)", file, b.Catalog() != nil, b.ObjectsAppended(), err)
		}
		t.Logf("%s: %d objects, ended with %v", filepath.Base(file), b.ObjectsAppended(), err)
	}
}
