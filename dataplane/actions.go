package dataplane

import (
	"fmt"
	"net"

	"github.com/pires/go-proxyproto"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// action carries a connection once route rc has chosen it. st is what to
// read (the socket, or the TLS layer on it), and sniffed the bytes read
// from it so far, which belong in front of what st still returns; they are
// valid until the connection's probe buffer is released (keepSniffed
// copies them). depth counts the internal listeners the connection went
// through. An action returns true when it took ownership of the
// connection (c.handOff): it, not the caller, then ends it.
type action func(c *conn, rc *routeConfig, st net.Conn, sniffed []byte, depth int) (owned bool)

// actionOf is the action of a route: one per kind of route, chosen once
// when the configuration is built.
func actionOf(r *snapshot.Route) action {
	switch {
	case r.Backend != nil && r.Backend.Mode == snapshot.ModeHTTP:
		return serveHTTPMode
	case r.Backend != nil:
		return forwardTCP
	case r.Listener != "":
		return handToListener
	case r.Tunnel != nil:
		return serveTunnel
	}
	return noAction
}

// noAction ends a connection whose route has nothing to do (a snapshot
// never holds one; Validate refuses it).
func noAction(c *conn, _ *routeConfig, _ net.Conn, _ []byte, _ int) bool {
	c.rep.outcome, c.rep.err = OutcomeNoRoute, errNoRoute
	return false
}

// handToListener hands the stream to an internal listener, which
// terminates the TLS it carries and routes what is inside.
func handToListener(c *conn, rc *routeConfig, st net.Conn, sniffed []byte, depth int) bool {
	next := c.cfg.listeners[rc.Listener]
	if next == nil || depth+1 >= maxListenerDepth {
		c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("internal listener %q unavailable", rc.Listener)
		return false
	}
	c.rep.internalListeners = append(c.rep.internalListeners, next.Name)
	// The sniffed bytes are the start of the TLS stream the internal
	// listener terminates, and the probe buffer is read into again there.
	return c.handle(st, c.keepSniffed(sniffed), next, depth+1)
}

// forwardTCP dials the route's backend, sends the sniffed bytes and then
// carries the connection both ways until it ends. The pipe that carries
// it owns it: this goroutine, its stack grown by sniffing, ends here.
func forwardTCP(c *conn, rc *routeConfig, st net.Conn, sniffed []byte, _ int) bool {
	s, b := c.s, rc.Backend
	up, ep, err := rc.dialer.Dial(s.stop, b.Endpoints)
	if err != nil {
		s.m.dialErrors.WithLabelValues(b.Name).Inc()
		c.rep.outcome, c.rep.err = OutcomeDialError, err
		return false
	}
	c.rep.backend = ep
	if b.ProxyProtocol > 0 {
		src, dst := st.RemoteAddr(), st.LocalAddr()
		if c.rep.proxySrc != nil {
			src, dst = c.rep.proxySrc, c.rep.proxyDst // the connection the balancer took
		}
		h := proxyproto.HeaderProxyFromAddrs(byte(b.ProxyProtocol), src, dst)
		if _, err := h.WriteTo(up); err != nil {
			_ = up.Close()
			c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("write PROXY header: %w", err)
			return false
		}
	}
	if len(sniffed) > 0 {
		if _, err := up.Write(sniffed); err != nil {
			_ = up.Close()
			c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("write sniffed bytes: %w", err)
			return false
		}
	}
	sent := int64(len(sniffed))
	c.releaseProbe() // no buffer is held while the connection lives
	c.handOff()
	h := forward.Start(st, up, forward.Options{IdleTimeout: rc.idle, BufferPool: &s.copyBufs, StreamBufferPool: &s.recBufs, Parker: s.parker,
		OnPanic: func(p *panics.Error) { c.logPanic(p) }}, func(r forward.Result) {
		c.reportBytes(rc, r.Up+sent, r.Down)
		switch {
		case r.Idle:
			c.rep.outcome = OutcomeIdleTimeout
		case r.Err != nil && !isClosedConn(r.Err):
			c.rep.outcome, c.rep.err = OutcomeError, r.Err
		default:
			c.rep.outcome = OutcomeForwarded
		}
		c.end()
	})
	// A parked direction is woken by the pipe's abort, not by a close
	// under it.
	c.cutWith(h.Abort)
	return true
}
