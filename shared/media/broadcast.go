package media

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quiccast/quiccast/shared/budget"
	"github.com/quiccast/quiccast/shared/wire"
)

// Errors from Append.
var (
	ErrNoCatalog     = errors.New("media: no catalog yet")
	ErrNoTrack       = errors.New("media: no such track")
	ErrStale         = errors.New("media: group older than the cache")
	ErrOutOfOrder    = errors.New("media: object out of order")
	ErrGroupDone     = errors.New("media: group already finished")
	ErrGroupTooLarge = errors.New("media: group over the per-track byte limit")
	ErrOverBudget    = errors.New("media: process memory budget exhausted")
	ErrClosed        = errors.New("media: broadcast closed")
)

// Limits bound the cache of one broadcast. Zero fields take defaults.
type Limits struct {
	MaxGroups int           // groups kept per track (default 8)
	MaxBytes  int64         // bytes kept per track (default 32 MiB)
	MaxAge    time.Duration // older groups are dropped (default 30 s)
	// Budget is the process-wide byte budget shared by all broadcasts;
	// nil means none.
	Budget *budget.Budget
}

func (l Limits) withDefaults() Limits {
	if l.MaxGroups <= 0 {
		l.MaxGroups = 8
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 32 << 20
	}
	if l.MaxAge <= 0 {
		l.MaxAge = 30 * time.Second
	}
	if l.Budget == nil {
		l.Budget = budget.New(0)
	}
	return l
}

// Group is one GOP of one track. Its fields are fixed at creation; its
// objects are read through the Broadcast.
type Group struct {
	Track   uint16
	Seq     uint64
	Catalog *Catalog // the epoch this group belongs to
	Created int64    // arrival of its first object, Unix ns
	objects []*Object
	done    bool
	bytes   int64
}

type track struct {
	groups []*Group // rising Seq
	bytes  int64
}

func (t *track) find(seq uint64) *Group {
	for i := len(t.groups) - 1; i >= 0; i-- {
		switch g := t.groups[i]; {
		case g.Seq == seq:
			return g
		case g.Seq < seq:
			return nil
		}
	}
	return nil
}

// after returns the oldest cached group with Seq > seq.
func (t *track) after(seq uint64) *Group {
	for _, g := range t.groups {
		if g.Seq > seq {
			return g
		}
	}
	return nil
}

func (t *track) newest() *Group {
	if len(t.groups) == 0 {
		return nil
	}
	return t.groups[len(t.groups)-1]
}

// Broadcast is one live broadcast's cache. Publishers (or the relay) append
// objects; viewers read them through Cursors. Safe for concurrent use.
type Broadcast struct {
	Name string
	lim  Limits

	mu      sync.RWMutex
	catalog *Catalog
	tracks  []*track
	notify  chan struct{}
	closed  bool
	done    chan struct{}

	objects atomic.Int64 // objects appended, for metrics
}

// New returns an empty broadcast.
func New(name string, lim Limits) *Broadcast {
	return &Broadcast{
		Name:   name,
		lim:    lim.withDefaults(),
		notify: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// wake tells every waiting reader that something changed. Hold b.mu.
func (b *Broadcast) wake() {
	close(b.notify)
	b.notify = make(chan struct{})
}

// Changed returns a channel closed at the next change.
func (b *Broadcast) Changed() <-chan struct{} {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.notify
}

// Done is closed when the broadcast is closed.
func (b *Broadcast) Done() <-chan struct{} { return b.done }

// SetCatalog starts a new epoch: groups created from now on belong to c.
// Tracks c adds are created; groups of earlier epochs stay readable.
func (b *Broadcast) SetCatalog(c *Catalog) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.catalog = c
	for len(b.tracks) < len(c.Tracks) {
		b.tracks = append(b.tracks, &track{})
	}
	b.wake()
	return nil
}

// Catalog returns the current catalog, nil before the first.
func (b *Broadcast) Catalog() *Catalog {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.catalog
}

// Append adds o to its group. An object with FlagKeyframe and Index 0
// opens a new group, whose Seq must be above every cached one; other
// objects must come next in their group. An object with FlagEndOfGroup
// finishes its group. Older groups are dropped to keep the limits.
func (b *Broadcast) Append(o *Object) error { return b.AppendIn(o, nil) }

// AppendIn is Append for a relay's mirror of a broadcast: a group it opens
// belongs to cat (nil: the current catalog), and a group may arrive after
// newer ones (its stream was slower) as long as it is newer than the oldest
// cached group.
func (b *Broadcast) AppendIn(o *Object, cat *Catalog) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	mirror := cat != nil
	if cat == nil {
		cat = b.catalog
	}
	if cat == nil {
		return ErrNoCatalog
	}
	if int(o.Track) >= len(cat.Tracks) || int(o.Track) >= len(b.tracks) {
		return fmt.Errorf("%w: %d", ErrNoTrack, o.Track)
	}
	t := b.tracks[o.Track]
	g := t.find(o.Group)
	if g == nil {
		at := len(t.groups)
		if n := t.newest(); n != nil && o.Group <= n.Seq {
			if !mirror || n.Seq-o.Group >= uint64(b.lim.MaxGroups) {
				return fmt.Errorf("%w: group %d, cache holds %d..%d", ErrStale, o.Group, t.groups[0].Seq, n.Seq)
			}
			for at > 0 && t.groups[at-1].Seq > o.Group {
				at--
			}
		}
		if o.Index != 0 || o.Flags&wire.FlagKeyframe == 0 {
			return fmt.Errorf("%w: group %d must open with a keyframe object at index 0, got index %d", ErrOutOfOrder, o.Group, o.Index)
		}
		g = &Group{Track: o.Track, Seq: o.Group, Catalog: cat, Created: o.Arrival}
		t.groups = append(t.groups, nil)
		copy(t.groups[at+1:], t.groups[at:])
		t.groups[at] = g
	} else {
		if g.done {
			return fmt.Errorf("%w: group %d", ErrGroupDone, g.Seq)
		}
		if int(o.Index) != len(g.objects) {
			return fmt.Errorf("%w: group %d expects object %d, got %d", ErrOutOfOrder, g.Seq, len(g.objects), o.Index)
		}
	}
	size := o.Size()
	if g.bytes+size > b.lim.MaxBytes {
		b.dropEmpty(t, g)
		return fmt.Errorf("%w: group %d would hold %d bytes, limit %d (are keyframes too rare?)", ErrGroupTooLarge, g.Seq, g.bytes+size, b.lim.MaxBytes)
	}
	for !b.lim.Budget.Reserve(size) {
		if t.groups[0] == g || !b.evictOldest(t) {
			b.dropEmpty(t, g)
			return fmt.Errorf("%w: %d of %d bytes in use", ErrOverBudget, b.lim.Budget.Used(), b.lim.Budget.Limit())
		}
	}
	g.objects = append(g.objects, o)
	g.bytes += size
	t.bytes += size
	if o.Flags&wire.FlagEndOfGroup != 0 {
		g.done = true
	}
	b.objects.Add(1)
	for len(t.groups) > b.lim.MaxGroups || t.bytes > b.lim.MaxBytes ||
		(len(t.groups) > 1 && o.Arrival-t.groups[0].Created > int64(b.lim.MaxAge)) {
		if !b.evictOldest(t) {
			break
		}
	}
	b.wake()
	return nil
}

