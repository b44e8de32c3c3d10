package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/registry"
)

// Recorder is what the API needs of a node's recorder (shared/record).
type Recorder interface {
	Start(name string) error
	Stop(name string) bool
	List() []record.Status
}

// SetRecorder gives the API this node's recorder: recordings of the
// broadcasts this node holds start and stop at once, and GET /recordings
// lists this node's recordings. Without it, or for broadcasts another node
// holds, the request travels as a registry event to the holder.
func (a *API) SetRecorder(r Recorder) { a.rec = r }

// RecordingAnswer is a recording's status, with why a request failed.
type RecordingAnswer struct {
	record.Status
	Error string `json:"error,omitempty"`
}

func (a *API) recordingRoutes(m Mux) {
	m.HandleFunc("GET "+Prefix+"/recordings", a.listRecordings)
	m.HandleFunc("POST "+Prefix+"/recordings/{name...}", a.startRecording)
	m.HandleFunc("DELETE "+Prefix+"/recordings/{name...}", a.stopRecording)
}

func (a *API) listRecordings(w http.ResponseWriter, _ *http.Request) {
	list := []record.Status{}
	if a.rec != nil {
		list = append(list, a.rec.List()...)
	}
	writeJSON(w, http.StatusOK, list)
}

func (a *API) startRecording(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := media.ValidName(name); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if a.rec != nil {
		var err error
		a.settle(r.Context(), name, func() bool {
			err = a.rec.Start(name)
			return !errors.Is(err, record.ErrNotLive)
		})
		status := http.StatusCreated
		switch {
		case err == nil:
		case errors.Is(err, record.ErrNotLive):
			status = 0 // not held here: ask the holder
		case errors.Is(err, record.ErrRecording):
			status = http.StatusConflict
		case errors.Is(err, record.ErrDiskFull):
			status = http.StatusInsufficientStorage
		default:
			status = http.StatusInternalServerError
		}
		if status != 0 {
			if err != nil {
				a.log.Warn("api: recording not started", "broadcast", name, "err", err)
			}
			a.writeRecording(w, status, name, err)
			return
		}
	}
	a.sendToHolder(w, r, registry.Event{Type: registry.EventRecord, Broadcast: name}, "record", "no live broadcast %q on this node", a.rec != nil, "")
}

func (a *API) stopRecording(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := media.ValidName(name); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if a.rec != nil && a.rec.Stop(name) {
		a.writeRecording(w, http.StatusOK, name, nil)
		return
	}
	a.sendToHolder(w, r, registry.Event{Type: registry.EventRecordStop, Broadcast: name}, "record-stop", "not recording %q", a.rec != nil, "")
}

// settleFor bounds how long a request waits for this node's recorder or
// restreamer to learn of a broadcast the registry says this node holds.
const settleFor = 2 * time.Second

// settle runs try, and again every 50 ms for up to settleFor while it
// says the broadcast is not live here (false) although the registry says
// this node holds it: an origin claims a broadcast in the registry a
// moment before its recorder and restreamer learn of it, and a request in
// that moment must not get 404. It returns try's last answer.
func (a *API) settle(ctx context.Context, name string, try func() bool) bool {
	if try() || a.reg == nil {
		return true
	}
	b, err := a.reg.Lookup(ctx, name)
	if err != nil || b.Origin != a.reg.NodeID() {
		return false
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(settleFor)
	defer deadline.Stop()
	for {
		select {
		case <-tick.C:
			if try() {
				return true
			}
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// sendToHolder carries a request about a broadcast's recording or
// restreams (ev) to the origin that holds the broadcast. When this node is
// the holder and asked its own recorder or restreamer (local), that
// already said no: notHere (a format with the name) is the answer. id is
// the restream target's id for the answer.
func (a *API) sendToHolder(w http.ResponseWriter, r *http.Request, ev registry.Event, action, notHere string, local bool, id string) {
	name := ev.Broadcast
	if a.reg == nil {
		a.fail(w, http.StatusNotFound, fmt.Sprintf("no live broadcast %q on this node", name), nil)
		return
	}
	b, err := a.reg.Lookup(r.Context(), name)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		a.fail(w, http.StatusNotFound, fmt.Sprintf("no live broadcast %q", name), nil)
		return
	case err != nil:
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	if local && b.Origin == a.reg.NodeID() {
		a.fail(w, http.StatusNotFound, fmt.Sprintf(notHere, name), nil)
		return
	}
	if err := a.reg.PublishEvent(r.Context(), ev); err != nil {
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	a.log.Info(action+" requested", "broadcast", name, "holder", b.Origin, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, Action{Action: action, Broadcast: name, Node: b.Origin, ID: id})
}

// writeRecording answers with name's recording status on this node.
func (a *API) writeRecording(w http.ResponseWriter, status int, name string, err error) {
	out := RecordingAnswer{Status: record.Status{Broadcast: name, State: "none"}}
	for _, st := range a.rec.List() {
		if st.Broadcast == name {
			out.Status = st
		}
	}
	if err != nil {
		out.Error = err.Error()
	}
	writeJSON(w, status, out)
}
