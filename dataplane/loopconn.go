package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// loopListener admits a bound listener's connections on the relay loops
// (Linux): the same caps as acceptLoop, without a goroutine.
type loopListener struct {
	s *Server
	b *boundListener
}

// Accepted admits a connection the loops accepted, as acceptLoop does.
func (h loopListener) Accepted(rc *relayloop.Conn) relayloop.Session {
	s, b := h.s, h.b
	cfg := s.cfg.Load()
	lc := cfg.byKey[b.key]
	if lc == nil {
		return nil // the listener is being removed
	}
	peer := rc.Peer()
	client, ok := s.admitNew(b, lc, cfg, peer, rc)
	if !ok {
		return nil
	}
	c := &conn{s: s, cfg: cfg, lc: lc, bound: b, client: client}
	c.rep = report{start: time.Now(), listener: lc.Name, client: peer.String(), ended: lc.ended}
	abort := rc.Abort
	c.cut.Store(&abort)
	if !s.track(c) {
		s.unadmit(b, lc, client)
		return nil
	}
	return &loopSession{c: c, rc: rc}
}

// loopSession is a connection while the relay loops carry it: its route
// is decided from the bytes the loop reads, and a plain tcp-mode route is
// forwarded by the loop itself. Everything else (TLS termination, PROXY
// headers from a balancer, http mode, tunnels, backends named by host
// name) is handed off to a goroutine with the bytes read so far, and runs
// as an accepted connection would.
type loopSession struct {
	c        *conn
	rc       *relayloop.Conn
	prober   route.Prober
	probeEnd time.Time
	limit    int
	// route is the route forwarded on the loop, once one is.
	route  *routeConfig
	target relayloop.Target
	// http is set when the loop carries the connection as HTTP/1.1
	// exchanges (loophttp.go).
	http *loopHTTP
	// adopted is the http-mode route of a connection the loops took
	// over from its goroutine (loopadopt.go), adoptedH2 that it speaks
	// HTTP/2, and tls its TLS layer (nil in clear).
	adopted   *routeConfig
	adoptedH2 bool
	tls       *relayloop.TLS
	// h2 is set when the loop serves the connection as HTTP/2
	// (loophttp2.go).
	h2 *loopH2
}

// Decide is conn.sniff on the loop.
func (ls *loopSession) Decide(b []byte, end relayloop.End) relayloop.Verdict {
	c, lc := ls.c, ls.c.lc
	if ls.adopted != nil { // decided on its goroutine
		if ls.adoptedH2 {
			return ls.startH2(ls.adopted)
		}
		return ls.startHTTP(ls.adopted)
	}
	if end == relayloop.Start {
		ls.probeEnd = lc.probeDeadline()
		if lc.tls != nil || lc.ProxyProtocol != nil {
			return relayloop.Verdict{HandOff: true}
		}
		ls.prober = route.NewProber(lc.Routes, "")
		ls.limit = lc.MaxProbeBytes
		if ls.limit <= 0 || ls.limit > snapshot.DefaultMaxProbeBytes {
			ls.limit = snapshot.DefaultMaxProbeBytes
		}
	}
	if end == relayloop.EOF && len(b) == 0 {
		ls.probed()
		c.rep.outcome, c.rep.err = OutcomeProbeError, errClientLeft
		return relayloop.Verdict{}
	}
	d := ls.prober.Decide(b, end > relayloop.Reading)
	if d.NeedMore {
		return relayloop.Verdict{Wait: true, Deadline: ls.probeEnd, Limit: ls.limit}
	}
	if d.Route < 0 {
		ls.probed()
		c.rep.outcome, c.rep.err = OutcomeNoRoute, errNoRoute
		return relayloop.Verdict{}
	}
	rc := &lc.routes[d.Route]
	if loopHTTPRoute(rc, b) {
		ls.probed()
		if d.Info.Host != "" {
			c.rep.host = d.Info.Host
		}
		return ls.startHTTP(rc)
	}
	if loopHTTP2Route(rc, "", b) {
		ls.probed()
		return ls.startH2(rc)
	}
	if rc.endpoints == nil {
		// Not a plain forward: the goroutine path decides again from the
		// same bytes (a Prober is pure) and carries it.
		return relayloop.Verdict{HandOff: true}
	}
	ls.probed()
	c.reportRoute(rc)
	if d.Info.SNI != "" {
		c.rep.sni = d.Info.SNI
	}
	if d.Info.Host != "" {
		c.rep.host = d.Info.Host
	}
	be := rc.Backend
	if len(*rc.endpoints) == 0 {
		c.s.m.dialErrors.WithLabelValues(be.Name).Inc()
		c.rep.outcome, c.rep.err = OutcomeDialError, forward.ErrNoEndpoints
		return relayloop.Verdict{}
	}
	ls.route = rc
	ls.target = relayloop.Target{
		Endpoints:   *rc.endpoints,
		First:       rc.dialer.Turn(len(*rc.endpoints)),
		DialTimeout: be.DialTimeout,
		IdleTimeout: rc.idle,
	}
	if be.ProxyProtocol > 0 {
		h := proxyproto.HeaderProxyFromAddrs(byte(be.ProxyProtocol),
			net.TCPAddrFromAddrPort(ls.rc.Peer()), net.TCPAddrFromAddrPort(ls.rc.Local()))
		hdr, err := h.Format()
		if err != nil {
			c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("write PROXY header: %w", err)
			return relayloop.Verdict{}
		}
		ls.target.Header = hdr
	}
	return relayloop.Verdict{Forward: &ls.target}
}

