package v1alpha1_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/portmux/portmux/api/v1alpha1"
)

// The validation tables create PortMux objects from YAML (so that they can
// hold what Go types cannot, like probeTimeout "abc") and compare the API
// server's refusal with the expected causes, each exactly as kubectl prints it
// ("field: kind of error: message"), and no others: a rule that misfires on a
// valid part of the spec fails the test too.

// notChecked is the cause the API server adds when a schema error (an enum,
// maxItems) made it skip CEL rules whose cost relies on the schema holding.
const notChecked = `<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation`

// ok is a route action that is always valid, to keep the cases short.
const ok = `backend: {service: {name: sshd, port: 22}}`

func TestInvalidPortMuxIsRefused(t *testing.T) {
	ns := newNamespace(t)

	for _, tc := range []struct {
		name string
		spec string
		want []string
	}{
		// Listeners.
		{
			name: "duplicate listener names",
			spec: `
listeners: [{name: public, port: 443}, {name: public, port: 8443}]`,
			want: []string{`spec.listeners[1]: Duplicate value: {"name":"public"}`},
		},
		{
			name: "listener name not a DNS label",
			spec: `
listeners: [{name: Public, port: 443}]`,
			want: []string{`spec.listeners[0].name: Invalid value: "Public": spec.listeners[0].name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'`},
		},
		{
			name: "no listeners",
			spec: `
listeners: []`,
			want: []string{`spec.listeners: Invalid value: 0: spec.listeners in body should have at least 1 items`},
		},
		{
			name: "17 listeners",
			spec: manyListeners(17),
			want: []string{`spec.listeners: Too many: 17: must have at most 16 items`, notChecked},
		},
		{
			name: "port 0",
			spec: `
listeners: [{name: public, port: 0}]`,
			want: []string{`spec.listeners[0].port: Invalid value: 0: spec.listeners[0].port in body should be greater than or equal to 1`},
		},
		{
			name: "port 65536",
			spec: `
listeners: [{name: public, port: 65536}]`,
			want: []string{`spec.listeners[0].port: Invalid value: 65536: spec.listeners[0].port in body should be less than or equal to 65535`},
		},
		{
			name: "two listeners on one port",
			spec: `
listeners: [{name: public, port: 443}, {name: other, port: 443}]`,
			want: []string{`spec.listeners: Invalid value: two listeners have the same port and protocol: give each its own port, or make one TCP and the other UDP`},
		},
		{
			name: "internal listener without tls",
			spec: `
listeners: [{name: public, port: 443}, {name: inner}]`,
			want: []string{`spec.listeners[1].port: Required value: an internal listener (one without port) must set tls: it terminates TLS for streams a route hands to it; set port to bind a port instead`},
		},
		{
			name: "proxyProtocol on an internal listener",
			spec: `
listeners:
- {name: public, port: 443}
- {name: inner, proxyProtocol: {trustedCIDRs: [10.0.0.0/8]}, tls: {certificateRefs: [{name: cert}]}}`,
			want: []string{`spec.listeners[1].proxyProtocol: Invalid value: proxyProtocol applies only to a listener with a port: an internal listener receives streams from other listeners, never from a load balancer`},
		},
		{
			name: "proxyProtocol true, as it was",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: true}]`,
			want: []string{`spec.listeners[0].proxyProtocol: Invalid value: "boolean": spec.listeners[0].proxyProtocol in body must be of type object: "boolean"`, notChecked},
		},
		{
			name: "proxyProtocol without trustedCIDRs",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs: Required value`, notChecked},
		},
		{
			name: "proxyProtocol trusting no one",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: []}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs: Invalid value: 0: spec.listeners[0].proxyProtocol.trustedCIDRs in body should have at least 1 items`},
		},
		{
			name: "trusted CIDR without a prefix length",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [192.0.2.0/24, "10.0.0.1"]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Invalid value: "10.0.0.1": must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32`},
		},
		{
			name: "trusted CIDR with prefix length 33",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [192.0.2.0/24, "10.0.0.0/33"]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Invalid value: "10.0.0.0/33": must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32`},
		},
		{
			name: "trusted CIDR that is a host name",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [192.0.2.0/24, "lb.example.com/32"]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Invalid value: "lb.example.com/32": must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32`},
		},
		{
			name: "trusted IPv6 CIDR with a zone",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [192.0.2.0/24, "fe80::%eth0/64"]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Invalid value: "fe80::%eth0/64": must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32`},
		},
		{
			name: "trusted CIDR with host bits",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [192.0.2.0/24, "10.1.2.3/8"]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Invalid value: "10.1.2.3/8": must be written as its network address: the bits past the prefix length must be zero (10.0.0.0/8, not 10.1.2.3/8)`},
		},
		{
			name: "trusted IPv6 CIDR with host bits",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [192.0.2.0/24, "2001:db8::1/32"]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Invalid value: "2001:db8::1/32": must be written as its network address: the bits past the prefix length must be zero (10.0.0.0/8, not 10.1.2.3/8)`},
		},
		{
			name: "trusted CIDR listed twice",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [192.0.2.0/24, 192.0.2.0/24]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Duplicate value: "192.0.2.0/24"`},
		},
		{
			name: "probeTimeout 5ms",
			spec: `
listeners: [{name: public, port: 443, probeTimeout: 5ms}]`,
			want: []string{`spec.listeners[0].probeTimeout: Invalid value: "5ms": probeTimeout must be between 10ms and 60s`},
		},
		{
			name: "probeTimeout 2m",
			spec: `
listeners: [{name: public, port: 443, probeTimeout: 2m}]`,
			want: []string{`spec.listeners[0].probeTimeout: Invalid value: "2m": probeTimeout must be between 10ms and 60s`},
		},
		{
			name: "maxConnectionsPerClient 0",
			spec: `
listeners: [{name: public, port: 443, maxConnectionsPerClient: 0}]`,
			want: []string{`spec.listeners[0].maxConnectionsPerClient: Invalid value: 0: spec.listeners[0].maxConnectionsPerClient in body should be greater than or equal to 1`},
		},
		{
			name: "maxConnectionRatePerClient 0",
			spec: `
listeners: [{name: public, port: 443, maxConnectionRatePerClient: 0}]`,
			want: []string{`spec.listeners[0].maxConnectionRatePerClient: Invalid value: 0: spec.listeners[0].maxConnectionRatePerClient in body should be greater than or equal to 1`},
		},
		{
			name: "route idleTimeout 500ms",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], idleTimeout: 500ms, match: {protocol: ssh}, ` + ok + `}`,
			want: []string{`spec.routes[0].idleTimeout: Invalid value: "500ms": idleTimeout must be between 1s and 168h`},
		},
		{
			name: "route idleTimeout 169h",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], idleTimeout: 169h, match: {protocol: ssh}, ` + ok + `}`,
			want: []string{`spec.routes[0].idleTimeout: Invalid value: "169h": idleTimeout must be between 1s and 168h`},
		},
		{
			name: "probeTimeout in hours",
			spec: `
listeners: [{name: public, port: 443, probeTimeout: 1h}]`,
			want: []string{`spec.listeners[0].probeTimeout: Invalid value: "1h": spec.listeners[0].probeTimeout in body should match '^([0-9]+(\.[0-9]+)?(ms|s|m))+$'`},
		},
		{
			name: "probeTimeout not a duration",
			spec: `
listeners: [{name: public, port: 443, probeTimeout: abc}]`,
			want: []string{`spec.listeners[0].probeTimeout: Invalid value: "abc": spec.listeners[0].probeTimeout in body should match '^([0-9]+(\.[0-9]+)?(ms|s|m))+$'`},
		},

		// UDP listeners and the protocols their routes match.
		{
			name: "two UDP listeners on one port",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP}, {name: vpn, port: 443, protocol: UDP}]`,
			want: []string{`spec.listeners: Invalid value: two listeners have the same port and protocol: give each its own port, or make one TCP and the other UDP`},
		},
		{
			name: "two listeners on one port, one TCP by default and one said TCP",
			spec: `
