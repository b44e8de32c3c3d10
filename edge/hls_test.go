package edge

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/quic-go/quic-go/http3"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// oneObjectParts makes every object a part of its own (Config.HLSPart),
// which most tests here count on.
const oneObjectParts = time.Nanosecond

// clipFeed appends the demo clip's real CMAF chunks to a broadcast, one
// object per call, a group per keyframe (32 frames, 1.07 s), as an origin
// session would.
type clipFeed struct {
	b       *media.Broadcast
	clip    *clip.Clip
	name    string
	started int64
	epoch   uint64
	next    int // chunk index in the clip
	loop    uint64
	group   uint64
	index   uint32
	open    bool
	first   bool // next object starts an epoch
	sent    []*media.Object
	lag     time.Duration // captures are this much before the append
}

func (s *fakeSource) addClip(t *testing.T, name string) *clipFeed {
	t.Helper()
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	f := &clipFeed{b: media.New(name, media.Limits{}), clip: c, name: name, started: time.Now().UnixMicro()}
	f.newEpoch(t)
	s.mu.Lock()
	s.bcasts[name] = f.b
	s.mu.Unlock()
	return f
}

// newEpoch sets the catalog of a new epoch: the publisher came back.
func (f *clipFeed) newEpoch(t *testing.T) {
	t.Helper()
	in := f.clip.Init
	f.epoch++
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: f.name, Epoch: f.epoch, Started: f.started, Tracks: []wire.TrackInfo{{
		ID: 0, Kind: in.Kind(), Codec: in.Codec(), MimeType: in.MimeType(), Timescale: in.PrimaryTrak().Timescale,
	}}}, [][]byte{in.Data})
	if err != nil {
		t.Fatal(err)
	}
	if f.open {
		f.b.Finish(0, f.group, time.Now().UnixNano())
		f.group++
		f.open = false
	}
	if err := f.b.SetCatalog(cat); err != nil {
		t.Fatal(err)
	}
	// A new publisher starts at a keyframe.
	f.next, f.first = 0, true
}

// step appends the next chunk; a keyframe finishes the open group.
func (f *clipFeed) step(t testing.TB) *media.Object {
	ch := f.clip.Chunks[f.next]
	now := time.Now()
	h := wire.Header{Kind: wire.KindObject, DecodeTime: ch.DecodeTime + f.loop*f.clip.Period[f.clip.Init.PrimaryTrak().ID], Capture: now.Add(-f.lag).UnixMicro()}
	if ch.Keyframe {
		if f.open {
			f.b.Finish(0, f.group, now.UnixNano())
			f.group++
		}
		f.index, f.open = 0, true
		h.Flags |= wire.FlagKeyframe
	} else {
		f.index++
	}
	if f.first {
		h.Flags |= wire.FlagDiscontinuity
		f.first = false
	}
	h.Group, h.Index = f.group, f.index
	o := media.NewObject(h, ch.Data, now.UnixNano())
	if err := f.b.Append(o); err != nil {
		t.Fatalf("append: %v", err)
	}
	f.sent = append(f.sent, o)
	f.next++
	if f.next == len(f.clip.Chunks) {
		f.next = 0
		f.loop++
	}
	return o
}

// groups appends whole groups and then extra objects of the next one.
func (f *clipFeed) groups(t testing.TB, n, extra int) {
	for i := 0; i < n*32+extra; i++ {
		f.step(t)
	}
}

func hlsURL(n *Node, name, file string) string {
	return fmt.Sprintf("http://%s/hls/%s/%s", n.Addr(), name, file)
}

type hlsResp struct {
	status int
	header http.Header
	body   []byte
	proto  int
}

func get(t testing.TB, c *http.Client, url string) hlsResp {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return hlsResp{status: resp.StatusCode, header: resp.Header, body: b, proto: resp.ProtoMajor}
}

func parseMedia(t testing.TB, b []byte) *playlist.Media {
	t.Helper()
	var m playlist.Media
	if err := m.Unmarshal(b); err != nil {
		t.Fatalf("gohlslib cannot parse the playlist: %v\n%s", err, b)
	}
	return &m
}

