package tunnel

import (
	"net"

	"golang.org/x/sys/unix"
)

// socketRoom returns a function that reports whether the TCP socket under
// c has room in its send buffer for a control frame, or nil when there is
// no socket to ask (c is not over TCP).
//
// It compares the bytes the peer has not acknowledged (TIOCOUTQ) with the
// send buffer's size: under a quarter of it, a control frame of a few bytes
// cannot block. A peer that stops reading fills the buffer, and then no
// ping or pong is written until it reads again.
func socketRoom(c net.Conn) func() bool {
	tc := tcpConnOf(c)
	if tc == nil {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() bool {
		room := true
		_ = raw.Control(func(fd uintptr) {
			q, err := unix.IoctlGetInt(int(fd), unix.TIOCOUTQ)
			if err != nil {
				return
			}
			b, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
			if err != nil {
				return
			}
			room = q < b/4
		})
		return room
	}
}
