package relayloop

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/h1"
)

// HTTP/1.1 exchanges on the loop (Verdict.Exchange). A connection goes
// through phases: reading a request's head (xHead), carrying an exchange
// (xBusy: the request's head and body up to a backend connection, the
// response's head and body down), and writing a last answer before it
// closes (xClosing). The two directions of an exchange move
// independently, as the bytes come; the exchange ends once the
// response's body has reached the client, and the backend connection
// goes back to the Set's pool if both ends allow it.

type xPhase uint8

const (
	xHead xPhase = iota
	xBusy
	xClosing
)

// Defaults of Target's pool fields.
const (
	defaultMaxIdle  = 16
	defaultPoolIdle = 90 * time.Second
)

// backendBit marks the epoll token of a backend connection carried for
// exchanges; the rest of the token is its id in loop.backends.
const backendBit = 1 << 62

// backend is a backend connection carried for exchanges: in use by one
// Conn (owner) or Call (call) of its home loop, or idle in the Set's pool, from which
// any loop may take it (moving it into its own epoll set). It stays in
// its home's epoll set, under its own token, from its dial to its close.
//
// Ownership: a backend in the pool's idle lists is touched only under
// the pool's lock; one out of them belongs to its home loop alone. home
// and owner are atomic because a loop reads them for an event while
// another may be taking the backend from the pool (stored in that order:
// home, then owner; see loop.dispatch).
type backend struct {
	id      uint64
	fd      int
	ep      netip.AddrPort
	key     poolKey
	list    *idleList  // key's, while open (nil: not pooled); the pool's mu
	bySlots *slotsIdle // Target.Slots', with list; the pool's mu
	// order links it in the pool's idle orders while idle; the pool's mu.
	order   [2]orderLinks
	release func()
	home    atomic.Pointer[loop]
	owner   atomic.Pointer[Conn]
	call    atomic.Pointer[Call]
	// Readiness learnt from edge-triggered events, as Conn's.
	r, w, end  bool
	connecting bool
	idleSince  int64
	poolIdle   int64
	maxIdle    int
}

type poolKey struct {
	pool any
	ep   netip.AddrPort
}

// exchange is a Conn's state while carried as HTTP/1.1 exchanges.
type exchange struct {
	opt   Exchange
	ex    Exchanger
	phase xPhase
	// off is where the client's bytes not yet taken start in Conn.buf.
	off int
	// due is when the phase's timeout falls, armed the armed timer
	// (0: none); a timer fires at armed and re-arms for a later due.
	due, armed int64
	// since: the start of the wait due counts from (a head's first
	// byte, the end of the last exchange, a dial, the request sent).
	since int64
	err   error // why xClosing closes

	// The exchange in flight.
	inFlight   bool
	target     *Target
	attempt    int
	dialErrs   []error
	retry      bool
	closeAfter bool
	req, resp  h1.Framer
	be         *backend
	upBuf      []byte // the request's head and first body bytes (kept for a retry)
	upQ        []byte // bytes for the backend not yet written
	sentWhole  bool
	respHead
	gotResp   bool // a byte came from the backend
	discarded int  // bytes of an answered request's body dropped
	lingering bool // xClosing: the answer is out, late bytes are dropped
	notified  bool // xClosing under TLS: close_notify is queued
	drained   int
	headDone  bool // the final response's head was taken
	reuse     bool // the backend connection may carry another request
	downBuf   []byte
	downQ     []byte // bytes for the client not yet written
	// A large response body goes from the backend to a cleartext client
	// through pipe (spliceBody): inPipe bytes wait in it, written before
	// anything more is read. The pipe is held while the body comes, and
	// given back whenever it is empty and the backend has nothing more
	// to read.
	pipe    pipePair
	hasPipe bool
	inPipe  int
	started bool  // a byte of a response went to the client
	last    int64 // the loop's clock at the last byte carried
	// moved counts the bytes written either way in this turn: past the
	// loop's exchangeBudget, the exchange reads no more until the loop
	// comes back to it (Conn.later), as a forwarded connection's
	// direction does past moveBudget.
	moved int
	res   ExchangeResult
}

// startExchange carries the connection as HTTP/1.1 exchanges from now,
// starting with the bytes read while deciding.
func (c *Conn) startExchange(opt *Exchange) {
	ex, ok := c.s.(Exchanger)
	if !ok {
		c.finish(errors.New("relayloop: Verdict.Exchange from a Session that is not an Exchanger"))
		return
	}
	c.state = stateExchange
	c.keepClientAlive()
	c.x = &exchange{opt: opt.withDefaults(), ex: ex, since: c.l.clock}
	c.exchange()
}

