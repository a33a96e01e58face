package dataplane

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/prefixconn"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/tlsmem"
)

// HTTP/1.1 and HTTP/2 on the relay loops for the connections that begin
// on a goroutine: TLS-terminated ones, and cleartext ones behind a PROXY
// header. The handshake or the header, and the sniff of the first
// request, run on the connection's goroutine as always; when the request
// goes to an http-mode route that the loops carry (loopHTTPRoute), or
// the connection speaks HTTP/2 to an http-mode route, the connection
// then moves to a loop, with its TLS state if any (tlsmem under
// crypto/tls), and is carried as exchanges from that request on, or
// served as HTTP/2 (loophttp2.go): no goroutine, poller wake-up or timer
// per request. A request the loop
// does not carry brings it back to a goroutine, where http mode goes on
// (resumeHTTP).

// adoptHTTP moves a connection whose first request, in sniffed, goes to
// rc to the relay loops; st is what it was read from: the TLS stream, or
// the socket behind a PROXY header (with no bytes read past sniffed).
// handled reports that it tried, and then owned that the loops own the
// connection (else it is to be ended, its outcome set); without handled
// the connection is served here.
func (c *conn) adoptHTTP(rc *routeConfig, st net.Conn, sniffed []byte, depth int) (handled, owned bool) {
	s := c.s
	if s.loops == nil || depth != 0 || c.noAdopt || rc.lc != c.lc {
		return false, false
	}
	h2 := loopHTTP2Route(rc, c.rep.alpn, sniffed)
	if !h2 && !loopHTTPRoute(rc, sniffed) {
		return false, false
	}
	raw, ok := c.raw.(*net.TCPConn)
	if !ok {
		return false, false
	}
	var layer *relayloop.TLS
	switch {
	case c.rep.tls:
		tc, ok := st.(*tls.Conn)
		if !ok {
			return false, false
		}
		mem, ok := tc.NetConn().(*tlsmem.Conn)
		if !ok {
			return false, false
		}
		layer = &relayloop.TLS{Conn: tc, Mem: mem}
	case c.lc.ProxyProtocol == nil || st != c.raw:
		// In clear only a PROXY header keeps a connection off the loops
		// (one they handed off stays off), and no layer may hold bytes.
		return false, false
	}
	fd, err := dupSocket(raw)
	if err != nil {
		s.log.V(1).Info("relay loops cannot take a connection; serving it here", "listener", c.rep.listener, "reason", err.Error())
		return false, false
	}
	if layer != nil {
		// Ciphertext read ahead of crypto/tls (past the bytes the
		// listener sniffed) goes with it; reading it takes no system
		// call.
		var unread []byte
		if p, ok := layer.Mem.NetConn().(*prefixconn.Conn); ok && p.Buffered() > 0 {
			unread = make([]byte, p.Buffered())
			_, _ = io.ReadFull(p, unread)
		}
		layer.Mem.Detach(unread, nil)
	}
	ls := &loopSession{c: c, adopted: rc, adoptedH2: h2, tls: layer}
	// Nothing of the connection's is touched here once the loop has it:
	// the probe buffer goes back first (Adopt copies the request), and
	// the socket is the loop's to close.
	first := c.keepSniffed(sniffed)
	c.handOff()
	c.raw = nil
	lc, err := s.loops.Adopt(fd, raw.RemoteAddr().(*net.TCPAddr).AddrPort(), adopter{ls}, layer, first)
	if err != nil { // the loops are closing (Shutdown): end it here
		_ = os.NewFile(uintptr(fd), "").Close()
		c.raw, c.handedOff = raw, false
		c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("relay loops: %w", err)
		return true, false
	}
	abort := lc.Abort
	c.cut.Store(&abort)
	_ = raw.Close() // its descriptor only: the loop's is a duplicate
	return true, true
}

// adopter gives the loop that adopts a connection its session, which
// learns its relay-loop connection there (an HTTP/2 one's output is
// flushed through it).
type adopter struct{ ls *loopSession }

func (a adopter) Accepted(rc *relayloop.Conn) relayloop.Session {
	a.ls.rc = rc
	return a.ls
}

// resumeHTTP serves a connection the loops adopted and handed back, from
// read, the request they did not carry, on a goroutine: its TLS layer, if
// any, moves back to the socket fd, and http mode goes on as if the
// connection had been served here from the start (a PROXY header is not
// read again).
func (ls *loopSession) resumeHTTP(fd int, read []byte) {
	c := ls.c
	if !c.takeSocket(fd) {
		return
	}
	st := c.raw
	if ls.tls != nil {
		if err := ls.tls.Mem.Attach(c.raw); err != nil {
			c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("take the connection off the relay loop: %w", err)
			c.end()
			return
		}
		st = ls.tls.Conn
	}
	c.noAdopt = true
	read = append([]byte(nil), read...)
	go func() {
		var err error
		owned := func() bool {
			defer panics.Capture(&err)
			return serveHTTPMode(c, ls.adopted, st, read, 0)
		}()
		c.served(owned, err)
	}()
}