listeners: [{name: https, port: 443}, {name: other, port: 443, protocol: TCP}, {name: h3, port: 443, protocol: UDP}]`,
			want: []string{`spec.listeners: Invalid value: two listeners have the same port and protocol: give each its own port, or make one TCP and the other UDP`},
		},
		{
			name: "listener protocol SCTP",
			spec: `
listeners: [{name: public, port: 443, protocol: SCTP}]`,
			want: []string{`spec.listeners[0].protocol: Unsupported value: "SCTP": supported values: "TCP", "UDP"`, notChecked},
		},
		{
			name: "listener protocol in lower case",
			spec: `
listeners: [{name: public, port: 443, protocol: udp}]`,
			want: []string{`spec.listeners[0].protocol: Unsupported value: "udp": supported values: "TCP", "UDP"`, notChecked},
		},
		{
			name: "UDP listener without a port",
			spec: `
listeners: [{name: public, port: 443}, {name: dns, protocol: UDP}]`,
			want: []string{`spec.listeners[1].port: Required value: a UDP listener needs a port: internal listeners take the TLS streams routes hand them, and only TCP listeners are internal`},
		},
		{
			name: "UDP listener terminating TLS",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP, tls: {certificateRefs: [{name: cert}]}}]`,
			want: []string{`spec.listeners[0].tls: Invalid value: tls applies only to TCP listeners: a UDP listener forwards datagrams as they are (QUIC carries its own TLS, which the backend terminates)`},
		},
		{
			name: "UDP listener expecting PROXY headers",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP, proxyProtocol: {trustedCIDRs: [10.0.0.0/8]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol: Invalid value: proxyProtocol applies only to TCP listeners: a PROXY header starts a stream, and datagrams carry none`},
		},
		{
			name: "quic on a TCP listener",
			spec: `
listeners: [{name: public, port: 443}, {name: h3, port: 443, protocol: UDP}]
routes:
- {name: h3, listeners: [public], match: {protocol: quic}, ` + ok + `}`,
			want: []string{`spec.routes: Invalid value: a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both`},
		},
		{
			name: "ssh on a UDP listener, named beside a TCP one",
			spec: `
listeners: [{name: public, port: 443}, {name: h3, port: 443, protocol: UDP}]
routes:
- {name: ssh, listeners: [public, h3], match: {protocol: ssh}, ` + ok + `}`,
			want: []string{`spec.routes: Invalid value: a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both`},
		},
		{
			name: "timeout on a UDP listener",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}]
routes:
- {name: silent, listeners: [dns], match: {protocol: timeout}, ` + ok + `}`,
			want: []string{`spec.routes: Invalid value: a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both`},
		},
		{
			name: "a tunnel on a UDP listener",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}]
