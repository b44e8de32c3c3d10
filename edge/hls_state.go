package edge

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/wire"
)

// hlsState is what the edge remembers about one broadcast for LL-HLS:
// each cached object's duration (parsed once from its moof), the
// discontinuity number of each epoch, and the target durations, which
// only grow. Its views are rebuilt only when the broadcast changed.
type hlsState struct {
	b       *media.Broadcast
	partMin time.Duration // a part is objects of at least this duration (Config.HLSPart)

	mu        sync.Mutex
	used      time.Time
	groups    map[*media.Group]*hlsGroup
	inits     map[*media.Catalog][]*cmaf.Init
	dsn       map[*media.Catalog]uint64
	nextDSN   uint64
	dsnSeen   bool
	target    []trackTargets
	views     map[uint16]*hlsView
	version   int64 // b.ObjectsAppended() the views were built at
	lastDur   time.Duration
	playlists map[playlistKey][]byte // marshalled playlists of this version
}

type trackTargets struct {
	part    time.Duration // largest part, rounded up to the ms
	segment int           // largest segment, rounded to the second
}

type playlistKey struct {
	track uint16
	skip  bool
	query string
}

// hlsGroup is one group (segment) and its parts: runs of consecutive
// objects with a payload, each at least partMin long.
type hlsGroup struct {
	g       *media.Group
	read    int // objects read from the broadcast, end marker included
	parts   []hlsPart
	filling hlsPart // objects of the next part, not yet partMin long
	done    bool
	dur     time.Duration // of every object read, filling included
	capture int64         // of its first object, µs
}

// hlsPart is one part: its objects, back to back, and their duration.
// Once in hlsGroup.parts it never changes.
type hlsPart struct {
	objs []*media.Object
	dur  time.Duration
}

// size is the part's byte count.
func (p hlsPart) size() int {
	n := 0
	for _, o := range p.objs {
		n += len(o.Payload())
	}
	return n
}

// hlsSeg is a group as a view saw it; it never changes.
type hlsSeg struct {
	g       *media.Group
	parts   []hlsPart
	done    bool
	dur     time.Duration
	capture int64
}

// hlsView is a consistent, immutable picture of one track: the segments
// that can be listed (the newest run of consecutive groups), the last one
// possibly still being written.
type hlsView struct {
	track    uint16
	segs     []hlsSeg
	dsn      []uint64 // discontinuity sequence number per segment
	partTgt  time.Duration
	segTgt   int
	complete int // segments that are finished (a prefix of segs)
}

// last returns the newest position: its group and the count of its parts.
func (v *hlsView) newest() (seq uint64, parts int, ok bool) {
	if len(v.segs) == 0 {
		return 0, 0, false
	}
	g := v.segs[len(v.segs)-1]
	return g.g.Seq, len(g.parts), true
}

// lastComplete returns the sequence number of the newest finished segment.
func (v *hlsView) lastComplete() (uint64, bool) {
	if v.complete == 0 {
		return 0, false
	}
	return v.segs[v.complete-1].g.Seq, true
}

// find returns the segment with sequence seq.
func (v *hlsView) find(seq uint64) *hlsSeg {
	for i := range v.segs {
		if v.segs[i].g.Seq == seq {
			return &v.segs[i]
		}
	}
	return nil
}

// instance names a broadcast's start for URIs: segments of a later
// broadcast of the same name get other URIs, so that caches may keep them
// forever.
func instance(c *media.Catalog) string { return strconv.FormatInt(c.Started, 36) }

func newHLSState(b *media.Broadcast, partMin time.Duration) *hlsState {
	return &hlsState{
		b:         b,
		partMin:   partMin,
		groups:    map[*media.Group]*hlsGroup{},
		inits:     map[*media.Catalog][]*cmaf.Init{},
		dsn:       map[*media.Catalog]uint64{},
		views:     map[uint16]*hlsView{},
		playlists: map[playlistKey][]byte{},
		version:   -1,
	}
}

// view returns the current view of track.
func (st *hlsState) view(track uint16) *hlsView {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.viewLocked(track)
}

func (st *hlsState) viewLocked(track uint16) *hlsView {
	if ver := st.b.ObjectsAppended(); ver != st.version {
		st.version = ver
		clear(st.views)
		clear(st.playlists)
	}
	if v := st.views[track]; v != nil {
		return v
	}
	v := st.build(track)
	st.views[track] = v
	return v
}

