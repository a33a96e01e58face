package relayloop

import (
	"errors"
	"fmt"
	"io"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/tlsmem"
)

// Adopt has the least busy loop carry a connection that began on a
// goroutine: fd is its connected socket, which the caller gives up (it
// is made non-blocking here, and closed if the Set is), peer its
// client, read the client's bytes read so far (plaintext under t; the
// loop copies it before its buffer is reused, so the caller gives it
// up), and t its TLS layer after a handshake (nil: cleartext), with
// t.Mem detached (the loop moves its bytes to buffers of its own). On
// the loop, h is asked for the connection's Session (Accepted, with the
// Conn a Session that serves it needs), and the Session's Decide about
// read at once (End Reading). Under TLS the Verdict may only be
// Exchange, Serve, HandOff or a close: the loop reads no record while
// probing. The Conn returned may be aborted at once. Adopt fails, and
// the caller keeps fd, once the Set is closed.
func (s *Set) Adopt(fd int, peer netip.AddrPort, h Handler, t *TLS, read []byte) (*Conn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("relayloop: adopt: %w", err)
	}
	l := s.leastBusy()
	c := &Conn{l: l, fd: fd, bfd: -1, peer: peer, tls: t}
	l.conned.Add(1)
	if !l.post(func() { l.startAdopted(c, h, read) }) {
		l.conned.Add(-1)
		return nil, ErrClosed
	}
	return c, nil
}

// startAdopted starts an adopted connection on its loop.
func (l *loop) startAdopted(c *Conn, h Handler, read []byte) {
	l.nextID++
	c.id = l.nextID
	l.conns[c.id] = c
	l.guard(c, func() {
		if c.s = h.Accepted(c); c.s == nil {
			c.state = stateClosed
			l.forget(c)
			sysClose(c.fd)
			return
		}
		if c.tls != nil {
			c.tls.Mem.Rebuffer(loopBuffers{l})
		}
		if len(read) > 0 {
			c.buf = append(l.getBuffer(max(len(read), firstHeadBuffer))[:0], read...)
			c.n = len(c.buf)
		}
		if !c.watch() {
			return
		}
		c.cR, c.cW = true, true
		v := c.s.Decide(c.buf[:c.n], Reading)
		if c.tls != nil && (v.Wait || v.Forward != nil) {
			c.finish(errors.New("relayloop: an adopted TLS connection can only be carried as exchanges"))
			return
		}
		c.follow(v)
		if c.state == stateProbing {
			c.read()
		}
	})
}

// loopBuffers lends a TLS connection's ciphertext buffers from its
// loop's free list.
type loopBuffers struct{ l *loop }

func (b loopBuffers) Get(size int) []byte { return b.l.getBuffer(size) }
func (b loopBuffers) Put(p []byte)        { b.l.putBuffer(p) }

// clientRead reads the client's bytes into p: from the socket, or under
// TLS its plaintext. It returns unix.EAGAIN when none are ready and (0,
// nil) at the client's end, and keeps c.cR true while more may be read
// without a new edge: after a read that filled p, or one shorter than
// asked from a socket that reported its end (see Conn.cEnd).
func (c *Conn) clientRead(p []byte) (int, error) {
	if c.tls != nil {
		return c.tlsRead(p)
	}
	return c.socketRead(p)
}

// socketRead reads the client's socket into p, and clears c.cR once the
// socket is drained: at EAGAIN, or after a read shorter than asked from
// a socket that has not reported its end (see Conn.cEnd), whose next
// edge says when there is more.
func (c *Conn) socketRead(p []byte) (int, error) {
	n, err := sysRead(c.fd, p)
	switch {
	case errors.Is(err, unix.EAGAIN):
		c.cR = false
	case err == nil && n > 0 && n < len(p) && !c.cEnd:
		c.cR = false
	}
	return n, err
}