routes:
- {name: tunnel, listeners: [dns], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: dns, port: 53}, protocol: UDP}]}}`,
			want: []string{`spec.routes: Invalid value: a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both`},
		},
		{
			name: "a hand-off from a UDP listener",
			spec: `
listeners:
- {name: h3, port: 443, protocol: UDP}
- {name: inner, tls: {certificateRefs: [{name: cert}]}}
routes:
- {name: unwrap, listeners: [h3], match: {protocol: tls}, listener: inner}`,
			want: []string{`spec.routes: Invalid value: a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both`},
		},
		{
			name: "backend mode http on a UDP listener",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP}]
routes:
- {name: web, listeners: [h3], match: {protocol: http}, backend: {service: {name: web, port: 80}, mode: http}}`,
			want: []string{`spec.routes: Invalid value: a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both`},
		},
		{
			name: "quic that leaves out listeners, and no UDP listener",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: h3, match: {protocol: quic, sni: [example.com]}, ` + ok + `}`,
			want: []string{`spec.routes: Invalid value: a route that leaves out listeners attaches to every listener with a port whose protocol carries its match.protocol, and none does: add a UDP listener for quic, wireguard and dns, a TCP one for the others, or name the route's listeners`},
		},
		{
			name: "ssh that leaves out listeners, and only UDP listeners",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP}]
routes:
- {name: ssh, match: {protocol: ssh}, ` + ok + `}`,
			want: []string{`spec.routes: Invalid value: a route that leaves out listeners attaches to every listener with a port whose protocol carries its match.protocol, and none does: add a UDP listener for quic, wireguard and dns, a TCP one for the others, or name the route's listeners`},
		},
		{
			name: "backend proxyProtocol on a route naming a UDP listener",
			spec: `
listeners: [{name: public, port: 1194}, {name: vpn, port: 1194, protocol: UDP}]
routes:
- {name: vpn, listeners: [public, vpn], match: {protocol: openvpn}, backend: {service: {name: openvpn, port: 1194}, proxyProtocol: v2}}`,
			want: []string{`spec.routes: Invalid value: backend.proxyProtocol applies only to routes on TCP listeners: UDP sessions reach their backend without a PROXY header; name the route's TCP listeners in listeners`},
		},
		{
			name: "backend proxyProtocol on a route that leaves out listeners and reaches a UDP one",
			spec: `
listeners: [{name: public, port: 1194}, {name: vpn, port: 1194, protocol: UDP}]
routes:
- {name: vpn, match: {protocol: openvpn}, backend: {service: {name: openvpn, port: 1194}, proxyProtocol: v1}}`,
			want: []string{`spec.routes: Invalid value: backend.proxyProtocol applies only to routes on TCP listeners: UDP sessions reach their backend without a PROXY header; name the route's TCP listeners in listeners`},
		},
		{
			name: "sni with protocol dns",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}]
