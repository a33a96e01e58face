// Package dataplane serves a snapshot: it binds the listeners' ports, sniffs
// the first bytes of every connection, picks a route and forwards, hands the
// stream to an internal TLS listener, or serves a tunnel.
//
// It knows nothing of Kubernetes. A new snapshot is applied whole: new ports
// are bound, ports no longer declared stop accepting while their open
// connections drain, and new connections see the new routes. A connection
// keeps the configuration it was accepted with until it ends.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/clientlimit"
	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Log receives one line per connection and the listeners' lifecycle.
	Log logr.Logger

	// Metrics to update; nil creates unregistered ones.
	Metrics *Metrics

	// IdleTimeout closes forwarded connections and TCP tunnels silent in
	// both directions for this long, unless their route sets its own. Zero:
	// snapshot.DefaultIdleTimeout; negative: never (tests and benchmarks). In http
	// mode it bounds the keep-alive idle time too when shorter
	// (HTTPLimits.IdleTimeout).
	IdleTimeout time.Duration

	// ParkThreshold is how long a forwarded connection's direction waits for
	// data before it is parked off its goroutine (Linux). Zero:
	// forward.DefaultParkThreshold; negative: never park.
	ParkThreshold time.Duration

	// LogConnections logs each connection at info level; otherwise at V(1).
	LogConnections bool

	// Now is the clock of the per-client rate limits. Nil: time.Now.
	Now func() time.Time

	// Listen binds a listener's address. Nil uses TCP with SO_REUSEADDR.
	Listen func(ctx context.Context, address string) (net.Listener, error)

	// HTTP bounds connections served in http mode; zero fields take the
	// defaults.
	HTTP HTTPLimits
}

// Server is the dataplane. Apply programs it; Shutdown stops it.
type Server struct {
	opt Options
	log logr.Logger
	m   *Metrics

	// cfg is the configuration new connections are accepted with.
	cfg atomic.Pointer[config]

	// tickets encrypts TLS session tickets across configurations.
	tickets *sessionTickets

	// tunnelBufs bounds the copy buffers every tunnel route holds.
	tunnelBufs *tunnel.Buffers

	// stop is cancelled when Shutdown gives up waiting: dials in flight end.
	stop       context.Context
	cancelStop context.CancelFunc

	mu     sync.Mutex // guards bound, conns and closed
	bound  map[string]*boundListener
	conns  map[net.Conn]func() // open connections and how to cut each
	closed bool

	handlers sync.WaitGroup // connection handlers and accept loops
	active   atomic.Int64   // open connections across listeners
	// backends counts http mode's backend connections, which take slots
	// of active (and of their client's listener) too.
	backends backendConns

	parker    *forward.Parker // nil: directions stay on their goroutines
	probeBufs sync.Pool       // *[]byte of snapshot.DefaultMaxProbeBytes
	copyBufs  sync.Pool       // *[]byte of copyBufSize, for streams that cannot splice
	recBufs   sync.Pool       // *[]byte of recordBufSize, for reads from TLS
}

// Copy buffers for streams that cannot splice. One read from a TLS
// connection returns at most a record's plaintext, 16 KiB, and that
// direction holds its buffer while it waits, so its buffer is no bigger.
// A direction that reads a TCP socket holds none while it waits and reads
// 32 KiB at a time (fewer system calls for bulk into TLS).
const (
	copyBufSize   = 32 << 10
	recordBufSize = 16 << 10
)

// boundListener is one bound port. It outlives configurations: a snapshot
// that keeps the address keeps the socket and its connection count.
type boundListener struct {
	key    string
	ln     net.Listener
	active atomic.Int64
	// clients counts each client's connections and their rate.
	clients *clientlimit.Table
	// deferred: the socket waits for a client's first bytes before it
	// accepts (deferAccept); guarded by Server.mu.
	deferred bool
	done     chan struct{} // closed when the accept loop has returned
}