func TestHLSPlaylistListsGroupsAsSegmentsAndObjectsAsParts(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "live/hls")
	f.groups(t, 3, 5) // groups 0..2 done, 5 objects of group 3
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})

	r := get(t, nil, hlsURL(n, "live/hls", "index.m3u8"))
	if r.status != 200 || r.header.Get("Content-Type") != "application/vnd.apple.mpegurl" || r.header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("playlist: %d %v\n%s", r.status, r.header, r.body)
	}
	m := parseMedia(t, r.body)
	checkLLHLSRules(t, m, r.body)
	if m.MediaSequence != 0 || len(m.Segments) != 3 || len(m.Parts) != 5 || m.TargetDuration != 1 {
		t.Fatalf("sequence %d, %d segments, %d open parts, target %d\n%s", m.MediaSequence, len(m.Segments), len(m.Parts), m.TargetDuration, r.body)
	}
	if m.ServerControl == nil || !m.ServerControl.CanBlockReload || m.PartInf == nil || m.PartInf.PartTarget != 34*time.Millisecond {
		t.Fatalf("server control %+v, part inf %+v", m.ServerControl, m.PartInf)
	}
	if *m.ServerControl.PartHoldBack < 3*m.PartInf.PartTarget || *m.ServerControl.CanSkipUntil < 6*time.Second {
		t.Fatalf("hold back %v, skip until %v", *m.ServerControl.PartHoldBack, *m.ServerControl.CanSkipUntil)
	}
	inst := instance(f.b.Catalog())
	if m.Map == nil || m.Map.URI != "init-"+inst+"-0-1.mp4" {
		t.Fatalf("map %+v", m.Map)
	}
	if m.PreloadHint == nil || m.PreloadHint.URI != fmt.Sprintf("part-%s-0-3-5.m4s", inst) {
		t.Fatalf("preload hint %+v", m.PreloadHint)
	}
	for i, s := range m.Segments {
		if s.URI != fmt.Sprintf("seg-%s-0-%d.m4s", inst, i) || s.Duration < 1066*time.Millisecond || s.Duration > 1067*time.Millisecond || s.DateTime == nil {
			t.Fatalf("segment %d: %+v", i, s)
		}
		if len(s.Parts) != 32 || !s.Parts[0].Independent || s.Parts[1].Independent {
			t.Fatalf("segment %d has %d parts", i, len(s.Parts))
		}
	}
	if !m.Parts[0].Independent || m.Parts[4].URI != fmt.Sprintf("part-%s-0-3-4.m4s", inst) {
		t.Fatalf("open parts %+v", m.Parts)
	}

	// The bytes: init, parts and segments are the cached objects' payloads.
	in := get(t, nil, hlsURL(n, "live/hls", m.Map.URI))
	if in.status != 200 || !bytes.Equal(in.body, f.clip.Init.Data) || in.header.Get("Cache-Control") != immutable {
		t.Fatalf("init: %d %v", in.status, in.header)
	}
	seg := get(t, nil, hlsURL(n, "live/hls", m.Segments[1].URI))
	var want []byte
	for _, o := range f.sent[32:64] {
		want = append(want, o.Payload()...)
	}
	if seg.status != 200 || !bytes.Equal(seg.body, want) || seg.header.Get("Content-Type") != "video/mp4" || seg.header.Get("Cache-Control") != immutable {
		t.Fatalf("segment 1: %d, %d bytes (want %d) %v", seg.status, len(seg.body), len(want), seg.header)
	}
	part := get(t, nil, hlsURL(n, "live/hls", m.Parts[4].URI))
	if part.status != 200 || !bytes.Equal(part.body, f.sent[3*32+4].Payload()) {
		t.Fatalf("part 3.4: %d", part.status)
	}
	// A URI of an earlier broadcast of the same name is not this one's.
	if r := get(t, nil, hlsURL(n, "live/hls", "seg-1-0-1.m4s")); r.status != 404 {
		t.Fatalf("segment of another instance: %d", r.status)
	}
}

