package tlsrec

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartKernelTX hands the sending keys to the kernel (kTLS): from then
// on, bytes written to the socket leave as TLS application-data records
// sealed by the kernel, and Seal must not be used. It fails with
// ErrNoKernelTLS where the kernel does not offer it, and then changes
// nothing. A KeyUpdate the peer asks for cannot be answered after it
// (Pending reports it; end the connection).
func (s *Session) StartKernelTX(rc syscall.RawConn) error {
	if !KernelAvailable() {
		return ErrNoKernelTLS
	}
	info := s.kernelCryptoInfo()
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptString(int(fd), unix.SOL_TCP, unix.TCP_ULP, "tls"); serr != nil {
			serr = fmt.Errorf("%w: TCP_ULP: %v", ErrNoKernelTLS, serr)
			return
		}
		// After the ULP is set a failed TLS_TX leaves the socket
		// usable for plain writes: the caller goes on sealing itself.
		if serr = unix.SetsockoptString(int(fd), unix.SOL_TLS, 1 /* TLS_TX */, string(info)); serr != nil {
			serr = fmt.Errorf("%w: TLS_TX: %v", ErrNoKernelTLS, serr)
		}
	})
	clear(info)
	if err == nil {
		err = serr
	}
	if err == nil {
		s.kernelTX = true
	}
	return err
}
