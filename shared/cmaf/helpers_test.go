package cmaf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// boxInfo is one top-level box found by walkBoxes.
type boxInfo struct {
	typ       string
	off, size int
}

// walkBoxes lists the top-level boxes of b. It is written apart from the
// Reader so that the tests check the Reader against something else.
func walkBoxes(t testing.TB, b []byte) []boxInfo {
	t.Helper()
	var out []boxInfo
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			t.Fatalf("%d stray bytes at %d", len(b)-off, off)
		}
		size := int(binary.BigEndian.Uint32(b[off:]))
		if size == 1 {
			size = int(binary.BigEndian.Uint64(b[off+8:]))
		}
		if size < 8 || off+size > len(b) {
			t.Fatalf("bad box size %d at %d", size, off)
		}
		out = append(out, boxInfo{string(b[off+4 : off+8]), off, size})
		off += size
	}
	return out
}

// stream is a fragmented MP4 cut into its parts.
type stream struct {
	data     []byte
	init     []byte   // ftyp+moov
	chunks   [][]byte // moof+mdat
	chunkOff []int    // offset of each chunk's moof in data
	prft     [][]byte // the prft before each chunk, if any
}

func splitStream(t testing.TB, data []byte) *stream {
	t.Helper()
	s := &stream{data: data}
	boxes := walkBoxes(t, data)
	var prft []byte
	for i := 0; i < len(boxes); i++ {
		bx := boxes[i]
		switch bx.typ {
		case "ftyp":
			mv := boxes[i+1]
			if mv.typ != "moov" {
				t.Fatalf("ftyp followed by %s", mv.typ)
			}
			s.init = data[bx.off : mv.off+mv.size]
			i++
		case "prft":
			prft = data[bx.off : bx.off+bx.size]
		case "moof":
			md := boxes[i+1]
			if md.typ != "mdat" {
				t.Fatalf("moof followed by %s", md.typ)
			}
			s.chunks = append(s.chunks, data[bx.off:md.off+md.size])
			s.chunkOff = append(s.chunkOff, bx.off)
			s.prft = append(s.prft, prft)
			prft = nil
			i++
		}
	}
	return s
}

func demoBytes(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../clip/demo.mp4")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func demoStream(t testing.TB) *stream { return splitStream(t, demoBytes(t)) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// readAll reads r to its end. The error is nil at a clean io.EOF.
func readAll(t testing.TB, r io.Reader, lim Limits) (*Init, []*Chunk, error) {
	t.Helper()
	rd := NewReader(r, lim)
	var in *Init
	var chunks []*Chunk
	for i := 0; ; i++ {
		v, err := rd.Next()
		if err == io.EOF {
			return in, chunks, nil
		}
		if err != nil {
			return in, chunks, err
		}
		switch v := v.(type) {
		case *Init:
			if in != nil {
				t.Fatal("a second *Init returned")
			}
			if len(chunks) != 0 {
				t.Fatal("*Init returned after chunks")
			}
			if rd.Init() != v {
				t.Fatal("Reader.Init() is not the returned init")
			}
			in = v
		case *Chunk:
			if in == nil {
				t.Fatal("chunk before the init")
			}
			chunks = append(chunks, v)
		default:
			t.Fatalf("Next returned %T", v)
		}
		if i > 1e6 {
			t.Fatal("no end")
		}
	}
}

// patch returns a copy of b with old, which must occur exactly once in
// b[from:to], replaced by new of the same length.
func patch(t testing.TB, b []byte, from, to int, old, new string) []byte {
	t.Helper()
	if len(old) != len(new) {
		t.Fatal("patch changes the length")
	}
	if n := bytes.Count(b[from:to], []byte(old)); n != 1 {
		t.Fatalf("%q occurs %d times, want 1", old, n)
	}
	out := bytes.Clone(b)
	i := from + bytes.Index(b[from:to], []byte(old))
	copy(out[i:], new)
	return out
}

// requireTool skips the test when a tool is missing, unless
// QC_REQUIRE_TOOLS is set, when it fails.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("QC_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s not found and QC_REQUIRE_TOOLS is set: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// requireEncoder skips (or fails, with QC_REQUIRE_TOOLS) when ffmpeg lacks
// an encoder.
func requireEncoder(t *testing.T, ffmpeg, enc string) {
	t.Helper()
	out, err := exec.Command(ffmpeg, "-hide_banner", "-encoders").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), " "+enc+" ") {
		if os.Getenv("QC_REQUIRE_TOOLS") != "" {
			t.Fatalf("ffmpeg has no %s encoder and QC_REQUIRE_TOOLS is set", enc)
		}
		t.Skipf("ffmpeg has no %s encoder", enc)
	}
}

// runFFmpeg runs ffmpeg with args and returns its stdout.
func runFFmpeg(t *testing.T, args ...string) []byte {
	t.Helper()
	ff := requireTool(t, "ffmpeg")
	cmd := exec.Command(ff, append([]string{"-hide_banner", "-loglevel", "error", "-nostdin"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

var cmafFlags = []string{"-f", "mp4", "-movflags", "cmaf+frag_keyframe+empty_moov+default_base_moof"}

// errorsIs reports whether err is every one of targets.
func errorsIs(err error, targets ...error) bool {
	for _, t := range targets {
		if !errors.Is(err, t) {
			return false
		}
	}
	return true
}
