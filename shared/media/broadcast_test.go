package media

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/budget"
	"github.com/quiccast/quiccast/shared/wire"
)

func testCatalog(t testing.TB, epoch uint64, tracks int) *Catalog {
	t.Helper()
	wc := wire.Catalog{Broadcast: "live/test", Epoch: epoch}
	var inits [][]byte
	for i := 0; i < tracks; i++ {
		wc.Tracks = append(wc.Tracks, wire.TrackInfo{ID: uint16(i), Kind: "video", Codec: "avc1.4D401E", Timescale: 90000})
		inits = append(inits, []byte(fmt.Sprintf("init of track %d epoch %d", i, epoch)))
	}
	c, err := NewCatalog(wc, inits)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// object makes an object of a payload of n bytes.
func object(track uint16, group uint64, index uint32, flags wire.Flags, arrival int64, n int) *Object {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(index + uint32(i))
	}
	return NewObject(wire.Header{Kind: wire.KindObject, Flags: flags, Track: track, Group: group, Index: index, DecodeTime: group*1000 + uint64(index)}, p, arrival)
}

// addGroup appends a group of n objects (the first a keyframe), each of
// size bytes, arriving step ns apart from arrival; finished adds the end
// marker.
func addGroup(t testing.TB, b *Broadcast, track uint16, seq uint64, n, size int, arrival, step int64, finished bool) {
	t.Helper()
	for i := 0; i < n; i++ {
		f := wire.Flags(0)
		if i == 0 {
			f = wire.FlagKeyframe
		}
		if err := b.Append(object(track, seq, uint32(i), f, arrival+int64(i)*step, size)); err != nil {
			t.Fatalf("group %d object %d: %v", seq, i, err)
		}
	}
	if finished {
		b.Finish(track, seq, arrival+int64(n)*step)
	}
}

// cached sums the Size of every object the broadcast holds.
func cached(b *Broadcast) int64 {
	var n int64
	for ti := range b.tracks {
		for _, g := range b.Groups(uint16(ti)) {
			objs, _ := b.Objects(g, 0, nil)
			for _, o := range objs {
				n += o.Size()
			}
		}
	}
	return n
}

func seqs(b *Broadcast, track uint16) []uint64 {
	var s []uint64
	for _, g := range b.Groups(track) {
		s = append(s, g.Seq)
	}
	return s
}

func checkBudget(t *testing.T, b *Broadcast, bud *budget.Budget) {
	t.Helper()
	if c := cached(b); bud.Used() != c || b.Bytes() != c {
		t.Fatalf("budget used %d, Bytes() %d, cached objects %d", bud.Used(), b.Bytes(), c)
	}
}

func TestAppendRules(t *testing.T) {
	bud := budget.New(0)
	b := New("live/test", Limits{Budget: bud})
	if err := b.Append(object(0, 1, 0, wire.FlagKeyframe, 0, 10)); !errors.Is(err, ErrNoCatalog) {
		t.Fatalf("before a catalog: %v", err)
	}
	if b.Catalog() != nil {
		t.Fatal("catalog before SetCatalog")
	}
	cat := testCatalog(t, 1, 2)
	if err := b.SetCatalog(cat); err != nil {
		t.Fatal(err)
	}
	if b.Catalog() != cat {
		t.Fatal("Catalog() is not the one set")
	}
	kf := wire.FlagKeyframe
	for i, st := range []struct {
		o    *Object
		want error
	}{
		{object(2, 1, 0, kf, 0, 10), ErrNoTrack},
		{object(0, 5, 1, kf, 0, 10), ErrOutOfOrder}, // a new group starts at index 0
		{object(0, 5, 0, 0, 0, 10), ErrOutOfOrder},  // with a keyframe
		{object(0, 5, 0, kf, 1, 10), nil},
		{object(0, 5, 2, 0, 2, 10), ErrOutOfOrder}, // index 1 missing
		{object(0, 5, 1, 0, 3, 10), nil},
		{object(0, 5, 1, 0, 4, 10), ErrOutOfOrder}, // index 1 again
		{object(0, 5, 0, kf, 4, 10), ErrOutOfOrder},
		{object(0, 4, 0, kf, 5, 10), ErrStale}, // older than the cache
		{object(0, 7, 0, kf, 6, 10), nil},      // groups may skip numbers
		{object(0, 6, 0, kf, 7, 10), ErrStale}, // but not go back
		{object(0, 5, 2, 0, 8, 10), nil},       // an older open group still takes objects
		{object(1, 1, 0, kf, 9, 10), nil},      // tracks count groups apart
		{object(1, 1, 1, wire.FlagEndOfGroup, 10, 0), nil},
		{object(1, 1, 2, 0, 11, 10), ErrGroupDone},
		{object(1, 2, 0, kf, 12, 10), nil},
	} {
		err := b.Append(st.o)
		if !errors.Is(err, st.want) || (err == nil) != (st.want == nil) {
			t.Fatalf("step %d (track %d group %d index %d): %v, want %v", i, st.o.Track, st.o.Group, st.o.Index, err, st.want)
		}
		checkBudget(t, b, bud)
	}
	if got := seqs(b, 0); fmt.Sprint(got) != "[5 7]" {
		t.Fatalf("track 0 groups %v (a failed append must not leave an empty group)", got)
	}
	if got := seqs(b, 1); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("track 1 groups %v", got)
	}
	if n := b.ObjectsAppended(); n != 7 {
		t.Fatalf("ObjectsAppended %d, want 7", n)
	}
	if g := b.Latest(0); g == nil || g.Seq != 7 || g.Track != 0 || g.Catalog != cat || g.Created != 6 {
		t.Fatalf("Latest(0) = %+v", g)
	}
	if b.Latest(5) != nil || b.Groups(5) != nil {
		t.Fatal("groups of a track the catalog lacks")
	}
}

