// Package prefixconn gives back bytes already read from a connection: the
// dataplane reads a client's first bytes to choose a route and the tunnel
// client may read a server's first bytes with a proxy's reply, and
// whoever reads the connection next must see them first.
package prefixconn

import "net"

// Conn returns pre before reading on from the connection it wraps. It
// exposes that connection with NetConn, as crypto/tls does, so that
// whoever needs the socket underneath unwraps it the one way.
type Conn struct {
	net.Conn
	pre []byte
}

// New is c with pre in front of what it returns; c itself when pre is
// empty. pre is not copied: the caller gives it up.
func New(c net.Conn, pre []byte) net.Conn {
	if len(pre) == 0 {
		return c
	}
	return &Conn{Conn: c, pre: pre}
}

// Read returns what is left of the prefix, then reads the connection.
func (c *Conn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// CloseWrite half-closes the wrapped connection when it can, and closes
// it otherwise.
func (c *Conn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Buffered is how many prefix bytes Read still returns before the wrapped
// connection's: a reader waiting on the socket underneath must not wait
// while there are any (a TLS stream over c parks only once it is 0).
func (c *Conn) Buffered() int { return len(c.pre) }

var _ net.Conn = (*Conn)(nil)
