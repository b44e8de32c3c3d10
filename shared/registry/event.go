package registry

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event types.
const (
	EventStarted      = "started"       // a node claimed a broadcast nobody else held
	EventEnded        = "ended"         // the holder released a broadcast
	EventMoved        = "moved"         // a broadcast changed holder (failover)
	EventNodeUp       = "node_up"       // a node started
	EventNodeDraining = "node_draining" // a node is shutting down
	// EventDrop asks the holder of Broadcast to drop its publisher (the
	// API's drop, sent by any node); Bar > 0 also barred the name.
	EventDrop = "drop"
	// EventKick asks every edge to disconnect Broadcast's viewers.
	EventKick = "kick"
	// EventRecord and EventRecordStop ask the holder of Broadcast to start
	// or stop recording it.
	EventRecord     = "record"
	EventRecordStop = "record-stop"
	// EventRestream and EventRestreamStop ask the holder of Broadcast to
	// push it to Target (an RTMP URL, stream key and all: qc:events is
	// as private as the rest of Redis) or to stop pushing it to Target
	// (a target id).
	EventRestream     = "restream"
	EventRestreamStop = "restream-stop"
	// EventResync is synthetic, never stored: Follow emits it when Redis
	// answers again after an error, and the events of the outage may be
	// lost, so the follower re-checks the keys it depends on.
	EventResync = "resync"
)

// Event is one entry of qc:events.
type Event struct {
	// ID is the stream entry id (empty for EventResync).
	ID string
	// Type is one of the Event… constants.
	Type string
	// Broadcast is the broadcast name (empty for node events).
	Broadcast string
	// Node is the node the event is about, or that sent it.
	Node string
	// Relay is the host:port of Node's relay, if any.
	Relay string
	// Incarnation is the run of Node's process that sent the event, if
	// known (Broadcast.Incarnation): with the same Relay and another
	// incarnation, the node was restarted.
	Incarnation string
	// Epoch is the broadcast's epoch (started, moved).
	Epoch uint64
	// Time is when the event happened.
	Time time.Time
	// Bar is how long the name is barred from publishing (drop).
	Bar time.Duration
	// Target is a restream target: its URL (restream) or id
	// (restream-stop). Never log it.
	Target string
}

// PublishEvent adds ev to qc:events (XADD MAXLEN ~ EventsMax); an empty
// Node is this node, a zero Time now. The ID is ignored.
func (r *Registry) PublishEvent(ctx context.Context, ev Event) error {
	switch ev.Type {
	case "":
		return errors.New("registry: publish event: empty type")
	case EventResync:
		return errors.New("registry: publish event: resync is synthetic, never stored")
	}
	if ev.Broadcast != "" {
		if err := checkName(ev.Broadcast); err != nil {
			return err
		}
	}
	if ev.Node == "" {
		ev.Node = r.o.NodeID
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	return wrap("publish event "+ev.Type, ev.Broadcast, r.xaddEvent(ctx, ev))
}

// addEvent writes the event of a change a script made (best effort: the
// change stands, and a lost event is logged; followers resync).
func (r *Registry) addEvent(ctx context.Context, ev Event) {
	if err := r.xaddEvent(ctx, ev); err != nil {
		r.log.Warn("event not written; followers find out at their next resync", "type", ev.Type,
			"broadcast", ev.Broadcast, "err", explain(err))
	}
}

func (r *Registry) xaddEvent(ctx context.Context, ev Event) error {
	return r.call(ctx, func(ctx context.Context) error {
		return r.rdb.XAdd(ctx, &redis.XAddArgs{
			Stream: keyEvents, MaxLen: r.o.EventsMax, Approx: true,
			Values: []any{
				"type", ev.Type, "broadcast", ev.Broadcast, "node", ev.Node,
				"relay", ev.Relay, "epoch", ev.Epoch, "time", ev.Time.UnixMilli(),
				"incarnation", ev.Incarnation, "bar", ev.Bar.Milliseconds(),
				"target", ev.Target,
			},
		}).Err()
	})
}

// Follow calls fn, on Follow's goroutine, for every event added to
// qc:events after Follow starts (XREAD BLOCK from the stream's newest id,
// then from the last id seen), until ctx is done; it then returns
// ctx.Err() at once (ErrClosed after Close). On a Redis error it retries
// with capped exponential backoff (100 ms … 2 s) and, once Redis answers
// again, calls fn with an EventResync first, so the caller re-checks the
// keys it depends on: the events of the outage may be lost.
func (r *Registry) Follow(ctx context.Context, fn func(Event)) error {
	last, err := r.newestEventID(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	down := err != nil
	if down {
		r.log.Warn("follow events: redis not answering; retrying", "err", explain(err))
	}
	backoff := minBackoff
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.isClosed() {
			return ErrClosed
		}
		if down {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			top, err := r.newestEventID(ctx)
			if err != nil {
				continue
			}
			// Go on after the last event seen, unless the stream is now
			// behind it (Redis lost it): then after its newest event.
			if last == "" || idLess(top, last) {
				last = top
			}
			down, backoff = false, minBackoff
			r.log.Info("follow events: redis answers again; resync")
			fn(Event{Type: EventResync, Time: time.Now()})
			continue
		}
		msgs, err := r.readEvents(ctx, last)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, redis.Nil): // BLOCK timed out
			continue
		case err != nil:
			if r.isClosed() {
				return ErrClosed
			}
			r.log.Warn("follow events: redis error; retrying", "err", explain(err))
			down = true
			continue
		}
		for _, m := range msgs {
			last = m.ID
			fn(parseEvent(m))
		}
	}
}

// readEvents is one XREAD BLOCK. It runs on its own goroutine so that
// Follow returns as soon as ctx is done; that read ends within the block
// time, or at Close.
func (r *Registry) readEvents(ctx context.Context, after string) ([]redis.XMessage, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	r.wg.Add(1)
	r.mu.Unlock()
	type result struct {
		msgs []redis.XMessage
		err  error
	}
	done := make(chan result, 1)
	go func() {
		defer r.wg.Done()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), blockTime+callTimeout)
		defer cancel()
		streams, err := r.rdb.XRead(rctx, &redis.XReadArgs{
			Streams: []string{keyEvents, after}, Count: 100, Block: blockTime,
		}).Result()
		r.note(err)
		var msgs []redis.XMessage
		for _, s := range streams {
			msgs = append(msgs, s.Messages...)
		}
		done <- result{msgs, err}
	}()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-done:
		return res.msgs, res.err
	}
}

// newestEventID is the id of the newest event, "0-0" if there is none.
func (r *Registry) newestEventID(ctx context.Context) (string, error) {
	var msgs []redis.XMessage
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		msgs, err = r.rdb.XRevRangeN(ctx, keyEvents, "+", "-", 1).Result()
		return err
	})
	if err != nil {
		return "", wrap("follow events", "", err)
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

func parseEvent(m redis.XMessage) Event {
	s := func(k string) string { x, _ := m.Values[k].(string); return x }
	return Event{
		ID:          m.ID,
		Type:        s("type"),
		Broadcast:   s("broadcast"),
		Node:        s("node"),
		Relay:       s("relay"),
		Incarnation: s("incarnation"),
		Epoch:       parseUint(s("epoch")),
		Time:        fromUnixMs(s("time")),
		Bar:         time.Duration(parseUint(s("bar"))) * time.Millisecond,
		Target:      s("target"),
	}
}

// idLess compares stream ids ("ms-seq").
func idLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

func splitID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}
