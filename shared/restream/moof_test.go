package restream

import (
	"bytes"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/quiccast/quiccast/shared/clip"
)

// The moof reader finds, in every chunk of the demo clip, the samples
// mediacommon's fMP4 parser finds (and keyframes where the H.264 slices
// are IDR); cut chunks are errors, not panics.
func TestChunkSamplesMatchMediacommon(t *testing.T) {
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	var got []chunkSample
	n := 0
	for ci, ch := range c.Chunks {
		var parts fmp4.Parts
		if err := parts.Unmarshal(ch.Data); err != nil {
			t.Fatal(err)
		}
		var want []chunkSample
		for _, p := range parts {
			for _, pt := range p.Tracks {
				dts := pt.BaseTime
				for _, s := range pt.Samples {
					want = append(want, chunkSample{track: uint32(pt.ID), dts: dts, ptsOff: int64(s.PTSOffset), sync: !s.IsNonSyncSample, data: s.Payload})
					dts += uint64(s.Duration)
				}
			}
		}
		if got, err = chunkSamples(got[:0], ch.Data); err != nil {
			t.Fatalf("chunk %d: %v", ci, err)
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d samples, want %d", ci, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if w.track == 1 {
				// mediacommon ignores trun's first-sample-flags, which
				// mark the keyframe here: the slices say what it is.
				w.sync = h264IDR(w.data)
			}
			if g.track != w.track || g.dts != w.dts || g.ptsOff != w.ptsOff || g.sync != w.sync || !bytes.Equal(g.data, w.data) {
				t.Fatalf("chunk %d sample %d: track %d dts %d cto %d sync %v len %d, want track %d dts %d cto %d sync %v len %d",
					ci, i, g.track, g.dts, g.ptsOff, g.sync, len(g.data), w.track, w.dts, w.ptsOff, w.sync, len(w.data))
			}
		}
		n += len(got)
		for cut := 0; cut < len(ch.Data); cut += 7 {
			chunkSamples(nil, ch.Data[:cut]) // must not panic
		}
	}
	if n == 0 {
		t.Fatal("no samples")
	}
}
