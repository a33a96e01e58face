package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/h2"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/sniff"
)

// serveHTTPMode serves one client connection in http mode (the action of
// a route whose backend is in http mode; st is what to read, sniffed its
// first request): HTTP/1.x with keep-alive by fasthttp's server
// (serveFront), HTTP/2 by the h2 package's, for a connection that starts with
// the HTTP/2 preface (a client that negotiated h2 by ALPN, or h2c with
// prior knowledge). Every request, the first included, and every HTTP/2
// stream is routed on its own by the routes of rc.lc (httpConn) and
// proxied to its route's backend over HTTP/1.1. The log line and byte
// counters of the connection stay with rc. It serves the connection
// until it ends and never takes ownership of it.
//
// What the client can make the dataplane hold is bounded (Options.HTTP):
// header block size, header and idle time, HTTP/2 streams and frame size;
// and every backend connection dialled for its requests takes a slot of
// the listener that accepted it.
func serveHTTPMode(c *conn, rc *routeConfig, st net.Conn, sniffed []byte, depth int) bool {
	if handled, owned := c.adoptHTTP(rc, st, sniffed, depth); handled {
		return owned
	}
	s := c.s
	hc := newHTTPConn(c, rc.lc)
	// The sniffed bytes are copied: no pooled buffer of ours is kept
	// while the connection lives.
	h2 := wantsHTTP2(c.rep.alpn, sniffed)
	counted := c.counted(st, c.keepSniffed(sniffed))
	slot := takeSlot(c.poolSlot)
	if h2 {
		_ = s.newH2Server(hc, slot, rc.IdleTimeout, &c.rep, c.draining(), nil).ServeConn(counted)
	} else {
		serveFront(c, rc, counted, hc, slot, rc.IdleTimeout)
	}
	// HTTP/2 handlers and upgraded connections may outlive the server's
	// hold on the connection.
	hc.handlers.closeAndWait()
	c.rep.backend = rc.Backend.Name
	c.reportBytes(rc, counted.in.Load(), counted.out.Load())
	c.rep.outcome = OutcomeHTTP
	return false
}

// newH2Server is the HTTP/2 server of one connection in http mode,
// within the server's HTTP limits; idle, when set, is the idle timeout of
// the route the connection's first request chose. The contexts of its
// requests carry slot, which the backend pool charges the connections it
// dials for them to; its handlers' panics and the client's protocol
// errors go to the connection's log (httpErrorLog). Once drain is done
// the connection is drained: GOAWAY, and it closes once its streams end.
// With relay loops, its bodiless streams are carried by one (h2loop.go):
// caller's, or the least busy when nil.
func (s *Server) newH2Server(h *httpConn, slot takeSlot, idle time.Duration, rep *report, drain context.Context, caller *relayloop.Caller) *h2.Server {
	lim := s.opt.HTTP.withDefaults(s.opt.IdleTimeout)
	if idle > 0 {
		lim.IdleTimeout = idle
	}
	srv := &h2.Server{
		Handler:              h,
		Go:                   s.workers.Go,
		BaseContext:          context.WithValue(context.Background(), backendSlotKey{}, slot),
		ErrorLog:             s.httpErrorLog(rep),
		MaxConcurrentStreams: uint32(lim.MaxConcurrentStreams), //nolint:gosec // validated positive and small
		MaxHeaderListSize:    uint32(lim.MaxHeaderBytes),       //nolint:gosec // validated positive and small
		IdleTimeout:          lim.IdleTimeout,
		PrefaceTimeout:       lim.ReadHeaderTimeout,
		WriteTimeout:         lim.WriteTimeout,
		Drain:                drain,
		Admit:                h.c.admitStream,
		Release:              h.c.streamEnded,
	}
	if ls := h.loopStreamsOf(caller); ls != nil {
		srv.Async, srv.ReadIdle = ls.take, ls.flush
	}
	return srv
}

// httpConn routes and proxies the requests of one client connection in
// http mode. Its first request chose the mode; no later request is
// trusted to go where the first went: each is decided by the listener's
// routes (route.DecideRequest) and served only by an http-mode route.
type httpConn struct {
	s *Server
	c *conn
	// lc is the listener whose routes decide every request.
	lc *listenerConfig
	// proto is the scheme the client spoke to the dataplane: https when
	// TLS was terminated here.
	proto string
	// clientIP is the client address the dataplane established (a PROXY
	// header's, if any), without port: X-Forwarded-For, X-Real-IP and
	// Forwarded are set from it, never taken from the client.
	clientIP string
	// xff, realIP and xfp are the values of X-Forwarded-For, X-Real-IP
	// and X-Forwarded-Proto, the same for every request of the
	// connection: built once, as Header.Set would allocate them per
	// request. hosts holds those that depend on the Host of the last
	// request (HTTP/2 streams read it concurrently).
	xff, realIP, xfp []string
	hosts            atomic.Pointer[hostHeaders]
	// errLog takes what the reverse proxy logs (a client that left
	// mid-response), to the connection's log at V(1), not stderr.
	errLog   *log.Logger
	handlers handlerGroup
	errMu    sync.Mutex // HTTP/2 streams fail concurrently
}

