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

// HTTP/1.1 over TLS on the relay loops. The handshake, and the sniff of
// the first request inside it, run on the connection's goroutine as
// always; when the request goes to an http-mode route that the loops
// carry in cleartext (loopHTTPRoute), the connection then moves to a
// loop with its TLS state (tlsmem under crypto/tls) and is carried as
// exchanges from that request on: no goroutine, poller wake-up or timer
// per request, as for cleartext. A request the loop does not carry
// brings it back to a goroutine with the same TLS state (resumeHTTP).

// adoptHTTP moves a TLS-terminated connection whose first request, in
// sniffed, goes to rc to the relay loops; st is the TLS stream. handled
// reports that it tried, and then owned that the loops own the
// connection (else it is to be ended, its outcome set); without handled
// the connection is served here.
func (c *conn) adoptHTTP(rc *routeConfig, st net.Conn, sniffed []byte, depth int) (handled, owned bool) {
	s := c.s
	if s.loops == nil || depth != 0 || c.noAdopt || rc.lc != c.lc || !c.rep.tls || !loopHTTPRoute(rc, sniffed) || wantsHTTP2(c.rep.alpn, sniffed) {
		return false, false
	}
	tc, ok := st.(*tls.Conn)
	if !ok {
		return false, false
	}
	mem, ok := tc.NetConn().(*tlsmem.Conn)
	if !ok {
		return false, false
	}
	raw, ok := c.raw.(*net.TCPConn)
	if !ok {
		return false, false
	}
	fd, err := dupSocket(raw)
	if err != nil {
		s.log.V(1).Info("relay loops cannot take a TLS connection; serving it here", "listener", c.rep.listener, "reason", err.Error())
		return false, false
	}
	// Ciphertext read ahead of crypto/tls (past the bytes the listener
	// sniffed) goes with it; reading it takes no system call.
	var unread []byte
	if p, ok := mem.NetConn().(*prefixconn.Conn); ok && p.Buffered() > 0 {
		unread = make([]byte, p.Buffered())
		_, _ = io.ReadFull(p, unread)
	}
	mem.Detach(unread, nil)
	ls := &loopSession{c: c, adopted: rc, tls: &relayloop.TLS{Conn: tc, Mem: mem}}
	// Nothing of the connection's is touched here once the loop has it:
	// the probe buffer goes back first (Adopt copies the request), and
	// the socket is the loop's to close.
	first := c.keepSniffed(sniffed)
	c.handOff()
	c.raw = nil
	lc, err := s.loops.Adopt(fd, raw.RemoteAddr().(*net.TCPAddr).AddrPort(), ls, ls.tls, first)
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

// resumeHTTP serves a TLS connection the loops handed back, from read,
// the request they did not carry, on a goroutine: its layer moves back to
// the socket fd, and http mode goes on as if the connection had been
// served here from the start.
func (ls *loopSession) resumeHTTP(fd int, read []byte) {
	c := ls.c
	f := os.NewFile(uintptr(fd), "")
	raw, err := net.FileConn(f)
	_ = f.Close()
	if err == nil {
		err = ls.tls.Mem.Attach(raw)
	}
	if err != nil {
		c.rep.outcome, c.rep.err = OutcomeError, fmt.Errorf("take the connection off the relay loop: %w", err)
		if raw != nil {
			_ = raw.Close()
		}
		c.end()
		return
	}
	c.raw = raw
	c.cutWith(func() { _ = raw.Close() })
	c.noAdopt = true
	read = append([]byte(nil), read...)
	go func() {
		var err error
		func() {
			defer panics.Capture(&err)
			serveHTTPMode(c, ls.adopted, ls.tls.Conn, read, 0)
		}()
		if err != nil {
			c.rep.outcome, c.rep.err = OutcomeError, err
		}
		c.end()
	}()
}
