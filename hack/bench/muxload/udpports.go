//go:build linux

package main

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// clientPortQuarantine is how long a client port stays unused after a
// session dialled from it: a mux keeps a session for its client address
// until the session idles out (portmux and nginx: a minute for udp-any),
// and a new socket that the kernel gives the same port is, to the mux,
// rightly that old session's next datagram. Counted as a new session, it
// would be one the backend never saw: a run that fails on a routing
// error the mux did not make.
const clientPortQuarantine = 2 * time.Minute

// clientPortTries bounds how many sockets one dial opens looking for a
// port out of quarantine, so a box short of ports fails the run with a
// reason instead of spinning.
const clientPortTries = 32

// udpDialer opens connected client sockets on ports no session of the
// last clientPortQuarantine used. One is shared by every run against one
// mux, since the mux's sessions outlive the runs.
type udpDialer struct {
	mu        sync.Mutex
	used      map[int]time.Time // local port → when a session was last dialled from it
	lastPrune time.Time
	now       func() time.Time // time.Now; tests set it
}

// newUDPDialer is a dialer with no port used yet.
func newUDPDialer() *udpDialer {
	return &udpDialer{used: map[int]time.Time{}, now: time.Now}
}

// dial connects a new socket to addr from a port out of quarantine. The
// sockets it turned down stay open until it returns, so the kernel does
// not offer their ports again.
func (d *udpDialer) dial(addr string) (*net.UDPConn, error) {
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	var refused []*net.UDPConn
	defer func() {
		for _, c := range refused {
			_ = c.Close()
		}
	}()
	for range clientPortTries {
		c, err := net.DialUDP("udp", nil, ra)
		if err != nil {
			return nil, err
		}
		if d.take(c.LocalAddr().(*net.UDPAddr).Port) {
			return c, nil
		}
		refused = append(refused, c)
	}
	return nil, fmt.Errorf("no client port free of a session of the last %v in %d tries", clientPortQuarantine, clientPortTries)
}

// take records a session dialled from port and says whether the port was
// out of quarantine.
func (d *udpDialer) take(port int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if now.Sub(d.lastPrune) >= clientPortQuarantine/4 {
		for p, at := range d.used {
			if now.Sub(at) >= clientPortQuarantine {
				delete(d.used, p)
			}
		}
		d.lastPrune = now
	}
	if at, ok := d.used[port]; ok && now.Sub(at) < clientPortQuarantine {
		return false
	}
	d.used[port] = now
	return true
}