func newHTTPConn(c *conn, lc *listenerConfig) *httpConn {
	proto := "http"
	if c.rep.tls {
		proto = "https"
	}
	ip, _, err := net.SplitHostPort(c.rep.client)
	if err != nil {
		ip = c.rep.client
	}
	return &httpConn{
		s: c.s, c: c, lc: lc, proto: proto, clientIP: ip,
		xff: []string{ip}, realIP: []string{ip}, xfp: []string{proto},
		errLog: c.s.httpErrorLog(&c.rep),
	}
}

// hostHeaders are the X-Forwarded-Host and Forwarded values of requests
// for host.
type hostHeaders struct {
	host     string
	xfh, fwd []string
}

// forHost returns the header values for requests for host, building them
// when host is not the last request's.
func (h *httpConn) forHost(host string) *hostHeaders {
	if hh := h.hosts.Load(); hh != nil && hh.host == host {
		return hh
	}
	hh := &hostHeaders{host: host, xfh: []string{host}, fwd: []string{forwardedHeader(h.clientIP, h.proto, host)}}
	h.hosts.Store(hh)
	return hh
}

// ServeHTTP routes one request (or HTTP/2 stream): to the backend of the
// first route that takes it when that route is in http mode, else 421
// Misdirected Request (RFC 9110 §15.5.20), and nothing reaches a backend.
// A client that retries a 421 on a new connection has that connection's
// first bytes sniffed, so it reaches a tcp-mode route or a tunnel there.
func (h *httpConn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws := sniff.IsWebSocketUpgrade(r)
	if !h.handlers.enter() {
		// The connection ended before this stream's handler ran (a
		// worker started it late, after a reset and the client's
		// leaving): no one is there to answer, and it is still a
		// request, whose client is gone.
		h.count(h.route(r, ws), RequestClientGone)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	defer h.handlers.leave()
	rc := h.route(r, ws)
	if rc == nil {
		h.count(nil, RequestMisdirected)
		http.Error(w, "no route for this request on this connection", http.StatusMisdirectedRequest)
		return
	}
	h.proxy(w, r, rc, ws)
}

// route returns the http-mode route that takes r, or nil when its route
// is not in http mode or there is none.
func (h *httpConn) route(r *http.Request, ws bool) *routeConfig {
	i := route.DecideRequest(h.lc.Routes, route.Request{Method: r.Method, Host: r.Host, Path: r.URL.Path, WebSocket: ws})
	if i < 0 || h.lc.routes[i].transport == nil {
		return nil
	}
	return &h.lc.routes[i]
}

// proxy sends r to the next endpoint of rc's backend and its response
// back.
func (h *httpConn) proxy(w http.ResponseWriter, r *http.Request, rc *routeConfig, ws bool) {
	endpoint := rc.dialer.Next(rc.Backend.Endpoints)
	if endpoint == "" {
		h.count(rc, h.fail(w, rc, forward.ErrNoEndpoints))
		return
	}
	if !ws && directable(r) {
		h.count(rc, h.proxyBodiless(w, r, rc, endpoint))
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &clientReadCloser{clientBody{r.Body}, r.Body}
	}
	outcome := RequestProxied
	p := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { h.rewrite(pr, endpoint, ws) },
		Transport:  rc.transport,
		BufferPool: proxyBuffers{&h.s.copyBufs},
		ErrorLog:   h.errLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if cerr := r.Context().Err(); cerr != nil {
				// The stream was reset (by either side) or its connection
				// is gone: whether the proxy saw that or the body's
				// failure first is a matter of timing, the outcome is not.
				err = fmt.Errorf("%w: %w", cerr, err)
			}
			outcome = h.fail(w, rc, err)
		},
	}
	p.ServeHTTP(w, r)
	h.count(rc, outcome)
}

// proxyBuffers lends the reverse proxy the server's copy buffers for
// response bodies: without a pool it allocates 32 KiB per request.
type proxyBuffers struct{ pool *sync.Pool }

func (p proxyBuffers) Get() []byte { return *p.pool.Get().(*[]byte) }

func (p proxyBuffers) Put(b []byte) { p.pool.Put(&b) }

