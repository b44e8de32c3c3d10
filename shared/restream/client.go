package restream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/message"
)

// streamID is the message stream publish and media go on: the id every
// server answers createStream with, as gortmplib's Writer assumes.
const streamID = 0x1000000

// maxSkipped bounds the server messages a publish may skip because they
// do not parse (ffmpeg's RTMP server answers some commands with fewer
// values than gortmplib's parser wants).
const maxSkipped = 64

// rtmpConn is a client connection that publishes: gortmplib's message
// layer with our own connect/publish exchange, which tolerates the
// commands of servers gortmplib's Client cannot parse, and tells a
// refusal (an _error or an onStatus error, whose description it keeps)
// from a broken connection. It is a gortmplib.Conn for gortmplib.Writer.
type rtmpConn struct {
	nc  net.Conn
	bw  *batchWriter
	bc  *bytecounter.ReadWriter
	mrw *message.ReadWriter
}

// batchWriter passes writes to the connection, or, between batch and
// flush, gathers them: the messages of one chunk (a video frame and its
// audio) go out in one write.
type batchWriter struct {
	nc       net.Conn
	buf      []byte
	batching bool
}

func (w *batchWriter) Write(p []byte) (int, error) {
	if !w.batching {
		return w.nc.Write(p)
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *batchWriter) batch() { w.batching = true }

// flush writes what was gathered and ends the batch. A buffer grown past
// 1 MiB (a large keyframe) is let go.
func (w *batchWriter) flush() error {
	w.batching = false
	_, err := w.nc.Write(w.buf)
	if cap(w.buf) > 1<<20 {
		w.buf = nil
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

func (c *rtmpConn) BytesReceived() uint64            { return c.bc.Reader.Count() }
func (c *rtmpConn) BytesSent() uint64                { return c.bc.Writer.Count() }
func (c *rtmpConn) Read() (message.Message, error)   { return c.mrw.Read() }
func (c *rtmpConn) Write(msg message.Message) error  { return c.mrw.Write(msg) }
func (c *rtmpConn) close()                           { c.nc.Close() }
func (c *rtmpConn) setWriteDeadline(d time.Duration) { c.nc.SetWriteDeadline(time.Now().Add(d)) }

// refusal is the server saying no, with its words.
type refusal struct{ stage, why string }

func (r *refusal) Error() string {
	return fmt.Sprintf("the server refused the %s: %s", r.stage, r.why)
}

// publish runs the handshake, connect, createStream and publish on nc
// for t, within timeout. The error is a *refusal, or what broke.
func publish(nc net.Conn, t *Target, timeout time.Duration) (*rtmpConn, error) {
	nc.SetDeadline(time.Now().Add(timeout))
	defer nc.SetDeadline(time.Time{})
	c := &rtmpConn{nc: nc, bw: &batchWriter{nc: nc}}
	c.bc = bytecounter.NewReadWriter(struct {
		io.Reader
		io.Writer
	}{nc, c.bw})
	if _, _, err := handshake.DoClient(c.bc, false, false); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	c.mrw = message.NewReadWriter(c.bc, c.bc, false)
	app := strings.TrimPrefix(t.app, "/")
	tcURL := t.Scheme() + "://" + t.Host() + t.app
	for _, m := range []message.Message{
		&message.SetWindowAckSize{Value: 2500000},
		&message.SetPeerBandwidth{Value: 2500000, Type: 2},
		&message.SetChunkSize{Value: 65536},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{amf0.Object{
			{Key: "app", Value: app},
			{Key: "type", Value: "nonprivate"},
			{Key: "flashVer", Value: "FMLE/3.0 (compatible; quiccast)"},
			{Key: "tcUrl", Value: tcURL},
		}}},
	} {
		if err := c.Write(m); err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
	}
	res, err := c.result(1)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if res.Name != "_result" {
		return nil, &refusal{"connect", describe(res)}
	}
	for _, m := range []message.Message{
		&message.CommandAMF0{ChunkStreamID: 3, Name: "releaseStream", CommandID: 2, Arguments: []any{nil, t.key}},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "FCPublish", CommandID: 3, Arguments: []any{nil, t.key}},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "createStream", CommandID: 4, Arguments: []any{nil}},
	} {
		if err := c.Write(m); err != nil {
			return nil, fmt.Errorf("createStream: %w", err)
		}
	}
	if res, err = c.result(4); err != nil {
		return nil, fmt.Errorf("createStream: %w", err)
	}
	if res.Name != "_result" {
		return nil, &refusal{"stream", describe(res)}
	}
	if err := c.Write(&message.CommandAMF0{ChunkStreamID: 4, MessageStreamID: streamID, Name: "publish", CommandID: 5,
		Arguments: []any{nil, t.key, "live"}}); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	for {
		cmd, err := c.command()
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		switch {
		case cmd.Name == "onStatus":
			info := statusInfo(cmd)
			level, _ := info.GetString("level")
			code, _ := info.GetString("code")
			if level == "error" || strings.Contains(code, "Publish.BadName") || strings.Contains(code, "Publish.Denied") {
				return nil, &refusal{"publish", describe(cmd)}
			}
			if code == "NetStream.Publish.Start" || level == "status" {
				return c, nil
			}
		case cmd.Name == "_error" && (cmd.CommandID == 5 || cmd.CommandID == 0):
			return nil, &refusal{"publish", describe(cmd)}
		}
	}
}

// result waits for the answer to command id.
func (c *rtmpConn) result(id int) (*message.CommandAMF0, error) {
	for {
		cmd, err := c.command()
		if err != nil {
			return nil, err
		}
		if cmd.CommandID == id && (cmd.Name == "_result" || cmd.Name == "_error") {
			return cmd, nil
		}
	}
}

// command reads up to the next command, skipping other messages and
// those that do not parse.
func (c *rtmpConn) command() (*message.CommandAMF0, error) {
	skipped := 0
	for {
		msg, err := c.mrw.Read()
		if err != nil {
			if ioError(err) || skipped >= maxSkipped {
				return nil, err
			}
			skipped++
			continue
		}
		if cmd, ok := msg.(*message.CommandAMF0); ok {
			return cmd, nil
		}
	}
}

func ioError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.As(err, &ne)
}

func statusInfo(cmd *message.CommandAMF0) amf0.Object {
	for _, a := range cmd.Arguments {
		switch o := a.(type) {
		case amf0.Object:
			return o
		case amf0.ECMAArray:
			return amf0.Object(o)
		}
	}
	return nil
}

// describe is a refusal's "code: description", in at most 300 bytes.
func describe(cmd *message.CommandAMF0) string {
	info := statusInfo(cmd)
	code, _ := info.GetString("code")
	desc, _ := info.GetString("description")
	s := code
	switch {
	case s == "" && desc == "":
		s = cmd.Name + " without a description"
	case s == "":
		s = desc
	case desc != "":
		s += ": " + desc
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
