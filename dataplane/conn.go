package dataplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tlsmem"
)

// maxListenerDepth bounds how many internal listeners one connection can pass
// through (TLS inside TLS inside ...), so no configuration loops forever.
const maxListenerDepth = 4

var (
	errNoCertificate = errors.New("no certificate configured")
	errNoRoute       = errors.New("no route matched")
	errClientLeft    = errors.New("client closed before sending anything")
)

// conn is one accepted connection, from accept to its log line. It owns
// the socket, the slots it holds (the listener's and the server's caps,
// its client's per-client slot), the probe buffer while the first bytes
// are read, what its log line and metrics will say, and how Shutdown cuts
// it. Whoever holds it ends it (end) exactly once: the goroutine that
// accepted it, or the action it was handed to (see action).
type conn struct {
	s     *Server
	raw   net.Conn        // the accepted socket
	cfg   *config         // the configuration it was accepted with
	lc    *listenerConfig // the listener that accepted it
	bound *boundListener  // the socket it was accepted on
	// client is its slot in bound's per-client table, if it took one.
	client netip.Prefix

	// probe is the pooled buffer the first bytes were read into, nil when
	// none is held (see keepSniffed and releaseProbe).
	probe *[]byte

	// handedOff is set once an action took ownership: from then on only
	// that action ends the connection (the panic path needs to know).
	handedOff bool
	// cut is how Shutdown ends the connection once it gives up draining:
	// the action's abort once it has one; until then (nil), closing the
	// socket.
	cut   atomic.Pointer[func()]
	ended atomic.Bool
	// panicLogged: a panic was counted and logged (logPanic), so that the
	// connection's end does not count it again.
	panicLogged atomic.Bool

	// pre and probeEnd carry a connection handed off by a relay loop:
	// the bytes it read, and the probe's deadline it set.
	pre      []byte
	probeEnd time.Time
	// noAdopt: the relay loops gave this connection up in the middle of
	// its exchanges; it stays on its goroutine (adoptHTTP).
	noAdopt bool

	rep report
}

// report is what the log line and the metrics say about one connection.
type report struct {
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
	// ended counts the connection in portmux_connections_total: its
	// listener's, then its route's once one takes it.
	ended *outcomeCounters
	// proxySrc and proxyDst are the addresses of an incoming PROXY
	// header, passed on to backends that want one; nil without.
	proxySrc, proxyDst *net.TCPAddr
}

func newConn(s *Server, raw net.Conn, cfg *config, lc *listenerConfig, b *boundListener, client netip.Prefix) *conn {
	c := &conn{s: s, raw: raw, cfg: cfg, lc: lc, bound: b, client: client}
	c.rep = report{start: time.Now(), listener: lc.Name, client: raw.RemoteAddr().String(), ended: lc.ended}
	return c
}

// serve runs the connection through its listener and the route it
// chooses, then ends it, unless an action took it over.
func (c *conn) serve() {
	c.served(c.handleContained())
}

// served ends the connection after an action returned with owned and err
// (a panic it raised), unless the action or its new owner will.
func (c *conn) served(owned bool, err error) {
	switch {
	case err != nil && c.handedOff:
		// Handed over before the panic: its new owner ends it.
		c.logPanic(panics.Is(err))
	case err != nil:
		c.rep.outcome, c.rep.err = OutcomeError, err
		c.end()
	case !owned:
		c.end()
	}
}

// handleContained is handle with a panic recovered as an error: a bug that
// one client's bytes reach ends that connection only.
func (c *conn) handleContained() (owned bool, err error) {
	defer panics.Capture(&err)
	defer c.releaseProbe()
	pre := c.pre
	c.pre = nil
	return c.handle(c.raw, pre, c.lc, 0), nil
}

// end closes the connection, reports it and gives back every slot it
// holds. It runs once; later calls do nothing.
func (c *conn) end() {
	if c.ended.Swap(true) {
		return
	}
	// The outcome, and a panic, are counted before the client can see
	// its connection end: metrics never lag what a client observed.
	s := c.s
	if p := panics.Is(c.rep.err); p != nil {
		c.logPanic(p)
	}
	s.count(&c.rep)
	if c.raw != nil { // nil: a relay loop closed it
		_ = c.raw.Close()
	}
	c.releaseProbe()
	c.lc.active.Dec()
	s.report(&c.rep)
	s.untrack(c)
	if c.client.IsValid() {
		c.bound.clients.Release(c.client)
	}
	s.release(c.bound)
	s.handlers.Done()
}

// reportRoute records the route c's first bytes chose, for its log line
// and metrics.
func (c *conn) reportRoute(rc *routeConfig) {
	c.rep.route, c.rep.protocol, c.rep.ended = rc.Name, string(rc.Match.Protocol), rc.ended
}

// reportBytes records what c carried in all, up from the client and
// down to it: in its log line and in the byte counters of rc, the route
// it is reported under.
func (c *conn) reportBytes(rc *routeConfig, up, down int64) {
	c.rep.up, c.rep.down = up, down
	rc.up.Add(float64(up))
	rc.down.Add(float64(down))
}

