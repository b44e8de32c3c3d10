package record

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// IndexFile is the name of a recording's index in its directory.
const IndexFile = "index.jsonl"

// idLayout names a recording's directory: its start, in UTC, to the
// microsecond, so that names sort by time.
const idLayout = "20060102T150405.000000Z"

// maxIndex bounds an index file read into memory (a line is ~200 bytes:
// 64 MiB is 300,000 segments, over three days of 1-second groups).
const maxIndex = 64 << 20

// line is one line of an index file. T says which fields are set:
//
//	rec   the first line: Name, Started
//	init  an init segment was written: N, File, Epoch, Bytes
//	seg   a segment was written and synced: N, Init, File, Start, DTS, Dur, TS, Bytes, Disc
//	trim  segments below N were deleted by retention
//	end   the recording ended cleanly
type line struct {
	T       string `json:"t"`
	Name    string `json:"name,omitempty"`
	Started int64  `json:"started,omitempty"` // µs since the Unix epoch
	N       int    `json:"n,omitempty"`
	File    string `json:"file,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
	Init    int    `json:"init,omitempty"`
	Start   int64  `json:"start,omitempty"` // capture wall-clock of the first chunk, µs
	DTS     uint64 `json:"dts,omitempty"`   // primary track decode time of the first chunk
	Dur     uint64 `json:"dur,omitempty"`   // in TS units
	TS      uint32 `json:"ts,omitempty"`    // primary track timescale
	Bytes   int64  `json:"bytes,omitempty"`
	Disc    bool   `json:"disc,omitempty"` // a discontinuity comes before this segment
}

// Init is one init segment of a recording (one per publisher epoch).
type Init struct {
	N     int
	File  string
	Epoch uint64
	Bytes int64
}

// Segment is one segment of a recording: one or more whole groups.
type Segment struct {
	N     int
	Init  int    // the Init's N
	File  string // in the recording's directory
	Start time.Time
	DTS   uint64
	Dur   uint64
	TS    uint32
	Bytes int64
	// Disc is set when the segment does not continue the one before: the
	// publisher reconnected, the init changed, time jumped or groups were
	// not recorded.
	Disc bool
}

// Duration returns the segment's length.
func (s *Segment) Duration() time.Duration {
	if s.TS == 0 {
		return 0
	}
	return time.Duration(float64(s.Dur) / float64(s.TS) * float64(time.Second))
}

// End returns the wall-clock end of the segment.
func (s *Segment) End() time.Time { return s.Start.Add(s.Duration()) }

// Recording is what a recording's index says, read back from disk.
type Recording struct {
	Name     string // the broadcast
	ID       string // the directory name: the start time
	Dir      string
	Started  time.Time
	Inits    []Init
	Segments []Segment // rising N, after retention's trims
	Ended    bool      // the writer closed it cleanly
	Trimmed  int       // segments below this N were deleted
	indexLen int64     // bytes of the index up to its last whole line
	torn     bool      // the index ends with a partial line
}

// InitByN returns the init numbered n.
func (r *Recording) InitByN(n int) *Init {
	for i := range r.Inits {
		if r.Inits[i].N == n {
			return &r.Inits[i]
		}
	}
	return nil
}

// Bytes returns the bytes of the recording's segments and inits.
func (r *Recording) Bytes() int64 {
	var n int64
	for _, s := range r.Segments {
		n += s.Bytes
	}
	for _, in := range r.Inits {
		n += in.Bytes
	}
	return n
}

// Duration sums the segments' durations.
func (r *Recording) Duration() time.Duration {
	var d time.Duration
	for i := range r.Segments {
		d += r.Segments[i].Duration()
	}
	return d
}

// Load reads the recording in dir. A partial last line (the process died
// while writing it) is ignored, as are segments whose file is missing or
// shorter than indexed.
func Load(dir string) (*Recording, error) {
	f, err := os.Open(filepath.Join(dir, IndexFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxIndex {
		return nil, fmt.Errorf("record: %s: index of %d bytes is over %d", dir, st.Size(), maxIndex)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	r := &Recording{Dir: dir, ID: filepath.Base(dir)}
	off := 0
	for off < len(data) {
		nl := bytes.IndexByte(data[off:], '\n')
		if nl < 0 {
			r.torn = true
			break
		}
		var l line
		if err := json.Unmarshal(data[off:off+nl], &l); err != nil {
			// Only the tail can be torn: a bad line means the rest
			// was never acknowledged.
			r.torn = true
			break
		}
		off += nl + 1
		switch l.T {
		case "rec":
			r.Name, r.Started = l.Name, time.UnixMicro(l.Started)
		case "init":
			r.Inits = append(r.Inits, Init{N: l.N, File: l.File, Epoch: l.Epoch, Bytes: l.Bytes})
		case "seg":
			if l.N < r.Trimmed {
				continue
			}
			r.Segments = append(r.Segments, Segment{N: l.N, Init: l.Init, File: l.File, Start: time.UnixMicro(l.Start), DTS: l.DTS, Dur: l.Dur, TS: l.TS, Bytes: l.Bytes, Disc: l.Disc})
		case "trim":
			r.Trimmed = l.N
			i := 0
			for i < len(r.Segments) && r.Segments[i].N < l.N {
				i++
			}
			r.Segments = r.Segments[i:]
		case "end":
			r.Ended = true
		}
	}
	r.indexLen = int64(off)
	if r.Name == "" {
		return nil, fmt.Errorf("record: %s: index has no header", dir)
	}
	// A segment whose file is gone or short cannot be served.
	keep := r.Segments[:0]
	for _, s := range r.Segments {
		if fi, err := os.Stat(filepath.Join(dir, s.File)); err == nil && fi.Size() >= s.Bytes && safeFile(s.File) {
			keep = append(keep, s)
		}
	}
	r.Segments = keep
	return r, nil
}

// safeFile reports whether an index's file name stays in its directory.
func safeFile(name string) bool {
	return name != "" && !strings.ContainsAny(name, `/\`) && name != "." && name != ".."
}

// List returns every recording under root, oldest first (by start, then
// name). Unreadable recordings are skipped.
func List(root string) ([]*Recording, error) {
	var out []*Recording
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil
		}
		if d.IsDir() || d.Name() != IndexFile {
			return nil
		}
		if r, err := Load(filepath.Dir(p)); err == nil {
			out = append(out, r)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].Name < out[j].Name
	})
	return out, err
}

// Find returns the recording of broadcast name with the given id under
// root.
func Find(root, name, id string) (*Recording, error) {
	if _, err := time.Parse(idLayout, id); err != nil {
		return nil, fs.ErrNotExist
	}
	r, err := Load(filepath.Join(root, filepath.FromSlash(name), id))
	if err != nil {
		return nil, err
	}
	if r.Name != name {
		return nil, fs.ErrNotExist
	}
	return r, nil
}

// repair makes a recording left by a process that died consistent: the
// index loses its partial last line, files the index does not list (a
// segment being written) are removed, and the index is marked ended. It
// returns the repaired index.
func repair(dir string) (*Recording, error) {
	r, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if r.torn {
		if err := os.Truncate(filepath.Join(dir, IndexFile), r.indexLen); err != nil {
			return nil, err
		}
	}
	known := map[string]bool{IndexFile: true}
	for _, s := range r.Segments {
		known[s.File] = true
	}
	for _, in := range r.Inits {
		known[in.File] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.IsDir() && !known[e.Name()] {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	// Nobody writes it any more: players see it as finished.
	if !r.Ended {
		if err := appendIndex(dir, line{T: "end"}); err != nil {
			return nil, err
		}
		r.Ended = true
	}
	return r, nil
}

// indexWriter appends lines to an index file, syncing each.
type indexWriter struct {
	f *os.File
	w *bufio.Writer
}

func createIndex(dir string, first line) (*indexWriter, error) {
	f, err := os.OpenFile(filepath.Join(dir, IndexFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	iw := &indexWriter{f: f, w: bufio.NewWriterSize(f, 1024)}
	if err := iw.append(first); err != nil {
		f.Close()
		return nil, err
	}
	// The directory entry of the index must survive a crash too.
	syncDir(dir)
	syncDir(filepath.Dir(dir))
	return iw, nil
}

// append writes l and syncs the file: when it returns, l survives a crash.
func (iw *indexWriter) append(l line) error {
	b, _ := json.Marshal(l) // a line has only plain fields
	b = append(b, '\n')
	if _, err := iw.w.Write(b); err != nil {
		return err
	}
	if err := iw.w.Flush(); err != nil {
		return err
	}
	return iw.f.Sync()
}

func (iw *indexWriter) close() error { return iw.f.Close() }

// appendIndex appends one line to the index in dir (retention's trims of
// recordings no writer holds).
func appendIndex(dir string, l line) error {
	f, err := os.OpenFile(filepath.Join(dir, IndexFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	iw := &indexWriter{f: f, w: bufio.NewWriterSize(f, 256)}
	err = iw.append(l)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
