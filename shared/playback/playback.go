// Package playback serves recordings (shared/record) over HTTP: a list of
// recordings, an HLS playlist per recording (VOD once it ended, EVENT while
// it is being written) and a time-range query answered with one fragmented
// MP4 whose decode times start at 0. It reads only the recording directory,
// so any node that has it can serve it.
package playback

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/quiccast/quiccast/shared/auth"
	"github.com/quiccast/quiccast/shared/cmaf"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/record"
	"github.com/quiccast/quiccast/shared/wire"
)

// Prefix is where the routes are mounted.
const Prefix = "/recordings/"

// MaxRange bounds the duration one range query may ask for.
const MaxRange = 24 * time.Hour

// Config configures the handler.
type Config struct {
	// Dir is the recordings directory (-record-dir).
	Dir string
	// Auth decides play requests (action play, the recording's broadcast).
	Auth auth.Authorizer
	// Active reports whether a recording is still being written (its
	// playlist is then an EVENT playlist without EXT-X-ENDLIST); nil: the
	// index says (its end line, which the recorder also writes when it
	// repairs a recording after a crash).
	Active func(name, id string) bool
	Logger *slog.Logger
}

// Handler serves, under Prefix:
//
//	GET list[?name=NAME]                         JSON: the recordings (of NAME)
//	GET get?name=NAME&start=RFC3339&duration=S    one fMP4 of [start, start+S)
//	GET {name}/{id}/index.m3u8                    the recording's HLS playlist
//	GET {name}/{id}/init-N.mp4, seg-N.m4s          its files
type Handler struct{ cfg Config }

// New returns the handler.
func New(cfg Config) *Handler {
	if cfg.Auth == nil {
		cfg.Auth = auth.AllowAll{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Handler{cfg: cfg}
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status, fmt.Sprintf(format, args...)}
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var he *httpError
	switch {
	case errors.As(err, &he):
		status, msg = he.status, he.msg
	case errors.Is(err, fs.ErrNotExist):
		status, msg = http.StatusNotFound, "no such recording"
	case wire.CodeOf(err) == wire.CodeUnauthorized:
		status, msg = http.StatusUnauthorized, wire.Reason(err)
	case wire.CodeOf(err) == wire.CodeForbidden:
		status, msg = http.StatusForbidden, wire.Reason(err)
	case wire.CodeOf(err) != wire.CodeInternal:
		status, msg = http.StatusBadRequest, wire.Reason(err)
	}
	if status >= 500 {
		h.cfg.Logger.Warn("recording request failed", "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, status)
}

func (h *Handler) authorize(r *http.Request, name string) error {
	if err := media.ValidName(name); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	return h.cfg.Auth.Authorize(r.Context(), auth.Request{Action: auth.Play, Broadcast: name, Token: auth.TokenFromRequest(r), Remote: r.RemoteAddr})
}

// WriteTimeout bounds each write of a response: a client that takes no
// bytes for this long is dropped.
const WriteTimeout = 30 * time.Second

// deadlineWriter sets a write deadline before every write, so a long
// answer (a range query, a large segment) may take its time as long as the
// client keeps reading.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	return d.ResponseWriter.Write(p)
}

// ServeHTTP routes a request under Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = deadlineWriter{w, http.NewResponseController(w)}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.fail(w, r, errorf(http.StatusMethodNotAllowed, "GET only"))
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		h.fail(w, r, errorf(http.StatusNotFound, "not found"))
		return
	}
	var err error
	switch rest {
	case "list":
		err = h.list(w, r)
	case "get":
		err = h.get(w, r)
	default:
		err = h.file(w, r, rest)
	}
	if err != nil {
		h.fail(w, r, err)
	}
}

// Span is a stretch of a recording without a discontinuity.
type Span struct {
	Start    time.Time `json:"start"`
	Duration float64   `json:"duration"` // seconds
}

// Info is one recording in the list.
type Info struct {
	Name     string    `json:"name"`
	ID       string    `json:"id"`
	Started  time.Time `json:"started"`
	Duration float64   `json:"duration"` // seconds, the segments' sum
	Segments int       `json:"segments"`
	Bytes    int64     `json:"bytes"`
	Ended    bool      `json:"ended"`
	Playlist string    `json:"playlist"`
	Spans    []Span    `json:"spans"`
}

