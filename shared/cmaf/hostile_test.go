package cmaf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/budget"
	"github.com/quiccast/quiccast/shared/testenv"
)

// Hostile shapes: inputs built to cost a parser as much as possible per
// byte. The benchmark below runs each through a Reader; the tests check
// that the shapes over the limits are refused and the ones within are read.

// box returns a box of type typ around the children.
func box(typ string, children ...[]byte) []byte {
	n := 8
	for _, c := range children {
		n += len(c)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, n), uint32(n))
	b = append(b, typ...)
	for _, c := range children {
		b = append(b, c...)
	}
	return b
}

// nested returns depth boxes of type typ, each the only child of the one
// before, the innermost holding inner.
func nested(typ string, depth int, inner []byte) []byte {
	size := 8*depth + len(inner)
	b := make([]byte, 0, size)
	for i := 0; i < depth; i++ {
		b = binary.BigEndian.AppendUint32(b, uint32(size-8*i))
		b = append(b, typ...)
	}
	return append(b, inner...)
}

// free returns a free box of n bytes in all.
func free(n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b, uint32(n))
	copy(b[4:], "free")
	return b
}

// withChild returns container (a whole box) with extra appended to its
// children, its size fixed.
func withChild(container []byte, extra ...[]byte) []byte {
	b := bytes.Clone(container)
	for _, e := range extra {
		b = append(b, e...)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

type hostileShape struct {
	name   string
	data   []byte
	refuse error // nil: read to the end
}

// hostileShapes builds the worst inputs we know, each about size bytes
// where the shape allows.
func hostileShapes(t testing.TB, lim Limits) []hostileShape {
	lim = lim.withDefaults()
	s := demoStream(t)
	init, c0 := s.init, s.chunks[0]
	ftypLen := int(binary.BigEndian.Uint32(init))
	moofLen := int(binary.BigEndian.Uint32(c0))
	ftyp, moov := init[:ftypLen], init[ftypLen:]
	moof, mdat := c0[:moofLen], c0[moofLen:]

	// Finding 1: a moof of ~MaxBox holding a chain of nested trafs.
	depth1 := (lim.MaxBox - len(c0) - 8) / 8
	deepMoof := withChild(moof, nested("traf", depth1, nil))
	// Finding 2: an init of ~MaxInit that is a chain of nested traks.
	depth2 := (lim.MaxInit - len(init)) / 8
	deepInit := cat(ftyp, withChild(moov, nested("trak", depth2, nil)))

	// Within the limits: chains as deep as allowed, side by side in a
	// udta, until the box count is reached; their leaves carry padding so
	// that the init is near MaxInit.
	chains := (lim.MaxBoxes - 200) / lim.MaxDepth
	pad := (lim.MaxInit - len(init) - 16 - chains*8*lim.MaxDepth) / chains
	var udta []byte
	for i := 0; i < chains; i++ {
		udta = append(udta, nested("udta", lim.MaxDepth-3, free(8+pad))...)
	}
	atLimitInit := cat(ftyp, withChild(moov, box("udta", udta)))

	// Many siblings: as many boxes as allowed in one moof, padded to
	// fill MaxBox with the mdat.
	var sib []byte
	for i := 0; i < lim.MaxBoxes-20; i++ {
		sib = append(sib, free(8)...)
	}
	manySiblings := cat(withChild(moof, sib), mdat)
	for i := 0; i < moofLen; i++ { // the mdat moved: so do the samples
		if string(manySiblings[i:i+4]) == "trun" {
			off := binary.BigEndian.Uint32(manySiblings[i+12:])
			binary.BigEndian.PutUint32(manySiblings[i+12:], off+uint32(len(sib)))
		}
	}
	// Many tiny top-level boxes between chunks: ~MaxInit of 8-byte boxes.
	var tiny []byte
	for len(tiny) < lim.MaxInit {
		tiny = append(tiny, free(8)...)
	}
	manyTiny := cat(init, tiny, c0)
	// One box of MaxBox: a chunk whose mdat is padded to the limit.
	bigMdat := make([]byte, lim.MaxBox-moofLen)
	copy(bigMdat, mdat)
	binary.BigEndian.PutUint32(bigMdat, uint32(len(bigMdat)))
	maxBox := cat(init, moof, bigMdat)

	return []hostileShape{
		{fmt.Sprintf("moof_nested_traf_%d", depth1), cat(init, deepMoof, mdat), ErrTooComplex},
		{fmt.Sprintf("init_nested_trak_%d", depth2), cat(deepInit, c0), ErrTooComplex},
		{"init_depth_limit", cat(atLimitInit, c0), nil},
		{"moof_many_siblings", cat(init, manySiblings), nil},
		{"many_tiny_boxes", manyTiny, nil},
		{"max_box", maxBox, nil},
	}
}

// readHostile reads data to its end and returns the Reader's error.
func readHostile(data []byte, lim Limits) error {
	r := NewReader(bytes.NewReader(data), lim)
	for {
		if _, err := r.Next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// BenchmarkHostileShapes reports the parse cost of each worst shape per
// MiB of input (ns/MiB); the ceiling is 50 ms of CPU per MiB.
func BenchmarkHostileShapes(b *testing.B) {
	for _, sh := range hostileShapes(b, Limits{}) {
		b.Run(sh.name, func(b *testing.B) {
			b.SetBytes(int64(len(sh.data)))
			b.ReportAllocs()
			for b.Loop() {
				_ = readHostile(sh.data, Limits{})
			}
			mib := float64(len(sh.data)) / (1 << 20)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/mib, "ns/MiB")
		})
	}
}

// TestHostileShapes checks that every worst shape is refused or read as
// it should be, and within the ceiling of 50 ms per MiB with ample room
// for a busy machine (the quadratic and recursive parser took seconds, or
// overflowed its stack, on the shapes over the limits).
func TestHostileShapes(t *testing.T) {
	for _, sh := range hostileShapes(t, Limits{}) {
		t.Run(sh.name, func(t *testing.T) {
			start := time.Now()
			err := readHostile(sh.data, Limits{})
			took := time.Since(start)
			if sh.refuse == nil && err != nil || sh.refuse != nil && !errors.Is(err, sh.refuse) {
				t.Fatalf("error %v, want %v", err, sh.refuse)
			}
			mib := float64(len(sh.data)) / (1 << 20)
			t.Logf("%.2f MiB in %v (%v per MiB): %v", mib, took, time.Duration(float64(took)/mib), err)
			if limit := time.Duration(mib * float64(time.Second)); took > limit {
				t.Errorf("took %v, over %v (50 ms/MiB is the ceiling; this test allows 20x for a busy machine)", took, limit)
			}
		})
	}
}

// TestNestingAndCountLimits checks the edges of MaxDepth and MaxBoxes for
// an init and a moof, through ParseInit, ParseChunk and a Reader.
func TestNestingAndCountLimits(t *testing.T) {
	s := demoStream(t)
	init, c0 := s.init, s.chunks[0]
	ftypLen := int(binary.BigEndian.Uint32(init))
	moofLen := int(binary.BigEndian.Uint32(c0))
	ftyp, moov := init[:ftypLen], init[ftypLen:]
	moof, mdat := c0[:moofLen], c0[moofLen:]
	in, err := ParseInit(init)
	if err != nil {
		t.Fatal(err)
	}
	// shift moves the chunk's sample offsets by n bytes added to its moof.
	shift := func(c []byte, n int) []byte {
		for i := 0; i+16 <= int(binary.BigEndian.Uint32(c)); i++ {
			if string(c[i:i+4]) == "trun" {
				binary.BigEndian.PutUint32(c[i+12:], binary.BigEndian.Uint32(c[i+12:])+uint32(n))
			}
		}
		return c
	}
	// In a moov, nested udta at depth 2..depth+1: the deepest is at depth+1.
	initNested := func(depth int) []byte { return cat(ftyp, withChild(moov, nested("udta", depth, nil))) }
	// In a moof, nested trafs inside a udta.
	chunkNested := func(depth int) []byte {
		extra := nested("udta", depth, nil)
		return shift(cat(withChild(moof, extra), mdat), len(extra))
	}
	siblings := func(n int) []byte { return bytes.Repeat(free(8), n) }
	initBoxes := 0
	if err := scan(init, "init", 100, 1<<20); err != nil {
		t.Fatal(err)
	}
	for lim := 1; ; lim++ { // count the demo init's boxes
		if scan(init, "init", 100, lim) == nil {
			initBoxes = lim
			break
		}
	}
	moofBoxes := 0
	for lim := 1; ; lim++ {
		if scan(moof, "moof", 100, lim) == nil {
			moofBoxes = lim
			break
		}
	}
	d := DefaultMaxDepth
	for _, ca := range []struct {
		name string
		init []byte
		c    []byte // a chunk after init
		want error
	}{
		{"init at the depth limit", initNested(d - 1), nil, nil},
		{"init one deeper", initNested(d), nil, ErrTooComplex},
		{"init at the box limit", cat(ftyp, withChild(moov, siblings(DefaultMaxBoxes-initBoxes))), nil, nil},
		{"init one box more", cat(ftyp, withChild(moov, siblings(DefaultMaxBoxes-initBoxes+1))), nil, ErrTooComplex},
		{"moof at the depth limit", nil, chunkNested(d - 1), nil},
		{"moof one deeper", nil, chunkNested(d), ErrTooComplex},
		{"moof at the box limit", nil, shift(cat(withChild(moof, siblings(DefaultMaxBoxes-moofBoxes)), mdat), 8*(DefaultMaxBoxes-moofBoxes)), nil},
		{"moof one box more", nil, shift(cat(withChild(moof, siblings(DefaultMaxBoxes-moofBoxes+1)), mdat), 8*(DefaultMaxBoxes-moofBoxes+1)), ErrTooComplex},
		{"container with a 64-bit size", cat(ftyp, withChild(moov, []byte("\x00\x00\x00\x01udta\x00\x00\x00\x00\x00\x00\x00\x10"))), nil, ErrInvalid},
		{"child past its parent", cat(ftyp, withChild(moov, []byte("\x00\x00\x00\x10udta\x00\x00\x00\x09free"))), nil, ErrInvalid},
	} {
		t.Run(ca.name, func(t *testing.T) {
			var err error
			if ca.init != nil {
				_, err = ParseInit(ca.init)
				if _, _, err2 := readAll(t, bytes.NewReader(cat(ca.init, c0)), Limits{MaxInit: 2 << 20}); !errors.Is(err2, ca.want) && !(ca.want == nil && err2 == nil) {
					t.Errorf("Reader: %v", err2)
				}
			} else {
				_, err = in.ParseChunk(ca.c)
				if _, _, err2 := readAll(t, bytes.NewReader(cat(init, ca.c)), Limits{}); !errors.Is(err2, ca.want) && !(ca.want == nil && err2 == nil) {
					t.Errorf("Reader: %v", err2)
				}
			}
			t.Log(err)
			if ca.want == nil && err != nil || ca.want != nil && !errors.Is(err, ca.want) {
				t.Fatalf("error %v, want %v", err, ca.want)
			}
		})
	}
	// The limits are the Reader's to set.
	if _, _, err := readAll(t, bytes.NewReader(cat(initNested(4), c0)), Limits{MaxDepth: 4}); !errors.Is(err, ErrTooComplex) {
		t.Errorf("MaxDepth 4: %v", err)
	}
	if _, _, err := readAll(t, bytes.NewReader(cat(init, chunkNested(3))), Limits{MaxDepth: 4}); !errors.Is(err, ErrTooComplex) {
		t.Errorf("MaxDepth 4, moof: %v", err)
	}
	if _, _, err := readAll(t, bytes.NewReader(cat(init, c0)), Limits{MaxBoxes: moofBoxes - 1}); !errors.Is(err, ErrTooComplex) {
		t.Errorf("MaxBoxes: %v", err)
	}
}

// TestReaderChargesTheBudgetAsBytesArrive checks that a box declared large
// holds only what has arrived, charged to the budget, that the budget
// refuses more than it has, and that everything is given back.
func TestReaderChargesTheBudgetAsBytesArrive(t *testing.T) {
	s := demoStream(t)
	b := budget.New(1 << 20)
	pr, pw := io.Pipe()
	r := NewReader(pr, Limits{Budget: b})
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := r.Next(); err != nil {
				done <- err
				return
			}
		}
	}()
	// An init, then a moof that says it is 8 MiB, then 100 KiB of it.
	pw.Write(s.init)
	pw.Write([]byte{0x00, 0x7f, 0xff, 0xf0, 'm', 'o', 'o', 'f'})
	for i := 0; i < 100; i++ {
		pw.Write(make([]byte, 1<<10))
	}
	testenv.WaitFor(t, 5*time.Second, "100 KiB charged", func() bool { return b.Used() >= 100<<10 })
	if u := b.Used(); u > 2*100<<10+minGrow {
		t.Fatalf("%d bytes charged for 100 KiB received of a box declared 8 MiB", u)
	}
	// More than the budget: refused.
	go func() {
		for {
			if _, err := pw.Write(make([]byte, 64<<10)); err != nil {
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrOverBudget) {
			t.Fatalf("error %v, want %v", err, ErrOverBudget)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no refusal")
	}
	pr.CloseWithError(io.ErrClosedPipe)
	if b.Used() != 0 || b.Peak() > b.Limit() {
		t.Fatalf("after the refusal: %d bytes charged, peak %d", b.Used(), b.Peak())
	}

	// A chunk read whole is given back once Next returns it; a stream
	// cut mid-box gives back what it held.
	r = NewReader(bytes.NewReader(cat(s.init, s.chunks[0], s.chunks[1][:1000])), Limits{Budget: b})
	for i := 0; i < 2; i++ {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		if b.Used() != 0 {
			t.Fatalf("%d bytes still charged after Next", b.Used())
		}
	}
	if _, err := r.Next(); err == nil || b.Used() != 0 {
		t.Fatalf("cut stream: %v, %d bytes still charged", err, b.Used())
	}
}

// TestMetaBoxesOfBothKinds checks that an init with a udta/meta in the ISO
// form (version and flags) and in QuickTime's (none) is read.
func TestMetaBoxesOfBothKinds(t *testing.T) {
	s := demoStream(t)
	ftypLen := int(binary.BigEndian.Uint32(s.init))
	ftyp, moov := s.init[:ftypLen], s.init[ftypLen:]
	hdlr := box("hdlr", make([]byte, 25))
	ilst := box("ilst", box("\xa9too", box("data", []byte("\x00\x00\x00\x01\x00\x00\x00\x00Lavf"))))
	iso := box("meta", []byte{0, 0, 0, 0}, hdlr, ilst)
	qt := box("meta", hdlr, ilst)
	for name, meta := range map[string][]byte{"iso": iso, "quicktime": qt} {
		if _, err := ParseInit(cat(ftyp, withChild(moov, box("udta", meta)))); err != nil {
			t.Errorf("%s meta: %v", name, err)
		}
	}
}

// TestBoxesBetweenChunksHoldNothing checks that repeated inits and prft
// boxes, which a stream may send many of before a chunk, are not held
// (nor charged) until the chunk comes.
func TestBoxesBetweenChunksHoldNothing(t *testing.T) {
	s := demoStream(t)
	bigPrft := AppendPrft(nil, 1, 1, 0)
	bigPrft = append(bigPrft, make([]byte, 1<<20)...)
	binary.BigEndian.PutUint32(bigPrft, uint32(len(bigPrft)))
	var stream []byte
	stream = append(stream, s.init...)
	for i := 0; i < 20; i++ {
		stream = append(append(stream, s.init...), bigPrft...)
	}
	stream = append(stream, s.chunks[0]...)
	b := budget.New(4 << 20) // less than the 20 MiB of prft sent
	_, chunks, err := readAll(t, bytes.NewReader(stream), Limits{Budget: b})
	if err != nil || len(chunks) != 1 || b.Used() != 0 || b.Peak() > 2<<20 {
		t.Fatalf("%d chunks, %v; %d bytes charged, peak %d", len(chunks), err, b.Used(), b.Peak())
	}
}
