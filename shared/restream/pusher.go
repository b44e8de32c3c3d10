package restream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/quiccast/quiccast/shared/media"
)

// refusalWindow: a server that hangs up this soon after accepting the
// publish refused it (some check the key only when media flows).
const refusalWindow = 3 * time.Second

// Pusher pushes one broadcast to one target until the broadcast ends, it
// is removed, or the target refused it MaxRefusals times in a row.
type Pusher struct {
	m      *Manager
	b      *media.Broadcast
	t      *Target
	id     string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	ended  chan struct{}

	mu sync.Mutex
	st Status
}

func newPusher(m *Manager, b *media.Broadcast, t *Target, id, source string) *Pusher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pusher{m: m, b: b, t: t, id: id, ctx: ctx, cancel: cancel, ended: make(chan struct{}),
		log: m.log.With("broadcast", b.Name, "target_id", id, "url", t.String())}
	p.st = Status{Broadcast: b.Name, ID: id, URL: t.String(), Source: source, Active: true, State: StateConnecting, Since: time.Now()}
	m.m.setState(id, StateConnecting)
	return p
}

func (p *Pusher) status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// set moves to state (Since changes only with the state) and records err,
// redacted.
func (p *Pusher) set(state string, err error, retry time.Time) {
	p.mu.Lock()
	if p.st.State != state {
		p.st.State, p.st.Since = state, time.Now()
	}
	if err != nil {
		p.st.LastError = p.t.Redact(err.Error())
	}
	p.st.RetryAt = retry
	p.mu.Unlock()
	p.m.m.setState(p.id, state)
}

func (p *Pusher) update(f func(*Status)) {
	p.mu.Lock()
	f(&p.st)
	p.mu.Unlock()
}

// run pushes until the end; see Pusher.
func (p *Pusher) run() {
	cfg := p.m.cfg
	backoff := cfg.MinBackoff
	for {
		live, err := p.session()
		var wait time.Duration
		var state, reason string
		switch {
		case p.ctx.Err() != nil:
			p.stop("stopped", nil)
			return
		case errors.Is(err, media.ErrClosed):
			p.stop("the broadcast ended", nil)
			return
		case errors.Is(err, errMedia):
			p.log.Warn("restream stopped: the broadcast cannot be restreamed", "err", p.t.Redact(err.Error()))
			p.stop("", err)
			return
		case errors.Is(err, errParams):
			reason, state = ReasonParams, StateConnecting
			p.log.Info("restream reconnecting: the broadcast's codecs changed")
		case errors.Is(err, errRefused) || errors.Is(err, errNetwork) && live > 0 && live < refusalWindow:
			reason, state = ReasonRefused, StateRefused
			var n int
			p.update(func(s *Status) { s.Refusals++; n = s.Refusals })
			if n >= cfg.MaxRefusals {
				p.m.m.reconnects.WithLabelValues(reason).Inc()
				p.log.Warn("restream refused: giving up", "refusals", n, "err", p.t.Redact(err.Error()))
				p.set(StateRefused, fmt.Errorf("%s; gave up after %d refusals in a row", p.t.Redact(err.Error()), n), time.Time{})
				p.update(func(s *Status) { s.Active = false })
				return
			}
			wait = min(cfg.RefusedBackoff<<(n-1), cfg.MaxRefusedBackoff)
			p.log.Warn("restream refused by the server", "refusals", n, "retry_in", wait.Round(time.Second), "err", p.t.Redact(err.Error()))
		default:
			reason, state = ReasonNetwork, StateReconnecting
			if live >= refusalWindow {
				p.update(func(s *Status) { s.Refusals = 0 })
			}
			if live >= 10*time.Second {
				backoff = cfg.MinBackoff
			}
			// Full jitter over the upper half: [backoff/2, backoff).
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, cfg.MaxBackoff)
			p.log.Warn("restream reconnecting", "retry_in", wait.Round(time.Millisecond), "err", p.t.Redact(err.Error()))
		}
		p.m.m.reconnects.WithLabelValues(reason).Inc()
		p.set(state, err, time.Now().Add(wait))
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
			case <-p.b.Done():
				t.Stop()
			}
		}
		if p.b.Closed() {
			p.stop("the broadcast ended", nil)
			return
		}
		if p.ctx.Err() != nil {
			p.stop("stopped", nil)
			return
		}
	}
}

// stop ends the pusher in state stopped, with why.
func (p *Pusher) stop(why string, err error) {
	if err == nil && why != "" {
		err = errors.New(why)
	}
	p.set(StateStopped, err, time.Time{})
	p.update(func(s *Status) { s.Active = false })
}

// session runs one RTMP session: it waits for the broadcast's catalog,
// connects, publishes, and writes until an error. live is how long the
// server accepted the publish for (0: never).
func (p *Pusher) session() (live time.Duration, err error) {
	cfg := p.m.cfg
	cur := p.b.NewCursor(cfg.Cursor)
	var items []media.Item
	var tr *tracks
	// The first catalog says which tracks the session announces.
	for tr == nil {
		items, err = cur.Next(p.ctx)
		if err != nil {
			return 0, err
		}
		for i, it := range items {
			if it.Catalog != nil {
				if tr, err = parseTracks(it.Catalog.Inits[0].Payload()); err != nil {
					return 0, err
				}
				items = items[i+1:]
				break
			}
		}
	}
	p.update(func(s *Status) { s.Attempts++ })
	sess, err := dial(p.ctx, p.t, p.m.tls, tr, cfg.Timeout)
	if err != nil {
		return 0, err
	}
	defer sess.close()
	accepted := time.Now()
	p.update(func(s *Status) { s.Sessions++ })
	p.set(StateLive, nil, time.Time{})
	p.log.Info("restream live")

	ctx, cancel := context.WithCancelCause(p.ctx)
	defer cancel(nil)
	go sess.watch(func(err error) { cancel(classify(errNetwork, "%v", err)) })
	// So that Remove and Close end a blocked write at once.
	stop := context.AfterFunc(ctx, sess.close)
	defer stop()

	var sent uint64
	count := func() {
		n := sess.bytesSent()
		if d := n - sent; d > 0 {
			sent = n
			p.m.m.bytes.WithLabelValues(p.id).Add(float64(d))
			p.update(func(s *Status) { s.Bytes += int64(d) })
		}
	}
	defer count()
	for {
		for _, it := range items {
			switch {
			case it.Catalog != nil:
				err = sess.catalog(it.Catalog.Inits[0].Payload())
			case it.Object != nil && it.Object.Track == 0 && len(it.Object.Payload()) > 0:
				err = sess.chunk(it.Object.Payload())
			}
			if err != nil {
				if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
					err = c // the server hung up: say why
				}
				return time.Since(accepted), err
			}
		}
		count()
		items, err = cur.Next(ctx)
		if errors.Is(err, media.ErrTooSlow) {
			// The target takes the stream slower than it is published:
			// go on from the live edge (the timestamps stay rising).
			p.log.Warn("restream falling behind: skipping to the live edge")
			cur, err = p.b.NewCursor(cfg.Cursor), nil
		}
		if err != nil {
			if c := context.Cause(ctx); c != nil && p.ctx.Err() == nil {
				err = c
			}
			return time.Since(accepted), err
		}
	}
}