// exchange moves the connection on as far as its sockets allow, then
// sets its timer for what it waits on.
func (c *Conn) exchange() {
	x := c.x
	if c.clientPending() && c.cW {
		// Records the socket did not take at the last write; a
		// response may be over with them still here.
		if err := c.clientFlush(); err != nil && !errors.Is(err, unix.EAGAIN) {
			c.finish(os.NewSyscallError("write", err))
			return
		}
	}
	x.moved = 0
	for c.state == stateExchange {
		var more bool
		switch x.phase {
		case xHead:
			more = c.readHead()
		case xBusy:
			more = c.pump()
		case xClosing:
			c.flushClosing()
		}
		if !more {
			break
		}
	}
	if c.state == stateExchange {
		if x.moved >= c.l.exchangeBudget() {
			c.later()
		}
		c.schedule()
	}
}

// readHead reads until a request's head is whole, then takes it; it
// reports whether the phase moved on.
func (c *Conn) readHead() bool {
	x := c.x
	for {
		b := c.buf[x.off:c.n]
		if end := headEnd(b, x.opt.MaxHead); end > 0 {
			c.request(end)
			return true
		}
		if len(b) >= x.opt.MaxHead {
			c.failExchange(ErrHeadTooLarge)
			return true
		}
		if !c.cR {
			return false
		}
		c.buf, c.n = c.l.headRoom(c.buf, x.off, c.n, x.opt.MaxHead)
		x.off = 0
		room := c.buf[c.n:min(len(c.buf), x.opt.MaxHead)]
		n, err := c.clientRead(room)
		switch {
		case errors.Is(err, unix.EAGAIN):
			if c.n == x.off {
				c.dropBuffer()
			}
			return false
		case err != nil:
			c.finish(os.NewSyscallError("read", err))
			return false
		case n == 0:
			if c.n == x.off {
				c.finish(nil) // the client closed between requests
			} else {
				c.finish(fmt.Errorf("client closed in a request head: %w", ErrClientLeft))
			}
			return false
		}
		if c.n == x.off {
			x.since = c.l.clock // a head's first byte
		}
		c.n += n
	}
}

// headEnd is h1.HeadEnd within the first maxHead bytes of b: a head
// must end there, whatever more the buffer holds (bytes read while
// probing, or a pipelined request).
func headEnd(b []byte, maxHead int) int {
	return h1.HeadEnd(b[:min(len(b), maxHead)])
}

// headRoom readies buf, whose bytes [off:n] are the start of a head,
// for the next read: they move to its start (n is returned as their
// count), and it grows up to maxHead when they fill it. A nil buf gets
// a first, small buffer. The caller reads at most up to maxHead.
func (l *loop) headRoom(buf []byte, off, n, maxHead int) ([]byte, int) {
	if buf == nil {
		return l.getBuffer(min(firstHeadBuffer, maxHead)), 0
	}
	if off > 0 {
		n = copy(buf, buf[off:n])
	}
	if n == len(buf) && n < maxHead {
		nb := l.getBuffer(min(2*len(buf), maxHead))
		copy(nb, buf[:n])
		l.putBuffer(buf)
		buf = nb
	}
	return buf[:cap(buf)], n
}

// dropBuffer gives back the buffer of a connection with no bytes waiting:
// an idle kept-alive client holds none.
func (c *Conn) dropBuffer() {
	c.l.putBuffer(c.buf)
	c.buf, c.n, c.x.off = nil, 0, 0
}

// request takes the request whose head is the first end bytes waiting.
func (c *Conn) request(end int) {
	x := c.x
	st := x.ex.Request(c.buf[x.off : x.off+end])
	switch {
	case st.HandOff:
		if x.off > 0 {
			c.n = copy(c.buf, c.buf[x.off:c.n])
			x.off = 0
		}
		c.x = nil
		c.handOff()
	case st.Target == nil && len(st.Head) > 0:
		// Answered here; the body, if any, is read and dropped.
		x.off += end
		x.res = ExchangeResult{}
		x.inFlight = true
		x.downBuf = append(c.l.hold(x.downBuf), st.Head...)
		x.downQ = x.downBuf
		x.closeAfter = st.Close
		x.req, x.resp = h1.NewFramer(st.Body, st.Length), h1.NewFramer(h1.None, 0)
		x.discarded = 0
		x.headDone, x.sentWhole, x.phase, x.since = true, x.req.Done(), xBusy, c.l.clock
	case st.Target == nil:
		c.finish(nil)
	default:
		x.off += end
		x.res = ExchangeResult{}
		x.inFlight = true
		x.target, x.attempt, x.dialErrs = st.Target, 0, x.dialErrs[:0]
		x.retry = st.Retry && st.Body == h1.None
		x.closeAfter = st.Close
		x.req = h1.NewFramer(st.Body, st.Length)
		x.upBuf = append(c.l.hold(x.upBuf), st.Head...)
		n, _, err := x.req.Take(c.buf[x.off:c.n])
		x.upBuf = append(x.upBuf, c.buf[x.off:x.off+n]...)
		x.off += n
		x.upQ = x.upBuf
		x.phase, x.since, x.last = xBusy, c.l.clock, c.l.clock
		if err != nil {
			c.failExchange(fmt.Errorf("%w: %w", ErrRequestBody, err))
			return
		}
		c.acquire(false)
	}
}

