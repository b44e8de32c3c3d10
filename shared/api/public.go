package api

import (
	"context"
	"sort"
	"time"

	"github.com/quiccast/quiccast/shared/registry"
)

// Listing is what anyone may know of a live broadcast, for an edge's
// public landing page: no origin, relay or publisher address.
type Listing struct {
	Name string `json:"name"`
	// Live is true while a publisher sends (false: it is reconnecting).
	Live    bool      `json:"live"`
	Started time.Time `json:"started"`
	// Viewers is the sum over every edge and transport.
	Viewers int      `json:"viewers"`
	Width   int      `json:"width,omitempty"`
	Height  int      `json:"height,omitempty"`
	Codecs  []string `json:"codecs,omitempty"`
	// Watch is the path of its watch page.
	Watch string `json:"watch"`
}

// WatchPath is the path of name's watch page on an edge.
func WatchPath(name string) string { return "/watch/" + name }

// PublicList lists the live broadcasts, the most watched first (then by
// name), at most limit of them; more is true when there were more.
func PublicList(ctx context.Context, reg *registry.Registry, limit int) (out []Listing, more bool, err error) {
	bs, err := reg.List(ctx)
	if err != nil {
		return nil, false, err
	}
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.Name
	}
	// Without the reports the list still answers, with no figures.
	live, _ := reg.Details(ctx, names)
	out = make([]Listing, 0, len(bs))
	for _, b := range bs {
		d := describe(b, live[b.Name])
		l := Listing{Name: b.Name, Live: b.Publishing, Started: b.Started, Viewers: d.Viewers.Total, Watch: WatchPath(b.Name)}
		if p := d.Publisher; p != nil {
			l.Width, l.Height, l.Codecs = p.Width, p.Height, p.Codecs
		}
		out = append(out, l)
	}
	SortListings(out)
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// SortListings puts the most watched first, then by name.
func SortListings(ls []Listing) {
	sort.Slice(ls, func(i, j int) bool {
		if ls[i].Viewers != ls[j].Viewers {
			return ls[i].Viewers > ls[j].Viewers
		}
		return ls[i].Name < ls[j].Name
	})
}