func TestFinish(t *testing.T) {
	b := New("f", Limits{})
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b, 0, 3, 4, 100, 0, 1, false)
	g := b.Latest(0)
	objs, done := b.Objects(g, 0, nil)
	if len(objs) != 4 || done {
		t.Fatalf("%d objects, done %v", len(objs), done)
	}
	b.Finish(0, 3, 99)
	objs, done = b.Objects(g, 0, nil)
	if len(objs) != 5 || !done {
		t.Fatalf("after Finish: %d objects, done %v", len(objs), done)
	}
	end := objs[4]
	if end.Flags != wire.FlagEndOfGroup || end.Index != 4 || end.Group != 3 || end.Track != 0 ||
		end.Kind != wire.KindObject || len(end.Payload()) != 0 || end.Arrival != 99 {
		t.Fatalf("end marker %+v", end.Header)
	}
	if h, p, err := wire.Parse(end.Frame()); err != nil || h != end.Header || len(p) != 0 {
		t.Fatalf("end marker frame: %+v %v", h, err)
	}
	// Finishing again, an unknown group or track, changes nothing.
	b.Finish(0, 3, 100)
	b.Finish(0, 2, 100)
	b.Finish(0, 4, 100)
	b.Finish(9, 3, 100)
	if objs, _ := b.Objects(g, 0, nil); len(objs) != 5 {
		t.Fatalf("%d objects after repeated Finish", len(objs))
	}
	if err := b.Append(object(0, 3, 5, 0, 0, 1)); !errors.Is(err, ErrGroupDone) {
		t.Fatalf("append after the end marker: %v", err)
	}
	// Objects from an index on, appended to dst.
	dst := []*Object{end}
	dst, _ = b.Objects(g, 3, dst)
	if len(dst) != 3 || dst[1].Index != 3 || dst[2] != end {
		t.Fatalf("Objects(from 3) = %d objects", len(dst))
	}
	if dst, _ := b.Objects(g, 9, nil); len(dst) != 0 {
		t.Fatal("Objects past the end")
	}
}

func TestEvictByMaxGroups(t *testing.T) {
	bud := budget.New(0)
	b := New("g", Limits{MaxGroups: 3, Budget: bud})
	b.SetCatalog(testCatalog(t, 1, 2))
	for seq := uint64(1); seq <= 6; seq++ {
		addGroup(t, b, 0, seq, 3, 500, int64(seq)*1e6, 1e3, true)
		checkBudget(t, b, bud)
	}
	addGroup(t, b, 1, 1, 2, 500, 0, 1, false) // the other track keeps its own
	if got := fmt.Sprint(seqs(b, 0)); got != "[4 5 6]" {
		t.Fatalf("groups %s, want [4 5 6]", got)
	}
	if got := fmt.Sprint(seqs(b, 1)); got != "[1]" {
		t.Fatalf("track 1 groups %s", got)
	}
	checkBudget(t, b, bud)
	if err := b.Append(object(0, 3, 0, wire.FlagKeyframe, 0, 1)); !errors.Is(err, ErrStale) {
		t.Fatalf("evicted group: %v", err)
	}
}

