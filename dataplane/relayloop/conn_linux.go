package relayloop

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

type connState uint8

const (
	stateProbing connState = iota
	stateConnecting
	stateRelaying
	stateExchange
	stateServe
	stateClosed
)

// Conn is one connection a loop carries. Its methods other than Abort,
// Peer and Local are the loop's own.
type Conn struct {
	l     *loop
	id    uint64
	fd    int // the client's socket
	bfd   int // the backend's, -1 before a dial
	peer  netip.AddrPort
	s     Session
	state connState

	// Probing: the bytes read so far, the Verdict's limit and deadline.
	buf      []byte
	n        int
	limit    int
	deadline int64

	// Dialling.
	target   *Target
	attempt  int
	dialErrs []error
	endpoint netip.AddrPort

	// Relaying: readiness learnt from edge-triggered events, cleared by
	// EAGAIN.
	cR, cW, bR, bW bool
	// cEnd and bEnd: the socket reported its peer's end or an error, so
	// reading goes on until it says which. Otherwise a read shorter than
	// asked means the socket is drained, and the next edge says when it
	// is not: no read is spent learning EAGAIN.
	cEnd, bEnd bool
	up, down   dir
	last       int64 // the loop's clock at the last byte carried
	idle       int64
	keepAlive  bool // TCP keepalive is on (or never wanted)
	// again: later asked the loop to come back to the connection.
	again bool

	// x is the state of a connection carried as HTTP/1.1 exchanges.
	x *exchange
	// tls is the TLS layer of an adopted connection (Set.Adopt), nil in
	// cleartext.
	tls *TLS
	// sv is the state of a connection a Server speaks (Verdict.Serve).
	sv *serving

	// timerPos is 1 + the index of c's timer in its loop's heap, 0
	// when it has none.
	timerPos   int
	doneCalled bool
	// flushPending: the loop holds c's queued bytes until the end of
	// its round (loop.deferWrite).
	flushPending bool
}

// dir is one direction of a relayed connection.
type dir struct {
	// pending is written before anything is spliced (up: the header and
	// the bytes read while deciding).
	pending []byte
	pipe    pipePair
	hasPipe bool
	inPipe  int
	n       int64
	eof     bool // the source ended and the destination's write side is shut
	// splicing: bytes go through a pipe from now on (bulk, or a reader
	// too slow for the copy buffer).
	splicing bool
}

// Peer is the client's address.
func (c *Conn) Peer() netip.AddrPort { return c.peer }

// Local is the address the client connected to, for a PROXY header; the
// zero AddrPort if the socket cannot tell. Only a Session, on its loop,
// may call it.
func (c *Conn) Local() netip.AddrPort {
	sa, err := unix.Getsockname(c.fd)
	if err != nil {
		return netip.AddrPort{}
	}
	return addrPort(sa)
}

// EvictIdle is Set.EvictIdle for the Handler's Accepted, which runs on
// the Conn's loop: the loop closes the idle connection itself.
func (c *Conn) EvictIdle(slots any) bool { return c.l.evictIdle(slots) }

// loopEvictor is the Evictor a Target's Slot is given: it evicts on the
// loop that asks.
type loopEvictor loop

func (e *loopEvictor) EvictIdle(slots any) bool { return (*loop)(e).evictIdle(slots) }

// Abort ends the connection from any goroutine: its sockets are closed and
// Done reports ErrClosed, unless it ended or was handed off first.
func (c *Conn) Abort() {
	c.l.post(func() {
		if c.state != stateClosed {
			c.l.guard(c, func() { c.fail(ErrClosed) })
		}
	})
}

// start asks the Handler about a new connection, then the Session about
// its first (missing) bytes.
func (c *Conn) start(h Handler) {
	c.s = h.Accepted(c)
	if c.s == nil {
		c.state = stateClosed
		c.l.forget(c)
		sysClose(c.fd)
		return
	}
	if !c.watch() {
		return
	}
	// The first bytes are read at once rather than at the next event: a
	// client that speaks first has usually sent them by the time its
	// connection is accepted (always, behind TCP_DEFER_ACCEPT), and a
	// read that finds nothing costs less than a round of the loop.
	c.cR = true
	c.decide(nil, Start)
	if c.state == stateProbing {
		c.read()
	}
}

