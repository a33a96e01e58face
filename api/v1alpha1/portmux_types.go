package v1alpha1

import (
	"bytes"
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Protocol is what a route recognises in the first bytes a client sends.
//
// +kubebuilder:validation:Enum=ssh;tls;http;websocket;openvpn;socks5;bytes;any;timeout;quic;wireguard;dns
type Protocol string

// The protocols a route can match. They are sniffed from the client's first
// bytes; the bytes read while sniffing are replayed to the backend.
const (
	// ProtocolSSH matches an SSH identification line (RFC 4253 §4.2).
	ProtocolSSH Protocol = "ssh"
	// ProtocolTLS matches a TLS ClientHello, optionally by SNI and ALPN.
	ProtocolTLS Protocol = "tls"
	// ProtocolHTTP matches an HTTP/1.x request, optionally by Host and path.
	ProtocolHTTP Protocol = "http"
	// ProtocolWebSocket matches an HTTP/1.1 WebSocket Upgrade request (RFC 6455).
	ProtocolWebSocket Protocol = "websocket"
	// ProtocolOpenVPN matches OpenVPN's client hard reset: over TCP (with
	// its length prefix) on a TCP listener, the bare packet on a UDP one.
	ProtocolOpenVPN Protocol = "openvpn"
	// ProtocolSOCKS5 matches a SOCKS5 greeting (RFC 1928).
	ProtocolSOCKS5 Protocol = "socks5"
	// ProtocolBytes matches a literal prefix or a regular expression: of a
	// connection's first bytes, or of a UDP session's first datagram.
	ProtocolBytes Protocol = "bytes"
	// ProtocolAny matches every connection or UDP session: the catch-all
	// route.
	ProtocolAny Protocol = "any"
	// ProtocolTimeout matches a client that sent nothing within the
	// listener's probeTimeout: server-speaks-first protocols.
	ProtocolTimeout Protocol = "timeout"
	// ProtocolQUIC matches a QUIC Initial (RFC 9000, versions 1 and 2),
	// optionally by the SNI and ALPN of the ClientHello inside it. UDP
	// listeners only.
	ProtocolQUIC Protocol = "quic"
	// ProtocolWireGuard matches a WireGuard handshake initiation. UDP
	// listeners only.
	ProtocolWireGuard Protocol = "wireguard"
	// ProtocolDNS matches a DNS query (RFC 1035). UDP listeners only.
	ProtocolDNS Protocol = "dns"
)

// BackendMode says whether a backend receives the client's bytes untouched or
// through an HTTP reverse proxy.
//
// +kubebuilder:validation:Enum=tcp;http
type BackendMode string

const (
	// BackendModeTCP forwards the bytes as they are, sniffed bytes included:
	// the route is decided once per connection, by its first bytes.
	BackendModeTCP BackendMode = "tcp"
	// BackendModeHTTP runs an HTTP reverse proxy that decides the route of
	// every request again and adds X-Forwarded-For, X-Forwarded-Proto,
	// X-Forwarded-Host, X-Real-IP and Forwarded.
	BackendModeHTTP BackendMode = "http"
)

// ProxyProtocolVersion selects the PROXY protocol header sent to a backend.
//
// +kubebuilder:validation:Enum=v1;v2
type ProxyProtocolVersion string

const (
	// ProxyProtocolV1 is the human-readable header ("PROXY TCP4 …\r\n").
	ProxyProtocolV1 ProxyProtocolVersion = "v1"
	// ProxyProtocolV2 is the binary header.
	ProxyProtocolV2 ProxyProtocolVersion = "v2"
)

// TransportProtocol is the transport of a listener, or the one a tunnel
// carries to its target. The names are those of Kubernetes Service ports
// and Gateway API listeners.
//
// +kubebuilder:validation:Enum=TCP;UDP
type TransportProtocol string

const (
	// TransportTCP carries a byte stream.
	TransportTCP TransportProtocol = "TCP"
	// TransportUDP carries datagrams: one WebSocket message each in a
	// tunnel, a session per client address on a listener.
	TransportUDP TransportProtocol = "UDP"
)

// PortMuxSpec declares the listeners a PortMux binds and the routes that
// decide, from the first bytes of each connection, where it goes.
//
// +kubebuilder:validation:XValidation:rule="!has(self.routes) || self.routes.all(r, !has(r.listeners) || r.listeners.all(l, self.listeners.exists(x, x.name == l)))",message="each name in a route's listeners must be a listener declared in spec.listeners: add the listener or fix the name",reason=FieldValueInvalid,fieldPath=".routes"
// +kubebuilder:validation:XValidation:rule="!has(self.routes) || self.routes.all(r, !has(r.listener) || self.listeners.exists(x, x.name == r.listener && !has(x.port) && !has(x.parentRef)))",message="a route's listener action must name an internal listener: one declared in spec.listeners without a port",reason=FieldValueInvalid,fieldPath=".routes"
// +kubebuilder:validation:XValidation:rule="self.listeners.all(a, !has(a.port) || self.listeners.exists_one(b, has(b.port) && b.port == a.port && b.protocol == a.protocol))",message="two listeners have the same port and protocol: give each its own port, or make one TCP and the other UDP",reason=FieldValueInvalid,fieldPath=".listeners"
// +kubebuilder:validation:XValidation:rule="!has(self.routes) || self.routes.all(r, !has(r.listeners) || r.listeners.all(n, self.listeners.all(l, l.name != n || ((l.protocol == 'UDP') == (r.match.protocol in ['quic', 'wireguard', 'dns']) || r.match.protocol in ['openvpn', 'bytes', 'any']))))",message="a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both",reason=FieldValueInvalid,fieldPath=".routes"
// +kubebuilder:validation:XValidation:rule="!has(self.routes) || self.routes.all(r, has(r.listeners) || self.listeners.exists(l, (has(l.port) || has(l.parentRef)) && ((l.protocol == 'UDP') == (r.match.protocol in ['quic', 'wireguard', 'dns']) || r.match.protocol in ['openvpn', 'bytes', 'any'])))",message="a route that leaves out listeners attaches to every listener with a port whose protocol carries its match.protocol, and none does: add a UDP listener for quic, wireguard and dns, a TCP one for the others, or name the route's listeners",reason=FieldValueInvalid,fieldPath=".routes"
// +kubebuilder:validation:XValidation:rule="!has(self.routes) || self.routes.all(r, !has(r.backend) || !has(r.backend.proxyProtocol) || (has(r.listeners) ? !r.listeners.exists(n, self.listeners.exists(l, l.name == n && l.protocol == 'UDP')) : !(r.match.protocol in ['quic', 'wireguard', 'dns', 'openvpn', 'bytes', 'any'] && self.listeners.exists(l, has(l.port) && l.protocol == 'UDP'))))",message="backend.proxyProtocol applies only to routes on TCP listeners: UDP sessions reach their backend without a PROXY header; name the route's TCP listeners in listeners",reason=FieldValueInvalid,fieldPath=".routes"
type PortMuxSpec struct {
	// listeners are the entry points of this PortMux. A listener with a port
	// binds it on the dataplane; a listener without a port is internal: it
	// terminates TLS for streams that a route hands to it, then sniffs what is
	// inside like any other listener. Names are unique.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	Listeners []Listener `json:"listeners"`

	// routes decide where a connection goes. For each listener, the routes
	// attached to it (those that name it, and on a listener with a port those
	// that name no listener) are tried in the order written here; the first
	// whose match fits the client's first bytes wins. A connection no route
	// matches is closed. Names are unique.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	Routes []Route `json:"routes,omitempty"`
}

// Listener is a port that the dataplane binds, or an internal TLS-terminating
// stage that routes hand connections to.
//
// +kubebuilder:validation:XValidation:rule="has(self.port) || has(self.parentRef) || has(self.tls) || self.protocol == 'UDP'",message="an internal listener (one without port) must set tls: it terminates TLS for streams a route hands to it; set port to bind a port instead",fieldPath=".port",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.port) || !has(self.parentRef)",message="port and parentRef are mutually exclusive: a listener binds a port of its own, or shares the port of the Gateway listener parentRef names",fieldPath=".parentRef"
// +kubebuilder:validation:XValidation:rule="!has(self.parentRef) || (!has(self.tls) && !has(self.proxyProtocol) && self.protocol != 'UDP')",message="a listener with parentRef takes the TCP connections of a Gateway listener as they come: it sets neither tls, proxyProtocol nor protocol UDP",fieldPath=".parentRef"
// +kubebuilder:validation:XValidation:rule="has(self.port) || has(self.parentRef) || !has(self.proxyProtocol) || self.protocol == 'UDP'",message="proxyProtocol applies only to a listener with a port: an internal listener receives streams from other listeners, never from a load balancer",fieldPath=".proxyProtocol"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || has(self.port)",message="a UDP listener needs a port: internal listeners take the TLS streams routes hand them, and only TCP listeners are internal",fieldPath=".port",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || !has(self.tls)",message="tls applies only to TCP listeners: a UDP listener forwards datagrams as they are (QUIC carries its own TLS, which the backend terminates)",fieldPath=".tls"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'UDP' || !has(self.proxyProtocol)",message="proxyProtocol applies only to TCP listeners: a PROXY header starts a stream, and datagrams carry none",fieldPath=".proxyProtocol"
type Listener struct {
	// name identifies the listener in routes and in status. A DNS label.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// port is the port the dataplane binds for this listener, of its
	// protocol. Leave it out for an internal listener, which only receives
	// streams that a route with the listener action hands to it. Ports below
	// 1024 need the NET_BIND_SERVICE capability, which the PortMux pod has.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`

	// parentRef, instead of port, attaches the listener to a Gateway
	// listener (Gateway API): its routes then share that listener's port
	// with the Gateway's routes. TLS ClientHellos whose SNI a TLSRoute (or
	// a listener hostname) of the Gateway claims go to the Gateway; every
	// other connection is tried against the routes of the attached
	// PortMuxes (the oldest PortMux first), and on a TCP listener the
	// TCPRoute takes what none of them matched. The Gateway listener must
	// be TLS Passthrough or TCP, list {group: portmux.dev, kind: PortMux}
	// in allowedRoutes.kinds and allow this namespace in
	// allowedRoutes.namespaces; status says whether it does (Accepted,
	// NotAllowedByListeners, NoMatchingParent). The listener's limits
	// (probeTimeout, maxConnections, per-client caps) are the Gateway
	// port's, not its own.
	//
	// +optional
	ParentRef *GatewayListenerRef `json:"parentRef,omitempty"`

	// protocol is the listener's transport: TCP (the default) accepts
	// connections and sniffs their first bytes; UDP reads datagrams, keeps a
	// session per client address and port, and sniffs the session's first
	// datagrams: QUIC (by SNI and ALPN), WireGuard, DNS, OpenVPN, a bytes
	// prefix or regex, or any. A TCP and a UDP listener may share a port
	// number (HTTPS and HTTP/3 on 443); two listeners of one protocol may
	// not. A UDP listener has a port, and neither tls nor proxyProtocol;
	// its connection limits count sessions, and probeTimeout bounds how
	// long a new session's datagrams wait for a route to be decided. The
	// name is Gateway API's and Kubernetes Services'.
	//
	// +optional
	// +kubebuilder:default=TCP
	Protocol TransportProtocol `json:"protocol,omitempty"`

	// probeTimeout is how long the dataplane waits for the client's first
	// bytes before it decides with what it has; a client that sent nothing by
	// then matches a route with protocol timeout. Default 3s, between 10ms
	// and 60s. A longer timeout lets slow clients through but holds a
	// connection slot for that long per silent client.
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m))+$') || (duration(self) >= duration('10ms') && duration(self) <= duration('60s'))",message="probeTimeout must be between 10ms and 60s"
	ProbeTimeout *metav1.Duration `json:"probeTimeout,omitempty"`

	// maxConnections caps the connections this listener holds at once
	// (sniffing or forwarding). Past it, new connections are closed at once so
	// one listener cannot starve the others. Default 10000. Backend
	// connections that http mode opens (or keeps pooled) for this listener's
	// clients count too; a request that would need one more gets 503.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// maxConnectionsPerClient caps the connections one client holds on this
	// listener at once, so that one address cannot take every slot of
	// maxConnections. A client is an IPv4 address or an IPv6 /64 (what one
	// subscriber usually gets), the PROXY header's source on a listener with
	// proxyProtocol. Past it, the client's new connections are closed at once
	// (outcome client_limit). In http mode it also caps the client's
	// HTTP/2 streams in flight over all its connections, each of which may
	// hold a backend connection: past it, a stream is answered 503. Default
	// 512. Clients must reach the pod with their own addresses: behind a
	// Service with externalTrafficPolicy Cluster, every client of a node
	// shares the node's address.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxConnectionsPerClient *int32 `json:"maxConnectionsPerClient,omitempty"`

	// maxConnectionRatePerClient caps the new connections per second one
	// client may open on this listener (a token bucket that also allows a
	// burst of twice the rate), which bounds the handshakes and dials one
	// address can make the dataplane do. Past it, new connections are closed
	// at once (outcome client_limit). Default 64. Clients are counted as for
	// maxConnectionsPerClient.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxConnectionRatePerClient *int32 `json:"maxConnectionRatePerClient,omitempty"`

	// proxyProtocol, when set, requires every connection to start with a
	// PROXY protocol v1 or v2 header from an outer load balancer in its
	// trustedCIDRs; the client address the header carries is the one
	// logged and passed on. A connection from any other address is refused
	// as soon as it is accepted, and one without a valid header is refused.
	//
	// +optional
	ProxyProtocol *ListenerProxyProtocol `json:"proxyProtocol,omitempty"`

	// tls makes the listener terminate TLS with certificates from Secrets and
	// sniff the decrypted stream. On a listener with a port every connection
	// is terminated; an internal listener terminates what routes hand to it.
	// Mozilla's intermediate profile: TLS 1.3, and TLS 1.2 with ECDHE and
	// AES-GCM or ChaCha20-Poly1305 only.
	//
	// +optional
	TLS *ListenerTLS `json:"tls,omitempty"`
}

