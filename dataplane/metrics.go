package dataplane

import (
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portmux/portmux/dataplane/promvec"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/udp"
)

// Metrics are the dataplane's Prometheus collectors. They are registered on
// the registry the caller passes, never on a global one, so tests and
// several servers in one process stay apart.
type Metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	sniff       *prometheus.HistogramVec
	dialErrors  *prometheus.CounterVec
	listening   *prometheus.GaugeVec
	tunnels     *prometheus.CounterVec
	panics      prometheus.Counter
	clients     *clientsCollector
	// tunnelBufferBytes reads what the Server's tunnel buffers hold.
	tunnelBufferBytes atomic.Pointer[func() int64]
	// relayStats reads what the Server's relay loops hold.
	relayStats atomic.Pointer[func() relayloop.Stats]
	// httpRequests counts the requests of connections in http mode, each
	// routed on its own.
	httpRequests *prometheus.CounterVec
	// httpBackendConns counts the backend connections of http mode, which
	// take slots of their clients' listeners.
	httpBackendConns *prometheus.GaugeVec
	// udp are the UDP listeners' sessions, datagrams and drops.
	udp *udp.Metrics
}

// clientsCollector reports the size of each bound listener's per-client
// table when scraped, so the accept path pays nothing for it. The Server
// that uses the Metrics sets count.
type clientsCollector struct {
	desc  *prometheus.Desc
	count atomic.Pointer[func() map[string]int]
}

func (c *clientsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *clientsCollector) Collect(ch chan<- prometheus.Metric) {
	count := c.count.Load()
	if count == nil {
		return
	}
	for listener, n := range (*count)() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), listener)
	}
}

// Outcomes label how a connection ended.
const (
	OutcomeForwarded      = "forwarded"       // routed and carried until both sides closed
	OutcomeNoRoute        = "no_route"        // no route matched; closed
	OutcomeDialError      = "dial_error"      // every endpoint of the backend failed
	OutcomeRejected       = "rejected"        // over maxConnections
	OutcomeClientLimit    = "client_limit"    // the client is over maxConnectionsPerClient or maxConnectionRatePerClient
	OutcomeProbeError     = "probe_error"     // the client failed or left before a decision
	OutcomeIdleTimeout    = "idle_timeout"    // closed after the idle timeout
	OutcomeTLSError       = "tls_error"       // TLS termination failed
	OutcomeProxyError     = "proxy_error"     // a required PROXY header was missing or malformed
	OutcomeProxyUntrusted = "proxy_untrusted" // closed unread at accept: the peer may not send PROXY headers
	OutcomeError          = "error"           // the stream ended with an error
	OutcomeTunnel         = "tunnel"          // served as a WebSocket tunnel
	OutcomeHTTP           = "http"            // served by the HTTP reverse proxy
)

// Request outcomes label portmux_http_requests_total: what became of one
// request (an HTTP/1.1 request or an HTTP/2 stream) on a connection served
// in http mode, which routes every request on its own.
const (
	RequestProxied     = "proxied"     // the backend answered, whatever its status
	RequestMisdirected = "misdirected" // 421: no http-mode route of the listener takes it
	RequestUnavailable = "unavailable" // 503: no connection slot left for a new backend connection
	RequestBadGateway  = "bad_gateway" // 502: the backend could not be reached or failed
	// RequestBadRequest is a request whose body the client broke: a
	// malformed chunked body, or one that ended before its end (400,
	// when the client is still there to read it). The backend is not
	// to blame: no dial error is counted.
	RequestBadRequest = "bad_request"
	// RequestClientGone is a request whose client left, or reset its
	// stream, before the response (nginx's 499: no one is there to
	// answer), or that the dataplane stopped serving. The backend is not
	// to blame: no dial error is counted.
	RequestClientGone = "client_gone"
	// RequestClientLimit is an HTTP/2 stream refused with 503 because its
	// client had as many requests in flight, over all its connections,
	// as the listener's maxConnectionsPerClient.
	RequestClientLimit = "client_limit"
)

