package remote_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quiccast/quiccast/infra/remote"
	"github.com/quiccast/quiccast/infra/sshtest"
)

func dial(t *testing.T, s *sshtest.Server, knownHosts string) (*remote.Host, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := remote.Dial(ctx, "test", s.Addr, "root", remote.Config{KnownHosts: knownHosts, Key: s.UserKey})
	if err == nil {
		t.Cleanup(func() { h.Close() })
	}
	return h, err
}

func TestHostKeyMustMatchKnownHosts(t *testing.T) {
	s := sshtest.Start(t)
	if _, err := dial(t, s, sshtest.KnownHosts(t, s.KnownHostsLine())); err != nil {
		t.Fatalf("the right key: %v", err)
	}
	_, err := dial(t, s, sshtest.KnownHosts(t, sshtest.KeyLine(t, s.Addr)))
	if !errors.Is(err, remote.ErrHostKey) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("a different key for the host: got %v, want ErrHostKey saying it does not match", err)
	}
	_, err = dial(t, s, sshtest.KnownHosts(t, sshtest.KeyLine(t, "127.0.0.1:1")))
	if !errors.Is(err, remote.ErrHostKey) || !strings.Contains(err.Error(), "is not in") {
		t.Fatalf("a host not in known_hosts: got %v, want ErrHostKey saying it is not known", err)
	}
}

func TestPutReplacesAFileAtomically(t *testing.T) {
	s := sshtest.Start(t)
	h, err := dial(t, s, sshtest.KnownHosts(t, s.KnownHostsLine()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const file = "/usr/local/lib/quiccast-test/blob"
	a, b := make([]byte, 16<<20), make([]byte, 16<<20)
	rand.Read(a)
	rand.Read(b)
	if err := h.Put(ctx, file, a, 0o640, "root:root"); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.SHA256(ctx, file); got != remote.Sum(a) {
		t.Fatalf("after the first put: sha %s", got)
	}
	if out, _ := h.Run(ctx, "stat -c %a "+file, nil); strings.TrimSpace(out) != "640" {
		t.Fatalf("mode %q, want 640", out)
	}

	// While b replaces a, the file (seen from outside the host) is
	// always all of a or all of b.
	seen := map[string]int{}
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := os.ReadFile(s.Upper(file))
			if err != nil {
				continue
			}
			mu.Lock()
			switch {
			case bytes.Equal(got, a):
				seen["a"]++
			case bytes.Equal(got, b):
				seen["b"]++
			default:
				seen["partial"]++
			}
			mu.Unlock()
		}
	}()
	if err := h.Put(ctx, file, b, 0o640, ""); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if seen["partial"] > 0 || seen["a"] == 0 {
		t.Fatalf("reads during the upload: %v; want only whole files, a at first", seen)
	}

	// An upload cut short leaves the old file and no temporary file.
	cctx, cancel := context.WithCancel(ctx)
	pr := &slowReader{data: a, cancel: cancel, after: 1 << 20}
	err = h.PutFrom(cctx, file, pr, remote.Sum(a), 0o640, "")
	if err == nil {
		t.Fatal("a cancelled upload succeeded")
	}
	if got, _ := h.SHA256(ctx, file); got != remote.Sum(b) {
		t.Fatal("a cancelled upload changed the file")
	}
	testWait(t, func() bool {
		out, _ := h.Run(ctx, "ls -A /usr/local/lib/quiccast-test", nil)
		return strings.TrimSpace(out) == "blob"
	})
}

func testWait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("the temporary file of the cancelled upload stayed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slowReader gives after bytes, then cancels the upload.
type slowReader struct {
	data   []byte
	off    int
	after  int
	cancel func()
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.off >= r.after {
		r.cancel()
		time.Sleep(50 * time.Millisecond)
		return 0, errors.New("cut")
	}
	n := copy(p, r.data[r.off:r.after])
	r.off += n
	return n, nil
}