// GatewayListenerRef names a Gateway API Gateway and, optionally, one of
// its listeners, as a Gateway API route's parentRef does.
type GatewayListenerRef struct {
	// group of the parent: gateway.networking.k8s.io, the default.
	//
	// +optional
	// +kubebuilder:default=gateway.networking.k8s.io
	// +kubebuilder:validation:Enum=gateway.networking.k8s.io
	Group string `json:"group,omitempty"`

	// kind of the parent: Gateway, the default.
	//
	// +optional
	// +kubebuilder:default=Gateway
	// +kubebuilder:validation:Enum=Gateway
	Kind string `json:"kind,omitempty"`

	// namespace of the Gateway; the PortMux's namespace when left out.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`

	// name of the Gateway.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// sectionName is the name of the Gateway listener; left out, every
	// listener of the Gateway that accepts the PortMux.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SectionName string `json:"sectionName,omitempty"`
}

// ListenerProxyProtocol says that a listener's connections start with a
// PROXY protocol header, and whose header is believed. The header names the
// client; whoever can send it can claim any client address, which logs,
// X-Forwarded-For and PROXY headers to backends then repeat.
type ListenerProxyProtocol struct {
	// trustedCIDRs are the networks of the load balancers that send the
	// header, e.g. [10.0.0.0/8]. A connection from any other address is
	// refused when it is accepted, before anything is read: pods in the
	// cluster reach the dataplane's pod IP directly, not through the load
	// balancer. An IPv4 peer matches IPv4 networks only, also when a
	// dual-stack socket reports it as an IPv4-mapped IPv6 address; to
	// trust every peer that can reach the port, write both 0.0.0.0/0 and
	// ::/0.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	TrustedCIDRs []CIDR `json:"trustedCIDRs"`
}

