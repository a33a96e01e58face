package dataplane

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/portmux/portmux/dataplane/forward"
)

// The connection wrappers. Each exposes what it wraps with NetConn, as
// crypto/tls does, so that whoever needs the socket underneath (the
// tunnels' keepalive, to see whether its send buffer has room) unwraps
// them all one way.

// prefixConn replays bytes read while sniffing before reading on.
type prefixConn struct {
	net.Conn
	pre []byte
}

// withPrefix is c with pre in front of what it returns.
func withPrefix(c net.Conn, pre []byte) net.Conn {
	if len(pre) == 0 {
		return c
	}
	return &prefixConn{Conn: c, pre: pre}
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite half-closes the underlying connection when it can.
func (p *prefixConn) CloseWrite() error {
	if hc, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return p.Close()
}

// NetConn returns the wrapped connection.
func (p *prefixConn) NetConn() net.Conn { return p.Conn }

var _ forward.Prefixed = (*prefixConn)(nil)

// Buffered is how many prefix bytes Read still returns: a TLS stream over
// p parks only once they are consumed (forward.Prefixed).
func (p *prefixConn) Buffered() int { return len(p.pre) }

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
	_ net.Conn     = (*prefixConn)(nil)
	_ net.Conn     = (*countingConn)(nil)
	_ net.Listener = (*oneConnListener)(nil)
)