// NewServer returns a server with nothing bound.
func NewServer(opt Options) *Server {
	if opt.Metrics == nil {
		opt.Metrics = NewMetrics(nil)
	}
	s := &Server{
		opt:   opt,
		log:   opt.Log,
		m:     opt.Metrics,
		bound: map[string]*boundListener{},
		conns: map[net.Conn]func(){},
	}
	s.stop, s.cancelStop = context.WithCancel(context.Background())
	count := s.clientCounts
	s.m.clients.count.Store(&count)
	s.tunnelBufs = &tunnel.Buffers{}
	held := s.tunnelBufs.HeldBytes
	s.m.tunnelBufferBytes.Store(&held)
	if opt.ParkThreshold >= 0 {
		pk, err := forward.NewParker(opt.ParkThreshold)
		if err != nil {
			s.log.V(1).Info("idle connections keep their goroutines", "reason", err.Error())
		} else {
			s.parker = pk
		}
	}
	if s.opt.Now == nil {
		s.opt.Now = time.Now
	}
	if s.opt.Listen == nil {
		keepAlive := s.keepAlive()
		s.opt.Listen = func(ctx context.Context, address string) (net.Listener, error) {
			lc := net.ListenConfig{KeepAlive: keepAlive}
			return lc.Listen(ctx, "tcp", address)
		}
	}
	s.probeBufs.New = func() any { b := make([]byte, snapshot.DefaultMaxProbeBytes); return &b }
	s.copyBufs.New = func() any { b := make([]byte, copyBufSize); return &b }
	s.recBufs.New = func() any { b := make([]byte, recordBufSize); return &b }
	s.tickets = newSessionTickets()
	if s.opt.IdleTimeout == 0 {
		s.opt.IdleTimeout = snapshot.DefaultIdleTimeout
	}
	s.cfg.Store(newConfig(&snapshot.Snapshot{}, s.m, s.tickets, s.keepAlive(), s.opt.IdleTimeout, s.tunnelBufs))
	return s
}

// bindKey identifies a bound socket across snapshots: its address, except
// for ephemeral ports (":0"), which only the same listener can keep.
func bindKey(l *snapshot.Listener) string {
	if _, port, err := net.SplitHostPort(l.Address); err == nil && port == "0" {
		return l.Name + "@" + l.Address
	}
	return l.Address
}

// Apply makes snap the configuration for new connections, binds the
// addresses it adds and closes those it drops (their connections drain). It
// returns the bind error of every listener that could not be bound, by
// listener name; the rest of the snapshot is served regardless.
func (s *Server) Apply(snap *snapshot.Snapshot) map[string]error {
	cfg := newConfig(snap, s.m, s.tickets, s.keepAlive(), s.opt.IdleTimeout, s.tunnelBufs)
	want := map[string]*snapshot.Listener{}
	errs := map[string]error{}
	for i := range snap.Listeners {
		if l := &snap.Listeners[i]; !l.Internal() {
			if prev, dup := want[bindKey(l)]; dup {
				errs[l.Name] = fmt.Errorf("bind %s: address used by listener %q too", l.Address, prev.Name)
				continue
			}
			want[bindKey(l)] = l
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	// Stop accepting on dropped addresses first, so an address that moves
	// to another key can be bound again below.
	for key, b := range s.bound {
		if _, keep := want[key]; !keep {
			_ = b.ln.Close()
			delete(s.bound, key)
			s.log.Info("listener closed; open connections drain", "address", b.ln.Addr().String())
		}
	}
	cfg.byKey = map[string]*listenerConfig{}
	var started []*boundListener
	for key, l := range want {
		if _, ok := s.bound[key]; !ok {
			ln, err := s.opt.Listen(context.Background(), l.Address)
			if err != nil {
				errs[l.Name] = fmt.Errorf("bind %s: %w", l.Address, err)
				s.log.Error(err, "cannot bind listener", "listener", l.Name, "address", l.Address)
				continue
			}
			b := &boundListener{key: key, ln: ln, done: make(chan struct{}), clients: clientlimit.NewTable()}
			s.bound[key] = b
			started = append(started, b)
			s.log.Info("listening", "listener", l.Name, "address", ln.Addr().String())
		}
		lc := cfg.listeners[l.Name]
		cfg.byKey[key] = lc
		if b := s.bound[key]; b.deferred != lc.clientSpeaksFirst {
			if err := deferAccept(b.ln, lc.clientSpeaksFirst); err != nil {
				s.log.V(1).Info("connections are accepted before their first bytes", "listener", l.Name, "reason", err.Error())
			} else {
				b.deferred = lc.clientSpeaksFirst
			}
		}
	}
	if old := s.cfg.Swap(cfg); old != nil {
		old.closeIdle()
	}
	for _, b := range started {
		s.handlers.Add(1)
		go s.acceptLoop(b)
	}
	s.updateListenerGauge(cfg)
	return errs
}

func (s *Server) updateListenerGauge(cfg *config) {
	s.m.listening.Reset()
	for key, b := range s.bound {
		if lc := cfg.byKey[key]; lc != nil {
			s.m.listening.WithLabelValues(lc.Name, b.ln.Addr().String()).Set(1)
		}
	}
}

// clientCounts is the size of each bound listener's per-client table, by
// listener name.
func (s *Server) clientCounts() map[string]int {
	cfg := s.cfg.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.bound))
	for key, b := range s.bound {
		if lc := cfg.byKey[key]; lc != nil {
			out[lc.Name] = b.clients.Len()
		}
	}
	return out
}

