// Package tlsrec takes over the TLS 1.3 record layer of a connection from
// crypto/tls once its handshake is done, so that an event-driven writer
// can seal records itself and write them with non-blocking writev, with
// no goroutine blocked in tls.Conn.Write per connection.
//
// crypto/tls has no API for this: Take reads the traffic secrets and
// sequence numbers from the tls.Conn's unexported state with reflect. If
// that state is not laid out as expected (another Go release), Take
// returns ErrUnsupported and the caller keeps using the tls.Conn, so a Go
// upgrade can make the fast path unavailable, never wrong; the package's
// tests check, against a real crypto/tls peer, that it is available and
// correct on the Go the module pins.
//
// After Take the tls.Conn must not be used again (nor closed: its close
// would write an alert with a stale sequence number); the caller owns the
// underlying connection. Only TLS 1.3 with AES-GCM or ChaCha20-Poly1305
// is taken over; KeyUpdate from the peer is handled (both directions
// when it asks). A Session is not safe for concurrent use.
package tlsrec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net"
	"reflect"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// Record content types (RFC 8446 5.1).
const (
	typeAlert     = 21
	typeHandshake = 22
	typeAppData   = 23
)

const (
	// MaxPlaintext is the most application data one record carries.
	MaxPlaintext = 1 << 14
	headerLen    = 5
	tagLen       = 16
	// Overhead is what a record adds to its plaintext: header, content
	// type and tag.
	Overhead = headerLen + 1 + tagLen
	// keyUpdate is the handshake message type of KeyUpdate.
	keyUpdate = 24
)

// Errors of Take and Read.
var (
	// ErrUnsupported: the connection cannot be taken over (not TLS 1.3,
	// another cipher suite, data already buffered inside crypto/tls, or
	// a crypto/tls whose internals differ from the ones this package
	// knows). The tls.Conn is untouched and still usable.
	ErrUnsupported = errors.New("tlsrec: connection cannot be taken over")
	// ErrClosed: the peer sent an alert (close_notify or an error).
	ErrClosed = errors.New("tlsrec: peer closed the TLS session")
	// ErrBadRecord: a record from the peer was malformed, too large or
	// failed authentication.
	ErrBadRecord = errors.New("tlsrec: bad record from the peer")
)

// half is one direction's keys and sequence number.
type half struct {
	suite  *suite
	secret []byte
	key    []byte
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
	nonce  [12]byte
}

func (h *half) setSecret(secret []byte) error {
	key, err := expandLabel(h.suite.hash, secret, "key", h.suite.keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(h.suite.hash, secret, "iv", 12)
	if err != nil {
		return err
	}
	aead, err := h.suite.aead(key)
	if err != nil {
		return err
	}
	h.secret, h.key, h.aead, h.seq = secret, key, aead, 0
	copy(h.iv[:], iv)
	return nil
}

func (h *half) update() error {
	next, err := expandLabel(h.suite.hash, h.secret, "traffic upd", h.suite.hash().Size())
	if err != nil {
		return err
	}
	return h.setSecret(next)
}

// nextNonce is the per-record nonce (RFC 8446 5.3); it counts the record.
func (h *half) nextNonce() []byte {
	h.nonce = h.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], h.seq)
	for i := range s {
		h.nonce[4+i] ^= s[i]
	}
	h.seq++
	return h.nonce[:]
}

type suite struct {
	keyLen int
	hash   func() hash.Hash
	aead   func(key []byte) (cipher.AEAD, error)
	// kernel is the Linux kTLS cipher type (linux/tls.h).
	kernel uint16
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var suites = map[uint16]*suite{
	tls.TLS_AES_128_GCM_SHA256:       {16, sha256.New, gcm, 51},
	tls.TLS_AES_256_GCM_SHA384:       {32, sha512.New384, gcm, 52},
	tls.TLS_CHACHA20_POLY1305_SHA256: {32, sha256.New, chacha20poly1305.New, 54},
}

// expandLabel is HKDF-Expand-Label (RFC 8446 7.1) with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, length int) ([]byte, error) {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0)
	return hkdf.Expand(h, secret, string(info), length)
}

