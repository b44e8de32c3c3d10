package cmaf

import (
	"bytes"
	"fmt"
	"math/bits"
	"strings"

	"github.com/Eyevinn/mp4ff/aac"
	mp4bits "github.com/Eyevinn/mp4ff/bits"
	"github.com/Eyevinn/mp4ff/mp4"
)

// Trak describes one trak of an init segment.
type Trak struct {
	ID         uint32
	Handler    string // "vide" or "soun"
	Codec      string // RFC 6381 codecs value, e.g. "avc1.64001F"
	Timescale  uint32
	Width      int
	Height     int
	SampleRate int
	Channels   int
	trex       *mp4.TrexBox
}

// Init is a parsed init segment (ftyp+moov).
type Init struct {
	Data  []byte // the ftyp+moov bytes as received
	Traks []Trak
	// Primary is the index in Traks of the trak whose timestamps and sync
	// samples define decode time and keyframes: the first video trak, else
	// the first trak.
	Primary int
	lim     Limits // for its chunks
}

// Codec returns the codecs value of the whole init: one entry per trak,
// comma-separated ("avc1.64001F,mp4a.40.2").
func (in *Init) Codec() string {
	cs := make([]string, len(in.Traks))
	for i, t := range in.Traks {
		cs[i] = t.Codec
	}
	return strings.Join(cs, ",")
}

// Kind returns "video", "audio" or "muxed".
func (in *Init) Kind() string {
	if len(in.Traks) > 1 {
		return "muxed"
	}
	if in.Traks[0].Handler == "vide" {
		return "video"
	}
	return "audio"
}

// MimeType returns the MIME type for MSE's addSourceBuffer.
func (in *Init) MimeType() string {
	top := "audio"
	for _, t := range in.Traks {
		if t.Handler == "vide" {
			top = "video"
		}
	}
	return fmt.Sprintf("%s/mp4; codecs=%q", top, in.Codec())
}

// PrimaryTrak returns the trak that defines keyframes and decode time.
func (in *Init) PrimaryTrak() *Trak { return &in.Traks[in.Primary] }

// ParseInit parses an init segment and checks that every trak has a codec
// quiccast can deliver. It applies the default Limits' depth and box count.
func ParseInit(data []byte) (*Init, error) { return parseInit(data, Limits{}.withDefaults()) }

func parseInit(data []byte, lim Limits) (in *Init, err error) {
	defer recoverInvalid(&err, "init segment")
	if err := scan(data, "init segment", lim.MaxDepth, lim.MaxBoxes); err != nil {
		return nil, err
	}
	var moov *mp4.MoovBox
	for off := 0; off < len(data); {
		typ, size, _, _ := boxHeader(data[off:]) // scan has checked every header
		if typ == "moov" {
			box, err := mp4.DecodeBoxSR(0, mp4bits.NewFixedSliceReader(prune(typ, data[off:off+size])))
			if err != nil {
				return nil, fmt.Errorf("%w: init segment: %w", ErrInvalid, err)
			}
			moov, _ = box.(*mp4.MoovBox)
		}
		off += size
	}
	if moov == nil {
		return nil, fmt.Errorf("%w: init segment without moov", ErrInvalid)
	}
	if len(moov.Traks) == 0 {
		return nil, fmt.Errorf("%w: moov has no trak", ErrInvalid)
	}
	if len(moov.Traks) > 8 {
		return nil, fmt.Errorf("%w: moov has %d traks, at most 8 are supported", ErrInvalid, len(moov.Traks))
	}
	if moov.Mvex == nil {
		return nil, fmt.Errorf("%w: moov has no mvex: not a fragmented MP4 (use -movflags cmaf+frag_keyframe+empty_moov+default_base_moof)", ErrInvalid)
	}
	in = &Init{Data: data, Primary: -1, lim: lim}
	for i, trak := range moov.Traks {
		t, err := parseTrak(trak)
		if err != nil {
			return nil, fmt.Errorf("trak %d: %w", i+1, err)
		}
		for _, x := range moov.Mvex.Trexs {
			if x.TrackID == t.ID {
				t.trex = x
			}
		}
		if t.trex == nil {
			return nil, fmt.Errorf("%w: trak %d has no trex in mvex", ErrInvalid, t.ID)
		}
		for _, o := range in.Traks {
			if o.ID == t.ID {
				return nil, fmt.Errorf("%w: two traks with ID %d", ErrInvalid, t.ID)
			}
		}
		in.Traks = append(in.Traks, t)
		if t.Handler == "vide" && in.Primary < 0 {
			in.Primary = i
		}
	}
	if in.Primary < 0 {
		in.Primary = 0
	}
	return in, nil
}

