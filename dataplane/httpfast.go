package dataplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/sys/unix"
)

// backendTransport is the backend pool of an http-mode route. Every
// request of an HTTP/1.x client goes through direct, written and read
// with fasthttp (serveFront), and so does nearly every HTTP/2 stream: a
// GET, HEAD, OPTIONS or TRACE with no body and no upgrade (directable,
// proxyBodiless). Any other stream (a body, another method) goes through
// the reverse proxy to std, net/http's Transport (RoundTrip).
//
// Why not std for all: http.Transport hands each request to a writer
// goroutine and each response back from a reader goroutine, which also
// keeps a read pending on every idle connection; under wrk with 64
// keep-alive clients that is about a fifth of http mode's CPU per request
// (measured with pprof and /proc, see `make bench-http`). Both pools dial
// with dialBackend, so every connection takes a connection slot.
type backendTransport struct {
	std    *http.Transport
	direct *directPool
	// fronts are the fasthttp servers of the route's HTTP/1.x client
	// connections (serveFront).
	fronts frontServers
	// std's account: stdOpen counts its connections, and stdBusy its
	// requests that may hold one (RoundTrip to the response body's
	// Close), so that the evictor asks std to close idle connections
	// only when some may be idle (mayHoldIdle): CloseIdleConnections
	// also closes every connection that turns idle until std's next
	// request looks for one, the very connection of the request that
	// asked among them. idle is the server's count (idleConns.std), which
	// stdMu keeps in step with the two.
	stdMu            sync.Mutex
	stdOpen, stdBusy int64
	idle             *idleConns
}

// RoundTrip sends req through std: the reverse proxy's requests, which
// the direct pool does not carry.
func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.countStd(0, 1)
	resp, err := t.std.RoundTrip(req)
	if err != nil {
		t.countStd(0, -1)
		return nil, err
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// The reverse proxy takes an upgraded connection from the body.
		resp.Body = &busyConn{busyBody: busyBody{ReadCloser: rwc, t: t}, w: rwc}
	} else {
		resp.Body = &busyBody{ReadCloser: resp.Body, t: t}
	}
	return resp, nil
}

// countStd adds to std's open connections and busy requests, and moves
// the server's count of std's possibly idle connections by as many as
// this Transport's moved: a request still waiting for its connection
// (busy, none open yet) masks no other Transport's idle one.
func (t *backendTransport) countStd(open, busy int64) {
	t.stdMu.Lock()
	before := max(t.stdOpen-t.stdBusy, 0)
	t.stdOpen += open
	t.stdBusy += busy
	moved := max(t.stdOpen-t.stdBusy, 0) - before
	t.stdMu.Unlock()
	if moved != 0 {
		t.idle.std.Add(moved)
	}
}

// mayHoldIdle reports whether std may hold an idle connection: more are
// open than its requests hold.
func (t *backendTransport) mayHoldIdle() bool {
	t.stdMu.Lock()
	defer t.stdMu.Unlock()
	return t.stdOpen > t.stdBusy
}

// busyBody is a response body of std's whose request counts busy until
// the body is closed, when its connection goes back to the pool.
type busyBody struct {
	io.ReadCloser
	t    *backendTransport
	done atomic.Bool
}

// Close closes the body and counts its request done, once.
func (b *busyBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done.CompareAndSwap(false, true) {
		b.t.countStd(0, -1)
	}
	return err
}

// busyConn is the body of a 101 response, the upgraded connection,
// busy until it is closed.
type busyConn struct {
	busyBody
	w io.Writer
}

func (c *busyConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseIdleConnections closes both pools' idle connections, giving their
// slots back.
func (t *backendTransport) CloseIdleConnections() {
	t.std.CloseIdleConnections()
	t.direct.closeIdle()
}

// directable reports whether req can go through the direct pool
// (proxyBodiless): no body,
// no upgrade, valid header fields, and a method a client may retry (RFC 9110 §9.2.2), so that
// a request that finds its pooled connection closed by the backend can
// be sent again on a new one, as http.Transport would.
func directable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	if req.Header["Upgrade"] != nil || req.Header["Connection"] != nil {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return false
	}
	// Request.Write writes fields as they are; http.Transport refuses a
	// request with an invalid one, and gets those.
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// directPool keeps idle HTTP/1.1 connections per endpoint: at most
// maxIdle each, closed after idleTimeout, and at most maxConns open per
// endpoint (past it a request waits for one, or for its context).
type directPool struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// maxHead bounds a response head (readHead).
	maxHead     int
	maxConns    int
	maxIdle     int
	idleTimeout time.Duration

	// idle is the server's count of idle connections, which the pool
	// keeps in step with its own under mu (idleConns.direct).
	idle *idleConns

	mu        sync.Mutex
	endpoints map[string]*directEndpoint
	sweeping  bool
	// retired is set by closeIdle: connections that come back are closed
	// too, until a request asks for one again (as http.Transport does
	// after CloseIdleConnections; a retired configuration's pool gets its
	// in-flight connections back after it was emptied).
	retired bool
}

