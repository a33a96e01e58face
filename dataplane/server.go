// Package dataplane serves a snapshot: it binds the listeners' ports, sniffs
// the first bytes of every connection, picks a route and forwards, hands the
// stream to an internal TLS listener, or serves a tunnel.
//
// It knows nothing of Kubernetes. A new snapshot is applied whole: new ports
// are bound, ports no longer declared stop accepting while their open
// connections drain, and new connections see the new routes. A connection
// keeps the configuration it was accepted with until it ends.
//
// The path of one connection, in one direction: the accept loop admits it
// (the listener's cap, the server's, the client's) and hands it, as a conn
// that owns it from then on, to a goroutine of its own; conn.serve reads
// the PROXY header, terminates TLS, sniffs and decides (conn.handle), and
// runs the chosen route's action (actions.go): forward it (tcp mode),
// serve it in http mode, serve a tunnel, or hand it to an internal
// listener, which handles it again. An action either finishes with the
// connection, and serve ends it, or takes it over (a forward pipe, an
// upgraded tunnel), and ends it when it is done. Ending reports the
// connection and gives back every slot it holds.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane/clientlimit"
	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/slots"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/dataplane/udp"
	"github.com/portmux/portmux/dataplane/workers"
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

	// RelayLoops is how many relay loops accept and carry TCP
	// connections (Linux; see package relayloop): 0 one per core,
	// negative none, every connection then served on goroutines from
	// its accept on.
	RelayLoops int
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
	// draining is cancelled when Shutdown starts: connections that can
	// say so to their clients (HTTP/2's GOAWAY) end once idle. Each
	// bound listener's own is its child.
	draining    context.Context
	cancelDrain context.CancelFunc

	// applying makes Applies one at a time: each compiles from the
	// configuration the one before made, and retires what it did not reuse.
	applying sync.Mutex

	mu    sync.Mutex // guards bound, relays, conns and closed
	bound map[string]*boundListener
	// relays are the bound UDP listeners, by bindKey; each ends its own
	// sessions.
	relays map[string]*udp.Relay
	conns  map[*conn]struct{} // open connections, for Shutdown to cut
	closed bool

	handlers sync.WaitGroup // connection handlers and accept loops
	active   atomic.Int64   // open connections across listeners
	// backends counts http mode's backend connections, which take slots
	// of active (and of their client's listener) too; idle those of them
	// that may be idle, for the evictor.
	backends backendConns
	idle     idleConns

	parker *forward.Parker // nil: directions stay on their goroutines
	// workers run HTTP/2 streams' handlers.
	workers   *workers.Pool
	loops     *relayloop.Set // nil: accept loops and goroutines only
	probeBufs sync.Pool      // *[]byte of snapshot.DefaultMaxProbeBytes
	copyBufs  sync.Pool      // *[]byte of copyBufSize, for streams that cannot splice
	recBufs   sync.Pool      // *[]byte of recordBufSize, for reads from TLS
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
	// acceptor: the relay loops accept its connections (nil: acceptLoop).
	acceptor *relayloop.Acceptor
	done     chan struct{} // closed when the accept loop has returned
	// draining is cancelled when the socket closes (Apply dropped its
	// address, or Shutdown): its HTTP/2 connections are told to go.
	draining  context.Context
	stopDrain context.CancelFunc
}

// The workers that run HTTP/2 streams' handlers: enough idle ones for a
// few busy connections' streams (each is a goroutine with a grown stack,
// 8 to 16 KiB), none kept once traffic has stopped for a while.
const (
	maxIdleWorkers    = 256
	workerIdleTimeout = 10 * time.Second
)

