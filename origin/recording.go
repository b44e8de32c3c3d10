package origin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/quiccast/quiccast/shared/playback"
	"github.com/quiccast/quiccast/shared/record"
)

// startRecording makes the recorder (nil without -record-dir) and adds its
// routes: playback under /recordings/ on the public mux (play authoriser),
// start/stop/list on the admin surface.
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
	n.admin.HandleFunc("POST /api/v1/broadcasts/{name}/recording", n.serveRecordStart)
	n.admin.HandleFunc("DELETE /api/v1/broadcasts/{name}/recording", n.serveRecordStop)
	n.admin.HandleFunc("GET /api/v1/recordings", n.serveRecordList)
	return nil
}

// Recorder returns the node's recorder, nil when recording is off. Its
// Start, Stop and List are what the admin API calls.
func (n *Node) Recorder() *record.Recorder { return n.rec }

func (n *Node) serveRecordStart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := n.rec.Start(name)
	status := http.StatusCreated
	switch {
	case err == nil:
	case errors.Is(err, record.ErrNotLive):
		status = http.StatusNotFound
	case errors.Is(err, record.ErrRecording):
		status = http.StatusConflict
	case errors.Is(err, record.ErrDiskFull):
		status = http.StatusInsufficientStorage
	default:
		status = http.StatusInternalServerError
	}
	n.writeRecordStatus(w, status, name, err)
}

func (n *Node) serveRecordStop(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !n.rec.Stop(name) {
		n.writeRecordStatus(w, http.StatusNotFound, name, errors.New("not recording"))
		return
	}
	n.writeRecordStatus(w, http.StatusOK, name, nil)
}

// writeRecordStatus answers with the broadcast's recording status and the
// error, if any.
func (n *Node) writeRecordStatus(w http.ResponseWriter, status int, name string, err error) {
	out := struct {
		record.Status
		Error string `json:"error,omitempty"`
	}{Status: record.Status{Broadcast: name, State: "none"}}
	for _, st := range n.rec.List() {
		if st.Broadcast == name {
			out.Status = st
		}
	}
	if err != nil {
		out.Error = err.Error()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(out)
}

func (n *Node) serveRecordList(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	list := n.rec.List()
	if list == nil {
		list = []record.Status{}
	}
	_ = json.NewEncoder(w).Encode(list)
}