// logPanic counts and logs a panic recovered on this connection, once: a
// panic in a forwarded direction is reported when it is recovered and
// again with the connection's end.
func (c *conn) logPanic(p *panics.Error) {
	if c.panicLogged.Swap(true) {
		return
	}
	c.s.logPanic(&c.rep, p)
}

// draining is done once the connection's listener socket closes (Apply
// dropped it, or Shutdown began): HTTP/2 then tells its client to go.
func (c *conn) draining() context.Context {
	if c.bound != nil {
		return c.bound.draining
	}
	return c.s.draining
}

// cutWith makes abort the way Shutdown ends the connection.
func (c *conn) cutWith(abort func()) { c.cut.Store(&abort) }

// abort ends the connection from outside (Shutdown out of patience).
func (c *conn) abort() {
	if cut := c.cut.Load(); cut != nil {
		(*cut)()
		return
	}
	_ = c.raw.Close()
}

// handOff records that an action takes ownership of the connection: it
// will end it. Call it right before starting what will.
func (c *conn) handOff() { c.handedOff = true }

// keepSniffed returns a copy of the sniffed bytes and gives the probe
// buffer back: for actions that keep the bytes while the connection
// lives, which must not hold a pooled buffer that long.
func (c *conn) keepSniffed(sniffed []byte) []byte {
	kept := append([]byte(nil), sniffed...)
	c.releaseProbe()
	return kept
}

// releaseProbe gives the probe buffer back; the sniffed bytes it held
// are no longer valid.
func (c *conn) releaseProbe() {
	if c.probe != nil {
		c.s.probeBufs.Put(c.probe)
		c.probe = nil
	}
}

// handle runs the connection through lc: PROXY header, TLS termination,
// sniffing, then the chosen route's action. st is what to read (the
// socket, or a TLS layer on it) and pre holds bytes already read from it
// that belong in front of what it will still return. It reports whether
// an action took ownership of the connection.
func (c *conn) handle(st net.Conn, pre []byte, lc *listenerConfig, depth int) (owned bool) {
	probeEnd := lc.probeDeadline()
	if depth == 0 && !c.probeEnd.IsZero() {
		probeEnd = c.probeEnd // a relay loop's, which read the first bytes
	}

	if lc.ProxyProtocol != nil && depth == 0 {
		var ok bool
		if pre, ok = c.readProxyHeader(probeEnd); !ok {
			return false
		}
	}

	// sni is the server name of a handshake this listener terminated: an
	// HTTP/2 stream inside is routed by it (route.DecideTerminated).
	var sni string
	if lc.tls != nil {
		// Under a layer that can move the connection to a relay loop
		// once it is decided (adoptHTTP).
		tc := tls.Server(tlsmem.New(withPrefix(st, pre)), lc.tls)
		_ = st.SetDeadline(probeEnd)
		err := tc.HandshakeContext(context.Background())
		_ = st.SetDeadline(time.Time{})
		if err != nil {
			c.rep.outcome, c.rep.err = OutcomeTLSError, fmt.Errorf("TLS handshake: %w", err)
			return false
		}
		cs := tc.ConnectionState()
		c.rep.sni, c.rep.alpn, c.rep.tls = cs.ServerName, cs.NegotiatedProtocol, true
		sni = strings.TrimSuffix(strings.ToLower(cs.ServerName), ".")
		st, pre = tc, nil
		probeEnd = lc.probeDeadline()
	}

	sniffed, d, err := c.sniff(st, pre, lc, sni, probeEnd)
	lc.sniff.Observe(time.Since(c.rep.start).Seconds())
	if err != nil {
		c.rep.outcome, c.rep.err = OutcomeProbeError, err
		return false
	}
	if d.Route < 0 {
		c.rep.outcome, c.rep.err = OutcomeNoRoute, errNoRoute
		return false
	}
	rc := &lc.routes[d.Route]
	c.rep.route, c.rep.protocol = rc.Name, string(rc.Match.Protocol)
	c.rep.ended = nil
	if rc.lc.Name == c.rep.listener {
		c.rep.ended = rc.ended // else (handed over by another listener) resolved at the end
	}
	if d.Info.SNI != "" {
		c.rep.sni = d.Info.SNI
	}
	if d.Info.Host != "" {
		c.rep.host = d.Info.Host
	}
	return rc.act(c, rc, st, sniffed, depth)
}

// readProxyHeader reads the PROXY header a listener requires, counts the
// client it names against the per-client limits, and returns the bytes
// read past it; false when the connection must end (its outcome is set).
func (c *conn) readProxyHeader(end time.Time) ([]byte, bool) {
	ph, err := readProxyHeader(c.raw, end)
	if err != nil {
		c.rep.outcome, c.rep.err = OutcomeProxyError, err
		return nil, false
	}
	c.rep.client = ph.client
	c.rep.proxySrc, c.rep.proxyDst = ph.src, ph.dst
	client := peerAddr(c.raw)
	if ph.src != nil {
		client = ph.src.AddrPort().Addr()
	}
	key, refused := c.bound.clients.Admit(client, c.s.opt.Now(), c.lc.clientLimits)
	if refused != "" {
		c.rep.outcome, c.rep.err = OutcomeClientLimit, fmt.Errorf("client over its %s limit", refused)
		return nil, false
	}
	c.client = key
	return ph.rest, true
}

