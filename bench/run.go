// Package bench is quiccast's load generator (`quiccast bench`): a
// synthetic or ffmpeg publisher, viewers over WebSocket (and the other
// transports as they are added), per-object latency and join histograms,
// and the serving cost read from each node's /metrics.
package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/quiccast/quiccast/bench/netem"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/publish"
)

// Config is one benchmark run. Every run is bounded by Duration plus the
// ramp and a grace period, and by the viewer count.
type Config struct {
	// Edges are the edge base URLs viewers spread over (http://host:port).
	Edges []string
	// Origin is the origin base URL the publisher sends to.
	Origin string
	// PublishTo, when set, are the origins the broadcasts are published
	// to, in turn (broadcast i to PublishTo[i % len]); Origin is then only
	// scraped.
	PublishTo []string
	// Router, when set, is a routing URL (a node's /edge): each viewer asks
	// it for its broadcast and watches on the first edge it names,
	// instead of the viewers going round Edges.
	Router string
	// Tiers names the tier of some edges (base URL → tier): the report
	// gives latency per tier.
	Tiers map[string]string
	// Window, when set, is called as the measured window begins (true)
	// and ends (false), for figures read outside the run (cluster.go).
	Window func(begin bool)
	// Local starts an origin and LocalEdges edges on this machine, as
	// child processes of Binary, instead of using Edges and Origin.
	Local      bool
	LocalEdges int
	Binary     string
	// Server, with Local, is what serves the viewers: "edge" (quiccast's
	// edges, the default) or "naive" (bench/naivewt, the naive
	// webtransport-go fan-out server issue 10 compares the edge with;
	// WebTransport viewers only), LocalEdges of them.
	Server string
	// EdgeFlags are added, space-separated, to each local edge's command
	// line (e.g. "-wt-max-viewers 500").
	EdgeFlags string
	// LocalTLS, with Local, starts the edges with a self-signed
	// certificate made for the run (HTTPS, wss:// and WebTransport on
	// their -listen port, -tls-cert/-tls-key) that the viewers trust; on
	// by itself for Transport "wss".
	LocalTLS bool
	// CA trusts this PEM file's certificates for the edges (wss://,
	// WebTransport, HTTPS scrapes) instead of the system's; Insecure
	// checks none.
	CA       string
	Insecure bool

	Broadcast string
	// Broadcasts publishes this many broadcasts (Broadcast/1, /2, …);
	// viewers are spread over them.
	Broadcasts int
	Token      string
	// AdminToken reads the nodes' /metrics and profiles (their -admin-token).
	AdminToken string
	// Publisher is "synthetic" (default), "ffmpeg" or "none" (the
	// broadcast is already live).
	Publisher   string
	Bitrate     int64
	ObjectRate  int
	GroupLength time.Duration

	Viewers   int
	Transport string  // viewer transport: ws, wt, hls, or mix (each in turn)
	Ramp      float64 // viewers started per second
	Duration  time.Duration
	// Settle is waited after the ramp before measuring.
	Settle time.Duration

	// FindMax ramps in steps of Step viewers until the p99 latency passes
	// MaxP99 or objects go missing, and reports the largest load held.
	FindMax bool
	Step    int
	MaxP99  time.Duration

	// Profile, with Local, saves a CPU profile of each node over the
	// measured window into this directory (<node>.cpu.pprof).
	Profile string

	// Network, with Local, puts the nodes behind an emulated network
	// (see bench/netem): "delay=20ms,jitter=2ms,loss=2%,rate=100mbit".
	// Viewers cross it; the publisher does not. Needs root.
	Network string

	// Drop, with Network, changes the link DropAt into the measured
	// window for DropFor (a bandwidth drop: "rate=1200kbit"), then changes
	// it back; the report gives the latency meanwhile and the time, after
	// the link recovered, until every viewer was back within Target.
	Drop    string
	DropAt  time.Duration
	DropFor time.Duration
	Target  time.Duration

	// Dial opens viewer connections (the emulator's namespace); nil is
	// the default dialer. dialNodes reaches the nodes' HTTP (publisher,
	// metrics) without crossing the emulated network.
	Dial      Dialer
	Packet    func() (net.PacketConn, error) // UDP sockets for QUIC viewers
	dialNodes Dialer
	tls       *tls.Config // how edges' certificates are checked; nil: the system's roots (WebTransport: not checked)
	Logger    *slog.Logger
}

