// Package netem emulates a lossy, slow network between two network
// namespaces, for tests and benchmarks on a kernel without the netem qdisc.
// Each namespace gets a TUN device; a forwarder in this process moves every
// packet from one to the other after applying delay, jitter, loss and a
// rate limit, so TCP (WebSocket, HLS) and QUIC (WebTransport, relay) cross
// the same network. It needs root (CAP_NET_ADMIN) and the ip command.
package netem

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Link is the network between the two namespaces, per direction.
type Link struct {
	Delay  time.Duration // one way: the round trip is twice this
	Jitter time.Duration // uniform, ±Jitter; packets keep their order
	Loss   float64       // 0..1, each packet independently
	Rate   int64         // bits/s; 0 is unlimited
	Queue  int           // packets waiting at most (default 1000); more are dropped
	// CC is the TCP congestion control of both namespaces ("reno",
	// "bbr"); empty keeps the kernel's default, which new namespaces
	// inherit (bbr on this project's machines). A namespace may only pick
	// one of net.ipv4.tcp_allowed_congestion_control ("reno bbr" here).
	// quic-go has only Cubic, loss-based: cc=reno compares it with a
	// loss-based TCP.
	CC string
}

// ParseLink reads "delay=20ms,jitter=2ms,loss=2%,rate=50mbit,queue=500".
func ParseLink(s string) (Link, error) { return Link{}.With(s) }

// With returns l with the keys of s (ParseLink's syntax) changed: the link
// a bandwidth drop turns l into is l.With("rate=1200kbit").
func (l Link) With(s string) (Link, error) {
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return l, fmt.Errorf("netem: %q: want key=value", kv)
		}
		var err error
		switch k {
		case "delay":
			l.Delay, err = time.ParseDuration(v)
		case "jitter":
			l.Jitter, err = time.ParseDuration(v)
		case "loss":
			var p float64
			p, err = strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
			l.Loss = p / 100
		case "rate":
			l.Rate, err = parseRate(v)
		case "queue":
			l.Queue, err = strconv.Atoi(v)
		case "cc":
			l.CC = v
			if v == "" || strings.ContainsAny(v, "/ .") {
				err = errors.New("want a congestion control's name")
			}
		default:
			err = errors.New("unknown key")
		}
		if err != nil {
			return l, fmt.Errorf("netem: %q: %w", kv, err)
		}
	}
	if l.Loss < 0 || l.Loss > 1 || l.Delay < 0 || l.Jitter < 0 || l.Rate < 0 || l.Queue < 0 {
		return l, fmt.Errorf("netem: %q: out of range", s)
	}
	return l, nil
}

