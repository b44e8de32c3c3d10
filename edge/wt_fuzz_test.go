package edge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/relay/memconn"
)

var (
	wtFuzzOnce sync.Once
	wtFuzzNode *Node
)

// FuzzWTSubscribe sends arbitrary bytes on the control stream of a
// WebTransport viewer's session, admitted for broadcast "live": HELLO,
// SUBSCRIBE (to live, to others, many times), UNSUBSCRIBE and anything
// else, through the edge's own relay server, Lookup and authoriser. The
// edge must answer only with well-formed messages and return, and serve
// no broadcast but the session's.
func FuzzWTSubscribe(f *testing.F) {
	hello := relay.EncodeMsg(&relay.Msg{Type: relay.MsgHello, Node: "player", Version: relay.Version})
	sub := func(id uint32, name string) []byte {
		return relay.EncodeMsg(&relay.Msg{Type: relay.MsgSubscribe, ID: id, Broadcast: name})
	}
	f.Add(append(append([]byte{}, hello...), sub(1, "live")...))
	f.Add(bytes.Join([][]byte{hello, sub(1, "live"), sub(2, "live"), sub(3, "live"), sub(4, "live"), sub(5, "live")}, nil))
	f.Add(bytes.Join([][]byte{hello, sub(1, "other"), sub(2, "../x"), relay.EncodeMsg(&relay.Msg{Type: relay.MsgUnsubscribe, ID: 1})}, nil))
	f.Add(sub(1, "live"))
	f.Add([]byte("\x00\x10\x00\x00{"))
	wtFuzzOnce.Do(func() {
		src := newFakeSource()
		fd := src.add(&testing.T{}, "live")
		fd.object(&testing.T{}, true, 100)
		fd.object(&testing.T{}, false, 100)
		src.add(&testing.T{}, "other")
		n, err := New(Config{Listen: "127.0.0.1:0", WTListen: "127.0.0.1:0", Source: src, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			f.Fatal(err)
		}
		wtFuzzNode = n
	})
	n := wtFuzzNode
	f.Fuzz(func(t *testing.T, data []byte) {
		c := memconn.New(data)
		ctx := context.WithValue(n.ctx, sessionKey{}, &session{name: "live"})
		n.wtRelay.ServeConn(ctx, c)
		out := bytes.NewReader(c.Written())
		for {
			m, err := relay.ReadMsg(out)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("edge wrote a malformed message: %v", err)
			}
			if m.Type == relay.MsgSubscribeOK && (m.Catalog == nil || m.Catalog.Broadcast != "live") {
				t.Fatalf("served %+v to a session for live", m.Catalog)
			}
		}
	})
}
