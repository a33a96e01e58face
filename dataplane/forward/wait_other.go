//go:build !linux

package forward

import (
	"net"
	"syscall"
)

// waitReadable is the portable fallback: without a way to peek it reports a
// fixed chunk, and ReadFrom blocks for it.
func waitReadable(syscall.RawConn) (int, error) { return 1 << 20, nil }

// WaitReadable on this platform cannot wait without reading: it reports a
// full chunk at once and the caller's read blocks instead.
func WaitReadable(*net.TCPConn) (int, error) { return 1 << 20, nil }