// checkLLHLSRules checks a live playlist against RFC 8216bis and Apple's
// LL-HLS rules that players depend on.
func checkLLHLSRules(t *testing.T, m *playlist.Media, body []byte) {
	t.Helper()
	sc, pi := m.ServerControl, m.PartInf
	if sc == nil || !sc.CanBlockReload || pi == nil || sc.PartHoldBack == nil {
		t.Fatalf("server control %+v, part inf %+v\n%s", sc, pi, body)
	}
	if *sc.PartHoldBack < 3*pi.PartTarget {
		t.Fatalf("PART-HOLD-BACK %v under 3 × PART-TARGET %v", *sc.PartHoldBack, pi.PartTarget)
	}
	if m.PreloadHint == nil || m.Map == nil {
		t.Fatalf("preload hint %+v, map %+v", m.PreloadHint, m.Map)
	}
	check := func(parts []*playlist.MediaPart, complete bool) {
		for i, p := range parts {
			if p.Duration > pi.PartTarget {
				t.Fatalf("part %s of %v over PART-TARGET %v", p.URI, p.Duration, pi.PartTarget)
			}
			// Every part but a segment's last is at least 85 % of the target.
			if (i < len(parts)-1 || !complete) && p.Duration*100 < pi.PartTarget*85 {
				t.Fatalf("part %s of %v under 85 %% of PART-TARGET %v", p.URI, p.Duration, pi.PartTarget)
			}
		}
	}
	for _, s := range m.Segments {
		if d := (s.Duration + time.Second/2).Truncate(time.Second); d > time.Duration(m.TargetDuration)*time.Second {
			t.Fatalf("segment %s of %v over TARGETDURATION %d", s.URI, s.Duration, m.TargetDuration)
		}
		check(s.Parts, true)
	}
	check(m.Parts, false)
}

// TestHLSPartsJoinObjectsToThePartTarget: with the default part of
// 200 ms, a group of 32 frames at 30 fps is six parts, five of six frames
// and a last of two; a part being filled is not listed, and a request for
// it is answered once its sixth frame came. PART-HOLD-BACK is three parts.
func TestHLSPartsJoinObjectsToThePartTarget(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "joined")
	f.groups(t, 2, 10) // groups 0 and 1 done; group 2: one part and 4 frames
	n, _ := startEdge(t, Config{Source: src})
	inst := instance(f.b.Catalog())

	r := get(t, nil, hlsURL(n, "joined", "index.m3u8"))
	m := parseMedia(t, r.body)
	checkLLHLSRules(t, m, r.body)
	if m.PartInf.PartTarget < 200*time.Millisecond || m.PartInf.PartTarget > 201*time.Millisecond || *m.ServerControl.PartHoldBack != 3*m.PartInf.PartTarget {
		t.Fatalf("PART-TARGET %v, PART-HOLD-BACK %v\n%s", m.PartInf.PartTarget, *m.ServerControl.PartHoldBack, r.body)
	}
	if len(m.Segments) != 2 || len(m.Parts) != 1 || m.PreloadHint.URI != fmt.Sprintf("part-%s-0-2-1.m4s", inst) {
		t.Fatalf("%d segments, %d open parts, hint %+v\n%s", len(m.Segments), len(m.Parts), m.PreloadHint, r.body)
	}
	for _, s := range m.Segments {
		if len(s.Parts) != 6 || s.Parts[5].Duration > 67*time.Millisecond || !s.Parts[0].Independent || s.Parts[1].Independent {
			t.Fatalf("segment %s: %d parts\n%s", s.URI, len(s.Parts), r.body)
		}
	}
	// A part is its objects' payloads back to back; a segment all of them.
	join := func(objs []*media.Object) []byte {
		var b []byte
		for _, o := range objs {
			b = append(b, o.Payload()...)
		}
		return b
	}
	if p := get(t, nil, hlsURL(n, "joined", m.Segments[1].Parts[5].URI)); p.status != 200 || !bytes.Equal(p.body, join(f.sent[32+30:64])) {
		t.Fatalf("part 1.5: %d, %d bytes", p.status, len(p.body))
	}
	if p := get(t, nil, hlsURL(n, "joined", m.Parts[0].URI)); p.status != 200 || !bytes.Equal(p.body, join(f.sent[64:70])) {
		t.Fatalf("part 2.0: %d, %d bytes", p.status, len(p.body))
	}
	if s := get(t, nil, hlsURL(n, "joined", m.Segments[0].URI)); s.status != 200 || !bytes.Equal(s.body, join(f.sent[:32])) {
		t.Fatalf("segment 0: %d, %d bytes", s.status, len(s.body))
	}

	// The hinted part comes with its sixth frame, not before.
	hint := make(chan hlsResp, 1)
	go func() { hint <- get(t, nil, hlsURL(n, "joined", m.PreloadHint.URI)) }()
	f.step(t) // its fifth frame (four came with the groups above)
	select {
	case p := <-hint:
		t.Fatalf("part 2.1 answered with five of its six frames: %d", p.status)
	case <-time.After(200 * time.Millisecond):
	}
	f.step(t)
	if p := <-hint; p.status != 200 || !bytes.Equal(p.body, join(f.sent[70:76])) {
		t.Fatalf("part 2.1: %d, %d bytes", p.status, len(p.body))
	}
}

