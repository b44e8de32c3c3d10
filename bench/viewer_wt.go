package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/webtransport-go"

	"github.com/quiccast/quiccast/shared/relay"
	"github.com/quiccast/quiccast/shared/wire"
)

// h3Addrs reads each edge's HTTP/3 port from its /cert-hash. It is the
// number of its TCP port unless that UDP port was taken when the edge
// started (-wt-listen same with -listen :0 then takes any other, as a
// -local edge may: one shed-set run in 16 had every viewer fail dialling
// the TCP port's number). An edge that does not say keeps that number.
func h3Addrs(ctx context.Context, edges []string, nw *network) map[string]string {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: nw.dial, TLSClientConfig: nw.tls}}
	defer cl.CloseIdleConnections()
	out := map[string]string{}
	for _, e := range edges {
		u, err := url.Parse(e)
		if err != nil {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(e, "/")+"/cert-hash", nil)
		if err != nil {
			continue
		}
		resp, err := cl.Do(req)
		if err != nil {
			continue
		}
		var body struct{ Port int }
		err = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK && body.Port > 0 {
			out[e] = net.JoinHostPort(u.Hostname(), strconv.Itoa(body.Port))
		}
	}
	return out
}

// runWTViewer watches a broadcast over WebTransport (/wt/{name} on the
// edge's HTTP/3 port, h3Addrs), speaking the relay
// protocol as the browser player does: HELLO, SUBSCRIBE, then one stream
// per group. Payloads are read and discarded, not kept.
func runWTViewer(ctx context.Context, id int, edge, name, token string, st *Stats, nw *network) {
	w := &wtViewer{t: tracker{st: st, shard: id, started: time.Now()}, groups: map[uint64]bool{}}
	u, err := url.Parse(edge)
	if err != nil {
		st.Failed.Add(1)
		return
	}
	// The QUIC transport (its UDP socket and read loop) this viewer makes;
	// closed when the viewer ends, or it would outlive it.
	var qt *quic.Transport
	defer func() {
		if qt != nil {
			qt.Close()
		}
	}()
	// Without a certificate to trust (-ca, -insecure, or the one a TLS
	// -local run made), the edge's rotating development certificate is
	// not checked: the bench measures, it does not authenticate.
	tc := &tls.Config{InsecureSkipVerify: true}
	if nw.tls != nil {
		tc = withServerName(nw.tls, u.Host)
	}
	tr := &webtransport.Transport{
		TLSClientConfig: tc,
		QUICConfig: &quic.Config{EnableDatagrams: true, EnableStreamResetPartialDelivery: true,
			MaxIncomingUniStreams: 1000, MaxIdleTimeout: 15 * time.Second, KeepAlivePeriod: 5 * time.Second},
		DialAddr: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			pc, err := nw.packet()
			if err != nil {
				return nil, err
			}
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				pc.Close()
				return nil, err
			}
			if qt != nil { // a retry: the last attempt's socket is done with
				qt.Close()
			}
			qt = &quic.Transport{Conn: pc}
			return qt.DialEarly(ctx, ua, tc, qc)
		},
	}
	defer tr.Close()
	host := u.Host
	if h, ok := nw.h3[edge]; ok {
		host = h
	}
	target := "https://" + host + "/wt/" + name
	if token != "" {
		target += "?token=" + url.QueryEscape(token)
	}
	sess, err := dialWTRetrying(ctx, tr, target)
	if err != nil {
		if errors.Is(err, errEdgeFull) {
			st.Refused.Add(1)
		} else {
			st.Failed.Add(1)
		}
		return
	}
	defer sess.CloseWithError(0, "")
	ctl, err := sess.OpenStreamSync(ctx)
	if err != nil {
		st.Failed.Add(1)
		return
	}
	ctl.Write(relay.EncodeMsg(&relay.Msg{Type: relay.MsgHello, Version: relay.Version, Token: token}))
	ctl.Write(relay.EncodeMsg(&relay.Msg{Type: relay.MsgSubscribe, ID: 1, Broadcast: name}))
	ended := make(chan error, 1)
	go func() {
		for {
			m, err := relay.ReadMsg(ctl)
			if err != nil {
				ended <- err
				return
			}
			switch m.Type {
			case relay.MsgError, relay.MsgGoAway:
				ended <- errors.New(m.Reason)
				return
			case relay.MsgEnded:
				ended <- errEnded
				return
			}
		}
	}()
	streams := make(chan struct{})
	go func() {
		defer close(streams)
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			s, err := sess.AcceptUniStream(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); w.group(s) }()
		}
	}()
	var end error
	select {
	case <-ctx.Done():
	case end = <-ended:
	case <-sess.Context().Done():
		end = errors.New("session closed")
	}
	sess.CloseWithError(0, "")
	<-streams
	w.mu.Lock()
	if w.t.joined {
		st.Active.Add(-1)
	}
	w.mu.Unlock()
	if ctx.Err() == nil && !errors.Is(end, errEnded) {
		st.Disconnects.Add(1)
	}
}

