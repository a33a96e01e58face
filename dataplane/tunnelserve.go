package dataplane

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
)

// newTunnelHandler builds the handler of a tunnel route. It is part of the
// route's configuration, so the round-robin over each target's endpoints
// is shared by the connections the configuration serves. The route's idle
// timeout applies to its TCP and UDP tunnels alike; without one, TCP
// tunnels take idle (negative: never) and UDP ones the tunnel default.
func newTunnelHandler(r *snapshot.Route, idle time.Duration, bufs *tunnel.Buffers) http.Handler {
	opt := tunnel.Options{Report: recordTunnel, IdleTimeout: idle, Buffers: bufs}
	if r.IdleTimeout > 0 {
		opt.IdleTimeout, opt.UDPIdleTimeout = r.IdleTimeout, r.IdleTimeout
	}
	return tunnel.NewHandler(r.Tunnel, opt)
}

// goingAwayGrace is how long a tunnel client has to answer the server's
// closing handshake at shutdown before its connection is cut.
const goingAwayGrace = time.Second

// tunnelKey keys the tunnelServing of a connection in the contexts of its
// requests.
type tunnelKey struct{}

// tunnelServing is one connection served by a tunnel route: its handshake
// request is refused (reported on the handler's goroutine, before the
// server lets go of the connection) or upgraded (the connection is
// hijacked, and reported by the tunnel's own goroutine when it ends).
// There is at most one request: a refusal closes the connection.
type tunnelServing struct {
	c       *conn
	rc      *routeConfig
	counted *countingConn
	goAway  context.CancelFunc
	// asked: the handler got a request. hijacked: it upgraded it.
	asked, hijacked atomic.Bool
	handlers        sync.WaitGroup
	// refusal is the report of a refused request.
	refusal *tunnel.Report
}

// recordTunnel is the tunnel handlers' Report: it hands the report to the
// connection it belongs to.
func recordTunnel(ctx context.Context, r *tunnel.Report) {
	if t, ok := ctx.Value(tunnelKey{}).(*tunnelServing); ok {
		t.reported(r)
	}
}

// reported takes a tunnel's report. An upgraded tunnel has ended: its
// connection is counted, logged and ended here, on the tunnel's goroutine.
// A refusal is kept for serveTunnel, which ends the connection.
func (t *tunnelServing) reported(r *tunnel.Report) {
	if t.hijacked.Load() {
		t.ended(r)
		t.c.end()
		return
	}
	t.refusal = r
}

// serveTunnel serves one client connection with the route's tunnel
// handler (the action of a tunnel route): net/http reads the handshake
// request the route matched, and the handler refuses it or upgrades it
// and carries the tunnel until it ends. An upgraded connection is owned,
// and ended, by the goroutine that carries the tunnel: this one, its stack
// grown by sniffing and by net/http's request parsing, does not wait for
// the tunnel's life (it made an idle tunnel cost the server 42 KB instead
// of 32 KB).
func serveTunnel(c *conn, rc *routeConfig, st net.Conn, sniffed []byte, _ int) bool {
	s := c.s
	// The sniffed bytes are the handshake request: no pooled buffer is
	// held while the tunnel lives.
	t := &tunnelServing{c: c, rc: rc, counted: c.counted(st, c.keepSniffed(sniffed))}
	// When Shutdown gives up draining, a tunnel is closed with 1001 (going
	// away) rather than cut; a client that does not answer the close within
	// goingAwayGrace is cut all the same.
	shutdown, goAway := context.WithCancel(context.Background())
	t.goAway = goAway
	c.cutWith(func() {
		goAway()
		if !t.asked.Load() {
			_ = c.raw.Close() // still in the handshake: nothing to tell
			return
		}
		time.AfterFunc(goingAwayGrace, func() { _ = c.raw.Close() })
	})
	lim := s.opt.HTTP.withDefaults(s.opt.IdleTimeout)
	base := tunnel.WithShutdown(context.WithValue(context.Background(), tunnelKey{}, t), shutdown)
	c.serveOne(t.counted, &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t.handlers.Add(1)
			defer t.handlers.Done()
			t.asked.Store(true)
			rc.tunnel.ServeHTTP(w, r)
		}),
		BaseContext: func(net.Listener) context.Context { return base },
		// The handshake is read under http mode's limits.
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		// Not nil: no HTTP/2 set-up for a connection that is HTTP/1.1
		// and about to be taken over (it cost an allocation per tunnel).
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// Set on the handler's goroutine as the upgrade hijacks the
		// connection, before the tunnel's goroutine can report.
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateHijacked {
				t.hijacked.Store(true)
			}
		},
	})
	t.handlers.Wait()
	if t.hijacked.Load() {
		c.handOff() // the tunnel's goroutine ends it (reported)
		return true
	}
	t.ended(t.refusal)
	return false
}

// ended counts and logs a tunnel connection once its tunnel has ended (rep
// is nil when net/http refused the request before the handler saw it).
func (t *tunnelServing) ended(rep *tunnel.Report) {
	t.goAway()
	c, s := t.c, t.c.s
	c.reportBytes(t.rc, t.counted.in.Load(), t.counted.out.Load())
	c.rep.outcome = OutcomeTunnel
	if rep == nil {
		return
	}
	c.rep.backend, c.rep.err = rep.Endpoint, rep.Err
	if rep.Outcome == tunnel.OutcomeDialError {
		c.rep.outcome = OutcomeDialError
		s.m.dialErrors.WithLabelValues(rep.Backend).Inc()
	}
	proto := tunnel.ProtocolTCP
	if rep.UDP {
		proto = tunnel.ProtocolUDP
	}
	s.m.tunnels.WithLabelValues(c.rep.listener, c.rep.route, rep.Backend, proto, string(rep.Outcome)).Inc()

	log := s.connLog()
	if !log.Enabled() {
		return
	}
	kv := []any{
		"listener", c.rep.listener, "route", c.rep.route, "client", c.rep.client,
		"target", rep.Target, "protocol", proto, "endpoint", rep.Endpoint,
		"status", rep.Status, "up", rep.Up, "down", rep.Down,
		"duration", rep.Duration.Round(time.Microsecond).String(),
		"outcome", string(rep.Outcome),
	}
	if rep.UDP {
		kv = append(kv, "upDatagrams", rep.UpDatagrams, "downDatagrams", rep.DownDatagrams)
	}
	if rep.Err != nil {
		kv = append(kv, "error", rep.Err.Error())
	}
	log.Info("tunnel", kv...)
}