// directEndpoint is the pool of one endpoint.
type directEndpoint struct {
	idle []*directConn // the most recently used last
	open int
	// freed is closed, and replaced, when a connection of the endpoint
	// goes idle or closes while waiting requests wait on it: they look
	// again.
	freed   chan struct{}
	waiting int
}

// directConn is a backend connection of the direct pool.
type directConn struct {
	net.Conn
	p    *directPool
	addr string
	br   *bufio.Reader
	bw   *bufio.Writer
	// raw is the socket under Conn (send), nil when it is not one.
	raw syscall.RawConn
	// writeUnsent is bound once (a method value allocates); unsent,
	// sendErr and sent are its state during one send.
	writeUnsent func(fd uintptr) bool
	// cut makes the reads and writes in flight on c fail: the request it
	// carries was given up. Bound once, as writeUnsent.
	cut       func()
	unsent    []byte
	sendErr   error
	sent      bool
	idleSince time.Time
	closeOnce sync.Once
	// values are the common fields' values of the responses read on c,
	// for HTTP/2 streams' copies (copyResponseFields).
	values responseValues
}

func newDirectPool(dial func(ctx context.Context, addr string) (net.Conn, error), maxHead int, idle *idleConns) *directPool {
	return &directPool{
		dial: dial, maxHead: maxHead, maxConns: httpMaxConnsPerEndpoint, maxIdle: httpMaxIdleConnsPerEndpoint,
		idleTimeout: httpBackendIdleTimeout, endpoints: map[string]*directEndpoint{}, idle: idle,
	}
}

func newDirectConn(nc net.Conn, p *directPool, addr string) *directConn {
	under := nc
	if sc, ok := nc.(*slotConn); ok {
		under = sc.Conn
	}
	c := &directConn{Conn: nc, p: p, addr: addr, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc), raw: rawConnOf(under)}
	c.writeUnsent = c.writeUnsentOnce
	c.cut = func() { _ = c.SetDeadline(aLongTimeAgo) }
	return c
}

// endpoint returns the pool of addr; p.mu is held.
func (p *directPool) endpoint(addr string) *directEndpoint {
	e := p.endpoints[addr]
	if e == nil {
		e = &directEndpoint{freed: make(chan struct{})}
		p.endpoints[addr] = e
	}
	return e
}

// signal wakes the requests waiting for a connection of e; p.mu is held.
func (e *directEndpoint) signal() {
	if e.waiting > 0 {
		close(e.freed)
		e.freed = make(chan struct{})
		e.waiting = 0
	}
}

// get returns an idle connection to addr (reused), or a new one.
func (p *directPool) get(ctx context.Context, addr string) (c *directConn, reused bool, err error) {
	for {
		p.mu.Lock()
		p.retired = false
		e := p.endpoint(addr)
		if n := len(e.idle); n > 0 {
			c = e.idle[n-1]
			e.idle[n-1] = nil
			e.idle = e.idle[:n-1]
			p.idle.direct.Add(-1)
			p.mu.Unlock()
			return c, true, nil
		}
		if e.open < p.maxConns {
			e.open++
			p.mu.Unlock()
			nc, err := p.dial(ctx, addr)
			if err != nil {
				p.mu.Lock()
				e.open--
				e.signal()
				p.mu.Unlock()
				return nil, false, err
			}
			return newDirectConn(nc, p, addr), false, nil
		}
		freed := e.freed
		e.waiting++
		p.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("waiting for a connection to %s: %w", addr, context.Cause(ctx))
		}
	}
}