// sniff reads the client's first bytes from st until a route decides, the
// probe timeout passes, the buffer is full or the client ends its stream.
// While the client has sent nothing the connection holds no buffer; the
// one it reads into is c.probe, and the bytes returned are valid until
// that is released.
func (c *conn) sniff(st net.Conn, pre []byte, lc *listenerConfig, sni string, end time.Time) ([]byte, route.Decision, error) {
	// A client that dribbles its bytes costs CPU linear in them.
	prober := route.NewProber(lc.Routes, sni)
	if d := prober.Decide(pre, false); !d.NeedMore {
		return pre, d, nil // e.g. an "any" route first: no waiting
	}
	// The probe deadline is armed before the first read that may wait,
	// and only then: a connection accepted with its first bytes queued
	// (deferAccept), decided by them, costs no timer.
	armed := false
	arm := func() {
		if !armed {
			armed = true
			_ = st.SetReadDeadline(end)
		}
	}
	defer func() {
		if armed {
			_ = st.SetReadDeadline(time.Time{})
		}
	}()

	limit := lc.MaxProbeBytes
	if limit <= 0 || limit > snapshot.DefaultMaxProbeBytes {
		limit = snapshot.DefaultMaxProbeBytes
	}
	// Bytes already read (past a PROXY header) are never dropped.
	limit = max(limit, min(len(pre), snapshot.DefaultMaxProbeBytes))

	pool := &c.s.probeBufs
	n := 0
	if tc, ok := st.(*net.TCPConn); ok && len(pre) == 0 {
		// No buffer while the client is silent; one read once it speaks.
		var (
			bp   *[]byte
			read int
		)
		err := forward.ErrNothingQueued
		if lc.clientSpeaksFirst {
			bp, read, err = forward.ReadQueued(tc, pool, limit)
		}
		if errors.Is(err, forward.ErrNothingQueued) {
			arm()
			bp, read, err = forward.ReadOrWait(tc, pool, limit)
		}
		switch {
		case isTimeout(err):
			return nil, prober.Decide(nil, true), nil
		case err != nil:
			return nil, route.Decision{}, err
		case read == 0:
			return nil, route.Decision{}, errClientLeft
		}
		c.probe, n = bp, read
	} else {
		c.probe = pool.Get().(*[]byte)
		n = copy((*c.probe)[:limit], pre)
	}
	buf := (*c.probe)[:limit]
	for {
		if d := prober.Decide(buf[:n], false); !d.NeedMore {
			return buf[:n], d, nil
		}
		if n == len(buf) {
			return buf[:n], prober.Decide(buf[:n], true), nil
		}
		arm()
		m, err := st.Read(buf[n:])
		n += m
		if err != nil {
			if isTimeout(err) || (errors.Is(err, io.EOF) && n > 0) {
				return buf[:n], prober.Decide(buf[:n], true), nil
			}
			c.releaseProbe()
			if errors.Is(err, io.EOF) {
				err = errClientLeft
			}
			return nil, route.Decision{}, err
		}
	}
}

// proxyHeader is what an incoming PROXY header told.
type proxyHeader struct {
	// client is the client to log and to pass on: the header's source,
	// or the real peer for a LOCAL or non-TCP header.
	client string
	// src and dst are the connection the balancer accepted, nil unless
	// the header is a PROXY command with TCP addresses.
	src, dst *net.TCPAddr
	// rest holds the bytes read past the header.
	rest []byte
}

// readProxyHeader reads a PROXY v1 or v2 header. The read is bounded in
// time by end (a header sent byte by byte is cut there) and in size by the
// library: a v1 line is at most 107 bytes and must arrive in one read, a v2
// header at most 16 + proxyproto.MaxV2HeaderSize (4096) bytes.
func readProxyHeader(c net.Conn, end time.Time) (proxyHeader, error) {
	_ = c.SetReadDeadline(end)
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	br := bufio.NewReaderSize(c, 512)
	h, err := proxyproto.Read(br)
	if err != nil {
		return proxyHeader{}, fmt.Errorf("PROXY header: %w", err)
	}
	ph := proxyHeader{client: c.RemoteAddr().String()}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		ph.rest = append([]byte(nil), rest...)
	}
	// A LOCAL header (the balancer's own health check) and addresses that
	// are not TCP (UNKNOWN, UNSPEC, UDP, unix) leave the real peer as the
	// client, as the spec says for LOCAL.
	if src, dst, ok := h.TCPAddrs(); ok && h.Command.IsProxy() {
		ph.client, ph.src, ph.dst = src.String(), src, dst
	}
	return ph, nil
}

// peerAddr is the address of c's peer, the zero Addr when it is not IP.
func peerAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}

func isTimeout(err error) bool {
	return err != nil && errors.Is(err, os.ErrDeadlineExceeded)
}

func isClosedConn(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrClosedPipe)
}