// watch adds the client's socket to the loop's epoll set, for both
// directions at once: it is never modified there again. A failure ends
// the connection (false).
func (c *Conn) watch() bool {
	if err := c.l.ctl(unix.EPOLL_CTL_ADD, c.fd, connToken(c.id, 0, 0), unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
		c.fail(fmt.Errorf("epoll_ctl: %w", err))
		return false
	}
	return true
}

// decide asks the Session about the bytes read so far and follows its
// Verdict. After the probe's end a Session may not wait any longer: such
// a Verdict closes the connection.
func (c *Conn) decide(b []byte, end End) {
	v := c.s.Decide(b, end)
	if v.Wait && end > Reading {
		v = Verdict{}
	}
	c.follow(v)
}

// follow carries out a Verdict given while probing.
func (c *Conn) follow(v Verdict) {
	switch {
	case v.Wait:
		if c.limit = v.Limit; c.limit <= 0 {
			c.limit = 1
		}
		if d := c.l.at(v.Deadline); !v.Deadline.IsZero() && d != c.deadline {
			c.deadline = d
			c.l.arm(c, d)
		}
		if c.n >= c.limit {
			c.decide(c.buf[:c.n], Full)
		}
	case v.Forward != nil:
		c.forward(v.Forward)
	case v.Exchange != nil:
		c.startExchange(v.Exchange)
	case v.Serve != nil:
		c.startServe(v.Serve)
	case v.HandOff:
		c.handOff()
	default:
		c.finish(nil)
	}
}

