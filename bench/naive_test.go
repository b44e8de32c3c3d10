package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/bench/naivewt"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/testenv"
)

// naiveSetup is a local origin (a process), a synthetic 2 Mbit/s
// broadcast published to it, and the naive server in this process pulling
// it, live.
type naiveSetup struct {
	dep  *local
	srv  *naivewt.Server
	cfg  Config
	nw   *network
	base string // the naive server's http://host:port
}

func startNaiveSetup(t *testing.T, ctx context.Context) *naiveSetup {
	t.Helper()
	bin := buildBinary(t)
	dep, err := startLocal(ctx, bin, 0, "edge", "127.0.0.1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dep.stop)
	srv, err := naivewt.New(naivewt.Config{Origin: dep.origin.relay, Token: dep.token, Listen: "127.0.0.1:0", Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("naive server: %v", err)
		}
	})
	s := &naiveSetup{dep: dep, srv: srv, base: "http://" + srv.Addr().String()}
	s.cfg = Config{Edges: []string{s.base}, Origin: dep.origin.http, Transport: "wt", Server: "naive", Logger: (&testenv.Logs{}).Logger()}
	s.cfg.defaults()
	pctx, stopPub := context.WithCancel(ctx)
	t.Cleanup(stopPub)
	pubErr := make(chan error, 1)
	if err := startPublisher(pctx, &s.cfg, pubErr); err != nil {
		t.Fatal(err)
	}
	s.nw = &network{dial: s.cfg.Dial, packet: s.cfg.Packet}
	s.nw.h3 = h3Addrs(ctx, s.cfg.Edges, s.nw)
	if s.nw.h3[s.base] != fmt.Sprintf("127.0.0.1:%d", srv.H3Port()) {
		t.Fatalf("/cert-hash gave %v, want port %d", s.nw.h3, srv.H3Port())
	}
	if err := waitLive(ctx, &s.cfg, s.nw, pubErr); err != nil {
		t.Fatal(err)
	}
	return s
}

// watch runs n of the bench's WebTransport viewers on the naive server
// until the returned function is called; it waits for them to end.
func (s *naiveSetup) watch(ctx context.Context, n int, st *Stats) func() {
	vctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runWTViewer(vctx, i, s.base, s.cfg.Broadcast, "", st, s.nw)
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// dialNaive opens a WebTransport session to the naive server's /wt/name
// over a UDP socket of its own, returned so that a test can make the
// viewer vanish.
func (s *naiveSetup) dialNaive(ctx context.Context, qc *quic.Config) (*webtransport.Session, net.PacketConn, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	qc.EnableDatagrams, qc.EnableStreamResetPartialDelivery = true, true
	tr := &webtransport.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, QUICConfig: qc,
		DialAddr: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, err
			}
			return (&quic.Transport{Conn: pc}).DialEarly(ctx, ua, tc, qc)
		}}
	_, sess, err := tr.Dial(ctx, "https://"+s.nw.h3[s.base]+"/wt/"+s.cfg.Broadcast, nil)
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return sess, pc, nil
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// completeGroups returns b's finished groups of track 0 by sequence, each
// as its objects' frames.
func completeGroups(b *media.Broadcast) map[uint64][][]byte {
	out := map[uint64][][]byte{}
	for _, g := range b.Groups(0) {
		objs, done := b.Objects(g, 0, nil)
		if !done {
			continue
		}
		var frames [][]byte
		for _, o := range objs {
			frames = append(frames, o.Frame())
		}
		out[g.Seq] = frames
	}
	return out
}

