package tlsrec

import (
	"bytes"
	"crypto/tls"
	"testing"
)

// FuzzRead feeds a session's reader arbitrary bytes from the peer, split
// at an arbitrary point: it must never panic, and what it keeps of a
// partial record stays within MaxRecord.
func FuzzRead(f *testing.F) {
	su := suites[tls.TLS_AES_128_GCM_SHA256]
	secret := bytes.Repeat([]byte{9}, 32)
	newPair := func() (*Session, *Session) {
		a, b := &Session{MaxRecord: 1024}, &Session{MaxRecord: 1024}
		a.out.suite, b.in.suite, b.out.suite = su, su, su
		a.out.setSecret(secret)
		b.in.setSecret(secret)
		b.out.setSecret(secret)
		return a, b
	}
	a, _ := newPair()
	f.Add(a.Seal(nil, []byte("\x89\x80abcd")), 3)
	a, _ = newPair()
	f.Add(a.seal(nil, typeHandshake, [][]byte{{keyUpdate, 0, 0, 1, 1}}), 0)
	a, _ = newPair()
	f.Add(a.CloseNotify(a.Seal(nil, []byte("x"))), 30)
	f.Add([]byte{23, 3, 3, 0xff, 0xff, 1, 2}, 5)
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		_, b := newPair()
		if cut < 0 || cut > len(in) {
			cut = len(in) / 2
		}
		out, err := b.Read(nil, in[:cut])
		if err == nil {
			out, _ = b.Read(out, in[cut:])
		}
		if len(b.raw) > b.MaxRecord+len(in) || len(out) > len(in) {
			t.Fatalf("kept %d raw bytes and returned %d from %d in", len(b.raw), len(out), len(in))
		}
		b.Seal(nil, []byte("y")) // a KeyUpdate it took must leave the writer usable
	})
}
