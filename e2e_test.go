package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/origin"
	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/publish"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/viewer"
	"github.com/quiccast/quiccast/shared/wire"
)

// startDemo runs origin + edge (and the built-in clip when name is set) on
// free loopback ports until the test ends.
func startDemo(t *testing.T, name string) (*demo, *testenv.Logs) {
	t.Helper()
	return runDemoFor(t, demoConfig{Name: name})
}

// runDemoFor runs a demo on free loopback ports until the test ends.
func runDemoFor(t *testing.T, cfg demoConfig) (*demo, *testenv.Logs) {
	t.Helper()
	logs := &testenv.Logs{}
	cfg.Listen, cfg.OriginListen, cfg.Logger = "127.0.0.1:0", "127.0.0.1:0", logs.Logger()
	d, err := newDemo(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, d.run)
	return d, logs
}

// sentMedia records what a publisher sent, by decode time.
type sentMedia struct {
	mu     sync.Mutex
	init   *cmaf.Init
	chunks map[uint64]*cmaf.Chunk
}

func (s *sentMedia) onInit(in *cmaf.Init) { s.mu.Lock(); s.init = in; s.mu.Unlock() }
func (s *sentMedia) onChunk(c *cmaf.Chunk) {
	s.mu.Lock()
	s.chunks[c.DecodeTime] = c
	s.mu.Unlock()
}