routes:
- {name: dns, listeners: [dns], match: {protocol: dns, sni: [example.com]}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.sni: Invalid value: sni applies only to protocols tls and quic`},
		},
		{
			name: "bytes on UDP with neither prefix nor regex",
			spec: `
listeners: [{name: raw, port: 9000, protocol: UDP}]
routes:
- {name: raw, listeners: [raw], match: {protocol: bytes}, ` + ok + `}`,
			want: []string{`spec.routes[0].match: Invalid value: protocol bytes needs exactly one of prefix or regex`},
		},

		// Routes and their actions.
		{
			name: "route names one listener twice",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public, public], match: {protocol: ssh}, ` + ok + `}`,
			want: []string{`spec.routes[0].listeners[1]: Duplicate value: "public"`},
		},
		{
			name: "route with an empty list of listeners",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [], match: {protocol: ssh}, ` + ok + `}`,
			want: []string{`spec.routes[0].listeners: Invalid value: 0: spec.routes[0].listeners in body should have at least 1 items`},
		},
		{
			name: "duplicate route names",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, ` + ok + `}
- {name: ssh, listeners: [public], match: {protocol: any}, ` + ok + `}`,
			want: []string{`spec.routes[1]: Duplicate value: {"name":"ssh"}`},
		},
		{
			name: "route names an undeclared listener",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public, pubic], match: {protocol: ssh}, ` + ok + `}`,
			want: []string{`spec.routes: Invalid value: each name in a route's listeners must be a listener declared in spec.listeners: add the listener or fix the name`},
		},
		{
			name: "route names an undeclared listener, next to routes that name none",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, match: {protocol: ssh}, ` + ok + `}
- {name: web, listeners: [pubic], match: {protocol: http}, ` + ok + `}
- {name: rest, match: {protocol: any}, ` + ok + `}`,
			want: []string{`spec.routes: Invalid value: each name in a route's listeners must be a listener declared in spec.listeners: add the listener or fix the name`},
		},
		{
			name: "route without an action",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}}`,
			want: []string{`spec.routes[0]: Invalid value: a route needs exactly one action: set one of backend, listener or tunnel`},
		},
		{
			name: "route with two actions",
			spec: `
listeners:
- {name: public, port: 443}
- {name: inner, tls: {certificateRefs: [{name: cert}]}}
routes:
- {name: tls, listeners: [public], match: {protocol: tls}, listener: inner, ` + ok + `}`,
			want: []string{`spec.routes[0]: Invalid value: a route needs exactly one action: set one of backend, listener or tunnel`},
		},
		{
			name: "listener action to a listener with a port",
			spec: `