// NewMetrics creates the collectors and registers them on reg (nil: not
// registered, for tests that do not scrape).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		udp: udp.NewMetrics(),
		connections: promvec.Counter("portmux_connections_total",
			"Connections handled, by listener, route, sniffed protocol and outcome.",
			"listener", "route", "protocol", "outcome"),
		active: promvec.Gauge("portmux_active_connections",
			"Connections open now, by listener.",
			"listener"),
		bytes: promvec.Counter("portmux_bytes_total",
			"Bytes forwarded, by listener, route and direction (up: client to backend).",
			"listener", "route", "direction"),
		sniff: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portmux_sniff_duration_seconds",
			Help:    "Time from accept to a routing decision.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"listener"}),
		dialErrors: promvec.Counter("portmux_dial_errors_total",
			"Failed dials to backend endpoints, by backend.",
			"backend"),
		listening: promvec.Gauge("portmux_listener_up",
			"1 when the listener's port is bound and accepting.",
			"listener", "address"),
		tunnels: promvec.Counter("portmux_tunnels_total",
			"WebSocket tunnel requests, by listener, route, allowed target (empty when refused as not allowed), protocol (tcp, udp) and outcome (closed, error, dead_peer, idle_timeout, bad_request, unauthorized, forbidden, dial_error, unavailable).",
			"listener", "route", "target", "protocol", "outcome"),
		clients: &clientsCollector{desc: prometheus.NewDesc("portmux_clients",
			"Clients each listener counts for its per-client limits: those with connections open or opened recently.",
			[]string{"listener"}, nil)},
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portmux_panics_total",
			Help: "Panics recovered while serving a connection (a bug; the connection was closed, the others served). The log has the stack.",
		}),
		httpRequests: promvec.Counter("portmux_http_requests_total",
			"Requests (HTTP/1.1 requests and HTTP/2 streams) on connections served in http mode, by listener, route (empty when misdirected or over the client limit) and outcome (proxied, misdirected, unavailable, bad_gateway, bad_request, client_gone, client_limit).",
			"listener", "route", "outcome"),
		httpBackendConns: promvec.Gauge("portmux_http_backend_connections",
			"Backend connections open now (in use or pooled) for connections served in http mode, by the listener that accepted the clients: each takes one of its maxConnections.",
			"listener"),
	}
	bufBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portmux_tunnel_buffer_bytes",
		Help: "Memory held by the big copy buffers of TCP tunnels whose bytes wait for a slow peer (bounded: past the bound, tunnels use small buffers).",
	}, func() float64 {
		if f := m.tunnelBufferBytes.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	relayStat := func(pick func(relayloop.Stats) int64) func() float64 {
		return func() float64 {
			if f := m.relayStats.Load(); f != nil {
				return float64(pick((*f)()))
			}
			return 0
		}
	}
	relayConns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portmux_relay_loop_connections",
		Help: "Connections the relay loops carry (deciding, connecting or forwarding) without a goroutine; the rest of portmux_active_connections is on goroutines.",
	}, relayStat(func(s relayloop.Stats) int64 { return s.Conns }))
	relayPipes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portmux_relay_loop_pipes",
		Help: "Pipes held by relay-loop connections whose bytes wait for a slow reader, each up to 1 MiB of kernel memory (at most two per connection).",
	}, relayStat(func(s relayloop.Stats) int64 { return s.Pipes }))
	relayCalls := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portmux_relay_loop_http2_requests",
		Help: "HTTP/2 requests in flight whose backend exchange a relay loop carries (those without a body to an http-mode route with address endpoints); the others run on goroutines.",
	}, relayStat(func(s relayloop.Stats) int64 { return s.Calls }))
	if reg != nil {
		reg.MustRegister(m.connections, m.active, m.bytes, m.sniff, m.dialErrors, m.listening, m.tunnels, m.panics, m.clients, bufBytes, relayConns, relayPipes, relayCalls,
			m.httpRequests, m.httpBackendConns)
		reg.MustRegister(m.udp.Collectors()...)
	}
	return m
}

// outcomes lists every connection outcome, in the order of the children an
// outcomeCounters holds.
var outcomes = [...]string{
	OutcomeForwarded, OutcomeNoRoute, OutcomeDialError, OutcomeRejected,
	OutcomeClientLimit, OutcomeProbeError, OutcomeIdleTimeout, OutcomeTLSError,
	OutcomeProxyError, OutcomeProxyUntrusted, OutcomeError, OutcomeTunnel,
	OutcomeHTTP,
}

// outcomeCounters are the children of portmux_connections_total of one
// listener and route (or of a listener before any route), one per
// outcome, each resolved the first time a connection ends with it: a
// connection's end then costs no hashing of four labels under the
// vector's lock (and no stack growth of the goroutine that ends it). A
// series appears once a connection has had its outcome, as before.
type outcomeCounters struct {
	vec                       *prometheus.CounterVec
	listener, route, protocol string
	children                  [len(outcomes)]atomic.Pointer[prometheus.Counter]
}

func newOutcomeCounters(vec *prometheus.CounterVec, listener, route, protocol string) *outcomeCounters {
	return &outcomeCounters{vec: vec, listener: listener, route: route, protocol: protocol}
}

// counter returns the child counting outcome.
func (o *outcomeCounters) counter(outcome string) prometheus.Counter {
	i := slices.Index(outcomes[:], outcome)
	if i < 0 {
		return o.vec.WithLabelValues(o.listener, o.route, o.protocol, outcome)
	}
	if c := o.children[i].Load(); c != nil {
		return *c
	}
	c := o.vec.WithLabelValues(o.listener, o.route, o.protocol, outcome)
	o.children[i].Store(&c)
	return c
}