func TestHLSBlockingReloadAnswersAsSoonAsThePartExists(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "block")
	f.groups(t, 1, 3) // group 0 done, group 1 has parts 0..2
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	inst := instance(f.b.Catalog())

	type result struct {
		r  hlsResp
		at time.Time
	}
	ask := func(url string) chan result {
		c := make(chan result, 1)
		go func() { r := get(t, nil, url); c <- result{r, time.Now()} }()
		return c
	}
	pl := ask(hlsURL(n, "block", "index.m3u8?_HLS_msn=1&_HLS_part=3"))
	pt := ask(hlsURL(n, "block", fmt.Sprintf("part-%s-0-1-3.m4s", inst))) // the preload hint
	select {
	case r := <-pl:
		t.Fatalf("answered before the part existed: %d\n%s", r.r.status, r.r.body)
	case r := <-pt:
		t.Fatalf("part answered before it existed: %d", r.r.status)
	case <-time.After(300 * time.Millisecond):
	}
	appended := time.Now()
	o := f.step(t)
	r := <-pl
	if r.r.status != 200 || r.at.Sub(appended) > 150*time.Millisecond {
		t.Fatalf("blocking reload: %d after %s\n%s", r.r.status, r.at.Sub(appended), r.r.body)
	}
	m := parseMedia(t, r.r.body)
	if len(m.Parts) != 4 || !strings.HasPrefix(r.r.header.Get("Cache-Control"), "public, max-age=") {
		t.Fatalf("%d parts, cache %q\n%s", len(m.Parts), r.r.header.Get("Cache-Control"), r.r.body)
	}
	p := <-pt
	if p.r.status != 200 || !bytes.Equal(p.r.body, o.Payload()) || p.at.Sub(appended) > 150*time.Millisecond {
		t.Fatalf("hinted part: %d after %s", p.r.status, p.at.Sub(appended))
	}

	// _HLS_msn alone waits for the whole segment.
	seg := ask(hlsURL(n, "block", "index.m3u8?_HLS_msn=1"))
	select {
	case r := <-seg:
		t.Fatalf("answered before segment 1 was complete: %d", r.r.status)
	case <-time.After(200 * time.Millisecond):
	}
	for i := 0; i < 29; i++ { // the rest of group 1 and the start of group 2
		f.step(t)
	}
	if r := <-seg; r.r.status != 200 || len(parseMedia(t, r.r.body).Segments) != 2 {
		t.Fatalf("segment 1 complete: %d\n%s", r.r.status, r.r.body)
	}
}