// awaitRecorded waits (up to 10 s) until the publisher has recorded every
// object in evs: it records a chunk after writing it, by which time a
// viewer may already have it. A chunk never published stays missing, and
// checkViewer says which.
func (s *sentMedia) awaitRecorded(evs ...[]viewer.Event) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		missing := false
		s.mu.Lock()
		for _, e := range evs {
			for _, ev := range e {
				if ev.Control == nil && ev.Header.Kind == wire.KindObject && len(ev.Payload) > 0 && s.chunks[ev.Header.DecodeTime] == nil {
					missing = true
				}
			}
		}
		s.mu.Unlock()
		if !missing {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watch collects a viewer's events for d.
func watch(ctx context.Context, url string, d time.Duration) ([]viewer.Event, error) {
	c, err := viewer.Dial(ctx, url, "")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var evs []viewer.Event
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		ev, err := c.Next(time.Until(end) + 50*time.Millisecond)
		if err != nil {
			if time.Now().After(end) {
				break
			}
			return evs, err
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// checkViewer checks a viewer's events against what the publisher sent:
// catalog, then the init segment, then whole groups that start at a
// keyframe, objects in order, payloads byte-exact.
func checkViewer(t *testing.T, who string, evs []viewer.Event, sent *sentMedia, started time.Time) (groups int) {
	t.Helper()
	sent.mu.Lock()
	defer sent.mu.Unlock()
	if len(evs) < 3 {
		t.Fatalf("%s: only %d events", who, len(evs))
	}
	if c := evs[0].Control; c == nil || c.Type != wire.MsgCatalog || !strings.HasPrefix(c.Catalog.Tracks[0].Codec, "avc1.") || !strings.Contains(c.Catalog.Tracks[0].Codec, "mp4a.40.2") {
		t.Fatalf("%s: first event %+v, want a catalog with avc1 and mp4a.40.2", who, evs[0].Control)
	}
	if evs[1].Control != nil || evs[1].Header.Kind != wire.KindInit || !bytes.Equal(evs[1].Payload, sent.init.Data) {
		t.Fatalf("%s: second event is not the publisher's init segment", who)
	}
	var group uint64
	var next uint32
	open := false
	objects := 0
	for i, ev := range evs[2:] {
		if ev.Control != nil {
			t.Fatalf("%s: unexpected control message %+v", who, ev.Control)
		}
		h := ev.Header
		if h.Kind != wire.KindObject {
			t.Fatalf("%s: event %d is a %s frame", who, i, h.Kind)
		}
		if h.Flags&wire.FlagKeyframe != 0 {
			if h.Index != 0 {
				t.Fatalf("%s: keyframe object with index %d", who, h.Index)
			}
			if groups > 0 && (open || h.Group != group+1) {
				t.Fatalf("%s: group %d starts after group %d (still open: %v)", who, h.Group, group, open)
			}
			group, next, open = h.Group, 0, true
			groups++
		} else if groups == 0 {
			t.Fatalf("%s: first object (group %d index %d) is not a keyframe", who, h.Group, h.Index)
		}
		if !open || h.Group != group || h.Index != next {
			t.Fatalf("%s: got group %d object %d, want group %d object %d (open %v)", who, h.Group, h.Index, group, next, open)
		}
		next++
		if h.Flags&wire.FlagEndOfGroup != 0 {
			if len(ev.Payload) != 0 {
				t.Fatalf("%s: end-of-group marker with a payload", who)
			}
			open = false
			continue
		}
		c, ok := sent.chunks[h.DecodeTime]
		if !ok {
			t.Fatalf("%s: object at decode time %d was never published", who, h.DecodeTime)
		}
		if !bytes.Equal(c.Data, ev.Payload) {
			t.Fatalf("%s: group %d object %d differs from the published chunk", who, h.Group, h.Index)
		}
		if c.Keyframe != (h.Flags&wire.FlagKeyframe != 0) {
			t.Fatalf("%s: group %d object %d keyframe flag %v, chunk keyframe %v", who, h.Group, h.Index, h.Flags&wire.FlagKeyframe != 0, c.Keyframe)
		}
		if capt := time.UnixMicro(h.Capture); capt.Before(started.Add(-time.Second)) || capt.After(time.Now()) {
			t.Fatalf("%s: capture wall-clock %v outside the test's run", who, capt)
		}
		objects++
	}
	if groups < 2 || objects < 20 {
		t.Fatalf("%s: saw %d groups and %d objects, want at least 2 and 20", who, groups, objects)
	}
	return groups
}

func TestFFmpegPublishReachesWebSocketViewersByteExact(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	d, _ := startDemo(t, "")
	started := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := &sentMedia{chunks: map[uint64]*cmaf.Chunk{}}
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- publish.Run(ctx, publish.Config{
			URL:  fmt.Sprintf("ws://%s/publish/e2e/cam", d.origin.Addr()),
			Size: "320x180", FPS: 30, Bitrate: "300k", GOP: 500 * time.Millisecond,
			OnInit: sent.onInit, OnChunk: sent.onChunk,
		})
	}()
	testenv.WaitFor(t, 15*time.Second, "the broadcast to start", func() bool {
		b, ok := d.origin.Lookup("e2e/cam")
		return ok && b.Latest(0) != nil
	})
	url := fmt.Sprintf("ws://%s/ws/e2e/cam", d.edge.Addr())
	type result struct {
		who string
		evs []viewer.Event
		err error
	}
	results := make(chan result, 4)
	for i := range 3 {
		go func() {
			evs, err := watch(ctx, url, 3*time.Second)
			results <- result{fmt.Sprintf("viewer %d", i), evs, err}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	go func() {
		evs, err := watch(ctx, url, 1500*time.Millisecond)
		results <- result{"late joiner", evs, err}
	}()
	var all []result
	for range 4 {
		all = append(all, <-results)
	}
	for _, r := range all {
		sent.awaitRecorded(r.evs)
	}
	cancel()
	if err := <-pubDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("publish: %v", err)
	}
	for _, r := range all {
		if r.err != nil {
			t.Fatalf("%s: %v", r.who, r.err)
		}
		checkViewer(t, r.who, r.evs, sent, started)
	}
	if n := testenv.Metric(t, d.edge.Registry(), "quiccast_edge_upstream_subscribes_total"); n != 1 {
		t.Errorf("edge made %v upstream subscriptions for 4 viewers of one broadcast, want 1", n)
	}
}

func TestPublishStdinSendsAStreamToItsEnd(t *testing.T) {
	d, _ := startDemo(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var chunks int
	err := publish.Run(ctx, publish.Config{
		URL:     fmt.Sprintf("ws://%s/publish/piped", d.origin.Addr()),
		Stream:  bytes.NewReader(clipBytes(t)),
		OnChunk: func(*cmaf.Chunk) { chunks++ },
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if chunks != 192 {
		t.Fatalf("sent %d chunks, want the clip's 192", chunks)
	}
	b, ok := d.origin.Lookup("piped")
	if !ok {
		t.Fatal("broadcast gone right after its publisher finished")
	}
	if gs := b.Groups(0); len(gs) == 0 || gs[len(gs)-1].Seq != gs[0].Seq+5 {
		t.Fatalf("groups %+v, want 6 groups of 32 chunks", gs)
	}
}

func TestPublishReconnectsWhenTheOriginComesBack(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	logs := &testenv.Logs{}
	o1, err := origin.New(origin.Config{Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0", Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := o1.Addr().String()
	ctx1, stop1 := context.WithCancel(context.Background())
	go o1.Run(ctx1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- publish.Run(ctx, publish.Config{
			URL: "ws://" + addr + "/publish/phoenix", Size: "160x90", Bitrate: "100k", GOP: 500 * time.Millisecond,
			MinBackoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Logger: logs.Logger(),
		})
	}()
	testenv.WaitFor(t, 15*time.Second, "the first origin to get groups", func() bool {
		b, ok := o1.Lookup("phoenix")
		return ok && b.Latest(0) != nil
	})
	stop1()
	o1.Close()
	o2, err := origin.New(origin.Config{Listen: addr, RelayListen: "127.0.0.1:0", Logger: logs.Logger()})
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	go o2.Run(ctx2)
	testenv.WaitFor(t, 10*time.Second, "the publisher to reconnect", func() bool {
		b, ok := o2.Lookup("phoenix")
		return ok && len(b.Groups(0)) >= 2
	})
	b, _ := o2.Lookup("phoenix")
	first := b.Groups(0)[0]
	objs, _ := b.Objects(first, 0, nil)
	if objs[0].Flags&wire.FlagKeyframe == 0 || objs[0].Flags&wire.FlagDiscontinuity == 0 {
		t.Fatalf("first object after reconnecting has flags %b, want keyframe and discontinuity", objs[0].Flags)
	}
	if len(logs.Lines("publish connection ended; reconnecting")) == 0 {
		t.Fatal("no reconnect logged")
	}
	cancel()
	<-pubDone
}

func clipBytes(t *testing.T) []byte {
	t.Helper()
	return clip.DemoBytes()
}