// Flags declares the settings of `quiccast bench`.
func (c *Config) Flags(s *config.Set, edges *string) {
	s.String(edges, "edges", "", "comma-separated edge URLs (http://host:port) to spread viewers over; ignored with -local")
	s.String(&c.Origin, "origin", "", "origin URL (http://host:port) the synthetic publisher sends to")
	s.Bool(&c.Local, "local", false, "start an origin and -local-edges edges here (child processes) and measure them")
	s.Int(&c.LocalEdges, "local-edges", 1, "edges to start with -local")
	s.String(&c.Server, "server", "edge", "with -local: what serves the viewers: edge (quiccast's) or naive (bench/naivewt, a naive webtransport-go fan-out server, the control of issue 10; -transport wt only)")
	s.String(&c.EdgeFlags, "edge-flags", "", "with -local: more flags for each edge, space-separated, e.g. '-wt-max-viewers 500' or '-ws-writer goroutines'")
	s.Bool(&c.LocalTLS, "local-tls", false, "with -local: start the edges with a self-signed certificate made for the run (HTTPS, wss:// and WebTransport on -listen) that the viewers trust; implied by -transport wss")
	s.String(&c.CA, "ca", "", "PEM file of the certificate(s) to trust for the edges (wss://, WebTransport, HTTPS /metrics) instead of the system's")
	s.Bool(&c.Insecure, "insecure", false, "do not check the edges' certificates")
	s.String(&c.Broadcast, "broadcast", "", "broadcast name; default bench/<random>")
	s.String(&c.Token, "token", "", "publish and play token")
	s.GlobalString(&c.AdminToken, "admin-token", "", "the nodes' -admin-token, to read their /metrics (and profiles); set for you with -local")
	s.Int(&c.Broadcasts, "broadcasts", 1, "broadcasts to publish (named -broadcast/1, /2, …); viewers are spread over them")
	s.String(&c.Publisher, "publisher", "synthetic", "synthetic, ffmpeg or none (the broadcast is already live)")
	s.Int64(&c.Bitrate, "bitrate", 2_000_000, "broadcast bitrate, bits/s")
	s.Int(&c.ObjectRate, "object-rate", 30, "objects (CMAF chunks) per second")
	s.Duration(&c.GroupLength, "group", time.Second, "group (GOP) length")
	s.Int(&c.Viewers, "viewers", 100, "viewers")
	s.String(&c.Transport, "transport", "ws", "viewer transport: ws (WebSocket), wss (WebSocket over TLS), wt (WebTransport), hls (LL-HLS with blocking reloads) or mix (ws, wt, hls in turn)")
	s.Float64(&c.Ramp, "ramp", 500, "viewers started per second")
	s.Duration(&c.Duration, "duration", 20*time.Second, "measured time after the ramp")
	s.Duration(&c.Settle, "settle", 2*time.Second, "wait after the ramp before measuring")
	s.String(&c.Profile, "profile", "", "with -local: save each node's CPU profile over the measured window into this directory")
	s.String(&c.Network, "network", "", "with -local: put the nodes behind an emulated network, e.g. delay=20ms,loss=2%,rate=100mbit (needs root)")
	s.String(&c.Drop, "drop", "", "with -network: how the link changes during a bandwidth drop, e.g. rate=1200kbit")
	s.Duration(&c.DropAt, "drop-at", 5*time.Second, "with -drop: when the drop starts, into the measured window")
	s.Duration(&c.DropFor, "drop-for", 10*time.Second, "with -drop: how long the link stays down")
	s.Duration(&c.Target, "target", 150*time.Millisecond, "with -drop: the latency every viewer must be back within after the drop")
	s.Bool(&c.FindMax, "find-max", false, "add -step viewers at a time until p99 passes -max-p99 or objects go missing")
	s.Int(&c.Step, "step", 500, "viewers added per -find-max step")
	s.Duration(&c.MaxP99, "max-p99", 50*time.Millisecond, "p99 latency bound for -find-max")
}

