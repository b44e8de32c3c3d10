package cmaf

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// A peer's boxes never reach a recursive decoder as sent. They are first
// walked without recursion (scan), which bounds their nesting depth and
// number, and then cut down (prune) to the few boxes this package reads,
// along a fixed path whose depth does not depend on the input. Only that
// copy goes to mp4ff, whose decoders recurse into every container and
// recompute each subtree's size at every level. Both steps are linear in
// the input.

// childOffset returns where the children of a container box of type typ
// start within box (the whole box), and false for a box read as a leaf.
// It knows the ISO BMFF containers that a CMAF init or moof holds.
func childOffset(typ string, box []byte) (int, bool) {
	switch typ {
	case "moov", "trak", "mdia", "minf", "stbl", "dinf", "edts", "mvex", "moof", "traf", "mfra",
		"udta", "tref", "sinf", "schi", "trgr", "ludt", "ilst", "wave":
		return 8, true
	case "meta":
		if len(box) >= 16 && string(box[12:16]) == "hdlr" {
			return 8, true // QuickTime's meta has no version and flags
		}
		return 12, true
	case "stsd", "dref":
		return 16, true
	}
	switch sampleEntryClass(typ) {
	case visualEntry:
		return 86, true
	case audioEntry:
		return audioChildOffset(box), true
	}
	return 0, false
}

const (
	otherEntry = iota
	visualEntry
	audioEntry
)

// sampleEntryClass says whether typ is a visual or an audio sample entry
// as mp4ff v0.56.0 decodes them (DecodeVisualSampleEntrySR,
// DecodeAudioSampleEntrySR and its QuickTime twin).
func sampleEntryClass(typ string) int {
	switch typ {
	case "av01", "avc1", "avc3", "avs3", "dvh1", "dvhe", "encv", "hev1", "hvc1", "jpeg", "mjpg",
		"mp4v", "vp08", "vp09", "vvc1", "vvi1":
		return visualEntry
	case "ac-3", "ac-4", "ec-3", "enca", "fLaC", "iamf", "mha1", "mha2", "mhm1", "mhm2", "mp4a", "Opus",
		".mp3", "lpcm", "sowt", "twos":
		return audioEntry
	}
	return otherEntry
}

// audioChildOffset is where an audio sample entry's children start: after
// the 28-byte ISO entry, plus QuickTime's version 1 or 2 sound description
// when the entry says so (as mp4ff reads it).
func audioChildOffset(box []byte) int {
	const iso = 8 + 28
	if len(box) < 18 {
		return iso
	}
	switch binary.BigEndian.Uint16(box[16:18]) {
	case 1:
		if len(box) >= iso+16 {
			return iso + 16
		}
	case 2:
		// mp4ff falls back to the ISO layout when the marker is wrong.
		if len(box) >= iso+36 && binary.BigEndian.Uint32(box[iso+16:]) == 0x7F000000 {
			return iso + 36
		}
	}
	return iso
}

// boxHeader reads the header of the box at the start of b, which must
// hold all of it: type, total size and header length.
func boxHeader(b []byte) (typ string, size, hl int, err error) {
	if len(b) < 8 {
		return "", 0, 0, fmt.Errorf("%w: %d stray bytes where a box should start", ErrInvalid, len(b))
	}
	typ = string(b[4:8])
	s, hl := uint64(binary.BigEndian.Uint32(b)), 8
	switch s {
	case 0:
		return typ, 0, 0, fmt.Errorf("%w: box %q has size 0", ErrInvalid, typ)
	case 1:
		if len(b) < 16 {
			return typ, 0, 0, fmt.Errorf("%w: box %q: 64-bit size cut off", ErrInvalid, typ)
		}
		s, hl = binary.BigEndian.Uint64(b[8:]), 16
	}
	if s < uint64(hl) || s > uint64(len(b)) {
		return typ, 0, 0, fmt.Errorf("%w: box %q of %d bytes does not fit the %d bytes left in its parent", ErrInvalid, typ, s, len(b))
	}
	return typ, int(s), hl, nil
}

