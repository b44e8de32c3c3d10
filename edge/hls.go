package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/wire"
)

// LL-HLS (RFC 8216bis) at /hls/{broadcast}/…:
//
//	index.m3u8                         the media playlist (a multivariant one when the catalog has several tracks)
//	media-{track}.m3u8                 the media playlist of one track
//	init-{inst}-{track}-{epoch}.mp4    init segment of an epoch
//	seg-{inst}-{track}-{group}.m4s     segment = one group: its objects' payloads back to back
//	part-{inst}-{track}-{group}-{i}.m4s part = consecutive objects' payloads, at least Config.HLSPart long
//
// {inst} is the broadcast's start time (base 36), so a later broadcast of
// the same name never reuses a URI: media URIs are immutable and may be
// cached for good. The media sequence number is the group number, which
// rises across publisher reconnects; a new epoch is a discontinuity with
// its own EXT-X-MAP.
//
// Every request holds the broadcast's upstream subscription while it runs
// (attach/detach); -linger keeps it between a player's requests.

const (
	hlsVersion = 9 // EXT-X-SKIP needs 9
	// hlsPartsWindow: parts are listed for the segments within this many
	// target durations of the end (RFC 8216bis §4.4.4.9: at least 3).
	hlsPartsWindow = 3
	// hlsMinBlock is the least a blocked request waits before 503.
	hlsMinBlock = 3 * time.Second
)

type hlsServer struct {
	n *Node

	mu     sync.Mutex
	states map[*media.Broadcast]*hlsState

	drain     chan struct{}
	drainOnce sync.Once

	sessions *hlsSessions

	requests *prometheus.CounterVec
	blocked  prometheus.Gauge
}

func newHLSServer(n *Node) *hlsServer {
	h := &hlsServer{
		n:      n,
		states: map[*media.Broadcast]*hlsState{},
		drain:  make(chan struct{}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quiccast_edge_hls_requests_total",
			Help: "LL-HLS requests answered, by kind (playlist, init, segment, part) and HTTP status.",
		}, []string{"kind", "status"}),
		blocked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "quiccast_edge_hls_blocked_requests",
			Help: "LL-HLS requests waiting now for a part or segment that does not exist yet.",
		}),
	}
	n.reg.MustRegister(h.requests, h.blocked)
	h.sessions = newHLSSessions(n)
	n.bg.Add(1)
	go func() { defer n.bg.Done(); h.sessions.run() }()
	return h
}

func (h *hlsServer) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /hls/{path...}", h.serve)
}

// shutdown releases blocked requests at once, so that a draining edge does
// not wait for them.
func (h *hlsServer) shutdown() { h.drainOnce.Do(func() { close(h.drain) }) }

// state returns the HLS state of b, creating it, and forgets the states of
// broadcasts that ended or went unrequested.
func (h *hlsServer) state(b *media.Broadcast) *hlsState {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	st := h.states[b]
	if st == nil {
		for ob, s := range h.states {
			s.mu.Lock()
			idle := now.Sub(s.used) > h.n.cfg.Linger+time.Minute
			s.mu.Unlock()
			if ob.Closed() || idle {
				delete(h.states, ob)
			}
		}
		st = newHLSState(b, h.n.cfg.HLSPart)
		h.states[b] = st
	}
	st.mu.Lock()
	st.used = now
	st.mu.Unlock()
	return st
}

// hlsFile is a parsed file name.
type hlsFile struct {
	kind  string // "index", "media", "init", "segment", "part"
	inst  string
	track uint16
	num   uint64 // epoch (init) or group
	index int    // part
	// private: the answer was authorised for this viewer (play tokens are
	// on, or the request carried one), so no shared cache may keep it.
	private bool
}

// cache is the Cache-Control of an answer to f: cc, made private when the
// answer was authorised for one viewer.
func (f hlsFile) cache(cc string) string {
	if !f.private {
		return cc
	}
	if rest, ok := strings.CutPrefix(cc, "public"); ok {
		return "private" + rest
	}
	return "private, " + cc
}