// acquire finds the exchange a backend connection: an idle one of the
// pool for the next endpoint, or a new one. fresh skips the pool (a
// retry).
func (c *Conn) acquire(fresh bool) {
	x := c.x
	b, reused, err := c.l.backendFor(x.target, &x.attempt, &x.dialErrs, fresh, x.retry)
	if err != nil {
		c.failExchange(err)
		return
	}
	c.use(b, reused)
	if !reused {
		x.since = c.l.clock
	}
}

// backendFor finds a request to t a backend connection, from endpoint
// *attempt on (moved past the ones tried): an idle one of the pool, or
// a new one after a slot, its dial started. fresh skips the pool (a
// retry); retry says the request may be sent twice. It fails with
// ErrNoSlot, or every dial's error (kept in *dialErrs).
func (l *loop) backendFor(t *Target, attempt *int, dialErrs *[]error, fresh, retry bool) (*backend, bool, error) {
	for *attempt < len(t.Endpoints) {
		ep := t.Endpoints[(t.First+*attempt)%len(t.Endpoints)]
		*attempt++
		key := poolKey{t.Pool, ep}
		if !fresh {
			if b := l.takePooled(key, retry); b != nil {
				return b, true, nil
			}
		}
		var release func()
		if t.Slot != nil {
			r, ok := t.Slot((*loopEvictor)(l))
			if !ok {
				return nil, false, ErrNoSlot
			}
			release = r
		}
		b, err := l.dialBackend(ep, key, t)
		if err != nil {
			if release != nil {
				release()
			}
			*dialErrs = append(*dialErrs, err)
			continue
		}
		b.release = release
		return b, false, nil
	}
	return nil, false, fmt.Errorf("dial %d endpoint(s): %w", len(t.Endpoints), errors.Join(*dialErrs...))
}

// takePooled takes an idle connection of key. One for a request that
// may not be sent twice (not retry) is looked at first (a system call a
// retryable request saves): a backend that closed it may have done so
// after the loop last heard from it, and the request would be lost with
// it.
func (l *loop) takePooled(key poolKey, retry bool) *backend {
	for {
		b := l.takeIdle(key)
		if b == nil || retry || sysQuiet(b.fd) {
			return b
		}
		l.closeOwn(b)
	}
}

// use gives the exchange b.
func (c *Conn) use(b *backend, reused bool) {
	x := c.x
	b.owner.Store(c)
	x.be = b
	x.res.Endpoint, x.res.Reused = b.ep, reused
	x.gotResp, x.headDone, x.reuse, x.started, x.sentWhole = false, false, false, false, false
	x.roff, x.rn = 0, 0
}

// dialBackend starts a non-blocking connect to ep.
func (l *loop) dialBackend(ep netip.AddrPort, key poolKey, t *Target) (*backend, error) {
	family := unix.AF_INET6
	if ep.Addr().Is4() || ep.Addr().Is4In6() {
		family = unix.AF_INET
	}
	fd, err := sysSocket(family)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %s: %w", ep, os.NewSyscallError("socket", err))
	}
	_ = sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	err = sysConnect(fd, ep)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		sysClose(fd)
		return nil, fmt.Errorf("dial tcp %s: %w", ep, os.NewSyscallError("connect", err))
	}
	b := &backend{id: l.set.pool.nextID.Add(1), fd: fd, ep: ep, key: key, connecting: err != nil}
	b.home.Store(l)
	b.poolIdle, b.maxIdle = int64(t.PoolIdle), t.MaxIdle
	if b.poolIdle <= 0 {
		b.poolIdle = int64(defaultPoolIdle)
	}
	if b.maxIdle <= 0 {
		b.maxIdle = defaultMaxIdle
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, fd, backendBit|b.id, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
		sysClose(fd)
		return nil, fmt.Errorf("dial tcp %s: %w", ep, os.NewSyscallError("epoll_ctl", err))
	}
	b.w = !b.connecting
	l.backends[b.id] = b
	p := &l.set.pool
	p.held.Add(1)
	if key.pool != nil {
		p.mu.Lock()
		p.opened(b, key, t.Slots)
		p.mu.Unlock()
	}
	return b, nil
}

