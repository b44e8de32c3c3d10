package restream

import (
	"encoding/binary"
	"fmt"
)

// The samples of a CMAF chunk, read straight from its moof: tfhd, tfdt and
// trun of each traf, the sample bytes sliced from the chunk. The origin's
// cache holds chunks shared/cmaf validated at ingest; this reader still
// checks every length against the bytes it has and never allocates per
// sample, so a restream costs little more than the write (mediacommon's
// reflective box parser took two thirds of a pusher's CPU).

// chunkSample is one sample of a chunk.
type chunkSample struct {
	track  uint32
	dts    uint64
	ptsOff int64
	sync   bool
	data   []byte
}

const maxSamplesPerChunk = 4096

// chunkSamples appends the samples of every moof+mdat in chunk to dst.
func chunkSamples(dst []chunkSample, chunk []byte) ([]chunkSample, error) {
	for off := 0; off < len(chunk); {
		size, typ, hdr, err := boxHeader(chunk[off:])
		if err != nil {
			return dst, err
		}
		if typ == "moof" {
			if dst, err = moofSamples(dst, chunk, off, chunk[off+hdr:off+size]); err != nil {
				return dst, err
			}
		}
		off += size
	}
	return dst, nil
}

// boxHeader returns a box's size (whole, within b), type and header length.
func boxHeader(b []byte) (size int, typ string, hdr int, err error) {
	if len(b) < 8 {
		return 0, "", 0, fmt.Errorf("box header: %d bytes", len(b))
	}
	s := uint64(binary.BigEndian.Uint32(b))
	typ, hdr = string(b[4:8]), 8
	switch s {
	case 0:
		s = uint64(len(b))
	case 1:
		if len(b) < 16 {
			return 0, "", 0, fmt.Errorf("box %q: short largesize", typ)
		}
		s, hdr = binary.BigEndian.Uint64(b[8:]), 16
	}
	if s < uint64(hdr) || s > uint64(len(b)) {
		return 0, "", 0, fmt.Errorf("box %q: size %d of %d bytes", typ, s, len(b))
	}
	return int(s), typ, hdr, nil
}

func moofSamples(dst []chunkSample, chunk []byte, moofStart int, moof []byte) ([]chunkSample, error) {
	for off := 0; off < len(moof); {
		size, typ, hdr, err := boxHeader(moof[off:])
		if err != nil {
			return dst, err
		}
		if typ == "traf" {
			if dst, err = trafSamples(dst, chunk, moofStart, moof[off+hdr:off+size]); err != nil {
				return dst, err
			}
		}
		off += size
	}
	return dst, nil
}

func trafSamples(dst []chunkSample, chunk []byte, moofStart int, traf []byte) ([]chunkSample, error) {
	var (
		track                     uint32
		haveTfhd                  bool
		defDur, defSize, defFlags uint32
		dts                       uint64
		next                      = -1 // where a trun without data offset starts
	)
	for off := 0; off < len(traf); {
		size, typ, hdr, err := boxHeader(traf[off:])
		if err != nil {
			return dst, err
		}
		b := traf[off+hdr : off+size]
		off += size
		switch typ {
		case "tfhd":
			r := reader{b: b}
			flags := r.u32() & 0xffffff
			track = r.u32()
			if flags&0x01 != 0 {
				r.u64() // base-data-offset: CMAF chunks are default-base-is-moof
			}
			if flags&0x02 != 0 {
				r.u32()
			}
			if flags&0x08 != 0 {
				defDur = r.u32()
			}
			if flags&0x10 != 0 {
				defSize = r.u32()
			}
			if flags&0x20 != 0 {
				defFlags = r.u32()
			}
			if r.bad {
				return dst, fmt.Errorf("tfhd: short")
			}
			haveTfhd = true
		case "tfdt":
			r := reader{b: b}
			if r.u32()>>24 == 1 {
				dts = r.u64()
			} else {
				dts = uint64(r.u32())
			}
			if r.bad {
				return dst, fmt.Errorf("tfdt: short")
			}
		case "trun":
			if !haveTfhd {
				return dst, fmt.Errorf("trun before tfhd")
			}
			r := reader{b: b}
			vf := r.u32()
			version, flags := vf>>24, vf&0xffffff
			n := r.u32()
			pos := next
			if flags&0x001 != 0 {
				pos = moofStart + int(int32(r.u32()))
			}
			if pos < 0 {
				return dst, fmt.Errorf("trun without a data offset")
			}
			firstFlags, hasFirst := uint32(0), flags&0x004 != 0
			if hasFirst {
				firstFlags = r.u32()
			}
			if n > maxSamplesPerChunk || r.bad {
				return dst, fmt.Errorf("trun: %d samples", n)
			}
			for i := range n {
				dur, sz, fl, cto := defDur, defSize, defFlags, int64(0)
				if flags&0x100 != 0 {
					dur = r.u32()
				}
				if flags&0x200 != 0 {
					sz = r.u32()
				}
				if flags&0x400 != 0 {
					fl = r.u32()
				} else if i == 0 && hasFirst {
					fl = firstFlags
				}
				if flags&0x800 != 0 {
					if version == 0 {
						cto = int64(r.u32())
					} else {
						cto = int64(int32(r.u32()))
					}
				}
				if r.bad {
					return dst, fmt.Errorf("trun: short")
				}
				if pos > len(chunk) || int(sz) > len(chunk)-pos {
					return dst, fmt.Errorf("trun: sample of %d bytes at %d of a %d-byte chunk", sz, pos, len(chunk))
				}
				dst = append(dst, chunkSample{track: track, dts: dts, ptsOff: cto, sync: fl&0x00010000 == 0, data: chunk[pos : pos+int(sz)]})
				pos += int(sz)
				dts += uint64(dur)
			}
			next = pos
		}
	}
	return dst, nil
}

// reader reads big-endian fields; a read past the end sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.bad, r.b = true, nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.bad, r.b = true, nil
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}