// put returns c to the pool, or closes it when the endpoint has maxIdle
// idle connections already or c holds unread bytes.
func (p *directPool) put(c *directConn) {
	if c.br.Buffered() > 0 { // a response the request did not ask for
		c.close()
		return
	}
	c.idleSince = time.Now()
	p.mu.Lock()
	e := p.endpoint(c.addr)
	if p.retired || len(e.idle) >= p.maxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	e.idle = append(e.idle, c)
	p.idle.direct.Add(1)
	e.signal()
	if !p.sweeping {
		p.sweeping = true
		time.AfterFunc(p.idleTimeout, p.sweep)
	}
	p.mu.Unlock()
}

// sweep closes the connections idle for idleTimeout, and comes back
// while any are left.
func (p *directPool) sweep() {
	var expired []*directConn
	p.mu.Lock()
	left := false
	for _, e := range p.endpoints {
		n := 0
		for n < len(e.idle) && time.Since(e.idle[n].idleSince) >= p.idleTimeout {
			n++
		}
		expired = append(expired, e.idle[:n]...)
		e.idle = append(e.idle[:0], e.idle[n:]...)
		p.idle.direct.Add(-int64(n))
		left = left || len(e.idle) > 0
	}
	p.sweeping = left
	if left {
		time.AfterFunc(p.idleTimeout/4, p.sweep)
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// closeIdle closes every idle connection, and those that come back
// until the next request (retired).
func (p *directPool) closeIdle() {
	var idle []*directConn
	p.mu.Lock()
	p.retired = true
	for _, e := range p.endpoints {
		idle = append(idle, e.idle...)
		e.idle = nil
	}
	p.idle.direct.Add(-int64(len(idle)))
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// evictOne closes the connection idle the longest, giving its slot to
// whoever needs one; false when none is idle.
func (p *directPool) evictOne() bool {
	p.mu.Lock()
	var (
		oldest *directConn
		from   *directEndpoint
		at     int
	)
	for _, e := range p.endpoints {
		for i, c := range e.idle {
			if oldest == nil || c.idleSince.Before(oldest.idleSince) {
				oldest, from, at = c, e, i
			}
		}
	}
	if oldest != nil {
		from.idle = append(from.idle[:at], from.idle[at+1:]...)
		p.idle.direct.Add(-1)
	}
	p.mu.Unlock()
	if oldest == nil {
		return false
	}
	oldest.close()
	return true
}

// close closes the connection (giving its slot back) and counts it out
// of its endpoint's, once.
func (c *directConn) close() {
	c.closeOnce.Do(func() {
		_ = c.Close()
		c.p.mu.Lock()
		e := c.p.endpoint(c.addr)
		e.open--
		e.signal()
		c.p.mu.Unlock()
	})
}

// aLongTimeAgo is a deadline that makes pending reads and writes return.
var aLongTimeAgo = time.Unix(1, 0)

// release ends c's use by one request: back to the pool when keep and
// the request was not given up meanwhile, else closed.
func (c *directConn) release(stop func() bool, keep bool) {
	if !stop() || !keep {
		c.close()
		return
	}
	c.p.put(c)
}

// send writes a request that has no body to come and returns once its
// response can be read. Go's Read tries the socket before it waits for
// it, and right after a request the response is not there yet: one
// read in two failed with EAGAIN under h2load (perf stat: 2.3 reads per
// request, haproxy 1.1). Here the request is written from inside the
// socket's RawConn.Read, which registers the wait for readability before
// the write, so no response can come unseen between the two; the read
// that follows finds the response.
func (c *directConn) send(req []byte) error {
	if c.raw == nil {
		_, err := c.Write(req)
		return err
	}
	c.unsent, c.sendErr, c.sent = req, nil, false
	err := c.raw.Read(c.writeUnsent)
	req, werr := c.unsent, c.sendErr
	c.unsent, c.sendErr = nil, nil
	switch {
	case errors.Is(werr, unix.EAGAIN):
		// The socket's buffer is full: the rest goes the usual way.
		_, err = c.Write(req)
		return err
	case werr != nil:
		return werr
	}
	return err
}

// writeUnsentOnce is send's RawConn.Read callback: the first call writes
// c.unsent and asks to wait for the response, the next one ends the
// wait. Its state is c's, so that a request costs no closure.
func (c *directConn) writeUnsentOnce(fd uintptr) bool {
	if c.sent {
		return true
	}
	c.sent = true
	for len(c.unsent) > 0 {
		n, err := unix.Write(int(fd), c.unsent)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			c.sendErr = err
			return true
		}
		c.unsent = c.unsent[n:]
	}
	return false
}
