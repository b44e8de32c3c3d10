//go:build !linux

package edge

import "net"

// setUnsentLimit is a no-op where TCP_NOTSENT_LOWAT is not available.
func setUnsentLimit(net.Conn, int) {}
