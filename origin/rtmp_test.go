package origin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/handshake"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// startRTMPOrigin runs an origin with RTMP ingest on free loopback ports.
func startRTMPOrigin(t *testing.T, cfg Config) (*Node, *testenv.Logs) {
	t.Helper()
	if cfg.RTMPListen == "" {
		cfg.RTMPListen = "127.0.0.1:0"
	}
	return startOrigin(t, cfg)
}

func rtmpURL(n *Node, path string) string {
	return fmt.Sprintf("rtmp://%s/live/%s", n.RTMPAddr(), path)
}

// ffmpegRTMP is a real encoder publishing a test pattern and a tone.
type ffmpegRTMP struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan error
}

// startFFmpeg publishes to url for seconds (0: until the test ends) with
// extra output options before the URL.
func startFFmpeg(t *testing.T, url string, seconds int, extra ...string) *ffmpegRTMP {
	t.Helper()
	testenv.RequireTool(t, "ffmpeg")
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
	}
	if seconds > 0 {
		args = append(args, "-t", fmt.Sprint(seconds))
	}
	if len(extra) == 0 {
		extra = []string{"-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "15", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"}
	}
	args = append(args, extra...)
	args = append(args, "-f", "flv", url)
	f := &ffmpegRTMP{cmd: exec.Command("ffmpeg", args...), done: make(chan error, 1)}
	f.cmd.Stderr = &f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	t.Cleanup(func() {
		f.cmd.Process.Kill()
		<-f.done
	})
	return f
}

// wait returns ffmpeg's exit error and its stderr.
func (f *ffmpegRTMP) wait(t *testing.T, d time.Duration) (error, string) {
	t.Helper()
	select {
	case err := <-f.done:
		f.done <- err
		return err, f.stderr.String()
	case <-time.After(d):
		t.Fatalf("ffmpeg still running after %s", d)
	}
	return nil, ""
}

// groupsOf returns the cached groups of a broadcast with their objects.
func groupsOf(b *media.Broadcast) (gs []*media.Group, objs [][]*media.Object) {
	for _, g := range b.Groups(0) {
		o, _ := b.Objects(g, 0, nil)
		gs = append(gs, g)
		objs = append(objs, o)
	}
	return gs, objs
}

func TestRTMPPublishFromFFmpegBecomesCMAFGroups(t *testing.T) {
	n, logs := startRTMPOrigin(t, Config{PublishTokens: "s3cret"})
	start := time.Now()
	ff := startFFmpeg(t, rtmpURL(n, "cams/one?key=s3cret"), 4)
	if err, stderr := ff.wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, stderr)
	}
	b, ok := n.Lookup("cams/one")
	if !ok {
		t.Fatal("no broadcast")
	}
	cat := b.Catalog()
	if cat == nil {
		t.Fatal("no catalog")
	}
	tr := cat.Tracks[0]
	if tr.Kind != "muxed" || !strings.HasPrefix(tr.Codec, "avc1.") || !strings.HasSuffix(tr.Codec, ",mp4a.40.2") ||
		tr.Width != 320 || tr.Height != 180 || tr.SampleRate != 48000 || tr.Timescale != 90000 {
		t.Fatalf("catalog track %+v", tr)
	}
	if cat.Started < start.Add(-time.Second).UnixMicro() {
		t.Fatalf("catalog started %d, before the test", cat.Started)
	}
	in, err := cmaf.ParseInit(cat.Inits[0].Payload())
	if err != nil {
		t.Fatal(err)
	}
	gs, objs := groupsOf(b)
	if len(gs) < 6 {
		t.Fatalf("%d groups for 4 s with a keyframe every 0.5 s", len(gs))
	}
	frames := 0
	var lastDT uint64
	for i, g := range gs {
		if i > 0 && g.Seq != gs[i-1].Seq+1 {
			t.Fatalf("group %d after %d", g.Seq, gs[i-1].Seq)
		}
		for j, o := range objs[i] {
			if o.Flags&wire.FlagEndOfGroup != 0 {
				if j != len(objs[i])-1 {
					t.Fatalf("end of group %d in the middle", g.Seq)
				}
				continue
			}
			c, err := in.ParseChunk(o.Payload())
			if err != nil {
				t.Fatalf("group %d object %d: %v", g.Seq, j, err)
			}
			if c.Keyframe != (j == 0) || (o.Flags&wire.FlagKeyframe != 0) != (j == 0) {
				t.Fatalf("group %d object %d: keyframe %v, flags %b", g.Seq, j, c.Keyframe, o.Flags)
			}
			if frames > 0 && c.DecodeTime <= lastDT {
				t.Fatalf("decode time %d after %d", c.DecodeTime, lastDT)
			}
			if c.Duration < 2900 || c.Duration > 3100 {
				t.Fatalf("frame duration %d, want about 3000 (30 fps at 90 kHz)", c.Duration)
			}
			capt := time.UnixMicro(o.Capture)
			if capt.Before(start) || capt.After(time.Now()) {
				t.Fatalf("capture %v outside the run", capt)
			}
			lastDT = c.DecodeTime
			frames++
		}
	}
	if frames < 100 {
		t.Fatalf("%d frames cached, want most of 120", frames)
	}
	if len(logs.Lines("publisher left", "cams/one")) == 0 {
		t.Errorf("clean end not logged")
	}
}