func TestHLSRequestErrors(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "errs")
	f.groups(t, 2, 1)
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	for _, ca := range []struct {
		file   string
		status int
	}{
		{"index.m3u8?_HLS_msn=5", 400},               // last segment is 1: at most 3
		{"index.m3u8?_HLS_msn=2&_HLS_part=200", 400}, // past the advance part limit
		{"index.m3u8?_HLS_msn=3&_HLS_part=100", 400},
		{"index.m3u8?_HLS_part=1", 400},
		{"index.m3u8?_HLS_msn=x", 400},
		{"index.m3u8?_HLS_skip=no", 400},
		{"nothing.txt", 404},
		{"media-7.m3u8", 404},
		{"seg-" + instance(f.b.Catalog()) + "-0-9.m4s", 404},
	} {
		if r := get(t, nil, hlsURL(n, "errs", ca.file)); r.status != ca.status || r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %q, want %d", ca.file, r.status, r.body, ca.status)
		}
	}
	if r := get(t, nil, hlsURL(n, "missing", "index.m3u8")); r.status != 404 {
		t.Errorf("missing broadcast: %d %s", r.status, r.body)
	}
	if r := get(t, nil, hlsURL(n, "bad%20name", "index.m3u8")); r.status != 400 {
		t.Errorf("bad name: %d %s", r.status, r.body)
	}
	// Nothing comes: 503 after three target durations.
	start := time.Now()
	r := get(t, nil, hlsURL(n, "errs", "index.m3u8?_HLS_msn=2&_HLS_part=3"))
	if r.status != 503 || time.Since(start) < 3*time.Second || r.header.Get("Retry-After") == "" {
		t.Errorf("blocked request that cannot be answered: %d after %s", r.status, time.Since(start))
	}
	if v := testenv.Metric(t, n.Registry(), "quiccast_edge_hls_requests_total", "kind", "playlist", "status", "400"); v != 7 { // and the bad name
		t.Errorf("400s counted: %v", v)
	}
}

func TestHLSTokenIsCheckedAndCarriedInURIs(t *testing.T) {
	src := newFakeSource()
	src.addClip(t, "tok").groups(t, 1, 2)
	n, _ := startEdge(t, Config{Source: src, PlayTokens: "s3cret", HLSPart: oneObjectParts})
	if r := get(t, nil, hlsURL(n, "tok", "index.m3u8")); r.status != 401 {
		t.Fatalf("no token: %d", r.status)
	}
	r := get(t, nil, hlsURL(n, "tok", "index.m3u8?token=s3cret"))
	m := parseMedia(t, r.body)
	if !strings.HasSuffix(m.Segments[0].URI, "?token=s3cret") || !strings.HasSuffix(m.Map.URI, "?token=s3cret") || !strings.HasSuffix(m.PreloadHint.URI, "?token=s3cret") {
		t.Fatalf("URIs lack the token:\n%s", r.body)
	}
	if r := get(t, nil, hlsURL(n, "tok", m.Segments[0].URI)); r.status != 200 {
		t.Fatalf("segment with the token: %d", r.status)
	}
	// Issue 9, finding 9: answers authorised by a token are private, so a
	// shared cache does not hand them to viewers without one.
	for _, uri := range []string{m.Segments[0].URI, m.Segments[0].Parts[0].URI, m.Map.URI, "index.m3u8?token=s3cret",
		fmt.Sprintf("%s&_HLS_msn=%d&_HLS_part=0", "media-0.m3u8?token=s3cret", m.MediaSequence+len(m.Segments)-1)} {
		r := get(t, nil, hlsURL(n, "tok", uri))
		if cc := r.header.Get("Cache-Control"); r.status != 200 || !strings.HasPrefix(cc, "private") || strings.Contains(cc, "public") {
			t.Errorf("%s: %d, Cache-Control %q, want private", uri, r.status, cc)
		}
	}
	// Without tokens media stays public and immutable, for CDNs.
	open := newFakeSource()
	open.addClip(t, "open").groups(t, 1, 2)
	n2, _ := startEdge(t, Config{Source: open, HLSPart: oneObjectParts})
	m2 := parseMedia(t, get(t, nil, hlsURL(n2, "open", "index.m3u8")).body)
	if cc := get(t, nil, hlsURL(n2, "open", m2.Segments[0].URI)).header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
		t.Errorf("segment without tokens: Cache-Control %q", cc)
	}
}

func TestHLSDeltaUpdateSkipsOldSegments(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "delta")
	f.groups(t, 9, 2) // the cache keeps 8 groups: 2..9
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	full := parseMedia(t, get(t, nil, hlsURL(n, "delta", "index.m3u8")).body)
	r := get(t, nil, hlsURL(n, "delta", "index.m3u8?_HLS_skip=YES"))
	d := parseMedia(t, r.body)
	if full.MediaSequence != 2 || len(full.Segments) != 7 {
		t.Fatalf("full: sequence %d, %d segments", full.MediaSequence, len(full.Segments))
	}
	if d.Skip == nil || d.Skip.SkippedSegments != 1 || d.MediaSequence != full.MediaSequence || len(d.Segments) != 6 ||
		d.Segments[0].URI != full.Segments[1].URI {
		t.Fatalf("delta update: skip %+v, %d segments\n%s", d.Skip, len(d.Segments), r.body)
	}
	var shown time.Duration
	for _, s := range d.Segments {
		shown += s.Duration
	}
	if shown < *full.ServerControl.CanSkipUntil {
		t.Fatalf("skipped segments within the skip boundary: %s shown", shown)
	}
}