// Session is the record layer of one taken-over connection.
type Session struct {
	out, in   half
	updateDue bool // the peer asked for a KeyUpdate: send ours next
	kernelTX  bool // the kernel seals what is written (KernelTX)
	// MaxRecord bounds a record from the peer (header included); a
	// larger one is ErrBadRecord. Take sets the protocol's limit; lower
	// it where the peer only ever sends small messages.
	MaxRecord int
	raw       []byte // a partial record from the peer
	hs        []byte // scratch for decrypting
}

// Take takes over c's record layer. c's handshake must be complete and
// nothing may be buffered in it (read or unsent); it returns c's
// underlying connection, which the caller now reads and writes through
// the Session.
func Take(c *tls.Conn) (*Session, net.Conn, error) {
	st := c.ConnectionState()
	if !st.HandshakeComplete || st.Version != tls.VersionTLS13 {
		return nil, nil, fmt.Errorf("%w: not a TLS 1.3 session", ErrUnsupported)
	}
	su := suites[st.CipherSuite]
	if su == nil {
		return nil, nil, fmt.Errorf("%w: cipher suite %s", ErrUnsupported, tls.CipherSuiteName(st.CipherSuite))
	}
	in, out, err := peek(c)
	if err != nil {
		return nil, nil, err
	}
	s := &Session{MaxRecord: headerLen + MaxPlaintext + 256}
	s.in.suite, s.out.suite = su, su
	if err := s.in.setSecret(in.secret); err != nil {
		return nil, nil, err
	}
	if err := s.out.setSecret(out.secret); err != nil {
		return nil, nil, err
	}
	s.in.seq, s.out.seq = in.seq, out.seq
	return s, c.NetConn(), nil
}

type peeked struct {
	secret []byte
	seq    uint64
}

// peek reads the traffic secrets and sequence numbers of c's halfConns
// (crypto/tls/conn.go) and checks that no bytes wait inside c.
func peek(c *tls.Conn) (in, out peeked, err error) {
	defer func() {
		if recover() != nil { // a field of another kind than expected
			err = fmt.Errorf("%w: unknown crypto/tls internals", ErrUnsupported)
		}
	}()
	v := reflect.ValueOf(c).Elem()
	field := func(v reflect.Value, name string, kind reflect.Kind) reflect.Value {
		f := v.FieldByName(name)
		if !f.IsValid() || f.Kind() != kind {
			panic(name)
		}
		return f
	}
	half := func(name string) peeked {
		h := field(v, name, reflect.Struct)
		if !field(h, "err", reflect.Interface).IsNil() {
			panic("err")
		}
		seq := field(h, "seq", reflect.Array)
		if seq.Len() != 8 {
			panic("seq")
		}
		var p peeked
		for i := range 8 {
			p.seq = p.seq<<8 | seq.Index(i).Uint()
		}
		p.secret = append([]byte(nil), field(h, "trafficSecret", reflect.Slice).Bytes()...)
		if len(p.secret) == 0 {
			panic("trafficSecret")
		}
		return p
	}
	in, out = half("in"), half("out")
	buffered := func(name string) int { // a bytes.Buffer's Len
		b := field(v, name, reflect.Struct)
		return field(b, "buf", reflect.Slice).Len() - int(field(b, "off", reflect.Int).Int())
	}
	input := field(v, "input", reflect.Struct) // a bytes.Reader
	if buffered("rawInput") != 0 || buffered("hand") != 0 ||
		int64(field(input, "s", reflect.Slice).Len()) != field(input, "i", reflect.Int64).Int() ||
		field(v, "sendBuf", reflect.Slice).Len() != 0 {
		return in, out, fmt.Errorf("%w: data buffered inside crypto/tls", ErrUnsupported)
	}
	return in, out, nil
}

// Seal appends to dst the records carrying data, in order, and returns
// the extended slice. A KeyUpdate the peer asked for goes first. Seal
// with no data still sends that KeyUpdate.
func (s *Session) Seal(dst []byte, data ...[]byte) []byte {
	if s.updateDue {
		dst = s.seal(dst, typeHandshake, [][]byte{{keyUpdate, 0, 0, 1, 0}})
		s.out.update() // cannot fail: the suite and secret length were checked
		s.updateDue = false
	}
	return s.seal(dst, typeAppData, data)
}