// backendReady handles an event of the exchange's backend connection.
func (c *Conn) backendReady(b *backend, events uint32) {
	if c.state != stateExchange || c.x.be != b {
		return
	}
	ready, err := b.finishConnect(events)
	if err != nil {
		c.redial(err)
	} else if !ready {
		return
	}
	c.advance()
}

// finishConnect follows b's dial on an event: it reports whether b is
// connected (false: not yet), or why the dial failed.
func (b *backend) finishConnect(events uint32) (bool, error) {
	if !b.connecting {
		return true, nil
	}
	soErr, err := sysGetsockoptInt(b.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soErr != 0 {
		err = unix.Errno(soErr)
	}
	if err != nil {
		return false, fmt.Errorf("dial tcp %s: %w", b.ep, os.NewSyscallError("connect", err))
	}
	if events&unix.EPOLLOUT == 0 {
		return false, nil // readable before writable: not connected yet
	}
	b.connecting = false
	return true, nil
}

// redial moves on to the next endpoint after a failed dial.
func (c *Conn) redial(err error) {
	x := c.x
	c.l.closeOwn(x.be)
	x.be = nil
	x.dialErrs = append(x.dialErrs, err)
	c.acquire(true)
}

// pump moves the exchange's bytes both ways as far as the sockets allow;
// it reports whether the exchange ended (the phase moved on).
func (c *Conn) pump() bool {
	x := c.x
	if x.target == nil {
		c.discardBody()
	} else if x.be != nil && !x.be.connecting {
		if ended := c.pumpUp(); ended {
			return true
		}
	}
	if x.be == nil && !x.headDone {
		return false // dialling failed over, or the next endpoint is connecting
	}
	return c.pumpDown()
}

// discardBody reads and drops the body of a request answered here, so
// that the connection can carry the next request; past lingerBytes, or
// on a bad body, the connection closes after the answer instead.
func (c *Conn) discardBody() {
	x := c.x
	for !x.sentWhole {
		if x.req.Done() {
			x.sentWhole = true
			return
		}
		if x.off < c.n {
			n, _, err := x.req.Take(c.buf[x.off:c.n])
			x.off += n
			x.discarded += n
			if err != nil || x.discarded > lingerBytes {
				x.closeAfter, x.sentWhole = true, true
			}
			continue
		}
		if !c.cR {
			return
		}
		c.recycleBuffer()
		n, err := c.clientRead(c.buf[c.n:])
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case err != nil, n == 0:
			x.closeAfter, x.sentWhole = true, true
			return
		}
		c.n += n
	}
}

// recycleBuffer readies Conn.buf, all of whose bytes were taken, for the
// next read of a body.
func (c *Conn) recycleBuffer() {
	if c.buf == nil {
		c.buf = c.l.getBuffer(copyChunk)
	}
	c.buf = c.buf[:cap(c.buf)]
	c.n, c.x.off = 0, 0
}

// pumpUp sends the request's head and body to the backend.
func (c *Conn) pumpUp() bool {
	x, b := c.x, c.x.be
	for {
		if len(x.upQ) > 0 {
			if !b.w || c.l.deferWrite(c) {
				return false
			}
			n, err := sysWrite(b.fd, x.upQ)
			if errors.Is(err, unix.EAGAIN) {
				b.w = false
				return false
			}
			if err != nil {
				return c.backendFailed(os.NewSyscallError("write", err))
			}
			x.upQ = x.upQ[n:]
			x.res.Up += int64(n)
			x.moved += n
			x.last = c.l.clock
			continue
		}
		if x.req.Done() {
			if !x.sentWhole {
				x.sentWhole = true
				x.since = c.l.clock
				x.retry = x.retry && !x.gotResp
			}
			return false
		}
		if x.off < c.n {
			n, _, err := x.req.Take(c.buf[x.off:c.n])
			x.upQ = c.buf[x.off : x.off+n]
			x.off += n
			x.retry = false // the body is not kept for a second try
			if err != nil {
				err = fmt.Errorf("%w: %w", ErrRequestBody, err)
				if x.started {
					c.finish(err)
					return true
				}
				c.failExchange(err)
				return true
			}
			continue
		}
		if !c.cR || x.moved >= c.l.exchangeBudget() {
			return false
		}
		c.recycleBuffer()
		n, err := c.clientRead(c.buf[c.n:])
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false
		case err != nil:
			c.finish(os.NewSyscallError("read", err))
			return true
		case n == 0:
			c.finish(fmt.Errorf("client closed in a request body: %w", ErrClientLeft))
			return true
		}
		c.n += n
	}
}