func parseHLSFile(f string) (hlsFile, bool) {
	if f == "index.m3u8" {
		return hlsFile{kind: "index"}, true
	}
	var kind, rest string
	switch {
	case strings.HasPrefix(f, "media-") && strings.HasSuffix(f, ".m3u8"):
		kind, rest = "media", strings.TrimSuffix(strings.TrimPrefix(f, "media-"), ".m3u8")
	case strings.HasPrefix(f, "init-") && strings.HasSuffix(f, ".mp4"):
		kind, rest = "init", strings.TrimSuffix(strings.TrimPrefix(f, "init-"), ".mp4")
	case strings.HasPrefix(f, "seg-") && strings.HasSuffix(f, ".m4s"):
		kind, rest = "segment", strings.TrimSuffix(strings.TrimPrefix(f, "seg-"), ".m4s")
	case strings.HasPrefix(f, "part-") && strings.HasSuffix(f, ".m4s"):
		kind, rest = "part", strings.TrimSuffix(strings.TrimPrefix(f, "part-"), ".m4s")
	default:
		return hlsFile{}, false
	}
	fs := strings.Split(rest, "-")
	want := map[string]int{"media": 1, "init": 3, "segment": 3, "part": 4}[kind]
	if len(fs) != want {
		return hlsFile{}, false
	}
	out := hlsFile{kind: kind}
	nums := fs
	if kind != "media" {
		out.inst, nums = fs[0], fs[1:]
		if _, err := strconv.ParseInt(out.inst, 36, 64); err != nil {
			return hlsFile{}, false
		}
	}
	t, err := strconv.ParseUint(nums[0], 10, 16)
	if err != nil {
		return hlsFile{}, false
	}
	out.track = uint16(t)
	if len(nums) > 1 {
		if out.num, err = strconv.ParseUint(nums[1], 10, 64); err != nil {
			return hlsFile{}, false
		}
	}
	if len(nums) > 2 {
		i, err := strconv.ParseUint(nums[2], 10, 31)
		if err != nil {
			return hlsFile{}, false
		}
		out.index = int(i)
	}
	return out, true
}

func initURI(c *media.Catalog, track uint16) string {
	return fmt.Sprintf("init-%s-%d-%d.mp4", instance(c), track, c.Epoch)
}

func segURI(c *media.Catalog, track uint16, seq uint64) string {
	return fmt.Sprintf("seg-%s-%d-%d.m4s", instance(c), track, seq)
}

func partURI(c *media.Catalog, track uint16, seq uint64, i int) string {
	return fmt.Sprintf("part-%s-%d-%d-%d.m4s", instance(c), track, seq, i)
}

// hlsError is an HTTP error with a reason for the client.
type hlsError struct {
	status int
	msg    string
}

func (e *hlsError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func hlsErrorf(status int, format string, args ...any) error {
	return &hlsError{status: status, msg: fmt.Sprintf(format, args...)}
}

// httpStatus is the HTTP status of a refused request: an HLS error's own,
// else the one its wire code mirrors.
func httpStatus(err error) int {
	var he *hlsError
	if errors.As(err, &he) {
		return he.status
	}
	return codeStatus(wire.CodeOf(err))
}

func (h *hlsServer) serve(w http.ResponseWriter, r *http.Request) {
	kind := "playlist"
	status := http.StatusOK
	defer func() { h.requests.WithLabelValues(kind, strconv.Itoa(status)).Inc() }()
	fail := func(err error) {
		status = httpStatus(err)
		msg := err.Error()
		var he *hlsError
		if errors.As(err, &he) {
			msg = he.msg
		} else if wire.CodeOf(err) != wire.CodeInternal {
			msg = wire.Reason(err)
		}
		// 502 and 503 (upstream unavailable, going away, full) are logged
		// where they arise, once, not per request.
		retry := status == http.StatusServiceUnavailable || status == http.StatusBadGateway
		if status >= 500 && !retry {
			h.n.log.Warn("HLS request failed", "path", r.URL.Path, "err", err)
		}
		h.deadline(w)
		w.Header().Set("Cache-Control", "no-store")
		if retry {
			w.Header().Set("Retry-After", "1")
		}
		http.Error(w, msg, status)
	}
	h.cors(w, r)
	path := r.PathValue("path")
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		fail(hlsErrorf(http.StatusNotFound, "want /hls/{broadcast}/index.m3u8"))
		return
	}
	name, file := path[:i], path[i+1:]
	f, ok := parseHLSFile(file)
	if !ok {
		fail(hlsErrorf(http.StatusNotFound, "no file %q (index.m3u8, media-*.m3u8, init-*.mp4, seg-*.m4s, part-*.m4s)", file))
		return
	}
	if f.kind != "index" && f.kind != "media" {
		kind = f.kind
	}
	if err := media.ValidName(name); err != nil {
		fail(wire.Errorf(wire.CodeBadRequest, "%v", err))
		return
	}
	token := auth.TokenFromRequest(r)
	if err := h.n.cfg.Auth.Authorize(r.Context(), auth.Request{Action: auth.Play, Broadcast: name, Token: token, Remote: r.RemoteAddr}); err != nil {
		fail(err)
		return
	}
	f.private = token != "" || h.n.playGated
	h.n.mu.Lock()
	closed := h.n.closed
	h.n.mu.Unlock()
	if closed {
		fail(wire.Errorf(wire.CodeGoingAway, "edge is draining; try another edge"))
		return
	}
	query := r.URL.Query()
	sid := query.Get(hlsSessionParam)
	playlist := f.kind == "index" || f.kind == "media"
	if f.kind == "index" && sid == "" && !query.Has("_HLS_msn") && query.Get("preview") != "1" {
		kind = "redirect"
		status = http.StatusFound
		h.sessions.redirect(w, r)
		return
	}
	u, err := h.n.attach(r.Context(), name)
	if err != nil {
		fail(err)
		return
	}
	defer h.n.detach(u)
	st := h.state(u.b)
	if playlist && validSessionID(sid) {
		if err := h.sessions.touch(sid, name, time.Duration(st.view(f.track).segTgt)*time.Second); err != nil {
			fail(err)
			return
		}
	}
	switch f.kind {
	case "index", "media":
		err = h.servePlaylist(w, r, st, f)
	case "init":
		err = h.serveInit(w, st, f)
	default:
		err = h.serveMedia(w, r, st, f)
	}
	if err != nil {
		fail(err)
	}
}

