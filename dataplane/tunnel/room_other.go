//go:build !linux

package tunnel

import "net"

// socketRoom cannot ask the socket on this platform: the caller falls back
// to "no data write in progress".
func socketRoom(net.Conn) func() bool { return nil }
