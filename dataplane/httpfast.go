package dataplane

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// backendTransport is the backend pool of an http-mode route. Every
// request of an HTTP/1.x client goes through direct, written and read
// with fasthttp (serveFront). Of an HTTP/2 client's streams, those that
// nearly all traffic is made of, a GET, HEAD, OPTIONS or TRACE with no
// body and no upgrade, go through direct too: in the handler's goroutine,
// net/http writes the request (Request.Write) and parses the response
// (ReadResponse) on a kept-alive HTTP/1.1 connection. Any other stream
// (a body, another method) goes through std, net/http's Transport.
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
}

// RoundTrip sends req through direct when it can carry it, else std.
func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if directable(req) {
		return t.direct.roundTrip(req)
	}
	return t.std.RoundTrip(req)
}

// CloseIdleConnections closes both pools' idle connections, giving their
// slots back.
func (t *backendTransport) CloseIdleConnections() {
	t.std.CloseIdleConnections()
	t.direct.closeIdle()
}

// directable reports whether req can go through the direct pool: no body,
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
	dial        func(ctx context.Context, addr string) (net.Conn, error)
	maxConns    int
	maxIdle     int
	idleTimeout time.Duration

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
	p         *directPool
	addr      string
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	closeOnce sync.Once
}

func newDirectPool(dial func(ctx context.Context, addr string) (net.Conn, error)) *directPool {
	return &directPool{
		dial: dial, maxConns: httpMaxConnsPerEndpoint, maxIdle: httpMaxIdleConnsPerEndpoint,
		idleTimeout: httpBackendIdleTimeout, endpoints: map[string]*directEndpoint{},
	}
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
			return &directConn{Conn: nc, p: p, addr: addr, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc)}, false, nil
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

// roundTrip sends req on a pooled connection, or on a new one when the
// pooled one fails before a response came (the backend closed it while
// idle): req is bodiless and may be retried (directable).
func (p *directPool) roundTrip(req *http.Request) (*http.Response, error) {
	for {
		c, reused, err := p.get(req.Context(), req.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		c.close()
		if cerr := req.Context().Err(); cerr != nil {
			return nil, fmt.Errorf("%w: %w", cerr, err) // given up, as http.Transport says
		}
		if !reused {
			return nil, err
		}
	}
}

// aLongTimeAgo is a deadline that makes pending reads and writes return.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes req and reads its response; the response body gives
// the connection back to the pool once read to its end and closed.
func (c *directConn) roundTrip(req *http.Request) (*http.Response, error) {
	// A request given up (the client went away) unblocks the connection,
	// which is closed then.
	stop := context.AfterFunc(req.Context(), func() { _ = c.SetDeadline(aLongTimeAgo) })
	resp, err := c.exchange(req)
	if err != nil {
		stop()
		return nil, err
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		c.release(stop, keep)
		return resp, nil
	}
	resp.Body = &directBody{ReadCloser: resp.Body, ctx: req.Context(), c: c, stop: stop, keep: keep}
	return resp, nil
}

// exchange writes req and reads the response, passing 1xx informational
// responses to the request's trace (the reverse proxy forwards them).
func (c *directConn) exchange(req *http.Request) (*http.Response, error) {
	if err := writeBodilessRequest(c.bw, req); err != nil {
		return nil, fmt.Errorf("writing the request to %s: %w", c.addr, err)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, fmt.Errorf("writing the request to %s: %w", c.addr, err)
	}
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, fmt.Errorf("reading the response from %s: %w", c.addr, err)
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			_ = resp.Body.Close()
			return nil, fmt.Errorf("%s switched protocols unasked", c.addr)
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, err
				}
			}
			continue
		}
		return resp, nil
	}
}

// release ends c's use by one request: back to the pool when keep and
// the request was not given up meanwhile, else closed.
func (c *directConn) release(stop func() bool, keep bool) {
	if !stop() || !keep {
		c.close()
		return
	}
	c.p.put(c)
}

// writeBodilessRequest writes the head of a request that directable
// accepted (no body; GET, HEAD, OPTIONS or TRACE; valid fields) as
// Request.Write does, without sorting the fields first: Request.Write
// sorts every request's fields (for a stable wire form), which was 8 % of
// http mode's CPU under HTTP/2. Field order across names carries no
// meaning (RFC 9110 §5.3); each name's values keep theirs. Host and
// User-Agent go as Request.Write sends them (no default User-Agent when
// the field is present but empty, as the reverse proxy leaves it), and
// Content-Length, Transfer-Encoding and Trailer are left out: these
// requests have no body.
func writeBodilessRequest(w *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("http: invalid Host header %q", host)
	}
	_, _ = w.WriteString(req.Method)
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(req.URL.RequestURI())
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = w.WriteString(host)
	_, _ = w.WriteString("\r\n")
	ua, set := req.Header["User-Agent"]
	switch {
	case !set:
		_, _ = w.WriteString("User-Agent: Go-http-client/1.1\r\n")
	case len(ua) > 0 && ua[0] != "":
		writeField(w, "User-Agent", ua[0])
	}
	for k, vs := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	_, err := w.WriteString("\r\n")
	return err
}

// writeField writes one field line, its value trimmed of surrounding
// whitespace as textproto does.
func writeField(w *bufio.Writer, k, v string) {
	_, _ = w.WriteString(k)
	_, _ = w.WriteString(": ")
	_, _ = w.WriteString(textproto.TrimString(v))
	_, _ = w.WriteString("\r\n")
}
