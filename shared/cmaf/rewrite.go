package cmaf

import (
	"encoding/binary"
	"fmt"
)

// ShiftDecodeTimes adds shift(trackID) to the tfdt of every traf of the
// moof at the start of chunk, in place. Only version-1 (64-bit) tfdt boxes
// can be shifted without changing sizes; a version-0 one is an error.
func ShiftDecodeTimes(chunk []byte, shift func(trackID uint32) uint64) error {
	moof, ok := child(chunk, "moof")
	if !ok {
		return fmt.Errorf("%w: chunk does not start with a moof", ErrInvalid)
	}
	for off := 8; off+8 <= len(moof); {
		size := int(binary.BigEndian.Uint32(moof[off:]))
		if size < 8 || off+size > len(moof) {
			return fmt.Errorf("%w: bad box in moof", ErrInvalid)
		}
		if string(moof[off+4:off+8]) == "traf" {
			if err := shiftTraf(moof[off:off+size], shift); err != nil {
				return err
			}
		}
		off += size
	}
	return nil
}

func shiftTraf(traf []byte, shift func(uint32) uint64) error {
	var id uint32
	found := false
	for off := 8; off+8 <= len(traf); {
		size := int(binary.BigEndian.Uint32(traf[off:]))
		if size < 8 || off+size > len(traf) {
			return fmt.Errorf("%w: bad box in traf", ErrInvalid)
		}
		b := traf[off : off+size]
		switch string(b[4:8]) {
		case "tfhd":
			if size < 16 {
				return fmt.Errorf("%w: short tfhd", ErrInvalid)
			}
			id, found = binary.BigEndian.Uint32(b[12:]), true
		case "tfdt":
			if !found {
				return fmt.Errorf("%w: tfdt before tfhd", ErrInvalid)
			}
			if size < 9 {
				return fmt.Errorf("%w: tfdt of %d bytes", ErrInvalid, size)
			}
			if size != 20 || b[8] != 1 {
				return fmt.Errorf("%w: tfdt version %d: only 64-bit (version 1) decode times can be shifted in place", ErrInvalid, b[8])
			}
			binary.BigEndian.PutUint64(b[12:], binary.BigEndian.Uint64(b[12:])+shift(id))
		}
		off += size
	}
	return nil
}

// child returns the box of type typ at the start of b.
func child(b []byte, typ string) ([]byte, bool) {
	if len(b) < 8 || string(b[4:8]) != typ {
		return nil, false
	}
	size := int(binary.BigEndian.Uint32(b))
	if size < 8 || size > len(b) {
		return nil, false
	}
	return b[:size], true
}

// AppendPrft appends a producer reference time box (ISO/IEC 14496-12
// §8.16.5, version 1) tying mediaTime of trackID to the wall-clock capture
// (µs since the Unix epoch). A publisher puts one before each moof so that
// the origin learns when the frame was captured.
func AppendPrft(dst []byte, trackID uint32, capture int64, mediaTime uint64) []byte {
	sec := uint64(capture/1_000_000) + ntpEpochOffset
	// Round the fraction up, so that reading it back (which truncates)
	// gives the same microsecond.
	frac := (uint64(capture%1_000_000)<<32 + 999_999) / 1_000_000
	var b [32]byte
	binary.BigEndian.PutUint32(b[0:], 32)
	copy(b[4:], "prft")
	b[8] = 1 // version 1: 64-bit media time; flags 0
	binary.BigEndian.PutUint32(b[12:], trackID)
	binary.BigEndian.PutUint64(b[16:], sec<<32|frac)
	binary.BigEndian.PutUint64(b[24:], mediaTime)
	return append(dst, b[:]...)
}