// Pending reports whether Seal has something to send even without data
// (a KeyUpdate).
func (s *Session) Pending() bool { return s.updateDue }

// CloseNotify appends a close_notify alert.
func (s *Session) CloseNotify(dst []byte) []byte {
	return s.seal(dst, typeAlert, [][]byte{{1, 0}})
}

func (s *Session) seal(dst []byte, typ byte, data [][]byte) []byte {
	i, off := 0, 0
	for {
		for i < len(data) && off == len(data[i]) {
			i, off = i+1, 0
		}
		if i == len(data) && typ == typeAppData {
			return dst
		}
		start := len(dst)
		dst = append(dst, typeAppData, 3, 3, 0, 0)
		n := 0
		for i < len(data) && n < MaxPlaintext {
			k := min(len(data[i])-off, MaxPlaintext-n)
			dst = append(dst, data[i][off:off+k]...)
			n, off = n+k, off+k
			if off == len(data[i]) {
				i, off = i+1, 0
			}
		}
		dst = append(dst, typ)
		dst = slices.Grow(dst, tagLen) // seal in place
		binary.BigEndian.PutUint16(dst[start+3:], uint16(n+1+tagLen))
		dst = s.out.aead.Seal(dst[:start+headerLen], s.out.nextNonce(), dst[start+headerLen:], dst[start:start+headerLen])
		if typ != typeAppData {
			return dst
		}
	}
}

// Read takes bytes read from the peer (any split) and appends the
// application data of the complete records among them to dst. A partial
// record is kept for the next call (at most MaxRecord bytes). Alerts end
// the session with ErrClosed; KeyUpdate is handled; anything else from
// the peer is ErrBadRecord.
func (s *Session) Read(dst, raw []byte) ([]byte, error) {
	s.raw = append(s.raw, raw...)
	for len(s.raw) >= headerLen {
		if s.raw[0] != typeAppData || s.raw[1] != 3 || s.raw[2] != 3 {
			return dst, fmt.Errorf("%w: unexpected record header % x", ErrBadRecord, s.raw[:3])
		}
		size := headerLen + int(binary.BigEndian.Uint16(s.raw[3:]))
		if size > s.MaxRecord || size < headerLen+1+tagLen {
			return dst, fmt.Errorf("%w: record of %d bytes", ErrBadRecord, size)
		}
		if len(s.raw) < size {
			break
		}
		var err error
		s.hs, err = s.in.aead.Open(s.hs[:0], s.in.nextNonce(), s.raw[headerLen:size], s.raw[:headerLen])
		if err != nil {
			return dst, fmt.Errorf("%w: %v", ErrBadRecord, err)
		}
		s.raw = s.raw[:copy(s.raw, s.raw[size:])]
		p := s.hs
		for len(p) > 0 && p[len(p)-1] == 0 { // padding
			p = p[:len(p)-1]
		}
		if len(p) == 0 {
			return dst, fmt.Errorf("%w: record without a content type", ErrBadRecord)
		}
		typ, p := p[len(p)-1], p[:len(p)-1]
		switch typ {
		case typeAppData:
			dst = append(dst, p...)
		case typeAlert:
			return dst, ErrClosed
		case typeHandshake:
			if err := s.handshake(p); err != nil {
				return dst, err
			}
		default:
			return dst, fmt.Errorf("%w: content type %d", ErrBadRecord, typ)
		}
	}
	if len(s.raw) > s.MaxRecord {
		return dst, fmt.Errorf("%w: record over %d bytes", ErrBadRecord, s.MaxRecord)
	}
	return dst, nil
}

// handshake takes a post-handshake message: only KeyUpdate, alone in its
// record (a key change must fall on a record boundary, RFC 8446 5.1).
func (s *Session) handshake(p []byte) error {
	if len(p) != 5 || p[0] != keyUpdate || p[1] != 0 || p[2] != 0 || p[3] != 1 || p[4] > 1 {
		return fmt.Errorf("%w: post-handshake message other than one KeyUpdate", ErrBadRecord)
	}
	if err := s.in.update(); err != nil {
		return err
	}
	if p[4] == 1 {
		s.updateDue = true
	}
	return nil
}