// NewServer returns a server with nothing bound.
func NewServer(opt Options) *Server {
	if opt.Metrics == nil {
		opt.Metrics = NewMetrics(nil)
	}
	s := &Server{
		opt:    opt,
		log:    opt.Log,
		m:      opt.Metrics,
		bound:  map[string]*boundListener{},
		relays: map[string]*udp.Relay{},
		conns:  map[*conn]struct{}{},
	}
	s.workers = workers.New(maxIdleWorkers, workerIdleTimeout)
	s.stop, s.cancelStop = context.WithCancel(context.Background())
	s.draining, s.cancelDrain = context.WithCancel(context.Background())
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
	if opt.RelayLoops >= 0 {
		loops, err := relayloop.New(relayloop.Options{Loops: opt.RelayLoops, KeepAliveAfter: s.keepAliveAfter(), Log: s.log,
			OnPanic: func(*panics.Error) { s.m.panics.Inc() }})
		if err != nil {
			s.log.V(1).Info("connections are accepted on goroutines", "reason", err.Error())
		} else {
			s.loops = loops
			stats := loops.Stats
			s.m.relayStats.Store(&stats)
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
	s.cfg.Store(newConfig(&snapshot.Snapshot{}, nil, s.configShared()))
	return s
}

// bindKey identifies a bound socket across snapshots: its address and
// transport (a TCP and a UDP listener may share a port number), except for
// ephemeral ports (":0"), which only the same listener can keep.
func bindKey(l *snapshot.Listener) string {
	key := l.Address
	if _, port, err := net.SplitHostPort(l.Address); err == nil && port == "0" {
		key = l.Name + "@" + l.Address
	}
	if l.UDP() {
		key = "udp/" + key
	}
	return key
}

// Apply makes snap the configuration for new connections, binds the
// addresses it adds and closes those it drops (their connections drain). It
// returns the bind error of every listener that could not be bound, by
// listener name; the rest of the snapshot is served regardless. A snapshot
// that fails Validate is not applied at all: the previous configuration
// stays, and every listener of snap (or "" when it has none) reports why.
//
// Listeners declared as before (the same routes, see sameListener) keep
// their compiled configuration: a snapshot patched with a delta costs what
// the delta changes.
func (s *Server) Apply(snap *snapshot.Snapshot) map[string]error {
	s.applying.Lock()
	defer s.applying.Unlock()
	prev := s.cfg.Load()
	// prev passed Validate: a listener it compiled from the same
	// declaration is checked already.
	unchanged := func(l *snapshot.Listener) bool {
		old := prev.listeners[l.Name]
		return old != nil && sameListener(old.Listener, l)
	}
	if err := snap.ValidateExcept(unchanged); err != nil {
		err = fmt.Errorf("snapshot refused, the previous one is still served: %w", err)
		s.log.Error(err, "cannot apply snapshot")
		errs := map[string]error{}
		for i := range snap.Listeners {
			errs[snap.Listeners[i].Name] = err
		}
		if len(errs) == 0 {
			errs[""] = err
		}
		return errs
	}
	cfg := newConfig(snap, prev, s.configShared())
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
			b.close()
			delete(s.bound, key)
			s.log.Info("listener closed; open connections drain", "address", b.ln.Addr().String())
		}
	}
	for key, r := range s.relays {
		if _, keep := want[key]; !keep {
			s.closeRelay(key, r)
		}
	}
	cfg.byKey = map[string]*listenerConfig{}
	var started []*boundListener
	for key, l := range want {
		if l.UDP() {
			if err := s.serveUDP(key, l); err != nil {
				errs[l.Name] = err
				continue
			}
			cfg.byKey[key] = cfg.listeners[l.Name]
			continue
		}
		if _, ok := s.bound[key]; !ok {
			ln, err := s.opt.Listen(context.Background(), l.Address)
			if err != nil {
				errs[l.Name] = fmt.Errorf("bind %s: %w", l.Address, err)
				s.log.Error(err, "cannot bind listener", "listener", l.Name, "address", l.Address)
				continue
			}
			b := &boundListener{key: key, ln: ln, done: make(chan struct{}), clients: clientlimit.NewTable()}
			b.draining, b.stopDrain = context.WithCancel(s.draining)
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
		old.closeIdle(cfg, s.loops)
	}
	for _, b := range started {
		s.startAccepting(b)
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
	for key, r := range s.relays {
		if lc := cfg.byKey[key]; lc != nil {
			s.m.listening.WithLabelValues(lc.Name, "udp/"+r.Addr().String()).Set(1)
		}
	}
}

// serveUDP binds a UDP listener's address, unless it is bound already, and
// gives the relay the listener's routes for its new sessions. s.mu is
// held.
func (s *Server) serveUDP(key string, l *snapshot.Listener) error {
	r := s.relays[key]
	if r == nil {
		var err error
		r, err = udp.Listen(l.Address, udp.Options{
			Log: s.log, LogSessions: s.opt.LogConnections, Metrics: s.m.udp, Now: s.opt.Now,
			Admit: s.admitSession, Release: s.releaseSession,
			OnPanic: func(*panics.Error) { s.m.panics.Inc() },
		})
		if err != nil {
			s.log.Error(err, "cannot bind listener", "listener", l.Name, "address", l.Address, "transport", "UDP")
			return fmt.Errorf("bind %s/udp: %w", l.Address, err)
		}
		s.relays[key] = r
		s.log.Info("listening", "listener", l.Name, "address", r.Addr().String(), "transport", "UDP")
	}
	if err := r.SetListener(l); err != nil {
		if r.Sessions() == 0 {
			s.closeRelay(key, r)
		}
		return fmt.Errorf("listener %s: %w", l.Name, err)
	}
	return nil
}

// closeRelay unbinds a UDP listener: its sessions end, since without the
// socket their clients can neither be heard nor answered. s.mu is held.
func (s *Server) closeRelay(key string, r *udp.Relay) {
	addr := r.Addr().String()
	if err := r.Close(); err != nil {
		s.log.Error(err, "closing a UDP listener", "address", addr)
	}
	delete(s.relays, key)
	s.log.Info("listener closed; its UDP sessions ended", "address", addr)
}

// admitSession takes a slot of the snapshot's maxConnections for a new
// UDP session; TCP connections and UDP sessions share the cap.
func (s *Server) admitSession() bool {
	limit := s.cfg.Load().snap.MaxConnections
	return slots.Take(&s.active, limit)
}

func (s *Server) releaseSession() { s.active.Add(-1) }

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
	for key, r := range s.relays {
		if lc := cfg.byKey[key]; lc != nil {
			out[lc.Name] = r.Clients()
		}
	}
	return out
}

// Addr returns the bound address of the named listener (useful with port 0),
// or nil when it is not bound: a *net.TCPAddr, or a *net.UDPAddr for a UDP
// listener.
func (s *Server) Addr(listener string) net.Addr {
	cfg := s.cfg.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, lc := range cfg.byKey {
		if lc != nil && lc.Name == listener {
			if b := s.bound[key]; b != nil {
				return b.ln.Addr()
			}
			if r := s.relays[key]; r != nil {
				return r.Addr()
			}
		}
	}
	return nil
}

// UDPSessions counts the UDP sessions open now, across listeners. They
// count against the snapshot's maxConnections too, but not in
// ActiveConnections.
func (s *Server) UDPSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.relays {
		n += r.Sessions()
	}
	return n
}

