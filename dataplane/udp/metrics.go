package udp

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portmux/portmux/dataplane/promvec"
)

// Metrics are the UDP listeners' Prometheus collectors, in the dataplane's
// style: created unregistered, registered by the caller on the registry it
// chooses (see Collectors), never on a global one.
type Metrics struct {
	sessions      *prometheus.GaugeVec
	sessionsTotal *prometheus.CounterVec
	datagrams     *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	drops         *prometheus.CounterVec
}

// Outcomes label how a session ended, in portmux_udp_sessions_total. They
// share the names of the TCP connection outcomes where they mean the same.
const (
	OutcomeIdleTimeout = "idle_timeout" // no datagram either way for the route's idle timeout
	OutcomeNoRoute     = "no_route"     // its first datagrams matched no route by the probe's end
	OutcomeDialError   = "dial_error"   // no socket could be opened or connected to the endpoint
	OutcomeRefused     = "refused"      // the backend refused a datagram (ICMP port unreachable)
	OutcomeClosed      = "closed"       // its listener went (new snapshot, shutdown)
	OutcomeError       = "error"        // a panic or an unexpected socket error
)

// Drop reasons label portmux_udp_dropped_total: datagrams from clients that
// reached no backend, and replies that reached no client.
const (
	DropShortInitial  = "short_initial"  // a QUIC Initial in a datagram under 1200 bytes (RFC 9000 §14.1)
	DropNoRoute       = "no_route"       // a new session's datagram that no route takes
	DropSessionLimit  = "session_limit"  // a new session over the listener's or the server's maxConnections
	DropClientLimit   = "client_limit"   // a new session over maxConnectionsPerClient or maxConnectionRatePerClient
	DropProbeOverflow = "probe_overflow" // a first-flight datagram past maxProbeBytes before a decision
	DropBackendWrite  = "backend_write"  // the backend socket refused it (buffer full, unreachable)
	DropClientWrite   = "client_write"   // a reply the listener socket could not send
	DropEnded         = "ended"          // for a session that was ending
)

// NewMetrics creates the collectors, unregistered.
func NewMetrics() *Metrics {
	return &Metrics{
		sessions: promvec.Gauge("portmux_udp_sessions",
			"UDP sessions open now (a client address with its backend socket), by listener.",
			"listener"),
		sessionsTotal: promvec.Counter("portmux_udp_sessions_total",
			"UDP sessions ended, by listener, route, protocol and outcome (idle_timeout, no_route, dial_error, refused, closed, error).",
			"listener", "route", "protocol", "outcome"),
		datagrams: promvec.Counter("portmux_udp_datagrams_total",
			"Datagrams relayed, by listener, route and direction (up: client to backend).",
			"listener", "route", "direction"),
		bytes: promvec.Counter("portmux_udp_bytes_total",
			"UDP payload bytes relayed, by listener, route and direction (up: client to backend).",
			"listener", "route", "direction"),
		drops: promvec.Counter("portmux_udp_dropped_total",
			"Datagrams dropped, by listener and reason (short_initial, no_route, session_limit, client_limit, probe_overflow, backend_write, client_write, ended).",
			"listener", "reason"),
	}
}

// Collectors returns every collector, for the caller to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.sessions, m.sessionsTotal, m.datagrams, m.bytes, m.drops}
}
