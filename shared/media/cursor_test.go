package media

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quiccast/quiccast/shared/wire"
)

const ms = int64(time.Millisecond)

// describe renders items as "cat1 0/2/0 skip0:1-3 ..." (track/group/index).
func describe(items []Item) string {
	var s []string
	for _, it := range items {
		switch {
		case it.Catalog != nil:
			s = append(s, fmt.Sprintf("cat%d", it.Catalog.Epoch))
		case it.Skip != nil:
			s = append(s, fmt.Sprintf("skip%d:%d-%d", it.Skip.Track, it.Skip.From, it.Skip.To))
		case it.Object != nil:
			o := it.Object
			e := ""
			if o.Flags&wire.FlagEndOfGroup != 0 {
				e = "end"
			}
			s = append(s, fmt.Sprintf("%d/%d/%d%s", o.Track, o.Group, o.Index, e))
		default:
			s = append(s, "empty")
		}
	}
	return strings.Join(s, " ")
}

// next calls c.Next and expects items at once.
func next(t *testing.T, c *Cursor) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // anything ready is returned before ctx is looked at
	items, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return describe(items)
}

func expect(t *testing.T, c *Cursor, want string) {
	t.Helper()
	if got := next(t, c); got != want {
		t.Fatalf("Next = %q\n      want %q", got, want)
	}
}

// nothingReady checks that Next has nothing to return.
func nothingReady(t *testing.T, c *Cursor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	items, err := c.Next(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Next = %q, %v; want nothing ready", describe(items), err)
	}
}

func TestCursorStartsAtNewestGroupAndFollows(t *testing.T) {
	b := New("c", Limits{})
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b, 0, 1, 3, 10, 0, ms, true)
	addGroup(t, b, 0, 2, 2, 10, 10*ms, ms, false)
	c := b.NewCursor(CursorConfig{})
	expect(t, c, "cat1 0/2/0 0/2/1")
	nothingReady(t, c)
	b.Append(object(0, 2, 2, 0, 20*ms, 10))
	expect(t, c, "0/2/2") // the catalog is not sent again
	b.Finish(0, 2, 21*ms)
	expect(t, c, "0/2/3end")
	nothingReady(t, c)
	addGroup(t, b, 0, 3, 2, 10, 30*ms, ms, true)
	addGroup(t, b, 0, 4, 1, 10, 40*ms, ms, false)
	expect(t, c, "0/3/0 0/3/1 0/3/2end 0/4/0")
	if c.Skips() != 0 {
		t.Fatalf("%d skips", c.Skips())
	}
}

func TestCursorFromOldestStartsAtTheOldestGroupWithinMaxLag(t *testing.T) {
	b := New("c", Limits{})
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b, 0, 1, 2, 10, 0, ms, true)        // arrived 3 s before the newest object: too old
	addGroup(t, b, 0, 2, 2, 10, 1500*ms, ms, true)  // 1.5 s before
	addGroup(t, b, 0, 3, 2, 10, 2990*ms, ms, false) // the newest
	c := b.NewCursor(CursorConfig{FromOldest: true})
	expect(t, c, "cat1 0/2/0 0/2/1 0/2/2end 0/3/0 0/3/1")
	if c.Skips() != 0 {
		t.Fatalf("%d skips", c.Skips())
	}
}

func TestCursorBeforeAnyGroup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New("c", Limits{})
		c := b.NewCursor(CursorConfig{})
		var got string
		var err error
		done := make(chan struct{})
		go func() {
			var items []Item
			items, err = c.Next(context.Background())
			got = describe(items)
			close(done)
		}()
		synctest.Wait()
		b.SetCatalog(testCatalog(t, 1, 1)) // a catalog alone is nothing to send
		synctest.Wait()
		select {
		case <-done:
			t.Fatalf("Next returned %q, %v before any object", got, err)
		default:
		}
		b.Append(object(0, 9, 0, wire.FlagKeyframe, 0, 10))
		<-done
		if err != nil || got != "cat1 0/9/0" {
			t.Fatalf("Next = %q, %v", got, err)
		}
	})
}

func TestCursorNextWaitsForAppend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New("c", Limits{})
		b.SetCatalog(testCatalog(t, 1, 1))
		addGroup(t, b, 0, 1, 1, 10, 0, 0, false)
		c := b.NewCursor(CursorConfig{})
		expect(t, c, "cat1 0/1/0")

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		type result struct {
			items string
			err   error
			at    time.Time
		}
		res := make(chan result, 1)
		start := time.Now()
		go func() {
			items, err := c.Next(ctx)
			res <- result{describe(items), err, time.Now()}
		}()
		synctest.Wait() // Next is blocked
		time.Sleep(3 * time.Second)
		b.Append(object(0, 1, 1, 0, 1, 10))
		r := <-res
		if r.err != nil || r.items != "0/1/1" || r.at.Sub(start) != 3*time.Second {
			t.Fatalf("Next = %q, %v after %s", r.items, r.err, r.at.Sub(start))
		}
	})
}

func TestCursorNextReturnsOnCancelAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New("c", Limits{})
		b.SetCatalog(testCatalog(t, 1, 1))
		addGroup(t, b, 0, 1, 1, 10, 0, 0, false)
		c := b.NewCursor(CursorConfig{})
		expect(t, c, "cat1 0/1/0")

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := c.Next(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 5*time.Second {
			t.Fatalf("Next = %v after %s, want the deadline after 5s", err, time.Since(start))
		}

		errc := make(chan error, 1)
		go func() {
			_, err := c.Next(context.Background())
			errc <- err
		}()
		synctest.Wait()
		b.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close = %v, want ErrClosed", err)
		}
		if _, err := c.Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next on a closed broadcast = %v", err)
		}
		// A new cursor on a closed broadcast, too.
		if _, err := b.NewCursor(CursorConfig{}).Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("new cursor: %v", err)
		}
	})
}

func TestCursorCatalogOnEpochChange(t *testing.T) {
	b := New("c", Limits{})
	b.SetCatalog(testCatalog(t, 1, 2))
	addGroup(t, b, 0, 1, 2, 10, 0, ms, true)
	addGroup(t, b, 1, 1, 1, 10, 0, ms, false)
	c := b.NewCursor(CursorConfig{})
	expect(t, c, "cat1 0/1/0 0/1/1 0/1/2end 1/1/0") // one catalog for both tracks
	c2 := testCatalog(t, 2, 1)
	b.SetCatalog(c2)
	nothingReady(t, c) // a new catalog is sent with the first object of its epoch
	addGroup(t, b, 0, 2, 2, 10, 10*ms, ms, false)
	items, err := c.Next(context.Background())
	if err != nil || describe(items) != "cat2 0/2/0 0/2/1" || items[0].Catalog != c2 {
		t.Fatalf("Next = %q, %v", describe(items), err)
	}
	// The catalog item carries the init frames of the epoch.
	if in := items[0].Catalog.Inits; len(in) != 1 || in[0].Kind != wire.KindInit || string(in[0].Payload()) != "init of track 0 epoch 2" {
		t.Fatal("catalog item without its init frames")
	}
}

func TestCursorSkipsEvictedGroups(t *testing.T) {
	b := New("c", Limits{MaxGroups: 2})
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b, 0, 1, 2, 10, 0, ms, true)
	c := b.NewCursor(CursorConfig{})
	expect(t, c, "cat1 0/1/0 0/1/1 0/1/2end")
	// Three groups arrive before the reader comes back: group 2 is gone
	// from the cache by then.
	addGroup(t, b, 0, 2, 1, 10, 10*ms, ms, true)
	addGroup(t, b, 0, 3, 1, 10, 20*ms, ms, true)
	addGroup(t, b, 0, 4, 1, 10, 30*ms, ms, false)
	if got := fmt.Sprint(seqs(b, 0)); got != "[3 4]" {
		t.Fatalf("cache %s", got)
	}
	expect(t, c, "skip0:2-3 0/3/0 0/3/1end 0/4/0")
	if c.Skips() != 1 {
		t.Fatalf("%d skips", c.Skips())
	}
}

func TestCursorSkipsToNewestWhenLagging(t *testing.T) {
	b := New("c", Limits{})
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b, 0, 1, 1, 10, 0, 0, false)
	c := b.NewCursor(CursorConfig{MaxLag: time.Second})
	expect(t, c, "cat1 0/1/0")
	// The reader is slow: group 1 goes on, then groups 2 and 3 arrive.
	// The next object to send (1/1 at 0.1 s) is more than 1 s older than
	// the newest (3/2 at 1.7 s).
	b.Append(object(0, 1, 1, 0, 100*ms, 10))
	b.Finish(0, 1, 200*ms)
	addGroup(t, b, 0, 2, 3, 10, 500*ms, 100*ms, true)
	addGroup(t, b, 0, 3, 3, 10, 1500*ms, 100*ms, false)
	expect(t, c, "skip0:1-3 0/3/0 0/3/1 0/3/2")
	if c.Skips() != 1 {
		t.Fatalf("%d skips", c.Skips())
	}

	// Within MaxLag nothing is skipped.
	b2 := New("c2", Limits{})
	b2.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b2, 0, 1, 1, 10, 0, 0, false)
	c2 := b2.NewCursor(CursorConfig{MaxLag: time.Second})
	expect(t, c2, "cat1 0/1/0")
	b2.Append(object(0, 1, 1, 0, 100*ms, 10))
	b2.Finish(0, 1, 200*ms)
	addGroup(t, b2, 0, 2, 3, 10, 500*ms, 100*ms, true)
	addGroup(t, b2, 0, 3, 2, 10, 1000*ms, 100*ms, false) // newest at 1.1 s: 1.0 s behind
	expect(t, c2, "0/1/1 0/1/2end 0/2/0 0/2/1 0/2/2 0/2/3end 0/3/0 0/3/1")
}

