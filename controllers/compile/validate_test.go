package compile_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// Validate is all the checking `portmux serve` gets: its files never meet
// the API server's schema and CEL rules. Each invalid spec below must be
// refused with exactly the listed errors, in order, each containing the
// given text, which starts with the field path. Specs are YAML, as users
// write them.

// okBackend is a route action that is always valid, to keep the rows short.
const okBackend = `backend: {service: {name: sshd, port: 22}}`

type validateRow struct {
	name string
	spec string
	want []string // substrings of the errors, in order; none for a valid spec
	// bug, when set, says why Validate does not give want yet: the row is
	// skipped while it fails and must be unmarked once it passes.
	bug string
}

func TestValidateRefuses(t *testing.T) {
	runValidateRows(t, []validateRow{
		// Listeners.
		{
			name: "no listeners",
			spec: `listeners: []`,
			want: []string{`spec.listeners: Required value: at least one listener`},
		},
		{
			name: "listener name not a DNS label",
			spec: `
listeners: [{name: Public, port: 443}]`,
			want: []string{`spec.listeners[0].name: Invalid value: "Public": must be a DNS label: at most 63 lower case letters, digits and '-', starting and ending with a letter or digit`},
		},
		{
			name: "listener name with a trailing dash",
			spec: `
listeners: [{name: public-, port: 443}]`,
			want: []string{`spec.listeners[0].name: Invalid value: "public-": must be a DNS label`},
		},
		{
			name: "duplicate listener names",
			spec: `
listeners: [{name: public, port: 443}, {name: public, port: 8443}]`,
			want: []string{`spec.listeners[1]: Duplicate value: {"name":"public"}`},
		},
		{
			name: "port 0",
			spec: `
listeners: [{name: public, port: 0}]`,
			want: []string{`spec.listeners[0].port: Invalid value: 0: must be between 1 and 65535`},
		},
		{
			name: "port 65536",
			spec: `
listeners: [{name: public, port: 65536}]`,
			want: []string{`spec.listeners[0].port: Invalid value: 65536: must be between 1 and 65535`},
		},
		{
			name: "two listeners on one port",
			spec: `
listeners: [{name: a, port: 443}, {name: b, port: 443}]`,
			want: []string{`spec.listeners[1].port: Duplicate value: 443: also the TCP port of listener a: give each its own port, or make one TCP and the other UDP`},
		},
		{
			name: "internal listener without tls",
			spec: `
listeners: [{name: inner}]`,
			want: []string{`spec.listeners[0].port: Required value: an internal listener (one without port) must set tls: it terminates TLS for streams a route hands to it; set port to bind a port instead`},
		},
		{
			name: "internal listener expecting a PROXY header",
			spec: `
listeners: [{name: inner, proxyProtocol: {trustedCIDRs: [10.0.0.0/8]}, tls: {certificateRefs: [{name: c}]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol: Invalid value: proxyProtocol applies only to a listener with a port: an internal listener receives streams from other listeners, never from a load balancer`},
		},
		{
			name: "per-client limits of 0",
			spec: `
listeners: [{name: public, port: 443, maxConnectionsPerClient: 0, maxConnectionRatePerClient: 0}]`,
			want: []string{
				`spec.listeners[0].maxConnectionsPerClient: Invalid value: 0: must be between 1 and 1000000`,
				`spec.listeners[0].maxConnectionRatePerClient: Invalid value: 0: must be between 1 and 1000000`,
			},
		},
		{
			name: "route idleTimeout out of range",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: a, listeners: [public], idleTimeout: 10ms, match: {protocol: ssh}, backend: {address: "127.0.0.1:22"}}
- {name: b, listeners: [public], idleTimeout: 200h, match: {protocol: tls}, backend: {address: "127.0.0.1:22"}}`,
			want: []string{
				`spec.routes[0].idleTimeout: Invalid value: "10ms": idleTimeout must be between 1s and 168h`,
				`spec.routes[1].idleTimeout: Invalid value: "200h0m0s": idleTimeout must be between 1s and 168h`,
			},
		},
		{
			name: "PROXY header trusted from no one",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: []}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs: Required value: list at least one network that may send PROXY headers (0.0.0.0/0 and ::/0 trust everyone; proxyProtocol: true is no longer accepted)`},
		},
		{
			name: "trusted CIDRs that are not CIDRs, or not network addresses",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [10.0.0.1, 10.0.0.0/33, lb.example.com/32, "fe80::%eth0/64", 10.1.2.3/8, "2001:db8::1/32", 192.0.2.0/24, 192.0.2.0/24]}}]`,
			want: []string{
				`spec.listeners[0].proxyProtocol.trustedCIDRs[0]: Invalid value: "10.0.0.1": must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32`,
				`spec.listeners[0].proxyProtocol.trustedCIDRs[1]: Invalid value: "10.0.0.0/33": must be a CIDR`,
				`spec.listeners[0].proxyProtocol.trustedCIDRs[2]: Invalid value: "lb.example.com/32": must be a CIDR`,
				`spec.listeners[0].proxyProtocol.trustedCIDRs[3]: Invalid value: "fe80::%eth0/64": must be a CIDR`,
				`spec.listeners[0].proxyProtocol.trustedCIDRs[4]: Invalid value: "10.1.2.3/8": must be written as its network address: the bits past the prefix length must be zero (10.0.0.0/8, not 10.1.2.3/8)`,
				`spec.listeners[0].proxyProtocol.trustedCIDRs[5]: Invalid value: "2001:db8::1/32": must be written as its network address`,
				`spec.listeners[0].proxyProtocol.trustedCIDRs[7]: Duplicate value: "192.0.2.0/24"`,
			},
		},
		{
			name: "probeTimeout too short",
			spec: `