// pumpDown reads the response's head, has the Exchanger rewrite it, and
// moves it and its body to the client.
func (c *Conn) pumpDown() bool {
	x := c.x
	for {
		if len(x.downQ) > 0 {
			if !c.cW || c.l.deferWrite(c) {
				return false
			}
			n, err := c.clientWrite(x.downQ)
			if errors.Is(err, unix.EAGAIN) {
				return false
			}
			if err != nil {
				c.finish(os.NewSyscallError("write", err))
				return true
			}
			x.downQ = x.downQ[n:]
			x.wroteDown(n, c.l.clock)
			continue
		}
		if x.inPipe > 0 {
			if !c.cW || c.l.deferWrite(c) {
				return false
			}
			n, err := sysSplice(x.pipe.r, c.fd, x.inPipe)
			if errors.Is(err, unix.EAGAIN) {
				c.cW = false
				return false
			}
			if err != nil {
				c.finish(os.NewSyscallError("splice", err))
				return true
			}
			x.inPipe -= n
			x.wroteDown(n, c.l.clock)
			continue
		}
		if x.headDone && x.resp.Done() {
			if !x.sentWhole && x.target == nil {
				return false // the answered request's body is still being dropped
			}
			if !x.sentWhole {
				// Answered before the request's body was all sent (a
				// 413, say): the rest of that body would read as the
				// next request on either connection.
				x.reuse, x.closeAfter = false, true
			}
			c.endExchange(nil)
			return true
		}
		b := x.be
		if b == nil || b.connecting {
			return false
		}
		if !x.headDone && x.roff < x.rn {
			if end := headEnd(x.rbuf[x.roff:x.rn], x.opt.MaxHead); end > 0 {
				if c.response(end) {
					return true
				}
				continue
			}
		}
		if !b.r {
			x.dropPipe(c.l) // empty: held only while bytes wait in it
			// A client that hung up while its response is awaited ends
			// the exchange: the backend's work is for nobody.
			if c.cEnd && x.sentWhole && c.hungUp() {
				c.finish(fmt.Errorf("waiting for the response: %w", ErrClientLeft))
				return true
			}
			return false
		}
		if !x.headDone {
			if ended := c.readResponseHead(b); ended {
				return true
			}
			continue
		}
		if x.resp.Done() || x.moved >= c.l.exchangeBudget() {
			return false
		}
		if left := x.resp.Left(); left >= spliceBody && c.tls == nil {
			if ended := c.spliceDown(b, left); ended {
				return true
			}
			continue
		}
		n, err := b.read(c.l.copyBuf)
		switch {
		case errors.Is(err, io.EOF):
			if x.resp.Kind() == h1.UntilClose {
				x.reuse, x.closeAfter = false, true
				x.resp = h1.NewFramer(h1.None, 0)
				continue
			}
			c.finish(fmt.Errorf("backend closed in a response body: %w", ErrBackendClosed))
			return true
		case err != nil:
			c.finish(err)
			return true
		case n == 0:
			continue // drained
		}
		m, _, err := x.resp.Take(c.l.copyBuf[:n])
		if m < n || err != nil {
			x.reuse = false // bytes after the response: not an HTTP/1.1 peer to trust again
			if err != nil {
				c.finish(fmt.Errorf("response body: %w", err))
				return true
			}
		}
		w, err := c.clientWrite(c.l.copyBuf[:m])
		switch {
		case errors.Is(err, unix.EAGAIN):
			w = 0
		case err != nil:
			c.finish(os.NewSyscallError("write", err))
			return true
		}
		x.wroteDown(w, c.l.clock)
		if w < m {
			x.downBuf = append(c.l.hold(x.downBuf), c.l.copyBuf[w:m]...)
			x.downQ = x.downBuf
		}
	}
}

// wroteDown counts n bytes of a response written to the client at
// now, from memory or from the pipe.
func (x *exchange) wroteDown(n int, now int64) {
	x.res.Down += int64(n)
	x.moved += n
	x.started = true
	x.last = now
}

