package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// decodeWS decodes one server-to-client frame by hand, per RFC 6455 §5.2.
func decodeWS(t *testing.T, b []byte) (fin bool, opcode byte, payload []byte) {
	t.Helper()
	if len(b) < 2 {
		t.Fatalf("frame of %d bytes", len(b))
	}
	fin = b[0]&0x80 != 0
	if rsv := b[0] & 0x70; rsv != 0 {
		t.Fatalf("RSV bits 0x%x set", rsv)
	}
	opcode = b[0] & 0x0f
	if b[1]&0x80 != 0 {
		t.Fatal("server frame is masked")
	}
	n, off := uint64(b[1]&0x7f), 2
	switch n {
	case 126:
		n, off = uint64(binary.BigEndian.Uint16(b[2:])), 4
		if n < 126 {
			t.Fatalf("16-bit length %d not minimal", n)
		}
	case 127:
		n, off = binary.BigEndian.Uint64(b[2:]), 10
		if n>>63 != 0 {
			t.Fatal("64-bit length has its top bit set")
		}
		if n <= 0xffff {
			t.Fatalf("64-bit length %d not minimal", n)
		}
	}
	if uint64(len(b)-off) != n {
		t.Fatalf("header says %d payload bytes, frame has %d", n, len(b)-off)
	}
	return fin, opcode, b[off:]
}

var wsLengths = []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20}

func TestWSHeaderLen(t *testing.T) {
	for _, ca := range []struct{ n, want int }{
		{0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {1 << 30, 10},
	} {
		if got := WSHeaderLen(ca.n); got != ca.want {
			t.Errorf("WSHeaderLen(%d) = %d, want %d", ca.n, got, ca.want)
		}
		if WSHeaderLen(ca.n) > WSHeaderMax {
			t.Errorf("WSHeaderLen(%d) over WSHeaderMax", ca.n)
		}
	}
}

func TestPutWSHeaderBytes(t *testing.T) {
	for _, ca := range []struct {
		opcode byte
		n      int
		want   []byte
	}{
		{WSBinary, 0, []byte{0x82, 0}},
		{WSText, 125, []byte{0x81, 125}},
		{WSBinary, 126, []byte{0x82, 126, 0, 126}},
		{WSBinary, 65535, []byte{0x82, 126, 0xff, 0xff}},
		{WSBinary, 65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{WSClose, 2, []byte{0x88, 2}},
		{WSPing, 0, []byte{0x89, 0}},
		{WSPong, 4, []byte{0x8a, 4}},
	} {
		b := make([]byte, WSHeaderLen(ca.n))
		PutWSHeader(b, ca.opcode, ca.n)
		if !bytes.Equal(b, ca.want) {
			t.Errorf("PutWSHeader(%d, %d) = % x, want % x", ca.opcode, ca.n, b, ca.want)
		}
	}
}

func TestWSMessageDecodesPerRFC6455(t *testing.T) {
	for _, n := range wsLengths {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		msg := WSMessage(WSBinary, payload)
		if len(msg) != WSHeaderLen(n)+n {
			t.Fatalf("n=%d: message of %d bytes", n, len(msg))
		}
		fin, op, p := decodeWS(t, msg)
		if !fin || op != WSBinary || !bytes.Equal(p, payload) {
			t.Fatalf("n=%d: fin=%v opcode=%d payload equal=%v", n, fin, op, bytes.Equal(p, payload))
		}
	}
}

// rawWSServer upgrades with gorilla and then writes frames raw to the
// socket, as quiccast's edge does.
func rawWSServer(t *testing.T, frames ...[]byte) *websocket.Conn {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for _, f := range frames {
			if _, err := c.NetConn().Write(f); err != nil {
				t.Error(err)
				return
			}
		}
		<-done
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadLimit(4 << 20)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
}

func TestWSMessageReadByGorillaClient(t *testing.T) {
	var frames [][]byte
	var payloads [][]byte
	for i, n := range wsLengths {
		p := bytes.Repeat([]byte{byte(i + 1)}, n)
		payloads = append(payloads, p)
		frames = append(frames, WSMessage(WSBinary, p))
	}
	frames = append(frames, WSMessage(WSText, []byte(`{"type":"ready"}`)))
	// An object frame inside a WebSocket message, as viewers get them.
	obj := Append(nil, goldenHeader, goldenPayload)
	frames = append(frames, WSMessage(WSBinary, obj))

	c := rawWSServer(t, frames...)
	for i, n := range wsLengths {
		typ, p, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, n, err)
		}
		if typ != websocket.BinaryMessage || !bytes.Equal(p, payloads[i]) {
			t.Fatalf("message %d: type %d, %d bytes, want binary %d bytes", i, typ, len(p), n)
		}
	}
	typ, p, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage || string(p) != `{"type":"ready"}` {
		t.Fatalf("text message: %d %q %v", typ, p, err)
	}
	typ, p, err = c.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage {
		t.Fatalf("object message: %d %v", typ, err)
	}
	if h, pl, err := Parse(p); err != nil || h.Group != 3 || string(pl) != "moof+mdat" {
		t.Fatalf("object in message: %+v %q %v", h, pl, err)
	}
}

func TestWSCloseMessageReadByGorillaClient(t *testing.T) {
	long := strings.Repeat("x", 122) + "é" // é is bytes 122-123: a cut at 123 would split it
	for _, ca := range []struct {
		name   string
		code   Code
		reason string
		want   string
	}{
		{"no reason", CodeNormal, "", ""},
		{"short", CodeTooSlow, "too slow", "too slow"},
		{"exactly 123 bytes", CodeNotFound, strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{"ascii over 123 bytes", CodeBadRequest, strings.Repeat("b", 200), strings.Repeat("b", 123)},
		{"multi-byte rune across the cut", CodeUnauthorized, long, strings.Repeat("x", 122)},
		{"all multi-byte", CodeForbidden, strings.Repeat("€", 60), strings.Repeat("€", 41)},
	} {
		t.Run(ca.name, func(t *testing.T) {
			msg := WSCloseMessage(ca.code, ca.reason)
			fin, op, p := decodeWS(t, msg)
			if !fin || op != WSClose {
				t.Fatalf("fin=%v opcode=%d", fin, op)
			}
			c := rawWSServer(t, msg)
			_, _, err := c.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("gorilla client read %v, want a *CloseError", err)
			}
			wantCode := int(ca.code)
			if ca.code == CodeNormal && ca.reason == "" {
				wantCode = websocket.CloseNormalClosure
			}
			if ce.Code != wantCode || ce.Text != ca.want {
				t.Fatalf("gorilla client got close %d %q, want %d %q", ce.Code, ce.Text, wantCode, ca.want)
			}
			if len(p) > 125 {
				t.Fatalf("close payload %d bytes, control frames hold at most 125", len(p))
			}
			if got := Code(binary.BigEndian.Uint16(p)); got != ca.code {
				t.Fatalf("code %d, want %d", got, ca.code)
			}
			if !utf8.Valid(p[2:]) {
				t.Fatalf("reason % x is not valid UTF-8 (RFC 6455 §5.5.1)", p[2:])
			}
			if string(p[2:]) != ca.want {
				t.Fatalf("reason %q, want %q", p[2:], ca.want)
			}

		})
	}
}