listeners: [{name: public, port: 443, probeTimeout: 5ms}]`,
			want: []string{`spec.listeners[0].probeTimeout: Invalid value: "5ms": probeTimeout must be between 10ms and 60s`},
		},
		{
			name: "probeTimeout too long",
			spec: `
listeners: [{name: public, port: 443, probeTimeout: 2m}]`,
			want: []string{`spec.listeners[0].probeTimeout: Invalid value: "2m0s": probeTimeout must be between 10ms and 60s`},
		},
		{
			name: "maxConnections 0",
			spec: `
listeners: [{name: public, port: 443, maxConnections: 0}]`,
			want: []string{`spec.listeners[0].maxConnections: Invalid value: 0: must be between 1 and 1000000`},
		},
		{
			name: "tls without certificates",
			spec: `
listeners: [{name: public, port: 443, tls: {certificateRefs: []}}]`,
			want: []string{`spec.listeners[0].tls.certificateRefs: Required value: at least one Secret`},
		},

		// Routes.
		{
			name: "route name not a DNS label",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: SSH, listeners: [public], match: {protocol: ssh}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].name: Invalid value: "SSH": must be a DNS label`},
		},
		{
			name: "duplicate route names",
			spec: `
listeners: [{name: public, port: 443}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh}, ` + okBackend + `}
- {name: ssh, listeners: [public], match: {protocol: any}, ` + okBackend + `}`,
			want: []string{`spec.routes[1]: Duplicate value: {"name":"ssh"}`},
		},
		{
			name: "route on an empty list of listeners",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [], match: {protocol: ssh}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].listeners: Too few: 0: must have at least 1 item, or leave listeners out to attach the route to every listener with a port`},
		},
		{
			name: "route on every listener with a port, handing to one of them",
			spec: `
listeners: [{name: public, port: 443}, {name: alt, port: 8443}]
routes: [{name: unwrap, match: {protocol: tls}, listener: alt}]`,
			want: []string{`spec.routes[0].listener: Invalid value: "alt": must name an internal listener`},
		},
		{
			name: "route on an undeclared listener",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public, pubic], match: {protocol: ssh}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].listeners[1]: Not found: "pubic": must be a listener declared in spec.listeners: add the listener or fix the name`},
		},

		// UDP listeners: the API server's rules, item by item.
		{
			name: "two UDP listeners on one port",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP}, {name: vpn, port: 443, protocol: UDP}]`,
			want: []string{`spec.listeners[1].port: Duplicate value: 443: also the UDP port of listener h3: give each its own port, or make one TCP and the other UDP`},
		},
		{
			name: "a TCP listener by default and one said TCP on one port",
			spec: `
listeners: [{name: https, port: 443}, {name: h3, port: 443, protocol: UDP}, {name: other, port: 443, protocol: TCP}]`,
			want: []string{`spec.listeners[2].port: Duplicate value: 443: also the TCP port of listener https`},
		},
		{
			name: "listener protocol not in the enum",
			spec: `
listeners: [{name: a, port: 443, protocol: SCTP}, {name: b, port: 53, protocol: udp}]`,
			want: []string{
				`spec.listeners[0].protocol: Unsupported value: "SCTP": supported values: "TCP", "UDP"`,
				`spec.listeners[1].protocol: Unsupported value: "udp": supported values: "TCP", "UDP"`,
			},
		},
		{
			name: "UDP listener without a port",
			spec: `