listeners: [{name: public, port: 443}, {name: other, port: 8443}]
routes:
- {name: tls, listeners: [public], match: {protocol: tls}, listener: other}`,
			want: []string{`spec.routes: Invalid value: a route's listener action must name an internal listener: one declared in spec.listeners without a port`},
		},
		{
			name: "listener action to a listener with a port, from a route that names no listener",
			spec: `
listeners: [{name: public, port: 443}, {name: other, port: 8443}]
routes:
- {name: tls, match: {protocol: tls}, listener: other}`,
			want: []string{`spec.routes: Invalid value: a route's listener action must name an internal listener: one declared in spec.listeners without a port`},
		},
		{
			name: "listener action to an undeclared listener",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tls, listeners: [public], match: {protocol: tls}, listener: inner}`,
			want: []string{`spec.routes: Invalid value: a route's listener action must name an internal listener: one declared in spec.listeners without a port`},
		},
		{
			name: "listener action with protocol ssh",
			spec: `
listeners:
- {name: public, port: 443}
- {name: inner, tls: {certificateRefs: [{name: cert}]}}
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, listener: inner}`,
			want: []string{`spec.routes[0].listener: Invalid value: listener needs match.protocol tls: the internal listener terminates the TLS stream it is handed`},
		},
		{
			name: "route hands to a listener it is attached to",
			spec: `
listeners:
- {name: public, port: 443}
- {name: inner, tls: {certificateRefs: [{name: cert}]}}
routes:
- {name: loop, listeners: [public, inner], match: {protocol: tls}, listener: inner}`,
			want: []string{`spec.routes[0].listener: Invalid value: a route cannot hand connections to a listener it is attached to: remove the listener from listeners or pick another one`},
		},
		{
			name: "tunnel with protocol http",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: http}, tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel: Invalid value: tunnel needs match.protocol websocket: a tunnel is a WebSocket endpoint`},
		},
		{
			name: "tunnel with an empty allow list",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: []}}`,
			want: []string{`spec.routes[0].tunnel.allow: Invalid value: 0: spec.routes[0].tunnel.allow in body should have at least 1 items`},
		},
		{
			name: "tunnel target with service and address",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- name: tunnel
  listeners: [public]
  match: {protocol: websocket}
  tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: 22}, address: "10.0.0.1:22"}]}`,
			want: []string{`spec.routes[0].tunnel.allow[0]: Invalid value: a tunnel target needs exactly one of service or address`},
		},
		{
			name: "tunnel without auth",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.auth: Required value: a tunnel needs auth: set auth.tokenSecretRef to require a bearer token, or auth.none: true to let anyone who reaches the route open it`},
		},
		{
			name: "tunnel auth with neither token nor none",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {}, allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.auth: Invalid value: auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)`},
		},
		{
			name: "tunnel auth none false",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: false}, allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.auth: Invalid value: auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)`},
		},
		{
			name: "tunnel auth with a token and none",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true, tokenSecretRef: {name: token}}, allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.auth: Invalid value: auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)`},
		},

		{
			name: "an origin with a path",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: [https://ok.example.com, "https://app.example.com/"], allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.allowedOrigins[1]: Invalid value: "https://app.example.com/": must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com`},
		},
		{
			name: "an origin without a scheme",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: [https://ok.example.com, "app.example.com"], allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.allowedOrigins[1]: Invalid value: "app.example.com": must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com`},
		},
		{
			name: "an origin with port 99999",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: [https://ok.example.com, "https://app.example.com:99999"], allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.allowedOrigins[1]: Invalid value: "https://app.example.com:99999": must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com`},
		},
		{
			name: "a wildcard origin",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: [https://ok.example.com, "*"], allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.allowedOrigins[1]: Invalid value: "*": must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com`},
		},
		{
			name: "the opaque origin null",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: [https://ok.example.com, "null"], allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.allowedOrigins[1]: Invalid value: "null": must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com`},
		},
		{
			name: "an origin listed twice",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: [https://ok.example.com, https://ok.example.com], allow: [{service: {name: sshd, port: 22}}]}}`,
			want: []string{`spec.routes[0].tunnel.allowedOrigins[1]: Duplicate value: "https://ok.example.com"`},
		},
		// Matches.
		{
			name: "unknown protocol",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: gopher, listeners: [public], match: {protocol: gopher}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.protocol: Unsupported value: "gopher": supported values: "ssh", "tls", "http", "websocket", "openvpn", "socks5", "bytes", "any", "timeout", "quic", "wireguard", "dns"`, notChecked},
		},
		{
			name: "pathPrefix without a leading slash",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: web, listeners: [public], match: {protocol: http, pathPrefix: api}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.pathPrefix: Invalid value: "api": spec.routes[0].match.pathPrefix in body should match '^/[^\s?#]*$'`},
		},
		{
			name: "sni with protocol ssh",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh, sni: [example.com]}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.sni: Invalid value: sni applies only to protocols tls and quic`},
		},
		{
			name: "alpn with protocol http",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: web, listeners: [public], match: {protocol: http, alpn: [h2]}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.alpn: Invalid value: alpn applies only to protocols tls and quic`},
		},
		{
			name: "host with protocol tls",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tls, listeners: [public], match: {protocol: tls, host: [example.com]}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.host: Invalid value: host applies only to protocols http and websocket`},
		},
		{
			name: "pathPrefix with protocol ssh",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh, pathPrefix: /ssh}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.pathPrefix: Invalid value: pathPrefix applies only to protocols http and websocket`},
		},
		{
			name: "prefix with protocol http",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: web, listeners: [public], match: {protocol: http, prefix: GET}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.prefix: Invalid value: prefix applies only to protocol bytes`},
		},
		{
			name: "regex with protocol tls",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tls, listeners: [public], match: {protocol: tls, regex: "^\\x16"}, ` + ok + `}`,
			want: []string{`spec.routes[0].match.regex: Invalid value: regex applies only to protocol bytes`},
		},
		{
			name: "bytes with neither prefix nor regex",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: raw, listeners: [public], match: {protocol: bytes}, ` + ok + `}`,
			want: []string{`spec.routes[0].match: Invalid value: protocol bytes needs exactly one of prefix or regex`},
		},
		{
			name: "bytes with prefix and regex",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: raw, listeners: [public], match: {protocol: bytes, prefix: "SSH-", regex: "^SSH-"}, ` + ok + `}`,
			want: []string{`spec.routes[0].match: Invalid value: protocol bytes needs exactly one of prefix or regex`},
		},

		// Backends.
		{
			name: "mode http with protocol ssh",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: 22}, mode: http}}`,
			want: []string{`spec.routes[0].backend.mode: Invalid value: backend.mode http needs match.protocol http or websocket: only HTTP requests can be reverse-proxied`},
		},
		{
			name: "proxyProtocol with mode http",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: web, listeners: [public], match: {protocol: http}, backend: {service: {name: web, port: 80}, mode: http, proxyProtocol: v2}}`,
			want: []string{`spec.routes[0].backend.proxyProtocol: Invalid value: proxyProtocol cannot be combined with mode http: http mode passes the client address in X-Forwarded-For`},
		},
		{
			name: "backend with service and address",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: 22}, address: "10.0.0.1:22"}}`,
			want: []string{`spec.routes[0].backend: Invalid value: a backend needs exactly one of service or address`},
		},
		{
			name: "backend with neither service nor address",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {mode: tcp}}`,
			want: []string{`spec.routes[0].backend: Invalid value: a backend needs exactly one of service or address`},
		},
		{
			name: "service port 70000",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: 70000}}}`,
			want: []string{`spec.routes[0].backend.service.port: Invalid value: 70000: port must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')`},
		},
		{
			name: "service port name Bad_Name",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: Bad_Name}}}`,
			want: []string{`spec.routes[0].backend.service.port: Invalid value: "Bad_Name": port must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')`},
		},
		{
			name: "service port name longer than 15",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: a-very-long-port-name}}}`,
			want: []string{`spec.routes[0].backend.service.port: Too long: may not be more than 15 bytes`, notChecked},
		},
		{
			name: "tunnel target port 0",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: 0}}]}}`,
			want: []string{`spec.routes[0].tunnel.allow[0].service.port: Invalid value: 0: port must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')`},
		},
		{
			name: "address without a port",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {address: sshd.example.com}}`,
			want: []string{`spec.routes[0].backend.address: Invalid value: "sshd.example.com": spec.routes[0].backend.address in body should match '^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?):[0-9]{1,5}$'`},
		},
		{
			name: "proxyProtocol v3",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: 22}, proxyProtocol: v3}}`,
			want: []string{`spec.routes[0].backend.proxyProtocol: Unsupported value: "v3": supported values: "v1", "v2"`, notChecked},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := createSpec(t, ns, tc.spec)
			if err == nil {
				t.Fatalf("the API server accepted the PortMux; want a refusal with %q", tc.want)
			}
			got := refusalCauses(t, err)
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("the API server refused it with\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

func TestValidEdgeCasesAreAccepted(t *testing.T) {
	ns := newNamespace(t)

	for _, tc := range []struct {
		name string
		spec string
	}{
		{
			name: "service port by name",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: ssh}}}`,
		},
		{
			name: "internal listener with tls and no proxyProtocol",
			spec: `
listeners:
- {name: public, port: 443}
- {name: inner, tls: {certificateRefs: [{name: cert}]}}
routes:
- {name: unwrap, listeners: [public], match: {protocol: tls}, listener: inner}
- {name: ssh, listeners: [inner], match: {protocol: ssh}, ` + ok + `}`,
		},
		{
			name: "proxyProtocol on the port, not on the internal listener",
			spec: `
listeners:
- {name: public, port: 443, proxyProtocol: {trustedCIDRs: [10.0.0.0/8]}}
- {name: inner, tls: {certificateRefs: [{name: cert}]}}`,
		},
		{
			name: "trusted CIDRs of both families, everyone written out",
			spec: `
listeners:
- {name: lb, port: 443, proxyProtocol: {trustedCIDRs: [10.0.0.0/8, 192.0.2.7/32, "2001:db8::/32", "fd00::1/128"]}}
- {name: anyone, port: 8443, proxyProtocol: {trustedCIDRs: [0.0.0.0/0, "::/0"]}}`,
		},
		{
			name: "tls termination on a listener with a port",
			spec: `
listeners: [{name: https, port: 443, tls: {certificateRefs: [{name: a}, {name: b}], alpn: [h2, http/1.1]}}]
routes:
- {name: web, listeners: [https], match: {protocol: http}, backend: {service: {name: web, port: 80}, mode: http}}`,
		},
		{
			name: "wildcard sni and alpn",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tls, listeners: [public], match: {protocol: tls, sni: ["*.example.com", Example.ORG], alpn: [h2]}, ` + ok + `}`,
		},
		{
			name: "per-client limits and a route idle timeout at their bounds",
			spec: `
listeners: [{name: public, port: 443, maxConnectionsPerClient: 1, maxConnectionRatePerClient: 1000000}]
routes:
- {name: ssh, listeners: [public], idleTimeout: 168h, match: {protocol: ssh}, ` + ok + `}
- {name: web, listeners: [public], idleTimeout: 1s, match: {protocol: http}, ` + ok + `}`,
		},
		{
			name: "regex route",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: raw, listeners: [public], match: {protocol: bytes, regex: "^(GET|POST) /legacy"}, ` + ok + `}`,
		},
		{
			name: "prefix route",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: raw, listeners: [public], match: {protocol: bytes, prefix: "\u0016\u0003"}, ` + ok + `}`,
		},
		{
			name: "websocket with host, path and http mode",
			spec: `
listeners: [{name: public, port: 80}]
routes:
- {name: ws, listeners: [public], match: {protocol: websocket, host: ["*.example.com"], pathPrefix: /ws}, backend: {service: {name: ws, port: 8080}, mode: http}}`,
		},
		{
			name: "probeTimeout bounds and compound duration",
			spec: `
listeners:
- {name: a, port: 1, probeTimeout: 10ms}
- {name: b, port: 65535, probeTimeout: 60s}
- {name: c, port: 8443, probeTimeout: 1m}
- {name: d, port: 9443, probeTimeout: 0.5s}`,
		},
		{
			name: "two internal listeners, neither with a port",
			spec: `
listeners:
- {name: public, port: 443}
- {name: inner-a, tls: {certificateRefs: [{name: a}]}}
- {name: inner-b, tls: {certificateRefs: [{name: b}]}}
routes:
- {name: to-a, listeners: [public], match: {protocol: tls, sni: [a.example.com]}, listener: inner-a}
- {name: to-b, listeners: [public], match: {protocol: tls, sni: [b.example.com]}, listener: inner-b}`,
		},
		{
			name: "16 listeners",
			spec: manyListeners(16),
		},
		{
			name: "HTTPS and HTTP/3 on 443, OpenVPN and WireGuard beside QUIC",
			spec: `
listeners:
- {name: https, port: 443}
- {name: h3, port: 443, protocol: UDP, probeTimeout: 1s, maxConnections: 100000, maxConnectionsPerClient: 64, maxConnectionRatePerClient: 32}
- {name: tls-explicit, port: 8443, protocol: TCP}
routes:
- {name: web, match: {protocol: tls, sni: ["*.example.com"], alpn: [h2, http/1.1]}, backend: {service: {name: web, port: 443}, proxyProtocol: v2}}
- {name: web-h3, match: {protocol: quic, sni: ["*.example.com", Example.ORG], alpn: [h3]}, backend: {service: {name: web, port: https}}}
- {name: wg, match: {protocol: wireguard}, idleTimeout: 3m, backend: {service: {name: wg, port: 51820}}}
- {name: dns, match: {protocol: dns}, backend: {address: "10.0.0.53:53"}}
- {name: vpn, match: {protocol: openvpn}, backend: {service: {name: openvpn, port: 1194}}}
- {name: probe, listeners: [h3], match: {protocol: bytes, regex: "^\\x00\\x01"}, ` + ok + `}
- {name: legacy, listeners: [https], match: {protocol: bytes, prefix: "HELLO"}, backend: {service: {name: legacy, port: 9000}, proxyProtocol: v1}}
- {name: rest, listeners: [h3], match: {protocol: any}, ` + ok + `}`,
		},
		{
			name: "UDP listeners only, routes that leave out listeners",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}, {name: wg, port: 51820, protocol: UDP}]
