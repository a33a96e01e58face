package dataplane

import (
	"github.com/portmux/portmux/dataplane/h2"
	"github.com/portmux/portmux/dataplane/relayloop"
)

// HTTP/2 connections on the relay loops: a connection that speaks
// HTTP/2 to an http-mode route (h2c with prior knowledge, or h2 by ALPN
// once its goroutine has done the TLS handshake and the loops adopted it
// with its TLS state, loopadopt.go) is served by its loop (relayloop.Verdict.Serve)
// as an h2.Conn, which the loop feeds with what the client sends and
// whose output it writes, instead of a goroutine reading and another
// writing it. Its streams are what ServeConn's are: the bodiless ones
// whose route has address endpoints go to the same loop as calls
// (h2loop.go), the others to handler goroutines (httpConn), with the
// same limits, routing, rewriting and outcomes.

// loopH2 is an HTTP/2 connection its loop serves.
type loopH2 struct {
	conn *h2.Conn
	hc   *httpConn
	// rc is the route of the connection's first bytes, which its log
	// line and byte counters go to, as serveHTTPMode's.
	rc *routeConfig
}

// startH2 serves the connection as HTTP/2 from its loop.
func (ls *loopSession) startH2(rc *routeConfig) relayloop.Verdict {
	c := ls.c
	s := c.s
	c.reportRoute(rc)
	c.rep.backend = rc.Backend.Name
	hc := newHTTPConn(c, c.lc)
	slot := takeSlot(c.poolSlot)
	srv := s.newH2Server(hc, slot, rc.IdleTimeout, &c.rep, c.draining(), ls.rc.Caller())
	ls.h2 = &loopH2{hc: hc, rc: rc, conn: srv.NewConn(c.rep.client, ls.rc.Flusher(), ls.rc.Abort)}
	ls.route = rc
	return relayloop.Verdict{Serve: &relayloop.Serving{WriteTimeout: srv.WriteTimeout}}
}

// Input, InputEnded and Output make the session the loop's Server of an
// HTTP/2 connection.
func (ls *loopSession) Input(b []byte) error   { return ls.h2.conn.Input(b) }
func (ls *loopSession) InputEnded(err error)   { ls.h2.conn.InputEnded(err) }
func (ls *loopSession) Output() ([]byte, bool) { return ls.h2.conn.Output() }

// doneH2 ends the connection as serveHTTPMode does, once the handlers of
// its streams have returned: on a goroutine, since they may outlive it
// and the loop must not wait.
func (ls *loopSession) doneH2(r relayloop.Result) {
	h, c := ls.h2, ls.c
	h.conn.Closed(r.Err)
	c.reportBytes(h.rc, r.Up, r.Down)
	c.rep.outcome = OutcomeHTTP
	go func() {
		h.hc.handlers.closeAndWait()
		c.end()
	}()
}