listeners: [{name: public, port: 443}, {name: dns, protocol: UDP}]`,
			want: []string{`spec.listeners[1].port: Required value: a UDP listener needs a port: internal listeners take the TLS streams routes hand them, and only TCP listeners are internal`},
		},
		{
			name: "UDP listener terminating TLS and expecting PROXY headers",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP, tls: {certificateRefs: [{name: c}]}, proxyProtocol: {trustedCIDRs: [10.0.0.0/8]}}]`,
			want: []string{
				`spec.listeners[0].tls: Invalid value: tls applies only to TCP listeners: a UDP listener forwards datagrams as they are (QUIC carries its own TLS, which the backend terminates)`,
				`spec.listeners[0].proxyProtocol: Invalid value: proxyProtocol applies only to TCP listeners: a PROXY header starts a stream, and datagrams carry none`,
			},
		},
		{
			name: "ssh on a UDP listener, named beside a TCP one",
			spec: `
listeners: [{name: public, port: 443}, {name: h3, port: 443, protocol: UDP}]
routes: [{name: ssh, listeners: [public, h3], match: {protocol: ssh}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].listeners[1]: Invalid value: "h3": listener h3 is UDP, which does not carry match.protocol ssh: it is recognised on TCP listeners only; name a TCP listener`},
		},
		{
			name: "timeout on a UDP listener",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}]
routes: [{name: silent, listeners: [dns], match: {protocol: timeout}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].listeners[0]: Invalid value: "dns": listener dns is UDP, which does not carry match.protocol timeout`},
		},
		{
			name: "a tunnel on a UDP listener",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}]
routes: [{name: tunnel, listeners: [dns], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: dns, port: 53}, protocol: UDP}]}}]`,
			want: []string{`spec.routes[0].listeners[0]: Invalid value: "dns": listener dns is UDP, which does not carry match.protocol websocket`},
		},
		{
			name: "a hand-off from a UDP listener",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP}, {name: inner, tls: {certificateRefs: [{name: c}]}}]