func parseTrak(trak *mp4.TrakBox) (Trak, error) {
	if trak.Tkhd == nil || trak.Mdia == nil || trak.Mdia.Mdhd == nil || trak.Mdia.Hdlr == nil ||
		trak.Mdia.Minf == nil || trak.Mdia.Minf.Stbl == nil || trak.Mdia.Minf.Stbl.Stsd == nil {
		return Trak{}, fmt.Errorf("%w: trak lacks tkhd, mdhd, hdlr or stsd", ErrInvalid)
	}
	t := Trak{
		ID:        trak.Tkhd.TrackID,
		Handler:   trak.Mdia.Hdlr.HandlerType,
		Timescale: trak.Mdia.Mdhd.Timescale,
	}
	if t.Timescale == 0 {
		return t, fmt.Errorf("%w: trak %d has timescale 0", ErrInvalid, t.ID)
	}
	stsd := trak.Mdia.Minf.Stbl.Stsd
	if len(stsd.Children) != 1 {
		return t, fmt.Errorf("%w: trak %d has %d sample entries, want 1", ErrInvalid, t.ID, len(stsd.Children))
	}
	entry := stsd.Children[0].Type()
	switch t.Handler {
	case "vide":
		var v *mp4.VisualSampleEntryBox
		switch {
		case stsd.AvcX != nil:
			v = stsd.AvcX
			if v.AvcC == nil {
				return t, fmt.Errorf("%w: %s without avcC", ErrInvalid, entry)
			}
			c := v.AvcC
			t.Codec = fmt.Sprintf("%s.%02X%02X%02X", entry, c.AVCProfileIndication, c.ProfileCompatibility, c.AVCLevelIndication)
		case stsd.HvcX != nil && (entry == "hvc1" || entry == "hev1"):
			v = stsd.HvcX
			if v.HvcC == nil {
				return t, fmt.Errorf("%w: %s without hvcC", ErrInvalid, entry)
			}
			t.Codec = hevcCodec(entry, v.HvcC)
		case stsd.Av01 != nil:
			v = stsd.Av01
			if v.Av1C == nil {
				return t, fmt.Errorf("%w: av01 without av1C", ErrInvalid)
			}
			t.Codec = v.Av1C.CodecString("av01")
		default:
			return t, fmt.Errorf("%w: video sample entry %q (supported: avc1, avc3, hvc1, hev1, av01)", ErrUnsupportedCodec, entry)
		}
		t.Width, t.Height = int(v.Width), int(v.Height)
	case "soun":
		var a *mp4.AudioSampleEntryBox
		channels := 0 // from the codec's own config, when it says
		switch {
		case stsd.Mp4a != nil:
			a = stsd.Mp4a
			if a.Esds == nil || a.Esds.DecConfigDescriptor == nil {
				return t, fmt.Errorf("%w: mp4a without esds", ErrInvalid)
			}
			dc := a.Esds.DecConfigDescriptor
			if dc.ObjectType != 0x40 || dc.DecSpecificInfo == nil || len(dc.DecSpecificInfo.DecConfig) < 1 {
				return t, fmt.Errorf("%w: mp4a object type 0x%02x (only AAC, 0x40, is supported)", ErrUnsupportedCodec, dc.ObjectType)
			}
			asc, err := aac.DecodeAudioSpecificConfigHeader(bytes.NewReader(dc.DecSpecificInfo.DecConfig))
			if err != nil {
				return t, fmt.Errorf("%w: AAC AudioSpecificConfig: %w", ErrInvalid, err)
			}
			if asc.ObjectType == 0 {
				return t, fmt.Errorf("%w: AAC audio object type 0", ErrInvalid)
			}
			t.Codec = fmt.Sprintf("mp4a.40.%d", asc.ObjectType)
			// ISO files (ffmpeg's mp4 muxer) write 2 in the sample
			// entry's channelcount whatever the stream has; the
			// AudioSpecificConfig is the truth (ISO/IEC 14496-3
			// Table 1.19).
			switch cc := asc.ChannelConfiguration; {
			case cc >= 1 && cc <= 6:
				channels = int(cc)
			case cc == 7:
				channels = 8
			}
		case stsd.Opus != nil:
			a = stsd.Opus
			t.Codec = "opus"
		default:
			return t, fmt.Errorf("%w: audio sample entry %q (supported: mp4a (AAC), Opus)", ErrUnsupportedCodec, entry)
		}
		t.SampleRate, t.Channels = int(a.SampleRate), int(a.ChannelCount)
		if channels > 0 {
			t.Channels = channels
		}
	default:
		return t, fmt.Errorf("%w: trak %d handler %q (only vide and soun)", ErrUnsupportedCodec, t.ID, t.Handler)
	}
	return t, nil
}

// hevcCodec builds the codecs value from an hvcC (ISO/IEC 14496-15 Annex E).
func hevcCodec(entry string, c *mp4.HvcCBox) string {
	var b strings.Builder
	b.WriteString(entry)
	b.WriteByte('.')
	if c.GeneralProfileSpace > 0 && c.GeneralProfileSpace < 4 {
		b.WriteByte("ABC"[c.GeneralProfileSpace-1])
	}
	fmt.Fprintf(&b, "%d.%X.", c.GeneralProfileIDC, bits.Reverse32(c.GeneralProfileCompatibilityFlags))
	if c.GeneralTierFlag {
		b.WriteByte('H')
	} else {
		b.WriteByte('L')
	}
	fmt.Fprintf(&b, "%d", c.GeneralLevelIDC)
	cif := c.GeneralConstraintIndicatorFlags
	n := 6
	for n > 0 && cif&0xff == 0 {
		cif >>= 8
		n--
	}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, ".%X", (cif>>((n-1-i)*8))&0xff)
	}
	return b.String()
}

// recoverInvalid turns a panic inside the mp4 decoder, which reads
// untrusted bytes, into ErrInvalid.
func recoverInvalid(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %s: malformed boxes (%v)", ErrInvalid, what, r)
	}
}
