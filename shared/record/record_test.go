package record

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/testenv"
	"github.com/quiccast/quiccast/shared/wire"
)

// feeder publishes the built-in clip into a media.Broadcast the way the
// origin's session does: a catalog per epoch, a group per keyframe.
type feeder struct {
	t     *testing.T
	b     *media.Broadcast
	c     *clip.Clip
	group uint64
	index uint32
	open  bool
	loop  uint64
	epoch uint64
	r     *Recorder // when set, the first object waits until r's writer saw it
	seen  bool
}

func newFeeder(t *testing.T, name string) *feeder {
	c, err := clip.Demo()
	if err != nil {
		t.Fatal(err)
	}
	b := media.New(name, media.Limits{MaxGroups: 10000, MaxBytes: 1 << 30, MaxAge: time.Hour})
	t.Cleanup(b.Close)
	return &feeder{t: t, b: b, c: c, group: 100}
}

// epochStart sets a new catalog (a publisher (re)connecting).
func (f *feeder) epochStart() {
	f.t.Helper()
	f.finish()
	f.epoch++
	p := f.c.Init.PrimaryTrak()
	cat, err := media.NewCatalog(wire.Catalog{Broadcast: f.b.Name, Epoch: f.epoch, Tracks: []wire.TrackInfo{{ID: 0, Kind: f.c.Init.Kind(), Codec: f.c.Init.Codec(), Timescale: p.Timescale}}}, [][]byte{f.c.Init.Data})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.b.SetCatalog(cat); err != nil {
		f.t.Fatal(err)
	}
}

func (f *feeder) finish() {
	if f.open {
		f.b.Finish(0, f.group, time.Now().UnixNano())
		f.open = false
	}
}

// loops appends n whole loops of the clip (6 groups of 32 frames each).
// Decode times keep rising unless restart is set (then they start again
// at the clip's own, as a restarted encoder's would).
func (f *feeder) loops(n int, restart bool) {
	f.t.Helper()
	if restart {
		f.loop = 0
	}
	for range n {
		for _, ch := range f.c.Chunks {
			data := append([]byte(nil), ch.Data...)
			dt := ch.DecodeTime + f.loop*f.c.Period[f.c.Init.PrimaryTrak().ID]
			if err := shift(data, f.c, f.loop); err != nil {
				f.t.Fatal(err)
			}
			h := wire.Header{Kind: wire.KindObject, Track: 0, DecodeTime: dt, Capture: time.Now().UnixMicro()}
			if ch.Keyframe {
				f.finish()
				f.group++
				f.index = 0
				f.open = true
				h.Flags |= wire.FlagKeyframe
			} else {
				f.index++
			}
			h.Group, h.Index = f.group, f.index
			if err := f.b.Append(media.NewObject(h, data, time.Now().UnixNano())); err != nil {
				f.t.Fatal(err)
			}
			if f.r != nil && !f.seen {
				// A recorder starts at the group that is newest when
				// it first looks: let it look before feeding faster
				// than real time.
				testenv.WaitFor(f.t, 5*time.Second, "the recorder at the first group", func() bool {
					f.r.mu.Lock()
					defer f.r.mu.Unlock()
					w := f.r.active[f.b.Name]
					if w == nil {
						return false
					}
					w.mu.Lock()
					defer w.mu.Unlock()
					return w.objects > 0
				})
				f.seen = true
			}
		}
		f.loop++
	}
	f.finish()
}

// shift moves a chunk of the clip loop periods later.
func shift(data []byte, c *clip.Clip, loop uint64) error {
	return cmaf.ShiftDecodeTimes(data, func(id uint32) uint64 { return loop * c.Period[id] })
}

// groupsPerLoop is the clip's keyframe count (192 frames, GOP 32).
const groupsPerLoop = 6

func testRecorder(t *testing.T, cfg Config) (*Recorder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Metrics = NewMetrics(reg)
	cfg.Logger = (&testenv.Logs{}).Logger()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, reg
}

func status(r *Recorder, name string) Status {
	for _, s := range r.List() {
		if s.Broadcast == name {
			return s
		}
	}
	return Status{}
}

