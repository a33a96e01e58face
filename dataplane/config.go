package dataplane

import (
	"bytes"
	"cmp"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portmux/portmux/dataplane/clientlimit"
	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
)

// config is a snapshot made ready to serve: TLS configurations built,
// dialers and metric children resolved. It is immutable once built; a
// connection keeps the config it was accepted with.
type config struct {
	snap      *snapshot.Snapshot
	listeners map[string]*listenerConfig
	// byKey maps a bound socket's key to its listener; Apply fills it in.
	byKey map[string]*listenerConfig
}

type listenerConfig struct {
	*snapshot.Listener
	// own is what Listener points at: the snapshot's listener, copied.
	own    snapshot.Listener
	tls    *tls.Config
	routes []routeConfig
	sniff  prometheus.Observer
	// active is the listener's child of portmux_active_connections.
	active prometheus.Gauge
	// ended counts connections that end before a route takes them.
	ended *outcomeCounters
	// clientLimits are the listener's per-client caps.
	clientLimits clientlimit.Limits
	// clientSpeaksFirst: no connection is routed before the client has
	// sent something (or gone silent for the probe timeout), so the
	// kernel may hold a connection until its first bytes (deferAccept).
	clientSpeaksFirst bool
}

type routeConfig struct {
	*snapshot.Route
	// lc is the listener whose routes this is one of.
	lc *listenerConfig
	// act carries the connections the route takes.
	act      action
	dialer   *forward.Dialer
	up, down prometheus.Counter
	// ended counts the connections the route took, by outcome, when the
	// listener that accepted them is lc (not one that handed them to lc).
	ended *outcomeCounters
	// transport pools connections to a backend in http mode.
	transport *backendTransport
	// tunnel serves a tunnel route's handshakes and tunnels.
	tunnel http.Handler
	// idle is the idle timeout of a forwarded connection; 0: none.
	idle time.Duration
	// endpoints are a tcp-mode backend's endpoints as addresses, for the
	// relay loops; nil for other routes and when one is a host name.
	endpoints *[]netip.AddrPort
	// httpEndpoints are an http-mode backend's, for the loops' exchanges.
	httpEndpoints *[]netip.AddrPort
	// proxied counts the requests of lc's connections the route proxied,
	// looked up on the first (proxiedCounter): the vector's lookup hashes
	// three labels per request, 1 % of an HTTP/1.1 request's CPU.
	// (A pointer: routeConfigs are copied while they are built.)
	proxied *atomic.Pointer[prometheus.Counter]
}

// proxiedCounter is rc's child of m.httpRequests for its listener and
// RequestProxied.
func (rc *routeConfig) proxiedCounter(m *Metrics) prometheus.Counter {
	if rc.proxied == nil {
		return m.httpRequests.WithLabelValues(rc.lc.Name, rc.Name, RequestProxied)
	}
	if c := rc.proxied.Load(); c != nil {
		return *c
	}
	c := m.httpRequests.WithLabelValues(rc.lc.Name, rc.Name, RequestProxied)
	rc.proxied.Store(&c)
	return c
}

// configShared is what every configuration's compiled listeners share
// with the Server: its metrics, TLS session tickets, socket settings,
// tunnel buffers and idle count.
type configShared struct {
	m       *Metrics
	tickets *sessionTickets
	// keepAlive is the TCP keepalive of dialled sockets (Server.keepAlive).
	keepAlive time.Duration
	// idle is the idle timeout of routes that set none
	// (Options.IdleTimeout: negative for never).
	idle time.Duration
	// maxHead bounds the response heads of http-mode backends.
	maxHead int
	// bufs are the copy buffers the tunnels share.
	bufs *tunnel.Buffers
	// idleConns counts the http-mode pools' idle connections.
	idleConns *idleConns
}

