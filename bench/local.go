package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// node is a quiccast process the benchmark started.
type node struct {
	name  string
	kind  string // "origin" or "edge"
	cmd   *exec.Cmd
	http  string // base URL
	relay string // relay address
	tier  string // in a cluster run (cluster.go)
	done  chan struct{}
	mu    sync.Mutex
	tail  []string
}

// local is a deployment on this machine: one origin and some edges, each
// its own process, so that each one's CPU and memory can be read apart.
type local struct {
	origin *node
	edges  []*node
	token  string // cluster and admin token of this run
}

// startLocal starts the origin and n edges (server "edge") or n naive
// WebTransport servers (server "naive", bench/naivewt). wrap, when set, prefixes each
// command (ip netns exec …, for the emulator); host is the address they
// listen on.
func startLocal(ctx context.Context, bin string, edges int, server, host string, wrap, edgeFlags []string) (*local, error) {
	// The relay and /metrics may be on an emulator address other hosts
	// could reach: the nodes and the bench authenticate with a token made
	// for this run.
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	l := &local{token: token}
	var err error
	l.origin, err = startNode(ctx, bin, "origin", "origin", wrap,
		"-listen", host+":0", "-relay-listen", host+":0", "-rtmp-listen", "", "-node-id", "bench-origin", "-pprof", "-max-rate", "1000000000", "-max-messages", "100000",
		"-cluster-token", token, "-admin-token", token)
	if err != nil {
		return nil, err
	}
	for i := range edges {
		if server == "naive" {
			e, err := startNode(ctx, bin, fmt.Sprintf("naive-%d", i+1), "naive-wt", wrap,
				"-listen", host+":0", "-origin", l.origin.relay, "-cluster-token", token, "-admin-token", token)
			if err != nil {
				l.stop()
				return nil, err
			}
			l.edges = append(l.edges, e)
			continue
		}
		args := append([]string{"-listen", host + ":0", "-parent", l.origin.relay, "-node-id", fmt.Sprintf("bench-edge-%d", i+1), "-max-viewers", "100000", "-pprof",
			"-cluster-token", token, "-admin-token", token}, edgeFlags...)
		e, err := startNode(ctx, bin, fmt.Sprintf("edge-%d", i+1), "edge", wrap, args...)
		if err != nil {
			l.stop()
			return nil, err
		}
		l.edges = append(l.edges, e)
	}
	return l, nil
}

func startNode(ctx context.Context, bin, name, kind string, wrap []string, args ...string) (*node, error) {
	argv := append(append([]string{}, wrap...), bin, kind)
	argv = append(argv, args...)
	argv = append(argv, "-log-format", "json")
	n := &node{name: name, kind: kind, done: make(chan struct{})}
	n.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	ready := make(chan map[string]any, 1)
	go func() {
		defer close(n.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.tail = append(n.tail, line)
			if len(n.tail) > 50 {
				n.tail = n.tail[1:]
			}
			n.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == kind+" listening" {
				select {
				case ready <- m:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case m := <-ready:
		n.http = "http://" + fmt.Sprint(m["addr"])
		if m["tls"] == true { // -tls-cert: HTTPS (and wss://) on -listen
			n.http = "https://" + fmt.Sprint(m["addr"])
		}
		n.relay, _ = m["relay"].(string)
		return n, nil
	case <-n.done:
		n.cmd.Wait()
		return nil, fmt.Errorf("bench: %s exited: %s", name, n.lastLines())
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		return nil, fmt.Errorf("bench: %s not ready after 10 s: %s", name, n.lastLines())
	}
}

func (n *node) lastLines() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.tail, "\n")
}

func (n *node) stop() {
	if n == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Kill()
	n.cmd.Wait()
	<-n.done
}

func (l *local) stop() {
	for _, e := range l.edges {
		e.stop()
	}
	l.origin.stop()
}

// edgeURLs returns the edges' base URLs.
func (l *local) edgeURLs() []string {
	var out []string
	for _, e := range l.edges {
		out = append(out, e.http)
	}
	return out
}