func TestHLSNewEpochIsADiscontinuityWithItsInitAndTheSequenceGoesOn(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "epochs")
	f.groups(t, 2, 10)
	f.newEpoch(t) // the publisher reconnected: group 2 ends early
	f.groups(t, 2, 3)
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	r := get(t, nil, hlsURL(n, "epochs", "index.m3u8"))
	m := parseMedia(t, r.body)
	if m.MediaSequence != 0 || len(m.Segments) != 5 {
		t.Fatalf("sequence %d, %d segments\n%s", m.MediaSequence, len(m.Segments), r.body)
	}
	for i, s := range m.Segments {
		if s.Discontinuity != (i == 3) {
			t.Fatalf("segment %d discontinuity %v\n%s", i, s.Discontinuity, r.body)
		}
	}
	inst := instance(f.b.Catalog())
	if !bytes.Contains(r.body, []byte("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-"+inst+"-0-2.mp4\"\n")) {
		t.Fatalf("no map for epoch 2 after the discontinuity\n%s", r.body)
	}
	for _, e := range []int{1, 2} {
		if r := get(t, nil, hlsURL(n, "epochs", fmt.Sprintf("init-%s-0-%d.mp4", inst, e))); r.status != 200 {
			t.Fatalf("init of epoch %d: %d", e, r.status)
		}
	}
	// Segment 2 (cut short by the reconnect) has 10 parts.
	if len(m.Segments[2].Parts) != 10 {
		t.Fatalf("segment 2 has %d parts", len(m.Segments[2].Parts))
	}
	// Once the epoch-1 segments leave the playlist, the discontinuity
	// sequence counts the discontinuity they took with them.
	f.groups(t, 7, 1)
	m = parseMedia(t, get(t, nil, hlsURL(n, "epochs", "index.m3u8")).body)
	if m.DiscontinuitySequence == nil || *m.DiscontinuitySequence != 1 || m.Segments[0].Discontinuity {
		t.Fatalf("discontinuity sequence %v, first segment discontinuity %v", m.DiscontinuitySequence, m.Segments[0].Discontinuity)
	}
}

func TestHLSOverHTTP2(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "h2")
	f.groups(t, 1, 1)
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	ts := httptest.NewUnstartedServer(n.srv.Handler)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	c := ts.Client()
	url := func(file string) string { return ts.URL + "/hls/h2/" + file }
	r := get(t, c, url("index.m3u8"))
	if r.status != 200 || r.proto != 2 {
		t.Fatalf("playlist over HTTP/%d: %d", r.proto, r.status)
	}
	// Many blocked requests share one connection.
	var wg sync.WaitGroup
	res := make([]hlsResp, 5)
	for i := range res {
		wg.Add(1)
		go func() { defer wg.Done(); res[i] = get(t, c, url("index.m3u8?_HLS_msn=1&_HLS_part=1")) }()
	}
	time.Sleep(200 * time.Millisecond)
	f.step(t)
	wg.Wait()
	for i, r := range res {
		if r.status != 200 || r.proto != 2 || len(parseMedia(t, r.body).Parts) != 2 {
			t.Fatalf("blocked request %d over HTTP/2: %d\n%s", i, r.status, r.body)
		}
	}
	m := parseMedia(t, res[0].body)
	if r := get(t, c, url(m.Parts[1].URI)); r.status != 200 || r.proto != 2 || !bytes.Equal(r.body, f.sent[33].Payload()) {
		t.Fatalf("part over HTTP/2: %d", r.status)
	}
}