// Addr returns the bound address of the named listener (useful with port 0),
// or nil when it is not bound.
func (s *Server) Addr(listener string) net.Addr {
	cfg := s.cfg.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, lc := range cfg.byKey {
		if lc != nil && lc.Name == listener {
			if b := s.bound[key]; b != nil {
				return b.ln.Addr()
			}
		}
	}
	return nil
}

// ActiveConnections counts the client connections open now; backend
// connections that http mode pools are not among them, although they take
// connection slots too.
func (s *Server) ActiveConnections() int { return s.backends.clients(&s.active) }

// Shutdown stops accepting everywhere, waits for open connections to finish
// until ctx is done, then closes the rest. It returns ctx's error when it had
// to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for key, b := range s.bound {
		_ = b.ln.Close()
		delete(s.bound, key)
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
		s.cfg.Load().closeIdle()
		s.closeParker()
		return nil
	case <-ctx.Done():
	}
	s.cancelStop()
	s.mu.Lock()
	for _, cut := range s.conns {
		cut()
	}
	s.mu.Unlock()
	<-done
	s.cfg.Load().closeIdle()
	s.closeParker()
	return ctx.Err()
}

// keepAlive is the TCP keepalive setting for accepted and dialled sockets:
// off when the Parker turns it on for sockets that idle, Go's default
// otherwise.
func (s *Server) keepAlive() time.Duration {
	if s.parker != nil {
		return -1
	}
	return 0
}

func (s *Server) closeParker() {
	if s.parker != nil {
		if err := s.parker.Close(); err != nil {
			s.log.Error(err, "closing the idle parker")
		}
	}
}