// ActiveConnections counts the client connections open now; backend
// connections that http mode pools are not among them, although they take
// connection slots too, nor UDP sessions (UDPSessions).
func (s *Server) ActiveConnections() int { return s.backends.clients(&s.active) - s.UDPSessions() }

// Shutdown stops accepting everywhere, waits for open connections to finish
// until ctx is done, then closes the rest. It returns ctx's error when it had
// to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancelDrain()
	s.mu.Lock()
	s.closed = true
	for key, b := range s.bound {
		b.close()
		delete(s.bound, key)
	}
	// UDP has no close to wait for: sessions end with their sockets.
	for key, r := range s.relays {
		s.closeRelay(key, r)
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
		s.cfg.Load().closeIdle(nil, s.loops)
		s.closeLoops()
		s.closeParker()
		s.workers.Close()
		return nil
	case <-ctx.Done():
	}
	s.cancelStop()
	s.mu.Lock()
	for c := range s.conns {
		c.abort()
	}
	s.mu.Unlock()
	<-done
	s.cfg.Load().closeIdle(nil, s.loops)
	s.closeLoops()
	s.closeParker()
	s.workers.Close()
	return ctx.Err()
}

func (s *Server) closeLoops() {
	if s.loops != nil {
		_ = s.loops.Close()
	}
}

// keepAliveAfter is how long a connection the relay loops forward lives
// before its sockets get TCP keepalive: when the Parker would have given
// it to them, or at once without a Parker (Go's default for sockets).
func (s *Server) keepAliveAfter() time.Duration {
	if s.opt.ParkThreshold < 0 {
		return -1
	}
	if s.opt.ParkThreshold > 0 {
		return s.opt.ParkThreshold
	}
	return forward.DefaultParkThreshold
}

// startAccepting accepts b's connections on the relay loops, or on an
// accept loop of its own where they cannot take it. s.mu is held.
func (s *Server) startAccepting(b *boundListener) {
	if tl, ok := b.ln.(*net.TCPListener); ok && s.loops != nil {
		a, err := s.loops.Accept(tl, loopListener{s: s, b: b})
		if err == nil {
			b.acceptor = a
			close(b.done)
			return
		}
		s.log.Error(err, "relay loops cannot accept; using an accept loop", "address", b.ln.Addr().String())
	}
	s.handlers.Add(1)
	go s.acceptLoop(b)
}

// close stops accepting on b and closes its socket; its connections stay.
func (b *boundListener) close() {
	if b.acceptor != nil {
		b.acceptor.Stop()
	}
	_ = b.ln.Close()
	b.stopDrain()
}

// configShared is what the configurations the Server compiles share with
// it.
func (s *Server) configShared() configShared {
	return configShared{
		m: s.m, tickets: s.tickets, keepAlive: s.keepAlive(), idle: s.opt.IdleTimeout,
		maxHead: s.maxHead(), bufs: s.tunnelBufs, idleConns: &s.idle,
	}
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
		client, ok := s.admitNew(b, lc, cfg, addrPortOf(c.RemoteAddr()), nil)
		if !ok {
			_ = c.Close()
			continue
		}
		cn := newConn(s, c, cfg, lc, b, client)
		if !s.track(cn) {
			s.unadmit(b, lc, client)
			_ = c.Close()
			continue
		}
		go cn.serve()
	}
}

