package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/tlsrec"
	"github.com/quiccast/quiccast/shared/wire"
)

// serveWS is GET /ws/{name}: the viewer WebSocket. The edge sends the
// catalog (text) and init segments (binary frames of kind init), then one
// binary message per object, starting at the newest group. See
// shared/wire/README.md for the frames and messages.
func (n *Node) serveWS(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   512,
		WriteBufferSize:  512,
		CheckOrigin:      n.originAllowed,
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	name := r.PathValue("name")
	v := &wsViewer{n: n, conn: conn, nc: conn.NetConn(), name: name, remote: r.RemoteAddr}
	if n.cfg.UnsentLimit > 0 {
		nc := v.nc
		if tc, ok := nc.(*tls.Conn); ok {
			nc = tc.NetConn()
		}
		setUnsentLimit(nc, n.cfg.UnsentLimit)
	}
	req := auth.Request{Action: auth.Play, Broadcast: name, Token: auth.TokenFromRequest(r), Remote: r.RemoteAddr,
		App: "ws", URL: auth.RedactURL(r.URL), Args: r.URL.Query()}
	g, err := n.admit(r.Context(), req)
	if err != nil {
		n.refuse(v, err)
		return
	}
	u, err := n.attach(r.Context(), name)
	if err != nil {
		n.leave(req) // before the close frame: the viewer may retry at once
		n.refuse(v, err)
		return
	}
	v.req, v.expires = req, g.Expires
	n.metrics.viewers.WithLabelValues("ws").Inc()
	kick := n.joined(name, transportWS).Done()
	cfg := media.CursorConfig{MaxLag: n.cfg.MaxLag, MaxSkips: n.cfg.MaxSkips, SkipWindow: n.cfg.SkipWindow}
	if fv := n.fastViewer(v.nc); fv != nil {
		// The fan-out owns the viewer from here; this goroutine (and
		// its stack) goes.
		fv.u, fv.name, fv.remote, fv.kick, fv.req, fv.expires = u, name, r.RemoteAddr, kick, req, g.Expires
		fv.cur, fv.lastRead = u.b.NewCursor(cfg), time.Now()
		n.fanout(u).add(fv)
		return
	}
	n.metrics.wsWriters.WithLabelValues("goroutines").Inc()
	defer n.leave(req)
	defer n.detach(u)
	defer n.metrics.viewers.WithLabelValues("ws").Dec()
	defer n.parted(name, transportWS)
	v.run(u.b.NewCursor(cfg), kick)
}

// fastViewer makes an admitted viewer's connection one the fan-out can
// write to, or returns nil (the viewer then gets goroutines of its own):
// plain TCP as it is; TLS 1.3 by taking its record layer over from
// crypto/tls, with the kernel sealing where it offers TLS and the
// fan-out sealing otherwise.
func (n *Node) fastViewer(nc net.Conn) *fastViewer {
	if n.cfg.WSWriter == "goroutines" {
		return nil
	}
	fv := &fastViewer{n: n}
	writer := "events"
	switch c := nc.(type) {
	case *net.TCPConn:
		fv.nc = c
	case *tls.Conn:
		tc, ok := c.NetConn().(*net.TCPConn)
		if !ok {
			return nil
		}
		s, _, err := tlsrec.Take(c)
		if err != nil {
			n.tlsFallback.Do(func() {
				n.log.Warn("wss:// viewers that cannot be taken over get goroutines of their own", "err", err)
			})
			return nil
		}
		s.MaxRecord = maxViewerRecord
		fv.nc, fv.tls, writer = tc, s, "tls"
	default:
		return nil
	}
	rc, err := fv.nc.SyscallConn()
	if err != nil {
		return nil // not reached for a TCP connection
	}
	fv.rc = rc
	if fv.tls != nil && n.cfg.KernelTLS && tlsrec.KernelAvailable() {
		if err := fv.tls.StartKernelTX(rc); err == nil {
			writer = "ktls"
		} else {
			n.ktlsFallback.Do(func() {
				n.log.Warn("kernel TLS offered but refused; the fan-out seals wss:// records itself", "err", err)
			})
		}
	}
	n.metrics.wsWriters.WithLabelValues(writer).Inc()
	return fv
}

// maxViewerRecord bounds a TLS record from a wss:// viewer on the fan-out:
// viewers send only pings and close frames, under 200 bytes each.
const maxViewerRecord = 1024