func TestEvictByMaxBytes(t *testing.T) {
	size := object(0, 0, 0, 0, 0, 1000).Size()
	bud := budget.New(0)
	// Room for 5 objects per track: groups of 2 mean 2 groups stay.
	b := New("b", Limits{MaxBytes: 5 * size, Budget: bud})
	b.SetCatalog(testCatalog(t, 1, 1))
	for seq := uint64(1); seq <= 4; seq++ {
		addGroup(t, b, 0, seq, 2, 1000, 0, 0, false)
		checkBudget(t, b, bud)
		if b.Bytes() > 5*size {
			t.Fatalf("%d bytes cached, limit %d", b.Bytes(), 5*size)
		}
	}
	if got := fmt.Sprint(seqs(b, 0)); got != "[3 4]" {
		t.Fatalf("groups %s, want [3 4]", got)
	}
	// One group may fill the limit exactly, never more.
	addGroup(t, b, 0, 5, 5, 1000, 0, 0, false)
	if got := fmt.Sprint(seqs(b, 0)); got != "[5]" {
		t.Fatalf("groups %s, want [5]", got)
	}
	used := bud.Used()
	err := b.Append(object(0, 5, 5, 0, 0, 1000))
	if !errors.Is(err, ErrGroupTooLarge) {
		t.Fatalf("6th object: %v", err)
	}
	if bud.Used() != used || len(b.Groups(0)) != 1 {
		t.Fatal("a refused object changed the cache")
	}
	// A new group whose first object alone is too large is not left behind.
	if err := b.Append(object(0, 6, 0, wire.FlagKeyframe, 0, int(6*size))); !errors.Is(err, ErrGroupTooLarge) {
		t.Fatalf("huge keyframe: %v", err)
	}
	if g := b.Latest(0); g.Seq != 5 {
		t.Fatalf("latest group %d after a refused new group", g.Seq)
	}
	checkBudget(t, b, bud)
	// The group can still go on after the refusal.
	addGroup(t, b, 0, 6, 1, 10, 0, 0, false)
	checkBudget(t, b, bud)
}

func TestEvictByMaxAge(t *testing.T) {
	bud := budget.New(0)
	b := New("a", Limits{MaxAge: time.Second, Budget: bud})
	b.SetCatalog(testCatalog(t, 1, 1))
	ms := int64(time.Millisecond)
	addGroup(t, b, 0, 1, 2, 10, 0, 100*ms, true)        // created at 0
	addGroup(t, b, 0, 2, 2, 10, 500*ms, 100*ms, true)   // 0.5 s
	addGroup(t, b, 0, 3, 2, 10, 1000*ms, 100*ms, false) // 1.0 s: the newest object is 1.1 s after group 1
	if got := fmt.Sprint(seqs(b, 0)); got != "[2 3]" {
		t.Fatalf("groups %s, want [2 3]", got)
	}
	// A group alone is never dropped, however old.
	b2 := New("a2", Limits{MaxAge: time.Second})
	b2.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b2, 0, 1, 50, 10, 0, 100*ms, false)
	if len(b2.Groups(0)) != 1 {
		t.Fatal("the only group was dropped")
	}
	addGroup(t, b, 0, 4, 1, 10, 5000*ms, 0, false)
	if got := fmt.Sprint(seqs(b, 0)); got != "[4]" {
		t.Fatalf("groups %s, want [4]", got)
	}
	checkBudget(t, b, bud)
}

func TestSharedBudget(t *testing.T) {
	size := object(0, 0, 0, 0, 0, 1000).Size()
	bud := budget.New(6 * size)
	a := New("a", Limits{Budget: bud})
	b := New("b", Limits{Budget: bud})
	a.SetCatalog(testCatalog(t, 1, 1))
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, a, 0, 1, 3, 1000, 0, 0, false) // a holds 3
	addGroup(t, b, 0, 1, 2, 1000, 0, 0, false) // b holds 2: 1 left
	addGroup(t, b, 0, 2, 1, 1000, 0, 0, false) // full
	if bud.Used() != 6*size {
		t.Fatalf("used %d, want %d", bud.Used(), 6*size)
	}
	// b evicts its own older group to make room.
	if err := b.Append(object(0, 2, 1, 0, 0, 1000)); err != nil {
		t.Fatalf("append with an evictable group: %v", err)
	}
	if got := fmt.Sprint(seqs(b, 0)); got != "[2]" {
		t.Fatalf("b's groups %s, want [2]", got)
	}
	// Now b's only group is the one being written: nothing to evict.
	if err := a.Append(object(0, 1, 3, 0, 0, 1000)); err != nil { // a takes the room b freed
		t.Fatal(err)
	}
	if bud.Used() != 6*size {
		t.Fatalf("used %d, want full", bud.Used())
	}
	err := b.Append(object(0, 2, 2, 0, 0, 1000))
	if !errors.Is(err, ErrOverBudget) {
		t.Fatalf("append over the budget: %v", err)
	}
	if a.Bytes() != 4*size || b.Bytes() != 2*size || bud.Used() != 6*size {
		t.Fatalf("a %d, b %d, used %d", a.Bytes(), b.Bytes(), bud.Used())
	}
	// A new group makes room by dropping the track's older groups, never
	// another broadcast's.
	if err := b.Append(object(0, 3, 0, wire.FlagKeyframe, 0, 1000)); err != nil {
		t.Fatalf("new group: %v", err)
	}
	if got := fmt.Sprint(seqs(b, 0)); got != "[3]" || a.Bytes() != 4*size {
		t.Fatalf("b's groups %s, a holds %d", got, a.Bytes())
	}
	// A new group that cannot fit even alone is refused and not left
	// behind.
	if err := b.Append(object(0, 4, 0, wire.FlagKeyframe, 0, int(3*size))); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("new group over the budget: %v", err)
	}
	if g := b.Latest(0); g != nil && g.Seq == 4 {
		t.Fatal("the refused group was kept")
	}
	if b.Bytes() != cached(b) || a.Bytes() != cached(a) {
		t.Fatal("Bytes() disagrees with the cached objects")
	}
	if bud.Used() != a.Bytes()+b.Bytes() {
		t.Fatalf("used %d, a %d + b %d", bud.Used(), a.Bytes(), b.Bytes())
	}
	if bud.Peak() != 6*size {
		t.Fatalf("peak %d", bud.Peak())
	}
	// Closing gives everything back.
	a.Close()
	if bud.Used() != b.Bytes() {
		t.Fatalf("after closing a: used %d, b holds %d", bud.Used(), b.Bytes())
	}
	if err := b.Append(object(0, 5, 0, wire.FlagKeyframe, 0, int(3*size))); err != nil {
		t.Fatalf("after a closed: %v", err)
	}
	b.Close()
	if bud.Used() != 0 {
		t.Fatalf("used %d after closing both", bud.Used())
	}
}

