package tlsrec

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestKernelListsTLS(t *testing.T) {
	for in, want := range map[string]bool{"mptcp\n": false, "mptcp tls\n": true, "tls": true, "": false, "ktls": false} {
		if kernelListsTLS(in) != want {
			t.Errorf("%q: %v", in, !want)
		}
	}
}

// TestKernelCryptoInfoLayout checks the TLS_TX value against
// linux/tls.h's struct sizes and field order.
func TestKernelCryptoInfoLayout(t *testing.T) {
	for id, size := range map[uint16]int{tls.TLS_AES_128_GCM_SHA256: 40, tls.TLS_AES_256_GCM_SHA384: 56, tls.TLS_CHACHA20_POLY1305_SHA256: 56} {
		s := &Session{}
		s.out.suite = suites[id]
		s.out.setSecret(bytes.Repeat([]byte{1}, s.out.suite.hash().Size()))
		s.out.seq = 0x0102030405060708
		b := s.kernelCryptoInfo()
		if len(b) != size || binary.NativeEndian.Uint16(b) != 0x0304 || binary.NativeEndian.Uint16(b[2:]) != s.out.suite.kernel {
			t.Fatalf("%s: %d bytes % x", tls.CipherSuiteName(id), len(b), b[:4])
		}
		if !bytes.Equal(b[len(b)-8:], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
			t.Errorf("%s: rec_seq % x", tls.CipherSuiteName(id), b[len(b)-8:])
		}
		kl := s.out.suite.keyLen
		if id == tls.TLS_CHACHA20_POLY1305_SHA256 {
			if !bytes.Equal(b[4:16], s.out.iv[:]) || !bytes.Equal(b[16:16+kl], s.out.key) {
				t.Errorf("chacha20: iv or key misplaced")
			}
		} else if !bytes.Equal(b[4:12], s.out.iv[4:]) || !bytes.Equal(b[12:12+kl], s.out.key) || !bytes.Equal(b[12+kl:16+kl], s.out.iv[:4]) {
			t.Errorf("%s: iv, key or salt misplaced", tls.CipherSuiteName(id))
		}
	}
}

// TestKernelTX: where the kernel offers TLS, what is written in plain
// after StartKernelTX reaches a crypto/tls peer; where it does not (this
// project's CI machines), StartKernelTX says so and the session goes on
// sealing in user space.
func TestKernelTX(t *testing.T) {
	server, client := pair(t)
	s, raw, err := Take(server)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := raw.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	err = s.StartKernelTX(rc)
	msg := []byte("sealed by the kernel")
	switch {
	case KernelAvailable():
		if err != nil {
			t.Fatalf("kernel TLS listed but refused: %v", err)
		}
		raw.Write(msg)
	case !errors.Is(err, ErrNoKernelTLS) || s.KernelTX():
		t.Fatalf("without kernel TLS: %v, kernelTX %v", err, s.KernelTX())
	default:
		msg = []byte("sealed here")
		raw.Write(s.Seal(nil, msg))
	}
	got := make([]byte, len(msg))
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("peer read %q, %v", got, err)
	}
}