// UnmarshalJSON also reads the boolean proxyProtocol of earlier versions of
// this API, which the API server may still hold for objects created
// before it changed: decoding them must not fail, or the controller could
// read no PortMux at all. true or false decodes as a header with no trusted
// networks, which validation refuses with a message that says what to
// write instead; the object gets a condition, the others are served.
func (p *ListenerProxyProtocol) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "true", "false":
		*p = ListenerProxyProtocol{}
		return nil
	}
	type plain ListenerProxyProtocol // without this method
	return json.Unmarshal(b, (*plain)(p))
}

// CIDR is an IPv4 or IPv6 network in CIDR notation, written as its network
// address: 10.0.0.0/8, 192.0.2.7/32, 2001:db8::/32.
//
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",message="must be written as its network address: the bits past the prefix length must be zero (10.0.0.0/8, not 10.1.2.3/8)"
type CIDR string

// ListenerTLS holds what a listener needs to terminate TLS.
type ListenerTLS struct {
	// certificateRefs name kubernetes.io/tls Secrets in the PortMux's
	// namespace. The certificate is chosen by the client's SNI: exact names
	// first, then wildcards; the first Secret is the default for clients that
	// send no SNI or an unknown one. A changed Secret serves new handshakes
	// at once; open connections keep theirs.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	CertificateRefs []SecretRef `json:"certificateRefs"`

	// alpn lists the application protocols offered to clients during the
	// handshake (RFC 7301), most preferred first, e.g. [h2, http/1.1]. Empty:
	// no ALPN. A client that negotiated h2 speaks HTTP/2 inside: a route
	// with backend mode http serves it and proxies each stream as HTTP/1.1;
	// with mode tcp the decrypted bytes go as they are, so that backend
	// must speak cleartext HTTP/2 (h2c).
	//
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	ALPN []string `json:"alpn,omitempty"`
}

