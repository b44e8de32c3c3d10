package origin

import (
	"errors"
	"net/http"

	"github.com/quiccast/quiccast/shared/playback"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/registry"
)

// startRecording makes the recorder (nil without -record-dir) and adds its
// routes: playback under /recordings/ on the public mux (play authoriser),
// start/stop/list through the cluster API (shared/api), which reaches the
// recorder directly or, from another node, through recordEvent.
func (n *Node) startRecording(mux *http.ServeMux) error {
	rc := n.cfg.Record
	rc.Logger = n.log
	rc.Metrics = record.NewMetrics(n.reg)
	rec, err := record.New(rc)
	if err != nil || rec == nil {
		return err
	}
	n.rec = rec
	mux.Handle("GET "+playback.Prefix, playback.New(playback.Config{Dir: rc.Dir, Auth: n.cfg.Auth, Logger: n.log, Active: rec.Active}))
	return nil
}

// Recorder returns the node's recorder, nil when recording is off. Its
// Start, Stop and List are what the admin API calls.
func (n *Node) Recorder() *record.Recorder { return n.rec }

// recordEvent carries out a record or record-stop event (the cluster API,
// called on another node) when this origin holds the broadcast.
func (n *Node) recordEvent(ev registry.Event) {
	if n.rec == nil {
		return
	}
	switch ev.Type {
	case registry.EventRecord:
		err := n.rec.Start(ev.Broadcast)
		switch {
		case err == nil:
			n.log.Info("recording started on request", "broadcast", ev.Broadcast, "requested_on", ev.Node)
		case errors.Is(err, record.ErrNotLive), errors.Is(err, record.ErrRecording):
			// Not ours, or already recording.
		default:
			n.log.Warn("recording not started", "broadcast", ev.Broadcast, "requested_on", ev.Node, "err", err)
		}
	case registry.EventRecordStop:
		if n.rec.Stop(ev.Broadcast) {
			n.log.Info("recording stopped on request", "broadcast", ev.Broadcast, "requested_on", ev.Node)
		}
	}
}