// handOff gives the socket to the Session.
func (c *Conn) handOff() {
	_ = sysEpollCtl(c.l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	c.state = stateClosed
	c.l.forget(c)
	c.doneCalled = true // Done is not called for a handed-off connection
	buf, fd := c.buf[:c.n], c.fd
	c.buf, c.fd = nil, -1 // the Session's now, even if HandOff panics
	if c.tls != nil {
		c.tls.Mem.Rebuffer(nil) // its bytes leave the loop's buffers
	}
	c.s.HandOff(fd, buf)
	c.l.putBuffer(buf)
}

// ready handles a readiness event of one of the connection's sockets.
func (c *Conn) ready(tok uint64, events uint32) {
	if c.state == stateClosed {
		return
	}
	in := events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0
	out := events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0
	end := events&(unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0
	if tok&1 == 0 {
		c.cR, c.cW, c.cEnd = c.cR || in, c.cW || out, c.cEnd || end
	} else {
		if c.state == stateConnecting {
			if int(tok>>1)&(1<<attemptBits-1) == c.attempt&(1<<attemptBits-1) {
				c.connected(events)
			}
			return
		}
		c.bR, c.bW, c.bEnd = c.bR || in, c.bW || out, c.bEnd || end
	}
	c.advance()
}

// advance moves the connection on as far as its state and what its
// sockets reported let it: for an event, or for its turn (later).
func (c *Conn) advance() {
	if c.again {
		// A turn is coming (later) and will see what the event said: a
		// connection that used its budget moves once a round, however
		// many of its sockets report in it.
		return
	}
	switch c.state {
	case stateProbing:
		if c.cR {
			c.read()
		}
	case stateRelaying:
		c.relay()
	case stateExchange:
		c.exchange()
	case stateServe:
		c.serve()
	}
}

// read reads the client's bytes while probing and asks the Session.
func (c *Conn) read() {
	for c.state == stateProbing && c.cR {
		if c.buf == nil {
			c.buf = c.l.getBuffer(c.limit)
		}
		if len(c.buf) < c.limit {
			c.buf = append(c.buf[:len(c.buf)], make([]byte, c.limit-len(c.buf))...)
		}
		n, err := c.socketRead(c.buf[c.n:c.limit])
		switch {
		case errors.Is(err, unix.EAGAIN):
			if c.n == 0 {
				c.l.putBuffer(c.buf)
				c.buf = nil // a silent client holds no buffer
			}
			return
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			c.finish(os.NewSyscallError("read", err))
			return
		case n == 0:
			c.decide(c.buf[:c.n], EOF)
			return
		}
		c.n += n
		end := Reading
		if c.n >= c.limit {
			end = Full
		}
		c.decide(c.buf[:c.n], end)
	}
}

// expired handles the connection's timer.
func (c *Conn) expired() {
	switch c.state {
	case stateProbing:
		c.decide(c.buf[:c.n], Timeout)
	case stateConnecting:
		c.dialFailed(fmt.Errorf("dial tcp %s: %w", c.endpoint, os.ErrDeadlineExceeded))
	case stateExchange:
		c.expiredExchange()
	case stateServe:
		c.expiredServe()
	case stateRelaying:
		if !c.keepAlive {
			c.keepAlive = true
			setKeepAlive(c.fd)
			setKeepAlive(c.bfd)
		}
		if c.idle <= 0 {
			return
		}
		if quiet := c.l.clock - c.last; quiet >= c.idle {
			c.fail(errIdle)
			return
		}
		c.l.arm(c, c.last+c.idle)
	}
}

var errIdle = errors.New("idle timeout")

// forward starts dialling t's endpoints.
func (c *Conn) forward(t *Target) {
	if len(t.Endpoints) == 0 {
		c.finishDial(errors.New("backend has no ready endpoints"))
		return
	}
	c.target = t
	c.state = stateConnecting
	pending := c.buf[:c.n]
	if len(t.Header) > 0 {
		pending = append(append(make([]byte, 0, len(t.Header)+c.n), t.Header...), pending...)
	}
	c.up.pending = pending
	c.up.n = -int64(len(t.Header)) // Up counts the client's bytes only
	c.dial()
}

// dial tries the next endpoint; when none is left, the connection ends.
func (c *Conn) dial() {
	t := c.target
	for c.attempt < len(t.Endpoints) {
		ep := t.Endpoints[(t.First+c.attempt)%len(t.Endpoints)]
		c.attempt++
		c.endpoint = ep
		family := unix.AF_INET6
		if ep.Addr().Is4() || ep.Addr().Is4In6() {
			family = unix.AF_INET
		}
		fd, err := sysSocket(family)
		if err != nil {
			c.dialErrs = append(c.dialErrs, fmt.Errorf("dial tcp %s: %w", ep, os.NewSyscallError("socket", err)))
			continue
		}
		_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if len(c.up.pending) > 0 {
			// The handshake's last ACK waits to ride on the bytes sent
			// right after it (as haproxy does): a segment less for
			// both ends to process.
			_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
		}
		err = sysConnect(fd, ep)
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			sysClose(fd)
			c.dialErrs = append(c.dialErrs, fmt.Errorf("dial tcp %s: %w", ep, os.NewSyscallError("connect", err)))
			continue
		}
		if err := c.l.ctl(unix.EPOLL_CTL_ADD, fd, connToken(c.id, c.attempt, 1), unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
			sysClose(fd)
			c.dialErrs = append(c.dialErrs, fmt.Errorf("dial tcp %s: %w", ep, os.NewSyscallError("epoll_ctl", err)))
			continue
		}
		c.bfd = fd
		if err == nil {
			c.established(unix.EPOLLOUT)
			return
		}
		if c.sendEarly() {
			return
		}
		timeout := t.DialTimeout
		if timeout <= 0 {
			timeout = defaultDialTimeout
		}
		c.l.arm(c, c.l.now()+int64(timeout))
		return
	}
	c.finishDial(fmt.Errorf("dial %d endpoint(s): %w", len(t.Endpoints), errors.Join(c.dialErrs...)))
}

// sendEarly tries the bytes for the backend right after connect: over
// loopback or a near network the handshake is often done by then, and a
// write that succeeds proves it, a round of the loop sooner. It reports
// whether the connection moved on (relaying, or failed over to the next
// endpoint); false means the handshake is still under way.
func (c *Conn) sendEarly() bool {
	if len(c.up.pending) == 0 {
		return false
	}
	n, err := sysWrite(c.bfd, c.up.pending)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return false
	case err != nil:
		c.dialFailed(fmt.Errorf("dial tcp %s: %w", c.endpoint, os.NewSyscallError("connect", err)))
		return true
	}
	c.sent(&c.up, n)
	c.established(unix.EPOLLOUT)
	return true
}

