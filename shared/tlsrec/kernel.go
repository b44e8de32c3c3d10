package tlsrec

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"sync"
)

// ErrNoKernelTLS: this kernel does not offer TLS offload (the "tls" upper
// layer protocol is not in /proc/sys/net/ipv4/tcp_available_ulp; loading
// the tls module adds it).
var ErrNoKernelTLS = errors.New("tlsrec: kernel TLS not available")

var kernelTLS = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	return err == nil && kernelListsTLS(string(b))
})

func kernelListsTLS(ulps string) bool {
	for _, u := range strings.Fields(ulps) {
		if u == "tls" {
			return true
		}
	}
	return false
}

// KernelAvailable reports whether this kernel can seal TLS records
// (checked once).
func KernelAvailable() bool { return kernelTLS() }

// KernelTX reports whether the kernel seals this session's records.
func (s *Session) KernelTX() bool { return s.kernelTX }

// kernelCryptoInfo is the TLS_TX socket option's value for the sending
// keys: struct tls12_crypto_info_{aes_gcm_128,aes_gcm_256,chacha20_poly1305}
// of linux/tls.h, in host order for the two header fields. For TLS 1.3 the kernel's salt and iv together are the static
// IV, and rec_seq is the next record's sequence number.
func (s *Session) kernelCryptoInfo() []byte {
	h := &s.out
	b := binary.NativeEndian.AppendUint16(nil, 0x0304) // TLS_1_3_VERSION
	b = binary.NativeEndian.AppendUint16(b, h.suite.kernel)
	if h.suite.kernel == 54 { // chacha20: iv[12], key[32], no salt
		b = append(b, h.iv[:]...)
		b = append(b, h.key...)
	} else { // aes-gcm: iv[8], key, salt[4]
		b = append(b, h.iv[4:]...)
		b = append(b, h.key...)
		b = append(b, h.iv[:4]...)
	}
	return binary.BigEndian.AppendUint64(b, h.seq)
}
