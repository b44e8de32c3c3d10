package tcpmux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/wire"
)

func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, s := Client(nc), Server(sc)
	t.Cleanup(func() { c.CloseWithError(0, ""); s.CloseWithError(0, "") })
	return c, s
}

// Streams interleave on one connection and each arrives whole and in
// order; a FIN ends a read with EOF, a reset with its code.
func TestStreamsArriveWholeFinAndReset(t *testing.T) {
	c, s := pair(t)
	ctx := context.Background()
	ctl, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ctl.Write([]byte("hello"))
	sctl, err := s.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(sctl, got); err != nil || string(got) != "hello" {
		t.Fatalf("control: %q, %v", got, err)
	}
	big := bytes.Repeat([]byte("0123456789"), 10_000) // several frames
	a, _ := s.OpenUniStreamSync(ctx)
	b, _ := s.OpenUniStreamSync(ctx)
	go func() {
		a.Write(big)
		a.Close()
		b.Write([]byte("partial"))
		b.CancelWrite(wire.CodeTooSlow)
	}()
	ra, err := c.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := c.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(ra)
	if err != nil || !bytes.Equal(all, big) {
		t.Fatalf("stream a: %d bytes, %v", len(all), err)
	}
	_, err = io.ReadAll(rb)
	var re *ResetError
	if !errors.As(err, &re) || re.Code != wire.CodeTooSlow {
		t.Fatalf("stream b ended with %v, want a reset with code %d", err, wire.CodeTooSlow)
	}
	// A read deadline ends a read that waits.
	sctl.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := sctl.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	// Closing one side ends the other's accepts.
	c.CloseWithError(0, "")
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.AcceptUniStream(actx); !errors.Is(err, ErrClosed) {
		t.Fatalf("accept after the peer closed: %v", err)
	}
}
