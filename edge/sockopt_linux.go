package edge

import (
	"net"

	"golang.org/x/sys/unix"
)

// setUnsentLimit sets TCP_NOTSENT_LOWAT on a TCP connection: the kernel
// then reports the socket writable, and accepts more data, only while fewer
// than n bytes wait unsent. Other connections are left alone.
func setUnsentLimit(c net.Conn, n int) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
	})
}