func (s *Server) acceptLoop(b *boundListener) {
	defer s.handlers.Done()
	defer close(b.done)
	var backoff time.Duration
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or a transient error: back off so
			// the loop does not spin, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error(err, "accept failed; retrying", "address", b.ln.Addr().String(), "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		cfg := s.cfg.Load()
		lc := cfg.byKey[b.key]
		if lc == nil {
			_ = c.Close() // the listener is being removed
			continue
		}
		if !lc.trusted(c.RemoteAddr()) {
			s.refuseUntrusted(c, lc)
			continue
		}
		if !s.admit(b, lc, cfg) {
			s.m.connections.WithLabelValues(lc.Name, "", "", OutcomeRejected).Inc()
			s.log.V(1).Info("connection rejected: too many connections", "listener", lc.Name, "client", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		var client netip.Prefix
		if lc.ProxyProtocol == nil {
			// Behind a PROXY sender the peer is the balancer: the client
			// is known once its header is read (admitClient in handle).
			var refused clientlimit.Refusal
			if client, refused = b.clients.Admit(peerAddr(c), s.opt.Now(), lc.clientLimits); refused != "" {
				s.release(b)
				s.m.active.WithLabelValues(lc.Name).Dec()
				s.m.connections.WithLabelValues(lc.Name, "", "", OutcomeClientLimit).Inc()
				s.log.V(1).Info("connection refused: client over its limit", "listener", lc.Name, "client", c.RemoteAddr().String(), "limit", string(refused))
				_ = c.Close()
				continue
			}
		}
		if !s.track(c) {
			if client.IsValid() {
				b.clients.Release(client)
			}
			s.release(b)
			s.m.active.WithLabelValues(lc.Name).Dec()
			_ = c.Close()
			continue
		}
		s.handlers.Add(1)
		go s.serve(c, cfg, lc, b, client)
	}
}

// refuseUntrusted closes a connection, unread, from a peer that may not
// send the listener's PROXY headers.
func (s *Server) refuseUntrusted(c net.Conn, lc *listenerConfig) {
	s.m.connections.WithLabelValues(lc.Name, "", "", OutcomeProxyUntrusted).Inc()
	s.log.V(1).Info("connection refused: not from a trusted PROXY header sender", "listener", lc.Name, "client", c.RemoteAddr().String())
	_ = c.Close()
}

// peerAddr is the address of c's peer, the zero Addr when it is not IP.
func peerAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}

// admitClient counts a connection whose client a PROXY header named
// against the listener's per-client limits, and reports whether it may go
// on; a refused one gets its outcome.
func (s *Server) admitClient(ev *connEvent, lc *listenerConfig, addr netip.Addr) bool {
	key, refused := ev.bound.clients.Admit(addr, s.opt.Now(), lc.clientLimits)
	if refused != "" {
		ev.outcome, ev.err = OutcomeClientLimit, fmt.Errorf("client over its %s limit", refused)
		return false
	}
	ev.limitKey = key
	return true
}

// admit counts a new connection against the listener's and the global cap.
func (s *Server) admit(b *boundListener, lc *listenerConfig, cfg *config) bool {
	if n := b.active.Add(1); lc.MaxConnections > 0 && n > int64(lc.MaxConnections) {
		b.active.Add(-1)
		return false
	}
	if n := s.active.Add(1); cfg.snap.MaxConnections > 0 && n > int64(cfg.snap.MaxConnections) {
		s.active.Add(-1)
		b.active.Add(-1)
		return false
	}
	s.m.active.WithLabelValues(lc.Name).Inc()
	return true
}

func (s *Server) release(b *boundListener) {
	b.active.Add(-1)
	s.active.Add(-1)
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = func() { _ = c.Close() }
	return true
}

// cutWith changes how Shutdown cuts a connection: a forwarded one is
// aborted through its pipe, which may hold it parked.
func (s *Server) cutWith(c net.Conn, cut func()) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		s.conns[c] = cut
	}
	s.mu.Unlock()
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// serve handles one accepted connection from start to end and reports it.
//
// A forwarded connection outlives this goroutine: its two copy goroutines
// start small and finish the connection when the last one ends, so the
// stack grown while sniffing is not held for the connection's life.
func (s *Server) serve(c net.Conn, cfg *config, lc *listenerConfig, b *boundListener, client netip.Prefix) {
	ev := &connEvent{start: time.Now(), listener: lc.Name, client: c.RemoteAddr().String(), conn: c, bound: b, boundLC: lc, limitKey: client}
	ev.finish = func() {
		_ = c.Close()
		s.m.active.WithLabelValues(lc.Name).Dec()
		s.report(ev)
		s.untrack(c)
		if ev.limitKey.IsValid() {
			b.clients.Release(ev.limitKey)
		}
		s.release(b)
		s.handlers.Done()
	}
	if err := s.handleContained(ev, c, cfg, lc); err != nil {
		if ev.async {
			// Handed over before the panic: its new owner finishes it.
			s.logPanic(ev, panics.Is(err))
			return
		}
		ev.outcome, ev.err = OutcomeError, err
	}
	if !ev.async {
		ev.finish()
	}
}

