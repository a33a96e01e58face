//go:build unix && !linux

package dataplane

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// hungUp reports whether the peer of a socket closed or reset it, without
// reading what it may still have sent. Without POLLRDHUP, a peek that
// finds the end of the stream (or an error) is the sign; a peer that
// closed after sending bytes still unread is seen once they are read.
func hungUp(rc syscall.RawConn) bool {
	gone := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		gone = (n == 0 && err == nil) || (err != nil && !errors.Is(err, unix.EAGAIN))
	})
	return gone
}