func only(t *testing.T, dir string) *Recording {
	t.Helper()
	recs, err := List(dir)
	if err != nil || len(recs) != 1 {
		t.Fatalf("recordings: %d, %v; want 1", len(recs), err)
	}
	return recs[0]
}

func TestRecordsOneSegmentPerGroupAndEndsWithTheBroadcast(t *testing.T) {
	r, reg := testRecorder(t, Config{Always: true})
	f := newFeeder(t, "cams/one")
	r.Live(f.b)
	f.r = r
	testenv.WaitFor(t, 5*time.Second, "recording active", func() bool { return status(r, "cams/one").Active })
	f.epochStart()
	f.loops(2, false)
	testenv.WaitFor(t, 10*time.Second, "12 segments", func() bool { return status(r, "cams/one").Segments == 2*groupsPerLoop })
	f.b.Close()
	testenv.WaitFor(t, 5*time.Second, "recording ended", func() bool { return !status(r, "cams/one").Active })
	rec := only(t, r.Dir())
	if rec.Name != "cams/one" || !rec.Ended || len(rec.Segments) != 12 || len(rec.Inits) != 1 {
		t.Fatalf("recording %+v", rec)
	}
	if d := rec.Duration(); d < 12800*time.Millisecond-time.Millisecond || d > 12800*time.Millisecond+time.Millisecond {
		t.Fatalf("duration %v, want 12.8 s (two loops of the clip)", d)
	}
	for i, s := range rec.Segments {
		if s.Disc {
			t.Fatalf("segment %d marked discontinuous in a continuous stream", i)
		}
		if i > 0 && s.DTS != rec.Segments[i-1].DTS+rec.Segments[i-1].Dur {
			t.Fatalf("segment %d starts at %d, previous ended at %d", i, s.DTS, rec.Segments[i-1].DTS+rec.Segments[i-1].Dur)
		}
	}
	if got := testenv.Metric(t, reg, "quiccast_record_segments_total"); got != 12 {
		t.Fatalf("segments metric %v", got)
	}
	if got := testenv.Metric(t, reg, "quiccast_record_bytes_total"); got != float64(rec.Bytes()) {
		t.Fatalf("bytes metric %v, recording %d", got, rec.Bytes())
	}
}

func TestSegmentDurationJoinsGroups(t *testing.T) {
	r, _ := testRecorder(t, Config{Always: true, Segment: 2 * time.Second})
	f := newFeeder(t, "joined")
	r.Live(f.b)
	f.r = r
	f.epochStart()
	f.loops(2, false) // 12 groups of 1.0667 s: segments of 2 groups
	testenv.WaitFor(t, 10*time.Second, "6 segments", func() bool { return status(r, "joined").Segments == 6 })
	f.b.Close()
	testenv.WaitFor(t, 5*time.Second, "ended", func() bool { return !status(r, "joined").Active })
	for _, s := range only(t, r.Dir()).Segments {
		if d := s.Duration(); d < 2*time.Second || d > 2200*time.Millisecond {
			t.Fatalf("segment %d of %v", s.N, d)
		}
	}
}

func TestReconnectIsOneRecordingWithADiscontinuity(t *testing.T) {
	r, _ := testRecorder(t, Config{Pattern: "other,re*"})
	f := newFeeder(t, "reconnect")
	r.Live(f.b)
	f.r = r
	f.epochStart()
	f.loops(1, false)
	f.epochStart() // the publisher came back within the grace period
	f.loops(1, true)
	testenv.WaitFor(t, 10*time.Second, "12 segments", func() bool { return status(r, "reconnect").Segments == 12 })
	f.b.Close()
	testenv.WaitFor(t, 5*time.Second, "ended", func() bool { return !status(r, "reconnect").Active })
	rec := only(t, r.Dir())
	if len(rec.Inits) != 2 {
		t.Fatalf("%d inits, want 2", len(rec.Inits))
	}
	var discs []int
	for i, s := range rec.Segments {
		if s.Disc {
			discs = append(discs, i)
		}
	}
	if len(discs) != 1 || discs[0] != 6 || rec.Segments[6].Init != 2 {
		t.Fatalf("discontinuities at %v, want [6] with init 2", discs)
	}
}

