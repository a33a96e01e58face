package dataplane

import (
	"context"
	"errors"
	"iter"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/slots"
)

// The backend pool of an http-mode route: a backendTransport per route
// (its direct pool and an http.Transport), whose connections are keyed by
// endpoint (each request's URL names the endpoint it goes to), never by
// the client's Host, and each of which holds a connection slot while it
// is open. The limits below apply to each of the two pools.
const (
	// httpMaxConnsPerEndpoint caps a pool's connections to one endpoint;
	// past it, requests wait for one of them, as haproxy queues at a
	// server's maxconn. The listeners' caps bound the total anyway; this
	// keeps one endpoint from being sent all of them.
	httpMaxConnsPerEndpoint = 1024

	// httpMaxIdleConnsPerEndpoint is how many idle connections to one
	// endpoint are kept for reuse. It must cover the requests in flight to
	// the endpoint at once: below that, every burst closes the connections
	// past the limit as their requests end and dials them again for the
	// next ones (at 32, 64 clients made one dial per 40 requests, 8 % of
	// the CPU). An idle connection holds a connection slot, so the
	// listeners' and the global caps bound them with everything else.
	httpMaxIdleConnsPerEndpoint = 256

	// httpMaxIdleConns caps a route's idle connections over all its
	// endpoints.
	httpMaxIdleConns = 1024

	// httpBackendIdleTimeout closes a pooled connection idle for this
	// long, which gives its connection slot back.
	httpBackendIdleTimeout = 30 * time.Second
)

// errNoBackendSlot is why a request gets 503: opening one more backend
// connection would take the listener (or the server) past maxConnections.
var errNoBackendSlot = errors.New("no connection slot for another backend connection: the listener or the server is at maxConnections")

// newHTTPTransport builds the connection pools of a backend in http mode
// (backendTransport).
// The endpoint of each request is chosen before it reaches the pool
// (Dialer.Next); a failed dial tries the endpoints after it, as a TCP
// route does. A connection dialled for a request takes a slot from the
// request's client connection (backendSlotKey) until it closes.
// A response head larger than maxHead is an error (the client gets 502).
func newHTTPTransport(endpoints []string, d *forward.Dialer, maxHead int, idle *idleConns) *backendTransport {
	t := &backendTransport{idle: idle}
	std := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, err := dialBackend(ctx, d, endpoints, addr)
			if err != nil {
				return nil, err
			}
			sc := c.(*slotConn)
			t.countStd(1, 0)
			release := sc.release
			sc.release = func() {
				t.countStd(-1, 0)
				release()
			}
			return sc, nil
		},
		MaxConnsPerHost:        httpMaxConnsPerEndpoint,
		MaxIdleConnsPerHost:    httpMaxIdleConnsPerEndpoint,
		MaxIdleConns:           httpMaxIdleConns,
		IdleConnTimeout:        httpBackendIdleTimeout,
		ResponseHeaderTimeout:  0, // long polls and slow backends are the backend's business
		ExpectContinueTimeout:  time.Second,
		ForceAttemptHTTP2:      false,
		MaxResponseHeaderBytes: int64(maxHead),
	}
	direct := newDirectPool(func(ctx context.Context, addr string) (net.Conn, error) {
		return dialBackend(ctx, d, endpoints, addr)
	}, maxHead, idle)
	t.std, t.direct = std, direct
	return t
}

// backendSlotKey keys, in the contexts of a client connection's requests,
// the takeSlot that charges backend connections to that connection's
// listener.
type backendSlotKey struct{}

// takeSlot takes a connection slot for one backend connection: release
// gives it back; ok is false when none is free.
type takeSlot func() (release func(), ok bool)

// dialBackend connects to addr, the endpoint a request was given, or to
// the endpoints after it when that fails, holding a connection slot of the
// request's client connection while the connection is open.
func dialBackend(ctx context.Context, d *forward.Dialer, endpoints []string, addr string) (net.Conn, error) {
	take, _ := ctx.Value(backendSlotKey{}).(takeSlot)
	if take == nil {
		return nil, errNoBackendSlot // not a request of serveHTTP's: no slot to charge
	}
	release, ok := take()
	if !ok {
		return nil, errNoBackendSlot
	}
	c, _, err := d.DialFrom(ctx, endpoints, addr)
	if err != nil {
		release()
		return nil, err
	}
	return &slotConn{Conn: c, release: release}, nil
}

