package tlsrec

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quiccast/quiccast/shared/certs"
)

// pair is a real crypto/tls session over loopback TCP, handshaken, with
// some data already exchanged through crypto/tls both ways (so sequence
// numbers are not zero).
func pair(t *testing.T) (server, client *tls.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert, err := certs.SelfSigned([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		sc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		sc.Handshake() // an error shows below
		done <- sc
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client = tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	server = <-done
	t.Cleanup(func() { nc.Close(); server.NetConn().Close() })
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if k, err := server.Read(buf); err != nil || string(buf[:k]) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("server read %q, %v", buf[:k], err)
	}
	for _, m := range []string{"HTTP/1.1 101\r\n\r\n", "x"} { // two records
		if _, err := server.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	want := "HTTP/1.1 101\r\n\r\nx"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != want {
		t.Fatalf("client read %q, %v", got, err)
	}
	return server, client
}

// TestTakenOverSessionTalksToCryptoTLS: after Take, records sealed here
// are read by the crypto/tls peer (big writes split, a KeyUpdate first
// when due, close_notify as EOF), and the peer's records are read here.
func TestTakenOverSessionTalksToCryptoTLS(t *testing.T) {
	server, client := pair(t)
	s, raw, err := Take(server)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 3000) // with the rest 48,009 bytes: three records
	msgs := [][]byte{[]byte("first"), {}, big, []byte("last")}
	want := bytes.Join(msgs, nil)
	out := s.Seal(nil, msgs...)
	if n := len(out) - len(want); n != 3*Overhead {
		t.Errorf("%d bytes of overhead, want 3 records' (%d)", n, 3*Overhead)
	}
	s.updateDue = true // as if the peer had asked: crypto/tls must follow our KeyUpdate
	out = s.Seal(out, []byte("after the update"))
	want = append(want, "after the update"...)
	if s.Pending() {
		t.Error("KeyUpdate still pending after Seal")
	}
	go raw.Write(out)
	got := make([]byte, len(want))
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("crypto/tls read %d bytes, %v; equal: %v", len(got), err, bytes.Equal(got, want))
	}

	// The peer's records, read in pieces of any size.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		client.Write([]byte("ping"))
		client.Write(bytes.Repeat([]byte{7}, 20000))
	}()
	var plain []byte
	buf := make([]byte, 777)
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(plain) < 20004 {
		k, err := raw.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if plain, err = s.Read(plain, buf[:k]); err != nil {
			t.Fatal(err)
		}
	}
	if string(plain[:4]) != "ping" || len(plain) != 20004 || plain[20003] != 7 {
		t.Fatalf("read %d bytes starting %q", len(plain), plain[:4])
	}

	raw.Write(s.CloseNotify(nil))
	if _, err := client.Read(buf); err != io.EOF {
		t.Fatalf("after close_notify the peer read %v, want EOF", err)
	}
	<-wrote                // a Close beside a Write skips the alert
	cerr := client.Close() // sends its close_notify
	for {
		k, err := raw.Read(buf)
		if err != nil {
			t.Fatalf("no alert before %v (close: %v, raw %d)", err, cerr, len(s.raw))
		}
		if _, err = s.Read(nil, buf[:k]); errors.Is(err, ErrClosed) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestKeyUpdateFromThePeer: a KeyUpdate asking for ours rekeys the read
// side at once and makes the next Seal send one.
func TestKeyUpdateFromThePeer(t *testing.T) {
	server, client := pair(t)
	s, _, err := Take(server)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := Take(client)
	if err != nil {
		t.Fatal(err)
	}
	in := c.seal(nil, typeHandshake, [][]byte{{keyUpdate, 0, 0, 1, 1}})
	c.out.update()
	in = c.Seal(in, []byte("under the new key"))
	got, err := s.Read(nil, in)
	if err != nil || string(got) != "under the new key" || !s.Pending() {
		t.Fatalf("read %q, %v; pending %v", got, err, s.Pending())
	}
	back, err := c.Read(nil, s.Seal(nil, []byte("ok")))
	if err != nil || string(back) != "ok" || c.Pending() {
		t.Fatalf("peer read %q, %v", back, err)
	}
}

// TestEverySuiteRoundTrips seals and opens with each suite's keys (the
// crypto/tls test above negotiates AES-128-GCM only).
func TestEverySuiteRoundTrips(t *testing.T) {
	for id, su := range suites {
		secret := bytes.Repeat([]byte{byte(id)}, su.hash().Size())
		a, b := &Session{MaxRecord: 1 << 15}, &Session{MaxRecord: 1 << 15}
		a.out.suite, b.in.suite = su, su
		if err := a.out.setSecret(secret); err != nil {
			t.Fatal(err)
		}
		if err := b.in.setSecret(secret); err != nil {
			t.Fatal(err)
		}
		got, err := b.Read(nil, a.Seal(nil, []byte("one"), bytes.Repeat([]byte{1}, MaxPlaintext)))
		if err != nil || len(got) != 3+MaxPlaintext {
			t.Errorf("%s: %d bytes, %v", tls.CipherSuiteName(id), len(got), err)
		}
	}
}

// TestBadRecordsAreRefused: a forged or oversized record is an error,
// and a partial record is held only up to MaxRecord.
func TestBadRecordsAreRefused(t *testing.T) {
	server, client := pair(t)
	s, _, err := Take(server)
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := Take(client)
	rec := c.Seal(nil, []byte("hello"))
	rec[len(rec)-1] ^= 1
	if _, err := s.Read(nil, rec); !errors.Is(err, ErrBadRecord) {
		t.Errorf("forged tag: %v", err)
	}
	s2, _, _ := Take(server) // fresh state from the untouched tls.Conn
	s2.MaxRecord = 200
	if _, err := s2.Read(nil, []byte{23, 3, 3, 1, 0}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("a 256-byte record past MaxRecord 200: %v", err)
	}
	if _, err := s2.Read(nil, []byte{22, 3, 1, 0, 10}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("a plaintext handshake record: %v", err)
	}
}

// TestTakeRefusesWhatItCannotCarry: TLS 1.2, and bytes left inside
// crypto/tls.
func TestTakeRefusesWhatItCannotCarry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert, _ := certs.SelfSigned([]string{"127.0.0.1"}, time.Hour)
	go func() {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		c := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
		c.Handshake()
		time.Sleep(time.Second)
		nc.Close()
	}()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sc := tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err := sc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Take(sc); !errors.Is(err, ErrUnsupported) {
		t.Errorf("TLS 1.2: %v, want ErrUnsupported", err)
	}

	server, client := pair(t)
	client.Write([]byte("abcdef"))
	b := make([]byte, 2)
	io.ReadFull(server, b) // "ab" read, "cdef" left in crypto/tls
	if _, _, err := Take(server); !errors.Is(err, ErrUnsupported) {
		t.Errorf("with data buffered: %v, want ErrUnsupported", err)
	}
}