// SecretRef names a Secret in the PortMux's own namespace: a PortMux can never
// read Secrets elsewhere.
type SecretRef struct {
	// name of the Secret.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// SecretKeyRef names one key of a Secret in the PortMux's own namespace.
type SecretKeyRef struct {
	// name of the Secret.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key in the Secret's data. Default "token".
	//
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// Route sends the connections it matches to exactly one place: a backend, an
// internal listener, or a WebSocket tunnel. A connection is routed once, by
// its first bytes; on a connection served by a backend in mode http, every
// request that follows is routed again (see Backend's mode).
//
// +kubebuilder:validation:XValidation:rule="[has(self.backend), has(self.listener), has(self.tunnel)].filter(x, x).size() == 1",message="a route needs exactly one action: set one of backend, listener or tunnel"
// +kubebuilder:validation:XValidation:rule="!has(self.tunnel) || self.match.protocol == 'websocket'",message="tunnel needs match.protocol websocket: a tunnel is a WebSocket endpoint",fieldPath=".tunnel"
// +kubebuilder:validation:XValidation:rule="!has(self.listener) || self.match.protocol == 'tls'",message="listener needs match.protocol tls: the internal listener terminates the TLS stream it is handed",fieldPath=".listener"
// +kubebuilder:validation:XValidation:rule="!has(self.listener) || !has(self.listeners) || !(self.listener in self.listeners)",message="a route cannot hand connections to a listener it is attached to: remove the listener from listeners or pick another one",fieldPath=".listener"
// +kubebuilder:validation:XValidation:rule="!has(self.backend) || !has(self.backend.mode) || self.backend.mode != 'http' || self.match.protocol in ['http', 'websocket']",message="backend.mode http needs match.protocol http or websocket: only HTTP requests can be reverse-proxied",fieldPath=".backend.mode"
type Route struct {
	// name identifies the route in metrics, logs and status. A DNS label.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// listeners are the names of the listeners this route applies to; their
	// protocol must carry the route's match.protocol. Leave it out to attach
	// the route to every listener with a port whose protocol carries its
	// match.protocol (not to the internal ones), as a Gateway API parentRef
	// without sectionName attaches to every listener of its Gateway that
	// accepts the route's kind: a PortMux with one port need not name it on
	// each route, and a quic route goes to the UDP listeners only. openvpn,
	// bytes and any are carried by both protocols, so left without
	// listeners they attach to the TCP and the UDP ones (each resolves its
	// backend Service port of the listener's protocol): name the listeners
	// to keep a catch-all on one protocol. Either way, a listener tries its
	// routes in the order of spec.routes. When given, it names at least one
	// listener.
	//
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	Listeners []string `json:"listeners,omitempty"`

	// match is what the client's first bytes must look like. On a
	// connection served by a backend in mode http, every request after
	// them is matched again; with mode tcp, host and pathPrefix are checked
	// on a connection's first request only.
	Match RouteMatch `json:"match"`

	// backend forwards matched connections to a Service or an address.
	//
	// +optional
	Backend *Backend `json:"backend,omitempty"`

	// listener hands matched TLS connections to the named internal listener,
	// which terminates TLS and sniffs the decrypted stream with its own
	// routes.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Listener *string `json:"listener,omitempty"`

	// idleTimeout closes what this route carries once no byte has passed
	// either way for this long: a forwarded connection, a tunnel (keepalive
	// pings do not count), or, in http mode, a kept-alive connection between
	// requests. Default by kind: 1h for forwarded connections and TCP
	// tunnels (the manager's --idle-timeout), 60s between HTTP requests and
	// for UDP tunnels. Between 1s and 168h. Dead peers are found sooner by
	// TCP keepalive on idle sockets and by the tunnels' pings.
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('168h'))",message="idleTimeout must be between 1s and 168h"
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`

	// tunnel makes this route a WebSocket tunnel endpoint: clients
	// (`portmux tunnel`) ask for one of the allowed targets and their TCP
	// stream or UDP datagrams are carried over the WebSocket.
	//
	// +optional
	Tunnel *Tunnel `json:"tunnel,omitempty"`
}

// RouteMatch is what a route recognises. Only the fields of the chosen
// protocol may be set; an empty list matches everything of that protocol.
// It is checked against a connection's first bytes, and, on a connection
// served in http mode, against each request after them: host and
// pathPrefix hold for every request there, but only for the first request
// of a connection whose backend is in mode tcp.
//
// +kubebuilder:validation:XValidation:rule="!has(self.sni) || self.protocol in ['tls', 'quic']",message="sni applies only to protocols tls and quic",fieldPath=".sni"
// +kubebuilder:validation:XValidation:rule="!has(self.alpn) || self.protocol in ['tls', 'quic']",message="alpn applies only to protocols tls and quic",fieldPath=".alpn"
// +kubebuilder:validation:XValidation:rule="!has(self.host) || self.protocol in ['http', 'websocket']",message="host applies only to protocols http and websocket",fieldPath=".host"
// +kubebuilder:validation:XValidation:rule="!has(self.pathPrefix) || self.protocol in ['http', 'websocket']",message="pathPrefix applies only to protocols http and websocket",fieldPath=".pathPrefix"
// +kubebuilder:validation:XValidation:rule="!has(self.prefix) || self.protocol == 'bytes'",message="prefix applies only to protocol bytes",fieldPath=".prefix"
// +kubebuilder:validation:XValidation:rule="!has(self.regex) || self.protocol == 'bytes'",message="regex applies only to protocol bytes",fieldPath=".regex"
// +kubebuilder:validation:XValidation:rule="self.protocol != 'bytes' || (has(self.prefix) != has(self.regex))",message="protocol bytes needs exactly one of prefix or regex"
type RouteMatch struct {
	// protocol is what the first bytes must be. On TCP listeners: ssh, tls,
	// http, websocket, openvpn, socks5, bytes (with prefix or regex), any
	// (every connection), or timeout (the client sent nothing within the
	// listener's probeTimeout). Route protocols where the server speaks
	// first (SMTP, some SSH setups) with timeout: on a port with no timeout
	// route and no any route first, the kernel holds a silent client for
	// about a second before the dataplane sees it (TCP_DEFER_ACCEPT), so
	// silent clients cost nothing there. On UDP listeners, of a session's
	// first datagrams: quic (with sni and alpn), wireguard, dns, openvpn,
	// bytes (of the first datagram), or any. The protocol must be one every
	// listener the route names carries; the API server refuses it
	// otherwise.
	Protocol Protocol `json:"protocol"`

	// sni lists server names the ClientHello (of TLS, or inside a QUIC
	// Initial) must ask for. "*.example.com" matches one label under
	// example.com. Compared without case. Empty: any name, and clients that
	// send none.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$`
	SNI []string `json:"sni,omitempty"`

	// alpn lists application protocols; the ClientHello (of TLS, or inside
	// a QUIC Initial: h3 for HTTP/3) must offer at least one of them.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	ALPN []string `json:"alpn,omitempty"`

	// host lists HTTP Host names (without port); "*.example.com" matches
	// one label under example.com.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$`
	Host []string `json:"host,omitempty"`

	// pathPrefix is a URL path the request path must start with, at a
	// segment boundary ("/tunnel" matches "/tunnel" and "/tunnel/x", not
	// "/tunnels").
	//
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/[^\s?#]*$`
	PathPrefix string `json:"pathPrefix,omitempty"`

	// prefix is text the first bytes must start with, like haproxy's
	// payload match. For binary patterns use regex with \x escapes.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Prefix string `json:"prefix,omitempty"`

	// regex is an RE2 expression tried on the bytes read so far (at most
	// 16 KiB), like sslh's regex probe. Anchor it with ^ to match at the
	// start. It keeps the probe waiting until it matches or the probe ends,
	// so put cheaper routes first.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Regex string `json:"regex,omitempty"`
}

// Backend is where a route forwards connections.
//
// +kubebuilder:validation:XValidation:rule="has(self.service) != has(self.address)",message="a backend needs exactly one of service or address"
// +kubebuilder:validation:XValidation:rule="!has(self.proxyProtocol) || !has(self.mode) || self.mode != 'http'",message="proxyProtocol cannot be combined with mode http: http mode passes the client address in X-Forwarded-For",fieldPath=".proxyProtocol"
type Backend struct {
	// service is a Service in the PortMux's namespace; connections are spread
	// over its ready endpoints, and a failed dial tries the next one. The
	// Service port is looked up among those of the listener's protocol: a
	// route on a UDP listener forwards to a UDP port (a route on a TCP and a
	// UDP listener needs both, as DNS Services have 53/TCP and 53/UDP).
	//
	// +optional
	Service *ServicePort `json:"service,omitempty"`

	// address is a fixed host:port to dial. Used by `portmux serve`; in a
	// cluster the controller accepts it only when started with
	// --allow-address-backends, since it lets a PortMux author reach any
	// address the pod can.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?):[0-9]{1,5}$`
	Address string `json:"address,omitempty"`

	// mode is tcp (default) or http (only for http and websocket routes).
	// Routes on UDP listeners forward datagrams, each as it came, and leave
	// mode at tcp.
	//
	// tcp decides once per connection, as haproxy's tcp mode does: the
	// connection's first bytes choose the route and all its bytes are
	// forwarded untouched, so a route's host and pathPrefix are checked on
	// the first request of a connection only; later requests on a
	// kept-alive connection go to the same backend whatever they ask for.
	//
	// http decides per request: the dataplane is an HTTP reverse proxy
	// (HTTP/1.1 with keep-alive, and HTTP/2 from clients that negotiated
	// h2), and every request and HTTP/2 stream is matched against the
	// listener's routes in their order. It goes to the backend of the first
	// route that takes it when that route is in mode http too; otherwise
	// (a tcp-mode route, a tunnel, no route) the client gets 421 Misdirected
	// Request and nothing reaches a backend. X-Forwarded-For, -Proto,
	// -Host, X-Real-IP and Forwarded are set from what the dataplane saw,
	// never taken from the client; only WebSocket upgrades pass. Requests
	// are spread over the endpoints one by one, on pooled connections that
	// count against the listener's maxConnections; at the cap an idle one
	// gives its slot to a request or a new client of the same listener,
	// and at the dataplane's cap across all listeners any listener's does.
	//
	// +optional
	Mode BackendMode `json:"mode,omitempty"`

	// proxyProtocol sends a PROXY protocol header of this version (v1 or
	// v2) before the client's bytes, so the backend sees the client's
	// address. The backend must expect it. TCP listeners only: a route on
	// a UDP listener cannot set it.
	//
	// +optional
	ProxyProtocol ProxyProtocolVersion `json:"proxyProtocol,omitempty"`
}

// ServicePort names a Service in the PortMux's namespace and one of its ports.
type ServicePort struct {
	// name of the Service.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// port is the Service port, by number (1-65535) or by name (a
	// Kubernetes port name: at most 15 lowercase letters, digits and '-').
	//
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="port must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')"
	Port intstr.IntOrString `json:"port"`
}

// Tunnel is a WebSocket tunnel endpoint. It is never an open proxy: only the
// targets in allow can be reached, and never open by omission: auth says who
// may open a tunnel, even when the answer is anyone.
//
// +kubebuilder:validation:XValidation:rule="has(self.auth)",message="a tunnel needs auth: set auth.tokenSecretRef to require a bearer token, or auth.none: true to let anyone who reaches the route open it",fieldPath=".auth",reason=FieldValueRequired
type Tunnel struct {
	// auth says how clients prove they may open a tunnel: a bearer token
	// (tokenSecretRef), or none: true for a tunnel anyone who reaches the
	// route may open. Required: a tunnel that leaves it out is refused
	// rather than open to everyone (the rule on Tunnel requires it, with a
	// message that says what to write).
	//
	// +optional
	Auth *TunnelAuth `json:"auth,omitempty"`

	// allow lists the only targets clients may ask for. Anything else is
	// refused before anything is dialled.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Allow []TunnelTarget `json:"allow"`

	// allowedOrigins lists the web origins (scheme://host[:port], e.g.
	// https://app.example.com) whose pages may open tunnels from a
	// browser. A browser sends the page's Origin with every WebSocket
	// handshake; a handshake from an origin not listed is refused (403), so
	// that no other site the user visits can reach the targets through the
	// user's browser. Compared without case; a default port (80 for http,
	// 443 for https) may be written or left out. Empty, the default:
	// browsers are refused. Clients that send no Origin (portmux tunnel,
	// wstunnel) are not concerned.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	AllowedOrigins []Origin `json:"allowedOrigins,omitempty"`
}

// Origin is a web origin (RFC 6454): a scheme, a host and optionally a
// port, nothing after them.
//
// +kubebuilder:validation:MaxLength=300
// +kubebuilder:validation:XValidation:rule="self.matches(r'^[a-zA-Z][-+.a-zA-Z0-9]*://(\\[[0-9a-fA-F:.]+\\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$')",message="must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com"
type Origin string

// TunnelAuth says how tunnel clients prove they may connect: with a token,
// or, said explicitly, not at all.
//
// +kubebuilder:validation:XValidation:rule="[has(self.tokenSecretRef), has(self.none) && self.none].filter(x, x).size() == 1",message="auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)"
type TunnelAuth struct {
	// tokenSecretRef names the Secret key that holds the token clients send as
	// "Authorization: Bearer TOKEN". Compared in constant time. Whitespace at
	// the end of the value (spaces, tabs, CR, LF) is not part of the token,
	// so a Secret made with `kubectl create secret generic --from-file`
	// works; a value that is empty or only whitespace refuses every client,
	// as a missing Secret does.
	//
	// +optional
	TokenSecretRef *SecretKeyRef `json:"tokenSecretRef,omitempty"`

	// none: true lets every client that reaches the route open tunnels to
	// the allowed targets without a token: for targets that authenticate
	// on their own (SSH, WireGuard) or a route reachable only from trusted
	// networks. It must be written out: leaving auth out is an error.
	//
	// +optional
	None bool `json:"none,omitempty"`
}

// TunnelTarget is one destination a tunnel client may reach.
//
// +kubebuilder:validation:XValidation:rule="has(self.service) != has(self.address)",message="a tunnel target needs exactly one of service or address"
type TunnelTarget struct {
	// service is a Service port in the PortMux's namespace.
	//
	// +optional
	Service *ServicePort `json:"service,omitempty"`

	// address is a fixed host:port (see Backend.address for when it is
	// accepted).
	//
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?):[0-9]{1,5}$`
	Address string `json:"address,omitempty"`

	// protocol is TCP (default) or UDP.
	//
	// +optional
	Protocol TransportProtocol `json:"protocol,omitempty"`
}

// PortMuxStatus is what the controller observed when it last programmed the
// dataplane from this PortMux.
type PortMuxStatus struct {
	// observedGeneration is the metadata.generation the conditions describe.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ports lists the ports the listeners bind (or, for a listener with a
	// parentRef, share with the Gateway listener it attached to),
	// comma-separated, UDP ones with "/UDP" ("443,8443,443/UDP"), for
	// `kubectl get`: a printer column can show only one value of a list.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Ports string `json:"ports,omitempty"`

	// conditions: Accepted (the spec is valid and its ports are not held by
	// another PortMux), ResolvedRefs (every Secret and Service it names was
	// found and usable), Programmed (the dataplane serves it), Ready.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// listeners reports each listener's state.
	//
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Listeners []ListenerStatus `json:"listeners,omitempty"`
}

// ListenerStatus is the observed state of one listener.
type ListenerStatus struct {
	// name of the listener.
	Name string `json:"name"`

	// port the listener is bound to; empty for internal listeners.
	//
	// +optional
	Port *int32 `json:"port,omitempty"`

	// protocol of the port: TCP or UDP.
	//
	// +optional
	Protocol TransportProtocol `json:"protocol,omitempty"`

	// attachedRoutes counts the routes that apply to this listener.
	AttachedRoutes int32 `json:"attachedRoutes"`

	// conditions: Accepted, ResolvedRefs, Programmed for this listener.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PortMux shares ports between protocols: it binds listeners, sniffs each
// connection's first bytes and routes it to a Service, an internal TLS
// listener or a WebSocket tunnel.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pmx,categories=portmux
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.status.ports`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PortMux struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user wants served.
	Spec PortMuxSpec `json:"spec"`

	// status is what the controller made of it.
	//
	// +optional
	Status PortMuxStatus `json:"status,omitempty"`
}

// PortMuxList is a list of PortMux objects.
//
// +kubebuilder:object:root=true
type PortMuxList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PortMux `json:"items"`
}
