package dataplane

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// dupSocket is a descriptor of c's socket of its own, for a relay loop
// to carry once c is closed.
func dupSocket(c *net.TCPConn) (int, error) {
	sc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	fd := -1
	var derr error
	if err := sc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return fd, nil
}
