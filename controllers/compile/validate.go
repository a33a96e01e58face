package compile

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Validate checks what the CRD's schema and CEL rules check, for objects that
// never met an API server (`portmux serve` reads files), plus what CEL cannot
// see (a regex that does not compile). Messages name the field, as the API
// server's do.
func Validate(pm *v1alpha1.PortMux) []string {
	var errs []string
	bad := func(field, format string, args ...any) {
		errs = append(errs, field+": "+fmt.Sprintf(format, args...))
	}
	spec := &pm.Spec
	if len(spec.Listeners) == 0 {
		bad("spec.listeners", "at least one listener is required")
	}
	listeners := map[string]*v1alpha1.Listener{}
	ports := map[int32]string{}
	for i := range spec.Listeners {
		l := &spec.Listeners[i]
		f := fmt.Sprintf("spec.listeners[%d]", i)
		if !dnsLabel.MatchString(l.Name) {
			bad(f+".name", "%q must be a DNS label (lower case letters, digits and '-')", l.Name)
		}
		if _, dup := listeners[l.Name]; dup {
			bad(f+".name", "listener %q is declared twice", l.Name)
		}
		listeners[l.Name] = l
		if l.Port != nil {
			if *l.Port < 1 || *l.Port > 65535 {
				bad(f+".port", "%d must be between 1 and 65535", *l.Port)
			}
			if other, dup := ports[*l.Port]; dup {
				bad(f+".port", "port %d is also used by listener %s; give each listener its own port", *l.Port, other)
			}
			ports[*l.Port] = l.Name
		} else {
			if l.TLS == nil {
				bad(f+".tls", "an internal listener (one without port) must set tls")
			}
			if l.ProxyProtocol != nil {
				bad(f+".proxyProtocol", "applies only to a listener with a port")
			}
		}
		if l.ProbeTimeout != nil && (l.ProbeTimeout.Duration < 10*time.Millisecond || l.ProbeTimeout.Duration > 60*time.Second) {
			bad(f+".probeTimeout", "must be between 10ms and 60s")
		}
		for _, c := range []struct {
			name string
			v    *int32
		}{{"maxConnections", l.MaxConnections}, {"maxConnectionsPerClient", l.MaxConnectionsPerClient}, {"maxConnectionRatePerClient", l.MaxConnectionRatePerClient}} {
			if c.v != nil && (*c.v < 1 || *c.v > 1000000) {
				bad(f+"."+c.name, "must be between 1 and 1000000")
			}
		}
		if l.TLS != nil && len(l.TLS.CertificateRefs) == 0 {
			bad(f+".tls.certificateRefs", "at least one Secret is required")
		}
		if l.ProxyProtocol != nil {
			errs = append(errs, validateTrustedCIDRs(f+".proxyProtocol.trustedCIDRs", l.ProxyProtocol.TrustedCIDRs)...)
		}
	}
	routes := map[string]bool{}
	for i := range spec.Routes {
		r := &spec.Routes[i]
		f := fmt.Sprintf("spec.routes[%d]", i)
		if !dnsLabel.MatchString(r.Name) {
			bad(f+".name", "%q must be a DNS label", r.Name)
		}
		if routes[r.Name] {
			bad(f+".name", "route %q is declared twice", r.Name)
		}
		routes[r.Name] = true
		if len(r.Listeners) == 0 {
			bad(f+".listeners", "name at least one listener")
		}
		for _, ln := range r.Listeners {
			if listeners[ln] == nil {
				bad(f+".listeners", "listener %q is not declared in spec.listeners", ln)
			}
		}
		errs = append(errs, validateMatch(f+".match", &r.Match)...)
		if r.IdleTimeout != nil && (r.IdleTimeout.Duration < time.Second || r.IdleTimeout.Duration > 168*time.Hour) {
			bad(f+".idleTimeout", "must be between 1s and 168h")
		}
		actions := 0
		if r.Backend != nil {
			actions++
			errs = append(errs, validateBackend(f+".backend", r)...)
		}
		if r.Listener != nil {
			actions++
			target := listeners[*r.Listener]
			switch {
			case target == nil:
				bad(f+".listener", "listener %q is not declared in spec.listeners", *r.Listener)
			case target.Port != nil:
				bad(f+".listener", "listener %q has a port; hand connections only to an internal listener (no port)", *r.Listener)
			case slices.Contains(r.Listeners, *r.Listener):
				bad(f+".listener", "a route cannot hand connections to a listener it is attached to")
			}
			if r.Match.Protocol != v1alpha1.ProtocolTLS {
				bad(f+".listener", "needs match.protocol tls")
			}
		}
		if r.Tunnel != nil {
			actions++
			if r.Match.Protocol != v1alpha1.ProtocolWebSocket {
				bad(f+".tunnel", "needs match.protocol websocket")
			}
			if len(r.Tunnel.Allow) == 0 {
				bad(f+".tunnel.allow", "list at least one target")
			}
			errs = append(errs, validateTunnelAuth(f+".tunnel.auth", r.Tunnel.Auth)...)
			errs = append(errs, validateOrigins(f+".tunnel.allowedOrigins", r.Tunnel.AllowedOrigins)...)
			for j, a := range r.Tunnel.Allow {
				af := fmt.Sprintf("%s.tunnel.allow[%d]", f, j)
				if (a.Service == nil) == (a.Address == "") {
					bad(af, "needs exactly one of service or address")
				}
				if a.Service != nil {
					errs = append(errs, validateServicePort(af+".service", a.Service)...)
				}
				switch a.Protocol {
				case "", v1alpha1.TransportTCP, v1alpha1.TransportUDP:
				default:
					bad(af+".protocol", "unsupported value %q: TCP or UDP", a.Protocol)
				}
				if a.Address != "" {
					errs = append(errs, validateAddress(fmt.Sprintf("%s.tunnel.allow[%d].address", f, j), a.Address)...)
				}
			}
		}
		if actions != 1 {
			bad(f, "a route needs exactly one action: set one of backend, listener or tunnel")
		}
	}
	return errs
}