// wtViewer tracks objects arriving on concurrent group streams.
type wtViewer struct {
	mu     sync.Mutex
	t      tracker
	newest uint64
	any    bool
	groups map[uint64]bool // groups seen, for skip counting (bounded below)
}

func (w *wtViewer) group(s *webtransport.ReceiveStream) {
	h, err := relay.ReadGroupHeader(s)
	if err != nil {
		return
	}
	w.mu.Lock()
	if w.any && h.Group > w.newest+1 {
		// Groups in between may still be on their way; a stream reset
		// for being too far behind counts below.
		for g := w.newest + 1; g < h.Group; g++ {
			if !w.groups[g] {
				w.t.st.Skipped.Add(1)
				w.groups[g] = true // counted; if it comes late it is not counted again
			}
		}
	}
	if !w.any || h.Group > w.newest {
		w.newest, w.any = h.Group, true
	}
	late := w.groups[h.Group]
	if late {
		w.t.st.Skipped.Add(-1) // it came after all
	}
	w.groups[h.Group] = true
	for g := range w.groups {
		if g+64 < w.newest {
			delete(w.groups, g)
		}
	}
	w.mu.Unlock()
	next := uint32(0)
	for {
		fh, err := wire.ReadHeader(s)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				if _, _, ok := relay.CloseCode(err); ok {
					w.t.st.Skipped.Add(1) // reset: the group fell behind
				}
			}
			return
		}
		if _, err := io.CopyN(io.Discard, s, int64(fh.Length)); err != nil {
			return
		}
		now := time.Now()
		if fh.Flags&wire.FlagEndOfGroup != 0 {
			return
		}
		w.mu.Lock()
		if fh.Index > next {
			w.t.st.Missing.Add(int64(fh.Index - next))
		}
		next = fh.Index + 1
		if !w.t.joined {
			w.t.joined = true
			w.t.st.Join.Record(w.t.shard, now.Sub(w.t.started))
			w.t.st.Active.Add(1)
		}
		w.mu.Unlock()
		lat := now.Sub(time.UnixMicro(fh.Capture))
		w.t.st.record(w.t.shard, lat, now)
		w.t.st.Objects.Add(1)
		w.t.st.Bytes.Add(int64(fh.Length))
	}
}

// errEdgeFull is an edge's 503: full, the viewer goes elsewhere.
var errEdgeFull = errors.New("edge full (503)")

// dialWTRetrying dials as the browser player does when an edge sheds
// load: a 503 (a browser sees only that WebTransport failed) is not
// retried, the player falls back to WebSocket on that edge and skips
// WebTransport there for a while; the viewer counts as refused. A QUIC
// CONNECTION_REFUSED (a join burst past the server's accept queue) is
// retried after a short, jittered pause, at most 3 times.
func dialWTRetrying(ctx context.Context, tr *webtransport.Transport, target string) (*webtransport.Session, error) {
	const attempts = 4
	var err error
	for i := range attempts {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var rsp *http.Response
		var sess *webtransport.Session
		rsp, sess, err = tr.Dial(dctx, target, nil)
		cancel()
		if err == nil {
			return sess, nil
		}
		wait := time.Duration(0)
		var te *quic.TransportError
		switch {
		case rsp != nil && rsp.StatusCode == http.StatusServiceUnavailable:
			return nil, errEdgeFull
		case errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused:
			wait = time.Duration(100+rand.IntN(400)) * time.Millisecond
		default:
			return nil, err
		}
		if i == attempts-1 {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, err
}