// slotConn is a backend connection that gives its slot back when closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and gives its slot back, once.
func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// backendSlot takes a slot for a backend connection that http mode opens
// on behalf of a client accepted on b (configured by lc, within cfg), as
// admit does for an accepted connection: one of the listener's
// maxConnections and one of the global cap. Without it, one client could
// make the dataplane hold a backend connection per HTTP/2 stream, however
// low the caps.
func (s *Server) backendSlot(b *boundListener, lc *listenerConfig, cfg *config) (release func(), ok bool) {
	if !slots.Take(&b.active, lc.MaxConnections) {
		return nil, false
	}
	if !s.backends.add(&s.active, cfg.snap.MaxConnections) {
		b.active.Add(-1)
		return nil, false
	}
	gauge := s.m.httpBackendConns.WithLabelValues(lc.Name)
	gauge.Inc()
	return func() {
		gauge.Dec()
		s.backends.remove(&s.active)
		b.active.Add(-1)
	}, true
}

// poolSlot is the slot a backend connection the goroutine pools dial for
// c's requests takes (loopSlots is the relay loops'). Those dials run on
// handler goroutines only, which may wait for a loop to evict an idle
// connection.
func (c *conn) poolSlot() (func(), bool) {
	return c.s.backendSlotEvicting(c.bound, c.lc, c.cfg, c.s.loopsEvictor())
}

// loopsEvictor evicts the relay loops' idle connections from a goroutine
// (nil without loops).
func (s *Server) loopsEvictor() relayloop.Evictor {
	if s.loops == nil {
		return nil
	}
	return s.loops
}

// admitStream counts an HTTP/2 stream of c's client in flight (h2.Server's
// Admit; streamEnded is its Release), each of which may hold a backend
// connection: the listener's per-client cap applies to a client's streams
// over all its connections, as it does to the connections, so that one
// client cannot take every slot of the listener a hundred streams at a
// time. A refused stream is answered 503 and counted (client_limit).
func (c *conn) admitStream() bool {
	if !c.client.IsValid() {
		return true // no client to charge: a PROXY header of LOCAL or UNKNOWN
	}
	if !c.bound.clients.Hold(c.client, c.lc.clientLimits) {
		c.s.m.httpRequests.WithLabelValues(c.lc.Name, "", RequestClientLimit).Inc()
		c.s.log.V(1).Info("request refused: client over its limit", "listener", c.lc.Name, "client", c.rep.client, "limit", "requests")
		return false
	}
	return true
}

// streamEnded gives back what admitStream took for a stream.
func (c *conn) streamEnded() {
	if c.client.IsValid() {
		c.bound.clients.Unhold(c.client)
	}
}

// backendSlotEvicting is backendSlot at the cap: one of the idle backend
// connections gives its slot up (evictor), the loops' through loops.
func (s *Server) backendSlotEvicting(b *boundListener, lc *listenerConfig, cfg *config, loops relayloop.Evictor) (release func(), ok bool) {
	if release, ok := s.backendSlot(b, lc, cfg); ok {
		return release, true
	}
	e := evictor{b: b, lc: lc, cfg: cfg, idle: &s.idle, loops: loops}
	for e.next() {
		if release, ok := s.backendSlot(b, lc, cfg); ok {
			return release, true
		}
	}
	return nil, false
}

// evictor frees slots at a cap, for a request or a new client, by
// closing idle backend connections: a kept-alive idle connection is a
// cache, a request or a client is not. At the listener's cap only the
// listener's own give way: another listener's hold slots that are not
// the ones missing, and one tenant at its cap must not cost the others
// their kept-alive connections. At the global cap, once the listener's
// own are gone, any listener's do, as each holds a slot of the cap that
// is full. One at a time, the direct pools' go first, then the relay
// loops'; net/http's Transports come last, as they can only close all
// their idle connections together.
type evictor struct {
	b   *boundListener
	lc  *listenerConfig
	cfg *config
	// idle is the server's count of idle connections: with none in a
	// kind of pool, no listener's pools of that kind are looked at.
	idle *idleConns
	// loops evicts the relay loops' connections: on the loop that runs
	// the caller, or from a goroutine through the Set; nil: none.
	loops relayloop.Evictor
	// ownStd and allStd: the listener's Transports, then every
	// listener's, have closed their idle connections.
	ownStd, allStd bool
}

