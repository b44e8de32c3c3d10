// Package record writes live broadcasts to disk as fMP4/CMAF segments: one
// init segment per publisher epoch and one segment per group (or per
// configured duration), listed in an append-only index that is synced at
// every segment boundary, so a recording survives a crash up to its last
// whole segment. A recorder is a consumer of the broadcast's cache, like a
// viewer: it never slows the publisher, and when the disk is too slow it
// skips groups and marks the gap. Retention bounds the disk used by age and
// bytes, and no recording starts below a free-space floor.
package record

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/config"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/wire"
)

// Errors from Start.
var (
	ErrDiskFull  = errors.New("record: free disk space below the floor")
	ErrNotLive   = errors.New("record: no such live broadcast on this node")
	ErrRecording = errors.New("record: already recording")
	ErrOff       = errors.New("record: recording is not configured (-record-dir)")
	ErrClosed    = errors.New("record: closed")
)

// Config configures recording. A zero field means none (no retention, no
// free-space floor); the flags' defaults are set only by Flags.
type Config struct {
	// Dir is where recordings go: Dir/{broadcast}/{start}/. Empty
	// turns recording off.
	Dir string
	// Always records every broadcast; Pattern records those whose name
	// matches one of its comma-separated path.Match patterns.
	Always  bool
	Pattern string
	// Segment is the least duration of a segment; groups are joined
	// until it is reached. 0: one segment per group.
	Segment time.Duration
	// RetentionAge deletes segments older than this; 0 keeps them.
	RetentionAge time.Duration
	// RetentionBytes bounds the bytes of all recordings under Dir; the
	// oldest segments go first. 0: no bound.
	RetentionBytes int64
	// MinFree is the free space (bytes) below which no recording starts
	// and running ones stop.
	MinFree int64
	// Cursor sets when the recorder, falling behind (slow disk), skips to
	// newer groups.
	Cursor media.CursorConfig

	// FreeSpace returns the bytes free for dir; default statfs.
	FreeSpace func(dir string) (int64, error)
	Logger    *slog.Logger
	Metrics   *Metrics
}

// Flags declares the settings on s.
func (c *Config) Flags(s *config.Set) {
	s.String(&c.Dir, "record-dir", "", "directory for recordings (fMP4 segments + index per recording); empty turns recording off")
	s.Bool(&c.Always, "record", false, "record every broadcast (needs -record-dir)")
	s.String(&c.Pattern, "record-pattern", "", "record broadcasts whose name matches one of these comma-separated patterns (path.Match: cams/*)")
	s.Duration(&c.Segment, "record-segment", 0, "least duration of a recorded segment (whole groups are joined); 0: one segment per group")
	s.Duration(&c.RetentionAge, "record-retention-age", 7*24*time.Hour, "delete recorded segments older than this; 0 keeps them")
	s.Int64(&c.RetentionBytes, "record-retention-bytes", 0, "most bytes all recordings may use; the oldest segments are deleted first; 0: no bound")
	s.Int64(&c.MinFree, "record-min-free", 1<<30, "free bytes the recording disk must keep: no recording starts below this, running ones stop")
}