// spliceDown moves up to what is left of the turn's budget of a
// response body of which left bytes are to come, from the backend into
// the exchange's pipe, without reading them: pumpDown writes the pipe
// out before it reads more. It reports whether the exchange ended.
func (c *Conn) spliceDown(b *backend, left int64) bool {
	x := c.x
	if !x.hasPipe {
		p, err := c.l.getPipe()
		if err != nil {
			c.finish(err)
			return true
		}
		x.pipe, x.hasPipe = p, true
	}
	want := int(min(left, int64(spliceChunk), int64(c.l.exchangeBudget()-x.moved)))
	n, err := sysSplice(b.fd, x.pipe.w, want)
	switch {
	case errors.Is(err, unix.EAGAIN):
		b.r = false
	case err != nil:
		c.finish(os.NewSyscallError("splice", err))
		return true
	case n == 0:
		c.finish(fmt.Errorf("backend closed in a response body: %w", ErrBackendClosed))
		return true
	default:
		// A short splice does not mean drained (see Conn.move): the
		// next one says.
		x.resp.Skip(int64(n))
		x.inPipe = n
	}
	return false
}

// dropPipe gives the exchange's pipe back to the loop (dropPipe).
func (x *exchange) dropPipe(l *loop) {
	if x.hasPipe {
		l.dropPipe(x.pipe, x.inPipe)
		x.hasPipe, x.inPipe = false, 0
	}
}

// poolable reports whether b, done with a response its exchange or call
// may reuse it after, can go back to the pool: it is a pool's, did not
// end, and is known to hold nothing more. One not known to be drained
// (the body ended at a read's or a splice's last byte) is peeked at:
// bytes after a response would answer the next request it carries.
func (b *backend) poolable() bool {
	return !b.end && b.key.pool != nil && (!b.r || sysQuiet(b.fd))
}