func parseRate(v string) (int64, error) {
	v = strings.ToLower(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} { // longest first
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	return int64(f * float64(mult)), err
}

func (l Link) String() string {
	s := fmt.Sprintf("delay %s each way, jitter %s, loss %.1f %%", l.Delay, l.Jitter, l.Loss*100)
	if l.Rate > 0 {
		s += fmt.Sprintf(", rate %.1f Mbit/s", float64(l.Rate)/1e6)
	}
	if l.CC != "" {
		s += ", TCP congestion control " + l.CC
	}
	return s
}

// Emu is a running emulator: namespace A (the servers) at AddrA, namespace
// B (the clients) at AddrB.
type Emu struct {
	NameA, NameB string
	AddrA, AddrB string // IPv4 addresses inside the namespaces
	link         atomic.Pointer[Link]
	queue        int // packets waiting at most, per direction (fixed at Start)
	tunA, tunB   *os.File
	nsA, nsB     *os.File
	ctx          context.Context
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	// Counters per direction: A→B and B→A.
	Forwarded, Dropped [2]atomic.Int64
}

// Start creates the namespaces and the forwarder. Close removes them.
func Start(link Link) (*Emu, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netem: needs root (network namespaces and TUN devices)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("netem: %w (install iproute2)", err)
	}
	if link.Queue == 0 {
		link.Queue = 1000
	}
	id := fmt.Sprintf("%d-%04x", os.Getpid(), rand.IntN(1<<16))
	e := &Emu{NameA: "qcA-" + id, NameB: "qcB-" + id, AddrA: "10.77.0.1", AddrB: "10.77.0.2", queue: link.Queue}
	e.link.Store(&link)
	fail := func(err error) (*Emu, error) { e.Close(); return nil, err }
	for _, ns := range []string{e.NameA, e.NameB} {
		if err := ip("netns", "add", ns); err != nil {
			return fail(err)
		}
		if err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
			return fail(err)
		}
		if link.CC != "" {
			if err := ip("netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control="+link.CC); err != nil {
				return fail(fmt.Errorf("%w (a namespace may use only net.ipv4.tcp_allowed_congestion_control's)", err))
			}
		}
	}
	var err error
	if e.nsA, err = os.Open("/var/run/netns/" + e.NameA); err != nil {
		return fail(err)
	}
	if e.nsB, err = os.Open("/var/run/netns/" + e.NameB); err != nil {
		return fail(err)
	}
	if e.tunA, err = e.tun(e.nsA, e.NameA, e.AddrA, e.AddrB); err != nil {
		return fail(err)
	}
	if e.tunB, err = e.tun(e.nsB, e.NameB, e.AddrB, e.AddrA); err != nil {
		return fail(err)
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(2)
	go e.forward(e.tunA, e.tunB, 0)
	go e.forward(e.tunB, e.tunA, 1)
	return e, nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netem: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// tun creates the TUN device qc0 inside ns and gives it local, with a
// route to peer through it.
func (e *Emu) tun(ns *os.File, name, local, peer string) (*os.File, error) {
	var f *os.File
	err := inNetns(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("netem: /dev/net/tun: %w", err)
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], "qc0")
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
			unix.Close(fd)
			return fmt.Errorf("netem: TUNSETIFF: %w", errno)
		}
		f = os.NewFile(uintptr(fd), "tun-"+name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-n", name, "addr", "add", local + "/32", "peer", peer, "dev", "qc0"},
		{"-n", name, "link", "set", "qc0", "up"},
	} {
		if err := ip(args...); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// inNetns runs f on an OS thread that is inside ns; sockets f creates
// belong to ns wherever they are used later.
func inNetns(ns *os.File, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return // the thread stays locked and dies with this goroutine
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netem: setns: %w", err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, err) // leave the thread locked: it is in the wrong namespace
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InA and InB run f inside namespace A or B (to create listeners or
// dial from there).
func (e *Emu) InA(f func() error) error { return inNetns(e.nsA, f) }
func (e *Emu) InB(f func() error) error { return inNetns(e.nsB, f) }

// DialB dials from namespace B.
func (e *Emu) DialB(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := e.InB(func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// DialA dials from namespace A (next to the servers, past the link).
func (e *Emu) DialA(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := e.InA(func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenPacketB opens a UDP socket in namespace B (for QUIC clients).
func (e *Emu) ListenPacketB() (net.PacketConn, error) {
	var pc net.PacketConn
	err := e.InB(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", e.AddrB+":0")
		return err
	})
	return pc, err
}

// Exec returns the arguments that run a command inside namespace A.
func (e *Emu) Exec() []string { return []string{"ip", "netns", "exec", e.NameA} }

type packet struct {
	b   []byte
	due time.Time
}

// SetLink changes delay, jitter, loss and rate from the next packet on
// (a bandwidth drop, then its recovery); packets already queued keep the
// times they were given. The queue's length and the TCP congestion control
// stay the ones Start was given.
func (e *Emu) SetLink(l Link) {
	l.Queue, l.CC = e.queue, e.link.Load().CC
	e.link.Store(&l)
}

// Link returns the link packets are sent through now.
func (e *Emu) Link() Link { return *e.link.Load() }

// forward moves packets from in to out through the link model.
func (e *Emu) forward(in, out *os.File, dir int) {
	defer e.wg.Done()
	q := make(chan packet, e.queue)
	done := make(chan struct{})
	go func() { // the wire: releases packets at their due time, in order
		defer close(done)
		t := time.NewTimer(time.Hour)
		defer t.Stop()
		for p := range q {
			if d := time.Until(p.due); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-e.ctx.Done():
					return
				}
			}
			if _, err := out.Write(p.b); err == nil {
				e.Forwarded[dir].Add(1)
			}
		}
	}()
	defer func() { close(q); <-done }()
	var last time.Time // due time of the previous packet: order is kept
	var free time.Time // when the rate-limited wire is free again
	buf := make([]byte, 65536)
	for {
		n, err := in.Read(buf)
		if err != nil {
			return
		}
		link := e.link.Load()
		if link.Loss > 0 && rand.Float64() < link.Loss {
			e.Dropped[dir].Add(1)
			continue
		}
		now := time.Now()
		sent := now
		if link.Rate > 0 {
			if free.Before(now) {
				free = now
			}
			free = free.Add(time.Duration(float64(n*8) / float64(link.Rate) * float64(time.Second)))
			sent = free
		}
		due := sent.Add(link.Delay)
		if link.Jitter > 0 {
			due = due.Add(time.Duration((rand.Float64()*2 - 1) * float64(link.Jitter)))
		}
		if due.Before(last) {
			due = last
		}
		last = due
		p := packet{b: append([]byte(nil), buf[:n]...), due: due}
		select {
		case q <- p:
		default:
			e.Dropped[dir].Add(1) // queue full: drop tail
		}
	}
}

// Close stops the forwarder and removes the namespaces.
func (e *Emu) Close() error {
	if e.cancel != nil {
		e.cancel()
	}
	for _, f := range []*os.File{e.tunA, e.tunB, e.nsA, e.nsB} {
		if f != nil {
			f.Close()
		}
	}
	e.wg.Wait()
	var errs []error
	for _, ns := range []string{e.NameA, e.NameB} {
		if ns != "" {
			if err := ip("netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