func TestHLSPollingKeepsOneUpstreamAndReleasesItAfterwards(t *testing.T) {
	src := newFakeSource()
	src.addClip(t, "poll").groups(t, 1, 1)
	n, _ := startEdge(t, Config{Source: src, Linger: 300 * time.Millisecond, HLSPart: oneObjectParts})
	for i := 0; i < 8; i++ {
		if r := get(t, nil, hlsURL(n, "poll", "index.m3u8")); r.status != 200 {
			t.Fatal(r.status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if subs, rels := src.counts("poll"); subs != 1 || rels != 0 {
		t.Fatalf("while polling: %d subscribes, %d releases", subs, rels)
	}
	testenv.WaitFor(t, 2*time.Second, "the upstream release", func() bool { _, rels := src.counts("poll"); return rels == 1 })
}

func TestHLSMultivariantForSeveralTracks(t *testing.T) {
	src := newFakeSource()
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	b := media.New("multi", media.Limits{})
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: "multi", Epoch: 1, Started: 42, Tracks: []wire.TrackInfo{
		{ID: 0, Kind: "video", Codec: "avc1.4D401E", Timescale: 15360, Width: 640, Height: 360},
		{ID: 1, Kind: "audio", Codec: "mp4a.40.2", Timescale: 48000},
	}}, [][]byte{c.Init.Data, c.Init.Data})
	if err != nil {
		t.Fatal(err)
	}
	b.SetCatalog(cat)
	src.mu.Lock()
	src.bcasts["multi"] = b
	src.mu.Unlock()
	n, _ := startEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	r := get(t, nil, hlsURL(n, "multi", "index.m3u8?token=x"))
	var mv playlist.Multivariant
	if err := mv.Unmarshal(r.body); err != nil {
		t.Fatalf("%v\n%s", err, r.body)
	}
	// The first request was redirected to one with a session id, which
	// the media playlists carry on.
	if len(mv.Variants) != 1 || len(mv.Renditions) != 1 {
		t.Fatalf("multivariant:\n%s", r.body)
	}
	v0, sid, _ := strings.Cut(mv.Variants[0].URI, "&"+hlsSessionParam+"=")
	r1, sid1, _ := strings.Cut(*mv.Renditions[0].URI, "&"+hlsSessionParam+"=")
	if v0 != "media-0.m3u8?token=x" || mv.Variants[0].Resolution != "640x360" || !validSessionID(sid) || sid1 != sid ||
		strings.Join(mv.Variants[0].Codecs, ",") != "avc1.4D401E,mp4a.40.2" || r1 != "media-1.m3u8?token=x" {
		t.Fatalf("multivariant:\n%s", r.body)
	}
}

// TestHLSOverHTTP3 plays the LL-HLS flow — playlist, a blocked reload, a
// part — over HTTP/3 on the edge's WebTransport port.
func TestHLSOverHTTP3(t *testing.T) {
	src := newFakeSource()
	f := src.addClip(t, "h3")
	f.groups(t, 1, 1)
	n, _ := startWTEdge(t, Config{Source: src, HLSPart: oneObjectParts})
	h := certHashes(t, n)
	tr := &http3.Transport{TLSClientConfig: wtDialer(h.Hashes[:1]).TLSClientConfig}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	url := func(file string) string {
		return fmt.Sprintf("https://127.0.0.1:%d/hls/h3/%s", n.WTAddr().(*net.UDPAddr).Port, file)
	}
	if r := get(t, c, url("index.m3u8")); r.status != 200 || r.proto != 3 {
		t.Fatalf("playlist over HTTP/%d: %d", r.proto, r.status)
	}
	done := make(chan hlsResp, 1)
	go func() { done <- get(t, c, url("index.m3u8?_HLS_msn=1&_HLS_part=1")) }()
	time.Sleep(200 * time.Millisecond)
	f.step(t)
	r := <-done
	if r.status != 200 || r.proto != 3 || len(parseMedia(t, r.body).Parts) != 2 {
		t.Fatalf("blocked reload over HTTP/3: %d\n%s", r.status, r.body)
	}
	m := parseMedia(t, r.body)
	if p := get(t, c, url(m.Parts[1].URI)); p.status != 200 || p.proto != 3 || !bytes.Equal(p.body, f.sent[33].Payload()) {
		t.Fatalf("part over HTTP/3: %d", p.status)
	}
}
