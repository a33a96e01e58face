// Package tlsmem is the connection under a crypto/tls server connection
// that moves off its socket: it is the socket while the handshake (and
// whatever else runs on a goroutine) reads and writes it, and memory
// once Detach is called, for an owner that does the socket's I/O itself
// (a relay loop, without a goroutine per connection).
//
// Why this works with crypto/tls: a read that finds no ciphertext fails
// with a temporary timeout (ErrWouldBlock), which tls.Conn returns to its
// caller without recording it, keeping the part of a record it already
// has; the next Read, once the owner has added ciphertext with InRoom and
// InFilled, resumes the record. Writes never fail: tls.Conn's records go
// into a buffer the owner sends from (Out, OutDone), so a client that
// does not read can only make it grow as far as the owner lets it (the
// owner writes no more plaintext while Out holds bytes).
//
// A Conn is not safe for concurrent use once detached: its owner calls
// tls.Conn's methods and its own from one goroutine.
package tlsmem

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/portmux/portmux/dataplane/prefixconn"
)

// ErrWouldBlock is what Read returns once detached when it holds no
// ciphertext: a timeout, which crypto/tls takes as temporary.
var ErrWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsmem: no ciphertext yet" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// minRoom is the least room InRoom offers: a read of the socket into
// less would cost a system call for little.
const minRoom = 4 << 10

// Buffers lends a detached Conn the buffers it holds bytes in, so that
// the connections of one owner share a free list: a Conn holds one only
// while it has bytes in it, and an idle connection none.
type Buffers interface {
	// Get returns a buffer of len size; Put takes one back.
	Get(size int) []byte
	Put(b []byte)
}

// heap is the Buffers of a Conn detached without any: make and the GC.
type heap struct{}

func (heap) Get(size int) []byte { return make([]byte, size) }
func (heap) Put([]byte)          {}

// Conn is the layer under a tls.Conn. Its zero value is not usable: see
// New.
type Conn struct {
	net.Conn // the socket (or a layer on it) until Detach

	detached bool
	bufs     Buffers
	// in[r:] is ciphertext read by the owner that crypto/tls has not
	// taken yet; out[w:] is records not yet sent. Each goes back to bufs
	// as soon as it is empty.
	in  []byte
	r   int
	out []byte
	w   int
	// eof: the owner read the socket's end; Read returns io.EOF once in
	// is empty.
	eof bool
}

// New is nc with the means to move off it.
func New(nc net.Conn) *Conn { return &Conn{Conn: nc} }

// Detach moves the connection to memory: from now on Read returns what
// the owner adds with InRoom and InFilled, unread first (bytes read from
// the socket past the handshake that crypto/tls has not seen, such as a
// prefix layer's; copied), and Write appends to Out. Buffers come from
// bufs (nil: make). The socket is the caller's to carry from here, and
// no Read or Write may be in flight on it.
func (c *Conn) Detach(unread []byte, bufs Buffers) {
	c.detached = true
	c.bufs = bufs
	if c.bufs == nil {
		c.bufs = heap{}
	}
	if len(unread) > 0 {
		room := c.InRoom()
		for len(room) < len(unread) {
			c.grow(len(unread))
			room = c.InRoom()
		}
		c.InFilled(copy(room, unread))
	}
}

// Detached reports whether Detach was called.
func (c *Conn) Detached() bool { return c.detached }

// Read reads the socket until Detach, then the ciphertext the owner
// added.
func (c *Conn) Read(b []byte) (int, error) {
	if !c.detached {
		return c.Conn.Read(b)
	}
	if c.r == len(c.in) {
		if c.eof {
			return 0, io.EOF
		}
		return 0, ErrWouldBlock
	}
	n := copy(b, c.in[c.r:])
	c.r += n
	if c.r == len(c.in) {
		c.bufs.Put(c.in)
		c.in, c.r = nil, 0
	}
	return n, nil
}

// Write writes the socket until Detach, then appends to Out.
func (c *Conn) Write(b []byte) (int, error) {
	if !c.detached {
		return c.Conn.Write(b)
	}
	if c.out == nil {
		c.out = c.bufs.Get(max(len(b), minRoom))[:0]
	}
	c.out = append(c.out, b...)
	return len(b), nil
}

// InRoom is where the owner reads ciphertext from the socket to, at
// least minRoom bytes; InFilled says how much it read.
func (c *Conn) InRoom() []byte {
	if c.in == nil {
		c.in = c.bufs.Get(minRoom)[:0]
	}
	if cap(c.in)-len(c.in) < minRoom {
		if c.r > 0 && cap(c.in)-(len(c.in)-c.r) >= minRoom {
			c.in = c.in[:copy(c.in, c.in[c.r:])]
			c.r = 0
		} else {
			c.grow(len(c.in) - c.r + minRoom)
		}
	}
	return c.in[len(c.in):cap(c.in)]
}