func TestClose(t *testing.T) {
	bud := budget.New(0)
	b := New("c", Limits{Budget: bud})
	b.SetCatalog(testCatalog(t, 1, 2))
	addGroup(t, b, 0, 1, 3, 100, 0, 0, true)
	addGroup(t, b, 1, 1, 3, 100, 0, 0, false)
	changed := b.Changed()
	if bud.Used() == 0 {
		t.Fatal("nothing reserved")
	}
	b.Close()
	select {
	case <-b.Done():
	default:
		t.Fatal("Done not closed")
	}
	select {
	case <-changed:
	default:
		t.Fatal("readers not woken")
	}
	if !b.Closed() || bud.Used() != 0 || b.Bytes() != 0 {
		t.Fatalf("closed %v, used %d, bytes %d", b.Closed(), bud.Used(), b.Bytes())
	}
	b.Close() // idempotent
	if bud.Used() != 0 {
		t.Fatal("second Close released again")
	}
	if err := b.Append(object(0, 2, 0, wire.FlagKeyframe, 0, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := b.SetCatalog(testCatalog(t, 2, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetCatalog after Close: %v", err)
	}
	b.Finish(1, 1, 0)
	if b.Latest(0) != nil || len(b.Groups(0)) != 0 {
		t.Fatal("groups after Close")
	}
}

func TestChanged(t *testing.T) {
	b := New("c", Limits{})
	ch := b.Changed()
	b.SetCatalog(testCatalog(t, 1, 1))
	select {
	case <-ch:
	default:
		t.Fatal("SetCatalog did not signal")
	}
	ch = b.Changed()
	b.Append(object(0, 1, 1, 0, 0, 1)) // refused: no signal
	select {
	case <-ch:
		t.Fatal("a refused append signalled")
	default:
	}
	b.Append(object(0, 1, 0, wire.FlagKeyframe, 0, 1))
	select {
	case <-ch:
	default:
		t.Fatal("Append did not signal")
	}
}

func TestSetCatalogKeepsOldEpochs(t *testing.T) {
	b := New("e", Limits{})
	c1 := testCatalog(t, 1, 1)
	b.SetCatalog(c1)
	addGroup(t, b, 0, 1, 2, 10, 0, 0, true)
	c2 := testCatalog(t, 2, 2)
	b.SetCatalog(c2)
	addGroup(t, b, 0, 2, 2, 10, 0, 0, false)
	addGroup(t, b, 1, 1, 1, 10, 0, 0, false) // a track the new epoch added
	gs := b.Groups(0)
	if len(gs) != 2 || gs[0].Catalog != c1 || gs[1].Catalog != c2 || b.Latest(1).Catalog != c2 {
		t.Fatal("groups do not keep their epoch's catalog")
	}
	// Shrinking back to one track keeps track 1's groups readable but
	// refuses new objects for it.
	b.SetCatalog(testCatalog(t, 3, 1))
	if err := b.Append(object(1, 2, 0, wire.FlagKeyframe, 0, 1)); !errors.Is(err, ErrNoTrack) {
		t.Fatalf("track dropped by the catalog: %v", err)
	}
	if b.Latest(1) == nil {
		t.Fatal("track 1's cache is gone")
	}
}