// scan walks the boxes in b, a run of sibling boxes, and every container
// among them, without recursion. It fails when a box does not fit its
// parent, when boxes nest deeper than maxDepth (the top level is depth 1)
// or when there are more than maxBoxes. what names b in errors.
func scan(b []byte, what string, maxDepth, maxBoxes int) error {
	type open struct {
		end int
		typ string
	}
	stack := make([]open, 0, maxDepth)
	count := 0
	for off := 0; ; {
		for len(stack) > 0 && off == stack[len(stack)-1].end {
			stack = stack[:len(stack)-1]
		}
		end := len(b)
		if len(stack) > 0 {
			end = stack[len(stack)-1].end
		}
		if off == end {
			return nil // only at the top level: deeper, the loop above pops
		}
		typ, size, hl, err := boxHeader(b[off:end])
		if err == nil && hl != 8 && typ != "mdat" {
			// As in mp4ff, which would fail on it later.
			err = fmt.Errorf("%w: box %q has a 64-bit size; only mdat may", ErrInvalid, typ)
		}
		if err != nil {
			if len(stack) > 0 && sampleEntryClass(stack[len(stack)-1].typ) == visualEntry && end-off < 8 {
				off = end // trailing bytes after a visual entry's boxes occur; mp4ff skips them
				continue
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		if count++; count > maxBoxes {
			return fmt.Errorf("%w: %s holds more than %d boxes", ErrTooComplex, what, maxBoxes)
		}
		if co, ok := childOffset(typ, b[off:off+size]); ok && co < size {
			if len(stack)+1 >= maxDepth {
				var path []string
				for _, o := range stack[:min(len(stack), 4)] {
					path = append(path, o.typ)
				}
				return fmt.Errorf("%w: %s nests boxes deeper than %d levels (%s/…)", ErrTooComplex, what, maxDepth, strings.Join(path, "/"))
			}
			stack = append(stack, open{off + size, typ})
			off += co
			continue
		}
		off += size
	}
}

// keep says which boxes prune keeps: for each container type on the path,
// the child types it keeps ("*" for any, each pruned by the rule for its
// own type). Types absent from keep are leaves, kept whole.
var keep = map[string][]string{
	// moof+mdat: what parseChunk reads.
	"moof": {"mfhd", "traf"},
	"traf": {"tfhd", "tfdt", "trun"},
	// init: what ParseInit reads.
	"moov": {"trak", "mvex"},
	"trak": {"tkhd", "mdia"},
	"mdia": {"mdhd", "hdlr", "minf"},
	"minf": {"stbl"},
	"stbl": {"stsd"},
	"stsd": {"*"},
	"mvex": {"trex"},
}

// entryKeep lists the codec configuration boxes kept in a sample entry.
var entryKeep = []string{"avcC", "hvcC", "av1C", "esds", "dOps"}

// prune returns a copy of box (one whole box of type typ, already
// scanned) holding only the boxes this package reads. The recursion
// follows keep, so it is at most as deep as keep's longest path.
func prune(typ string, box []byte) []byte {
	kids, container := keep[typ]
	if !container {
		if sampleEntryClass(typ) == otherEntry {
			return box
		}
		kids = entryKeep
	}
	co, _ := childOffset(typ, box)
	if co >= len(box) {
		return box
	}
	out := make([]byte, 0, len(box))
	out = append(out, box[:co]...)
	for off := co; off+8 <= len(box); {
		ctyp, size, _, err := boxHeader(box[off:])
		if err != nil {
			break // scan has let only a visual entry's trailing bytes through
		}
		child := box[off : off+size]
		switch {
		case len(kids) == 1 && kids[0] == "*":
			out = append(out, pruneEntry(ctyp, child)...)
		case slices.Contains(kids, ctyp):
			out = append(out, prune(ctyp, child)...)
		}
		off += size
	}
	binary.BigEndian.PutUint32(out, uint32(len(out))) // scan let no 64-bit size through here
	return out
}

// pruneEntry prunes one sample entry of an stsd. An entry that is neither
// visual nor audio keeps only its header: none is supported, and mp4ff
// might recurse into it.
func pruneEntry(typ string, box []byte) []byte {
	if sampleEntryClass(typ) == otherEntry {
		return append(binary.BigEndian.AppendUint32(nil, 8), typ...)
	}
	return prune(typ, box)
}