// The CRD's messages for a tunnel's auth, word for word: `portmux serve`
// says what the API server says.
const (
	msgTunnelAuthRequired   = "a tunnel needs auth: set auth.tokenSecretRef to require a bearer token, or auth.none: true to let anyone who reaches the route open it"
	msgTunnelAuthExactlyOne = "auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)"
)

// validateTunnelAuth refuses a tunnel that does not say who may open it:
// leaving auth out must never mean "anyone".
func validateTunnelAuth(f string, a *v1alpha1.TunnelAuth) []string {
	switch {
	case a == nil:
		return []string{f + ": " + msgTunnelAuthRequired}
	case (a.TokenSecretRef != nil) == a.None:
		return []string{f + ": " + msgTunnelAuthExactlyOne}
	case a.TokenSecretRef != nil && a.TokenSecretRef.Name == "":
		return []string{f + ".tokenSecretRef.name: the name of the token Secret is required"}
	}
	return nil
}

// validateTrustedCIDRs checks a listener's trusted PROXY header senders as
// the CRD does: at least one, each a CIDR written as its network address.
func validateTrustedCIDRs(f string, cidrs []v1alpha1.CIDR) []string {
	if len(cidrs) == 0 {
		return []string{f + ": list at least one network that may send PROXY headers (0.0.0.0/0 and ::/0 trust everyone; proxyProtocol: true is no longer accepted)"}
	}
	var errs []string
	seen := map[v1alpha1.CIDR]bool{}
	for i, c := range cidrs {
		p, err := netip.ParsePrefix(string(c))
		switch {
		case err != nil || len(c) > 64:
			errs = append(errs, fmt.Sprintf("%s[%d]: %q must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32", f, i, c))
		case p != p.Masked():
			errs = append(errs, fmt.Sprintf("%s[%d]: %q must be written as its network address: the bits past the prefix length must be zero (10.0.0.0/8, not 10.1.2.3/8)", f, i, c))
		case seen[c]:
			errs = append(errs, fmt.Sprintf("%s[%d]: %q is listed twice", f, i, c))
		}
		seen[c] = true
	}
	if len(cidrs) > 32 {
		errs = append(errs, f+": at most 32 networks")
	}
	return errs
}

// originPattern is the CRD's rule for an allowed origin.
var originPattern = regexp.MustCompile(`^[a-zA-Z][-+.a-zA-Z0-9]*://(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$`)

// validateOrigins checks a tunnel's allowed origins as the CRD does, and
// that the dataplane reads each as an origin.
func validateOrigins(f string, origins []v1alpha1.Origin) []string {
	var errs []string
	seen := map[v1alpha1.Origin]bool{}
	for i, o := range origins {
		_, ok := snapshot.CanonicalOrigin(string(o))
		switch {
		case len(o) > 300 || !ok || !originPattern.MatchString(string(o)):
			errs = append(errs, fmt.Sprintf("%s[%d]: %q must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com", f, i, o))
		case seen[o]:
			errs = append(errs, fmt.Sprintf("%s[%d]: %q is listed twice", f, i, o))
		}
		seen[o] = true
	}
	if len(origins) > 16 {
		errs = append(errs, f+": at most 16 origins")
	}
	return errs
}

// dnsLabel is the name pattern of listeners and routes, length included:
// names become metrics labels.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// hostPattern is the schema's pattern for sni and host entries.
var hostPattern = regexp.MustCompile(`^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$`)

