//go:build !linux

package forward

import "net"

// tcp copies through user space where splice does not exist.
func (p *pipe) tcp(dst, src *net.TCPConn) (int64, error) { return p.buffered(dst, src) }