routes: [{name: unwrap, listeners: [h3], match: {protocol: tls}, listener: inner}]`,
			want: []string{`spec.routes[0].listeners[0]: Invalid value: "h3": listener h3 is UDP, which does not carry match.protocol tls`},
		},
		{
			name: "backend mode http on a UDP listener",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP}]
routes: [{name: web, listeners: [h3], match: {protocol: http}, backend: {service: {name: web, port: 80}, mode: http}}]`,
			want: []string{`spec.routes[0].listeners[0]: Invalid value: "h3": listener h3 is UDP, which does not carry match.protocol http`},
		},
		{
			name: "quic that leaves out listeners, and no UDP listener",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: h3, match: {protocol: quic, sni: [example.com]}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.protocol: Invalid value: "quic": the route leaves out listeners, so it attaches to every listener with a port whose protocol carries quic, and none does: it is recognised in UDP datagrams only; name a UDP listener (protocol: UDP)`},
		},
		{
			name: "ssh that leaves out listeners, and only UDP listeners",
			spec: `
listeners: [{name: h3, port: 443, protocol: UDP}]
routes: [{name: ssh, match: {protocol: ssh}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.protocol: Invalid value: "ssh": the route leaves out listeners, so it attaches to every listener with a port whose protocol carries ssh, and none does: it is recognised on TCP listeners only; name a TCP listener`},
		},
		{
			name: "backend proxyProtocol on a route naming a UDP listener",
			spec: `
listeners: [{name: public, port: 1194}, {name: vpn, port: 1194, protocol: UDP}]
routes: [{name: vpn, listeners: [public, vpn], match: {protocol: openvpn}, backend: {service: {name: openvpn, port: 1194}, proxyProtocol: v2}}]`,
			want: []string{`spec.routes[0].backend.proxyProtocol: Invalid value: "v2": the route is on UDP listener vpn, whose sessions reach their backend without a PROXY header: name the route's TCP listeners in listeners, or leave proxyProtocol out`},
		},
		{
			name: "backend proxyProtocol on a route that leaves out listeners and reaches a UDP one",
			spec: `
listeners: [{name: public, port: 1194}, {name: vpn, port: 1194, protocol: UDP}]
routes: [{name: vpn, match: {protocol: openvpn}, backend: {service: {name: openvpn, port: 1194}, proxyProtocol: v1}}]`,
			want: []string{`spec.routes[0].backend.proxyProtocol: Invalid value: "v1": the route is on UDP listener vpn`},
		},
		{
			name: "sni on dns",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}]
routes: [{name: dns, listeners: [dns], match: {protocol: dns, sni: [example.com]}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.sni: Invalid value: sni applies only to protocols tls and quic`},
		},
		{
			name: "an unknown protocol on a UDP listener is said once",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}]
routes: [{name: a, listeners: [dns], match: {protocol: stun}, ` + okBackend + `}, {name: b, match: {protocol: stun}, ` + okBackend + `}]`,
			want: []string{
				`spec.routes[0].match.protocol: Unsupported value: "stun"`,
				`spec.routes[1].match.protocol: Unsupported value: "stun"`,
			},
		},

		// Matches.
		{
			name: "a datagram protocol on a TCP listener",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: h3, listeners: [public], match: {protocol: quic}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].listeners[0]: Invalid value: "public": listener public is TCP, which does not carry match.protocol quic: it is recognised in UDP datagrams only; name a UDP listener (protocol: UDP)`},
		},
		{
			name: "unknown protocol",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ftp, listeners: [public], match: {protocol: ftp}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.protocol: Unsupported value: "ftp": supported values: "ssh", "tls", "http", "websocket", "openvpn", "socks5", "bytes", "any", "timeout", "quic", "wireguard", "dns"`},
		},
		{
			name: "sni on ssh",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh, sni: [a.example.com]}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.sni: Invalid value: sni applies only to protocols tls and quic`},
		},
		{
			name: "alpn on http",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: web, listeners: [public], match: {protocol: http, alpn: [h2]}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.alpn: Invalid value: alpn applies only to protocols tls and quic`},
		},
		{
			name: "host on tls",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: git, listeners: [public], match: {protocol: tls, host: [git.example.com]}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.host: Invalid value: host applies only to protocols http and websocket`},
		},
		{
			name: "pathPrefix on ssh",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh, pathPrefix: /x}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.pathPrefix: Invalid value: pathPrefix applies only to protocols http and websocket`},
		},
		{
			name: "prefix on http",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: web, listeners: [public], match: {protocol: http, prefix: GET}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.prefix: Invalid value: prefix applies only to protocol bytes`},
		},
		{
			name: "bytes without prefix or regex",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: raw, listeners: [public], match: {protocol: bytes}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match: Invalid value: protocol bytes needs exactly one of prefix or regex`},
		},
		{
			name: "bytes with prefix and regex",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: raw, listeners: [public], match: {protocol: bytes, prefix: GET, regex: ^GET}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match: Invalid value: protocol bytes needs exactly one of prefix or regex`},
		},
		{
			name: "regex that does not compile",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: raw, listeners: [public], match: {protocol: bytes, regex: "^SSH-("}, ` + okBackend + `}]`,
			want: []string{"spec.routes[0].match.regex: Invalid value: \"^SSH-(\": does not compile: error parsing regexp: missing closing ): `^SSH-(`"},
		},
		{
			name: "regex with a Perl construct RE2 lacks",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: raw, listeners: [public], match: {protocol: bytes, regex: '^(?=SSH)'}, ` + okBackend + `}]`,
			want: []string{"spec.routes[0].match.regex: Invalid value: \"^(?=SSH)\": does not compile: error parsing regexp: invalid or unsupported Perl syntax: `(?=`"},
		},
		{
			name: "pathPrefix without a leading slash",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: web, listeners: [public], match: {protocol: http, pathPrefix: app}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.pathPrefix: Invalid value: "app": must start with /`},
		},

		// Actions.
		{
			name: "no action",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}}]`,
			want: []string{`spec.routes[0]: Invalid value: a route needs exactly one action: set one of backend, listener or tunnel`},
		},
		{
			name: "two actions",
			spec: `
listeners: [{name: public, port: 443}, {name: inner, tls: {certificateRefs: [{name: c}]}}]
routes: [{name: git, listeners: [public], match: {protocol: tls}, listener: inner, ` + okBackend + `}]`,
			want: []string{`spec.routes[0]: Invalid value: a route needs exactly one action: set one of backend, listener or tunnel`},
		},
		{
			name: "backend with service and address",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: 22}, address: "10.0.0.1:22"}}]`,
			want: []string{`spec.routes[0].backend: Invalid value: a backend needs exactly one of service or address`},
		},
		{
			name: "backend with neither service nor address",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {mode: tcp}}]`,
			want: []string{`spec.routes[0].backend: Invalid value: a backend needs exactly one of service or address`},
		},
		{
			name: "backend address without a port",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {address: sshd.internal}}]`,
			want: []string{`spec.routes[0].backend.address: Invalid value: "sshd.internal": must be host:port`},
		},
		{
			name: "backend address without a host",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {address: ":22"}}]`,
			want: []string{`spec.routes[0].backend.address: Invalid value: ":22": must be host:port`},
		},
		{
			name: "backend address port out of range",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {address: "10.0.0.1:70000"}}]`,
			want: []string{`spec.routes[0].backend.address: Invalid value: "10.0.0.1:70000": port must be between 1 and 65535`},
		},
		{
			name: "mode http on ssh",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: 22}, mode: http}}]`,
			want: []string{`spec.routes[0].backend.mode: Invalid value: backend.mode http needs match.protocol http or websocket: only HTTP requests can be reverse-proxied`},
		},
		{
			name: "mode http with a PROXY header",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: web, listeners: [public], match: {protocol: http}, backend: {service: {name: web, port: 80}, mode: http, proxyProtocol: v2}}]`,
			want: []string{`spec.routes[0].backend.proxyProtocol: Invalid value: proxyProtocol cannot be combined with mode http: http mode passes the client address in X-Forwarded-For`},
		},
		{
			name: "listener action to an undeclared listener",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: unwrap, listeners: [public], match: {protocol: tls}, listener: inner}]`,
			want: []string{`spec.routes[0].listener: Not found: "inner": must name a listener declared in spec.listeners: an internal one, without a port`},
		},
		{
			name: "listener action to a listener with a port",
			spec: `
