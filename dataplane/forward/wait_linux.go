package forward

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// waitReadable parks until the socket behind raw has data or has reached end
// of stream, without reading it and without holding a buffer. It returns how
// many bytes are queued; 0 means EOF. The read deadline of the connection
// applies.
func waitReadable(raw syscall.RawConn) (int, error) {
	var (
		avail int
		opErr error
		one   [1]byte
	)
	err := raw.Read(func(fd uintptr) bool {
		// Under load data is usually queued: one ioctl answers. Only an
		// empty queue needs the peek, to tell "nothing yet" from EOF.
		if q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil && q > 0 {
			avail = q
			return true
		}
		n, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // not yet: the poller parks us until readable
		case err != nil:
			opErr = err
			return true
		case n == 0:
			avail = 0 // orderly shutdown by the peer
			return true
		}
		avail = 1 // data arrived between the ioctl and the peek
		return true
	})
	if err != nil {
		return 0, err
	}
	return avail, opErr
}

// WaitReadable parks until c has data queued or has reached end of stream,
// holding no buffer while it waits, and reports how many bytes are queued
// (0 at end of stream). c's read deadline applies. It lets a caller take a
// buffer only once a client has actually sent something.
func WaitReadable(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	return waitReadable(raw)
}