func TestCursorTooSlow(t *testing.T) {
	b := New("c", Limits{})
	b.SetCatalog(testCatalog(t, 1, 1))
	c := b.NewCursor(CursorConfig{MaxLag: time.Second, MaxSkips: 2, SkipWindow: 10 * time.Second})
	now := int64(0)
	c.now = func() int64 { return now }

	// Each round: the reader gets the start of group seq, falls 2 s behind
	// and is skipped to group seq+1.
	arrival := int64(0)
	round := func(seq uint64) ([]Item, error) {
		t.Helper()
		b.Append(object(0, seq, 1, 0, arrival+10*ms, 10))
		b.Finish(0, seq, arrival+20*ms)
		addGroup(t, b, 0, seq+1, 2, 10, arrival+2000*ms, 10*ms, false)
		arrival += 2000 * ms
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return c.Next(ctx)
	}
	addGroup(t, b, 0, 1, 1, 10, arrival, 0, false)
	expect(t, c, "cat1 0/1/0")

	for i, ca := range []struct {
		now   time.Duration
		want  string
		err   error
		skips int
	}{
		{0, "skip0:1-2 0/2/0 0/2/1", nil, 1},
		{5 * time.Second, "skip0:2-3 0/3/0 0/3/1", nil, 2},
		{20 * time.Second, "skip0:3-4 0/4/0 0/4/1", nil, 1}, // the first two fell out of the window
		{25 * time.Second, "skip0:4-5 0/5/0 0/5/1", nil, 2},
		{29 * time.Second, "skip0:5-6", ErrTooSlow, 3}, // a third within 10 s
	} {
		now = int64(ca.now)
		items, err := round(uint64(i + 1))
		if !errors.Is(err, ca.err) || (err == nil) != (ca.err == nil) || describe(items) != ca.want || c.Skips() != ca.skips {
			t.Fatalf("round %d: %q, %v, %d skips; want %q, %v, %d skips", i, describe(items), err, c.Skips(), ca.want, ca.err, ca.skips)
		}
	}
	// The error sticks.
	if _, err := c.Next(context.Background()); !errors.Is(err, ErrTooSlow) {
		t.Fatalf("Next after ErrTooSlow: %v", err)
	}
}

func TestCursorMaxBatch(t *testing.T) {
	b := New("c", Limits{})
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b, 0, 1, 6, 10, 0, ms, true)
	c := b.NewCursor(CursorConfig{MaxBatch: 3})
	expect(t, c, "cat1 0/1/0 0/1/1")
	expect(t, c, "0/1/2 0/1/3 0/1/4")
	expect(t, c, "0/1/5 0/1/6end")
	nothingReady(t, c)
}

func TestCursorObjectsAreShared(t *testing.T) {
	// Every cursor gets the same *Object: the frame is built once.
	b := New("c", Limits{})
	b.SetCatalog(testCatalog(t, 1, 1))
	addGroup(t, b, 0, 1, 2, 100, 0, ms, false)
	c1, c2 := b.NewCursor(CursorConfig{}), b.NewCursor(CursorConfig{})
	ctx := context.Background()
	i1, _ := c1.Next(ctx)
	i1 = append([]Item(nil), i1...)
	i2, _ := c2.Next(ctx)
	if len(i1) != 3 || len(i2) != 3 {
		t.Fatalf("%d and %d items", len(i1), len(i2))
	}
	for k := range i1 {
		if i1[k] != i2[k] {
			t.Fatalf("item %d differs between cursors", k)
		}
	}
	if &i1[1].Object.WebSocketMessage()[0] != &i2[1].Object.WebSocketMessage()[0] {
		t.Fatal("message bytes copied per cursor")
	}
}