listeners: [{name: public, port: 443}, {name: alt, port: 8443}]
routes: [{name: unwrap, listeners: [public], match: {protocol: tls}, listener: alt}]`,
			want: []string{`spec.routes[0].listener: Invalid value: "alt": must name an internal listener (one declared without port): a listener with a port takes connections from clients, not from routes`},
		},
		{
			name: "listener action to the listener the route is on",
			spec: `
listeners: [{name: public, port: 443}, {name: inner, tls: {certificateRefs: [{name: c}]}}]
routes: [{name: loop, listeners: [inner], match: {protocol: tls}, listener: inner}]`,
			want: []string{`spec.routes[0].listener: Invalid value: a route cannot hand connections to a listener it is attached to: remove the listener from listeners or pick another one`},
		},
		{
			name: "listener action on a non-TLS match",
			spec: `
listeners: [{name: public, port: 443}, {name: inner, tls: {certificateRefs: [{name: c}]}}]
routes: [{name: unwrap, listeners: [public], match: {protocol: ssh}, listener: inner}]`,
			want: []string{`spec.routes[0].listener: Invalid value: listener needs match.protocol tls: the internal listener terminates the TLS stream it is handed`},
		},
		{
			name: "tunnel on an http match",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: http}, tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: 22}}]}}]`,
			want: []string{`spec.routes[0].tunnel: Invalid value: tunnel needs match.protocol websocket: a tunnel is a WebSocket endpoint`},
		},
		{
			name: "tunnel allowing nothing",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: []}}]`,
			want: []string{`spec.routes[0].tunnel.allow: Required value: list at least one target`},
		},
		{
			name: "tunnel target with service and address",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: 22}, address: "10.0.0.1:22"}]}}]`,
			want: []string{`spec.routes[0].tunnel.allow[0]: Invalid value: a tunnel target needs exactly one of service or address`},
		},
		{
			name: "tunnel target with neither",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{protocol: UDP}]}}]`,
			want: []string{`spec.routes[0].tunnel.allow[0]: Invalid value: a tunnel target needs exactly one of service or address`},
		},
		{
			name: "tunnel target address without a port",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: 22}}, {address: wg.internal}]}}]`,
			want: []string{`spec.routes[0].tunnel.allow[1].address: Invalid value: "wg.internal": must be host:port`},
		},
		{
			name: "tunnel without auth",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {allow: [{service: {name: sshd, port: 22}}]}}]`,
			want: []string{`spec.routes[0].tunnel.auth: Required value: a tunnel needs auth: set auth.tokenSecretRef to require a bearer token, or auth.none: true to let anyone who reaches the route open it`},
		},
		{
			name: "tunnel auth with neither token nor none",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: false}, allow: [{service: {name: sshd, port: 22}}]}}]`,
			want: []string{`spec.routes[0].tunnel.auth: Invalid value: auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)`},
		},
		{
			name: "tunnel auth with a token and none",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true, tokenSecretRef: {name: tok}}, allow: [{service: {name: sshd, port: 22}}]}}]`,
			want: []string{`spec.routes[0].tunnel.auth: Invalid value: auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)`},
		},
		{
			name: "tunnel origins that are not origins, and one twice",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: ["https://app.example.com/", app.example.com, "https://app.example.com:99999", "*", "null", "https://ok.example.com", "https://ok.example.com"], allow: [{service: {name: sshd, port: 22}}]}}]`,
			want: []string{
				`spec.routes[0].tunnel.allowedOrigins[0]: Invalid value: "https://app.example.com/": must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com`,
				`spec.routes[0].tunnel.allowedOrigins[1]: Invalid value: "app.example.com": must be a web origin`,
				`spec.routes[0].tunnel.allowedOrigins[2]: Invalid value: "https://app.example.com:99999": must be a web origin`,
				`spec.routes[0].tunnel.allowedOrigins[3]: Invalid value: "*": must be a web origin`,
				`spec.routes[0].tunnel.allowedOrigins[4]: Invalid value: "null": must be a web origin`,
				`spec.routes[0].tunnel.allowedOrigins[6]: Duplicate value: "https://ok.example.com"`,
			},
		},

		// Every error is reported, not only the first.
		{
			name: "several errors at once",
			spec: `
listeners: [{name: Public, port: 443}, {name: inner}]
routes:
- {name: ssh, listeners: [public], match: {protocol: ssh, sni: [x.example.com]}}
- {name: raw, listeners: [inner], match: {protocol: bytes, regex: "("}, ` + okBackend + `}`,
			want: []string{
				`spec.listeners[0].name: Invalid value: "Public": must be a DNS label`,
				`spec.listeners[1].port: Required value: an internal listener (one without port) must set tls`,
				`spec.routes[0].listeners[0]: Not found: "public": must be a listener declared in spec.listeners`,
				`spec.routes[0].match.sni: Invalid value: sni applies only to protocols tls and quic`,
				`spec.routes[0]: Invalid value: a route needs exactly one action`,
				`spec.routes[1].match.regex: Invalid value: "(": does not compile`,
			},
		},

		// What the CRD's schema refuses, for `portmux serve`.
		// Enums: a typo would silently change behaviour.
		{
			name: "backend mode not in the enum",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: web, listeners: [public], match: {protocol: http}, backend: {service: {name: web, port: 80}, mode: HTTP}}]`,
			want: []string{`spec.routes[0].backend.mode: Unsupported value: "HTTP": supported values: "tcp", "http"`},
		},
		{
			name: "backend proxyProtocol not in the enum",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: vpn, listeners: [public], match: {protocol: openvpn}, backend: {service: {name: openvpn, port: 1194}, proxyProtocol: V2}}]`,
			want: []string{`spec.routes[0].backend.proxyProtocol: Unsupported value: "V2": supported values: "v1", "v2"`},
		},
		{
			name: "tunnel target protocol not in the enum",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: wireguard, port: 51820}, protocol: udp}]}}]`,
			want: []string{`spec.routes[0].tunnel.allow[0].protocol: Unsupported value: "udp": supported values: "TCP", "UDP"`},
		},
		// Service ports: the schema's range and name pattern.
		{
			name: "backend Service port 0",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: sshd, port: 0}}}]`,
			want: []string{"spec.routes[0].backend.service.port: Invalid value: 0: port must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')"},
		},
		{
			name: "tunnel Service port name not a port name",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allow: [{service: {name: sshd, port: SSH}}]}}]`,
			want: []string{"spec.routes[0].tunnel.allow[0].service.port: Invalid value: \"SSH\": port must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')"},
		},
		// Names and sizes.
		{
			name: "listener name longer than 63",
			spec: `