routes:
- {name: dns, match: {protocol: dns}, ` + ok + `}
- {name: wg, match: {protocol: wireguard}, ` + ok + `}`,
		},
		{
			name: "an internal listener said TCP",
			spec: `
listeners:
- {name: public, port: 443}
- {name: inner, protocol: TCP, tls: {certificateRefs: [{name: cert}]}}`,
		},
		{
			name: "address backends and tunnel targets",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, backend: {address: "[::1]:22", proxyProtocol: v1}}
- name: tunnel
  listeners: [public]
  match: {protocol: websocket}
  tunnel:
    auth: {tokenSecretRef: {name: token}}
    allow: [{address: "dns.example.com:53", protocol: UDP}, {service: {name: db, port: 5432}, protocol: TCP}]`,
		},
		{
			name: "tunnel open to anyone, said so",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: 22}}]}}`,
		},
		{
			name: "tunnel token with none false",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: tunnel, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: false, tokenSecretRef: {name: token}}, allow: [{service: {name: sshd, port: 22}}]}}`,
		},
		{
			name: "tunnel origins",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- name: tunnel
  listeners: [public]
  match: {protocol: websocket}
  tunnel:
    auth: {tokenSecretRef: {name: token}}
    allowedOrigins: [https://app.example.com, "HTTP://LocalHost:8080", "https://[2001:db8::1]:8443", "chrome-extension://abcdefghijklmnop"]
    allow: [{service: {name: sshd, port: 22}}]`,
		},
		{
			name: "routes that name no listener",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, match: {protocol: ssh}, ` + ok + `}
- {name: silent, match: {protocol: timeout}, ` + ok + `}
- {name: rest, match: {protocol: any}, ` + ok + `}`,
		},
		{
			name: "a listener action from a route that names no listener",
			spec: `
listeners:
- {name: public, port: 443}
- {name: alt, port: 8443}
- {name: inner, tls: {certificateRefs: [{name: cert}]}}
routes:
- {name: unwrap, match: {protocol: tls}, listener: inner}
- {name: web, listeners: [inner], match: {protocol: http}, ` + ok + `}`,
		},
		{
			name: "one route on two listeners, timeout and any",
			spec: `
listeners: [{name: a, port: 443}, {name: b, port: 8443}]
routes:
- {name: ssh, listeners: [a, b], match: {protocol: ssh}, ` + ok + `}
- {name: silent, listeners: [a], match: {protocol: timeout}, ` + ok + `}
- {name: rest, listeners: [a, b], match: {protocol: any}, ` + ok + `}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := createSpec(t, ns, tc.spec); err != nil {
				t.Fatalf("the API server refused a valid PortMux:\n  %s", strings.Join(refusalCauses(t, err), "\n  "))
			}
		})
	}
}

// manyListeners returns a spec with n listeners on ports 1001...
func manyListeners(n int) string {
	var b strings.Builder
	b.WriteString("listeners:\n")
	for i := range n {
		fmt.Fprintf(&b, "- {name: l%d, port: %d}\n", i, 1001+i)
	}
	return b.String()
}

// createSpec creates a PortMux with the given spec (YAML) in ns, under a
// name generated from the test's name.
func createSpec(t *testing.T, ns, spec string) error {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatalf("test spec is not YAML: %v\n%s", err, spec)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": s}}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("PortMux"))
	u.SetNamespace(ns)
	u.SetGenerateName("case-")
	return env.Client.Create(t.Context(), u)
}

// refusalCauses returns each cause of an Invalid refusal as
// "field: message", the way kubectl prints them.
func refusalCauses(t *testing.T, err error) []string {
	t.Helper()
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !apierrors.IsInvalid(err) {
		t.Fatalf("want an Invalid refusal from the API server, got: %v", err)
	}
	details := status.Status().Details
	if details == nil || len(details.Causes) == 0 {
		t.Fatalf("refusal without causes: %v", err)
	}
	var causes []string
	for _, c := range details.Causes {
		causes = append(causes, c.Field+": "+c.Message)
	}
	return causes
}

// TestListenerProtocolDefaultsToTCP: a listener that says no protocol is
// stored as TCP, the listeners of PortMuxes written before UDP existed
// among them, so that every reader (the CEL rules, compile, kubectl get)
// sees the transport it binds.
func TestListenerProtocolDefaultsToTCP(t *testing.T) {
	ns := newNamespace(t)
	pm := &v1alpha1.PortMux{}
	pm.Namespace, pm.Name = ns, "defaults"
	pm.Spec.Listeners = []v1alpha1.Listener{
		{Name: "https", Port: ptr.To[int32](443)},
		{Name: "h3", Port: ptr.To[int32](443), Protocol: v1alpha1.TransportUDP},
		{Name: "inner", TLS: &v1alpha1.ListenerTLS{CertificateRefs: []v1alpha1.SecretRef{{Name: "cert"}}}},
	}
	if err := env.Client.Create(t.Context(), pm); err != nil {
		t.Fatalf("creating %s: %v", pm.Name, err)
	}
	var got v1alpha1.PortMux
	if err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: pm.Name}, &got); err != nil {
		t.Fatal(err)
	}
	var protocols []v1alpha1.TransportProtocol
	for _, l := range got.Spec.Listeners {
		protocols = append(protocols, l.Protocol)
	}
	if want := []v1alpha1.TransportProtocol{"TCP", "UDP", "TCP"}; !slices.Equal(protocols, want) {
		t.Errorf("stored listener protocols = %v, want %v", protocols, want)
	}
}
