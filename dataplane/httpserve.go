package dataplane

import (
	"errors"
	"log"
	"net"
	"net/http"
	"strings"
)

// counted is st, with sniffed in front, as an HTTP server gets it: its
// bytes counted both ways, and the client's address the one the dataplane
// established (a PROXY header's, not the load balancer's).
func (c *conn) counted(st net.Conn, sniffed []byte) *countingConn {
	return &countingConn{Conn: withPrefix(st, sniffed), remote: c.rep.client}
}

// serveOne serves one connection with srv, for http mode and tunnels
// alike, and returns once srv is done with it: closed, or hijacked (an
// upgrade took it over). net/http's recovered panics and errors go to the
// connection's log (httpErrorLog).
func (c *conn) serveOne(counted *countingConn, srv *http.Server) {
	ln := newOneConnListener(counted)
	counted.onClose = ln.finish
	hook := srv.ConnState
	srv.ConnState = func(nc net.Conn, st http.ConnState) {
		if hook != nil {
			hook(nc, st)
		}
		if st == http.StateClosed || st == http.StateHijacked {
			ln.finish()
		}
	}
	srv.ErrorLog = c.s.httpErrorLog(&c.rep)
	_ = srv.Serve(ln)
}

// httpErrorLog is the ErrorLog of the net/http server of one connection
// (http mode, tunnels). net/http recovers the panics of its handlers and of
// its connection goroutines itself and logs them here: they are counted
// and logged like any connection's panic. The rest (a client's TLS or
// protocol errors) goes to the log at V(1).
func (s *Server) httpErrorLog(rep *report) *log.Logger {
	return log.New(httpErrorWriter{s: s, rep: rep}, "", 0)
}

type httpErrorWriter struct {
	s   *Server
	rep *report
}

func (w httpErrorWriter) Write(p []byte) (int, error) {
	msg, stack, _ := strings.Cut(strings.TrimSuffix(string(p), "\n"), "\n")
	if strings.Contains(msg, "panic serving") {
		w.s.m.panics.Inc()
		w.s.log.Error(errors.New(msg), "panic serving a connection; it was closed, the others are served",
			"listener", w.rep.listener, "route", w.rep.route, "client", w.rep.client, "stack", stack)
		return len(p), nil
	}
	w.s.log.V(1).Info("HTTP server", "listener", w.rep.listener, "client", w.rep.client, "message", string(p))
	return len(p), nil
}