// newConfig builds the configuration of snap. A listener that prev (nil:
// none) compiled from the same declaration (sameListener) keeps its
// compiled configuration, the very object, with its routes, TLS
// configuration and backend pools: a delta of one listener costs one
// listener's compilation, not the snapshot's (issue 19).
func newConfig(snap *snapshot.Snapshot, prev *config, sh configShared) *config {
	m, idle := sh.m, sh.idle
	c := &config{snap: snap, listeners: make(map[string]*listenerConfig, len(snap.Listeners))}
	for i := range snap.Listeners {
		l := &snap.Listeners[i]
		if prev != nil {
			if old := prev.listeners[l.Name]; old != nil && sameListener(old.Listener, l) {
				c.listeners[l.Name] = old
				continue
			}
		}
		lc := &listenerConfig{
			Listener: l, sniff: m.sniff.WithLabelValues(l.Name), clientSpeaksFirst: clientSpeaksFirst(l),
			active: m.active.WithLabelValues(l.Name), ended: newOutcomeCounters(m.connections, l.Name, "", ""),
			clientLimits: clientlimit.Limits{
				MaxConnections: l.MaxConnectionsPerClient, Rate: l.MaxConnectionRatePerClient,
				// A client's HTTP/2 streams in flight, over all its
				// connections, get as many as its connections.
				MaxRequests: l.MaxConnectionsPerClient,
			},
		}
		// A copy of its own: a configuration reused by later snapshots
		// does not keep this one's listeners alive. The routes are the
		// snapshot's.
		lc.own = *l
		lc.Listener = &lc.own
		l = lc.Listener
		if l.TLS != nil {
			lc.tls = serverTLSConfig(l.TLS)
			sh.tickets.bind(lc.tls, l.Name)
		}
		for j := range l.Routes {
			r := &l.Routes[j]
			rc := routeConfig{
				Route: r,
				lc:    lc,
				act:   actionOf(r),
				up:    m.bytes.WithLabelValues(l.Name, r.Name, "up"),
				down:  m.bytes.WithLabelValues(l.Name, r.Name, "down"),
				ended: newOutcomeCounters(m.connections, l.Name, r.Name, string(r.Match.Protocol)),
				idle:  cmp.Or(r.IdleTimeout, max(idle, 0)),
			}
			if r.Backend != nil {
				rc.dialer = &forward.Dialer{Timeout: r.Backend.DialTimeout, KeepAlive: sh.keepAlive}
				if r.Backend.Mode != snapshot.ModeHTTP {
					rc.endpoints = loopEndpoints(r.Backend.Endpoints)
				}
				if r.Backend.Mode == snapshot.ModeHTTP {
					rc.transport = newHTTPTransport(r.Backend.Endpoints, rc.dialer, sh.maxHead, sh.idleConns)
					rc.proxied = new(atomic.Pointer[prometheus.Counter])
					rc.httpEndpoints = loopEndpoints(r.Backend.Endpoints)
				}
			}
			if r.Tunnel != nil {
				rc.tunnel = newTunnelHandler(r, idle, sh.bufs)
			}
			lc.routes = append(lc.routes, rc)
		}
		c.listeners[l.Name] = lc
	}
	return c
}

// sameListener reports whether a and b declare the same listener as far as
// a compiled configuration can tell without comparing its contents: equal
// settings, and the very same routes, TLS and PROXY settings (one backing
// array, one pointer). A delta patched into a snapshot copies the
// listeners it does not touch this way; a decoded or compiled snapshot
// has new ones, which are compiled again. So a caller must not change a
// snapshot's routes in place and apply it again.
func sameListener(a, b *snapshot.Listener) bool {
	return a.Name == b.Name && a.Address == b.Address && a.Transport == b.Transport &&
		a.ProbeTimeout == b.ProbeTimeout && a.MaxProbeBytes == b.MaxProbeBytes &&
		a.MaxConnections == b.MaxConnections && a.MaxConnectionsPerClient == b.MaxConnectionsPerClient &&
		a.MaxConnectionRatePerClient == b.MaxConnectionRatePerClient &&
		a.ProxyProtocol == b.ProxyProtocol && a.TLS == b.TLS &&
		len(a.Routes) == len(b.Routes) && unsafe.SliceData(a.Routes) == unsafe.SliceData(b.Routes)
}

// probeDeadline is when a probe of the listener's that starts now ends:
// its probeTimeout, or the default.
func (lc *listenerConfig) probeDeadline() time.Time {
	probeTimeout := lc.ProbeTimeout
	if probeTimeout <= 0 {
		probeTimeout = snapshot.DefaultProbeTimeout
	}
	return time.Now().Add(probeTimeout)
}

// trusted reports whether peer may connect to the listener: anyone, unless
// the listener reads PROXY headers, which only peers in its trusted
// networks may send (any other could claim any client address). An
// IPv4-mapped IPv6 peer is matched as IPv4, and an IPv6 zone is ignored.
func (lc *listenerConfig) trusted(peer netip.Addr) bool {
	if lc.ProxyProtocol == nil {
		return true
	}
	if !peer.IsValid() {
		return false
	}
	ip := peer.Unmap().WithZone("")
	for _, p := range lc.ProxyProtocol.TrustedCIDRs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// closeIdle drops the idle pooled connections of a configuration that new
// connections no longer use, except the pools that next (nil: none)
// reused: its connections keep them.
func (c *config) closeIdle(next *config, loops *relayloop.Set) {
	for name, l := range c.listeners {
		if next != nil && next.listeners[name] == l {
			continue // reused
		}
		for _, r := range l.routes {
			if r.transport != nil {
				r.transport.CloseIdleConnections()
				if loops != nil {
					loops.CloseIdle(r.transport) // the pool key of its exchanges
				}
			}
		}
	}
}

// sessionTickets encrypts the TLS session tickets (RFC 5077, RFC 8446
// §4.6.1) of every terminating listener of a Server, across snapshots. Each
// snapshot builds new tls.Configs, and a tls.Config's own ticket keys die
// with it: a client holding a ticket would pay a full handshake after every
// reload, and the controller applies one on every EndpointSlice change.
// The keys are those of one tls.Config that never handshakes, rotated by
// crypto/tls (a new key every day, each valid for a week). A ticket is
// bound to the listener that issued it: it does not resume elsewhere.
type sessionTickets struct {
	keys *tls.Config
}

func newSessionTickets() *sessionTickets { return &sessionTickets{keys: &tls.Config{}} }

// bind makes cfg issue and accept tickets tagged with the listener's name.
func (t *sessionTickets) bind(cfg *tls.Config, listener string) {
	sum := sha256.Sum256([]byte(listener))
	tag := sum[:8:8]
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ticket, err := t.keys.EncryptTicket(cs, ss)
		if err != nil {
			return nil, err
		}
		return append(tag, ticket...), nil // tag has no spare capacity: a new slice
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ticket, ok := bytes.CutPrefix(identity, tag)
		if !ok {
			return nil, nil // another listener's, or not ours: a full handshake
		}
		return t.keys.DecryptTicket(ticket, cs)
	}
}

