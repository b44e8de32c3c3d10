package relay_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/relay/memconn"
	"github.com/quiccast/quiccast/shared/wire"
)

// controlSeeds are control streams a subscriber might send: the happy
// path and the usual mistakes. Each target adds them to its corpus; the
// files in testdata/fuzz hold the extremes.
func controlSeeds(token string) [][]byte {
	start := uint64(0)
	msg := func(m *relay.Msg) []byte { return relay.EncodeMsg(m) }
	hello := msg(&relay.Msg{Type: relay.MsgHello, Token: token, Node: "edge-1", Version: relay.Version})
	sub := msg(&relay.Msg{Type: relay.MsgSubscribe, ID: 1, Broadcast: "live"})
	return [][]byte{
		cat(hello, sub),
		cat(hello, msg(&relay.Msg{Type: relay.MsgSubscribe, ID: 1, Broadcast: "live", Start: &start}), msg(&relay.Msg{Type: relay.MsgUnsubscribe, ID: 1})),
		cat(hello, sub, sub, msg(&relay.Msg{Type: relay.MsgSubscribe, ID: 2, Broadcast: "live"}), msg(&relay.Msg{Type: relay.MsgSubscribe, ID: 3, Broadcast: "nope"})),
		cat(hello, msg(&relay.Msg{Type: relay.MsgSubscribe, ID: 4, Broadcast: "../bad name"})),
		cat(sub, hello),
		cat(msg(&relay.Msg{Type: relay.MsgHello, Version: 99})),
		cat(hello, []byte("\x00\x00\x00\x05{bad}")),
		cat(hello, []byte("\xff\xff\xff\xff")),
		[]byte("\x00\x00\x00\x02{}"),
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// liveBroadcast is a broadcast named live with two groups.
var liveBroadcast = sync.OnceValue(func() *media.Broadcast {
	b := media.New("live", media.Limits{})
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: "live", Epoch: 1, Tracks: []wire.TrackInfo{{
		ID: 0, Kind: "video", Codec: "avc1.42E01E", MimeType: `video/mp4; codecs="avc1.42E01E"`, Timescale: 90000,
	}}}, [][]byte{[]byte("init")})
	if err != nil {
		panic(err)
	}
	if err := b.SetCatalog(cat); err != nil {
		panic(err)
	}
	now := time.Now()
	for g := uint64(0); g < 2; g++ {
		for i := uint32(0); i < 3; i++ {
			h := wire.Header{Kind: wire.KindObject, Group: g, Index: i, DecodeTime: g*100 + uint64(i), Capture: now.UnixMicro()}
			if i == 0 {
				h.Flags = wire.FlagKeyframe
			}
			if err := b.Append(media.NewObject(h, []byte("frame"), now.UnixNano())); err != nil {
				panic(err)
			}
		}
		b.Finish(0, g, now.UnixNano())
	}
	return b
})

// FuzzReadMsg: any bytes either fail with ErrControl (or an I/O error at
// the end of input) or give a message that encodes and reads back the same.
func FuzzReadMsg(f *testing.F) {
	for _, s := range controlSeeds("secret") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			m, err := relay.ReadMsg(r)
			if err != nil {
				if m != nil {
					t.Fatal("message with an error")
				}
				if !errors.Is(err, relay.ErrControl) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("error %v is neither ErrControl nor the end of input", err)
				}
				return
			}
			again, err := relay.ReadMsg(bytes.NewReader(relay.EncodeMsg(m)))
			if err != nil || !reflect.DeepEqual(m, again) {
				t.Fatalf("round trip: %+v -> %+v, %v", m, again, err)
			}
		}
	})
}

// FuzzServeConn sends arbitrary bytes on a relay server's control stream
// (HELLO, SUBSCRIBE, UNSUBSCRIBE and anything else) with a cluster token
// required. The server must answer only with well-formed messages, never
// serve a subscriber that did not say a valid HELLO first, and return.
func FuzzServeConn(f *testing.F) {
	for _, s := range controlSeeds("secret") {
		f.Add(s)
	}
	srv := relay.NewServer(relay.ServerConfig{
		Node:         "origin-1",
		Auth:         auth.FromConfig("", "", "secret"),
		Lookup:       lookupLive,
		HelloTimeout: time.Second,
		WriteTimeout: time.Second,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := memconn.New(data)
		srv.ServeConn(context.Background(), c)
		out := bytes.NewReader(c.Written())
		first := true
		for {
			m, err := relay.ReadMsg(out)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("server wrote a malformed message: %v", err)
			}
			if first && m.Type != relay.MsgHelloOK {
				t.Fatalf("first message %q, want hello_ok", m.Type)
			}
			first = false
		}
		if hello, err := relay.ReadMsg(bytes.NewReader(data)); !first && (err != nil || hello.Type != relay.MsgHello || hello.Token != "secret") {
			t.Fatalf("served after %+v, %v", hello, err)
		}
		if _, _, closed := c.Closed(); first && !closed {
			t.Fatal("refused without closing the connection")
		}
	})
}

func lookupLive(_ context.Context, name string) (*media.Broadcast, func(), error) {
	if name != "live" {
		return nil, nil, wire.Errorf(wire.CodeNotFound, "no broadcast %q", name)
	}
	return liveBroadcast(), func() {}, nil
}