// rtmpClient publishes with gortmplib's client; it returns the error of
// the publish handshake (an onStatus error carries the origin's reason).
func rtmpClient(t *testing.T, u string) (*gortmplib.Client, error) {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	c := &gortmplib.Client{URL: pu, Publish: true}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(c.Close)
	return c, nil
}

func TestRTMPBadInputIsRefusedAndOthersContinue(t *testing.T) {
	// The control broadcast is published in-process without a token.
	tokens := auth.FromConfig("s3cret", "", "")
	n, logs := startRTMPOrigin(t, Config{RTMPIdleTimeout: 2 * time.Second, Auth: authFunc(func(ctx context.Context, r auth.Request) error {
		if r.Broadcast == "control" {
			return nil
		}
		return tokens.Authorize(ctx, r)
	})})
	start := time.Now()
	ctrl := startControl(t, n, "control")
	metric := func(code wire.Code) float64 {
		return max(testenv.Metric(t, n.Registry(), "quiccast_origin_publish_errors_total", "code", fmt.Sprint(uint16(code))), 0)
	}

	t.Run("garbage after the handshake", func(t *testing.T) {
		before := metric(wire.CodeBadRequest)
		nc, err := net.Dial("tcp", n.RTMPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := handshake.DoClient(nc, false, false); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		garbage := bytes.Repeat([]byte("\x01this is not an RTMP chunk stream\xff\x00"), 64)
		nc.Write(garbage)
		buf := make([]byte, 4096)
		for { // the origin closes the connection
			if _, err := nc.Read(buf); err != nil {
				break
			}
		}
		testenv.WaitFor(t, 3*time.Second, "the error metric", func() bool { return metric(wire.CodeBadRequest) == before+1 })
		if len(logs.Lines("level=WARN", "publish refused", "RTMP")) == 0 {
			t.Error("refusal not logged")
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		before := metric(wire.CodeUnauthorized)
		_, err := rtmpClient(t, rtmpURL(n, "keyed?key=wrong"))
		if err == nil || !strings.Contains(err.Error(), `quiccast 4001: publish "live/keyed"`) && !strings.Contains(err.Error(), `quiccast 4001: publish "keyed": token not accepted`) {
			t.Fatalf("publish with a wrong key: %v", err)
		}
		testenv.WaitFor(t, 3*time.Second, "the error metric", func() bool { return metric(wire.CodeUnauthorized) == before+1 })
		// ffmpeg, a real encoder, shows the reason.
		ff := startFFmpeg(t, rtmpURL(n, "keyed"), 3)
		err, stderr := ff.wait(t, 15*time.Second)
		if err == nil || !strings.Contains(stderr, `quiccast 4001: publish "keyed" needs a key: rtmp://HOST/live/keyed?key=TOKEN`) {
			t.Fatalf("ffmpeg without a key: %v, stderr %q", err, stderr)
		}
		if _, ok := n.Lookup("keyed"); ok {
			t.Fatal("a refused publisher created a broadcast")
		}
	})

	t.Run("second publisher on the same name", func(t *testing.T) {
		first := startFFmpeg(t, rtmpURL(n, "taken?key=s3cret"), 0)
		testenv.WaitFor(t, 15*time.Second, "the first publisher's groups", func() bool {
			b, ok := n.Lookup("taken")
			return ok && len(b.Groups(0)) >= 2
		})
		before := metric(wire.CodeConflict)
		second := startFFmpeg(t, rtmpURL(n, "taken?key=s3cret"), 3)
		err, stderr := second.wait(t, 15*time.Second)
		if err == nil || !strings.Contains(stderr, `quiccast 4009: broadcast "taken" already has a publisher`) {
			t.Fatalf("second publisher: %v, stderr %q", err, stderr)
		}
		if metric(wire.CodeConflict) != before+1 {
			t.Errorf("conflict not counted")
		}
		// The first one goes on.
		b, _ := n.Lookup("taken")
		seq := b.Latest(0).Seq
		testenv.WaitFor(t, 5*time.Second, "more groups from the first publisher", func() bool { return b.Latest(0).Seq >= seq+2 })
		select {
		case err := <-first.done:
			t.Fatalf("first publisher ended: %v %s", err, first.stderr.String())
		default:
		}
	})

	t.Run("unsupported codec", func(t *testing.T) {
		before := metric(wire.CodeInvalidMedia)
		ff := startFFmpeg(t, rtmpURL(n, "mp3?key=s3cret"), 5, "-c:v", "libx264", "-preset", "veryfast", "-g", "15", "-pix_fmt", "yuv420p", "-c:a", "libmp3lame", "-ar", "44100")
		err, stderr := ff.wait(t, 15*time.Second)
		if err == nil || !strings.Contains(stderr, "quiccast 4015: unsupported codec: audio MP3 (supported: AAC, Opus)") {
			t.Fatalf("MP3 audio: %v, stderr %q", err, stderr)
		}
		testenv.WaitFor(t, 3*time.Second, "the error metric", func() bool { return metric(wire.CodeInvalidMedia) == before+1 })
	})

	t.Run("stalled publisher", func(t *testing.T) {
		before := metric(wire.CodeTimeout)
		c, err := rtmpClient(t, rtmpURL(n, "stalled?key=s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		// Send nothing: the origin drops it after the idle timeout.
		c.NetConn().SetReadDeadline(time.Now().Add(15 * time.Second))
		buf := make([]byte, 4096)
		var got []byte
		for {
			k, err := c.NetConn().Read(buf)
			got = append(got, buf[:k]...)
			if err != nil {
				break
			}
		}
		if !bytes.Contains(got, []byte("quiccast 4408: RTMP setup")) && !bytes.Contains(got, []byte("quiccast 4408: no data for 2s")) {
			t.Fatalf("stalled publisher got %q", got)
		}
		testenv.WaitFor(t, 3*time.Second, "the error metric", func() bool { return metric(wire.CodeTimeout) == before+1 })
	})

	ctrl.check(t, start)
	if _, ok := n.Lookup("control"); !ok {
		t.Fatal("control broadcast gone")
	}
}

func TestRTMPSWithACertificate(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeTestCert(t, dir)
	n, _ := startRTMPOrigin(t, Config{RTMPCert: cert, RTMPKey: key})
	ff := startFFmpeg(t, fmt.Sprintf("rtmps://%s/live/secure", n.RTMPAddr()), 0)
	testenv.WaitFor(t, 20*time.Second, "groups over RTMPS", func() bool {
		b, ok := n.Lookup("secure")
		return ok && len(b.Groups(0)) >= 2
	})
	_ = ff
	// A plain RTMP client cannot talk to the TLS listener.
	if _, err := rtmpClient(t, fmt.Sprintf("rtmp://%s/live/plain", n.RTMPAddr())); err == nil {
		t.Fatal("plain RTMP accepted on the RTMPS listener")
	}
}

// writeTestCert writes a self-signed ECDSA certificate for 127.0.0.1.
func writeTestCert(t *testing.T, dir string) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// authFunc is an auth.Authorizer from a function.
type authFunc func(context.Context, auth.Request) error

func (f authFunc) Authorize(ctx context.Context, r auth.Request) error { return f(ctx, r) }
