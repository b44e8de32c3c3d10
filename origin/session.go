package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/metrics"
	"github.com/quiccast/quiccast/shared/registry"
	"github.com/quiccast/quiccast/shared/wire"
)

// audioGroup is the group length of broadcasts without video, whose every
// chunk could start a group.
const audioGroup = time.Second

// Session is one publisher's connection to one broadcast. It turns the
// init segment into the epoch's catalog and each CMAF chunk into an object,
// opening a new group at every keyframe. One goroutine drives it.
type Session struct {
	n      *Node
	e      *entry
	ctx    context.Context
	cancel context.CancelFunc

	init       *cmaf.Init
	group      uint64
	index      uint32
	groupStart uint64 // decode time of the group's first chunk
	started    bool   // a group is open
	first      bool   // the next object is the epoch's first
	dropped    int    // chunks before the first keyframe
	closed     bool
	moved      bool                  // set (under Node.mu) when another origin took the broadcast over
	req        auth.Request          // as authorised, for on_done
	expiry     *time.Timer           // ends the session when its grant expires
	cause      atomic.Pointer[error] // why the origin ended the session, when not shutdown

	// The open group, for the registry's group log.
	groupEnd     uint64 // decode time after its last chunk
	groupBytes   int64
	groupObjects int
	groupWall    time.Time
}

func newSession(n *Node, e *entry) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	return &Session{n: n, e: e, ctx: ctx, cancel: cancel, first: true}
}

// SetProtocol names the publisher's protocol for the API (default
// "websocket").
func (s *Session) SetProtocol(p string) {
	s.n.mu.Lock()
	s.e.protocol = p
	s.n.mu.Unlock()
}

// Done is closed when the origin ends the session (shutdown, the grant
// expired, another origin took the broadcast); EndErr says which.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// endWith ends the session for cause.
func (s *Session) endWith(cause error) {
	s.cause.CompareAndSwap(nil, &cause)
	s.cancel()
}

// EndErr is why the origin ended the session, for the publisher.
func (s *Session) EndErr() error {
	if c := s.cause.Load(); c != nil {
		return *c
	}
	if s.moved { // set before the cancel that ended the session
		return wire.Errorf(wire.CodeConflict, "broadcast %q was taken over by another origin", s.e.name)
	}
	return wire.Errorf(wire.CodeGoingAway, "origin is shutting down")
}

// Broadcast returns the broadcast being published.
func (s *Session) Broadcast() *media.Broadcast { return s.e.b }

// Init takes the publisher's init segment and starts the epoch.
func (s *Session) Init(in *cmaf.Init) error {
	if s.init != nil {
		return wire.Errorf(wire.CodeInvalidMedia, "%v", cmaf.ErrInitChanged)
	}
	p := in.PrimaryTrak()
	ti := wire.TrackInfo{
		ID:        0,
		Kind:      in.Kind(),
		Codec:     in.Codec(),
		MimeType:  in.MimeType(),
		Timescale: p.Timescale,
	}
	for _, t := range in.Traks {
		if t.Handler == "vide" && ti.Width == 0 {
			ti.Width, ti.Height = t.Width, t.Height
		}
		if t.Handler == "soun" && ti.SampleRate == 0 {
			ti.SampleRate, ti.Channels = t.SampleRate, t.Channels
		}
	}
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: s.e.name, Epoch: s.e.epoch, Started: s.e.started.UnixMicro(), Tracks: []wire.TrackInfo{ti}}, [][]byte{in.Data})
	if err != nil {
		return err
	}
	if err := s.e.b.SetCatalog(cat); err != nil {
		return wire.Errorf(wire.CodeGoingAway, "broadcast closed")
	}
	s.init = in
	go s.n.cluster.published(s.e.name, true, &cat.Catalog)
	s.n.log.Info("publisher ready", "broadcast", s.e.name, "epoch", s.e.epoch, "codec", ti.Codec, "width", ti.Width, "height", ti.Height)
	return nil
}