// Statfs returns the bytes an unprivileged user may still write in dir.
func Statfs(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Status is one recording as Recorder.List shows it.
type Status struct {
	Broadcast string    `json:"broadcast"`
	ID        string    `json:"id,omitempty"`
	Active    bool      `json:"active"`
	Started   time.Time `json:"started,omitzero"`
	Segments  int       `json:"segments"`
	Bytes     int64     `json:"bytes"`
	Gaps      int       `json:"gaps"`
	// State is "recording", "stopped", or why it ended or was refused.
	State string `json:"state"`
}

// Recorder records broadcasts. Safe for concurrent use.
type Recorder struct {
	cfg  Config
	log  *slog.Logger
	m    *Metrics
	pats []string

	mu     sync.Mutex
	live   map[string]*media.Broadcast // broadcasts this node holds
	active map[string]*writer          // by broadcast name
	last   map[string]Status           // the last recording (or refusal) of each name
	closed bool
	wg     sync.WaitGroup

	retainMu sync.Mutex // one Retain at a time

	// beforeSync, when set (tests), runs before each segment's fsync:
	// a slow disk.
	beforeSync func()
	stop       chan struct{}
}

// New returns a Recorder, or nil when cfg.Dir is empty. It repairs the
// recordings a previous run left (partial index lines, unindexed files)
// and starts retention.
func New(cfg Config) (*Recorder, error) {
	if cfg.Dir == "" {
		return nil, nil
	}
	if cfg.FreeSpace == nil {
		cfg.FreeSpace = Statfs
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	r := &Recorder{
		cfg: cfg, log: cfg.Logger.With("part", "record"), m: cfg.Metrics,
		live: map[string]*media.Broadcast{}, active: map[string]*writer{}, last: map[string]Status{},
		stop: make(chan struct{}),
	}
	for _, p := range strings.Split(cfg.Pattern, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("record: pattern %q: %w", p, err)
			}
			r.pats = append(r.pats, p)
		}
	}
	recs, err := List(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	for _, rec := range recs {
		if rec.torn || !rec.Ended {
			if _, err := repair(rec.Dir); err != nil {
				r.log.Warn("recording not repaired", "dir", rec.Dir, "err", err)
				continue
			}
			r.log.Info("recording recovered", "broadcast", rec.Name, "id", rec.ID, "segments", len(rec.Segments))
		}
	}
	r.m.setFree(r.free())
	r.wg.Add(1)
	go r.retain()
	return r, nil
}

// Dir returns the recordings directory.
func (r *Recorder) Dir() string { return r.cfg.Dir }

func (r *Recorder) free() int64 {
	f, err := r.cfg.FreeSpace(r.cfg.Dir)
	if err != nil {
		r.log.Warn("free space unknown", "dir", r.cfg.Dir, "err", err)
		return 0
	}
	return f
}

// wants reports whether name is recorded without being asked.
func (r *Recorder) wants(name string) bool {
	if r.cfg.Always {
		return true
	}
	for _, p := range r.pats {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Live tells the recorder that this node holds broadcast b from now until
// b closes; it starts recording b when the configuration says so. A nil
// Recorder does nothing.
func (r *Recorder) Live(b *media.Broadcast) {
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.live[b.Name] = b
	r.mu.Unlock()
	go func() {
		<-b.Done()
		r.mu.Lock()
		if r.live[b.Name] == b {
			delete(r.live, b.Name)
		}
		r.mu.Unlock()
	}()
	if r.wants(b.Name) {
		if err := r.Start(b.Name); err != nil && !errors.Is(err, ErrRecording) {
			r.log.Warn("recording not started", "broadcast", b.Name, "err", err)
		}
	}
}

// Start records the live broadcast name until it ends or Stop. It fails
// with ErrNotLive, ErrRecording, or ErrDiskFull (below the free-space
// floor, which is also logged and counted).
func (r *Recorder) Start(name string) error {
	if r == nil {
		return ErrOff
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	b := r.live[name]
	if b == nil || b.Closed() {
		return ErrNotLive
	}
	if r.active[name] != nil {
		return ErrRecording
	}
	if free := r.free(); free < r.cfg.MinFree {
		r.m.setFree(free)
		r.m.refused.Inc()
		state := fmt.Sprintf("refused: %d bytes free in %s, below the floor of %d (-record-min-free)", free, r.cfg.Dir, r.cfg.MinFree)
		r.last[name] = Status{Broadcast: name, State: state}
		r.log.Warn("recording refused: disk below the free-space floor", "broadcast", name, "free", free, "floor", r.cfg.MinFree, "dir", r.cfg.Dir)
		return fmt.Errorf("%w: %d bytes free, floor %d", ErrDiskFull, free, r.cfg.MinFree)
	}
	w, err := newWriter(r, b)
	if err != nil {
		r.m.errors.Inc()
		r.log.Warn("recording not started", "broadcast", name, "err", err)
		return err
	}
	r.active[name] = w
	r.m.active.Inc()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		state := w.run()
		r.mu.Lock()
		delete(r.active, name)
		st := w.status()
		st.Active, st.State = false, state
		r.last[name] = st
		r.mu.Unlock()
		r.m.active.Dec()
		close(w.ended)
		r.log.Info("recording ended", "broadcast", name, "id", w.id, "segments", st.Segments, "bytes", st.Bytes, "state", state)
	}()
	r.log.Info("recording started", "broadcast", name, "id", w.id, "dir", w.dir)
	return nil
}

// Active reports whether the recording id of broadcast name is being
// written.
func (r *Recorder) Active(name, id string) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.active[name]
	return w != nil && w.id == id
}

// Stop ends the recording of name, if any, and waits for its last segment
// to be written. It reports whether one was running.
func (r *Recorder) Stop(name string) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	w := r.active[name]
	r.mu.Unlock()
	if w == nil {
		return false
	}
	w.cancel()
	<-w.ended
	return true
}

// List returns the running recordings and the last one (or refusal) of
// every other broadcast seen, by name.
func (r *Recorder) List() []Status {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Status
	for _, w := range r.active {
		out = append(out, w.status())
	}
	for name, st := range r.last {
		if r.active[name] == nil {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Broadcast < out[j].Broadcast })
	return out
}

// Close stops every recording and retention, and waits for them.
func (r *Recorder) Close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	ws := make([]*writer, 0, len(r.active))
	for _, w := range r.active {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	close(r.stop)
	for _, w := range ws {
		w.cancel()
	}
	r.wg.Wait()
}

// writer is one running recording.
type writer struct {
	r      *Recorder
	b      *media.Broadcast
	id     string
	dir    string
	ctx    context.Context
	cancel context.CancelFunc
	ended  chan struct{} // closed once the recording ended and List shows it
	index  *indexWriter

	started time.Time

	// Under mu, for status and retention.
	mu       sync.Mutex
	objects  int // seen, for tests
	segments int
	bytes    int64
	gaps     int
	trimmed  int // segments below this N were deleted

	// The writer goroutine's own state.
	cat     *media.Catalog
	init    *cmaf.Init
	initN   int
	segN    int
	seg     *os.File
	segBuf  *bufio.Writer
	segName string
	cur     line   // the open segment
	last    []byte // the open segment's last chunk, for its duration
	group   uint64 // the last group written
	open    bool   // a segment is open
	inGroup bool   // the open segment's last group has not ended
	disc    bool   // the next segment starts after a discontinuity
	prevEnd uint64 // decode time where the last segment ended
	prevTS  uint32

	stopReason string // set when the recording must end (disk floor)
	inGap      bool   // a gap was counted and no segment opened since
}

func newWriter(r *Recorder, b *media.Broadcast) (*writer, error) {
	now := time.Now().UTC()
	id := now.Format(idLayout)
	dir := filepath.Join(r.cfg.Dir, filepath.FromSlash(b.Name), id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	iw, err := createIndex(dir, line{T: "rec", Name: b.Name, Started: now.UnixMicro()})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &writer{r: r, b: b, id: id, dir: dir, ctx: ctx, cancel: cancel, ended: make(chan struct{}), index: iw, started: now, disc: true}, nil
}

func (w *writer) status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Status{Broadcast: w.b.Name, ID: w.id, Active: true, Started: w.started, Segments: w.segments, Bytes: w.bytes, Gaps: w.gaps, State: "recording"}
}

// run records until the broadcast ends, Stop, or an error, and returns
// why it ended.
func (w *writer) run() (state string) {
	defer w.index.close()
	cc := w.r.cfg.Cursor
	cc.FromOldest = true // what the cache holds: an RTMP publisher's first seconds arrive at once
	cur := w.b.NewCursor(cc)
	state = "stopped"
	for {
		items, err := cur.Next(w.ctx)
		for _, it := range items {
			if err := w.item(it); err != nil {
				w.r.m.errors.Inc()
				w.r.log.Warn("recording failed", "broadcast", w.b.Name, "id", w.id, "err", err)
				w.abort()
				return "failed: " + err.Error()
			}
			if w.stopReason != "" {
				w.finish()
				return w.stopReason
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, media.ErrTooSlow):
			// The disk cannot keep up: start again at the live edge
			// and mark the gap.
			w.gap()
			cur = w.b.NewCursor(cc)
		case errors.Is(err, media.ErrClosed):
			w.finish()
			return "ended: the broadcast ended"
		default: // Stop or Close
			w.finish()
			return state
		}
	}
}

// item writes one thing the cursor gave.
func (w *writer) item(it media.Item) error {
	switch {
	case it.Catalog != nil:
		return w.catalog(it.Catalog)
	case it.Skip != nil:
		// Groups were dropped from the cache before the recorder got to
		// them: the open segment ends here.
		if err := w.closeSegment(); err != nil {
			return err
		}
		w.gap()
		return nil
	case it.Object != nil:
		return w.object(it.Object)
	}
	return nil
}

// gap marks groups not recorded; skips with no segment between them are
// one gap.
func (w *writer) gap() {
	w.disc = true
	w.inGroup = false
	if w.inGap {
		return
	}
	w.inGap = true
	w.mu.Lock()
	w.gaps++
	w.mu.Unlock()
	w.r.m.gaps.Inc()
}

// catalog starts a new epoch: its init segment is written and indexed.
func (w *writer) catalog(c *media.Catalog) error {
	if err := w.closeSegment(); err != nil {
		return err
	}
	data := c.Inits[0].Payload()
	in, err := cmaf.ParseInit(data)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	w.initN++
	name := fmt.Sprintf("init-%d.mp4", w.initN)
	if err := writeSynced(filepath.Join(w.dir, name), data); err != nil {
		return err
	}
	if err := w.index.append(line{T: "init", N: w.initN, File: name, Epoch: c.Epoch, Bytes: int64(len(data))}); err != nil {
		return err
	}
	w.cat, w.init, w.disc = c, in, true
	w.addBytes(int64(len(data)), 0)
	return nil
}

// object writes one chunk; a group's first chunk may open a segment, a
// group's end may close one.
func (w *writer) object(o *media.Object) error {
	w.mu.Lock()
	w.objects++
	w.mu.Unlock()
	if o.Track != 0 || w.init == nil {
		return nil
	}
	if o.Flags&wire.FlagKeyframe != 0 && o.Index == 0 {
		if w.open && (w.r.cfg.Segment <= 0 || w.segDuration() >= w.r.cfg.Segment) {
			if err := w.closeSegment(); err != nil {
				return err
			}
		}
		if !w.open {
			if err := w.openSegment(o); err != nil || !w.open {
				return err
			}
		}
		w.group, w.inGroup = o.Group, true
	} else if !w.open || o.Group != w.group || !w.inGroup {
		return nil // the rest of a group whose start was not recorded
	}
	if p := o.Payload(); len(p) > 0 {
		if _, err := w.segBuf.Write(p); err != nil {
			return err
		}
		w.cur.Bytes += int64(len(p))
		w.last = p
	}
	if o.Flags&wire.FlagEndOfGroup != 0 {
		w.inGroup = false
		if w.r.cfg.Segment <= 0 || w.segDuration() >= w.r.cfg.Segment {
			return w.closeSegment()
		}
	}
	return nil
}

// segDuration is the open segment's duration so far (to the start of its
// last chunk: the chunk's own length is not known without parsing it).
func (w *writer) segDuration() time.Duration {
	if w.last == nil || w.cur.TS == 0 {
		return 0
	}
	c, err := w.init.ParseChunk(w.last)
	if err != nil {
		return 0
	}
	return time.Duration(float64(c.DecodeTime+c.Duration-w.cur.DTS) / float64(w.cur.TS) * float64(time.Second))
}

func (w *writer) openSegment(o *media.Object) error {
	if w.stopForDisk() {
		return nil
	}
	w.segN++
	w.segName = fmt.Sprintf("seg-%08d.m4s", w.segN)
	f, err := os.OpenFile(filepath.Join(w.dir, w.segName), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	ts := w.init.PrimaryTrak().Timescale
	disc := w.disc || (w.prevTS == ts && o.DecodeTime != w.prevEnd)
	w.seg, w.open = f, true
	if w.segBuf == nil {
		w.segBuf = bufio.NewWriterSize(f, 256<<10)
	} else {
		w.segBuf.Reset(f)
	}
	capture := o.Capture
	if capture == 0 {
		capture = o.Arrival / 1000
	}
	w.cur = line{T: "seg", N: w.segN, Init: w.initN, File: w.segName, Start: capture, DTS: o.DecodeTime, TS: ts, Disc: disc && w.segN > 1}
	w.last = nil
	w.disc, w.inGap = false, false
	return nil
}

// closeSegment syncs the open segment and indexes it.
func (w *writer) closeSegment() error {
	if !w.open {
		return nil
	}
	w.open, w.inGroup = false, false
	f := w.seg
	w.seg = nil
	if w.last == nil {
		f.Close()
		os.Remove(filepath.Join(w.dir, w.segName))
		w.segN--
		return nil
	}
	c, err := w.init.ParseChunk(w.last)
	if err != nil {
		f.Close()
		return fmt.Errorf("segment %s: last chunk: %w", w.segName, err)
	}
	w.cur.Dur = c.DecodeTime + c.Duration - w.cur.DTS
	if err := w.segBuf.Flush(); err != nil {
		f.Close()
		return err
	}
	if w.r.beforeSync != nil {
		w.r.beforeSync()
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := w.index.append(w.cur); err != nil {
		return err
	}
	w.prevEnd, w.prevTS = w.cur.DTS+w.cur.Dur, w.cur.TS
	w.addBytes(w.cur.Bytes, 1)
	w.last = nil
	return nil
}

func (w *writer) addBytes(n int64, segs int) {
	w.mu.Lock()
	w.bytes += n
	w.segments += segs
	w.mu.Unlock()
	w.r.m.bytes.Add(float64(n))
	w.r.m.segments.Add(float64(segs))
}

// stopForDisk checks the free-space floor before a segment is opened; below
// it the recording ends.
func (w *writer) stopForDisk() bool {
	free := w.r.free()
	w.r.m.setFree(free)
	if free >= w.r.cfg.MinFree {
		return false
	}
	w.r.m.refused.Inc()
	w.r.log.Warn("recording stopped: disk below the free-space floor", "broadcast", w.b.Name, "id", w.id, "free", free, "floor", w.r.cfg.MinFree)
	w.stopReason = fmt.Sprintf("stopped: %d bytes free, below the floor of %d (-record-min-free)", free, w.r.cfg.MinFree)
	return true
}

// finish closes the open segment and marks the index ended.
func (w *writer) finish() {
	if err := w.closeSegment(); err != nil {
		w.r.m.errors.Inc()
		w.r.log.Warn("recording: last segment lost", "broadcast", w.b.Name, "err", err)
		w.abort()
		return
	}
	if err := w.index.append(line{T: "end"}); err != nil {
		w.r.m.errors.Inc()
	}
}

// abort drops the open segment after an error.
func (w *writer) abort() {
	if w.seg != nil {
		w.seg.Close()
		os.Remove(filepath.Join(w.dir, w.segName))
		w.seg, w.open = nil, false
	}
}

func writeSynced(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