// handleContained is handle with a panic recovered as an error: a bug that
// one client's bytes reach ends that connection only.
func (s *Server) handleContained(ev *connEvent, c net.Conn, cfg *config, lc *listenerConfig) (err error) {
	defer panics.Capture(&err)
	s.handle(ev, c, nil, cfg, lc, 0)
	return nil
}

// httpErrorLog is the ErrorLog of the net/http server of one connection
// (http mode, tunnels). net/http recovers the panics of its handlers and of
// its connection goroutines itself and logs them here: they are counted
// and logged like any connection's panic. The rest (a client's TLS or
// protocol errors) goes to the log at V(1).
func (s *Server) httpErrorLog(ev *connEvent) *log.Logger {
	return log.New(httpErrorWriter{s: s, ev: ev}, "", 0)
}

type httpErrorWriter struct {
	s  *Server
	ev *connEvent
}

func (w httpErrorWriter) Write(p []byte) (int, error) {
	msg, stack, _ := strings.Cut(strings.TrimSuffix(string(p), "\n"), "\n")
	if strings.Contains(msg, "panic serving") {
		w.s.m.panics.Inc()
		w.s.log.Error(errors.New(msg), "panic serving a connection; it was closed, the others are served",
			"listener", w.ev.listener, "route", w.ev.route, "client", w.ev.client, "stack", stack)
		return len(p), nil
	}
	w.s.log.V(1).Info("HTTP server", "listener", w.ev.listener, "client", w.ev.client, "message", string(p))
	return len(p), nil
}

// logPanic counts a recovered panic and logs it with its stack and the
// connection's fields.
func (s *Server) logPanic(ev *connEvent, p *panics.Error) {
	s.m.panics.Inc()
	s.log.Error(p, "panic serving a connection; it was closed, the others are served",
		"listener", ev.listener, "route", ev.route, "client", ev.client, "stack", string(p.Stack))
}

// connEvent is what the log line and the metrics say about one connection.
type connEvent struct {
	start             time.Time
	listener, route   string
	protocol, sni     string
	alpn, host        string
	client, backend   string
	up, down          int64
	outcome           string
	tls               bool // the stream was TLS-terminated here
	err               error
	internalListeners []string
	// proxySrc and proxyDst are the addresses of an incoming PROXY
	// header, passed on to backends that want one; nil without.
	proxySrc, proxyDst *net.TCPAddr
	// finish ends the connection: close, report, release its slot. It runs
	// once: after handle returns, or, when async is set, when forwarding
	// ends.
	finish func()
	async  bool
	// conn is the accepted connection, the key Shutdown cuts it by.
	conn net.Conn
	// bound is the listener that accepted the connection, configured by
	// boundLC: backend connections that http mode opens for it take
	// slots of its cap (Server.backendSlot). limitKey is the client it
	// counts as in bound's per-client table, if it was admitted there.
	bound    *boundListener
	boundLC  *listenerConfig
	limitKey netip.Prefix
}

func (s *Server) report(ev *connEvent) {
	s.m.connections.WithLabelValues(ev.listener, ev.route, ev.protocol, ev.outcome).Inc()
	if p := panics.Is(ev.err); p != nil {
		s.logPanic(ev, p)
	}
	log := s.log
	if !s.opt.LogConnections {
		log = log.V(1)
	}
	if !log.Enabled() {
		return
	}
	kv := []any{
		"listener", ev.listener, "route", ev.route, "protocol", ev.protocol,
		"client", ev.client, "backend", ev.backend,
		"up", ev.up, "down", ev.down,
		"duration", time.Since(ev.start).Round(time.Microsecond).String(),
		"outcome", ev.outcome,
	}
	if ev.sni != "" {
		kv = append(kv, "sni", ev.sni)
	}
	if ev.alpn != "" {
		kv = append(kv, "alpn", ev.alpn)
	}
	if ev.host != "" {
		kv = append(kv, "host", ev.host)
	}
	if len(ev.internalListeners) > 0 {
		kv = append(kv, "via", ev.internalListeners)
	}
	if ev.err != nil {
		kv = append(kv, "error", ev.err.Error())
	}
	log.Info("connection", kv...)
}
