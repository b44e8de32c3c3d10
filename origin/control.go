package origin

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/quiccast/quiccast/shared/api"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/wire"
)

// The origin's part in the cluster-wide API (shared/api): it reports its
// broadcasts' publishers every second, drops a publisher when a drop
// event names a broadcast it holds, and refuses a barred name.

// barred refuses name while an operator's bar on it lasts. Without an
// answer from Redis the publish goes ahead: the bar is a control, the
// registry's outage should not stop every broadcast.
func (c *cluster) barred(ctx context.Context, name string) error {
	left, err := c.reg.Barred(ctx, name)
	if err != nil || left <= 0 {
		return nil
	}
	return wire.Errorf(wire.CodeBarred, "broadcast %q is barred by an operator for another %s", name, left.Round(time.Second))
}

// follow carries out the drop, record and restream events of broadcasts this origin
// holds.
func (c *cluster) follow(ctx context.Context) {
	err := c.reg.Follow(ctx, func(ev registry.Event) {
		switch ev.Type {
		case registry.EventDrop:
			c.n.dropPublisher(ev.Broadcast, ev.Bar, ev.Node)
		case registry.EventRecord, registry.EventRecordStop:
			c.n.recordEvent(ev)
		case registry.EventRestream, registry.EventRestreamStop:
			c.n.restreamEvent(ev)
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, registry.ErrClosed) {
		c.n.log.Warn("following registry events stopped", "err", err)
	}
}

// dropPublisher disconnects name's publisher, if it publishes here, with
// CodeRemoved (or CodeBarred when the name is barred now). The broadcast
// waits Grace for a publisher, as after any publisher leaving.
func (n *Node) dropPublisher(name string, bar time.Duration, by string) {
	n.mu.Lock()
	e := n.bcasts[name]
	var s *Session
	if e != nil {
		s = e.pub
	}
	n.mu.Unlock()
	if s == nil {
		return
	}
	err := wire.Errorf(wire.CodeRemoved, "an operator dropped the publisher of %q", name)
	if bar > 0 {
		err = wire.Errorf(wire.CodeBarred, "an operator dropped the publisher of %q and barred the name for %s", name, bar.Round(time.Second))
	}
	n.log.Warn("publisher dropped by an operator", "broadcast", name, "remote", e.remote, "bar", bar, "requested_on", by)
	s.endWith(err)
}

// report is what this origin tells the registry every second.
func (c *cluster) report() registry.Report {
	n := c.n
	now := time.Now()
	rep := registry.Report{
		Node:       registry.NodeInfo{ID: n.cfg.Peer.ID(), Role: "origin", URL: "http://" + advertised(n.Addr()), Relay: c.advertise},
		Publishers: map[string]registry.PublisherInfo{},
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	rep.Node.Broadcasts = len(n.bcasts)
	seen := make(map[*entry]int64, len(n.bcasts))
	for name, e := range n.bcasts {
		bytes := e.bytes.Load()
		seen[e] = bytes
		if e.pub == nil {
			continue
		}
		p := registry.PublisherInfo{Protocol: e.protocol, Remote: e.remote, Groups: e.groups.Load(), Codecs: []string{}}
		if last, ok := c.lastBytes[e]; ok && !c.lastReport.IsZero() {
			if d := now.Sub(c.lastReport).Seconds(); d > 0 {
				p.Bitrate = int64(float64(bytes-last) * 8 / d)
			}
		}
		if cat := e.b.Catalog(); cat != nil {
			for _, t := range cat.Tracks {
				for _, codec := range strings.Split(t.Codec, ",") {
					p.Codecs = append(p.Codecs, strings.TrimSpace(codec))
				}
				if t.Width > 0 && p.Width == 0 {
					p.Width, p.Height = int(t.Width), int(t.Height)
				}
			}
		}
		rep.Publishers[name] = p
	}
	c.lastBytes, c.lastReport = seen, now
	return rep
}

func (c *cluster) startReports() { c.reporter = api.StartReporter(c.reg, c.report) }
