//go:build !linux

package dataplane

import (
	"errors"
	"net"
)

// dupSocket fails: only Linux has relay loops to carry the socket.
func dupSocket(*net.TCPConn) (int, error) { return -1, errors.New("relay loops are Linux only") }