// hungUp reports a client that is gone: reset, or closed with nothing
// more to read (peeked, so that a pipelined request stays unread).
func (c *Conn) hungUp() bool {
	if c.tls != nil {
		return c.tlsHungUp()
	}
	var b [1]byte
	n, _, err := unix.Recvfrom(c.fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	return n == 0 || err != nil
}

// readResponseHead reads the backend's bytes until a response head is
// whole; it reports whether the exchange ended.
func (c *Conn) readResponseHead(b *backend) bool {
	x := c.x
	n, err := x.fill(c.l, b, x.opt.MaxHead)
	if err != nil {
		return c.backendFailed(err)
	}
	if n > 0 {
		x.gotResp = true
		x.last = c.l.clock
	}
	return false
}

// respHead holds a response head's bytes as they arrive from a backend,
// rbuf[roff:rn], in a buffer of the loop's: an exchange's and a call's.
type respHead struct {
	rbuf     []byte
	roff, rn int
}

// fill reads more of the head from b, up to maxHead bytes in all, and
// returns how many came (0: the socket had none). It fails for a head
// that reached maxHead unfinished, and with ErrBackendClosed at the
// stream's end.
func (h *respHead) fill(l *loop, b *backend, maxHead int) (int, error) {
	if h.rn-h.roff >= maxHead {
		return 0, errors.New("backend's response head too large")
	}
	h.rbuf, h.rn = l.headRoom(h.rbuf, h.roff, h.rn, maxHead)
	h.roff = 0
	n, err := b.read(h.rbuf[h.rn:min(len(h.rbuf), maxHead)])
	if errors.Is(err, io.EOF) {
		err = ErrBackendClosed
	}
	h.rn += n
	return n, err
}

// dropHead gives the head's buffer back to l.
func (h *respHead) dropHead(l *loop) {
	l.putBuffer(h.rbuf)
	h.rbuf, h.roff, h.rn = nil, 0, 0
}

// read reads from b into p (not empty) and keeps b's readiness: a read
// that drained the socket (EAGAIN, or fewer bytes than p holds before
// the peer's end was seen) clears b.r. It returns 0 and no error when
// the socket had nothing, io.EOF at the end of the stream.
func (b *backend) read(p []byte) (int, error) {
	n, err := sysRead(b.fd, p)
	switch {
	case errors.Is(err, unix.EAGAIN):
		b.r = false
		return 0, nil
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0:
		return 0, io.EOF
	}
	if n < len(p) && !b.end {
		b.r = false
	}
	return n, nil
}

// response takes the response head that is the first end bytes read
// from the backend; it reports whether the exchange ended.
func (c *Conn) response(end int) bool {
	x := c.x
	st := x.ex.Response(x.rbuf[x.roff : x.roff+end])
	if len(st.Head) == 0 && !st.Interim {
		return c.backendFailed(errors.New("backend's response refused"))
	}
	x.roff += end
	if st.Interim {
		if len(st.Head) > 0 {
			x.downBuf = append(c.l.hold(x.downBuf), st.Head...)
			x.downQ = x.downBuf
		}
		return false
	}
	x.downBuf = append(c.l.hold(x.downBuf), st.Head...)
	x.headDone = true
	// Close from Response is the backend's: the client's connection goes
	// on, unless the body ends with the backend's.
	x.reuse = !st.Close && st.Body != h1.UntilClose
	x.closeAfter = x.closeAfter || st.Body == h1.UntilClose
	x.resp = h1.NewFramer(st.Body, st.Length)
	n, _, err := x.resp.Take(x.rbuf[x.roff:x.rn])
	if err != nil {
		return c.backendFailed(fmt.Errorf("response body: %w", err))
	}
	x.downBuf = append(x.downBuf, x.rbuf[x.roff:x.roff+n]...)
	x.roff += n
	if x.roff < x.rn {
		x.reuse = false // bytes after the response
	}
	x.downQ = x.downBuf
	x.dropHead(c.l)
	return false
}

// backendFailed handles a backend connection that failed in an exchange:
// a pooled one that turned out closed before any byte of a response is
// replaced by a new one for a request that may be retried; otherwise the
// client gets Failed's answer if no byte of a response reached it yet.
func (c *Conn) backendFailed(err error) bool {
	x := c.x
	reused := x.res.Reused
	c.l.closeOwn(x.be)
	x.be = nil
	if x.retry && reused && !x.gotResp {
		x.retry = false
		x.attempt--
		x.upQ = x.upBuf
		x.res.Up = 0
		c.acquire(true)
		return true // pump again, on the new connection
	}
	if x.started {
		c.finish(err)
		return true
	}
	c.failExchange(err)
	return true
}

// endExchange ends the exchange in flight: its backend connection goes
// back to the pool when reusable, and the client's connection waits for
// its next request, or closes.
func (c *Conn) endExchange(err error) {
	x, l := c.x, c.l
	x.res.Err = err
	x.inFlight = false
	if b := x.be; b != nil {
		x.be = nil
		if err == nil && x.reuse && b.poolable() {
			l.putIdle(b)
		} else {
			l.closeOwn(b)
		}
	}
	x.dropHead(l)
	x.dropPipe(l)
	x.target, x.upQ, x.downQ = nil, nil, nil
	l.putBuffer(x.upBuf)
	l.putBuffer(x.downBuf)
	x.upBuf, x.downBuf = nil, nil
	c.ended()
	if c.state != stateExchange {
		return
	}
	if err != nil {
		c.finish(err)
		return
	}
	if x.closeAfter {
		x.phase, x.since = xClosing, l.clock
		return
	}
	x.phase, x.since = xHead, l.clock
	if x.off == c.n && c.buf != nil {
		c.dropBuffer()
	}
}

// failExchange ends the connection after the answer Failed gives for err, if
// no byte of a response went to the client yet.
func (c *Conn) failExchange(err error) {
	x := c.x
	if x.be != nil {
		c.l.closeOwn(x.be)
		x.be = nil
	}
	x.dropPipe(c.l)
	if x.inFlight {
		x.inFlight = false
		x.res.Err = err
		c.ended()
		if c.state != stateExchange {
			return
		}
	}
	x.downBuf = append(c.l.hold(x.downBuf), x.ex.Failed(err)...)
	x.downQ = x.downBuf
	x.phase, x.since, x.err = xClosing, c.l.clock, err
}

// flushClosing writes the last answer, then closes the connection
// gently: its write side is shut, and what the client still sends is
// read and dropped, up to lingerBytes or for lingerTimeout at most.
// Closing a socket with bytes unread resets it, and a reset can discard
// the answer before the client has read it.
func (c *Conn) flushClosing() {
	x := c.x
	for len(x.downQ) > 0 {
		if !c.cW {
			return
		}
		n, err := c.clientWrite(x.downQ)
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			c.finish(x.err)
			return
		}
		x.downQ = x.downQ[n:]
	}
	if !x.lingering && c.tls != nil && !x.notified {
		// close_notify, so that the client knows the answer is whole.
		x.notified = true
		_ = c.tls.Conn.CloseWrite()
	}
	if err := c.clientFlush(); errors.Is(err, unix.EAGAIN) {
		return
	} else if err != nil {
		c.finish(x.err)
		return
	}
	if !x.lingering {
		x.lingering = true
		sysShutdownWrite(c.fd)
		c.cR = true // what came before the shutdown may not have had its edge yet
	}
	for c.cR { // the socket's bytes, ciphertext under TLS: dropped
		n, err := c.socketRead(c.l.copyBuf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case err != nil, n == 0:
			c.finish(x.err)
			return
		}
		if x.drained += n; x.drained > lingerBytes {
			c.finish(x.err)
			return
		}
	}
}

