//go:build !linux

package dataplane

import (
	"errors"
	"net"
)

// deferAccept is Linux's TCP_DEFER_ACCEPT; elsewhere connections are
// accepted at once.
func deferAccept(net.Listener, bool) error {
	return errors.New("TCP_DEFER_ACCEPT is Linux only")
}