func TestNotRecordedUnlessAsked(t *testing.T) {
	r, _ := testRecorder(t, Config{Pattern: "cams/*"})
	f := newFeeder(t, "other/x")
	r.Live(f.b)
	f.r = r
	if st := status(r, "other/x"); st.Active {
		t.Fatal("recording a broadcast the pattern does not match")
	}
	if err := r.Start("nope"); !errors.Is(err, ErrNotLive) {
		t.Fatalf("Start of an unknown broadcast: %v", err)
	}
	if err := r.Start("other/x"); err != nil {
		t.Fatal(err)
	}
	f.r = r
	if err := r.Start("other/x"); !errors.Is(err, ErrRecording) {
		t.Fatalf("second Start: %v", err)
	}
	f.epochStart()
	f.loops(1, false)
	testenv.WaitFor(t, 10*time.Second, "6 segments", func() bool { return status(r, "other/x").Segments == 6 })
	if !r.Stop("other/x") {
		t.Fatal("Stop found no recording")
	}
	if st := status(r, "other/x"); st.Active || st.State != "stopped" || st.Segments != 6 {
		t.Fatalf("after Stop: %+v", st)
	}
	if !only(t, r.Dir()).Ended {
		t.Fatal("stopped recording not marked ended")
	}
}

func TestFreeSpaceFloorRefusesAndStops(t *testing.T) {
	var free atomic.Int64
	free.Store(100 << 20)
	r, reg := testRecorder(t, Config{Always: true, MinFree: 50 << 20, FreeSpace: func(string) (int64, error) { return free.Load(), nil }})
	f := newFeeder(t, "floor")
	r.Live(f.b)
	f.r = r
	f.epochStart()
	f.loops(1, false)
	testenv.WaitFor(t, 10*time.Second, "6 segments", func() bool { return status(r, "floor").Segments == 6 })
	free.Store(10 << 20) // the disk fills up (someone else's files)
	f.loops(1, false)
	testenv.WaitFor(t, 10*time.Second, "recording stopped", func() bool { return !status(r, "floor").Active })
	if st := status(r, "floor"); !strings.Contains(st.State, "below the floor") || st.Segments != 6 {
		t.Fatalf("status %+v", st)
	}
	// A new recording is refused, and says why.
	err := r.Start("floor")
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Start below the floor: %v", err)
	}
	if st := status(r, "floor"); !strings.HasPrefix(st.State, "refused: ") {
		t.Fatalf("status %+v", st)
	}
	if got := testenv.Metric(t, reg, "quiccast_record_refused_total"); got != 2 {
		t.Fatalf("refused metric %v, want 2", got)
	}
	if got := testenv.Metric(t, reg, "quiccast_record_disk_free_bytes"); got != 10<<20 {
		t.Fatalf("disk free metric %v", got)
	}
	free.Store(100 << 20)
	if err := r.Start("floor"); err != nil {
		t.Fatalf("Start above the floor: %v", err)
	}
}

// TestRealStatfsFloor checks the default FreeSpace against the real
// filesystem: a floor above what the disk has refuses.
func TestRealStatfsFloor(t *testing.T) {
	dir := t.TempDir()
	free, err := Statfs(dir)
	if err != nil || free <= 0 {
		t.Fatalf("statfs: %d, %v", free, err)
	}
	r, _ := testRecorder(t, Config{Dir: dir, MinFree: free + 1<<40})
	f := newFeeder(t, "big")
	r.Live(f.b)
	f.r = r
	if err := r.Start("big"); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Start with a floor above the disk: %v", err)
	}
}