// TestNaiveServerDeliversByteExactGroups: the bench's WebTransport
// viewers watch the naive server with nothing missing or skipped (the
// checks the bench applies), and a relay client over WebTransport mirrors
// from it groups byte for byte the same as one mirroring straight from
// the origin.
func TestNaiveServerDeliversByteExactGroups(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := startNaiveSetup(t, ctx)

	direct, err := relay.Dial(ctx, s.dep.origin.relay, relay.ClientConfig{Node: "test-direct", Token: s.dep.token, Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	want := media.New(s.cfg.Broadcast, media.Limits{})
	if _, err := direct.Subscribe(ctx, s.cfg.Broadcast, nil, want); err != nil {
		t.Fatal(err)
	}
	sess, pc, err := s.dialNaive(ctx, &quic.Config{MaxIncomingUniStreams: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	viaNaive, err := relay.NewClient(ctx, relay.WebTransport(sess), relay.ClientConfig{Node: "test-viewer", Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer viaNaive.Close()
	got := media.New(s.cfg.Broadcast, media.Limits{})
	if _, err := viaNaive.Subscribe(ctx, s.cfg.Broadcast, nil, got); err != nil {
		t.Fatal(err)
	}

	st := &Stats{}
	stop := s.watch(ctx, 3, st)
	// Three viewers, 30 objects/s: about 3 s of objects each.
	waitFor(t, 30*time.Second, "the viewers got 270 objects", func() bool { return st.Objects.Load() >= 270 })
	var same []uint64
	waitFor(t, 30*time.Second, "two complete groups in both mirrors", func() bool {
		w, g := completeGroups(want), completeGroups(got)
		same = same[:0]
		for seq := range g {
			if _, ok := w[seq]; ok {
				same = append(same, seq)
			}
		}
		return len(same) >= 2
	})
	// Read before the viewers hang up: their own close resets the
	// groups they were reading, which the bench counts as skipped.
	if st.Missing.Load() != 0 || st.Skipped.Load() != 0 || st.Failed.Load() != 0 || st.Disconnects.Load() != 0 || st.Refused.Load() != 0 || st.Active.Load() != 3 {
		t.Fatalf("viewers: missing %d skipped %d failed %d disconnects %d refused %d active %d", st.Missing.Load(), st.Skipped.Load(), st.Failed.Load(), st.Disconnects.Load(), st.Refused.Load(), st.Active.Load())
	}
	stop()
	w, g := completeGroups(want), completeGroups(got)
	for _, seq := range same {
		if len(w[seq]) != len(g[seq]) || len(g[seq]) < 2 {
			t.Fatalf("group %d: %d objects via the naive server, %d from the origin", seq, len(g[seq]), len(w[seq]))
		}
		for i := range w[seq] {
			if !bytes.Equal(w[seq][i], g[seq][i]) {
				t.Fatalf("group %d object %d differs (%d bytes via the naive server, %d from the origin)", seq, i, len(g[seq][i]), len(w[seq][i]))
			}
		}
	}
	m, err := Scrape(ctx, s.base, "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines", naivewt.SentMetric} {
		if m[k] <= 0 {
			t.Errorf("/metrics: %s = %v", k, m[k])
		}
	}
}

// TestNaiveServerSurvivesAViewerVanishingMidGroup: a viewer that stops
// reading in the middle of a group and then vanishes (its socket closed,
// nothing sent) ends its session on the server once QUIC's idle timeout
// (the viewer's 2 s) passes, while another viewer watches on with nothing
// missing, and a viewer joining afterwards is served.
func TestNaiveServerSurvivesAViewerVanishingMidGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := startNaiveSetup(t, ctx)
	sessions := func() float64 {
		m, err := Scrape(ctx, s.base, "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return m["quiccast_naivewt_sessions"]
	}
	st := &Stats{}
	stop := s.watch(ctx, 1, st)
	defer stop()
	waitFor(t, 20*time.Second, "the watching viewer joined", func() bool { return st.Active.Load() == 1 })
	before := sessions()

	// A small stream window: the server's write of a group blocks once
	// the viewer stops reading.
	sess, pc, err := s.dialNaive(ctx, &quic.Config{MaxIdleTimeout: 2 * time.Second, InitialStreamReceiveWindow: 4 << 10, MaxStreamReceiveWindow: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := sess.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ctl.Write(relay.EncodeMsg(&relay.Msg{Type: relay.MsgHello, Version: relay.Version}))
	ctl.Write(relay.EncodeMsg(&relay.Msg{Type: relay.MsgSubscribe, ID: 1, Broadcast: s.cfg.Broadcast}))
	rs, err := sess.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.ReadGroupHeader(rs); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rs, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the server counted the second session", func() bool { return sessions() == before+1 })
	objects := st.Objects.Load()
	pc.Close() // gone mid-group, without a word
	waitFor(t, 20*time.Second, "the vanished viewer's session ended on the server", func() bool { return sessions() == before })
	waitFor(t, 10*time.Second, "the watching viewer got 30 more objects", func() bool { return st.Objects.Load() >= objects+30 })

	late := &Stats{}
	stopLate := s.watch(ctx, 1, late)
	waitFor(t, 20*time.Second, "a viewer joining afterwards got 30 objects", func() bool { return late.Objects.Load() >= 30 })
	// Read before the viewers hang up (TestNaiveServerDeliversByteExactGroups).
	if st.Missing.Load() != 0 || st.Skipped.Load() != 0 || st.Disconnects.Load() != 0 || late.Missing.Load() != 0 || late.Failed.Load() != 0 {
		t.Fatalf("watching viewer: missing %d skipped %d disconnects %d; late viewer: missing %d failed %d",
			st.Missing.Load(), st.Skipped.Load(), st.Disconnects.Load(), late.Missing.Load(), late.Failed.Load())
	}
	stopLate()
}

// TestNaiveSetSmoke runs the naive set small (5 viewers, 1 run, 3 s): a
// row for the edge and one for the naive server, every viewer receiving,
// and the ratio line, written between the set's markers of a results
// file.
func TestNaiveSetSmoke(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	results := filepath.Join(dir, "RESULTS.md")
	if err := os.WriteFile(results, []byte("# Results\n\nearlier\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := RunNaiveSet(ctx, Config{Duration: 3 * time.Second, Settle: 500 * time.Millisecond, Ramp: 100}, bin, dir, results, []int{5}, 1, &b, (&testenv.Logs{}).Logger()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, sv := range naiveServers {
		if !strings.Contains(out, "| "+sv.label+" | 5 | 1 | 5 of 5 | ") {
			t.Errorf("no row for %s with 5 of 5 receiving:\n%s", sv.label, out)
		}
		if _, err := os.Stat(filepath.Join(dir, sv.server+"-5-1", "report.json")); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(out, "- 5 viewers: median CPU-s per Gbit edge ") {
		t.Errorf("no ratio line:\n%s", out)
	}
	res, _ := os.ReadFile(results)
	if !strings.HasPrefix(string(res), "# Results\n\nearlier\n") || !strings.Contains(string(res), naiveSetStart) || !strings.Contains(string(res), "| naive webtransport-go | 5 |") {
		t.Fatalf("results file:\n%s", res)
	}
}

// TestServerNaiveNeedsLocalWebTransport: -server naive is refused
// without -local and WebTransport viewers.
func TestServerNaiveNeedsLocalWebTransport(t *testing.T) {
	for _, c := range []Config{{Server: "naive", Transport: "wt", Edges: []string{"http://127.0.0.1:1"}}, {Server: "naive", Local: true, Transport: "ws"}, {Server: "other", Local: true}} {
		if _, err := Run(context.Background(), c); err == nil || !strings.Contains(err.Error(), "-server") {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
