package dataplane

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/prefixconn"
	"github.com/portmux/portmux/dataplane/tlsmem"
)

// The connection wrappers. Each exposes what it wraps with NetConn, as
// crypto/tls does, so that whoever needs the socket underneath (the
// tunnels' keepalive, to see whether its send buffer has room) unwraps
// them all one way.

// withPrefix is c with pre, the bytes read while sniffing, in front of
// what it returns.
func withPrefix(c net.Conn, pre []byte) net.Conn { return prefixconn.New(c, pre) }

// A TLS stream over a prefixed connection parks only once the prefix is
// consumed.
var _ forward.Prefixed = (*prefixconn.Conn)(nil)

// So does a TLS stream over the layer that can move it to a relay loop.
var _ forward.Prefixed = (*tlsmem.Conn)(nil)

// countingConn counts bytes each way and reports the client address the
// dataplane established (a PROXY header's, not the load balancer's).
type countingConn struct {
	net.Conn
	remote  string
	in, out atomic.Int64
	// onClose runs when the server closes the connection: the listener
	// that handed it out reports closed then, whatever ConnState said.
	onClose func()
}

// Close closes the connection and runs onClose.
func (c *countingConn) Close() error {
	if c.onClose != nil {
		defer c.onClose()
	}
	return c.Conn.Close()
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
}

// RemoteAddr is the client's address as the dataplane established it.
func (c *countingConn) RemoteAddr() net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", c.remote); err == nil {
		return a
	}
	return c.Conn.RemoteAddr()
}

// NetConn returns the wrapped connection.
func (c *countingConn) NetConn() net.Conn { return c.Conn }

// oneConnListener hands one connection to http.Server and then reports
// closed once that connection is done, so Serve returns.
type oneConnListener struct {
	mu   sync.Mutex
	conn net.Conn
	addr net.Addr
	done chan struct{}
	once sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{conn: c, addr: c.LocalAddr(), done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) finish() { l.once.Do(func() { close(l.done) }) }

func (l *oneConnListener) Close() error { l.finish(); return nil }

func (l *oneConnListener) Addr() net.Addr { return l.addr }

var (
	_ net.Conn     = (*countingConn)(nil)
	_ net.Listener = (*oneConnListener)(nil)
)
