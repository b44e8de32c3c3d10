package record

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/media"
	"github.com/quiccast/quiccast/shared/wire"
)

// The recording benchmarks: the recorder writing b.N loops of the built-in
// clip (6 groups, 6.4 s, 0.38 Mbit/s) from a broadcast's cache, against the
// same chunk bytes written by a plain os.File.Write loop (one file per
// group), with and without the fsync per group the recorder does. Each
// reports CPU time (user+system, the whole process) per recorded Mbit:
//
//	go test -run '^$' -bench 'Record' -benchtime 100x -count 3 ./shared/record
//
// (go tool task bench-record). CPU ms per Mbit / 1000 is the share of one
// core that recording 1 Mbit/s takes.

// benchGroups returns the payloads of n loops of the clip, group by group.
func benchGroups(b *testing.B, n int) (*clip.Clip, [][][]byte, int64) {
	c, err := clip.Demo()
	if err != nil {
		b.Fatal(err)
	}
	var groups [][][]byte
	var bytes int64
	for loop := range n {
		for _, ch := range c.Chunks {
			data := append([]byte(nil), ch.Data...)
			if err := shift(data, c, uint64(loop)); err != nil {
				b.Fatal(err)
			}
			if ch.Keyframe {
				groups = append(groups, nil)
			}
			groups[len(groups)-1] = append(groups[len(groups)-1], data)
			bytes += int64(len(data))
		}
	}
	return c, groups, bytes
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, cpu time.Duration, bytes int64) {
	mbit := float64(bytes) * 8 / 1e6
	b.ReportMetric(float64(cpu.Microseconds())/1000/mbit, "cpu-ms/Mbit")
	b.SetBytes(bytes / int64(b.N))
}

func BenchmarkRecordRecorder(b *testing.B) {
	c, groups, bytes := benchGroups(b, b.N)
	bc := media.New("bench", media.Limits{MaxGroups: len(groups) + 1, MaxBytes: 1 << 40, MaxAge: time.Hour})
	defer bc.Close()
	p := c.Init.PrimaryTrak()
	cat, _ := media.NewCatalog(wire.Catalog{Broadcast: "bench", Epoch: 1, Tracks: []wire.TrackInfo{{ID: 0, Kind: c.Init.Kind(), Codec: c.Init.Codec(), Timescale: p.Timescale}}}, [][]byte{c.Init.Data})
	bc.SetCatalog(cat)
	now := time.Now().UnixNano()
	var dt uint64
	for gi, g := range groups {
		for i, data := range g {
			h := wire.Header{Kind: wire.KindObject, Group: uint64(gi + 1), Index: uint32(i), DecodeTime: dt, Capture: now / 1000}
			if i == 0 {
				h.Flags |= wire.FlagKeyframe
			}
			if err := bc.Append(media.NewObject(h, data, now)); err != nil {
				b.Fatal(err)
			}
		}
		bc.Finish(0, uint64(gi+1), now)
	}
	r, err := New(Config{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	r.Live(bc)
	b.ResetTimer()
	cpu0 := cpuTime()
	if err := r.Start("bench"); err != nil {
		b.Fatal(err)
	}
	for status(r, "bench").Segments < len(groups) {
		time.Sleep(time.Millisecond) // a benchmark's poll: the work is on another goroutine
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	report(b, cpu, bytes)
}

func benchPlain(b *testing.B, sync bool) {
	_, groups, bytes := benchGroups(b, b.N)
	dir := b.TempDir()
	b.ResetTimer()
	cpu0 := cpuTime()
	for gi, g := range groups {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("seg-%08d.m4s", gi)))
		if err != nil {
			b.Fatal(err)
		}
		for _, data := range g {
			if _, err := f.Write(data); err != nil {
				b.Fatal(err)
			}
		}
		if sync {
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	report(b, cpu, bytes)
}

func BenchmarkRecordPlainWrite(b *testing.B)     { benchPlain(b, false) }
func BenchmarkRecordPlainWriteSync(b *testing.B) { benchPlain(b, true) }
