package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/quiccast/quiccast/edge"
	"github.com/quiccast/quiccast/origin"
	"github.com/quiccast/quiccast/shared/acme"
	"github.com/quiccast/quiccast/shared/auth/authconfig"
	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/wire"
)

type demoConfig struct {
	Listen       string // edge
	WTListen     string // edge HTTP/3 and WebTransport
	OriginListen string
	RTMPListen   string            // origin's RTMP ingest; empty for none
	Name         string            // built-in broadcast; empty for none
	ACME         acme.Config       // edge certificate from an ACME CA, when ACME.Domain is set
	PlayTokens   string            // edge's accepted play tokens; empty allows anyone
	RecordDir    string            // record every broadcast here and serve the recordings on the edge; empty for none
	PlayAuth     authconfig.Config // the edge's JWT, webhook and address rules (publishing in the demo stays open)
	HLSPart      time.Duration     // the edge's LL-HLS part (edge.Config.HLSPart); 0: its default
	Logger       *slog.Logger
}

// demo is an origin and an edge in one process, the edge reading the
// origin's broadcasts directly, plus a looping test broadcast.
type demo struct {
	origin *origin.Node
	edge   *edge.Node
	cfg    demoConfig
	clip   *clip.Clip
	reg    *registry.Registry // shared by origin and edge
}

// originSource lets an in-process edge read an origin's broadcasts.
type originSource struct{ o *origin.Node }

func (s originSource) Subscribe(_ context.Context, name string) (*media.Broadcast, func(), error) {
	b, ok := s.o.Lookup(name)
	if !ok {
		return nil, nil, wire.Errorf(wire.CodeNotFound, "no broadcast %q", name)
	}
	return b, func() {}, nil
}

func newDemo(cfg demoConfig) (*demo, error) {
	d := &demo{cfg: cfg}
	var err error
	if cfg.Name != "" {
		if d.clip, err = clip.Demo(); err != nil {
			return nil, err
		}
	}
	// One embedded registry for both nodes: the edge's viewers show in
	// the API and the dashboard (/dashboard, loopback only) of either.
	if d.reg, err = registry.Open(context.Background(), registry.Options{NodeID: "demo", Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	// The demo's relay listens on loopback only, on any free port.
	if d.origin, err = origin.New(origin.Config{Listen: cfg.OriginListen, RelayListen: "127.0.0.1:0", RTMPListen: cfg.RTMPListen, Registry: d.reg, Logger: cfg.Logger,
		Record: record.Config{Dir: cfg.RecordDir, Always: true, RetentionAge: 24 * time.Hour, MinFree: 1 << 30}}); err != nil {
		d.reg.Close()
		return nil, err
	}
	if d.edge, err = edge.New(edge.Config{Listen: cfg.Listen, WTListen: cfg.WTListen, ACME: cfg.ACME, PlayTokens: cfg.PlayTokens, AuthFlags: cfg.PlayAuth, RecordDir: cfg.RecordDir, HLSPart: cfg.HLSPart, Source: originSource{d.origin}, Registry: d.reg, Logger: cfg.Logger}); err != nil {
		d.origin.Close()
		d.reg.Close()
		return nil, err
	}
	return d, nil
}

// run serves until ctx is done.
func (d *demo) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = d.origin.Run(ctx); cancel() }()
	go func() { defer wg.Done(); errs[1] = d.edge.Run(ctx); cancel() }()
	if d.clip != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errs[2] = d.loop(ctx); cancel() }()
	}
	wg.Wait()
	d.reg.Close()
	return errors.Join(errs...)
}

// loop publishes the built-in clip into the origin.
func (d *demo) loop(ctx context.Context) error {
	s, err := d.origin.Publish(ctx, d.cfg.Name, "", "demo")
	if err != nil {
		if ctx.Err() != nil { // stopped while starting
			return nil
		}
		return err
	}
	err = d.clip.Loop(ctx, s)
	if ctx.Err() != nil { // stopping: the origin may have closed first
		err = nil
	}
	s.Close(err)
	return err
}

// watchURL is the player page of the built-in broadcast.
func (d *demo) watchURL() string {
	if dom := d.cfg.ACME.Domain; dom != "" {
		_, port, _ := net.SplitHostPort(d.edge.Addr().String())
		if port == "443" {
			return fmt.Sprintf("https://%s/watch/%s", dom, d.cfg.Name)
		}
		return fmt.Sprintf("https://%s/watch/%s", net.JoinHostPort(dom, port), d.cfg.Name)
	}
	return fmt.Sprintf("http://%s/watch/%s", browsable(d.edge.Addr()), d.cfg.Name)
}

// browsable turns a listen address into one a browser can open.
func browsable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg demoConfig
	var lf logFlags
	s := config.New("demo", "Demo runs an origin and an edge in one process with a looping built-in test broadcast, and prints the URL of its player page. No Redis, no ffmpeg.")
	s.String(&cfg.Listen, "listen", ":8080", "edge HTTP address: player page and /ws/{broadcast}")
	s.String(&cfg.WTListen, "wt-listen", "same", "edge UDP address for HTTP/3 and WebTransport (/wt/{broadcast}); same: the host and port of -listen; off: WebSocket only")
	s.String(&cfg.OriginListen, "origin-listen", "127.0.0.1:7000", "origin HTTP address: publish more broadcasts to /publish/{broadcast}")
	s.String(&cfg.RTMPListen, "rtmp-listen", "127.0.0.1:1935", "origin RTMP address: publish from OBS or ffmpeg to rtmp://HOST/live/{broadcast}; empty disables RTMP")
	s.String(&cfg.Name, "name", "demo", "name of the built-in test broadcast; empty for none")
	cfg.ACME.Flags(s)
	s.String(&cfg.PlayTokens, "play-tokens", "", "comma-separated tokens a viewer must present (?token=); empty allows anyone")
	s.String(&cfg.RecordDir, "record-dir", "", "record every broadcast into this directory (kept 24 h, 1 GiB left free) and let the player page watch them with ?start=")
	s.Duration(&cfg.HLSPart, "hls-part", 200*time.Millisecond, "least duration of an LL-HLS part (consecutive objects joined; PART-HOLD-BACK is 3 parts); 1ns: one object a part")
	cfg.PlayAuth.Flags(s) // for viewers: JWT (-jwt-secret, -jwt-jwks), -on-play, -allow-play… (see README, Authentication)
	log, err := parse(s, &lf, args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	d, err := newDemo(cfg)
	if err != nil {
		return err
	}
	if cfg.Name != "" {
		fmt.Fprintf(stdout, "watch: %s\n", d.watchURL())
	}
	fmt.Fprintf(stdout, "publish more: quiccast publish -url ws://%s/publish/{name}\n", browsable(d.origin.Addr()))
	if a := d.origin.RTMPAddr(); a != nil {
		fmt.Fprintf(stdout, "or over RTMP: ffmpeg -re -i INPUT -c:v libx264 -c:a aac -f flv rtmp://%s/live/{name}\n", browsable(a))
	}
	fmt.Fprintf(stdout, "LL-HLS: http://%s/hls/{name}/index.m3u8\n", browsable(d.edge.Addr()))
	fmt.Fprintf(stdout, "live now: %s/\n", strings.TrimSuffix(d.watchURL(), "/watch/"+cfg.Name))
	return d.run(ctx)
}
