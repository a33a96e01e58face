package dataplane

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// deferAccept makes a listening socket hand over a connection only once
// the client has sent its first bytes (TCP_DEFER_ACCEPT), or hand them over
// at once again. On a port where the client always speaks first, the wait
// happens in the kernel: a silent or half-open client costs no goroutine,
// no descriptor and no system call, and a connection arrives with its first
// bytes readable, so sniffing starts with a read instead of a wait. A client
// that stays silent is still accepted after about a second, and the probe
// timeout then applies as usual.
func deferAccept(ln net.Listener, on bool) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return errors.New("not a TCP listener")
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return fmt.Errorf("defer accept: %w", err)
	}
	secs := 0
	if on {
		secs = 1
	}
	var opErr error
	if err := raw.Control(func(fd uintptr) {
		opErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
	}); err != nil {
		return fmt.Errorf("defer accept: %w", err)
	}
	if opErr != nil {
		return fmt.Errorf("defer accept: setsockopt TCP_DEFER_ACCEPT: %w", opErr)
	}
	return nil
}