// dropEmpty removes g again if the failed append had just created it.
func (b *Broadcast) dropEmpty(t *track, g *Group) {
	if len(g.objects) != 0 {
		return
	}
	for i, x := range t.groups {
		if x == g {
			t.groups = append(t.groups[:i], t.groups[i+1:]...)
			return
		}
	}
}

// evictOldest drops t's oldest group unless it is the newest. Hold b.mu.
func (b *Broadcast) evictOldest(t *track) bool {
	if len(t.groups) < 2 {
		return false
	}
	g := t.groups[0]
	t.groups[0] = nil
	t.groups = t.groups[1:]
	t.bytes -= g.bytes
	b.lim.Budget.Release(g.bytes)
	return true
}

// Finish appends an end-of-group marker to group seq of track unless it is
// already finished or gone. A publisher calls it when a group ends; the
// relay when a group's stream ends or is reset.
func (b *Broadcast) Finish(trackID uint16, seq uint64, arrival int64) {
	b.mu.RLock()
	var n int
	ok := false
	if !b.closed && int(trackID) < len(b.tracks) {
		if g := b.tracks[trackID].find(seq); g != nil && !g.done {
			n, ok = len(g.objects), true
		}
	}
	b.mu.RUnlock()
	if ok {
		// A racing Append can only make this fail with ErrOutOfOrder
		// or ErrGroupDone, which leave the group as the racer wants.
		_ = b.Append(NewObject(wire.Header{Kind: wire.KindObject, Flags: wire.FlagEndOfGroup, Track: trackID, Group: seq, Index: uint32(n)}, nil, arrival))
	}
}

// Latest returns the newest group of a track, or nil.
func (b *Broadcast) Latest(trackID uint16) *Group {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if int(trackID) >= len(b.tracks) {
		return nil
	}
	return b.tracks[trackID].newest()
}

// GroupAtOrAfter returns the oldest cached group of a track whose Seq is at
// least seq, or nil.
func (b *Broadcast) GroupAtOrAfter(trackID uint16, seq uint64) *Group {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if int(trackID) >= len(b.tracks) {
		return nil
	}
	if seq == 0 {
		if gs := b.tracks[trackID].groups; len(gs) > 0 {
			return gs[0]
		}
		return nil
	}
	return b.tracks[trackID].after(seq - 1)
}

// Groups returns the cached groups of a track, oldest first.
func (b *Broadcast) Groups(trackID uint16) []*Group {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if int(trackID) >= len(b.tracks) {
		return nil
	}
	return append([]*Group(nil), b.tracks[trackID].groups...)
}

// Objects appends to dst the objects of g from index from on, and reports
// whether g is finished.
func (b *Broadcast) Objects(g *Group, from int, dst []*Object) ([]*Object, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if from < len(g.objects) {
		dst = append(dst, g.objects[from:]...)
	}
	return dst, g.done
}

// Bytes returns the bytes the cache holds.
func (b *Broadcast) Bytes() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var n int64
	for _, t := range b.tracks {
		n += t.bytes
	}
	return n
}

// ObjectsAppended counts objects appended since the start.
func (b *Broadcast) ObjectsAppended() int64 { return b.objects.Load() }

// Close drops the cache, gives its bytes back to the budget and tells
// every reader. It is idempotent.
func (b *Broadcast) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for _, t := range b.tracks {
		b.lim.Budget.Release(t.bytes)
		t.bytes = 0
		t.groups = nil
	}
	close(b.done)
	b.wake()
}

// Closed reports whether Close was called.
func (b *Broadcast) Closed() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.closed
}
