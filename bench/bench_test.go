package bench

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/testenv"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "quiccast")
	out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestSynthIsValidCMAFAtTheRequestedRate(t *testing.T) {
	s, err := NewSynth(2_000_000, 30, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stream := append([]byte(nil), s.Init...)
	for i := range 90 {
		stream = s.Next(stream, time.UnixMicro(1_700_000_000_000_000+int64(i)*33_333))
	}
	r := cmaf.NewReader(bytes.NewReader(stream), cmaf.Limits{})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	var total, keys int
	for i := range 90 {
		seg, err := r.Next()
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		c := seg.(*cmaf.Chunk)
		if c.Keyframe != (i%30 == 0) {
			t.Fatalf("chunk %d keyframe %v", i, c.Keyframe)
		}
		if c.Capture != 1_700_000_000_000_000+int64(i)*33_333 {
			t.Fatalf("chunk %d capture %d", i, c.Capture)
		}
		if c.Keyframe {
			keys++
		}
		total += len(c.Data)
	}
	if bps := float64(total) * 8 / 3; bps < 1.9e6 || bps > 2.1e6 {
		t.Fatalf("%.0f bit/s, want 2 Mbit/s", bps)
	}
	if keys != 3 {
		t.Fatalf("%d keyframes in 3 s of 1 s groups", keys)
	}
}

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.Record(i, time.Duration(i)*time.Millisecond)
	}
	s := h.Snapshot(false)
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.99: 990 * time.Millisecond} {
		got := s.Quantile(q)
		if got < want || float64(got) > float64(want)*1.021 {
			t.Errorf("q%.2f = %s, want %s within 2 %%", q, got, want)
		}
	}
	if s.Max != time.Second || s.Count != 1000 {
		t.Fatalf("max %s count %d", s.Max, s.Count)
	}
	if h.Snapshot(true).Count != 1000 || h.Snapshot(false).Count != 0 {
		t.Fatal("reset did not empty the histogram")
	}
}