// addrPortOf is a TCP peer's address, the zero AddrPort for any other.
func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// admitNew decides whether a new connection from peer may be served, and
// takes its slots: the listener's and the server's caps, and, unless the
// listener reads PROXY headers, its client's. At the cap the listener's
// idle backend connections give their slots up first (evictor): on the
// relay loop onLoop, which accepted the connection, or through the
// loops from the accept loop's goroutine (onLoop nil); at the global cap,
// then, every listener's. A refused
// connection is counted and logged here; the caller closes it.
func (s *Server) admitNew(b *boundListener, lc *listenerConfig, cfg *config, peer netip.AddrPort, onLoop *relayloop.Conn) (netip.Prefix, bool) {
	if !lc.trusted(peer.Addr()) {
		s.m.connections.WithLabelValues(lc.Name, "", "", OutcomeProxyUntrusted).Inc()
		s.log.V(1).Info("connection refused: not from a trusted PROXY header sender", "listener", lc.Name, "client", peer.String())
		return netip.Prefix{}, false
	}
	if !s.admit(b, lc, cfg) && !s.admitEvicting(b, lc, cfg, onLoop) {
		s.m.connections.WithLabelValues(lc.Name, "", "", OutcomeRejected).Inc()
		s.log.V(1).Info("connection rejected: too many connections", "listener", lc.Name, "client", peer.String())
		return netip.Prefix{}, false
	}
	if lc.ProxyProtocol != nil {
		// Behind a PROXY sender the peer is the balancer: the client is
		// known once its header is read (readProxyHeader).
		return netip.Prefix{}, true
	}
	client, refused := b.clients.Admit(peer.Addr(), s.opt.Now(), lc.clientLimits)
	if refused != "" {
		s.release(b)
		lc.active.Dec()
		s.m.connections.WithLabelValues(lc.Name, "", "", OutcomeClientLimit).Inc()
		s.log.V(1).Info("connection refused: client over its limit", "listener", lc.Name, "client", peer.String(), "limit", string(refused))
		return netip.Prefix{}, false
	}
	return client, true
}

// admitEvicting is admit at the cap: it retries after each idle backend
// connection the evictor closes.
func (s *Server) admitEvicting(b *boundListener, lc *listenerConfig, cfg *config, onLoop *relayloop.Conn) bool {
	e := evictor{b: b, lc: lc, cfg: cfg, idle: &s.idle, loops: s.loopsEvictor()}
	if onLoop != nil {
		e.loops = onLoop
	}
	for e.next() {
		if s.admit(b, lc, cfg) {
			return true
		}
	}
	return false
}

// unadmit gives back what admitNew took, for a connection that is not
// served after all.
func (s *Server) unadmit(b *boundListener, lc *listenerConfig, client netip.Prefix) {
	if client.IsValid() {
		b.clients.Release(client)
	}
	s.release(b)
	lc.active.Dec()
}

// admit counts a new connection against the listener's and the global cap.
func (s *Server) admit(b *boundListener, lc *listenerConfig, cfg *config) bool {
	if !slots.Take(&b.active, lc.MaxConnections) {
		return false
	}
	if !slots.Take(&s.active, cfg.snap.MaxConnections) {
		b.active.Add(-1)
		return false
	}
	lc.active.Inc()
	return true
}

func (s *Server) release(b *boundListener) {
	b.active.Add(-1)
	s.active.Add(-1)
}

// track registers c, and counts it in handlers, unless the server is
// closed. Both happen under s.mu, where Shutdown closes the server before
// it waits for handlers: counted after the check, outside the lock, a
// connection could be counted in while Shutdown's wait had already seen
// none and returned.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.handlers.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// logPanic counts a recovered panic and logs it with its stack and the
// connection's fields.
func (s *Server) logPanic(rep *report, p *panics.Error) {
	s.m.panics.Inc()
	s.log.Error(p, "panic serving a connection; it was closed, the others are served",
		"listener", rep.listener, "route", rep.route, "client", rep.client, "stack", string(p.Stack))
}

// connLog is the logger of the lines that end connections and tunnels: info
// level with Options.LogConnections, else V(1).
func (s *Server) connLog() logr.Logger {
	if s.opt.LogConnections {
		return s.log
	}
	return s.log.V(1)
}

// count counts a connection that ends, by its outcome.
func (s *Server) count(ev *report) {
	if ev.ended != nil {
		ev.ended.counter(ev.outcome).Inc()
	} else {
		s.m.connections.WithLabelValues(ev.listener, ev.route, ev.protocol, ev.outcome).Inc()
	}
}

// report logs the line of a connection that ended.
func (s *Server) report(ev *report) {
	log := s.connLog()
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
