package edge

import (
	"context"
	"net"
	"os"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/wire"
)

// The edge's part in the cluster-wide API (shared/api): it counts its
// viewers per broadcast and transport, reports them every second, and
// disconnects a broadcast's viewers when a kick event names it.

// watchers are one broadcast's viewers on this node. Guarded by Node.mu.
type watchers struct {
	by     map[string]int  // transport -> viewers
	kick   context.Context // cancelled (and replaced) by a kick
	kicked context.CancelFunc
}

// Transports counted per broadcast. LL-HLS viewers are sessions
// (hls_session.go).
const (
	transportWS  = "ws"
	transportWT  = "wt"
	transportHLS = "hls"
)

// errRemoved ends the viewers of a kicked broadcast.
var errRemoved = wire.Errorf(wire.CodeRemoved, "an operator removed the viewers of this broadcast")

// joined counts a viewer of name in and returns the context a kick of
// name cancels (a context, so that a session can have a function run on
// a kick without a goroutine waiting for it).
func (n *Node) joined(name, transport string) context.Context {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.watch[name]
	if w == nil {
		w = &watchers{by: map[string]int{}}
		w.kick, w.kicked = context.WithCancel(context.Background())
		n.watch[name] = w
	}
	w.by[transport]++
	return w.kick
}

// parted counts a viewer of name out.
func (n *Node) parted(name, transport string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.watch[name]
	if w == nil {
		return
	}
	if w.by[transport]--; w.by[transport] <= 0 {
		delete(w.by, transport)
	}
	if len(w.by) == 0 {
		delete(n.watch, name)
	}
}

// kickViewers disconnects every viewer of name now on this node with
// CodeRemoved; viewers that come later are let in.
func (n *Node) kickViewers(name string) {
	n.mu.Lock()
	w := n.watch[name]
	if w == nil {
		n.mu.Unlock()
		return
	}
	w.kicked()
	w.kick, w.kicked = context.WithCancel(context.Background())
	viewers := 0
	for _, c := range w.by {
		viewers += c
	}
	var fan *fanout
	if u := n.ups[name]; u != nil {
		fan = u.fan
	}
	n.mu.Unlock()
	if fan != nil {
		for _, s := range fan.shards {
			s.kick() // its viewers see the closed channel at once
		}
	}
	n.hls.sessions.kick(name)
	n.log.Warn("viewers kicked by an operator", "broadcast", name, "viewers", viewers)
}

// kicked reports whether c is closed.
func kicked(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// event carries out the registry events meant for edges.
func (n *Node) event(ev registry.Event) {
	if ev.Type == registry.EventKick {
		n.kickViewers(ev.Broadcast)
	}
}

// report is what this edge tells the registry every second.
func (n *Node) report(url string) registry.Report {
	rep := registry.Report{
		Node:    registry.NodeInfo{ID: n.cfg.Peer.ID(), Role: "edge", URL: url, Relay: n.RelayAddr()},
		Viewers: map[string]map[string]int{},
	}
	rep.Node.Region, rep.Node.MaxViewers, rep.Node.MaxEgressBps, rep.Node.NoRoute = n.cfg.Region, n.cfg.MaxViewers, n.cfg.MaxEgress, n.cfg.NoRoute
	rep.Node.EgressBps = n.egress.rate(n.sentBytes())
	n.mu.Lock()
	defer n.mu.Unlock()
	rep.Node.Draining = n.closed || n.draining
	rep.Node.Viewers = n.viewers
	rep.Node.Broadcasts = len(n.watch)
	for name, w := range n.watch {
		by := make(map[string]int, len(w.by))
		for t, c := range w.by {
			by[t] = c
		}
		rep.Viewers[name] = by
	}
	return rep
}

// registry is the node's registry, nil when it has none (-parent only).
func (n *Node) registry() *registry.Registry {
	if n.cfg.Registry != nil {
		return n.cfg.Registry
	}
	return n.dir
}

// apiRoutes serves the cluster-wide API when the node has a registry.
func (n *Node) apiRoutes() {
	if reg := n.registry(); reg != nil {
		ctl := api.New(reg, n.log)
		ctl.Routes(n.admin)
		ctl.Pages(n.admin)
	}
}

// startReports runs before the listener serves: http.Server.Serve may
// fill in TLSConfig, which publicURL reads.
func (n *Node) startReports() {
	if reg := n.registry(); reg != nil {
		url := n.publicURL()
		n.reporter = api.StartReporter(reg, func() registry.Report { return n.report(url) })
		if n.cluster == nil {
			// No RelaySource follows the registry (an in-process
			// Source, as in the demo): follow it here for the kicks.
			n.bg.Add(1)
			go func() { defer n.bg.Done(); reg.Follow(n.ctx, n.event) }()
		}
	}
}

// publicURL is where viewers reach this node: the ACME domain, or the
// listener with this host's name for an unspecified address.
func (n *Node) publicURL() string {
	scheme := "http"
	if n.srv != nil && n.srv.TLSConfig != nil {
		scheme = "https"
	}
	if n.cfg.ACME.Domain != "" {
		return "https://" + n.cfg.ACME.Domain
	}
	host, port, err := net.SplitHostPort(n.Addr().String())
	if err != nil {
		return scheme + "://" + n.Addr().String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