// serverTLSConfig chooses certificates by SNI: an exact name in a leaf's
// DNS names first, then a wildcard covering it, then the first certificate.
// When several certificates carry the name (an ECDSA and an RSA one, as
// haproxy and nginx serve them), ECDSA and Ed25519 ones are tried first and
// the first the client can use wins: clients that accept ECDSA get the
// cheaper handshake (an RSA 2048 signature costs Go's crypto tens of times
// an ECDSA P-256 one). Without a name that matches, the first certificate
// the client can use is the default. TLS 1.2 is the minimum, with
// intermediateSuites only.
func serverTLSConfig(t *snapshot.TLSConfig) *tls.Config {
	exact := map[string][]*tls.Certificate{}
	wild := map[string][]*tls.Certificate{}
	var def []*tls.Certificate
	for _, c := range t.Certificates {
		if c.Certificate == nil {
			continue
		}
		def = append(def, c.Certificate)
		if c.Certificate.Leaf == nil {
			continue
		}
		for _, n := range c.Certificate.Leaf.DNSNames {
			n = strings.ToLower(n)
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				wild[rest] = append(wild[rest], c.Certificate)
			} else {
				exact[n] = append(exact[n], c.Certificate)
			}
		}
	}
	for _, byName := range []map[string][]*tls.Certificate{exact, wild} {
		for _, cs := range byName {
			slices.SortStableFunc(cs, func(a, b *tls.Certificate) int { return rsaLast(a) - rsaLast(b) })
		}
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: intermediateSuites,
		NextProtos:   t.ALPN,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
			if cs, ok := exact[name]; ok {
				return supported(hello, cs), nil
			}
			if dot := strings.IndexByte(name, '.'); dot > 0 {
				if cs, ok := wild[name[dot+1:]]; ok {
					return supported(hello, cs), nil
				}
			}
			if len(def) == 0 {
				return nil, errNoCertificate
			}
			// None carries the name: ask only whether the client can
			// use the key (SupportsCertificate also checks the name).
			anyName := *hello
			anyName.ServerName = ""
			return supported(&anyName, def), nil
		},
	}
}

// intermediateSuites are the TLS 1.2 cipher suites of Mozilla's
// "intermediate" server profile: ECDHE key exchange (forward secrecy) and
// an AEAD cipher only. Go also enables ECDHE with AES-CBC-SHA for TLS 1.2,
// which scanners report as obsolete CBC and potentially vulnerable to
// Lucky 13; every client that speaks TLS 1.2 has one of these (TLS 1.3
// suites are not configurable and are all AEAD). The order is Go's own:
// it prefers AES-GCM where the CPU has AES instructions and ChaCha20
// elsewhere, whatever the list says.
var intermediateSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// rsaLast orders RSA keys after the others.
func rsaLast(c *tls.Certificate) int {
	if _, ok := c.PrivateKey.(*rsa.PrivateKey); ok {
		return 1
	}
	return 0
}

// supported returns the first of cs the client can use, or the first when
// it can use none (the handshake then fails as it would have). A single
// candidate is returned without asking.
func supported(hello *tls.ClientHelloInfo, cs []*tls.Certificate) *tls.Certificate {
	if len(cs) > 1 {
		for _, c := range cs {
			if hello.SupportsCertificate(c) == nil {
				return c
			}
		}
	}
	return cs[0]
}

// clientSpeaksFirst reports whether every way through the listener starts
// with bytes from the client: a TLS handshake or a PROXY header to read, or
// routes that need data before they match. A `timeout` route serves
// clients that wait for the server, and an `any` route first matches at
// once; with either, connections must be accepted while still silent.
func clientSpeaksFirst(l *snapshot.Listener) bool {
	if l.TLS != nil || l.ProxyProtocol != nil {
		return true
	}
	for i, r := range l.Routes {
		if r.Match.Protocol == snapshot.Timeout || (i == 0 && r.Match.Protocol == snapshot.Any) {
			return false
		}
	}
	return true
}