// next closes one idle connection, or all of some Transports', and
// reports whether it did: false once nothing that may give way is idle.
func (e *evictor) next() bool {
	own := func(yield func(*listenerConfig) bool) { yield(e.lc) }
	return e.evictFrom(own, e.b, &e.ownStd) ||
		globalCapBinds(e.b, e.lc, e.cfg) && e.evictFrom(maps.Values(e.cfg.listeners), nil, &e.allStd)
}

// evictFrom closes one idle connection of the listeners', in the
// evictor's order: a direct pool's, else one of the loops' dialled for
// slots (nil: any), else, once (*stdDone), all their Transports'.
func (e *evictor) evictFrom(listeners iter.Seq[*listenerConfig], slots any, stdDone *bool) bool {
	if e.idle.direct.Load() > 0 {
		for lc := range listeners {
			if lc.evictDirect() {
				return true
			}
		}
	}
	if e.evictLoops(slots) {
		return true
	}
	if *stdDone {
		return false
	}
	*stdDone = true
	if e.idle.std.Load() <= 0 {
		return false
	}
	closed := false
	for lc := range listeners {
		closed = lc.closeIdleStd() || closed
	}
	return closed
}

// evictLoops closes one of the relay loops' idle connections dialled for
// slots (relayloop.Target.Slots; nil: any).
func (e *evictor) evictLoops(slots any) bool { return e.loops != nil && e.loops.EvictIdle(slots) }

// evictDirect closes the longest-idle connection of one of lc's direct
// pools, and reports whether there was one.
func (lc *listenerConfig) evictDirect() bool {
	for i := range lc.routes {
		if t := lc.routes[i].transport; t != nil && t.direct.evictOne() {
			return true
		}
	}
	return false
}

// closeIdleStd closes the idle connections of those of lc's net/http
// Transports that may hold some, and reports whether there were any.
func (lc *listenerConfig) closeIdleStd() bool {
	closed := false
	for i := range lc.routes {
		if t := lc.routes[i].transport; t != nil && t.mayHoldIdle() {
			t.std.CloseIdleConnections()
			closed = true
		}
	}
	return closed
}

// globalCapBinds reports whether a slot b's listener (configured by lc,
// within cfg) failed to take was the global cap's, not its own: at the
// global cap any listener's idle connections may give way.
func globalCapBinds(b *boundListener, lc *listenerConfig, cfg *config) bool {
	return cfg.snap.MaxConnections > 0 && (lc.MaxConnections <= 0 || b.active.Load() < int64(lc.MaxConnections))
}

// idleConns counts, over the whole server, the http-mode backend
// connections that may be idle, by kind of pool: direct, those idle in
// the direct pools; std, those open in each net/http Transport beyond
// the requests that may hold one. At a cap the evictor looks in a kind
// of pool only when some may be idle there: a full server walked every
// listener's pools for each connection it refused, 3 ms a connection at
// 10,000 listeners (BenchmarkRefusedAtGlobalCap), which made a client
// that filled the cap a cheap way to burn a core. The relay loops' pool
// keeps its own count (relayloop.Set.EvictIdle).
type idleConns struct {
	direct, std atomic.Int64
}

// backendConns counts the backend connections http mode holds open, which
// count in Server.active too; mu keeps the two consistent for
// ActiveConnections.
type backendConns struct {
	mu sync.Mutex
	n  int64
}

// add counts one more backend connection in active and in b, unless that
// takes active past limit (0: none).
func (b *backendConns) add(active *atomic.Int64, limit int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slots.Take(active, limit) {
		return false
	}
	b.n++
	return true
}

// remove counts one backend connection less in active and in b.
func (b *backendConns) remove(active *atomic.Int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n--
	active.Add(-1)
}

// clients is active without the backend connections.
func (b *backendConns) clients(active *atomic.Int64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int(active.Load() - b.n)
}
