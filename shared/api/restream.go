package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/restream"
)

// Restreamer is what the API needs of a node's restreamer
// (shared/restream).
type Restreamer interface {
	Add(name, url string) (restream.Status, error)
	Remove(name, id string) (restream.Status, bool)
	List() []restream.Status
}

// SetRestreamer gives the API this node's restreamer: targets of the
// broadcasts this node holds are added and removed at once, and GET
// /restreams lists this node's targets. Without it, or for broadcasts
// another node holds, the request travels as a registry event to the
// holder.
func (a *API) SetRestreamer(r Restreamer) { a.rs = r }

// RestreamRequest is the body of POST /restreams/{name}.
type RestreamRequest struct {
	// URL is rtmp[s]://HOST/APP/STREAMKEY.
	URL string `json:"url"`
}

// RestreamAnswer is a target's status, with why a request failed.
type RestreamAnswer struct {
	restream.Status
	Error string `json:"error,omitempty"`
}

func (a *API) restreamRoutes(m Mux) {
	m.HandleFunc("GET "+Prefix+"/restreams", a.listRestreams)
	m.HandleFunc("POST "+Prefix+"/restreams/{name...}", a.addRestream)
	m.HandleFunc("DELETE "+Prefix+"/restreams/{name...}", a.removeRestream)
}

func (a *API) listRestreams(w http.ResponseWriter, _ *http.Request) {
	list := []restream.Status{}
	if a.rs != nil {
		list = append(list, a.rs.List()...)
	}
	writeJSON(w, http.StatusOK, list)
}

func (a *API) addRestream(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := media.ValidName(name); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	var req RestreamRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 8192))
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&req)
	}
	if err != nil {
		a.fail(w, http.StatusBadRequest, `body: {"url": "rtmp://HOST/APP/STREAMKEY"}`, nil)
		return
	}
	// No ${NAME} expansion here: an API caller must not be able to send
	// this node's environment to a server of its choosing.
	t, err := restream.ParseTarget(req.URL)
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	id := restream.TargetID(name, t)
	if a.rs != nil {
		var st restream.Status
		a.settle(r.Context(), name, func() bool {
			st, err = a.rs.Add(name, req.URL)
			return !errors.Is(err, restream.ErrNotLive)
		})
		status := http.StatusCreated
		switch {
		case err == nil:
		case errors.Is(err, restream.ErrNotLive):
			status = 0 // not held here: ask the holder
		case errors.Is(err, restream.ErrExists):
			status = http.StatusConflict
		case errors.Is(err, restream.ErrLimit):
			status = http.StatusTooManyRequests
		default:
			status = http.StatusInternalServerError
		}
		if status != 0 {
			out := RestreamAnswer{Status: st}
			if err != nil {
				out.Error = t.Redact(err.Error())
				a.log.Warn("api: restream not added", "broadcast", name, "target_id", id, "err", out.Error)
			} else {
				a.log.Info("api: restream added", "broadcast", name, "target_id", id, "url", t.String(), "remote", r.RemoteAddr)
			}
			writeJSON(w, status, out)
			return
		}
	}
	a.sendToHolder(w, r, registry.Event{Type: registry.EventRestream, Broadcast: name, Target: t.Raw()},
		"restream", "no live broadcast %q on this node", a.rs != nil, id)
}

func (a *API) removeRestream(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := media.ValidName(name); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	id := r.URL.Query().Get("id")
	if !restream.ValidID(id) {
		a.fail(w, http.StatusBadRequest, "?id=TARGET_ID (12 hex digits, from GET /api/v1/restreams or the POST's answer)", nil)
		return
	}
	if a.rs != nil {
		if st, ok := a.rs.Remove(name, id); ok {
			writeJSON(w, http.StatusOK, RestreamAnswer{Status: st})
			return
		}
	}
	a.sendToHolder(w, r, registry.Event{Type: registry.EventRestreamStop, Broadcast: name, Target: id},
		"restream-stop", fmt.Sprintf("no restream target %s of %%q", id), a.rs != nil, id)
}
