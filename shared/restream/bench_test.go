package restream

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/quiccast/quiccast/shared/clip"
)

// The restream benchmarks: a session converting b.N loops of the built-in
// clip (6 groups, 6.4 s, 0.38 Mbit/s: H.264 + AAC, CMAF chunks of one
// frame) to RTMP and writing it to a loopback TCP sink that discards it,
// against the same CMAF bytes written to the same kind of sink by a plain
// conn.Write loop. Each reports CPU time (user+system, the whole process,
// sink included) per restreamed Mbit of CMAF input:
//
//	go test -run '^$' -bench 'Restream' -benchtime 200x -count 5 ./shared/restream
//
// CPU ms per Mbit / 1000 is the share of one core that restreaming 1
// Mbit/s to one target takes.

// sink accepts RTMP publishes (handshake, connect, createStream, publish
// answered as a server does) and then discards what comes; with plain it
// discards from the start.
func sink(b *testing.B, plain bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				if !plain && serveRTMP(nc) != nil {
					return
				}
				io.Copy(io.Discard, nc)
			}()
		}
	}()
	return ln.Addr().String()
}

func serveRTMP(nc net.Conn) error {
	bc := bytecounter.NewReadWriter(nc)
	if _, _, err := handshake.DoServer(bc, false); err != nil {
		return err
	}
	mrw := message.NewReadWriter(bc, bc, false)
	for {
		msg, err := mrw.Read()
		if err != nil {
			return err
		}
		cmd, ok := msg.(*message.CommandAMF0)
		if !ok {
			continue
		}
		switch cmd.Name {
		case "connect":
			err = mrw.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "_result", CommandID: cmd.CommandID,
				Arguments: []any{amf0.Object{{Key: "fmsVer", Value: "bench"}}, amf0.Object{{Key: "level", Value: "status"}, {Key: "code", Value: "NetConnection.Connect.Success"}}}})
		case "createStream":
			err = mrw.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "_result", CommandID: cmd.CommandID, Arguments: []any{nil, float64(1)}})
		case "publish":
			return mrw.Write(&message.CommandAMF0{ChunkStreamID: 5, MessageStreamID: streamID, Name: "onStatus", CommandID: cmd.CommandID,
				Arguments: []any{nil, amf0.Object{{Key: "level", Value: "status"}, {Key: "code", Value: "NetStream.Publish.Start"}, {Key: "description", Value: "go"}}}})
		}
		if err != nil {
			return err
		}
	}
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

func benchClip(b *testing.B) *clip.Clip {
	c, err := clip.Demo()
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkRestreamSession(b *testing.B) {
	c := benchClip(b)
	t, err := ParseTarget("rtmp://" + sink(b, false) + "/live/bench-key")
	if err != nil {
		b.Fatal(err)
	}
	tr, err := parseTracks(c.Init.Data)
	if err != nil {
		b.Fatal(err)
	}
	s, err := dial(context.Background(), t, nil, tr, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	var bytes int64
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		for _, ch := range c.Chunks {
			if err := s.chunk(ch.Data); err != nil {
				b.Fatal(err)
			}
			bytes += int64(len(ch.Data))
		}
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	report(b, cpu, bytes)
}

func BenchmarkRestreamPlainWrite(b *testing.B) {
	c := benchClip(b)
	nc, err := net.Dial("tcp", sink(b, true))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var bytes int64
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		for _, ch := range c.Chunks {
			if _, err := nc.Write(ch.Data); err != nil {
				b.Fatal(err)
			}
			bytes += int64(len(ch.Data))
		}
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	report(b, cpu, bytes)
}
