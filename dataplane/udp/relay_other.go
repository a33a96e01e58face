//go:build !linux

package udp

import (
	"errors"
	"net"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// Relay serves one bound UDP listener; on this system it cannot be made.
type Relay struct{}

// errNotLinux: the relay waits on its sessions' sockets with epoll.
var errNotLinux = errors.New("UDP listeners are served on Linux only")

// Listen fails: the relay needs Linux.
func Listen(string, Options) (*Relay, error) { return nil, errNotLinux }

// Addr is nil: nothing is bound.
func (*Relay) Addr() net.Addr { return nil }

// Sessions is zero.
func (*Relay) Sessions() int { return 0 }

// Clients is zero.
func (*Relay) Clients() int { return 0 }

// SetListener fails: the relay needs Linux.
func (*Relay) SetListener(*snapshot.Listener) error { return errNotLinux }

// Close does nothing.
func (*Relay) Close() error { return nil }