// grow moves what in holds to a buffer of room for size bytes.
func (c *Conn) grow(size int) {
	grown := c.bufs.Get(max(size, 2*cap(c.in)))
	grown = grown[:copy(grown, c.in[c.r:])]
	c.bufs.Put(c.in)
	c.in, c.r = grown, 0
}

// InFilled adds the first n bytes of the last InRoom to what Read
// returns.
func (c *Conn) InFilled(n int) {
	c.in = c.in[:len(c.in)+n]
	if c.r == len(c.in) { // nothing to take: hold no buffer
		c.bufs.Put(c.in)
		c.in, c.r = nil, 0
	}
}

// InEOF says that the socket ended: once crypto/tls has taken what is
// buffered, Read returns io.EOF.
func (c *Conn) InEOF() { c.eof = true }

// Attach moves a detached connection back to a socket, nc (the same
// one, under a new descriptor): the records Out still holds are written
// to it first, and the ciphertext not yet taken is read before it. The
// owner's buffers are given back; no Read or Write may be in flight.
func (c *Conn) Attach(nc net.Conn) error {
	var err error
	if out := c.Out(); len(out) > 0 {
		_, err = nc.Write(out)
	}
	c.OutDone(len(c.out))
	var rest []byte
	if c.r < len(c.in) {
		rest = append([]byte(nil), c.in[c.r:]...)
	}
	if c.in != nil {
		c.bufs.Put(c.in)
		c.in, c.r = nil, 0
	}
	c.Conn, c.detached, c.bufs, c.eof = prefixconn.New(nc, rest), false, nil, false
	if err != nil {
		return fmt.Errorf("tlsmem: writing what was queued: %w", err)
	}
	return nil
}

// Rebuffer moves the bytes c holds to buffers from bufs (nil: make) and
// gives the old ones back: before a detached connection leaves its
// owner, whose free list no one else may touch.
func (c *Conn) Rebuffer(bufs Buffers) {
	if bufs == nil {
		bufs = heap{}
	}
	old := c.bufs
	if old == nil {
		old = heap{}
	}
	if c.r < len(c.in) {
		in := bufs.Get(len(c.in) - c.r)
		copy(in, c.in[c.r:])
		old.Put(c.in)
		c.in, c.r = in, 0
	} else if c.in != nil {
		old.Put(c.in)
		c.in, c.r = nil, 0
	}
	if out := c.Out(); len(out) > 0 {
		o := bufs.Get(len(out))
		copy(o, out)
		old.Put(c.out)
		c.out, c.w = o, 0
	} else if c.out != nil {
		old.Put(c.out)
		c.out, c.w = nil, 0
	}
	c.bufs = bufs
}

// Buffered is how many bytes of ciphertext crypto/tls has still to
// take.
func (c *Conn) Buffered() int { return len(c.in) - c.r }

// Out is the ciphertext crypto/tls wrote that the socket has not taken
// yet; OutDone says how much of it the owner sent.
func (c *Conn) Out() []byte { return c.out[c.w:] }

// OutDone drops the first n bytes of Out.
func (c *Conn) OutDone(n int) {
	if c.out == nil {
		return
	}
	c.w += n
	if c.w >= len(c.out) {
		c.bufs.Put(c.out)
		c.out, c.w = nil, 0
	}
}

// Close closes the socket until Detach; after, the socket is the
// owner's to close, and Close does nothing.
func (c *Conn) Close() error {
	if !c.detached {
		return c.Conn.Close()
	}
	return nil
}

// SetDeadline sets the socket's deadlines until Detach; after,
// the owner keeps time (crypto/tls sets a write deadline on Close).
func (c *Conn) SetDeadline(t time.Time) error {
	if !c.detached {
		return c.Conn.SetDeadline(t)
	}
	return nil
}

// SetReadDeadline sets the socket's read deadline until Detach (see SetDeadline).
func (c *Conn) SetReadDeadline(t time.Time) error {
	if !c.detached {
		return c.Conn.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline sets the socket's write deadline until Detach (see SetDeadline).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if !c.detached {
		return c.Conn.SetWriteDeadline(t)
	}
	return nil
}

// NetConn returns the connection under c, as crypto/tls's and
// prefixconn's do, for whoever needs the socket.
func (c *Conn) NetConn() net.Conn { return c.Conn }

var _ net.Conn = (*Conn)(nil)
