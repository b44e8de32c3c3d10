package remux

import "encoding/binary"

// Sample flags (ISO/IEC 14496-12 §8.8.3.1): a sync sample depends on no
// other (sample_depends_on 2); any other depends on others (1) and is
// flagged non-sync.
const (
	syncFlags    = 0x02000000
	nonSyncFlags = 0x01010000
)

type sample struct {
	dur   uint32
	cto   int32 // composition time offset
	flags uint32
	data  []byte
}

// run is one traf: a track's samples from decode time base on.
type run struct {
	id      uint32
	base    uint64
	samples []sample
}

// trun flags: data offset, and per sample duration, size, flags and
// composition time offset (version 1: signed).
const trunFlags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800

// appendChunk appends a CMAF chunk to dst:
//
//	moof
//	  mfhd (sequence number)
//	  traf per run: tfhd (default-base-is-moof), tfdt (version 1, 64-bit), trun (version 1)
//	mdat: the runs' sample data in order
func appendChunk(dst []byte, seq uint32, runs []run) []byte {
	moofSize := 8 + 16
	data := 0
	for _, r := range runs {
		moofSize += trafSize(r)
		for _, s := range r.samples {
			data += len(s.data)
		}
	}
	start := len(dst)
	dst = box(dst, moofSize, "moof")
	dst = box(dst, 16, "mfhd")
	dst = be32(dst, 0) // version, flags
	dst = be32(dst, seq)
	offset := moofSize + 8 // the first sample byte, from the start of the moof
	for _, r := range runs {
		dst = box(dst, trafSize(r), "traf")
		dst = box(dst, 16, "tfhd")
		dst = be32(dst, 0x020000) // default-base-is-moof
		dst = be32(dst, r.id)
		dst = box(dst, 20, "tfdt")
		dst = be32(dst, 1<<24) // version 1
		dst = binary.BigEndian.AppendUint64(dst, r.base)
		dst = box(dst, trunSize(r), "trun")
		dst = be32(dst, 1<<24|trunFlags)
		dst = be32(dst, uint32(len(r.samples)))
		dst = be32(dst, uint32(offset))
		for _, s := range r.samples {
			dst = be32(dst, s.dur)
			dst = be32(dst, uint32(len(s.data)))
			dst = be32(dst, s.flags)
			dst = be32(dst, uint32(s.cto))
			offset += len(s.data)
		}
	}
	if len(dst)-start != moofSize {
		panic("remux: moof size mismatch")
	}
	dst = box(dst, 8+data, "mdat")
	for _, r := range runs {
		for _, s := range r.samples {
			dst = append(dst, s.data...)
		}
	}
	return dst
}

func trunSize(r run) int { return 8 + 4 + 4 + 4 + 16*len(r.samples) }
func trafSize(r run) int { return 8 + 16 + 20 + trunSize(r) }

func box(dst []byte, size int, typ string) []byte {
	dst = be32(dst, uint32(size))
	return append(dst, typ...)
}

func be32(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }
