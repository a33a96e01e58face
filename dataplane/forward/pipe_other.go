//go:build !linux

package forward

import "net"

// tcpState is empty where splice and parking do not exist.
type tcpState struct{}

// tcp copies through user space where splice does not exist.
func (d *dir) tcp(_, _ *net.TCPConn) (bool, error) { return false, d.buffered() }

func (d *dir) tlsStream(*net.TCPConn) (bool, error) { return false, d.buffered() }