// probed counts the probe's time, once the loop has decided (a hand-off
// leaves it to the goroutine, which decides again).
func (ls *loopSession) probed() {
	ls.c.lc.sniff.Observe(time.Since(ls.c.rep.start).Seconds())
}

// HandOff continues the connection on a goroutine of its own, from the
// bytes the loop read.
func (ls *loopSession) HandOff(fd int, read []byte) {
	c := ls.c
	if ls.adopted != nil {
		ls.resumeHTTP(fd, read)
		return
	}
	if !c.takeSocket(fd) {
		return
	}
	c.noAdopt = ls.http != nil // given up mid-exchanges: it stays here
	if len(read) > 0 {
		c.pre = append([]byte(nil), read...)
	}
	c.probeEnd = ls.probeEnd
	go c.serve()
}

// takeSocket makes fd, a socket a relay loop gave up, the connection's
// own, or ends the connection (false).
func (c *conn) takeSocket(fd int) bool {
	f := os.NewFile(uintptr(fd), "")
	raw, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("take the connection off the relay loop: %w", err)
		c.end()
		return false
	}
	c.raw = raw
	c.cutWith(func() { _ = raw.Close() })
	return true
}

// Done ends a connection the loop carried to its end, as forwardTCP's
// pipe does.
func (ls *loopSession) Done(r relayloop.Result) {
	c, rc := ls.c, ls.route
	if ls.http != nil {
		ls.doneHTTP(r)
		return
	}
	if ls.h2 != nil {
		ls.doneH2(r)
		return
	}
	switch {
	case rc == nil:
		if r.Err != nil { // a read error, a panic or Shutdown while probing
			c.rep.outcome, c.rep.err = OutcomeProbeError, r.Err
			if panics.Is(r.Err) != nil {
				c.rep.outcome = OutcomeError
			}
		}
	case r.DialErr != nil:
		c.s.m.dialErrors.WithLabelValues(rc.Backend.Name).Inc()
		c.rep.outcome, c.rep.err = OutcomeDialError, r.DialErr
	default:
		if r.Dialed {
			c.rep.backend = r.Endpoint.String()
		}
		c.reportBytes(rc, r.Up, r.Down)
		switch {
		case r.Idle:
			c.rep.outcome = OutcomeIdleTimeout
		case r.Err != nil && !isClosedConn(r.Err):
			c.rep.outcome, c.rep.err = OutcomeError, r.Err
		default:
			c.rep.outcome = OutcomeForwarded
		}
	}
	c.end()
}

// loopEndpoints is a backend's endpoints as addresses the relay loops can
// connect to without a resolver, or nil when one of them is a host name
// (that route is forwarded on a goroutine, through forward.Dialer).
func loopEndpoints(endpoints []string) *[]netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(endpoints))
	for _, ep := range endpoints {
		ap, err := netip.ParseAddrPort(ep)
		if err != nil {
			return nil
		}
		out = append(out, ap)
	}
	return &out
}
