// Package snapshot is the dataplane's whole configuration as one immutable
// value: the listeners to bind, the routes each one tries, and the resolved
// endpoints, certificates and tokens they use.
//
// Both the controller (from Kubernetes objects) and `portmux serve` (from
// YAML files) compile into a Snapshot; the dataplane builds its router from it
// and never sees where it came from. Nothing in a Snapshot is changed after
// it is handed over: a new configuration is a new Snapshot, swapped in whole.
// Encode and Decode carry one to a dataplane in another process (`portmux
// dataplane`), keys and all.
package snapshot

import (
	"crypto/tls"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by compile when a PortMux leaves a field out. They live
// here so that every producer of snapshots agrees on them.
const (
	DefaultProbeTimeout   = 3 * time.Second
	DefaultMaxConnections = 10000
	DefaultDialTimeout    = 5 * time.Second
	// DefaultMaxProbeBytes is how much of a connection's start is buffered
	// while sniffing: room for the largest real ClientHello (post-quantum key
	// shares make them ~1.8 KB, with padding and many extensions up to a few
	// KB) with margin.
	DefaultMaxProbeBytes = 16 << 10
	// DefaultMaxConnectionsPerClient and DefaultMaxConnectionRatePerClient
	// (new connections per second) bound what one client address can take
	// of a listener: a few users behind one NAT stay well under them, one
	// host cannot fill maxConnections or make the dataplane handshake and
	// dial without end.
	DefaultMaxConnectionsPerClient    = 512
	DefaultMaxConnectionRatePerClient = 64
	// DefaultIdleTimeout closes forwarded connections and TCP tunnels that
	// carried nothing either way for this long, so that idle connections
	// cannot hold a listener's slots for ever. Long enough for an idle SSH
	// session over a coffee break; dead peers are found sooner by TCP
	// keepalive and tunnel pings.
	DefaultIdleTimeout = time.Hour
)

// Protocol is what a route's match recognises.
type Protocol string

// The protocols the dataplane sniffs; see the API for their meaning.
const (
	SSH       Protocol = "ssh"
	TLS       Protocol = "tls"
	HTTP      Protocol = "http"
	WebSocket Protocol = "websocket"
	OpenVPN   Protocol = "openvpn"
	SOCKS5    Protocol = "socks5"
	Bytes     Protocol = "bytes"
	Any       Protocol = "any"
	Timeout   Protocol = "timeout"

	// QUIC, WireGuard and DNS are recognised in a UDP session's first
	// datagrams only; OpenVPN, Bytes and Any serve both transports.
	QUIC      Protocol = "quic"
	WireGuard Protocol = "wireguard"
	DNS       Protocol = "dns"
)

// Transport is what a listener binds. The names are Gateway API's, which
// PortMux's API uses too.
type Transport string

const (
	// TCP listeners accept connections and sniff their first bytes.
	TCP Transport = "TCP"
	// UDP listeners read datagrams, keep a session per client address and
	// sniff the first datagrams of each session.
	UDP Transport = "UDP"
)

// FitsTransport reports whether a route matching p can serve a listener of
// transport t: what can be recognised in a stream's first bytes differs
// from what a first datagram shows.
func (p Protocol) FitsTransport(t Transport) bool {
	switch p {
	case OpenVPN, Bytes, Any:
		return true
	case QUIC, WireGuard, DNS:
		return t == UDP
	}
	return t != UDP
}

// DefaultUDPIdleTimeout is how long a UDP session lives without a datagram
// either way when its route sets no idleTimeout. UDP has no close: a
// session ends when its protocol would have given up. DNS is one exchange;
// QUIC's idle timeout is negotiated and 30 s in most stacks; WireGuard
// sends a keepalive at least every 25 s when configured to and rekeys every
// two minutes; OpenVPN pings every 10 s and restarts after 60 s to 120 s.
func DefaultUDPIdleTimeout(p Protocol) time.Duration {
	switch p {
	case DNS:
		return 5 * time.Second
	case QUIC:
		return 30 * time.Second
	case WireGuard:
		return 3 * time.Minute
	case OpenVPN:
		return 2 * time.Minute
	}
	return time.Minute
}

// Snapshot is everything the dataplane serves.
type Snapshot struct {
	// Listeners, sorted by Name. Names are unique.
	Listeners []Listener

	// MaxConnections caps connections across all listeners; 0 means no cap
	// beyond each listener's own.
	MaxConnections int
}

// Listener is a bound port (Address set) or an internal TLS-terminating stage
// that routes hand streams to (Address empty).
type Listener struct {
	// Name is unique in the snapshot, e.g. "namespace/portmux/listener". It
	// is the metrics and log label.
	Name string

	// Address is host:port to bind; empty for internal listeners.
	Address string

	// Transport is TCP (also when empty) or UDP. A UDP listener binds a
	// socket for datagrams; its routes forward sessions to backends in tcp
	// mode (the mode has no meaning for datagrams and is ignored), and it
	// has neither TLS nor ProxyProtocol. For a UDP listener the connection
	// limits below count sessions (a client address with its backend
	// socket), ProbeTimeout bounds how long a new session's datagrams are
	// held while they do not yet decide a route, and MaxProbeBytes how many
	// bytes they may add up to.
	Transport Transport

	// ProbeTimeout bounds how long the first bytes are waited for.
	ProbeTimeout time.Duration

	// MaxProbeBytes bounds how many bytes are buffered while sniffing.
	MaxProbeBytes int

	// MaxConnections caps the connections this listener holds at once.
	MaxConnections int

	// MaxConnectionsPerClient caps the connections one client (an IPv4
	// address or an IPv6 /64) holds on this listener; 0: no cap.
	MaxConnectionsPerClient int

	// MaxConnectionRatePerClient caps the new connections per second of one
	// client, with a burst of twice that; 0: no cap.
	MaxConnectionRatePerClient int

	// ProxyProtocol, when set, requires a PROXY v1/v2 header on every
	// connection, from a peer it trusts.
	ProxyProtocol *ProxyProtocol

	// TLS, when set, terminates TLS before sniffing.
	TLS *TLSConfig

	// Routes in the order they are tried.
	Routes []Route
}

// ProxyProtocol says whose PROXY headers a listener believes. A header names
// the client, so a peer that may send one can claim any client address.
type ProxyProtocol struct {
	// TrustedCIDRs are the networks whose peers may connect; a connection
	// from anywhere else is refused when accepted. IPv4 networks match
	// IPv4 peers, also those a dual-stack socket reports as IPv4-mapped
	// IPv6 addresses. Empty: nobody.
	TrustedCIDRs []netip.Prefix
}

// Internal reports whether the listener binds no port and only receives
// streams from routes.
func (l *Listener) Internal() bool { return l.Address == "" }

// UDP reports whether the listener serves datagrams.
func (l *Listener) UDP() bool { return l.Transport == UDP }

// TLSConfig is what a terminating listener serves.
type TLSConfig struct {
	// Certificates, the first one the default. Each is chosen by the names
	// in its leaf (exact names before wildcards).
	Certificates []Certificate

	// ALPN protocols offered, most preferred first.
	ALPN []string
}

// Certificate is one parsed key pair and where it came from.
type Certificate struct {
	// Source names the Secret (or file) for logs and findings.
	Source string

	// Certificate is the parsed chain and key; Leaf is set.
	Certificate *tls.Certificate
}

// Route is one entry of a listener's ordered route table.
type Route struct {
	// Name is the metrics and log label, e.g. "namespace/portmux/route".
	Name string

	// Match decides whether the route takes a connection.
	Match Match

	// IdleTimeout closes what the route carries after this long without a
	// byte either way; 0: the default of its kind (DefaultIdleTimeout, the
	// dataplane's HTTP keep-alive default, the tunnel's UDP default, or
	// DefaultUDPIdleTimeout for sessions of a UDP listener).
	IdleTimeout time.Duration

	// Exactly one of Backend, Listener and Tunnel is set.
	Backend *Backend
	// Listener is the Name of the internal listener to hand the stream to.
	Listener string
	Tunnel   *Tunnel
}

// Match is what a route recognises in a connection's first bytes. Lists are
// alternatives; an empty list does not constrain.
type Match struct {
	Protocol Protocol

	// SNI names (lowercase; "*.example.com" matches one label,
	// "**.example.com" one or more) and ALPN
	// protocols, for TLS and QUIC.
	SNI  []string
	ALPN []string

	// Host names (lowercase, wildcards as SNI) and a path prefix matched at
	// a segment boundary, for HTTP and WebSocket.
	Host       []string
	PathPrefix string

	// Prefix or Regex, for Bytes (on UDP, of the first datagram).
	Prefix []byte
	Regex  *regexp.Regexp
}

// Mode is how a backend receives the connection.
type Mode string

const (
	// ModeTCP forwards the bytes untouched.
	ModeTCP Mode = "tcp"
	// ModeHTTP reverse-proxies HTTP/1.1 requests, adding X-Forwarded-*.
	ModeHTTP Mode = "http"
)

// Backend is a set of endpoints that take the same traffic.
type Backend struct {
	// Name identifies the backend in logs and metrics ("ns/svc:port" or the
	// address).
	Name string

	// Endpoints are host:port addresses, ready ones only. Connections are
	// spread over them; a failed dial tries the next.
	Endpoints []string

	// Mode is tcp (default) or http.
	Mode Mode

	// ProxyProtocol is the PROXY header version sent first: 0 (none), 1 or 2.
	ProxyProtocol int

	// DialTimeout bounds each dial attempt.
	DialTimeout time.Duration
}

// Tunnel is a WebSocket tunnel endpoint.
type Tunnel struct {
	// Token, when not empty, must be presented as a bearer token.
	Token []byte

	// Allow lists the only targets a client may ask for.
	Allow []TunnelTarget

	// AllowedOrigins are the browser origins ("scheme://host[:port]") whose
	// pages may open tunnels. A request with an Origin header comes from a
	// browser, on behalf of a page: it is refused unless its origin is
	// listed (compared without case, default ports implied). Empty: every
	// request with an Origin is refused. Requests without one (non-browser
	// clients) are not concerned.
	AllowedOrigins []string
}

// TunnelTarget is one destination a tunnel client may reach.
type TunnelTarget struct {
	// Names are what clients ask for ("sshd:22", "sshd:ssh", or the
	// address "10.0.0.1:22"); any of them selects this target.
	Names []string

	// UDP is true for datagram targets, false for streams.
	UDP bool

	// Backend holds the endpoints to dial.
	Backend Backend
}

// CanonicalOrigin returns an origin (RFC 6454: "scheme://host[:port]",
// nothing else) in one spelling, so that equal origins compare equal:
// scheme and host in lower case, the port left out when it is the
// scheme's default. It reports false for anything else, such as the
// opaque origin "null" or a URL with a path. It is the one definition of
// an origin: compile validates allowedOrigins with it, and the tunnel
// handler compares a request's Origin with the list through it.
func CanonicalOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Hostname() == "" || u.Opaque != "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.HasSuffix(u.Host, ":") {
		return "", false
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 literal
	}
	port := u.Port()
	if port == "" {
		return scheme + "://" + host, true
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", false
	}
	if port = strconv.Itoa(n); port == defaultPort(scheme) {
		return scheme + "://" + host, true
	}
	return scheme + "://" + host + ":" + port, true
}

// defaultPort is the port an origin of scheme implies when it names none.
func defaultPort(scheme string) string {
	switch scheme {
	case "http", "ws":
		return "80"
	case "https", "wss":
		return "443"
	}
	return ""
}
