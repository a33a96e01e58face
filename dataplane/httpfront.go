package dataplane

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"

	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/route"
)

// HTTP/1.x connections in http mode are served by fasthttp's server
// (serveFront), HTTP/2 ones by package h2's (serveHTTPMode). net/http's
// HTTP/1 server costs a goroutine and a background read per request and
// about 8 KiB of allocations (header maps, the request, its context):
// `make bench-http` measured it at about half haproxy's requests per
// second. fasthttp parses into buffers it reuses and calls the handler on
// the connection's own goroutine.
//
// Every request is routed as net/http's were (httpConn.route), proxied
// over the backend pool's direct connections (frontExchange), with the
// same forwarding headers, limits, metrics and connection outcome.

// frontBodyPrefetch is how much of a request body fasthttp reads before
// the handler runs; the rest streams to the backend as it arrives, as
// net/http's did. fasthttp reads at most 8 KiB ahead anyway.
const frontBodyPrefetch = 8 << 10

// http2Preface starts every HTTP/2 connection (RFC 9113 §3.4); the
// connections that start with it go to package h2's server.
var http2Preface = []byte("PRI * HTTP/2.0")

// wantsHTTP2 reports whether the connection speaks HTTP/2: negotiated by
// ALPN, or h2c with prior knowledge.
func wantsHTTP2(alpn string, sniffed []byte) bool {
	return alpn == "h2" || bytes.HasPrefix(sniffed, http2Preface)
}

// frontConn is the connection fasthttp serves: the counted client stream,
// and what its requests need (ctx.Conn() returns it to the handler).
type frontConn struct {
	*countingConn
	hc *httpConn
	// ctx carries the connection's backend slot (backendSlotKey); it is
	// cancelled when the connection is cut or ends, which unblocks a
	// backend exchange in flight.
	ctx context.Context
	// hijacked is set (by the server's ConnState hook, before ServeConn
	// returns) when a WebSocket upgrade took the connection over;
	// relayed is closed when its relay ends.
	hijacked bool
	relayed  chan struct{}
	// raw is the client's socket, watched for a hang-up while a response
	// waits for its backend; nil when it is not one.
	raw syscall.RawConn
	// hungUp is set once the client was seen gone.
	hungUp atomic.Bool
	// inExchange is the backend connection of the request in flight,
	// from the request's head to the end of its response's body: a cut
	// of the connection, or the client hanging up meanwhile, cuts it.
	// seq counts exchanges; swept is the one the last sweep saw (the
	// sweeper's alone). endExchange is exchangeDone, bound once.
	inExchange  atomic.Pointer[directConn]
	seq         atomic.Uint64
	swept       uint64
	endExchange func() bool
}

// clientSweepInterval is how often the clients whose request is in flight
// are checked for having hung up: an exchange that two sweeps in a row
// find in flight is checked (net/http noticed a hang-up at once with a
// read pending on every connection, which costs a goroutine wake-up per
// request; most responses come sooner than this).
const clientSweepInterval = 200 * time.Millisecond

// startExchange notes dc as the backend connection of the request in
// flight.
func (fc *frontConn) startExchange(dc *directConn) {
	fc.inExchange.Store(dc)
	fc.seq.Add(1)
	if fc.ctx.Err() != nil {
		fc.cutExchange()
	}
}

// exchangeDone ends the exchange startExchange noted; false when it was
// cut meanwhile (its backend connection must not be pooled then).
func (fc *frontConn) exchangeDone() bool {
	fc.inExchange.Store(nil)
	return fc.ctx.Err() == nil && !fc.hungUp.Load()
}

// sweep cuts the exchange in flight when it has lasted since the last
// sweep and the client hung up. hungUp is set before inExchange is looked
// at again: an exchange that ends meanwhile sees it (exchangeDone) and
// closes its connection instead of pooling it, so the deadline never
// reaches a connection another client got from the pool.
func (fc *frontConn) sweep() {
	seq := fc.seq.Load()
	if dc := fc.inExchange.Load(); dc != nil && fc.swept == seq && hungUp(fc.raw) {
		fc.hungUp.Store(true)
		if fc.inExchange.Load() == dc {
			_ = dc.SetDeadline(aLongTimeAgo)
		}
	}
	fc.swept = seq
}

// clientSweeper sweeps the connections of a route's fasthttp servers
// (frontConn.sweep) every clientSweepInterval, from one goroutine that
// runs while any is open.
type clientSweeper struct {
	mu      sync.Mutex
	conns   map[*frontConn]struct{}
	running bool
}

func (w *clientSweeper) add(fc *frontConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conns == nil {
		w.conns = map[*frontConn]struct{}{}
	}
	w.conns[fc] = struct{}{}
	if !w.running {
		w.running = true
		go w.loop()
	}
}

func (w *clientSweeper) remove(fc *frontConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.conns, fc)
}