listeners: [{name: ` + strings.Repeat("a", 64) + `, port: 443}]`,
			want: []string{`spec.listeners[0].name: Invalid value: "` + strings.Repeat("a", 64) + `": must be a DNS label`},
		},
		{
			name: "maxConnections over the maximum",
			spec: `
listeners: [{name: public, port: 443, maxConnections: 2000000}]`,
			want: []string{`spec.listeners[0].maxConnections: Invalid value: 2000000: must be between 1 and 1000000`},
		},
		{
			name: "sni that is not a host name",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: git, listeners: [public], match: {protocol: tls, sni: ["*"]}, ` + okBackend + `}]`,
			want: []string{`spec.routes[0].match.sni[0]: Invalid value: "*": must be a host name, optionally starting with "*."`},
		},
		{
			name: "tunnel token Secret without a name",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {tokenSecretRef: {name: ""}}, allow: [{service: {name: sshd, port: 22}}]}}]`,
			want: []string{`spec.routes[0].tunnel.auth.tokenSecretRef.name: Required value: the name of the token Secret`},
		},
		{
			name: "Service without a name, Service port name longer than 15",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: "", port: a-very-long-port-name}}}]`,
			want: []string{
				`spec.routes[0].backend.service.name: Required value: the name of a Service`,
				`spec.routes[0].backend.service.port: Too long: may not be more than 15 bytes`,
			},
		},
		{
			name: "Service name longer than 63",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: ssh, listeners: [public], match: {protocol: ssh}, backend: {service: {name: ` + strings.Repeat("s", 64) + `, port: 22}}}]`,
			want: []string{`spec.routes[0].backend.service.name: Too long: may not be more than 63 bytes`},
		},
		{
			name: "33 trusted CIDRs",
			spec: `
listeners: [{name: public, port: 443, proxyProtocol: {trustedCIDRs: [` + cidrs(33) + `]}}]`,
			want: []string{`spec.listeners[0].proxyProtocol.trustedCIDRs: Too many: 33: must have at most 32 items`},
		},
		{
			name: "17 allowed origins",
			spec: `