// crashed records a loop and leaves the recording as a killed process
// would: no end line, a partial index line, a segment file never indexed.
func crashed(t *testing.T, dir string) *Recording {
	t.Helper()
	r, _ := testRecorder(t, Config{Dir: dir, Always: true})
	f := newFeeder(t, "crash")
	r.Live(f.b)
	f.r = r
	f.epochStart()
	f.loops(1, false)
	testenv.WaitFor(t, 10*time.Second, "6 segments", func() bool { return status(r, "crash").Segments == 6 })
	rec := only(t, dir)
	// What a SIGKILL leaves cannot be made in-process without killing
	// the writer: build it from the recording.
	idx := filepath.Join(rec.Dir, IndexFile)
	data, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := os.WriteFile(idx, append(data, `{"t":"seg","n":7,"fi`...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rec.Dir, "seg-00000007.m4s"), []byte("half a group"), 0o644); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestRestartRepairsACrashedRecording(t *testing.T) {
	dir := t.TempDir()
	before := crashed(t, dir)
	if got := only(t, dir); len(got.Segments) != 6 || !got.torn {
		t.Fatalf("before repair: %d segments, torn %v", len(got.Segments), got.torn)
	}
	testRecorder(t, Config{Dir: dir}) // a restart
	rec := only(t, dir)
	if rec.torn || len(rec.Segments) != 6 || rec.Duration() != before.Duration() || !rec.Ended {
		t.Fatalf("after repair: torn %v, %d segments, %v, ended %v", rec.torn, len(rec.Segments), rec.Duration(), rec.Ended)
	}
	if _, err := os.Stat(filepath.Join(rec.Dir, "seg-00000007.m4s")); !os.IsNotExist(err) {
		t.Fatalf("unindexed segment kept: %v", err)
	}
	// The index takes appends again after the repair (retention's trims).
	if err := appendIndex(rec.Dir, line{T: "trim", N: 2}); err != nil {
		t.Fatal(err)
	}
	if rec := only(t, dir); len(rec.Segments) != 5 || rec.torn {
		t.Fatalf("after a trim: %d segments, torn %v", len(rec.Segments), rec.torn)
	}
}

// fakeRecording writes a recording of n one-second segments of size
// bytes, the first starting at start.
func fakeRecording(t *testing.T, root, name string, start time.Time, n int, size int64, ended bool) string {
	t.Helper()
	dir := filepath.Join(root, name, start.UTC().Format(idLayout))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	iw, err := createIndex(dir, line{T: "rec", Name: name, Started: start.UnixMicro()})
	if err != nil {
		t.Fatal(err)
	}
	defer iw.close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "init-1.mp4"), make([]byte, 100), 0o644))
	must(iw.append(line{T: "init", N: 1, File: "init-1.mp4", Bytes: 100}))
	for i := 1; i <= n; i++ {
		file := filepath.Join(dir, segName(i))
		must(os.WriteFile(file, make([]byte, size), 0o644))
		must(iw.append(line{T: "seg", N: i, Init: 1, File: segName(i), Start: start.Add(time.Duration(i-1) * time.Second).UnixMicro(), Dur: 90000, TS: 90000, Bytes: size}))
	}
	if ended {
		must(iw.append(line{T: "end"}))
	}
	return dir
}

func segName(i int) string { return "seg-" + strings.Repeat("0", 8-len(itoa(i))) + itoa(i) + ".m4s" }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestRetentionByAge(t *testing.T) {
	root := t.TempDir()
	now := time.Now()
	old := fakeRecording(t, root, "a", now.Add(-3*time.Hour), 10, 1000, true)
	mixed := fakeRecording(t, root, "b/c", now.Add(-time.Hour-4500*time.Millisecond), 10, 1000, true)
	fresh := fakeRecording(t, root, "a", now.Add(-time.Minute), 10, 1000, true)
	r, reg := testRecorder(t, Config{Dir: root, RetentionAge: time.Hour})
	r.Retain()
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("recording older than the retention age kept: %v", err)
	}
	m, err := Load(mixed)
	if err != nil {
		t.Fatal(err)
	}
	// Segments 1..4 ended more than an hour ago (the 4th at -1h-1s).
	if len(m.Segments) != 6 || m.Segments[0].N != 5 {
		t.Fatalf("partly old recording: %d segments from %d, want 6 from 5", len(m.Segments), m.Segments[0].N)
	}
	for i := 1; i <= 4; i++ {
		if _, err := os.Stat(filepath.Join(mixed, segName(i))); !os.IsNotExist(err) {
			t.Fatalf("segment %d file kept", i)
		}
	}
	if f, err := Load(fresh); err != nil || len(f.Segments) != 10 {
		t.Fatalf("fresh recording touched: %v", err)
	}
	if got := testenv.Metric(t, reg, "quiccast_record_deleted_segments_total"); got != 14 {
		t.Fatalf("deleted metric %v, want 14", got)
	}
}

