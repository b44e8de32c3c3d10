// Package api is the cluster-wide control API every node serves on its
// admin surface (shared/admin) under /api/v1/: the live broadcasts with
// their publishers and viewers on every edge, the nodes, and the actions
// drop (a publisher, optionally barring the name) and kick (a broadcast's
// viewers). Everything is read from and sent through the registry, so any
// node answers for the whole cluster: an action becomes a qc:events event
// that the node holding the publisher or the viewers carries out. The
// routes are described by openapi.yaml, served at /api/v1/openapi.yaml.
package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/registry"
)

// Prefix is the API's path prefix; a later, incompatible version gets
// another.
const Prefix = "/api/v1"

// MaxBar bounds the bar of a drop.
const MaxBar = 7 * 24 * time.Hour

//go:embed openapi.yaml
var OpenAPI []byte

//go:embed dashboard.html
var dashboard []byte

// DashboardPath is where the dashboard page is served.
const DashboardPath = "/dashboard"

// Mux is where the routes go: *admin.Surface, or an *http.ServeMux in
// tests.
type Mux interface {
	HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request))
}

// API serves the routes of one node.
type API struct {
	reg *registry.Registry
	log *slog.Logger
	rec Recorder // nil: requests go to the holder through the registry
	rs  Restreamer
}

// New returns the API on reg.
func New(reg *registry.Registry, log *slog.Logger) *API {
	if log == nil {
		log = slog.Default()
	}
	return &API{reg: reg, log: log.With("component", "api")}
}

// Routes adds the API's routes to m.
func (a *API) Routes(m Mux) {
	m.HandleFunc("GET "+Prefix+"/broadcasts", a.listBroadcasts)
	m.HandleFunc("GET "+Prefix+"/broadcasts/{name...}", a.getBroadcast)
	m.HandleFunc("GET "+Prefix+"/nodes", a.listNodes)
	m.HandleFunc("POST "+Prefix+"/drop/{name...}", a.drop)
	m.HandleFunc("POST "+Prefix+"/kick/{name...}", a.kick)
	a.recordingRoutes(m)
	a.restreamRoutes(m)
	m.HandleFunc("GET "+Prefix+"/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(OpenAPI)
	})
}

// Pages adds the dashboard page to m (behind the admin guard, which
// answers a browser without the credential with the login form).
func (a *API) Pages(m Mux) {
	m.HandleFunc("GET "+DashboardPath, func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		// Its buttons drop publishers: no other site may frame it.
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		w.Write(dashboard)
	})
}

// Broadcast is one live broadcast, cluster-wide.
type Broadcast struct {
	Name       string                  `json:"name"`
	Origin     string                  `json:"origin"`
	Relay      string                  `json:"relay"`
	Publishing bool                    `json:"publishing"`
	Epoch      uint64                  `json:"epoch"`
	Started    time.Time               `json:"started"`
	Publisher  *registry.PublisherInfo `json:"publisher"`
	Viewers    Viewers                 `json:"viewers"`
}

// Viewers counts a broadcast's viewers.
type Viewers struct {
	Total       int                       `json:"total"`
	ByTransport map[string]int            `json:"byTransport"`
	ByNode      map[string]map[string]int `json:"byNode"`
}

// Node is one node that reported in the last few seconds.
type Node struct {
	registry.NodeInfo
	Uptime float64 `json:"uptimeSeconds"`
}

// Action is the answer to drop and kick.
type Action struct {
	Action    string  `json:"action"`
	Broadcast string  `json:"broadcast"`
	Bar       float64 `json:"barSeconds"`
	Node      string  `json:"node"` // where the publisher is (drop)
	// ID is the restream target's id (restream, restream-stop).
	ID string `json:"id,omitempty"`
}

// DropRequest is the optional body of a drop.
type DropRequest struct {
	// Bar refuses new publishers of the name for this many seconds.
	Bar float64 `json:"barSeconds"`
}

type apiError struct {
	Error string `json:"error"`
}

func (a *API) listBroadcasts(w http.ResponseWriter, r *http.Request) {
	bs, err := a.reg.List(r.Context())
	if err != nil {
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.Name
	}
	// Two round trips for all of them; without the reports the list
	// still answers, with empty figures.
	live, _ := a.reg.Details(r.Context(), names)
	out := make([]Broadcast, 0, len(bs))
	for _, b := range bs {
		out = append(out, describe(b, live[b.Name]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, map[string]any{"broadcasts": out})
}

func (a *API) getBroadcast(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := media.ValidName(name); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
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
	live, _ := a.reg.Details(r.Context(), []string{name})
	writeJSON(w, http.StatusOK, describe(*b, live[name]))
}

// describe adds what the holder and the edges reported (l) to b.
func describe(b registry.Broadcast, l registry.Live) Broadcast {
	out := Broadcast{Name: b.Name, Origin: b.Origin, Relay: b.Relay, Publishing: b.Publishing, Epoch: b.Epoch, Started: b.Started,
		Viewers: Viewers{ByTransport: map[string]int{}, ByNode: map[string]map[string]int{}}}
	if b.Publishing {
		out.Publisher = l.Publisher
	}
	for node, by := range l.Viewers {
		out.Viewers.ByNode[node] = by
		for tr, n := range by {
			out.Viewers.ByTransport[tr] += n
			out.Viewers.Total += n
		}
	}
	return out
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request) {
	ns, err := a.reg.Nodes(r.Context())
	if err != nil {
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	out := make([]Node, len(ns))
	for i, n := range ns {
		out[i] = Node{NodeInfo: n, Uptime: n.Reported.Sub(n.Started).Seconds()}
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

// drop bars the name (if asked) and tells the holder to drop the
// publisher; the bar is written first, so the dropped publisher cannot
// come straight back.
func (a *API) drop(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := media.ValidName(name); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	var req DropRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err == nil && len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&req)
	}
	if err != nil || req.Bar < 0 || req.Bar > MaxBar.Seconds() {
		a.fail(w, http.StatusBadRequest, fmt.Sprintf(`body: {"barSeconds": 0..%d} or nothing`, int(MaxBar.Seconds())), nil)
		return
	}
	bar := time.Duration(req.Bar * float64(time.Second))
	b, err := a.reg.Lookup(r.Context(), name)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		if bar == 0 {
			a.fail(w, http.StatusNotFound, fmt.Sprintf("no live broadcast %q", name), nil)
			return
		}
		b = &registry.Broadcast{}
	case err != nil:
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	if err := a.reg.Bar(r.Context(), name, bar); err != nil {
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	if err := a.reg.PublishEvent(r.Context(), registry.Event{Type: registry.EventDrop, Broadcast: name, Bar: bar}); err != nil {
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	a.log.Info("drop publisher requested", "broadcast", name, "holder", b.Origin, "bar", bar, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, Action{Action: "drop", Broadcast: name, Bar: bar.Seconds(), Node: b.Origin})
}

func (a *API) kick(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := media.ValidName(name); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if err := a.reg.PublishEvent(r.Context(), registry.Event{Type: registry.EventKick, Broadcast: name}); err != nil {
		a.fail(w, http.StatusServiceUnavailable, "registry unavailable", err)
		return
	}
	a.log.Info("kick viewers requested", "broadcast", name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, Action{Action: "kick", Broadcast: name})
}

func (a *API) fail(w http.ResponseWriter, status int, msg string, err error) {
	if err != nil {
		a.log.Warn("api: "+msg, "err", err)
	} else {
		a.log.Info("api: request refused", "status", status, "why", msg)
	}
	writeJSON(w, status, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
