package registry

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Group is one entry of qc:groups:{name}: a finished group (GOP) of a
// track. The log lets a new origin continue group numbers after a failover.
type Group struct {
	// Track is the track id.
	Track uint16
	// Seq is the group number, rising by one per track.
	Seq uint64
	// Epoch is the publisher session the group belongs to.
	Epoch uint64
	// Start is the capture wall-clock of the group's first object.
	Start time.Time
	// Duration is the group's media duration (stored in µs).
	Duration time.Duration
	// Bytes is the size of the group's objects.
	Bytes int64
	// Objects is the number of objects in the group.
	Objects int
	// Origin is the node that ingested the group (empty in LogGroup: this
	// node).
	Origin string
}

// LogGroup appends g to qc:groups:{name} (XADD MAXLEN ~ GroupLogMax) and
// sets the stream's TTL (GroupLogTTL), in one round trip.
func (r *Registry) LogGroup(ctx context.Context, name string, g Group) error {
	if err := checkName(name); err != nil {
		return err
	}
	if g.Origin == "" {
		g.Origin = r.o.NodeID
	}
	key := keyGroups(name)
	err := r.call(ctx, func(ctx context.Context) error {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.XAdd(ctx, &redis.XAddArgs{
				Stream: key, MaxLen: r.o.GroupLogMax, Approx: true,
				Values: []any{
					"track", g.Track, "group", g.Seq, "epoch", g.Epoch,
					"start", unixMs(g.Start), "duration", g.Duration.Microseconds(),
					"bytes", g.Bytes, "objects", g.Objects, "origin", g.Origin,
				},
			})
			p.PExpire(ctx, key, r.o.GroupLogTTL)
			return nil
		})
		return err
	})
	return wrap("log group", name, err)
}

// LastGroup returns the newest entry of the group log, or (nil, nil) if the
// log is empty or gone.
func (r *Registry) LastGroup(ctx context.Context, name string) (*Group, error) {
	gs, err := r.groups(ctx, "last group", name, 1)
	if err != nil || len(gs) == 0 {
		return nil, err
	}
	return &gs[0], nil
}

// Groups returns the newest count entries of the group log (all of them if
// count <= 0), newest last.
func (r *Registry) Groups(ctx context.Context, name string, count int64) ([]Group, error) {
	gs, err := r.groups(ctx, "groups", name, count)
	slices.Reverse(gs)
	return gs, err
}

// groups reads newest first.
func (r *Registry) groups(ctx context.Context, op, name string, count int64) ([]Group, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var msgs []redis.XMessage
	err := r.call(ctx, func(ctx context.Context) error {
		var err error
		if count > 0 {
			msgs, err = r.rdb.XRevRangeN(ctx, keyGroups(name), "+", "-", count).Result()
		} else {
			msgs, err = r.rdb.XRevRange(ctx, keyGroups(name), "+", "-").Result()
		}
		return err
	})
	if err != nil {
		return nil, wrap(op, name, err)
	}
	gs := make([]Group, 0, len(msgs))
	for _, m := range msgs {
		gs = append(gs, parseGroup(m.Values))
	}
	return gs, nil
}

func parseGroup(v map[string]any) Group {
	s := func(k string) string { x, _ := v[k].(string); return x }
	track, _ := strconv.ParseUint(s("track"), 10, 16)
	return Group{
		Track:    uint16(track),
		Seq:      parseUint(s("group")),
		Epoch:    parseUint(s("epoch")),
		Start:    fromUnixMs(s("start")),
		Duration: time.Duration(parseInt(s("duration"))) * time.Microsecond,
		Bytes:    parseInt(s("bytes")),
		Objects:  int(parseInt(s("objects"))),
		Origin:   s("origin"),
	}
}