func TestRetentionByBytesDeletesOldestFirst(t *testing.T) {
	root := t.TempDir()
	now := time.Now()
	a := fakeRecording(t, root, "a", now.Add(-10*time.Minute), 10, 1000, true) // 10,100 bytes
	b := fakeRecording(t, root, "b", now.Add(-5*time.Minute), 10, 1000, false) // 10,100 bytes, not ended (crashed)
	r, _ := testRecorder(t, Config{Dir: root, RetentionBytes: 15000})
	r.Retain()
	ra, err := Load(a)
	if err != nil || len(ra.Segments) != 4 || ra.Segments[0].N != 7 {
		t.Fatalf("oldest recording after a 15,000-byte bound: %v, want segments 7..10", err)
	}
	rb, err := Load(b)
	if err != nil || len(rb.Segments) != 10 {
		t.Fatalf("newer recording: %v", err)
	}
	r2, _ := testRecorder(t, Config{Dir: root, RetentionBytes: 5000})
	r2.Retain()
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("emptied recording kept: %v", err)
	}
	rb, err = Load(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := rb.Bytes(); got > 5000 || len(rb.Segments) != 4 || rb.Segments[0].N != 7 {
		t.Fatalf("after a 5,000-byte bound: %d bytes, %d segments", got, len(rb.Segments))
	}
}

// TestSlowDiskMarksAGapAndNeverBlocksThePublisher stalls the recorder's
// disk for a whole segment while the publisher sends twelve more groups
// into a cache of eight: every append returns at once, the recorder
// resumes at what the cache still holds, and the recording marks the gap.
func TestSlowDiskMarksAGapAndNeverBlocksThePublisher(t *testing.T) {
	r, reg := testRecorder(t, Config{Always: true})
	stall, resume := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	r.beforeSync = func() {
		if once.CompareAndSwap(false, true) {
			close(stall)
			<-resume
		}
	}
	f := newFeeder(t, "slow")
	f.b = media.New("slow", media.Limits{MaxGroups: 8, MaxBytes: 1 << 30, MaxAge: time.Hour})
	t.Cleanup(f.b.Close)
	r.Live(f.b)
	f.r = r
	f.epochStart()
	f.loops(1, false) // 6 groups; the first segment's sync stalls
	<-stall
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.loops(2, false) // 12 more groups while the disk is stuck
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher was blocked by a stuck recorder")
	}
	close(resume)
	testenv.WaitFor(t, 10*time.Second, "the recorder caught up", func() bool {
		st := status(r, "slow")
		return st.Gaps == 1 && st.Segments >= 9
	})
	f.b.Close()
	testenv.WaitFor(t, 5*time.Second, "ended", func() bool { return !status(r, "slow").Active })
	rec := only(t, r.Dir())
	// The groups evicted while the disk was stuck are missing, once, and
	// the segment after the hole says so.
	var discs int
	for i, s := range rec.Segments {
		if s.Disc {
			discs++
			prev := rec.Segments[i-1]
			if s.DTS == prev.DTS+prev.Dur {
				t.Fatalf("segment %d marked discontinuous but continues segment %d", s.N, prev.N)
			}
		}
	}
	if discs != 1 || len(rec.Segments) < 9 || len(rec.Segments) > 17 {
		t.Fatalf("%d segments of 18 groups, %d discontinuities, want one hole", len(rec.Segments), discs)
	}
	if got := testenv.Metric(t, reg, "quiccast_record_gaps_total"); got != 1 {
		t.Fatalf("gaps metric %v", got)
	}
}