// admit checks the name, the token and the viewer limit, and counts the
// viewer in. Every admitted viewer must leave. The grant says when the
// viewer's token expires (the viewer is then closed with 4401).
func (n *Node) admit(ctx context.Context, r auth.Request) (auth.Grant, error) {
	if err := media.ValidName(r.Broadcast); err != nil {
		return auth.Grant{}, wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	r.Action = auth.Play
	g, err := auth.Decide(ctx, n.cfg.Auth, r)
	if err != nil {
		return auth.Grant{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.takeViewerLocked(); err != nil {
		auth.Done(n.cfg.Auth, r)
		return auth.Grant{}, err
	}
	n.wg.Add(1)
	return g, nil
}

// takeViewerLocked counts a viewer in (-max-viewers), unless the edge is
// draining or full. n.mu is held. releaseViewer counts it out.
func (n *Node) takeViewerLocked() error {
	if n.closed || n.draining {
		return wire.Errorf(wire.CodeGoingAway, "edge is draining; connect to another edge")
	}
	if n.viewers >= n.cfg.MaxViewers {
		return wire.Errorf(wire.CodeOverCapacity, "edge is full (%d viewers); connect to another edge", n.cfg.MaxViewers)
	}
	n.viewers++
	return nil
}

func (n *Node) releaseViewer() {
	n.mu.Lock()
	n.viewers--
	n.mu.Unlock()
}

// leave counts an admitted viewer out and tells the authoriser (on_done).
func (n *Node) leave(r auth.Request) {
	n.releaseViewer()
	n.wg.Done()
	auth.Done(n.cfg.Auth, r)
}

func (n *Node) refuse(v *wsViewer, err error) {
	n.log.Info("viewer refused", "broadcast", v.name, "remote", v.remote, "err", err)
	n.metrics.disconnect(err)
	v.close(err)
}

// wsViewer is one WebSocket viewer on a connection the fan-out cannot
// take (a TLS session tlsrec cannot take over), or when
// -ws-writer=goroutines: one goroutine
// writes (run); another reads, only to notice the viewer leaving and to
// answer pings.
type wsViewer struct {
	n      *Node
	conn   *websocket.Conn
	nc     net.Conn
	name   string
	remote string

	wmu    sync.Mutex // one writer at a time on nc; guards what follows
	broken bool       // a write failed: the socket is unusable
	wstore [][]byte   // backing array of wbuf, reused for every write
	wbuf   net.Buffers

	bufs net.Buffers // send's frames, reused

	req     auth.Request // as admitted
	expires time.Time    // the grant's end; zero: never
}

// run sends the broadcast until the viewer leaves, falls too far behind,
// the broadcast ends or the node drains.
func (v *wsViewer) run(cur *media.Cursor, kick <-chan struct{}) {
	ctx, cancel := context.WithCancel(v.n.ctx)
	defer cancel()
	if !v.expires.IsZero() {
		t := time.AfterFunc(time.Until(v.expires), cancel)
		defer t.Stop()
	}
	go v.read(cancel)
	go func() {
		select {
		case <-kick:
			cancel()
		case <-ctx.Done():
		}
	}()
	var err error
	for err == nil {
		var items []media.Item
		items, err = cur.Next(ctx)
		if len(items) > 0 {
			if werr := v.send(items); werr != nil {
				err = werr
			}
		}
	}
	switch {
	case errors.Is(err, media.ErrTooSlow):
	case kicked(kick):
		err = errRemoved
	case !v.expires.IsZero() && !time.Now().Before(v.expires) && v.n.ctx.Err() == nil:
		err = auth.ExpiredError(v.req)
	case isTimeout(err):
		err = v.n.errSocketFull()
	case errors.Is(err, errWrite) || ctx.Err() != nil && v.n.ctx.Err() == nil:
		err = errWrite // the viewer left
	case errors.Is(err, media.ErrClosed):
	case v.n.ctx.Err() != nil:
		err = errDraining
	}
	msg, err := v.n.wsEnding(err)
	if msg != nil {
		v.writeRaw(msg)
	}
	v.n.metrics.disconnect(err)
	if err != nil && wire.CodeOf(err) != wire.CodeNormal {
		v.n.log.Info("viewer dropped", "broadcast", v.name, "remote", v.remote, "err", err)
	}
	v.close(err)
}

// send writes items in one writev.
func (v *wsViewer) send(items []media.Item) error {
	v.bufs = v.n.wsFrames(v.bufs[:0], items)
	err := v.writeRaw(v.bufs...)
	clear(v.bufs) // let sent objects go when the cache drops them
	if err == nil {
		observeObjects(v.n.metrics.delayWS, items)
	}
	return err
}

// writeRaw writes complete WebSocket frames under the write deadline.
func (v *wsViewer) writeRaw(frames ...[]byte) error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	if v.broken {
		return errWrite
	}
	v.nc.SetWriteDeadline(time.Now().Add(v.n.cfg.WriteTimeout))
	// WriteTo consumes the slice it is called on; a field of v, rebuilt
	// on the reused backing array, keeps this write free of allocations.
	v.wstore = append(v.wstore[:0], frames...)
	v.wbuf = v.wstore
	k, err := v.wbuf.WriteTo(v.nc)
	v.n.metrics.sent.Add(float64(k))
	if err != nil {
		// Even a timed-out write may have left half a frame on the
		// wire: nothing more can be written after it.
		v.broken = true
		return fmt.Errorf("%w: %w", errWrite, err)
	}
	return nil
}

// errWrite wraps every failed write to a viewer.
var errWrite = errors.New("edge: write to viewer")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// read consumes what the viewer sends: pings (answered), a close, or
// nothing. It cancels the viewer when the connection ends.
func (v *wsViewer) read(cancel context.CancelFunc) {
	defer cancel()
	v.conn.SetReadLimit(4096)
	v.conn.SetPingHandler(func(data string) error {
		if len(data) > 125 {
			data = data[:125]
		}
		return v.writeRaw(wire.WSMessage(wire.WSPong, []byte(data)))
	})
	v.conn.SetCloseHandler(func(int, string) error { return nil })
	for {
		if _, _, err := v.conn.NextReader(); err != nil {
			return
		}
	}
}

// close sends err's code (1000 when nil) and closes the socket.
func (v *wsViewer) close(err error) {
	code, reason := wire.CodeNormal, ""
	if err != nil {
		code, reason = wire.CodeOf(err), wire.Reason(err)
	}
	v.wmu.Lock()
	// After a timed-out write the frame may not fit either: try briefly.
	if !v.broken {
		v.nc.SetWriteDeadline(time.Now().Add(time.Second))
		v.nc.Write(wire.WSCloseMessage(code, reason))
		v.broken = true
	}
	v.wmu.Unlock()
	v.conn.Close()
}