// cors lets pages from the allowed origins read HLS (players fetch it).
func (h *hlsServer) cors(w http.ResponseWriter, r *http.Request) {
	o := r.Header.Get("Origin")
	switch {
	case h.n.cfg.AllowedOrigins == "*":
		w.Header().Set("Access-Control-Allow-Origin", "*")
	case o != "" && h.n.originAllowed(r):
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Add("Vary", "Origin")
	}
}

// hold is how long a request may wait for a part or segment: three target
// durations (RFC 8216bis §6.2.5.2), at least hlsMinBlock.
func (h *hlsServer) hold(v *hlsView) time.Duration {
	d := hlsMinBlock
	if v != nil {
		d = max(d, 3*time.Duration(v.segTgt)*time.Second)
	}
	return d
}

// wait blocks until ready(view) holds, the broadcast changes into a state
// where it does, or the hold time passes (503). It returns the view.
func (h *hlsServer) wait(ctx context.Context, st *hlsState, track uint16, ready func(*hlsView) (bool, error)) (*hlsView, error) {
	var timer *time.Timer
	counted := false
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if counted {
			h.blocked.Dec()
		}
	}()
	for {
		ch := st.b.Changed()
		v := st.view(track)
		ok, err := ready(v)
		if err != nil || ok {
			return v, err
		}
		if st.b.Closed() {
			return nil, wire.Errorf(wire.CodeNotFound, "broadcast ended")
		}
		if timer == nil {
			timer = time.NewTimer(h.hold(v))
			h.blocked.Inc()
			counted = true
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil, hlsErrorf(http.StatusServiceUnavailable, "not available within %s", h.hold(v))
		case <-ctx.Done():
			return nil, hlsErrorf(499, "client went away")
		case <-h.drain:
			return nil, wire.Errorf(wire.CodeGoingAway, "edge is draining; try another edge")
		case <-st.b.Done():
			return nil, wire.Errorf(wire.CodeNotFound, "broadcast ended")
		}
	}
}