// connected handles the first event of a dial's socket.
func (c *Conn) connected(events uint32) {
	soErr, err := sysGetsockoptInt(c.bfd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soErr != 0 {
		err = unix.Errno(soErr)
	}
	if err == nil && events&unix.EPOLLOUT == 0 {
		return // readable before writable: not connected yet
	}
	if err != nil {
		c.dialFailed(fmt.Errorf("dial tcp %s: %w", c.endpoint, os.NewSyscallError("connect", err)))
		return
	}
	c.established(events)
}

// established starts relaying once the backend accepted the connection;
// events are what its socket reported with it.
func (c *Conn) established(events uint32) {
	c.state = stateRelaying
	c.l.disarm(c) // the dial timeout is void
	c.bW = true
	c.bR = events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0
	c.bEnd = events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0
	c.last = c.l.clock
	c.idle = int64(c.target.IdleTimeout)
	switch ka := c.l.set.opt.KeepAliveAfter; {
	case ka > 0:
		c.l.arm(c, c.l.clock+int64(ka))
	default:
		c.keepAlive = true
		if c.idle > 0 {
			c.l.arm(c, c.last+c.idle)
		}
	}
	c.relay()
}

func (c *Conn) dialFailed(err error) {
	sysClose(c.bfd)
	c.bfd = -1
	c.dialErrs = append(c.dialErrs, err)
	c.dial()
}

// finishDial ends a connection no endpoint accepted.
func (c *Conn) finishDial(err error) {
	c.state = stateClosed
	c.release()
	c.done(Result{DialErr: err})
}

// relay moves what it can both ways, then ends the connection once both
// directions have.
func (c *Conn) relay() {
	upMore, err := c.move(&c.up, &c.down, c.fd, c.bfd, &c.cR, &c.bW, c.cEnd)
	if err != nil {
		c.fail(err)
		return
	}
	downMore, err := c.move(&c.down, &c.up, c.bfd, c.fd, &c.bR, &c.cW, c.bEnd)
	if err != nil {
		c.fail(err)
		return
	}
	if c.up.eof && c.down.eof {
		c.finish(nil)
		return
	}
	if upMore || downMore {
		c.later()
	}
}

// later has the loop come back to the connection at the end of the
// round, after the events that came meanwhile, and carry on: bytes left
// in a socket past a budget (a direction's moveBudget, an exchange's
// exchangeBudget, a served connection's serveReadBudget) raise no new
// edge-triggered event. Until then the connection's events only note
// what its sockets say (Conn.advance), so that it moves once a round. What
// it runs is guarded as an event's handling is; advancing a connection
// whose state moved on meanwhile is as harmless as a spurious event.
func (c *Conn) later() {
	if c.again {
		return
	}
	c.again = true
	c.l.post(func() {
		c.again = false
		if c.state != stateClosed {
			c.l.guard(c, c.advance)
		}
	})
}

// move carries one direction from src to dst until one of them would
// block, or until it moved the loop's moveBudget (more: it stopped with
// bytes perhaps left to move): pending bytes first, then what src has.
// The first spliceAfter bytes go through the loop's copy buffer while dst takes them (a read
// and a write, as a splice in and out would cost, without a pipe); the
// rest, and everything once dst fell behind, is spliced through a pipe
// held only while bytes wait in it. So a slow reader makes the loop hold
// at most one copyChunk of its bytes, and the kernel the rest. At the source's end,
// dst's write side is shut, unless the other direction has ended too:
// closing both sockets then says as much, for one system call less.
func (c *Conn) move(d, other *dir, src, dst int, srcR, dstW *bool, srcEnd bool) (more bool, err error) {
	budget := c.l.moveBudget()
	for start := d.n; ; {
		if d.n-start >= int64(budget) {
			return true, nil
		}
		switch {
		case len(d.pending) > 0:
			if !*dstW {
				return false, nil
			}
			n, err := sysWrite(dst, d.pending)
			if errors.Is(err, unix.EAGAIN) {
				*dstW = false
				return false, nil
			}
			if err != nil {
				return false, os.NewSyscallError("write", err)
			}
			c.sent(d, n)
		case d.inPipe > 0:
			if !*dstW {
				return false, nil
			}
			n, err := sysSplice(d.pipe.r, dst, d.inPipe)
			if errors.Is(err, unix.EAGAIN) {
				*dstW = false
				return false, nil
			}
			if err != nil {
				return false, os.NewSyscallError("splice", err)
			}
			d.inPipe -= n
			d.n += int64(n)
			c.last = c.l.clock
		case d.eof || !*srcR:
			if d.hasPipe {
				c.l.putPipe(d.pipe)
				d.hasPipe = false
			}
			return false, nil
		case !d.splicing && d.n < spliceAfter && *dstW:
			n, err := sysRead(src, c.l.copyBuf)
			switch {
			case errors.Is(err, unix.EAGAIN):
				*srcR = false
				continue
			case err != nil:
				return false, os.NewSyscallError("read", err)
			case n == 0:
				d.ended(other, dst)
				continue
			}
			if n < len(c.l.copyBuf) && !srcEnd {
				*srcR = false // drained (see Conn.cEnd)
			}
			m, err := sysWrite(dst, c.l.copyBuf[:n])
			switch {
			case errors.Is(err, unix.EAGAIN):
				*dstW, m = false, 0
			case err != nil:
				return false, os.NewSyscallError("write", err)
			}
			d.n += int64(m)
			c.last = c.l.clock
			if m < n {
				// A slow reader: the rest waits in memory of ours, at
				// most one chunk, and what follows in a pipe.
				d.pending = append([]byte(nil), c.l.copyBuf[m:n]...)
				d.splicing = true
			}
		default:
			if !d.hasPipe {
				p, err := c.l.getPipe()
				if err != nil {
					return false, err
				}
				d.pipe, d.hasPipe = p, true
			}
			// No more than the budget left: a pipe filled past it would
			// be written out in this turn anyway.
			n, err := sysSplice(src, d.pipe.w, min(spliceChunk, budget-int(d.n-start)))
			switch {
			case errors.Is(err, unix.EAGAIN):
				*srcR = false
			case err != nil:
				return false, os.NewSyscallError("splice", err)
			case n == 0:
				d.ended(other, dst)
			default:
				// A short splice does not mean drained: a pipe's slots
				// can fill with small segments before its bytes do.
				d.inPipe = n
			}
		}
	}
}

// sent accounts for n pending bytes written, and lets go of the buffer
// that held them once none is left.
func (c *Conn) sent(d *dir, n int) {
	d.pending = d.pending[n:]
	d.n += int64(n)
	c.last = c.l.clock
	if len(d.pending) == 0 {
		d.pending = nil
		if d == &c.up && c.buf != nil {
			c.l.putBuffer(c.buf) // it held the bytes read while deciding
			c.buf = nil
		}
	}
}

// ended marks the direction's source ended and passes the end on.
func (d *dir) ended(other *dir, dst int) {
	d.eof = true
	if !other.eof {
		sysShutdownWrite(dst)
	}
}

// fail ends the connection on an error.
func (c *Conn) fail(err error) {
	if c.state == stateClosed {
		return
	}
	c.finish(err)
}

// finish closes both sockets and reports the connection.
func (c *Conn) finish(err error) {
	dialed := c.state == stateRelaying
	if c.x != nil {
		c.releaseExchange(err)
	}
	c.state = stateClosed
	c.release()
	r := Result{Dialed: dialed, Up: c.up.n, Down: c.down.n, Err: err}
	if dialed {
		r.Endpoint = c.endpoint
	}
	if errors.Is(err, errIdle) {
		r.Idle, r.Err = true, nil
	}
	c.done(r)
}

// release closes the connection's descriptors and forgets it.
func (c *Conn) release() {
	c.l.forget(c)
	if c.fd >= 0 {
		sysClose(c.fd)
		c.fd = -1
	}
	if c.bfd >= 0 {
		sysClose(c.bfd)
		c.bfd = -1
	}
	for _, d := range []*dir{&c.up, &c.down} {
		if d.hasPipe {
			c.l.dropPipe(d.pipe, d.inPipe)
			d.hasPipe = false
		}
	}
	if c.buf != nil {
		c.l.putBuffer(c.buf)
		c.buf = nil
	}
	c.up.pending = nil
}

func (c *Conn) done(r Result) {
	if c.doneCalled {
		return
	}
	c.doneCalled = true
	c.s.Done(r)
}

// setKeepAlive turns on TCP keepalive with Go's defaults, as the forward
// package's Parker does for idle sockets: first probe after 15 s idle,
// then every 15 s, 9 probes. Best effort.
func setKeepAlive(fd int) {
	_ = sysSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	keepAliveTimes(fd)
}

// keepAliveTimes sets setKeepAlive's timings without turning keepalive
// on (a listener's, for the sockets it accepts).
func keepAliveTimes(fd int) {
	_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15)
	_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
	_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9)
}

// keepClientAlive turns TCP keepalive on for the client's socket of a
// connection the loop keeps for HTTP (exchanges, a Server): a client gone
// without a word (a NAT that forgot it, a host switched off) is found out
// in about two and a half minutes, as Go's net finds out the connections
// its listeners accept, rather than held until a timeout notices (an
// HTTP/2 connection whose streams wait on a long poll writes nothing a
// write timeout could catch). One system call: a socket accepted by the
// loops has the timings from its listener, and an adopted one was
// accepted by them or by Go's net, which sets them.
func (c *Conn) keepClientAlive() {
	if c.l.set.opt.KeepAliveAfter >= 0 {
		_ = sysSetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	}
}