// Chunk takes one CMAF chunk. Chunks before the first keyframe are
// dropped: a group must start with one.
func (s *Session) Chunk(c *cmaf.Chunk) error {
	if s.init == nil {
		return wire.Errorf(wire.CodeInvalidMedia, "%v", cmaf.ErrMissingInit)
	}
	now := time.Now()
	video := s.init.PrimaryTrak().Handler == "vide"
	ts := uint64(s.init.PrimaryTrak().Timescale)
	newGroup := c.Keyframe && (!s.started || video || c.DecodeTime-s.groupStart >= uint64(audioGroup.Seconds()*float64(ts)))
	if !s.started && !newGroup {
		s.dropped++
		return nil
	}
	h := wire.Header{Kind: wire.KindObject, Track: 0, DecodeTime: c.DecodeTime, Capture: c.Capture}
	if h.Capture == 0 {
		h.Capture = now.UnixMicro()
	}
	if newGroup {
		if s.started {
			s.finishGroup(now)
		}
		s.group = s.e.nextGroup
		s.e.nextGroup++
		s.index = 0
		s.groupStart = c.DecodeTime
		s.groupBytes, s.groupObjects, s.groupWall = 0, 0, now
		s.started = true
		h.Flags |= wire.FlagKeyframe
	} else {
		s.index++
	}
	if s.first {
		h.Flags |= wire.FlagDiscontinuity
		s.first = false
	}
	h.Group, h.Index = s.group, s.index
	if err := s.e.b.Append(media.NewObject(h, c.Data, now.UnixNano())); err != nil {
		switch {
		case errors.Is(err, media.ErrGroupTooLarge):
			return wire.Errorf(wire.CodeTooLarge, "%v", err)
		case errors.Is(err, media.ErrOverBudget):
			return wire.Errorf(wire.CodeOverCapacity, "origin memory budget exhausted; try another origin")
		case errors.Is(err, media.ErrClosed):
			return wire.Errorf(wire.CodeGoingAway, "broadcast closed")
		}
		return fmt.Errorf("append: %w", err)
	}
	s.n.metrics.objects.Inc()
	metrics.ObserveDelay(s.n.metrics.delay, h.Capture, time.Now().UnixMicro())
	s.n.metrics.bytes.Add(float64(len(c.Data)))
	s.e.bytes.Add(int64(len(c.Data)))
	s.groupEnd = c.DecodeTime + c.Duration
	s.groupBytes += int64(len(c.Data))
	s.groupObjects++
	return nil
}

// finishGroup ends the open group: its end marker goes to viewers and its
// summary to the registry's group log.
func (s *Session) finishGroup(now time.Time) {
	s.e.b.Finish(0, s.group, now.UnixNano())
	s.n.metrics.groups.Inc()
	s.e.groups.Add(1)
	ts := uint64(s.init.PrimaryTrak().Timescale)
	s.n.cluster.logGroup(s.e.name, registry.Group{
		Track: 0, Seq: s.group, Epoch: s.e.epoch, Start: s.groupWall,
		Duration: time.Duration((s.groupEnd - s.groupStart) * uint64(time.Second) / ts),
		Bytes:    s.groupBytes, Objects: s.groupObjects, Origin: s.n.cfg.Peer.ID(),
	})
}

// Feed reads a fragmented-MP4 byte stream from r to its end. It returns
// nil at a clean end, else an error carrying a wire code for the sender.
func (s *Session) Feed(r io.Reader) error {
	cr := cmaf.NewReader(r, s.n.cmafLimits())
	for {
		if s.ctx.Err() != nil { // ended by the origin (drop, shutdown) while the bytes still flow
			return s.EndErr()
		}
		seg, err := cr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return mediaError(err)
		}
		switch seg := seg.(type) {
		case *cmaf.Init:
			err = s.Init(seg)
		case *cmaf.Chunk:
			err = s.Chunk(seg)
		}
		if err != nil {
			return err
		}
	}
}

// mediaError gives a cmaf error the code its sender should see. Errors
// that already carry a code keep it.
func mediaError(err error) error {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		return err
	case errors.Is(err, cmaf.ErrBoxTooLarge):
		return &wire.Error{Code: wire.CodeTooLarge, Msg: err.Error(), Err: err}
	case errors.Is(err, cmaf.ErrOverBudget):
		return &wire.Error{Code: wire.CodeOverCapacity, Msg: "origin memory budget exhausted; try another origin", Err: err}
	case errors.Is(err, cmaf.ErrTooComplex), errors.Is(err, cmaf.ErrNotMP4), errors.Is(err, cmaf.ErrMissingInit), errors.Is(err, cmaf.ErrMoofWithoutMdat),
		errors.Is(err, cmaf.ErrNonMonotonic), errors.Is(err, cmaf.ErrUnsupportedCodec), errors.Is(err, cmaf.ErrInvalid),
		errors.Is(err, cmaf.ErrInitChanged):
		return &wire.Error{Code: wire.CodeInvalidMedia, Msg: err.Error(), Err: err}
	}
	return err
}

// Close ends the session: the open group is finished and the broadcast
// waits for the publisher to return. err is why (nil for a clean end).
func (s *Session) Close(err error) {
	if s.closed {
		return
	}
	s.closed = true
	if s.expiry != nil {
		s.expiry.Stop()
	}
	if s.started {
		s.finishGroup(time.Now())
	}
	s.cancel()
	s.n.left(s.e, s)
	if s.req.Action != "" {
		auth.Done(s.n.cfg.Auth, s.req)
	}
	if err != nil {
		s.n.metrics.refuse(err)
	}
}