func (c *Config) defaults() {
	// The defaults are the flags' (one place to change them).
	var d Config
	var edges string
	d.Flags(config.New("bench", ""), &edges)
	if c.Publisher == "" {
		c.Publisher = d.Publisher
	}
	if c.Bitrate <= 0 {
		c.Bitrate = d.Bitrate
	}
	if c.ObjectRate <= 0 {
		c.ObjectRate = d.ObjectRate
	}
	if c.GroupLength <= 0 {
		c.GroupLength = d.GroupLength
	}
	if c.Ramp <= 0 {
		c.Ramp = d.Ramp
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.Settle < 0 {
		c.Settle = 0
	}
	if c.Transport == "" {
		c.Transport = d.Transport
	}
	if c.LocalEdges <= 0 {
		c.LocalEdges = d.LocalEdges
	}
	if c.Server == "" {
		c.Server = d.Server
	}
	if c.Step <= 0 {
		c.Step = d.Step
	}
	if c.MaxP99 <= 0 {
		c.MaxP99 = d.MaxP99
	}
	if c.DropAt <= 0 {
		c.DropAt = d.DropAt
	}
	if c.DropFor <= 0 {
		c.DropFor = d.DropFor
	}
	if c.Target <= 0 {
		c.Target = d.Target
	}
	if c.Broadcast == "" {
		c.Broadcast = fmt.Sprintf("bench/%06x", rand.IntN(1<<24))
	}
	if c.Broadcasts <= 0 {
		c.Broadcasts = d.Broadcasts
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		c.Dial = d.DialContext
	}
	if c.Packet == nil {
		c.Packet = func() (net.PacketConn, error) { return net.ListenPacket("udp", ":0") }
	}
	if c.dialNodes == nil {
		c.dialNodes = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// viewerFunc watches name on edge until ctx ends, recording into st.
type viewerFunc func(ctx context.Context, id int, edge, name, token string, st *Stats, nw *network)

// viewerFuncs are the viewer transports by name.
var viewerFuncs = map[string]viewerFunc{
	"ws":  runWSViewer,
	"wss": runWSSViewer,
	"wt":  runWTViewer,
	"hls": runHLSViewer,
}

// mixTransports are the transports of -transport mix, viewer by viewer.
var mixTransports = []string{"ws", "wt", "hls"}

// routeViewer asks cfg.Router where to watch name and returns the first
// edge, trying a few times while the router has none (503).
func routeViewer(ctx context.Context, cfg *Config, name string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	if cfg.dialNodes != nil {
		c.Transport = &http.Transport{DialContext: cfg.dialNodes}
	}
	var last error
	for range 5 {
		req, _ := http.NewRequestWithContext(ctx, "GET", cfg.Router+"?broadcast="+url.QueryEscape(name), nil)
		resp, err := c.Do(req)
		if err == nil {
			var a struct{ Edges []struct{ URL string } }
			err = json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
			if err == nil && len(a.Edges) > 0 {
				return a.Edges[0].URL, nil
			}
			if err == nil {
				err = fmt.Errorf("router: %s, no edges", resp.Status)
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return "", last
}

// network is how viewers reach the edges: TCP dials and UDP sockets (in
// the emulator's namespace B, with -network).
type network struct {
	dial   Dialer
	packet func() (net.PacketConn, error)
	tls    *tls.Config       // certificates to trust (nil: the system's; WebTransport: none checked)
	h3     map[string]string // an edge's HTTP/3 host:port by its URL, when not its TCP port (h3Addrs)
}

// Run runs one benchmark and reports it.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	viewOf := func(int) viewerFunc { return viewerFuncs[cfg.Transport] }
	if cfg.Transport == "mix" {
		viewOf = func(id int) viewerFunc { return viewerFuncs[mixTransports[id%len(mixTransports)]] }
	} else if _, ok := viewerFuncs[cfg.Transport]; !ok {
		return nil, fmt.Errorf("bench: unknown transport %q", cfg.Transport)
	}
	switch {
	case cfg.Server != "edge" && cfg.Server != "naive":
		return nil, fmt.Errorf("bench: -server %q: want edge or naive", cfg.Server)
	case cfg.Server == "naive" && (!cfg.Local || cfg.Transport != "wt" || cfg.useTLS()):
		return nil, errors.New("bench: -server naive needs -local and -transport wt, without -local-tls")
	}
	limit := cfg.Duration + time.Duration(float64(cfg.Viewers)/cfg.Ramp*float64(time.Second)) + cfg.Settle + time.Minute
	if cfg.FindMax {
		limit = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	rep := newReport(cfg)
	var dep *local
	var emu *netem.Emu
	host, wrap := "127.0.0.1", []string(nil)
	if cfg.Drop != "" && (cfg.Network == "" || cfg.FindMax) {
		return nil, errors.New("bench: -drop needs -network, and not -find-max")
	}
	if cfg.Network != "" {
		if !cfg.Local {
			return nil, errors.New("bench: -network needs -local")
		}
		link, err := netem.ParseLink(cfg.Network)
		if err != nil {
			return nil, err
		}
		if _, err := link.With(cfg.Drop); err != nil {
			return nil, err
		}
		emu, err = netem.Start(link)
		if err != nil {
			return nil, err
		}
		defer emu.Close()
		host, wrap = emu.AddrA, emu.Exec()
		cfg.Dial, cfg.Packet, cfg.dialNodes = emu.DialB, emu.ListenPacketB, emu.DialA
		rep.Settings.Network = link.String()
	}
	var err error
	if cfg.tls, err = cfg.clientTLS(); err != nil {
		return nil, err
	}
	edgeFlags := strings.Fields(cfg.EdgeFlags)
	if cfg.Local && cfg.useTLS() {
		if cfg.Transport == "mix" {
			return nil, errors.New("bench: -transport mix has plain ws viewers: not with -local-tls")
		}
		dir, err := os.MkdirTemp("", "quiccast-bench-tls-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cert, key, pool, err := selfSigned(dir, host)
		if err != nil {
			return nil, fmt.Errorf("bench: certificate: %w", err)
		}
		edgeFlags = append(edgeFlags, "-tls-cert", cert, "-tls-key", key)
		if cfg.tls == nil {
			cfg.tls = &tls.Config{RootCAs: pool}
		}
	}
	if cfg.Local {
		bin := cfg.Binary
		if bin == "" {
			var err error
			if bin, err = os.Executable(); err != nil {
				return nil, err
			}
		}
		if dep, err = startLocal(ctx, bin, cfg.LocalEdges, cfg.Server, host, wrap, edgeFlags); err != nil {
			return nil, err
		}
		defer dep.stop()
		cfg.Origin, cfg.Edges = dep.origin.http, dep.edgeURLs()
		cfg.AdminToken = dep.token
	}
	if len(cfg.Edges) == 0 {
		return nil, errors.New("bench: no edges (-edges or -local)")
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubErr := make(chan error, 1)
	if err := startPublisher(pubCtx, &cfg, pubErr); err != nil {
		return nil, err
	}
	nw := &network{dial: cfg.Dial, packet: cfg.Packet, tls: cfg.tls}
	if cfg.Transport == "wt" || cfg.Transport == "mix" {
		nw.h3 = h3Addrs(ctx, cfg.Edges, nw)
	}
	if err := waitLive(ctx, &cfg, nw, pubErr); err != nil {
		return nil, err
	}

	st := &Stats{}
	if len(cfg.Tiers) > 0 {
		st.tiers = map[string]*Hist{}
		for _, tier := range cfg.Tiers {
			if st.tiers[tier] == nil {
				st.tiers[tier] = &Hist{}
			}
		}
	}
	var wg sync.WaitGroup
	vctx, stopViewers := context.WithCancel(ctx)
	defer func() { stopViewers(); wg.Wait() }()
	started := 0
	start := func(n int) {
		every := time.Duration(float64(time.Second) / cfg.Ramp)
		t := time.NewTicker(max(every, time.Microsecond))
		defer t.Stop()
		for i := 0; i < n && ctx.Err() == nil; i++ {
			id := started
			edge := cfg.Edges[id%len(cfg.Edges)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				if cfg.Router != "" {
					var err error
					if edge, err = routeViewer(vctx, &cfg, cfg.name(id)); err != nil {
						st.Failed.Add(1)
						return
					}
				}
				if h := st.tiers[cfg.Tiers[edge]]; h != nil {
					st.tierOf.Store(id, h)
				}
				viewOf(id)(vctx, id, edge, cfg.name(id), cfg.Token, st, nw)
			}()
			started++
			<-t.C
		}
	}
	series := rep.follow(ctx, st)

	before := scrapeAll(ctx, &cfg, dep)
	load := cfg.Viewers
	if cfg.FindMax {
		load = cfg.Step
	}
	for {
		start(load - started)
		sleep(ctx, cfg.Settle)
		st.Latency.Snapshot(true)
		for _, h := range st.tiers {
			h.Snapshot(true)
		}
		steady := scrapeAll(ctx, &cfg, dep)
		if cfg.Window != nil {
			cfg.Window(true)
		}
		counts := st.counts()
		profiled := profileNodes(ctx, &cfg, dep)
		window := time.Now()
		var drop chan error
		var down netem.Link
		var back time.Time
		if cfg.Drop != "" {
			st.tl.begin(window)
			drop = make(chan error, 1)
			go func() {
				var err error
				down, back, err = runDrop(ctx, emu, &cfg, st)
				drop <- err
			}()
		}
		sleep(ctx, cfg.Duration)
		profiled.Wait()
		if drop != nil {
			if err := <-drop; err != nil {
				return nil, err
			}
			rep.Drop = dropResult(st, down, back, time.Now(), &cfg)
		}
		if cfg.Window != nil {
			cfg.Window(false)
		}
		end := scrapeAll(ctx, &cfg, dep)
		step := rep.addStep(st, counts, started, before, steady, end, &cfg)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !cfg.FindMax {
			break
		}
		if !step.Held(cfg.MaxP99) {
			break
		}
		rep.MaxHeld = started
		load += cfg.Step
	}
	rep.finish(series, st)
	for tier, h := range st.tiers {
		if rep.Tiers == nil {
			rep.Tiers = map[string]Summary{}
		}
		rep.Tiers[tier] = h.Snapshot(false).Summary()
	}
	select {
	case err := <-pubErr:
		if err != nil {
			rep.Notes = append(rep.Notes, "publisher: "+err.Error())
		}
	default:
	}
	return rep, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// name is the broadcast viewer i watches.
func (c *Config) name(i int) string {
	if c.Broadcasts == 1 {
		return c.Broadcast
	}
	return fmt.Sprintf("%s/%d", c.Broadcast, i%c.Broadcasts+1)
}

func startPublisher(ctx context.Context, cfg *Config, errc chan<- error) error {
	for i := range cfg.Broadcasts {
		origin := cfg.Origin
		if len(cfg.PublishTo) > 0 {
			origin = cfg.PublishTo[i%len(cfg.PublishTo)]
		}
		ws := "ws" + strings.TrimPrefix(strings.TrimSuffix(origin, "/"), "http") + "/publish/" + cfg.name(i)
		switch cfg.Publisher {
		case "none":
			return nil
		case "synthetic":
			s, err := NewSynth(cfg.Bitrate, cfg.ObjectRate, cfg.GroupLength)
			if err != nil {
				return err
			}
			go func() {
				errc <- publish.Run(ctx, publish.Config{URL: ws, Token: cfg.Token, Stream: s.Reader(ctx), Dial: cfg.dialNodes,
					MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Logger: cfg.Logger})
			}()
		case "ffmpeg":
			go func() {
				errc <- publish.Run(ctx, publish.Config{URL: ws, Token: cfg.Token, Bitrate: fmt.Sprint(cfg.Bitrate),
					FPS: cfg.ObjectRate, GOP: cfg.GroupLength, Size: "1280x720", Dial: cfg.dialNodes, Logger: cfg.Logger})
			}()
		default:
			return fmt.Errorf("bench: unknown publisher %q", cfg.Publisher)
		}
	}
	return nil
}

// waitLive waits until a viewer on the first edge gets an object of
// every broadcast, 16 broadcasts at a time.
func waitLive(ctx context.Context, cfg *Config, nw *network, pubErr <-chan error) error {
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range cfg.Broadcasts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := waitOne(ctx, cfg, nw, cfg.name(i), pubErr); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func waitOne(ctx context.Context, cfg *Config, nw *network, name string, pubErr <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st := &Stats{}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		go func() {
			for st.Objects.Load() == 0 && pctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
		}()
		// WebSocket for WebTransport too: a probe session would hold one
		// of the edge's -wt-max-viewers slots until it closes, which the
		// first viewers (who do not retry a 503) could find still taken.
		tr := cfg.Transport
		if tr == "mix" || tr == "wt" && cfg.Server != "naive" { // the naive server has no slots, and no WebSocket
			tr = "ws"
		}
		if tr == "ws" && strings.HasPrefix(cfg.Edges[0], "https://") {
			tr = "wss"
		}
		viewerFuncs[tr](pctx, 0, cfg.Edges[0], name, cfg.Token, st, nw)
		cancel()
		if st.Objects.Load() > 0 {
			return nil
		}
		select {
		case err := <-pubErr:
			return fmt.Errorf("bench: publisher stopped: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench: broadcast %q not live on %s after 30 s", name, cfg.Edges[0])
}

// scrapeAll reads every node's metrics (local nodes, or the given edges).
func scrapeAll(ctx context.Context, cfg *Config, dep *local) map[string]Metrics {
	out := map[string]Metrics{}
	urls := map[string]string{}
	if dep != nil {
		urls["origin"] = dep.origin.http
		for _, e := range dep.edges {
			urls[e.name] = e.http
		}
	} else {
		for i, e := range cfg.Edges {
			urls[fmt.Sprintf("edge-%d", i+1)] = e
		}
		if cfg.Origin != "" {
			urls["origin"] = cfg.Origin
		}
	}
	for name, u := range urls {
		if m, err := Scrape(ctx, u, cfg.AdminToken, cfg.dialNodes, cfg.tls); err == nil {
			m["_url"] = 0
			out[name+"|"+u] = m
		}
	}
	return out
}

// counts reads the counters at the start of a measured window.
func (st *Stats) counts() [5]int64 {
	return [5]int64{st.Objects.Load(), st.Missing.Load(), st.Skipped.Load(), st.Disconnects.Load(), st.Bytes.Load()}
}