func (w *clientSweeper) loop() {
	t := time.NewTicker(clientSweepInterval)
	defer t.Stop()
	var batch []*frontConn
	for range t.C {
		w.mu.Lock()
		if len(w.conns) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		batch = batch[:0]
		for fc := range w.conns {
			batch = append(batch, fc)
		}
		w.mu.Unlock()
		for _, fc := range batch {
			fc.sweep()
		}
	}
}

// cutExchange unblocks the exchange in flight, if any.
func (fc *frontConn) cutExchange() {
	if dc := fc.inExchange.Load(); dc != nil {
		_ = dc.SetDeadline(aLongTimeAgo)
	}
}

// frontServers are the fasthttp servers of one route's connections, one
// per idle timeout (the route's own or the server's).
type frontServers struct {
	mu      sync.Mutex
	servers map[time.Duration]*fasthttp.Server
	sweeper clientSweeper
}

// get returns the server for lim, made on first use.
func (f *frontServers) get(lim HTTPLimits) *fasthttp.Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	if srv := f.servers[lim.IdleTimeout]; srv != nil {
		return srv
	}
	if f.servers == nil {
		f.servers = map[time.Duration]*fasthttp.Server{}
	}
	srv := newFrontServer(lim)
	f.servers[lim.IdleTimeout] = srv
	return srv
}

// newFrontServer is the fasthttp server of http mode within lim: a
// header block (request line included) larger than MaxHeaderBytes gets
// 431, one that takes longer than ReadHeaderTimeout from its first byte
// (or from the connection's start) loses the connection, as does a
// kept-alive connection idle for IdleTimeout. Bodies are streamed, and
// fasthttp adds no header of its own (Server, Content-Type) to what the
// backend answered.
func newFrontServer(lim HTTPLimits) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      serveFrontRequest,
		ErrorHandler:                 frontError,
		ConnState:                    frontConnState,
		ReadBufferSize:               lim.MaxHeaderBytes,
		ReadTimeout:                  lim.ReadHeaderTimeout,
		IdleTimeout:                  lim.IdleTimeout,
		MaxRequestBodySize:           frontBodyPrefetch,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		// Idle kept-alive connections hold no buffer (a 64 KiB header
		// buffer each otherwise); `make bench-http` measured no CPU cost.
		ReduceMemoryUsage: true,
		Logger:            frontLogger{},
	}
}

// frontLogger drops fasthttp's own log lines: the errors of a connection
// are its report's (ServeConn's result), and the handler logs through
// logr.
type frontLogger struct{}

func (frontLogger) Printf(string, ...any) {}

// frontConnState notes a hijacked connection: its relay is waited for.
func frontConnState(c net.Conn, st fasthttp.ConnState) {
	if fc, ok := c.(*frontConn); ok && st == fasthttp.StateHijacked {
		fc.hijacked = true
	}
}

// frontError answers a request fasthttp could not read, as net/http did:
// 431 for a header block over the cap, nothing (the connection is closed)
// when the header timeout passed, 400 for anything malformed. The
// connection is closed after the answer.
func frontError(ctx *fasthttp.RequestCtx, err error) {
	if fc, ok := ctx.Conn().(*frontConn); ok {
		fc.hc.s.log.V(1).Info("HTTP server", "listener", fc.hc.c.rep.listener, "client", fc.hc.c.rep.client, "message", err.Error())
	}
	var small *fasthttp.ErrSmallBuffer
	var nerr net.Error
	switch {
	case errors.As(err, &small):
		frontPlainError(ctx, "431 Request Header Fields Too Large", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.As(err, &nerr) && nerr.Timeout():
		_ = ctx.Conn().Close()
	default:
		frontPlainError(ctx, "400 Bad Request", fasthttp.StatusBadRequest)
	}
}

// frontPlainError answers msg with status, as http.Error does.
func frontPlainError(ctx *fasthttp.RequestCtx, msg string, status int) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.Response.Header.Set("Content-Type", "text/plain; charset=utf-8")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.SetBodyString(msg + "\n")
}

// serveFront serves one HTTP/1.x connection in http mode with the
// route's fasthttp server; see serveHTTPMode for the rest. A panic
// (of fasthttp's, or of the connection's reads) ends this connection
// only, and is reported with it.
func serveFront(c *conn, rc *routeConfig, counted *countingConn, hc *httpConn, slot takeSlot, idle time.Duration) {
	lim := c.s.opt.HTTP.withDefaults(c.s.opt.IdleTimeout)
	if idle > 0 {
		lim.IdleTimeout = idle
	}
	srv := rc.transport.fronts.get(lim)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), backendSlotKey{}, slot))
	defer cancel()
	fc := &frontConn{countingConn: counted, hc: hc, ctx: ctx, relayed: make(chan struct{}), raw: rawConnOf(c.raw)}
	fc.endExchange = fc.exchangeDone
	if fc.raw != nil {
		sweeper := &rc.transport.fronts.sweeper
		sweeper.add(fc)
		defer sweeper.remove(fc)
	}
	// Shutdown out of patience closes the socket and gives up the
	// backend exchange in flight.
	c.cutWith(func() {
		cancel()
		fc.cutExchange()
		_ = c.raw.Close()
	})
	err := panics.Run(func() error { return srv.ServeConn(fc) })
	if p := panics.Is(err); p != nil {
		// Counted and logged before the client sees its connection
		// close, as net/http did (once: the connection's end does not
		// count it again); the report says what ended it.
		c.logPanic(p)
		c.rep.err = p
		_ = fc.Close()
		return
	}
	if fc.hijacked {
		<-fc.relayed
	}
}

