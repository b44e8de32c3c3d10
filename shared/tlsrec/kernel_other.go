//go:build !linux

package tlsrec

import "syscall"

// StartKernelTX: kernel TLS is Linux's.
func (s *Session) StartKernelTX(syscall.RawConn) error { return ErrNoKernelTLS }
