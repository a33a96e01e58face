package dataplane

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portmux/portmux/dataplane/forward"
)

// newHTTPTransport builds the connection pool of a backend in http mode. It
// dials the backend's endpoints like a TCP route does (spread, next on
// failure) and keeps idle connections for reuse.
func newHTTPTransport(endpoints []string, d *forward.Dialer) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, _, err := d.Dial(ctx, endpoints)
			return c, err
		},
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // long polls and slow backends are the backend's business
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
}

// serveHTTP reverse-proxies the requests of one client connection (c, whose
// first bytes are data) to the route's backend with net/http's server and
// httputil.ReverseProxy: keep-alive, WebSocket upgrades passed through, and
// X-Forwarded-For/-Proto/-Host set from what the dataplane saw (the PROXY
// header's client, TLS termination). Forwarded headers the client sent are
// dropped, never trusted. The connection's first request chose the route;
// later requests on it go to the same backend.
//
// A connection that starts with the HTTP/2 preface (a client that
// negotiated h2 by ALPN, or h2c with prior knowledge) is served as HTTP/2
// by net/http, each stream proxied to the backend over HTTP/1.1.
func (s *Server) serveHTTP(ev *connEvent, c net.Conn, data []byte, rc *routeConfig, tlsTerminated bool) {
	proto := "http"
	if tlsTerminated {
		proto = "https"
	}
	client := ev.client
	counted := &countingConn{Conn: withPrefix(c, data), remote: client}
	var handlers handlerGroup
	var errMu sync.Mutex // HTTP/2 streams fail concurrently
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Host
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Proto", proto)
			pr.Out.Host = pr.In.Host
		},
		Transport: rc.transport,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.m.dialErrors.WithLabelValues(rc.Backend.Name).Inc()
			errMu.Lock()
			ev.err = err
			errMu.Unlock()
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !handlers.enter() {
			w.WriteHeader(http.StatusServiceUnavailable) // the connection is gone
			return
		}
		defer handlers.leave()
		proxy.ServeHTTP(w, r)
	})
	ln := newOneConnListener(counted)
	counted.onClose = ln.finish
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       s.opt.IdleTimeout,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				ln.finish()
			}
		},
		ErrorLog: nil,
	}
	// HTTP/1.x, and HTTP/2 with prior knowledge: after termination the
	// connection is not a *tls.Conn to net/http, so an h2 client's
	// preface is "unencrypted HTTP/2" to it.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	_ = srv.Serve(ln)
	// A hijacked (upgraded) connection is still being copied, and HTTP/2
	// handlers may outlive ServeConn.
	handlers.closeAndWait()
	ev.backend = rc.Backend.Name
	ev.up, ev.down = counted.in.Load(), counted.out.Load()
	rc.up.Add(float64(ev.up))
	rc.down.Add(float64(ev.down))
	ev.outcome = OutcomeHTTP
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

func (c *countingConn) RemoteAddr() net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", c.remote); err == nil {
		return a
	}
	return c.Conn.RemoteAddr()
}