// serveFrontRequest routes and proxies one request of a frontConn. A
// panic closes the connection, is counted and logged, and the other
// connections are served, as net/http did.
func serveFrontRequest(ctx *fasthttp.RequestCtx) {
	fc := ctx.Conn().(*frontConn)
	h := fc.hc
	defer func() {
		if v := recover(); v != nil {
			h.c.logPanic(&panics.Error{Value: v, Stack: debug.Stack()})
			_ = fc.Close()
			ctx.SetConnectionClose()
		}
	}()
	// The header timeout bounds the header block only: a body streams to
	// the backend for as long as it takes, as with net/http.
	if ctx.Request.BodyStream() != nil {
		_ = fc.SetReadDeadline(time.Time{})
	}
	t, bad, ok := frontTargetOf(&ctx.Request)
	if !ok {
		frontPlainError(ctx, "400 Bad Request"+bad, fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		return
	}
	ws := frontIsWebSocket(&ctx.Request.Header)
	rc := h.routeOf(route.Request{Method: string(ctx.Method()), Host: t.host, Path: t.path, WebSocket: ws})
	if rc == nil {
		h.count(nil, RequestMisdirected)
		frontPlainError(ctx, "no route for this request on this connection", fasthttp.StatusMisdirectedRequest)
		return
	}
	h.count(rc, h.forward(ctx, fc, rc, t, ws))
}

// frontTarget is what routing and the backend request need of a
// request's target.
type frontTarget struct {
	// host is the Host header, or an absolute-form target's host, as
	// net/http's Request.Host.
	host string
	// path is the decoded path, as net/http's URL.Path.
	path string
	// uri is the target to send the backend in origin form, nil to send
	// the client's as it came.
	uri []byte
}

// frontTargetOf reads the target of req as net/http's server did; bad
// is the end of net/http's 400 message when it refused it (a missing or
// malformed Host, a bad escape: !ok).
func frontTargetOf(req *fasthttp.Request) (t frontTarget, bad string, ok bool) {
	return frontTargetOfHeader(&req.Header)
}

// frontTargetOfHeader is frontTargetOf from the request's head.
func frontTargetOfHeader(req *fasthttp.RequestHeader) (t frontTarget, bad string, ok bool) {
	raw := req.RequestURI()
	host := req.Host()
	if len(host) == 0 && req.IsHTTP11() {
		return t, ": missing required Host header", false
	}
	t.host = string(host)
	if len(raw) > 0 && raw[0] == '/' && !bytes.HasPrefix(raw, []byte("//")) {
		p := raw
		if i := bytes.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		t.path = string(p)
		if bytes.IndexByte(p, '%') >= 0 {
			dec, err := url.PathUnescape(t.path)
			if err != nil {
				return t, "", false
			}
			t.path = dec
		}
	} else {
		u, err := url.ParseRequestURI(string(raw))
		if err != nil {
			return t, "", false
		}
		t.path = u.Path
		if u.Host != "" {
			t.host = u.Host
		}
		if u.IsAbs() {
			t.uri = []byte(u.RequestURI())
		}
	}
	if !httpguts.ValidHostHeader(t.host) {
		return t, ": malformed Host header", false
	}
	return t, "", true
}

// frontIsWebSocket is sniff.IsWebSocketUpgrade for a fasthttp request.
func frontIsWebSocket(h *fasthttp.RequestHeader) bool {
	return h.IsGet() && h.IsHTTP11() &&
		frontHasToken(h.PeekAll("Upgrade"), "websocket") &&
		frontHasToken(h.PeekAll("Connection"), "upgrade") &&
		len(h.Peek("Sec-Websocket-Key")) > 0
}

// frontHasToken reports whether a comma-separated header, over all its
// field lines, lists token, compared case-insensitively.
func frontHasToken(values [][]byte, token string) bool {
	for _, v := range values {
		for len(v) > 0 {
			var item []byte
			item, v, _ = bytes.Cut(v, []byte(","))
			if strings.EqualFold(string(bytes.Trim(item, " \t")), token) {
				return true
			}
		}
	}
	return false
}

// routeOf returns the http-mode route that takes r, or nil when its
// route is not in http mode or there is none.
func (h *httpConn) routeOf(r route.Request) *routeConfig {
	i := route.DecideRequest(h.lc.Routes, r)
	if i < 0 || h.lc.routes[i].transport == nil {
		return nil
	}
	return &h.lc.routes[i]
}