// How much of a closing connection's late bytes are read and dropped.
const (
	lingerBytes   = 256 << 10
	lingerTimeout = 2 * time.Second
)

// schedule sets the connection's timeout for what it waits on now. The
// loop's one timer per connection is armed only when the due time moves
// earlier; a timer that fires early re-arms (expiredExchange), so an
// exchange costs no timer of its own.
func (c *Conn) schedule() {
	x := c.x
	var due int64
	switch x.phase {
	case xHead:
		if c.n > x.off {
			due = x.since + int64(x.opt.HeadTimeout)
		} else {
			due = x.since + int64(x.opt.IdleTimeout)
		}
	case xBusy:
		switch {
		case x.target == nil:
			due = x.since + int64(x.opt.HeadTimeout)
		case x.be != nil && x.be.connecting:
			d := x.target.DialTimeout
			if d <= 0 {
				d = defaultDialTimeout
			}
			due = x.since + int64(d)
		case x.sentWhole && !x.headDone && x.opt.ResponseTimeout > 0:
			due = x.since + int64(x.opt.ResponseTimeout)
		}
		if x.target != nil && x.target.IdleTimeout > 0 && (x.be == nil || !x.be.connecting) {
			if idle := x.last + int64(x.target.IdleTimeout); due == 0 || idle < due {
				due = idle
			}
		}
	case xClosing:
		due = x.since + int64(min(x.opt.HeadTimeout, lingerTimeout))
	}
	x.due = due
	if due != 0 && (x.armed == 0 || due < x.armed) {
		x.armed = due
		c.l.arm(c, due)
	}
}

// expiredExchange handles the connection's timer.
func (c *Conn) expiredExchange() {
	x := c.x
	x.armed = 0
	now := c.l.clock
	if x.due == 0 {
		return
	}
	if x.due > now {
		x.armed = x.due
		c.l.arm(c, x.due)
		return
	}
	switch x.phase {
	case xHead:
		if c.n > x.off {
			c.failExchange(ErrHeadTimeout)
		} else {
			c.finish(errIdle)
			return
		}
	case xBusy:
		switch {
		case x.target == nil:
			c.finish(ErrHeadTimeout) // an answered request's body stalled
			return
		case x.be != nil && x.be.connecting:
			c.redial(fmt.Errorf("dial tcp %s: %w", x.be.ep, os.ErrDeadlineExceeded))
		case x.sentWhole && !x.headDone && x.opt.ResponseTimeout > 0 && now >= x.since+int64(x.opt.ResponseTimeout):
			if x.started {
				c.finish(ErrResponseTimeout)
				return
			}
			c.failExchange(ErrResponseTimeout)
		default:
			c.finish(errIdle)
			return
		}
	case xClosing:
		c.finish(x.err)
		return
	}
	c.exchange()
}

// releaseExchange lets go of what an exchange connection holds beside
// its socket, when it ends.
func (c *Conn) releaseExchange(err error) {
	x := c.x
	if x == nil {
		return
	}
	if x.be != nil {
		c.l.closeOwn(x.be)
		x.be = nil
	}
	x.dropHead(c.l)
	x.dropPipe(c.l)
	if x.inFlight {
		x.inFlight = false
		if err == nil {
			err = ErrClosed
		}
		x.res.Err = err
		c.ended()
	}
	c.l.putBuffer(x.upBuf)
	c.l.putBuffer(x.downBuf)
	x.upBuf, x.downBuf, x.upQ, x.downQ = nil, nil, nil, nil
}

// ended reports the exchange in flight to the Exchanger, and counts its
// bytes in the connection's Result.
func (c *Conn) ended() {
	x := c.x
	c.up.n += x.res.Up
	c.down.n += x.res.Down
	x.ex.Ended(x.res)
}

// hold returns b emptied, or a buffer of the loop's for bytes that must
// outlive a call: an exchange's buffers go back to the loop between
// exchanges, so that an idle connection holds none.
func (l *loop) hold(b []byte) []byte {
	if b == nil {
		b = l.getBuffer(firstHeadBuffer)
	}
	return b[:0]
}