// tlsRead reads plaintext into p, feeding crypto/tls ciphertext from the
// socket as long as it asks for more and the socket has some. A short
// read of plaintext says nothing of the socket: crypto/tls may hold
// whole records already, so the loop stops reading only once crypto/tls
// has asked for ciphertext the socket did not have.
func (c *Conn) tlsRead(p []byte) (int, error) {
	total := 0
	for total < len(p) {
		n, err := c.tls.Conn.Read(p[total:])
		total += n
		if err == nil {
			continue
		}
		if !errors.Is(err, tlsmem.ErrWouldBlock) {
			if total > 0 {
				return total, nil // crypto/tls returns its error again
			}
			return c.tlsEnd(err)
		}
		if !c.cR {
			break
		}
		if err := c.tlsFill(); err != nil {
			if total > 0 {
				return total, nil // the socket returns its error again
			}
			return 0, err
		}
	}
	if total == len(p) {
		c.cR = true // crypto/tls may hold more: read again to know
	}
	if total == 0 {
		return 0, unix.EAGAIN
	}
	return total, nil
}

// tlsFill reads the socket's ciphertext for crypto/tls; c.cR goes false
// once the socket is drained.
func (c *Conn) tlsFill() error {
	m, err := c.socketRead(c.tls.Mem.InRoom())
	switch {
	case errors.Is(err, unix.EAGAIN):
		m = 0
	case err != nil:
		c.tls.Mem.InFilled(0)
		return err
	case m == 0:
		c.tls.Mem.InEOF()
	}
	c.tls.Mem.InFilled(m)
	return nil
}

// tlsEnd is what tlsRead returns for crypto/tls's error: the client's
// end as a socket's (io.EOF after close_notify or at a record's
// boundary), anything else as an error.
func (c *Conn) tlsEnd(err error) (int, error) {
	if errors.Is(err, io.EOF) {
		return 0, nil
	}
	return 0, fmt.Errorf("tls: %w", err)
}

// clientWrite writes p to the client: to the socket, or under TLS as
// records. It returns unix.EAGAIN, with c.cW false, when the client
// takes nothing now. Under TLS all of p is taken once the records
// written before are sent, and its records go out as far as the socket
// takes them; the rest waits for the next edge (clientFlush), and until
// it is sent clientWrite takes nothing more.
func (c *Conn) clientWrite(p []byte) (int, error) {
	if c.tls == nil {
		n, err := sysWrite(c.fd, p)
		if errors.Is(err, unix.EAGAIN) {
			c.cW = false
		}
		return n, err
	}
	if err := c.clientFlush(); err != nil { // EAGAIN while records wait
		return 0, err
	}
	if _, err := c.tls.Conn.Write(p); err != nil {
		return 0, fmt.Errorf("tls: %w", err)
	}
	if err := c.clientFlush(); err != nil && !errors.Is(err, unix.EAGAIN) {
		return 0, err
	}
	return len(p), nil
}

// clientFlush sends the records waiting under TLS, as far as the socket
// takes them: nil once none wait, unix.EAGAIN (c.cW false) while some do.
func (c *Conn) clientFlush() error {
	if c.tls == nil {
		return nil
	}
	for out := c.tls.Mem.Out(); len(out) > 0; out = c.tls.Mem.Out() {
		if !c.cW {
			return unix.EAGAIN
		}
		n, err := sysWrite(c.fd, out)
		if errors.Is(err, unix.EAGAIN) {
			c.cW = false
			return err
		}
		if err != nil {
			return err
		}
		c.tls.Mem.OutDone(n)
	}
	return nil
}

// clientPending reports records waiting to be sent under TLS.
func (c *Conn) clientPending() bool { return c.tls != nil && len(c.tls.Mem.Out()) > 0 }

// tlsHungUp is hungUp under TLS, for a client that shut its side while
// its request's response is awaited (c.cEnd, the request sent whole):
// what it sent before is all it will, and only decrypting it tells a
// pipelined request from close_notify (TLS 1.3 hides an alert's type).
// Its plaintext, up to a head's worth, is kept for the next exchange;
// the end of the stream with none means the client is gone.
func (c *Conn) tlsHungUp() bool {
	x := c.x
	for {
		if c.n-x.off >= x.opt.MaxHead {
			return false // a request waits; its head is read in turn
		}
		c.buf, c.n = c.l.headRoom(c.buf, x.off, c.n, x.opt.MaxHead)
		x.off = 0
		n, err := c.clientRead(c.buf[c.n:min(len(c.buf), x.opt.MaxHead)])
		switch {
		case errors.Is(err, unix.EAGAIN):
			if c.n == 0 {
				c.dropBuffer()
			}
			return false
		case err != nil:
			return true
		case n == 0:
			return c.n == x.off
		}
		c.n += n
	}
}