func (h *Handler) recordings(name string) ([]*record.Recording, error) {
	root := h.cfg.Dir
	if name != "" {
		root = filepath.Join(h.cfg.Dir, filepath.FromSlash(name))
	}
	recs, err := record.List(root)
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, rec := range recs {
		if name == "" || rec.Name == name {
			out = append(out, rec)
		}
	}
	return out, nil
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("name")
	if name != "" {
		if err := h.authorize(r, name); err != nil {
			return err
		}
	}
	recs, err := h.recordings(name)
	if err != nil {
		return err
	}
	out := []Info{}
	allowed := map[string]bool{}
	for _, rec := range recs {
		ok, seen := allowed[rec.Name]
		if !seen {
			ok = h.authorize(r, rec.Name) == nil
			allowed[rec.Name] = ok
		}
		if !ok || len(rec.Segments) == 0 {
			continue
		}
		in := Info{Name: rec.Name, ID: rec.ID, Started: rec.Started, Duration: rec.Duration().Seconds(), Segments: len(rec.Segments), Bytes: rec.Bytes(), Ended: rec.Ended,
			Playlist: Prefix + escapeName(rec.Name) + "/" + rec.ID + "/index.m3u8"}
		for i := range rec.Segments {
			s := &rec.Segments[i]
			if i == 0 || s.Disc || s.Init != rec.Segments[i-1].Init {
				in.Spans = append(in.Spans, Span{Start: s.Start})
			}
			in.Spans[len(in.Spans)-1].Duration += s.Duration().Seconds()
		}
		out = append(out, in)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(out)
}

func escapeName(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// file serves {name}/{id}/{file}.
func (h *Handler) file(w http.ResponseWriter, r *http.Request, rest string) error {
	parts := strings.Split(rest, "/")
	if len(parts) < 3 {
		return errorf(http.StatusNotFound, "want %s{broadcast}/{id}/index.m3u8, %slist or %sget", Prefix, Prefix, Prefix)
	}
	file, id, name := parts[len(parts)-1], parts[len(parts)-2], strings.Join(parts[:len(parts)-2], "/")
	if err := h.authorize(r, name); err != nil {
		return err
	}
	rec, err := record.Find(h.cfg.Dir, name, id)
	if err != nil {
		return err
	}
	if file == "index.m3u8" {
		ended := rec.Ended && !(h.cfg.Active != nil && h.cfg.Active(name, id))
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		w.Header().Set("Cache-Control", "no-cache")
		_, err := w.Write(Playlist(rec, ended, r.URL.Query().Get("token")))
		return err
	}
	known := false
	for _, s := range rec.Segments {
		known = known || s.File == file
	}
	for _, in := range rec.Inits {
		known = known || in.File == file
	}
	if !known {
		return errorf(http.StatusNotFound, "no file %q in recording %s/%s", file, name, id)
	}
	f, err := os.Open(filepath.Join(rec.Dir, file))
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "video/mp4")
	w.Header().Set("Cache-Control", "max-age=86400")
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}

// Playlist returns rec's HLS media playlist. ended adds EXT-X-ENDLIST (a
// VOD playlist); else it is an EVENT playlist that grows. A token is added
// to every URI so that players that got the playlist with ?token= get the
// files too.
func Playlist(rec *record.Recording, ended bool, token string) []byte {
	q := ""
	if token != "" {
		q = "?token=" + url.QueryEscape(token)
	}
	var target float64
	for i := range rec.Segments {
		target = math.Max(target, rec.Segments[i].Duration().Seconds())
	}
	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n", int(math.Max(1, math.Ceil(target))))
	first := 0
	if len(rec.Segments) > 0 {
		first = rec.Segments[0].N
	}
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n", first)
	if ended {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
	} else {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:EVENT\n")
	}
	b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")
	initN := -1
	for i := range rec.Segments {
		s := &rec.Segments[i]
		newInit := s.Init != initN
		if i > 0 && (s.Disc || newInit) {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		if newInit {
			if in := rec.InitByN(s.Init); in != nil {
				fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"%s%s\"\n", in.File, q)
			}
			initN = s.Init
		}
		if i == 0 || s.Disc || newInit {
			fmt.Fprintf(&b, "#EXT-X-PROGRAM-DATE-TIME:%s\n", s.Start.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		}
		fmt.Fprintf(&b, "#EXTINF:%.5f,\n%s%s\n", s.Duration().Seconds(), s.File, q)
	}
	if ended {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return b.Bytes()
}

// get answers a range query: name, start (RFC 3339) and duration
// (seconds, or a Go duration such as 90s) select, in the first recording
// of name that overlaps [start, start+duration), the segments that
// overlap it, from the group at or before start, up to a change of init
// segment. The answer is the init and the segments' chunks, with decode
// times rebased so playback starts at 0 and runs on across gaps.
func (h *Handler) get(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	name := q.Get("name")
	if name == "" {
		return errorf(http.StatusBadRequest, "name is required")
	}
	if err := h.authorize(r, name); err != nil {
		return err
	}
	start, err := time.Parse(time.RFC3339Nano, q.Get("start"))
	if err != nil {
		return errorf(http.StatusBadRequest, "start: want an RFC 3339 time such as 2026-12-03T09:00:00Z: %v", err)
	}
	dur, err := parseDuration(q.Get("duration"))
	if err != nil || dur <= 0 || dur > MaxRange {
		return errorf(http.StatusBadRequest, "duration: want seconds in (0, %d]", int(MaxRange.Seconds()))
	}
	end := start.Add(dur)
	recs, err := h.recordings(name)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		var segs []record.Segment
		for _, s := range rec.Segments {
			if !s.End().After(start) || !s.Start.Before(end) {
				continue
			}
			if len(segs) > 0 && s.Init != segs[0].Init {
				break
			}
			segs = append(segs, s)
		}
		if len(segs) == 0 {
			continue
		}
		in := rec.InitByN(segs[0].Init)
		if in == nil {
			return fs.ErrNotExist
		}
		initData, err := os.ReadFile(filepath.Join(rec.Dir, in.File))
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "video/mp4")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", strings.ReplaceAll(name, "/", "_")+"-"+segs[0].Start.UTC().Format("20060102T150405Z")+".mp4"))
		if err := WriteRange(w, rec.Dir, initData, segs); err != nil {
			// The status is sent: the reply is cut short, which the
			// client sees as a truncated file.
			h.cfg.Logger.Warn("range query cut short", "broadcast", name, "err", err)
		}
		return nil
	}
	return errorf(http.StatusNotFound, "no recording of %q between %s and %s", name, start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
}

func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f > MaxRange.Seconds() {
			return 0, errors.New("out of range")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

// WriteRange writes one fragmented MP4: initData, then the chunks of segs
// (files in dir, all under initData) with every track's decode times
// shifted so the first sample of the output is at 0 and segments after a
// discontinuity follow on where the previous one ended.
func WriteRange(w io.Writer, dir string, initData []byte, segs []record.Segment) error {
	in, err := cmaf.ParseInit(initData)
	if err != nil {
		return err
	}
	if _, err := w.Write(initData); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	scale := map[uint32]float64{}
	for _, t := range in.Traks {
		scale[t.ID] = float64(t.Timescale)
	}
	var shift map[uint32]uint64 // per track, added to decode times
	var out float64             // seconds written so far (primary track)
	for i, s := range segs {
		f, err := os.Open(filepath.Join(dir, s.File))
		if err != nil {
			return err
		}
		cr := cmaf.NewReader(io.MultiReader(bytes.NewReader(initData), io.LimitReader(f, s.Bytes)), cmaf.Limits{MaxBox: 64 << 20, MaxInit: len(initData) + 1})
		first := true
		for {
			seg, err := cr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", s.File, err)
			}
			c, ok := seg.(*cmaf.Chunk)
			if !ok {
				continue
			}
			if first && (i == 0 || s.Disc) {
				// Anchor: the earliest track start maps to out.
				anchor := math.Inf(1)
				for _, t := range c.Trafs {
					anchor = math.Min(anchor, float64(t.DecodeTime)/scale[t.TrackID])
				}
				shift = map[uint32]uint64{}
				for id, ts := range scale {
					shift[id] = uint64(int64(math.Round((out - anchor) * ts)))
				}
			}
			first = false
			if err := cmaf.ShiftDecodeTimes(c.Data, func(id uint32) uint64 { return shift[id] }); err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", s.File, err)
			}
			if _, err := bw.Write(c.Data); err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
		out += s.Duration().Seconds()
	}
	return bw.Flush()
}
