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

// tunnelSlotKey keys the tunnelSlot of a connection in the contexts of its
// requests.
type tunnelSlotKey struct{}

// tunnelSlot receives the report of the connection's tunnel request (a
// refusal closes the connection, an upgrade takes it over: there is at
// most one). then is what runs when it comes, if the connection's
// goroutine did not wait for it.
type tunnelSlot struct {
	asked atomic.Bool // the handler got a request, so a report will come
	mu    sync.Mutex
	rep   *tunnel.Report
	came  bool
	then  func()
}

func recordTunnel(ctx context.Context, r *tunnel.Report) {
	slot, ok := ctx.Value(tunnelSlotKey{}).(*tunnelSlot)
	if !ok {
		return
	}
	slot.mu.Lock()
	if slot.came {
		slot.mu.Unlock()
		return
	}
	slot.rep, slot.came = r, true
	then := slot.then
	slot.mu.Unlock()
	if then != nil {
		then()
	}
}

// onReport arranges for f to run when the report comes, and reports true;
// when it has already come it reports false and f is not run.
func (slot *tunnelSlot) onReport(f func()) bool {
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.came {
		return false
	}
	slot.then = f
	return true
}

// serveTunnel serves one client connection (c, whose first bytes are data)
// with the route's tunnel handler: net/http reads the handshake request the
// route matched, and the handler refuses it or upgrades it and carries the
// tunnel until it ends. The tunnel's report is logged and counted with the
// connection.
//
// An upgraded connection is finished (ev.finish) by the goroutine that
// carried the tunnel, when it reports: this goroutine, its stack grown by
// sniffing and by net/http's request parsing, does not wait for the
// tunnel's life (it made an idle tunnel cost the server 42 KB instead of
// 32 KB).
func (s *Server) serveTunnel(ev *connEvent, c net.Conn, data []byte, rc *routeConfig) {
	counted := &countingConn{Conn: withPrefix(c, data), remote: ev.client}
	slot := &tunnelSlot{}
	// When Shutdown gives up draining, a tunnel is closed with 1001 (going
	// away) rather than cut; a client that does not answer the close within
	// goingAwayGrace is cut all the same.
	shutdown, goAway := context.WithCancel(context.Background())
	s.cutWith(ev.conn, func() {
		goAway()
		if !slot.asked.Load() {
			_ = c.Close() // still in the handshake: nothing to tell
			return
		}
		time.AfterFunc(goingAwayGrace, func() { _ = c.Close() })
	})
	var handlers sync.WaitGroup
	ln := newOneConnListener(&tunnelConn{countingConn: counted, tcp: socketOf(c)})
	lim := s.opt.HTTP.withDefaults(s.opt.IdleTimeout)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handlers.Add(1)
			defer handlers.Done()
			slot.asked.Store(true)
			rc.tunnel.ServeHTTP(w, r)
		}),
		BaseContext: func(net.Listener) context.Context {
			return tunnel.WithShutdown(context.WithValue(context.Background(), tunnelSlotKey{}, slot), shutdown)
		},
		// The handshake is read under http mode's limits.
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          s.httpErrorLog(ev),
		// Not nil: no HTTP/2 set-up for a connection that is HTTP/1.1
		// and about to be taken over (it cost an allocation per tunnel).
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				ln.finish()
			}
		},
	}
	_ = srv.Serve(ln)
	handlers.Wait()
	ended := func() {
		goAway()
		s.tunnelEnded(ev, counted, rc, slot.rep)
	}
	if slot.asked.Load() {
		// An upgraded connection is served until the tunnel ends.
		ev.async = true
		if slot.onReport(func() { ended(); ev.finish() }) {
			return
		}
		ev.async = false
	}
	ended()
}

// tunnelEnded counts and logs a tunnel connection once its tunnel has
// ended (rep is nil when net/http refused the request before the handler
// saw it).
func (s *Server) tunnelEnded(ev *connEvent, counted *countingConn, rc *routeConfig, rep *tunnel.Report) {
	ev.up, ev.down = counted.in.Load(), counted.out.Load()
	rc.up.Add(float64(ev.up))
	rc.down.Add(float64(ev.down))
	ev.outcome = OutcomeTunnel
	if rep == nil {
		return
	}
	ev.backend, ev.err = rep.Endpoint, rep.Err
	if rep.Outcome == tunnel.OutcomeDialError {
		ev.outcome = OutcomeDialError
		s.m.dialErrors.WithLabelValues(rep.Backend).Inc()
	}
	proto := tunnel.ProtocolTCP
	if rep.UDP {
		proto = tunnel.ProtocolUDP
	}
	s.m.tunnels.WithLabelValues(ev.listener, ev.route, rep.Backend, proto, string(rep.Outcome)).Inc()

	log := s.log
	if !s.opt.LogConnections {
		log = log.V(1)
	}
	if !log.Enabled() {
		return
	}
	kv := []any{
		"listener", ev.listener, "route", ev.route, "client", ev.client,
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

// tunnelConn is the connection handed to net/http: it counts bytes and
// lets the tunnel's keepalive find the TCP socket under TLS and the
// dataplane's wrappers, to see whether its send buffer has room.
type tunnelConn struct {
	*countingConn
	tcp net.Conn
}

// NetConn returns the TCP connection the client's bytes arrive on, or nil.
func (t *tunnelConn) NetConn() net.Conn { return t.tcp }

// socketOf unwraps c down to its TCP connection, or returns nil.
func socketOf(c net.Conn) net.Conn {
	for range 8 {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		case *prefixConn:
			c = v.Conn
		case *countingConn:
			c = v.Conn
		default:
			return nil
		}
	}
	return nil
}