listeners: [{name: public, port: 443}]
routes: [{name: t, listeners: [public], match: {protocol: websocket}, tunnel: {auth: {none: true}, allowedOrigins: [` + origins(17) + `], allow: [{service: {name: sshd, port: 22}}]}}]`,
			want: []string{`spec.routes[0].tunnel.allowedOrigins: Too many: 17: must have at most 16 items`},
		},
	})
}

// cidrs returns n distinct networks, as a YAML flow sequence's items.
func cidrs(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("10.%d.0.0/16", i)
	}
	return strings.Join(items, ", ")
}

// origins returns n distinct web origins, as a YAML flow sequence's items.
func origins(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("https://app%d.example.com", i)
	}
	return strings.Join(items, ", ")
}

func TestValidateAccepts(t *testing.T) {
	runValidateRows(t, []validateRow{
		{
			name: "one listener, no routes",
			spec: `listeners: [{name: public, port: 443}]`,
		},
		{
			name: "every listener option",
			spec: `
listeners:
- {name: public, port: 443, probeTimeout: 10ms, maxConnections: 1, proxyProtocol: {trustedCIDRs: [10.0.0.0/8, 192.0.2.7/32, "2001:db8::/32"]}}
- {name: anyone, port: 8080, proxyProtocol: {trustedCIDRs: [0.0.0.0/0, "::/0"]}}
- {name: slow, port: 8443, probeTimeout: 60s, tls: {certificateRefs: [{name: a}, {name: b}], alpn: [h2, http/1.1]}}
- {name: inner, tls: {certificateRefs: [{name: a}]}}`,
		},
		{
			name: "every protocol and action",
			spec: `
listeners: [{name: public, port: 443}, {name: inner, tls: {certificateRefs: [{name: c}]}}]
routes:
- {name: ssh, listeners: [public, inner], match: {protocol: ssh}, backend: {service: {name: sshd, port: ssh}}}
- {name: vpn, listeners: [public], match: {protocol: openvpn}, backend: {service: {name: openvpn, port: 1194}, proxyProtocol: v2}}
- {name: socks, listeners: [public], match: {protocol: socks5}, backend: {address: "10.0.0.1:1080", mode: tcp, proxyProtocol: v1}}
- {name: unwrap, listeners: [public], match: {protocol: tls, sni: ["*.example.com"], alpn: [h2]}, listener: inner}
- {name: tunnel, listeners: [inner], match: {protocol: websocket, host: [vpn.example.com], pathPrefix: /t}, tunnel: {auth: {tokenSecretRef: {name: tok}}, allow: [{service: {name: wg, port: 51820}, protocol: UDP}, {address: "[fd00::1]:22", protocol: TCP}]}}
- {name: open, listeners: [inner], match: {protocol: websocket, pathPrefix: /open}, tunnel: {auth: {none: true}, allowedOrigins: [https://app.example.com, "HTTP://LocalHost:8080", "https://[2001:db8::1]:8443", "chrome-extension://abcdefghijklmnop"], allow: [{service: {name: sshd, port: 22}}]}}
- {name: web, listeners: [inner], match: {protocol: http, pathPrefix: /}, backend: {service: {name: web, port: 80}, mode: http}}
- {name: raw, listeners: [public], match: {protocol: bytes, prefix: "\x16\x03"}, backend: {address: "localhost:443"}}
- {name: re, listeners: [public], match: {protocol: bytes, regex: '^\x16\x03[\x00-\x04]'}, backend: {address: "localhost:443"}}
- {name: silent, listeners: [public], match: {protocol: timeout}, backend: {service: {name: sshd, port: 22}}}
- {name: rest, listeners: [public], match: {protocol: any}, backend: {service: {name: web, port: 443}}}`,
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
- {name: probe, listeners: [h3], match: {protocol: bytes, regex: '^\x00\x01'}, ` + okBackend + `}
- {name: legacy, listeners: [https], match: {protocol: bytes, prefix: "HELLO"}, backend: {service: {name: legacy, port: 9000}, proxyProtocol: v1}}
- {name: rest, listeners: [h3], match: {protocol: any}, ` + okBackend + `}`,
		},
		{
			name: "UDP listeners only, routes that leave out listeners",
			spec: `
listeners: [{name: dns, port: 53, protocol: UDP}, {name: wg, port: 51820, protocol: UDP}]
routes:
- {name: dns, match: {protocol: dns}, ` + okBackend + `}
- {name: wg, match: {protocol: wireguard}, ` + okBackend + `}`,
		},
		{
			name: "routes that name no listener",
			spec: `
listeners: [{name: public, port: 443}, {name: alt, port: 8443}, {name: inner, tls: {certificateRefs: [{name: c}]}}]
routes:
- {name: ssh, match: {protocol: ssh}, ` + okBackend + `}
- {name: unwrap, match: {protocol: tls}, listener: inner}
- {name: web, listeners: [inner], match: {protocol: http}, ` + okBackend + `}`,
		},
	})
}

