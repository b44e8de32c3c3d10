package relay

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/quiccast/quiccast/shared/wire"
)

var update = flag.Bool("update", false, "rewrite testdata/*.bin")

// The relay bytes a browser reads, written by the Go encoder:
// client-js/test/relay.test.js decodes the same files.
//
//   - control.bin: a HELLO_OK then a SUBSCRIBE_OK with a catalog and one
//     init segment, as on the control stream.
//   - group.bin: a group stream: the header (sub 1, track 0, group 7,
//     epoch 2), objects 0 and 1, the end-of-group marker.
func goldenControl() []byte {
	start := uint64(7)
	b := encodeMsg(&Msg{Type: MsgHelloOK, Node: "edge-1"})
	b = append(b, encodeMsg(&Msg{Type: MsgSubscribeOK, ID: 1, Start: &start,
		Catalog: &wire.Catalog{Broadcast: "live/golden", Epoch: 2, Tracks: []wire.TrackInfo{{
			ID: 0, Kind: "video", Codec: "avc1.42E01E", MimeType: `video/mp4; codecs="avc1.42E01E"`, Timescale: 90000, Width: 640, Height: 360,
		}}},
		Inits: [][]byte{[]byte("ftyp+moov")},
	})...)
	return b
}

func goldenGroup() []byte {
	var hb [GroupHeaderLen]byte
	GroupHeader{Sub: 1, Track: 0, Group: 7, Epoch: 2}.Put(hb[:])
	b := hb[:]
	b = wire.Append(b, wire.Header{Kind: wire.KindObject, Flags: wire.FlagKeyframe, Group: 7, Index: 0, DecodeTime: 630000, Capture: 1700000000000000}, []byte("moof+mdat 0"))
	b = wire.Append(b, wire.Header{Kind: wire.KindObject, Group: 7, Index: 1, DecodeTime: 633000, Capture: 1700000000033333}, []byte("moof+mdat 1"))
	return wire.Append(b, wire.Header{Kind: wire.KindObject, Flags: wire.FlagEndOfGroup, Group: 7, Index: 2, DecodeTime: 636000, Capture: 1700000000066666}, nil)
}

func TestGoldenRelayBytes(t *testing.T) {
	for name, got := range map[string][]byte{"control.bin": goldenControl(), "group.bin": goldenGroup()} {
		path := filepath.Join("testdata", name)
		if *update {
			os.MkdirAll("testdata", 0o755)
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGoldenRelayBytes -update to create it)", err)
		}
		if !bytes.Equal(file, got) {
			t.Fatalf("%s differs from what the encoder writes now; if the change is intended, -update it and check client-js/test/relay.test.js", path)
		}
	}
	// And the Go decoder reads them back.
	r := bytes.NewReader(goldenControl())
	for _, want := range []string{MsgHelloOK, MsgSubscribeOK} {
		m, err := readMsg(r)
		if err != nil || m.Type != want {
			t.Fatalf("read %+v, %v; want %s", m, err, want)
		}
	}
	g := bytes.NewReader(goldenGroup())
	h, err := readGroupHeader(g)
	if err != nil || h != (GroupHeader{Sub: 1, Group: 7, Epoch: 2}) {
		t.Fatalf("group header %+v, %v", h, err)
	}
	for i := range 3 {
		fh, err := wire.ReadHeader(g)
		if err != nil || fh.Index != uint32(i) {
			t.Fatalf("frame %d: %+v %v", i, fh, err)
		}
		g.Seek(int64(fh.Length), 1)
	}
}
