package edge

import (
	"strconv"
	"strings"
	"time"
)

// m3u8Media is an LL-HLS media playlist (RFC 8216bis §4.4). It is written
// from this typed model rather than from gohlslib's playlist.Media because
// a broadcast whose publisher reconnects needs what that type cannot say:
// an EXT-X-MAP per epoch after its EXT-X-DISCONTINUITY, and a
// discontinuity on the segment still being written (its parts come after
// the last complete segment). Tests parse the output with gohlslib, ffmpeg
// and hls.js.
type m3u8Media struct {
	Version        int
	TargetDuration int           // s; every EXTINF rounds to at most this
	PartTarget     time.Duration // EXT-X-PART-INF PART-TARGET
	PartHoldBack   time.Duration // EXT-X-SERVER-CONTROL
	CanSkipUntil   time.Duration // 0: no delta updates
	MediaSequence  uint64
	Discontinuity  uint64 // EXT-X-DISCONTINUITY-SEQUENCE
	Map            string // EXT-X-MAP of the first segment shown
	Skipped        int    // EXT-X-SKIP:SKIPPED-SEGMENTS (a delta update)
	Segments       []m3u8Segment
	Open           *m3u8Segment // the segment being written: its parts only
	PreloadHint    string       // URI of the next part
	Ended          bool
}

type m3u8Segment struct {
	Discontinuity bool
	Map           string // EXT-X-MAP starting at this segment (after a discontinuity)
	DateTime      time.Time
	Parts         []m3u8Part
	Duration      time.Duration
	URI           string
}

type m3u8Part struct {
	Duration    time.Duration
	URI         string
	Independent bool
}

// seconds formats a duration as a decimal-floating-point number of seconds
// with millisecond precision or better.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 5, 64)
}

// quoted is a quoted-string attribute value; URIs here never hold quotes
// or line breaks (they are built from numbers and the request's query),
// but a stray one would break the playlist, so it is escaped.
func quoted(s string) string {
	if strings.ContainsAny(s, "\"\r\n") {
		s = strings.NewReplacer("\"", "%22", "\r", "%0D", "\n", "%0A").Replace(s)
	}
	return `"` + s + `"`
}

// Marshal writes the playlist.
func (m *m3u8Media) Marshal() []byte {
	var b strings.Builder
	b.Grow(256 + 64*len(m.Segments) + 96*len(m.Segments)*4)
	line := func(parts ...string) {
		for _, p := range parts {
			b.WriteString(p)
		}
		b.WriteByte('\n')
	}
	line("#EXTM3U")
	line("#EXT-X-VERSION:", strconv.Itoa(m.Version))
	line("#EXT-X-INDEPENDENT-SEGMENTS")
	line("#EXT-X-TARGETDURATION:", strconv.Itoa(m.TargetDuration))
	sc := "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=" + seconds(m.PartHoldBack)
	if m.CanSkipUntil > 0 {
		sc += ",CAN-SKIP-UNTIL=" + seconds(m.CanSkipUntil)
	}
	line(sc)
	line("#EXT-X-PART-INF:PART-TARGET=", seconds(m.PartTarget))
	line("#EXT-X-MEDIA-SEQUENCE:", strconv.FormatUint(m.MediaSequence, 10))
	if m.Discontinuity > 0 {
		line("#EXT-X-DISCONTINUITY-SEQUENCE:", strconv.FormatUint(m.Discontinuity, 10))
	}
	if m.Skipped > 0 {
		line("#EXT-X-SKIP:SKIPPED-SEGMENTS=", strconv.Itoa(m.Skipped))
	}
	if m.Map != "" {
		line("#EXT-X-MAP:URI=", quoted(m.Map))
	}
	head := func(s *m3u8Segment) {
		if s.Discontinuity {
			line("#EXT-X-DISCONTINUITY")
		}
		if s.Map != "" {
			line("#EXT-X-MAP:URI=", quoted(s.Map))
		}
		if !s.DateTime.IsZero() {
			line("#EXT-X-PROGRAM-DATE-TIME:", s.DateTime.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		}
		for _, p := range s.Parts {
			ind := ""
			if p.Independent {
				ind = ",INDEPENDENT=YES"
			}
			line("#EXT-X-PART:DURATION=", seconds(p.Duration), ",URI=", quoted(p.URI), ind)
		}
	}
	for i := range m.Segments {
		s := &m.Segments[i]
		head(s)
		line("#EXTINF:", seconds(s.Duration), ",")
		line(s.URI)
	}
	if m.Open != nil {
		head(m.Open)
	}
	if m.PreloadHint != "" {
		line("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=", quoted(m.PreloadHint))
	}
	if m.Ended {
		line("#EXT-X-ENDLIST")
	}
	return []byte(b.String())
}