// TestValidateAcceptsTheSamples checks the PortMux samples shipped in
// config/samples: `portmux serve` must take what `kubectl apply` takes; and
// `make serve`'s config/serve/demo.yaml.
func TestValidateAcceptsTheSamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "portmux_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no samples found in config/samples")
	}
	paths = append(paths, filepath.Join("..", "..", "config", "serve", "demo.yaml"))
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var pm v1alpha1.PortMux
			if err := sigsyaml.UnmarshalStrict(data, &pm); err != nil {
				t.Fatal(err)
			}
			if errs := compile.Validate(&pm); errs != nil {
				t.Errorf("Validate(%s) = %q, want nil", p, errs)
			}
		})
	}
}

func runValidateRows(t *testing.T, rows []validateRow) {
	t.Helper()
	names := map[string]bool{}
	for _, row := range rows {
		if names[row.name] {
			t.Fatalf("two rows named %q", row.name)
		}
		names[row.name] = true
		t.Run(row.name, func(t *testing.T) {
			var pm v1alpha1.PortMux
			pm.Name, pm.Namespace = "edge", "infra"
			if err := sigsyaml.UnmarshalStrict([]byte(row.spec), &pm.Spec); err != nil {
				t.Fatalf("spec does not decode: %v", err)
			}
			errs := errorStrings(compile.Validate(&pm))
			problem := validateProblem(errs, row.want)
			switch {
			case problem != "" && row.bug != "":
				t.Skipf("known bug: %s\n%s", row.bug, problem)
			case problem != "":
				t.Error(problem)
			case row.bug != "":
				t.Errorf("Validate now gives %q: the bug is fixed, remove the row's bug mark", errs)
			}
		})
	}
}

// errorStrings renders errs as `portmux serve` and conditions show them.
func errorStrings(errs field.ErrorList) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

// validateProblem says how errs differs from want (substrings, in order).
func validateProblem(errs, want []string) string {
	if len(want) == 0 {
		if errs != nil {
			return "Validate = " + quoteAll(errs) + ", want nil"
		}
		return ""
	}
	if len(errs) != len(want) {
		return "Validate = " + quoteAll(errs) + ", want errors containing " + quoteAll(want)
	}
	for i := range want {
		if !strings.Contains(errs[i], want[i]) {
			return "Validate = " + quoteAll(errs) + ", want errors containing " + quoteAll(want)
		}
	}
	return ""
}

func quoteAll(s []string) string {
	if len(s) == 0 {
		return "[]"
	}
	return "[\n\t" + strings.Join(s, "\n\t") + "\n]"
}

// TestLegacyProxyProtocolBool: a PortMux stored with the boolean
// proxyProtocol of an earlier version of the API still decodes (else the
// controller could list no PortMux at all), and is refused with a message
// that says what to write.
func TestLegacyProxyProtocolBool(t *testing.T) {
	for _, v := range []string{"true", "false"} {
		var pm v1alpha1.PortMux
		doc := `{"apiVersion":"portmux.dev/v1alpha1","kind":"PortMux","metadata":{"name":"old"},
			"spec":{"listeners":[{"name":"public","port":443,"proxyProtocol":` + v + `}]}}`
		if err := json.Unmarshal([]byte(doc), &pm); err != nil {
			t.Fatalf("proxyProtocol: %s does not decode: %v", v, err)
		}
		errs := errorStrings(compile.Validate(&pm))
		if len(errs) != 1 || !strings.HasPrefix(errs[0], "spec.listeners[0].proxyProtocol.trustedCIDRs: Required value: ") || !strings.Contains(errs[0], "no longer accepted") {
			t.Errorf("proxyProtocol: %s: Validate = %q, want one error naming trustedCIDRs", v, errs)
		}
	}
	var pm v1alpha1.PortMux
	if err := json.Unmarshal([]byte(`{"spec":{"listeners":[{"name":"p","port":1,"proxyProtocol":{"trustedCIDRs":["10.0.0.0/8"]}}]}}`), &pm); err != nil ||
		pm.Spec.Listeners[0].ProxyProtocol == nil || len(pm.Spec.Listeners[0].ProxyProtocol.TrustedCIDRs) != 1 {
		t.Errorf("the object form: %+v, %v", pm.Spec.Listeners[0].ProxyProtocol, err)
	}
}
