package media

import (
	"context"
	"errors"
	"time"
)

// ErrTooSlow is returned by a Cursor whose reader kept falling behind.
var ErrTooSlow = errors.New("media: reader keeps falling behind the live edge")

// CursorConfig sets when a reader that falls behind skips ahead, and when it
// is given up on. Zero fields take defaults.
type CursorConfig struct {
	// MaxLag is how far (by arrival time) the next object to send may lag
	// the newest one before the reader skips to the newest group.
	// Default 2 s.
	MaxLag time.Duration
	// MaxSkips skips within SkipWindow are tolerated; one more is
	// ErrTooSlow. Defaults 3 and 30 s.
	MaxSkips   int
	SkipWindow time.Duration
	// MaxBatch and MaxBatchBytes bound what one Next returns, so a slow
	// write of one batch cannot hide lag for long. Defaults 64 items and
	// 256 KiB.
	MaxBatch      int
	MaxBatchBytes int
	// FromOldest starts the cursor at the oldest cached group that
	// arrived within MaxLag of the newest object, instead of at the
	// newest group: a recorder wants what the cache still holds (an
	// RTMP publisher's first seconds arrive at once).
	FromOldest bool
}

func (c CursorConfig) withDefaults() CursorConfig {
	if c.MaxLag <= 0 {
		c.MaxLag = 2 * time.Second
	}
	if c.MaxSkips <= 0 {
		c.MaxSkips = 3
	}
	if c.SkipWindow <= 0 {
		c.SkipWindow = 30 * time.Second
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 64
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 256 << 10
	}
	return c
}

// Skip says groups From..To-1 of Track were not delivered.
type Skip struct {
	Track    uint16
	From, To uint64
}

// Item is one thing for a sequential reader to send, in order: a catalog
// (send it and its init frames before what follows), a skip notice, or an
// object.
type Item struct {
	Catalog *Catalog
	Skip    *Skip
	Object  *Object
}

type position struct {
	g    *Group
	next int
}

// Cursor reads a broadcast in order for one sequential viewer (WebSocket):
// it starts at the newest group of each track, sends the catalog of each
// epoch before its objects, and skips ahead when the viewer falls behind.
// A Cursor is used by one goroutine.
type Cursor struct {
	b     *Broadcast
	cfg   CursorConfig
	pos   []position
	sent  *Catalog
	skips []int64
	items []Item
	bytes int // in items
	err   error
	now   func() int64
}

// NewCursor returns a Cursor positioned at the live edge.
func (b *Broadcast) NewCursor(cfg CursorConfig) *Cursor {
	return &Cursor{b: b, cfg: cfg.withDefaults(), now: func() int64 { return time.Now().UnixNano() }}
}

// Skips returns the number of skips in the current window.
func (c *Cursor) Skips() int { return len(c.skips) }

// Next returns the items ready to send, waiting for at least one. The slice
// is reused by the next call. It returns ErrClosed when the broadcast
// closes, ErrTooSlow when the reader has skipped too often, or ctx's error.
func (c *Cursor) Next(ctx context.Context) ([]Item, error) {
	for {
		b := c.b
		b.mu.RLock()
		if b.closed {
			b.mu.RUnlock()
			return nil, ErrClosed
		}
		c.items, c.bytes = c.items[:0], 0
		for ti := range b.tracks {
			c.collect(ti)
		}
		ch := b.notify
		b.mu.RUnlock()
		if c.err != nil {
			return c.items, c.err
		}
		if len(c.items) > 0 {
			return c.items, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Poll appends to dst the items ready now, without waiting: the
// event-driven writers call it when the broadcast changed. It returns
// ErrClosed once the broadcast closed and ErrTooSlow as Next does; dst
// then still holds what was ready.
func (c *Cursor) Poll(dst []Item) ([]Item, error) {
	b := c.b
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return dst, ErrClosed
	}
	saved := c.items
	c.items, c.bytes = dst, 0
	for ti := range b.tracks {
		c.collect(ti)
	}
	dst, c.items = c.items, saved
	return dst, c.err
}

// collect adds track ti's ready items. Hold c.b.mu for reading.
func (c *Cursor) collect(ti int) {
	t := c.b.tracks[ti]
	for len(c.pos) <= ti {
		c.pos = append(c.pos, position{})
	}
	p := &c.pos[ti]
	if p.g == nil {
		if p.g = t.newest(); p.g == nil {
			return
		}
		if c.cfg.FromOldest {
			last := p.g.objects[len(p.g.objects)-1].Arrival
			for _, g := range t.groups {
				if last-g.Created <= int64(c.cfg.MaxLag) {
					p.g = g
					break
				}
			}
		}
		p.next = 0
	}
	for c.room() {
		if newest := t.newest(); newest != nil && newest != p.g && c.lagging(t, p, newest) {
			c.skip(ti, p.g.Seq, newest)
			if c.err != nil {
				return
			}
			continue
		}
		if p.next < len(p.g.objects) {
			if p.g.Catalog != c.sent {
				c.items = append(c.items, Item{Catalog: p.g.Catalog})
				c.sent = p.g.Catalog
			}
			for p.next < len(p.g.objects) && c.room() {
				o := p.g.objects[p.next]
				c.items = append(c.items, Item{Object: o})
				c.bytes += len(o.buf)
				p.next++
			}
			continue
		}
		if !p.g.done {
			return // wait for more of this group
		}
		nx := t.after(p.g.Seq)
		if nx == nil {
			return // wait for the next group
		}
		if nx.Seq != p.g.Seq+1 {
			// The groups between were dropped from the cache before
			// this reader got to them.
			c.skip(ti, p.g.Seq+1, nx)
			if c.err != nil {
				return
			}
			continue
		}
		p.g, p.next = nx, 0
	}
}

// room reports whether the batch may take another item.
func (c *Cursor) room() bool {
	return len(c.items) < c.cfg.MaxBatch && c.bytes < c.cfg.MaxBatchBytes
}

// lagging reports whether the next thing p waits for arrived more than
// MaxLag before the newest object.
func (c *Cursor) lagging(t *track, p *position, newest *Group) bool {
	var next int64
	switch {
	case p.next < len(p.g.objects):
		next = p.g.objects[p.next].Arrival
	default:
		nx := t.after(p.g.Seq)
		if nx == nil {
			return false
		}
		next = nx.Created // waiting on an open group while newer ones flow
	}
	last := newest.objects[len(newest.objects)-1].Arrival
	return last-next > int64(c.cfg.MaxLag)
}

func (c *Cursor) skip(ti int, from uint64, to *Group) {
	now := c.now()
	keep := c.skips[:0]
	for _, s := range c.skips {
		if now-s < int64(c.cfg.SkipWindow) {
			keep = append(keep, s)
		}
	}
	c.skips = append(keep, now)
	c.items = append(c.items, Item{Skip: &Skip{Track: uint16(ti), From: from, To: to.Seq}})
	c.pos[ti] = position{g: to}
	if len(c.skips) > c.cfg.MaxSkips {
		c.err = ErrTooSlow
	}
}