func (st *hlsState) build(track uint16) *hlsView {
	gs := st.b.Groups(track)
	// The newest run of consecutive groups: a media sequence has no holes.
	first := len(gs) - 1
	for first > 0 && gs[first-1].Seq+1 == gs[first].Seq {
		first--
	}
	if first < 0 {
		first = 0
	}
	gs = gs[first:]
	v := &hlsView{track: track}
	keep := make(map[*media.Group]*hlsGroup, len(gs))
	for _, g := range gs {
		hg := st.groups[g]
		if hg == nil {
			hg = &hlsGroup{g: g}
		}
		keep[g] = hg
		st.update(hg)
		if len(hg.parts) == 0 {
			break // nothing to list yet (and nothing after it)
		}
		n := len(hg.parts)
		v.segs = append(v.segs, hlsSeg{g: g, parts: hg.parts[:n:n], done: hg.done, dur: hg.dur, capture: hg.capture})
	}
	// Forget groups that left the cache; keep other tracks' groups.
	for g, hg := range st.groups {
		if g.Track == track && keep[g] == nil {
			delete(st.groups, g)
		} else if keep[g] == nil {
			keep[g] = hg
		}
	}
	st.groups = keep
	for len(st.target) <= int(track) {
		st.target = append(st.target, trackTargets{})
	}
	tt := &st.target[track]
	for i, hg := range v.segs {
		if hg.done && i == v.complete {
			v.complete++
		}
		for _, p := range hg.parts {
			r := p.dur.Truncate(time.Millisecond)
			if r < p.dur {
				r += time.Millisecond
			}
			tt.part = max(tt.part, r)
		}
		if hg.done {
			tt.segment = max(tt.segment, int(math.Round(hg.dur.Seconds())), 1)
		}
		// Discontinuity numbers in order of first sight, so that they
		// agree from one playlist to the next.
		d, ok := st.dsn[hg.g.Catalog]
		if !ok {
			if st.dsnSeen {
				st.nextDSN++
			}
			st.dsnSeen = true
			d = st.nextDSN
			st.dsn[hg.g.Catalog] = d
		}
		v.dsn = append(v.dsn, d)
	}
	// Forget catalogs no longer referenced.
	if len(st.dsn) > 64 {
		live := map[*media.Catalog]bool{}
		for _, hg := range st.groups {
			live[hg.g.Catalog] = true
		}
		for c := range st.dsn {
			if !live[c] {
				delete(st.dsn, c)
				delete(st.inits, c)
			}
		}
	}
	v.partTgt = max(tt.part, time.Millisecond)
	v.segTgt = max(tt.segment, 1)
	return v
}

// update reads g's new objects and times them.
func (st *hlsState) update(hg *hlsGroup) {
	if hg.done {
		return
	}
	objs, done := st.b.Objects(hg.g, hg.read, nil)
	for i, o := range objs {
		hg.read++
		if o.Flags&wire.FlagEndOfGroup != 0 || len(o.Payload()) == 0 {
			continue
		}
		if len(hg.parts) == 0 && len(hg.filling.objs) == 0 {
			hg.capture = o.Capture
		}
		var next *media.Object
		if i+1 < len(objs) && objs[i+1].Flags&wire.FlagEndOfGroup == 0 {
			next = objs[i+1]
		}
		d := st.duration(hg.g, o, next)
		hg.filling.objs = append(hg.filling.objs, o)
		hg.filling.dur += d
		hg.dur += d
		// A millisecond's slack: six frames at 30 fps are 199.99… ms.
		if hg.filling.dur+time.Millisecond >= st.partMin {
			hg.flush()
		}
	}
	if done {
		hg.flush() // the last part of a group may be shorter
	}
	hg.done = done
}

// flush makes the objects being gathered a part.
func (hg *hlsGroup) flush() {
	if len(hg.filling.objs) > 0 {
		hg.parts = append(hg.parts, hg.filling)
		hg.filling = hlsPart{}
	}
}

// duration is an object's media duration: its primary track's samples (or,
// for a chunk without them, its longest traf), from its moof.
func (st *hlsState) duration(g *media.Group, o, next *media.Object) time.Duration {
	cat := g.Catalog
	ins, ok := st.inits[cat]
	if !ok {
		ins = make([]*cmaf.Init, len(cat.Inits))
		for i, f := range cat.Inits {
			ins[i], _ = cmaf.ParseInit(f.Payload()) // nil when it does not parse
		}
		st.inits[cat] = ins
	}
	var d time.Duration
	if int(g.Track) < len(ins) && ins[g.Track] != nil {
		in := ins[g.Track]
		if c, err := in.ParseChunk(o.Payload()); err == nil {
			if c.Duration > 0 {
				d = ticks(c.Duration, in.PrimaryTrak().Timescale)
			} else {
				for _, tr := range c.Trafs {
					for _, t := range in.Traks {
						if t.ID == tr.TrackID {
							d = max(d, ticks(tr.Duration, t.Timescale))
						}
					}
				}
			}
		}
	}
	if d <= 0 && next != nil && next.DecodeTime > o.DecodeTime && int(g.Track) < len(cat.Tracks) {
		d = ticks(next.DecodeTime-o.DecodeTime, cat.Tracks[g.Track].Timescale)
	}
	if d <= 0 {
		d = st.lastDur
	}
	if d <= 0 {
		d = time.Second / 30
	}
	st.lastDur = d
	return d
}

func ticks(n uint64, timescale uint32) time.Duration {
	if timescale == 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(timescale) * float64(time.Second))
}