// hlsQuery is what URIs in a playlist carry over from the request (the
// token, say): its query without the delivery directives.
func hlsQuery(r *http.Request) string {
	q := r.URL.Query()
	q.Del("_HLS_msn")
	q.Del("_HLS_part")
	q.Del("_HLS_skip")
	q.Del(hlsSessionParam) // the multivariant playlist adds it to its URIs
	q.Del("preview")       // a preview's segments are everyone's
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func (h *hlsServer) servePlaylist(w http.ResponseWriter, r *http.Request, st *hlsState, f hlsFile) error {
	q := r.URL.Query()
	var msn, part uint64
	var err error
	hasMSN, hasPart := q.Has("_HLS_msn"), q.Has("_HLS_part")
	if hasMSN {
		if msn, err = strconv.ParseUint(q.Get("_HLS_msn"), 10, 64); err != nil {
			return hlsErrorf(http.StatusBadRequest, "_HLS_msn: %v", err)
		}
	}
	if hasPart {
		if !hasMSN {
			return hlsErrorf(http.StatusBadRequest, "_HLS_part without _HLS_msn")
		}
		if part, err = strconv.ParseUint(q.Get("_HLS_part"), 10, 31); err != nil {
			return hlsErrorf(http.StatusBadRequest, "_HLS_part: %v", err)
		}
	}
	skip := false
	switch s := q.Get("_HLS_skip"); s {
	case "":
	case "YES", "v2":
		skip = true
	default:
		return hlsErrorf(http.StatusBadRequest, "_HLS_skip=%q (YES or v2)", s)
	}
	cat := st.b.Catalog()
	if f.kind == "index" && cat != nil && len(cat.Tracks) > 1 {
		return h.serveMultivariant(w, r, st, f, cat)
	}
	if cat != nil && int(f.track) >= len(cat.Tracks) {
		return hlsErrorf(http.StatusNotFound, "no track %d", f.track)
	}
	v, err := h.wait(r.Context(), st, f.track, func(v *hlsView) (bool, error) {
		if v.complete == 0 {
			return false, nil // a playlist needs a whole segment
		}
		if !hasMSN {
			return true, nil
		}
		return directiveReady(v, msn, part, hasPart)
	})
	if err != nil {
		return err
	}
	body := st.playlist(v, skip, hlsQuery(r))
	cc := "no-cache"
	if hasMSN {
		// The answer to a delivery directive stays a valid answer to it:
		// downstream caches may share it among players for a while.
		cc = fmt.Sprintf("public, max-age=%d", v.segTgt)
	}
	return h.write(w, "application/vnd.apple.mpegurl", f.cache(cc), body)
}

// directiveReady reports whether v satisfies _HLS_msn=msn (and
// _HLS_part=part), and refuses requests too far ahead (RFC 8216bis
// §6.2.5.2: more than two segments, or the Advance Part Limit of parts).
func directiveReady(v *hlsView, msn, part uint64, hasPart bool) (bool, error) {
	first := v.segs[0].g.Seq
	last, _ := v.lastComplete()
	if msn > last+2 {
		return false, hlsErrorf(http.StatusBadRequest, "_HLS_msn=%d is too far ahead: the last segment is %d", msn, last)
	}
	if msn < first {
		return true, nil // long gone: the current playlist is later
	}
	nseq, nparts, _ := v.newest()
	if !hasPart {
		return last >= msn, nil
	}
	// The next part to appear, and how far ahead of it the request is.
	open := v.complete < len(v.segs)
	nextSeq, nextPart := nseq, uint64(nparts)
	if !open {
		nextSeq, nextPart = nseq+1, 0
	}
	limit := advancePartLimit(v.partTgt)
	switch {
	case msn == nextSeq && part >= nextPart && part-nextPart >= limit,
		msn > nextSeq && part >= limit:
		return false, hlsErrorf(http.StatusBadRequest, "_HLS_part=%d of segment %d is too far ahead of part %d of segment %d", part, msn, nextPart, nextSeq)
	}
	return msn < nseq || msn == nseq && uint64(nparts) > part, nil
}

// advancePartLimit is how many parts ahead a request may ask for: 3 s worth.
func advancePartLimit(target time.Duration) uint64 {
	if target >= time.Second {
		return 3
	}
	return uint64((3*time.Second + target - 1) / target)
}

// playlist returns the marshalled media playlist of v (cached per version).
func (st *hlsState) playlist(v *hlsView, skip bool, query string) []byte {
	key := playlistKey{track: v.track, skip: skip, query: query}
	st.mu.Lock()
	defer st.mu.Unlock()
	if b, ok := st.playlists[key]; ok && st.views[v.track] == v {
		return b
	}
	b := buildPlaylist(v, skip, query)
	if st.views[v.track] == v && len(st.playlists) < 64 {
		st.playlists[key] = b
	}
	return b
}

func buildPlaylist(v *hlsView, skip bool, query string) []byte {
	target := time.Duration(v.segTgt) * time.Second
	m := &m3u8Media{
		Version:        hlsVersion,
		TargetDuration: v.segTgt,
		PartTarget:     v.partTgt,
		PartHoldBack:   3 * v.partTgt,
		CanSkipUntil:   6 * target,
		MediaSequence:  v.segs[0].g.Seq,
		Discontinuity:  v.dsn[0],
	}
	// Parts are listed for the segments near the end.
	partsFrom := len(v.segs)
	var tail time.Duration
	for partsFrom > 0 && tail < hlsPartsWindow*target {
		partsFrom--
		tail += v.segs[partsFrom].dur
	}
	// A delta update leaves out the segments further than the skip
	// boundary from the end.
	skipped := 0
	if skip {
		var after time.Duration
		for i := len(v.segs) - 1; i >= 0; i-- {
			if i < v.complete && after >= m.CanSkipUntil {
				skipped = i + 1
				break
			}
			after += v.segs[i].dur
		}
	}
	m.Skipped = skipped
	for i, hg := range v.segs {
		if i < skipped {
			continue
		}
		cat := hg.g.Catalog
		s := m3u8Segment{
			Duration: hg.dur,
			URI:      segURI(cat, v.track, hg.g.Seq) + query,
			DateTime: time.UnixMicro(hg.capture),
		}
		switch {
		case i == skipped:
			m.Map = initURI(cat, v.track) + query
			s.Discontinuity = i > 0 && v.dsn[i] != v.dsn[i-1]
		case v.dsn[i] != v.dsn[i-1]:
			s.Discontinuity = true
			s.Map = initURI(cat, v.track) + query
		}
		if i >= partsFrom {
			for j, p := range hg.parts {
				s.Parts = append(s.Parts, m3u8Part{Duration: p.dur, URI: partURI(cat, v.track, hg.g.Seq, j) + query, Independent: j == 0})
			}
		}
		if i < v.complete {
			m.Segments = append(m.Segments, s)
		} else {
			m.Open = &s
		}
	}
	last := v.segs[len(v.segs)-1]
	if m.Open != nil {
		m.PreloadHint = partURI(last.g.Catalog, v.track, last.g.Seq, len(last.parts)) + query
	} else {
		m.PreloadHint = partURI(last.g.Catalog, v.track, last.g.Seq+1, 0) + query
	}
	return m.Marshal()
}

// serveMultivariant lists one variant per video (or muxed) track, with
// the audio tracks as renditions.
func (h *hlsServer) serveMultivariant(w http.ResponseWriter, r *http.Request, st *hlsState, f hlsFile, cat *media.Catalog) error {
	// The media playlists carry the player's session on.
	q := hlsQuery(r)
	if sid := r.URL.Query().Get(hlsSessionParam); validSessionID(sid) {
		if q == "" {
			q = "?" + hlsSessionParam + "=" + sid
		} else {
			q += "&" + hlsSessionParam + "=" + sid
		}
	}
	mv := playlist.Multivariant{Version: hlsVersion, IndependentSegments: true}
	var audioCodec string
	for _, t := range cat.Tracks {
		if t.Kind != "audio" {
			continue
		}
		uri := fmt.Sprintf("media-%d.m3u8%s", t.ID, q)
		mv.Renditions = append(mv.Renditions, &playlist.MultivariantRendition{
			Type: playlist.MultivariantRenditionTypeAudio, GroupID: "audio", Name: fmt.Sprintf("audio %d", t.ID),
			Autoselect: true, Default: audioCodec == "", URI: &uri,
		})
		if audioCodec == "" {
			audioCodec = t.Codec
		}
	}
	for _, t := range cat.Tracks {
		if t.Kind == "audio" {
			continue
		}
		v := &playlist.MultivariantVariant{
			Bandwidth: bandwidth(st.view(t.ID)),
			Codecs:    []string{t.Codec},
			URI:       fmt.Sprintf("media-%d.m3u8%s", t.ID, q),
		}
		if t.Width > 0 && t.Height > 0 {
			v.Resolution = fmt.Sprintf("%dx%d", t.Width, t.Height)
		}
		if audioCodec != "" {
			v.Codecs = append(v.Codecs, audioCodec)
			v.Audio = "audio"
		}
		mv.Variants = append(mv.Variants, v)
	}
	if len(mv.Variants) == 0 { // audio only
		mv.Renditions = nil
		for _, t := range cat.Tracks {
			mv.Variants = append(mv.Variants, &playlist.MultivariantVariant{
				Bandwidth: bandwidth(st.view(t.ID)), Codecs: []string{t.Codec}, URI: fmt.Sprintf("media-%d.m3u8%s", t.ID, q),
			})
		}
	}
	body, err := mv.Marshal()
	if err != nil {
		return err
	}
	return h.write(w, "application/vnd.apple.mpegurl", f.cache("no-cache"), body)
}

// bandwidth estimates a track's peak bit rate from the cached groups.
func bandwidth(v *hlsView) int {
	var bytes int
	var dur time.Duration
	for _, g := range v.segs {
		for _, p := range g.parts {
			bytes += p.size()
		}
		dur += g.dur
	}
	if dur <= 0 || bytes == 0 {
		return 2_000_000
	}
	return int(float64(bytes*8)/dur.Seconds()*1.2) + 1
}

func (h *hlsServer) serveInit(w http.ResponseWriter, st *hlsState, f hlsFile) error {
	cats := []*media.Catalog{st.b.Catalog()}
	for _, g := range st.b.Groups(f.track) {
		cats = append(cats, g.Catalog)
	}
	for _, c := range cats {
		if c != nil && c.Epoch == f.num && instance(c) == f.inst && int(f.track) < len(c.Inits) {
			return h.write(w, mimeOf(c), f.cache(immutable), c.Inits[f.track].Payload())
		}
	}
	return hlsErrorf(http.StatusNotFound, "no init segment for epoch %d of this broadcast", f.num)
}

// immutable: media URIs are never reused (see instance). With play tokens
// the answers are private (hlsFile.cache): a shared cache would give them
// to anyone.
const immutable = "public, max-age=31536000, immutable"

func mimeOf(c *media.Catalog) string {
	for _, t := range c.Tracks {
		if t.Kind != "audio" {
			return "video/mp4"
		}
	}
	return "audio/mp4"
}

// serveMedia answers a segment or part request, waiting for it when it is
// the next one to appear (a preload hint, or a segment being written).
func (h *hlsServer) serveMedia(w http.ResponseWriter, r *http.Request, st *hlsState, f hlsFile) error {
	var found *hlsSeg
	var parts []hlsPart
	v, err := h.wait(r.Context(), st, f.track, func(v *hlsView) (bool, error) {
		seq, n, ok := v.newest()
		if !ok {
			return false, nil
		}
		open := v.complete < len(v.segs)
		switch {
		case f.num < v.segs[0].g.Seq:
			return false, hlsErrorf(http.StatusNotFound, "group %d is no longer cached", f.num)
		case f.num > seq+1, f.num == seq+1 && open:
			return false, hlsErrorf(http.StatusNotFound, "group %d is not next", f.num)
		case f.num == seq+1:
			return false, errIfFarPart(f, 0, v) // the next group: wait for it
		}
		g := v.find(f.num)
		if g == nil {
			return false, hlsErrorf(http.StatusNotFound, "group %d is not cached", f.num)
		}
		if instance(g.g.Catalog) != f.inst {
			return false, hlsErrorf(http.StatusNotFound, "not a segment of this broadcast")
		}
		done := f.num < seq || !open
		if f.kind == "segment" {
			found, parts = g, g.parts
			return done, nil
		}
		switch {
		case f.index < len(g.parts):
			found, parts = g, g.parts[f.index:f.index+1]
			return true, nil
		case done:
			return false, hlsErrorf(http.StatusNotFound, "group %d has %d parts", f.num, len(g.parts))
		}
		return false, errIfFarPart(f, n, v)
	})
	if err != nil {
		return err
	}
	_ = v
	size := 0
	for _, p := range parts {
		size += p.size()
	}
	h.deadline(w)
	hd := w.Header()
	hd.Set("Content-Type", mimeOf(found.g.Catalog))
	hd.Set("Cache-Control", f.cache(immutable))
	hd.Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
	sent := 0
write:
	for _, p := range parts {
		for _, o := range p.objs {
			k, err := w.Write(o.Payload()) // the cached bytes, shared, not copied
			sent += k
			if err != nil {
				break write
			}
			observeObject(h.n.metrics.delayHLS, o)
		}
	}
	h.n.metrics.sent.Add(float64(sent))
	return nil
}

// errIfFarPart refuses a part further ahead than the Advance Part Limit.
func errIfFarPart(f hlsFile, have int, v *hlsView) error {
	if f.kind == "part" && f.index >= have && uint64(f.index-have) >= advancePartLimit(v.partTgt) {
		return hlsErrorf(http.StatusNotFound, "part %d of group %d is too far ahead", f.index, f.num)
	}
	return nil
}

// deadline bounds the writing of a response.
func (h *hlsServer) deadline(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.n.cfg.WriteTimeout))
}

func (h *hlsServer) write(w http.ResponseWriter, ctype, cache string, body []byte) error {
	h.deadline(w)
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("Cache-Control", cache)
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	k, _ := w.Write(body)
	h.n.metrics.sent.Add(float64(k))
	return nil
}
