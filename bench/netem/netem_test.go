package netem

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// A bandwidth drop and its recovery: SetLink changes the rate of a running
// link, and changing it back restores the throughput.
func TestSetLinkChangesTheRateAndBack(t *testing.T) {
	e := start(t, Link{Rate: 40_000_000})
	addr := echoInA(t, e)
	c, err := e.DialB(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(size int) time.Duration {
		start := time.Now()
		go c.Write(make([]byte, size))
		if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	// The best of three at the fast rates: on a busy machine one echo can
	// take far longer than the link makes it (the first also pays for TCP's
	// slow start), while no scheduling delay makes the slow rate faster.
	best := func(size int) time.Duration {
		return min(echo(size), echo(size), echo(size))
	}
	const size = 250_000 // 2 Mbit: 50 ms at 40 Mbit/s, 0.5 s at 4 Mbit/s
	fast := best(size)
	e.SetLink(e.Link().mustWith(t, "rate=4mbit"))
	slow := echo(size)
	e.SetLink(e.Link().mustWith(t, "rate=40mbit"))
	again := best(size)
	t.Logf("250 kB echoed at 40 Mbit/s: %s; at 4 Mbit/s: %s; at 40 Mbit/s again: %s", fast, slow, again)
	if slow < 450*time.Millisecond || slow < 3*fast {
		t.Fatalf("at 4 Mbit/s %s (40 Mbit/s: %s): SetLink did not slow the link", slow, fast)
	}
	if again > slow/2 {
		t.Fatalf("back at 40 Mbit/s %s (4 Mbit/s: %s): SetLink did not restore the rate", again, slow)
	}
}

func (l Link) mustWith(t *testing.T, s string) Link {
	t.Helper()
	l2, err := l.With(s)
	if err != nil {
		t.Fatal(err)
	}
	return l2
}

func TestLinkWithChangesOnlyTheKeysGiven(t *testing.T) {
	l, err := ParseLink("delay=20ms,loss=2%,rate=2mbit")
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.With("rate=1200kbit")
	if err != nil {
		t.Fatal(err)
	}
	want := Link{Delay: 20 * time.Millisecond, Loss: 0.02, Rate: 1_200_000}
	if d != want {
		t.Fatalf("got %+v, want %+v", d, want)
	}
}

// cc= sets the TCP congestion control of connections in both namespaces.
func TestCCSetsTheTCPCongestionControl(t *testing.T) {
	e := start(t, Link{CC: "reno"})
	addr := echoInA(t, e)
	c, err := e.DialB(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cc string
	var gerr error
	raw.Control(func(fd uintptr) { cc, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	if cc != "reno" {
		t.Fatalf("TCP congestion control %q in namespace B, want reno", cc)
	}
	if l, err := ParseLink("cc=cubic"); err != nil || l.CC != "cubic" {
		t.Fatalf("cc=cubic parsed as %+v, %v", l, err)
	}
	if _, err := ParseLink("cc=../x"); err == nil {
		t.Fatal("cc=../x accepted")
	}
}