// portName is the schema's pattern for a Service port given by name.
var portName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validateServicePort checks a Service reference as the schema does.
func validateServicePort(f string, sp *v1alpha1.ServicePort) []string {
	var errs []string
	if sp.Name == "" || len(sp.Name) > 63 {
		errs = append(errs, f+".name: the name of a Service is required (at most 63 characters)")
	}
	switch sp.Port.Type {
	case intstr.Int:
		if sp.Port.IntVal < 1 || sp.Port.IntVal > 65535 {
			errs = append(errs, fmt.Sprintf("%s.port: %d must be a number from 1 to 65535 or the name of a Service port", f, sp.Port.IntVal))
		}
	default:
		if len(sp.Port.StrVal) > 15 || !portName.MatchString(sp.Port.StrVal) {
			errs = append(errs, fmt.Sprintf("%s.port: %q must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')", f, sp.Port.StrVal))
		}
	}
	return errs
}

func validateMatch(f string, m *v1alpha1.RouteMatch) []string {
	var errs []string
	bad := func(field, msg string) { errs = append(errs, f+field+": "+msg) }
	p := m.Protocol
	if protocols := route.Protocols(); !slices.Contains(protocols, snapshot.Protocol(p)) {
		names := make([]string, len(protocols))
		for i, p := range protocols {
			names[i] = string(p)
		}
		bad(".protocol", fmt.Sprintf("unsupported value %q: one of %s", p, strings.Join(names, ", ")))
	}
	if (len(m.SNI) > 0 || len(m.ALPN) > 0) && p != v1alpha1.ProtocolTLS {
		bad("", "sni and alpn apply only to protocol tls")
	}
	if (len(m.Host) > 0 || m.PathPrefix != "") && p != v1alpha1.ProtocolHTTP && p != v1alpha1.ProtocolWebSocket {
		bad("", "host and pathPrefix apply only to protocols http and websocket")
	}
	if (m.Prefix != "" || m.Regex != "") && p != v1alpha1.ProtocolBytes {
		bad("", "prefix and regex apply only to protocol bytes")
	}
	if p == v1alpha1.ProtocolBytes && (m.Prefix == "") == (m.Regex == "") {
		bad("", "protocol bytes needs exactly one of prefix or regex")
	}
	if m.Regex != "" {
		if _, err := regexp.Compile(m.Regex); err != nil {
			bad(".regex", fmt.Sprintf("does not compile: %v", err))
		}
	}
	if m.PathPrefix != "" && m.PathPrefix[0] != '/' {
		bad(".pathPrefix", "must start with /")
	}
	for i, n := range m.SNI {
		if len(n) > 253 || !hostPattern.MatchString(n) {
			bad(fmt.Sprintf(".sni[%d]", i), fmt.Sprintf("%q must be a host name, optionally starting with \"*.\"", n))
		}
	}
	for i, n := range m.Host {
		if len(n) > 253 || !hostPattern.MatchString(n) {
			bad(fmt.Sprintf(".host[%d]", i), fmt.Sprintf("%q must be a host name, optionally starting with \"*.\"", n))
		}
	}
	return errs
}

func validateBackend(f string, r *v1alpha1.Route) []string {
	var errs []string
	b := r.Backend
	if (b.Service == nil) == (b.Address == "") {
		errs = append(errs, f+": a backend needs exactly one of service or address")
	}
	if b.Address != "" {
		errs = append(errs, validateAddress(f+".address", b.Address)...)
	}
	if b.Service != nil {
		errs = append(errs, validateServicePort(f+".service", b.Service)...)
	}
	switch b.Mode {
	case "", v1alpha1.BackendModeTCP, v1alpha1.BackendModeHTTP:
	default:
		errs = append(errs, fmt.Sprintf("%s.mode: unsupported value %q: tcp or http", f, b.Mode))
	}
	switch b.ProxyProtocol {
	case "", v1alpha1.ProxyProtocolV1, v1alpha1.ProxyProtocolV2:
	default:
		errs = append(errs, fmt.Sprintf("%s.proxyProtocol: unsupported value %q: v1 or v2", f, b.ProxyProtocol))
	}
	if b.Mode == v1alpha1.BackendModeHTTP {
		if r.Match.Protocol != v1alpha1.ProtocolHTTP && r.Match.Protocol != v1alpha1.ProtocolWebSocket {
			errs = append(errs, f+".mode: http needs match.protocol http or websocket")
		}
		if b.ProxyProtocol != "" {
			errs = append(errs, f+".proxyProtocol: cannot be combined with mode http")
		}
	}
	return errs
}

func validateAddress(f, addr string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return []string{fmt.Sprintf("%s: %q must be host:port", f, addr)}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return []string{fmt.Sprintf("%s: port %q must be between 1 and 65535", f, port)}
	}
	return nil
}
