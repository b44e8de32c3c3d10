package cmaf

import (
	"encoding/binary"
	"fmt"

	mp4bits "github.com/Eyevinn/mp4ff/bits"
	"github.com/Eyevinn/mp4ff/mp4"
)

type parsedChunk struct {
	Chunk
	tfdt map[uint32]uint64 // decode time per trak ID
}

// ParseChunk checks one moof+mdat against the init segment and returns what
// the chunk says about keyframes and time. Capture is left 0.
func (in *Init) ParseChunk(data []byte) (*Chunk, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("%w: chunk of %d bytes", ErrInvalid, len(data))
	}
	moofLen := binary.BigEndian.Uint32(data)
	if string(data[4:8]) != "moof" || moofLen < 8 || uint64(moofLen) > uint64(len(data)) {
		return nil, fmt.Errorf("%w: chunk does not start with a whole moof", ErrInvalid)
	}
	c, err := in.parseChunk(data, int(moofLen))
	if err != nil {
		return nil, err
	}
	return &c.Chunk, nil
}

func (in *Init) parseChunk(data []byte, moofLen int) (c *parsedChunk, err error) {
	defer recoverInvalid(&err, "moof")
	mdatHdr, ok := wholeBox(data[moofLen:], "mdat")
	if !ok {
		return nil, fmt.Errorf("%w: moof is not followed by a whole mdat", ErrMoofWithoutMdat)
	}
	lim := in.lim.withDefaults()
	if err := scan(data[:moofLen], "moof", lim.MaxDepth, lim.MaxBoxes); err != nil {
		return nil, err
	}
	box, err := mp4.DecodeBoxSR(0, mp4bits.NewFixedSliceReader(prune("moof", data[:moofLen])))
	if err != nil {
		return nil, fmt.Errorf("%w: moof: %w", ErrInvalid, err)
	}
	moof, ok := box.(*mp4.MoofBox)
	if !ok || moof.Mfhd == nil {
		return nil, fmt.Errorf("%w: moof without mfhd", ErrInvalid)
	}
	if len(moof.Trafs) == 0 {
		return nil, fmt.Errorf("%w: moof without traf", ErrInvalid)
	}
	c = &parsedChunk{tfdt: make(map[uint32]uint64, len(moof.Trafs))}
	c.Data = data
	primary := in.PrimaryTrak()
	foundPrimary := false
	end := uint64(len(data))
	for _, traf := range moof.Trafs {
		if traf.Tfhd == nil {
			return nil, fmt.Errorf("%w: traf without tfhd", ErrInvalid)
		}
		var trak *Trak
		for i := range in.Traks {
			if in.Traks[i].ID == traf.Tfhd.TrackID {
				trak = &in.Traks[i]
			}
		}
		if trak == nil {
			return nil, fmt.Errorf("%w: traf for track %d, which the init segment does not have", ErrInvalid, traf.Tfhd.TrackID)
		}
		if traf.Tfdt == nil {
			return nil, fmt.Errorf("%w: traf of track %d has no tfdt (CMAF requires one)", ErrInvalid, trak.ID)
		}
		if _, dup := c.tfdt[trak.ID]; dup {
			return nil, fmt.Errorf("%w: two trafs for track %d in one moof", ErrInvalid, trak.ID)
		}
		if traf.Tfhd.HasBaseDataOffset() || !traf.Tfhd.DefaultBaseIfMoof() {
			return nil, fmt.Errorf("%w: track %d: tfhd must set default-base-is-moof and no base-data-offset (ffmpeg: -movflags default_base_moof)", ErrInvalid, trak.ID)
		}
		dt := traf.Tfdt.BaseMediaDecodeTime()
		c.tfdt[trak.ID] = dt
		var dur uint64
		first := true
		keyframe := false
		for _, trun := range traf.Truns {
			if !trun.HasDataOffset() {
				return nil, fmt.Errorf("%w: trun of track %d without data offset", ErrInvalid, trak.ID)
			}
			off := uint64(int64(trun.DataOffset))
			if int64(trun.DataOffset) < int64(moofLen+mdatHdr) {
				return nil, fmt.Errorf("%w: trun of track %d points before its mdat data", ErrInvalid, trak.ID)
			}
			for i, s := range trun.Samples {
				size := uint64(s.Size)
				if !trun.HasSampleSize() {
					size = uint64(defaultU32(traf.Tfhd.HasDefaultSampleSize(), traf.Tfhd.DefaultSampleSize, trak.trex.DefaultSampleSize))
				}
				d := uint64(s.Dur)
				if !trun.HasSampleDuration() {
					d = uint64(defaultU32(traf.Tfhd.HasDefaultSampleDuration(), traf.Tfhd.DefaultSampleDuration, trak.trex.DefaultSampleDuration))
				}
				flags := s.Flags
				if !trun.HasSampleFlags() && !(i == 0 && trun.HasFirstSampleFlags()) {
					flags = defaultU32(traf.Tfhd.HasDefaultSampleFlags(), traf.Tfhd.DefaultSampleFlags, trak.trex.DefaultSampleFlags)
				}
				if first {
					keyframe = mp4.IsSyncSampleFlags(flags)
					first = false
				}
				off += size
				dur += d
				c.Samples++
			}
			if off > end {
				return nil, fmt.Errorf("%w: samples of track %d run %d bytes past the end of the mdat", ErrInvalid, trak.ID, off-end)
			}
		}
		c.Trafs = append(c.Trafs, TrafTiming{TrackID: trak.ID, DecodeTime: dt, Duration: dur})
		if trak == primary {
			foundPrimary = true
			c.DecodeTime = dt
			c.Duration = dur
			c.Keyframe = keyframe || trak.Handler == "soun"
		}
	}
	if c.Samples == 0 {
		return nil, fmt.Errorf("%w: moof without samples", ErrInvalid)
	}
	if !foundPrimary {
		// A fragment of only the secondary track(s): time it by the
		// first traf; it never starts a group.
		c.DecodeTime = moof.Trafs[0].Tfdt.BaseMediaDecodeTime()
	}
	return c, nil
}

// wholeBox reports whether b is exactly one box of type typ and returns its
// header length.
func wholeBox(b []byte, typ string) (int, bool) {
	if len(b) < 8 || string(b[4:8]) != typ {
		return 0, false
	}
	size, hl := uint64(binary.BigEndian.Uint32(b)), 8
	if size == 1 {
		if len(b) < 16 {
			return 0, false
		}
		size, hl = binary.BigEndian.Uint64(b[8:]), 16
	}
	return hl, size == uint64(len(b))
}

func defaultU32(hasTfhd bool, tfhd, trex uint32) uint32 {
	if hasTfhd {
		return tfhd
	}
	return trex
}

// ntpEpochOffset is the number of seconds from 1900 (NTP) to 1970 (Unix).
const ntpEpochOffset = 2208988800

// parsePrft returns the wall-clock of a prft box in µs since the Unix
// epoch, or 0 if the box is malformed.
func parsePrft(b []byte) int64 {
	// size(4) type(4) version(1) flags(3) reference_track_ID(4) ntp(8) media_time(4|8)
	if len(b) < 24 {
		return 0
	}
	ntp := binary.BigEndian.Uint64(b[16:24])
	sec := int64(ntp >> 32)
	frac := ntp & 0xffffffff
	if sec < ntpEpochOffset {
		return 0
	}
	return (sec-ntpEpochOffset)*1_000_000 + int64((frac*1_000_000)>>32)
}
