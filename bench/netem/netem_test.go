package netem

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func start(t *testing.T, l Link) *Emu {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("QC_REQUIRE_TOOLS") == "1" {
			t.Fatal("the emulator needs root (QC_REQUIRE_TOOLS=1)")
		}
		t.Skip("the emulator needs root")
	}
	e, err := Start(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

// echoInA runs a TCP echo server inside namespace A.
func echoInA(t *testing.T, e *Emu) string {
	t.Helper()
	var ln net.Listener
	if err := e.InA(func() error {
		var err error
		ln, err = net.Listen("tcp", e.AddrA+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func TestDelayAddsToTheTCPRoundTrip(t *testing.T) {
	e := start(t, Link{Delay: 100 * time.Millisecond})
	addr := echoInA(t, e)
	c, err := e.DialB(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rtt := time.Hour
	b := make([]byte, 1)
	for range 5 {
		start := time.Now()
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		rtt = min(rtt, time.Since(start))
	}
	// 100 ms each way.
	if rtt < 200*time.Millisecond || rtt > 300*time.Millisecond {
		t.Fatalf("round trip %s, want 200 ms (100 ms delay each way)", rtt)
	}
	t.Logf("TCP round trip through 100 ms each way: %s", rtt)
}

func TestLossDropsAboutThatShareOfUDPDatagrams(t *testing.T) {
	e := start(t, Link{Loss: 0.10})
	var pc net.PacketConn
	if err := e.InA(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", e.AddrA+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 2048)
		for {
			pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, _, err := pc.ReadFrom(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	c, err := e.DialB(context.Background(), "udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 4000
	for i := range sent {
		c.Write(make([]byte, 200))
		if i%20 == 0 {
			time.Sleep(time.Millisecond) // stay under the queue and socket buffers
		}
	}
	n := <-got
	lost := float64(sent-n) / sent
	t.Logf("%d of %d datagrams arrived: %.1f %% lost (10 %% configured)", n, sent, lost*100)
	if lost < 0.07 || lost > 0.13 {
		t.Fatalf("%.1f %% lost, want about 10 %%", lost*100)
	}
}

func TestRateLimitsThroughput(t *testing.T) {
	e := start(t, Link{Rate: 8_000_000})
	addr := echoInA(t, e)
	c, err := e.DialB(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 500_000 // 4 Mbit: half a second at 8 Mbit/s, each way
	start := time.Now()
	go c.Write(make([]byte, size))
	if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 450*time.Millisecond || d > 3*time.Second {
		t.Fatalf("500 kB echoed in %s at 8 Mbit/s, want about 0.5 s", d)
	}
}

func TestParseLink(t *testing.T) {
	l, err := ParseLink("delay=20ms, jitter=2ms,loss=2%,rate=50mbit,queue=500")
	if err != nil {
		t.Fatal(err)
	}
	want := Link{Delay: 20 * time.Millisecond, Jitter: 2 * time.Millisecond, Loss: 0.02, Rate: 50_000_000, Queue: 500}
	if l != want {
		t.Fatalf("got %+v, want %+v", l, want)
	}
	for _, bad := range []string{"delay", "loss=200%", "speed=1", "rate=fast"} {
		if _, err := ParseLink(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