// rewrite makes the request the backend receives: sent to endpoint, which
// is what the pool keys its connections by, with the client's Host kept;
// X-Forwarded-For, -Proto, -Host, X-Real-IP and Forwarded set from what
// the dataplane saw (those the client sent are dropped, never trusted);
// and no Upgrade but a WebSocket handshake's.
func (h *httpConn) rewrite(pr *httputil.ProxyRequest, endpoint string, ws bool) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = endpoint
	pr.Out.Host = pr.In.Host
	// The reverse proxy removed the client's X-Forwarded-* and Forwarded
	// before calling Rewrite; these are what SetXForwarded would set, from
	// the address the dataplane established (canonical keys, the slices
	// shared read-only by the connection's requests).
	hd, hh := pr.Out.Header, h.forHost(pr.In.Host)
	hd["X-Forwarded-For"] = h.xff
	hd["X-Forwarded-Host"] = hh.xfh
	hd["X-Forwarded-Proto"] = h.xfp
	hd["X-Real-Ip"] = h.realIP
	hd["Forwarded"] = hh.fwd
	if !ws {
		// Only a WebSocket handshake may switch protocols. Any other
		// upgrade (h2c above all) would turn the connection into a raw
		// tunnel to the backend, where later requests go unrouted.
		for _, k := range []string{"Upgrade", "Connection", "Http2-Settings"} {
			delete(hd, k)
		}
	}
}

// fail answers a request the backend did not, and returns its outcome.
func (h *httpConn) fail(w http.ResponseWriter, rc *routeConfig, err error) string {
	status, outcome := h.failure(rc, err)
	w.WriteHeader(status)
	return outcome
}

// failure records why a request got no answer from the backend, and
// returns the status to answer it with and its outcome: 503 when no
// connection slot was free, 499 when the client left (its request's
// context was cancelled: an HTTP/2 stream reset, even for a body short
// of its length, whose read fails too), 400 when the client's body
// failed, else 502 (counted as a dial error).
func (h *httpConn) failure(rc *routeConfig, err error) (status int, outcome string) {
	h.errMu.Lock()
	h.c.rep.err = err
	h.errMu.Unlock()
	switch {
	case errors.Is(err, errNoBackendSlot):
		return http.StatusServiceUnavailable, RequestUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, errClientGone), errors.Is(err, relayloop.ErrClientLeft):
		return statusClientClosedRequest, RequestClientGone
	case errors.Is(err, errClientBody), errors.Is(err, relayloop.ErrRequestBody):
		return http.StatusBadRequest, RequestBadRequest
	}
	h.s.m.dialErrors.WithLabelValues(rc.Backend.Name).Inc()
	return http.StatusBadGateway, RequestBadGateway
}

// count records what became of one request; rc is nil when it was
// misdirected.
func (h *httpConn) count(rc *routeConfig, outcome string) {
	if rc != nil && outcome == RequestProxied && rc.lc == h.lc {
		rc.proxiedCounter(h.s.m).Inc()
		return
	}
	name := ""
	if rc != nil {
		name = rc.Name
	}
	h.s.m.httpRequests.WithLabelValues(h.lc.Name, name, outcome).Inc()
}

// statusClientClosedRequest answers a request whose client left: no one
// reads it, but a log does (nginx's 499).
const statusClientClosedRequest = 499

// errClientGone marks an exchange cut because its client hung up.
var errClientGone = errors.New("the client hung up")

// errClientBody marks an error reading a request's body from the
// client: the request fails by the client's doing, not the backend's.
var errClientBody = errors.New("reading the client's request body")

// clientBody is a request body as it comes from the client: its read
// errors are marked errClientBody, so that a client that sends a
// malformed body, or leaves mid-body, does not count as a failing
// backend.
type clientBody struct{ r io.Reader }

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF { //nolint:errorlint // io.Copy wants io.EOF itself
		err = fmt.Errorf("%w: %w", errClientBody, err)
	}
	return n, err
}

// clientReadCloser is an HTTP/2 stream's body as the reverse proxy
// reads it: marked as clientBody, closed as the stream's.
type clientReadCloser struct {
	clientBody
	io.Closer
}

// forwardedHeader is the Forwarded field (RFC 7239 §4) of one hop: the
// client's address, the scheme and the Host it asked for. An IPv6 address
// is bracketed (§6), and a value that is not a token is quoted.
func forwardedHeader(clientIP, proto, host string) string {
	node := clientIP
	switch {
	case node == "":
		node = "unknown"
	case strings.Contains(node, ":"):
		node = "[" + node + "]"
	}
	v := "for=" + forwardedValue(node) + ";proto=" + forwardedValue(proto)
	if host != "" {
		v += ";host=" + forwardedValue(host)
	}
	return v
}

// forwardedValue is v as a token, or as a quoted-string (RFC 9110 §5.6.4)
// when it is not one.
func forwardedValue(v string) string {
	if httpguts.ValidHeaderFieldName(v) { // a token
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

// handlerGroup counts running handlers. Unlike a WaitGroup it may be
// entered while closeAndWait waits: an HTTP/2 handler goroutine can start
// after ServeConn has returned; it is refused then.
type handlerGroup struct {
	mu      sync.Mutex
	cond    *sync.Cond
	running int
	closed  bool
}

func (g *handlerGroup) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.running++
	return true
}

func (g *handlerGroup) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	if g.running == 0 && g.cond != nil {
		g.cond.Broadcast()
	}
}

func (g *handlerGroup) closeAndWait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
	for g.running > 0 {
		g.cond.Wait()
	}
}
