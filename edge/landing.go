package edge

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/api"
)

// The edge's front page (GET /) lists the live broadcasts, the most
// watched first, each linking to its watch page; GET /broadcasts.json is
// the same list for other pages and apps. Both come from the registry (the
// whole cluster; an edge with only -parent lists the broadcasts it serves
// now), at most one registry read a second however many ask.
//
// Who may see it (-public-list): "auto" shows it unless viewers need a
// grant to play (play tokens, JWT, a webhook, CIDR rules): an edge whose
// broadcasts are private does not advertise their names. "on" shows it
// anyway, "off" never.

//go:embed landing.html
var landingHTML string

var landingPage = template.Must(template.New("landing").Parse(landingHTML))

const (
	// landingMax bounds the broadcasts listed.
	landingMax = 500
	// landingFresh: a list this young is served from memory.
	landingFresh = time.Second
	// landingStale: when the registry fails, a list this young is still
	// served.
	landingStale = 30 * time.Second
)

// listing is the cached public list.
type listing struct {
	n *Node

	mu   sync.Mutex // held while the registry is read: one read at a time
	at   time.Time
	list []api.Listing
	more bool
}

// hidden says why the list is not shown, or "".
func (n *Node) listHidden() string {
	switch n.cfg.PublicList {
	case "on":
		return ""
	case "off":
		return "This edge does not list its broadcasts."
	}
	if n.playGated {
		return "This edge's broadcasts need a token to watch, so it does not list them."
	}
	return ""
}

// get returns the list, from memory when it is fresh.
func (l *listing) get() ([]api.Listing, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.at) < landingFresh {
		return l.list, l.more, nil
	}
	ctx, cancel := context.WithTimeout(l.n.ctx, 2*time.Second)
	defer cancel()
	list, more, err := l.read(ctx)
	if err != nil {
		if time.Since(l.at) < landingStale {
			return l.list, l.more, nil
		}
		return nil, false, err
	}
	l.at, l.list, l.more = time.Now(), list, more
	return list, more, nil
}

func (l *listing) read(ctx context.Context) ([]api.Listing, bool, error) {
	if reg := l.n.registry(); reg != nil {
		return api.PublicList(ctx, reg, landingMax)
	}
	// No registry (-parent only): what this edge serves now.
	n := l.n
	n.mu.Lock()
	out := make([]api.Listing, 0, len(n.watch))
	for name, w := range n.watch {
		li := api.Listing{Name: name, Live: true, Watch: api.WatchPath(name)}
		for _, c := range w.by {
			li.Viewers += c
		}
		if u := n.ups[name]; u != nil {
			if c := u.b.Catalog(); c != nil {
				li.Started = time.UnixMicro(c.Started)
			}
		}
		out = append(out, li)
	}
	n.mu.Unlock()
	api.SortListings(out)
	if len(out) > landingMax {
		return out[:landingMax], true, nil
	}
	return out, false, nil
}

// serveLanding answers GET /: the list, or the player page for the old
// /?b={broadcast} links.
func (n *Node) serveLanding(player http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("b") {
			player(w, r)
			return
		}
		data := struct {
			Hidden string
			List   []api.Listing
			More   bool
		}{Hidden: n.listHidden()}
		status := http.StatusOK
		if data.Hidden == "" {
			var err error
			if data.List, data.More, err = n.list.get(); err != nil {
				n.log.Warn("landing page: cannot list the broadcasts", "err", err)
				data.Hidden = "The list of broadcasts is unavailable for a moment; this page will have it again shortly."
				status = http.StatusServiceUnavailable
				w.Header().Set("Retry-After", "5")
			}
		}
		var b bytes.Buffer
		if err := landingPage.Execute(&b, data); err != nil {
			n.log.Error("landing page", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		w.Write(b.Bytes())
	}
}

// serveListJSON answers GET /broadcasts.json.
func (n *Node) serveListJSON(w http.ResponseWriter, r *http.Request) {
	n.cors(w, r)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	fail := func(status int, msg string) {
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	if why := n.listHidden(); why != "" {
		fail(http.StatusForbidden, why+" (an operator can set -public-list on)")
		return
	}
	list, more, err := n.list.get()
	if err != nil {
		n.log.Warn("broadcasts.json: cannot list the broadcasts", "err", err)
		h.Set("Retry-After", "5")
		fail(http.StatusServiceUnavailable, "the list of broadcasts is unavailable for a moment")
		return
	}
	if list == nil {
		list = []api.Listing{}
	}
	json.NewEncoder(w).Encode(struct {
		Broadcasts []api.Listing `json:"broadcasts"`
		More       bool          `json:"more"`
	}{list, more})
}

// checkPublicList validates -public-list.
func checkPublicList(v string) error {
	switch v {
	case "auto", "on", "off":
		return nil
	}
	return fmt.Errorf("edge: -public-list %q: want auto, on or off", v)
}
