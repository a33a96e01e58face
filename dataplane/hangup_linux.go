package dataplane

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// hungUp reports whether the peer of a socket closed or reset it, without
// reading what it may still have sent: POLLRDHUP tells a peer that shut
// its side apart from one with bytes still to read.
func hungUp(rc syscall.RawConn) bool {
	gone := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}
