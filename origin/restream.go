package origin

import (
	"errors"

	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/restream"
)

// startRestream makes the restreamer (shared/restream): -restream rules
// push matching broadcasts when they go live, and the cluster API adds
// and removes targets directly (api.SetRestreamer) or, asked on another
// node, through restream/restream-stop registry events.
func (n *Node) startRestream() error {
	rc := n.cfg.Restream
	rc.Logger = n.log
	rc.Metrics = restream.NewMetrics(n.reg)
	rs, err := restream.New(rc)
	if err != nil {
		return err
	}
	n.restream = rs
	return nil
}

// Restreamer returns the node's restreamer.
func (n *Node) Restreamer() *restream.Manager { return n.restream }

// restreamEvent carries out a restream or restream-stop event (the
// cluster API, called on another node) when this origin holds the
// broadcast. The event's target URL holds the key: it is never logged,
// only its redacted form.
func (n *Node) restreamEvent(ev registry.Event) {
	switch ev.Type {
	case registry.EventRestream:
		st, err := n.restream.Add(ev.Broadcast, ev.Target)
		switch {
		case err == nil:
			n.log.Info("restream added on request", "broadcast", ev.Broadcast, "target_id", st.ID, "requested_on", ev.Node)
		case errors.Is(err, restream.ErrNotLive), errors.Is(err, restream.ErrExists):
			// Not ours, or pushed there already.
		default:
			// ParseTarget's errors never quote the URL.
			n.log.Warn("restream not added", "broadcast", ev.Broadcast, "requested_on", ev.Node, "err", err)
		}
	case registry.EventRestreamStop:
		if _, ok := n.restream.Remove(ev.Broadcast, ev.Target); ok {
			n.log.Info("restream removed on request", "broadcast", ev.Broadcast, "target_id", ev.Target, "requested_on", ev.Node)
		}
	}
}