// TestBenchSmoke is the short run `go tool task test` does: a local origin
// and edge, 20 WebSocket viewers for a few seconds.
func TestBenchSmoke(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Local: true, Binary: bin, Viewers: 20, Ramp: 100, Duration: 3 * time.Second, Settle: time.Second,
		Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.WriteText(&out)
	t.Log("\n" + out.String())
	st := rep.Steps[0]
	if st.Active != 20 || st.Disconnects != 0 || st.Failed != 0 || st.Missing != 0 || st.Skipped != 0 {
		t.Fatalf("step %+v", st)
	}
	// 20 viewers × 30 objects/s × 3 s, give or take the window's edges.
	if st.Objects < 1700 || st.Latency.P99 <= 0 || st.Latency.P99 > 500 {
		t.Fatalf("objects %d, p99 %.1f ms", st.Objects, st.Latency.P99)
	}
	if rep.Join.Count != 20 || len(rep.Series) < 3 {
		t.Fatalf("join %+v, %d seconds of series", rep.Join, len(rep.Series))
	}
	var edge *NodeCost
	for i := range st.Nodes {
		if st.Nodes[i].Name == "edge-1" {
			edge = &st.Nodes[i]
		}
	}
	if edge == nil || edge.CPUSeconds <= 0 || edge.SentGbit <= 0 || edge.CPUPerGbit <= 0 {
		t.Fatalf("edge cost %+v", edge)
	}
	dir := t.TempDir()
	if err := rep.Save(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.txt", "report.json", "report.html"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

func TestParseHLSFindsTheHintAndTheOpenSegment(t *testing.T) {
	p, err := parseHLS(strings.NewReader(`#EXTM3U
#EXT-X-PART-INF:PART-TARGET=0.03400
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:20:08.227Z
#EXTINF:1.06667,
seg-x-0-0.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T16:20:09.300Z
#EXT-X-PART:DURATION=0.5,URI="part-x-0-1-0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.25,URI="part-x-0-1-1.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-x-0-1-2.m4s"
`))
	if err != nil {
		t.Fatal(err)
	}
	if !p.hasHint || p.hint != "part-x-0-1-2.m4s" || p.hintGroup != 1 || p.hintPart != 2 || p.targetPart != 0.034 {
		t.Fatalf("%+v", p)
	}
	if want := time.Date(2026, 11, 21, 16, 20, 10, 50_000_000, time.UTC); !p.capture().Equal(want) {
		t.Fatalf("capture %s, want %s", p.capture(), want)
	}
}

// TestViewersLeaveNothingBehind runs WebTransport viewers and checks that
// their goroutines (QUIC read loops among them) end with them: a load
// generator that leaks skews every run after it.
func TestViewersLeaveNothingBehind(t *testing.T) {
	bin := buildBinary(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := Run(ctx, Config{Local: true, Binary: bin, Transport: "wt", Viewers: 20, Ramp: 100, Duration: time.Second, Settle: 500 * time.Millisecond,
		Logger: (&testenv.Logs{}).Logger()}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the viewers' goroutines to end", func() bool { return runtime.NumGoroutine() <= before+5 })
}

// TestWebTransportViewersPastAnEdgesCapacityAreCountedAsRefused runs more
// WebTransport viewers than the edge's -wt-max-viewers: the admitted ones
// play, and the rest, told 503 (which a browser does not retry: it falls
// back to WebSocket), are reported as refused, not as failed.
func TestWebTransportViewersPastAnEdgesCapacityAreCountedAsRefused(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Local: true, Binary: bin, Transport: "wt", Viewers: 8, Ramp: 100, Duration: 12 * time.Second, Settle: 500 * time.Millisecond,
		EdgeFlags: "-wt-max-viewers 3 -wt-max-sched-delay -1ns", Logger: (&testenv.Logs{}).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	st := rep.Steps[len(rep.Steps)-1]
	if st.Refused != 5 || st.Failed != 0 || st.Active != 3 {
		t.Fatalf("refused %d, failed %d, receiving %d; want 5 refused, 0 failed, 3 receiving", st.Refused, st.Failed, st.Active)
	}
	if st.Objects == 0 {
		t.Fatal("the admitted viewers got nothing")
	}
}

// TestShedSetSmoke runs the shed set small: one run of 10 WebTransport
// viewers dialling at once at an edge that admits 6: 6 play, held, and 4
// are counted as refused (told to go elsewhere), not as failed.
func TestShedSetSmoke(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var b bytes.Buffer
	if err := RunShedSet(ctx, Config{Duration: 2 * time.Second, Settle: time.Second, EdgeFlags: "-wt-max-viewers 6 -wt-max-sched-delay -1ns"}, bin, dir, []int{10}, 1, &b, (&testenv.Logs{}).Logger()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "| 10 | 1 | 6 | 4 | 0 |") || !strings.Contains(out, "Held in 1 of 1 runs.") {
		t.Fatalf("shed set:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "wt-10-1", "report.json")); err != nil {
		t.Error(err)
	}
}

// TestClusterSmoke runs the cluster run small: a Redis Cluster, 2
// origins, a mid-tier and 2 edges (one under the mid-tier), 3 broadcasts
// watched by 15 and then 30 routed viewers. Every viewer receives, Redis
// was used, and the origins' relay egress stays within one copy of each
// broadcast per node pulling from them, whatever the viewers.
func TestClusterSmoke(t *testing.T) {
	testenv.RequireTool(t, "redis-server")
	testenv.RequireTool(t, "redis-cli")
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var b bytes.Buffer
	res, err := RunCluster(ctx, ClusterConfig{RedisMasters: 3, Origins: 2, Mids: 1, Edges: 2, MidEdges: 1,
		Steps: []ClusterStep{{3, 15}, {3, 30}}, Bitrate: 300_000, Duration: 3 * time.Second, Transport: "mix"},
		bin, &b, (&testenv.Logs{}).Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Log(b.String())
	if len(res) != 2 {
		t.Fatalf("%d results", len(res))
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("step %d: %v", i, r.Err)
		}
		st := r.Report.Steps[len(r.Report.Steps)-1]
		if st.Active != int64(r.Step.Viewers) || st.Failed != 0 {
			t.Errorf("step %d: %d of %d receiving, %d failed", i, st.Active, r.Step.Viewers, st.Failed)
		}
		if r.RedisOps <= 0 || len(r.Nodes) != 5 {
			t.Errorf("step %d: redis ops %v, %d nodes measured", i, r.RedisOps, len(r.Nodes))
		}
		// The origins send each broadcast at most once to each node that
		// pulls from them (the mid-tier and the edge straight under
		// them), whatever the viewers: 2 × 3 × 0.3 Mbit/s, plus framing.
		var origin, viewers float64
		for _, n := range r.Nodes {
			if n.Tier == "origin" {
				origin += n.RelayMbps
			}
			viewers += n.ViewerMbps
		}
		if bound := 2 * 3 * 0.3 * 1.5; origin <= 0 || origin > bound || viewers < float64(r.Step.Viewers)*0.3*0.8 {
			t.Errorf("step %d: origins sent %.2f Mbit/s (bound %.2f), edges %.2f Mbit/s to %d viewers", i, origin, bound, viewers, r.Step.Viewers)
		}
	}
	if !strings.Contains(b.String(), "| 3 × 30 |") {
		t.Errorf("table:\n%s", b.String())
	}
}

// TestWSSViewersOnALocalTLSEdge: with -transport wss the bench makes a
// certificate, starts the edge with -tls-cert/-tls-key, and its viewers,
// trusting that certificate, watch over wss:// (the metrics too go over
// HTTPS); WebTransport viewers trust the same certificate (-local-tls).
func TestWSSViewersOnALocalTLSEdge(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tr := range []string{"wss", "wt"} {
		rep, err := Run(ctx, Config{Local: true, LocalTLS: true, Binary: bin, Transport: tr, Viewers: 5, Ramp: 100, Duration: 2 * time.Second,
			Settle: 500 * time.Millisecond, Logger: (&testenv.Logs{}).Logger()})
		if err != nil {
			t.Fatalf("%s: %v", tr, err)
		}
		st := rep.Steps[0]
		if st.Active != 5 || st.Failed != 0 || st.Disconnects != 0 || st.Missing != 0 || st.Objects < 5*30 {
			t.Fatalf("%s: step %+v", tr, st)
		}
		var edge *NodeCost
		for i := range st.Nodes {
			if st.Nodes[i].Name == "edge-1" {
				edge = &st.Nodes[i]
			}
		}
		if edge == nil || !strings.HasPrefix(edge.URL, "https://") || edge.SentGbit <= 0 {
			t.Fatalf("%s: edge %+v: want its metrics read over HTTPS", tr, edge)
		}
	}
}

// TestEdgeFlagsReachTheEdge: the TLS set's control runs the edge with
// -edge-flags '-ws-writer goroutines'. With it, each plain WebSocket
// viewer holds its own goroutines on the edge; without it (the
// event-driven writer) none.
func TestEdgeFlagsReachTheEdge(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	perViewer := map[string]float64{}
	for _, flags := range []string{"-ws-writer goroutines", ""} {
		rep, err := Run(ctx, Config{Local: true, Binary: bin, Transport: "ws", Viewers: 10, Ramp: 100, Duration: time.Second,
			Settle: 500 * time.Millisecond, EdgeFlags: flags, Logger: (&testenv.Logs{}).Logger()})
		if err != nil {
			t.Fatal(err)
		}
		st := rep.Steps[0]
		if st.Active != 10 {
			t.Fatalf("%q: %d of 10 receiving", flags, st.Active)
		}
		for _, n := range st.Nodes {
			if n.Name == "edge-1" {
				perViewer[flags] = n.GoroutinesPerViewer
			}
		}
	}
	if perViewer["-ws-writer goroutines"] < 1.5 || perViewer[""] > 0.5 {
		t.Fatalf("edge goroutines per viewer: %v; want ≥ 1.5 with -ws-writer goroutines, ≤ 0.5 without", perViewer)
	}
}

// TestTLSSetSmoke runs the TLS set small (3 viewers, 1 s each): a row
// each for ws, wss, the wss control and wt (capped and not), each with
// every viewer receiving,
// written between the set's markers of a results file, twice without
// growing it.
func TestTLSSetSmoke(t *testing.T) {
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	results := filepath.Join(dir, "RESULTS.md")
	if err := os.WriteFile(results, []byte("# Results\n\nearlier\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := RunTLSSet(ctx, Config{Duration: time.Second, Settle: 500 * time.Millisecond, Ramp: 100}, bin, dir, results, []int{3}, &b, (&testenv.Logs{}).Logger()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, v := range tlsVariants {
		if !strings.Contains(out, "| 3 | "+v.label+" | 3 of 3 |") {
			t.Errorf("no row for %s with 3 of 3 receiving:\n%s", v.label, out)
		}
		if _, err := os.Stat(filepath.Join(dir, v.name+"-3", "report.json")); err != nil {
			t.Error(err)
		}
	}
	first, _ := os.ReadFile(results)
	if err := replaceBetween(results, tlsSetStart, tlsSetEnd, "## TLS set\n\n"+out); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(results)
	if !strings.HasPrefix(string(first), "# Results\n\nearlier\n") || !strings.Contains(string(first), tlsSetEnd) || strings.Count(string(second), tlsSetStart) != 1 {
		t.Fatalf("results file:\n%s\nthen:\n%s", first, second)
	}
}

// TestCertificateAndTrust: the run's certificate names 127.0.0.1,
// localhost and the host given (the emulator's address); -ca trusts a
// PEM file's certificates; -ca with -insecure, or a file without a
// certificate, is an error.
func TestCertificateAndTrust(t *testing.T) {
	dir := t.TempDir()
	cert, _, _, err := selfSigned(dir, "10.77.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := (&Config{CA: cert}).clientTLS()
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := os.ReadFile(cert)
	blk, _ := pem.Decode(pemBytes)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "localhost", "10.77.0.1"} {
		if _, err := c.Verify(x509.VerifyOptions{DNSName: name, Roots: tc.RootCAs}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "10.77.0.2", Roots: tc.RootCAs}); err == nil {
		t.Error("verified for an address it does not name")
	}
	if _, err := (&Config{CA: cert, Insecure: true}).clientTLS(); err == nil {
		t.Error("-ca with -insecure accepted")
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o644)
	if _, err := (&Config{CA: bad}).clientTLS(); err == nil {
		t.Error("a -ca file without a certificate accepted")
	}
}

// TestH3AddrsFollowCertHash: WebTransport viewers dial the HTTP/3 port an
// edge's /cert-hash names, which differs from its TCP port when that UDP
// port was taken; an edge that does not answer keeps its own.
func TestH3AddrsFollowCertHash(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cert-hash" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"port":4433,"algorithm":"sha-256","hashes":[]}`))
	}))
	defer srv.Close()
	dead := "http://127.0.0.1:1"
	got := h3Addrs(context.Background(), []string{srv.URL, dead}, &network{})
	if got[srv.URL] != "127.0.0.1:4433" || len(got) != 1 {
		t.Fatalf("h3Addrs = %v, want %s at 127.0.0.1:4433 only", got, srv.URL)
	}
}
