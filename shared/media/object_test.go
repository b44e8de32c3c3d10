package media

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/quiccast/quiccast/shared/wire"
)

// wsFrame decodes an unmasked server frame per RFC 6455 §5.2.
func wsFrame(t *testing.T, b []byte) (opcode byte, payload []byte) {
	t.Helper()
	if b[0]&0xf0 != 0x80 {
		t.Fatalf("first byte 0x%02x: want FIN and no RSV bits", b[0])
	}
	if b[1]&0x80 != 0 {
		t.Fatal("masked")
	}
	n, off := uint64(b[1]), 2
	switch n {
	case 126:
		n, off = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		n, off = binary.BigEndian.Uint64(b[2:]), 10
	}
	if uint64(len(b)-off) != n {
		t.Fatalf("length %d, %d bytes follow", n, len(b)-off)
	}
	return b[0] & 0x0f, b[off:]
}

func TestObjectFrames(t *testing.T) {
	// Payload sizes around the WebSocket length encodings (frame =
	// 36-byte header + payload).
	for _, n := range []int{0, 1, 125 - wire.HeaderLen, 126 - wire.HeaderLen, 0xffff - wire.HeaderLen, 0x10000 - wire.HeaderLen, 1 << 20} {
		payload := bytes.Repeat([]byte{0xab}, n)
		h := wire.Header{Kind: wire.KindObject, Flags: wire.FlagKeyframe | wire.FlagDiscontinuity, Track: 3, Index: 0, Group: 1 << 40,
			DecodeTime: 123456789, Capture: 1_700_000_000_000_000, Length: 999}
		o := NewObject(h, payload, 42)
		if n > 0 {
			payload[0] = 0 // NewObject copied it
		}
		if o.Arrival != 42 || o.Length != uint32(n) {
			t.Fatalf("n=%d: object %+v arrival %d", n, o.Header, o.Arrival)
		}
		gotH, gotP, err := wire.Parse(o.Frame())
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		want := h
		want.Length = uint32(n)
		if gotH != want || gotH != o.Header || !bytes.Equal(gotP, bytes.Repeat([]byte{0xab}, n)) || !bytes.Equal(o.Payload(), gotP) {
			t.Fatalf("n=%d: frame header %+v, want %+v", n, gotH, want)
		}
		op, p := wsFrame(t, o.WebSocketMessage())
		if op != wire.WSBinary || !bytes.Equal(p, o.Frame()) {
			t.Fatalf("n=%d: WebSocket message opcode %d, payload is the frame: %v", n, op, bytes.Equal(p, o.Frame()))
		}
		if !bytes.Equal(o.WebSocketMessage(), wire.WSMessage(wire.WSBinary, o.Frame())) {
			t.Fatalf("n=%d: differs from wire.WSMessage", n)
		}
		// The three views share one buffer, counted whole.
		if &o.WebSocketMessage()[len(o.WebSocketMessage())-len(o.Frame())] != &o.Frame()[0] {
			t.Fatalf("n=%d: Frame is not inside the WebSocket message", n)
		}
		if o.Size() < int64(len(o.WebSocketMessage())) || o.Size() > int64(wire.WSHeaderMax+wire.HeaderLen+n) {
			t.Fatalf("n=%d: Size %d", n, o.Size())
		}
	}
}

func TestNewCatalog(t *testing.T) {
	wc := wire.Catalog{Broadcast: "live/x", Epoch: 4, Tracks: []wire.TrackInfo{
		{ID: 0, Kind: "video", Codec: "avc1.4D401E", MimeType: `video/mp4; codecs="avc1.4D401E"`, Timescale: 15360},
		{ID: 1, Kind: "audio", Codec: "mp4a.40.2", MimeType: `audio/mp4; codecs="mp4a.40.2"`, Timescale: 48000, SampleRate: 48000, Channels: 2},
	}}
	c, err := NewCatalog(wc, [][]byte{[]byte("video init"), []byte("audio init")})
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range c.Inits {
		h, p, err := wire.Parse(in.Frame())
		if err != nil || h.Kind != wire.KindInit || h.Track != uint16(i) || string(p) != []string{"video init", "audio init"}[i] {
			t.Fatalf("init %d: %+v %q %v", i, h, p, err)
		}
		if op, p := wsFrame(t, in.WebSocketMessage()); op != wire.WSBinary || !bytes.Equal(p, in.Frame()) {
			t.Fatalf("init %d: WebSocket message", i)
		}
	}
	m, err := wire.ParseMessage(c.Message())
	if err != nil || m.Type != wire.MsgCatalog || m.Catalog == nil {
		t.Fatalf("Message: %+v %v", m, err)
	}
	if mj, _ := json.Marshal(m.Catalog); !bytes.Equal(mj, mustJSON(t, wc)) {
		t.Fatalf("catalog message %s, want %s", mj, mustJSON(t, wc))
	}
	if op, p := wsFrame(t, c.WebSocketMessage()); op != wire.WSText || !bytes.Equal(p, c.Message()) {
		t.Fatal("catalog WebSocket message is not a text frame of Message()")
	}
	j, err := json.Marshal(c)
	if err != nil || !bytes.Equal(j, mustJSON(t, wc)) || strings.Contains(string(j), "init") {
		t.Fatalf("MarshalJSON = %s, %v", j, err)
	}

	for _, ca := range []struct {
		name   string
		tracks []wire.TrackInfo
		inits  int
	}{
		{"no tracks", nil, 0},
		{"fewer inits", wc.Tracks, 1},
		{"more inits", wc.Tracks, 3},
		{"IDs not from 0", []wire.TrackInfo{{ID: 1}}, 1},
		{"IDs out of order", []wire.TrackInfo{{ID: 1}, {ID: 0}}, 2},
	} {
		if _, err := NewCatalog(wire.Catalog{Tracks: ca.tracks}, make([][]byte, ca.inits)); err == nil {
			t.Errorf("%s: no error", ca.name)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
