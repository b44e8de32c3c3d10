package edge

import (
	"crypto/rand"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// LL-HLS viewers are plain HTTP requests, not connections. To count them
// (and kick them) like the other transports, the edge gives each player a
// session id: a first request for index.m3u8 without one is redirected to
// the same URL with hlsSessionParam added. Players reload the playlist by
// the URL they were redirected to (hls.js, Safari and ffmpeg all do), and
// a multivariant playlist passes the id on to its media playlists, so the
// playlist requests of one player carry one id. Segment and part URIs do
// not carry it: they stay the same for every player, and cacheable.
//
// A session is a viewer (counted in Node.joined under "hls", and against
// -max-viewers) from its first playlist request until it has fetched no
// playlist for hlsState's idle time. A kick ends the broadcast's sessions:
// their next request gets 410 with the reason, and their ids stay refused
// until they expire; a player that starts over gets a new id, as a kicked
// WebSocket viewer may connect again.

// hlsSessionParam is the query parameter of the session id.
const hlsSessionParam = "_qcs"

// hlsSessionIdle is how long a session lives without a playlist request,
// at least (three target durations when they are longer): LL-HLS players
// reload the playlist every part, plain HLS ones every target duration.
const hlsSessionIdle = 10 * time.Second

// hlsSessionLen is the length of an id: 16 of [0-9a-v] (80 bits).
const hlsSessionLen = 16

type hlsSession struct {
	name  string
	last  time.Time
	idle  time.Duration
	kick  <-chan struct{}
	ended bool // kicked: refused until it expires, no longer counted
}

// hlsSessions are the LL-HLS viewers of a node.
type hlsSessions struct {
	n *Node
	// A session ends after idle, or targets target durations when that
	// is longer, without a playlist request; tests shorten both.
	idle    time.Duration
	targets int

	mu sync.Mutex
	by map[string]*hlsSession
}

func newHLSSessions(n *Node) *hlsSessions {
	return &hlsSessions{n: n, idle: hlsSessionIdle, targets: 3, by: map[string]*hlsSession{}}
}

// newSessionID returns a fresh session id.
func newSessionID() string {
	const digits = "0123456789abcdefghijklmnopqrstuv"
	var b [hlsSessionLen]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = digits[b[i]&31]
	}
	return string(b[:])
}

// validSessionID reports whether id is shaped like newSessionID's.
func validSessionID(id string) bool {
	if len(id) != hlsSessionLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}

// redirect sends a first playlist request to its URL with a new session
// id. Safari, hls.js and ffmpeg reload the playlist from the URL they
// were redirected to.
func (s *hlsSessions) redirect(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	q.Set(hlsSessionParam, newSessionID())
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// touch counts the playlist request of session id for name: it starts the
// session (refused when the node is full), or refreshes it, or refuses a
// kicked one. target is the playlist's target duration.
func (s *hlsSessions) touch(id, name string, target time.Duration) error {
	now := time.Now()
	idle := max(time.Duration(s.targets)*target, s.idle)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.by[id]; ss != nil && ss.name == name {
		if ss.ended || kicked(ss.kick) {
			s.end(id, ss)
			return errRemoved
		}
		ss.last, ss.idle = now, idle
		return nil
	} else if ss != nil {
		// One id, another broadcast (a player that changed channels
		// with its old URL's query): a session of its own.
		s.end(id, ss)
		delete(s.by, id)
	}
	n := s.n
	n.mu.Lock()
	err := n.takeViewerLocked()
	n.mu.Unlock()
	if err != nil {
		return err
	}
	s.by[id] = &hlsSession{name: name, last: now, idle: idle, kick: n.joined(name, transportHLS).Done()}
	n.metrics.viewers.WithLabelValues(transportHLS).Inc()
	return nil
}

// end stops counting session ss; it stays in the map, refused, until
// it expires. s.mu is held.
func (s *hlsSessions) end(id string, ss *hlsSession) {
	if ss.ended {
		return
	}
	ss.ended = true
	n := s.n
	n.parted(ss.name, transportHLS)
	n.releaseViewer()
	n.metrics.viewers.WithLabelValues(transportHLS).Dec()
	n.log.Debug("LL-HLS viewer left", "broadcast", ss.name, "session", id)
}

// kick ends the sessions of name now: their next request is refused.
func (s *hlsSessions) kick(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ss := range s.by {
		if ss.name == name {
			s.end(id, ss)
		}
	}
}

// sweep ends the sessions idle for longer than their idle time, and
// forgets the ended ones.
func (s *hlsSessions) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ss := range s.by {
		if now.Sub(ss.last) > ss.idle {
			s.end(id, ss)
			delete(s.by, id)
		}
	}
}

// run sweeps every second until the node closes, then ends every session.
func (s *hlsSessions) run() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			s.sweep(now)
		case <-s.n.ctx.Done():
			s.sweep(time.Now().Add(24 * time.Hour))
			return
		}
	}
}
