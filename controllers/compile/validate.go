package compile

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Validate checks what the CRD's schema and CEL rules check, for objects that
// never met an API server (`portmux serve` reads files), plus what CEL cannot
// see (a regex that does not compile). Its errors are the API server's kind:
// a field path, the kind of error and the value, then why
// ("spec.listeners[0].port: Invalid value: 0: must be between 1 and
// 65535"). Where the CRD has a CEL rule, the error is the one the API server
// gives for it, word for word (see ruleError); where a rule of the CRD can
// only point at a list, Validate names the item.
func Validate(pm *v1alpha1.PortMux) field.ErrorList {
	return validateSpec(&pm.Spec, field.NewPath("spec"))
}

// ruleMessage is the message of a CEL rule of the CRD, word for word:
// `portmux serve` says what the API server says. TestValidateSaysTheCRDsRules
// checks that every rule's message is here (or said of the item, see
// perItem there), and nothing else.
type ruleMessage string

const (
	msgInternalNeedsTLS         ruleMessage = "an internal listener (one without port) must set tls: it terminates TLS for streams a route hands to it; set port to bind a port instead"
	msgInternalNoProxyProtocol  ruleMessage = "proxyProtocol applies only to a listener with a port: an internal listener receives streams from other listeners, never from a load balancer"
	msgProbeTimeoutRange        ruleMessage = "probeTimeout must be between 10ms and 60s"
	msgIdleTimeoutRange         ruleMessage = "idleTimeout must be between 1s and 168h"
	msgCIDR                     ruleMessage = "must be a CIDR: an IPv4 or IPv6 network address and a prefix length, e.g. 10.0.0.0/8 or 2001:db8::/32"
	msgCIDRMasked               ruleMessage = "must be written as its network address: the bits past the prefix length must be zero (10.0.0.0/8, not 10.1.2.3/8)"
	msgOneAction                ruleMessage = "a route needs exactly one action: set one of backend, listener or tunnel"
	msgHandOffNeedsTLS          ruleMessage = "listener needs match.protocol tls: the internal listener terminates the TLS stream it is handed"
	msgHandOffToItself          ruleMessage = "a route cannot hand connections to a listener it is attached to: remove the listener from listeners or pick another one"
	msgTunnelNeedsWebSocket     ruleMessage = "tunnel needs match.protocol websocket: a tunnel is a WebSocket endpoint"
	msgTunnelAuthRequired       ruleMessage = "a tunnel needs auth: set auth.tokenSecretRef to require a bearer token, or auth.none: true to let anyone who reaches the route open it"
	msgTunnelAuthExactlyOne     ruleMessage = "auth needs exactly one of tokenSecretRef (clients present a bearer token) or none: true (anyone who reaches the route may open the tunnel)"
	msgTunnelTargetExactlyOne   ruleMessage = "a tunnel target needs exactly one of service or address"
	msgOrigin                   ruleMessage = "must be a web origin: scheme://host or scheme://host:port (port 1-65535), with nothing after it, e.g. https://app.example.com"
	msgBackendExactlyOne        ruleMessage = "a backend needs exactly one of service or address"
	msgModeHTTPNeedsHTTP        ruleMessage = "backend.mode http needs match.protocol http or websocket: only HTTP requests can be reverse-proxied"
	msgModeHTTPNoProxyProtocol  ruleMessage = "proxyProtocol cannot be combined with mode http: http mode passes the client address in X-Forwarded-For"
	msgServicePort              ruleMessage = "port must be a number from 1 to 65535 or the name of a Service port (lowercase letters, digits and '-')"
	msgBytesNeedsPrefixXorRegex ruleMessage = "protocol bytes needs exactly one of prefix or regex"
	msgSNIOnlyTLS               ruleMessage = "sni applies only to protocols tls and quic"
	msgALPNOnlyTLS              ruleMessage = "alpn applies only to protocols tls and quic"
	msgHostOnlyHTTP             ruleMessage = "host applies only to protocols http and websocket"
	msgPathPrefixOnlyHTTP       ruleMessage = "pathPrefix applies only to protocols http and websocket"
	msgPrefixOnlyBytes          ruleMessage = "prefix applies only to protocol bytes"
	msgRegexOnlyBytes           ruleMessage = "regex applies only to protocol bytes"
	msgUDPNeedsPort             ruleMessage = "a UDP listener needs a port: internal listeners take the TLS streams routes hand them, and only TCP listeners are internal"
	msgUDPNoTLS                 ruleMessage = "tls applies only to TCP listeners: a UDP listener forwards datagrams as they are (QUIC carries its own TLS, which the backend terminates)"
	msgUDPNoProxyProtocol       ruleMessage = "proxyProtocol applies only to TCP listeners: a PROXY header starts a stream, and datagrams carry none"
	msgPortXorParentRef         ruleMessage = "port and parentRef are mutually exclusive: a listener binds a port of its own, or shares the port of the Gateway listener parentRef names"
	msgParentRefPlain           ruleMessage = "a listener with parentRef takes the TCP connections of a Gateway listener as they come: it sets neither tls, proxyProtocol nor protocol UDP"
)

// Validate's own words: for what the CRD's schema checks (the API server
// words those as OpenAPI does: "should be greater than or equal to 1"), for
// what it checks of a list where Validate names the item, and for what it
// cannot check.
const (
	msgDNSLabel                 = "must be a DNS label: at most 63 lower case letters, digits and '-', starting and ending with a letter or digit"
	msgListenerPortRange        = "must be between 1 and 65535"
	msgLimitRange               = "must be between 1 and 1000000"
	msgDuplicatePort            = "also the %s port of listener %s: give each its own port, or make one TCP and the other UDP"
	msgTrustedCIDRsRequired     = "list at least one network that may send PROXY headers (0.0.0.0/0 and ::/0 trust everyone; proxyProtocol: true is no longer accepted)"
	msgHostName                 = `must be a host name, optionally starting with "*."`
	msgAttachNowhere            = ", or leave listeners out to attach the route to every listener with a port"
	msgListenerNotDeclared      = "must be a listener declared in spec.listeners: add the listener or fix the name"
	msgHandOffTargetNotDeclared = "must name a listener declared in spec.listeners: an internal one, without a port"
	msgHandOffTargetHasPort     = "must name an internal listener (one declared without port): a listener with a port takes connections from clients, not from routes"
	msgProtocolNotCarried       = "listener %s is %s, which does not carry match.protocol %s: %s"
	msgAttachedNowhere          = "the route leaves out listeners, so it attaches to every listener with a port whose protocol carries %s, and none does: %s"
	msgBackendPROXYOnUDP        = "the route is on UDP listener %s, whose sessions reach their backend without a PROXY header: name the route's TCP listeners in listeners, or leave proxyProtocol out"
)

// carriedBy says, for a protocol that a transport does not carry, which
// transport does: the end of the messages of a route whose protocol does
// not fit its listeners.
func carriedBy(p v1alpha1.Protocol) string {
	if snapshot.Protocol(p).FitsTransport(snapshot.UDP) {
		return "it is recognised in UDP datagrams only; name a UDP listener (protocol: UDP)"
	}
	return "it is recognised on TCP listeners only; name a TCP listener"
}

// ruleError is the error the API server gives when a CEL rule of the CRD
// fails: the rule's field path and message, without a value.
func ruleError(p *field.Path, msg ruleMessage) *field.Error {
	return field.Invalid(p, field.OmitValueType{}, string(msg))
}

// nameKey is how the API server shows the key of a list of type map keyed
// by name, in a Duplicate error: {"name":"public"}.
type nameKey struct {
	Name string `json:"name"`
}

func validateSpec(spec *v1alpha1.PortMuxSpec, p *field.Path) field.ErrorList {
	errs := validateListeners(spec.Listeners, p.Child("listeners"))
	declared := map[string]*v1alpha1.Listener{}
	for i := range spec.Listeners {
		if l := &spec.Listeners[i]; declared[l.Name] == nil {
			declared[l.Name] = l
		}
	}
	return append(errs, validateRoutes(spec.Routes, spec.Listeners, declared, p.Child("routes"))...)
}

// listenerTransport is a PortMux listener's transport: TCP unless it says UDP (the API
// server defaults the field; files given to `portmux serve` may leave it
// out).
func listenerTransport(l *v1alpha1.Listener) snapshot.Transport {
	if l.Protocol == v1alpha1.TransportUDP {
		return snapshot.UDP
	}
	return snapshot.TCP
}

// validateListeners checks each listener, and that names and (port,
// protocol) pairs are unique.
func validateListeners(ls []v1alpha1.Listener, p *field.Path) field.ErrorList {
	if len(ls) == 0 {
		return field.ErrorList{field.Required(p, "at least one listener")}
	}
	var errs field.ErrorList
	names := map[string]bool{}
	ports := map[portKey]string{} // a TCP and a UDP listener may share a number
	for i := range ls {
		l := &ls[i]
		lp := p.Index(i)
		errs = append(errs, validateUniqueName(l.Name, names, lp)...)
		if transports := []v1alpha1.TransportProtocol{v1alpha1.TransportTCP, v1alpha1.TransportUDP}; l.Protocol != "" && !slices.Contains(transports, l.Protocol) {
			errs = append(errs, field.NotSupported(lp.Child("protocol"), string(l.Protocol), transports))
		}
		switch {
		case l.Port != nil:
			errs = append(errs, validateListenerPort(*l.Port, lp.Child("port"))...)
			c := portKey{t: listenerTransport(l), port: *l.Port}
			if other, dup := ports[c]; dup {
				e := field.Duplicate(lp.Child("port"), *l.Port)
				e.Detail = fmt.Sprintf(msgDuplicatePort, c.t, other)
				errs = append(errs, e)
			} else {
				ports[c] = l.Name
			}
		case listenerTransport(l) == snapshot.UDP:
			errs = append(errs, field.Required(lp.Child("port"), string(msgUDPNeedsPort)))
		case l.ParentRef != nil:
		default:
			errs = append(errs, validateInternalListener(l, lp)...)
		}
		if l.ParentRef != nil {
			errs = append(errs, validateParentRef(l, lp)...)
		}
		if listenerTransport(l) == snapshot.UDP {
			if l.TLS != nil {
				errs = append(errs, ruleError(lp.Child("tls"), msgUDPNoTLS))
			}
			if l.ProxyProtocol != nil {
				errs = append(errs, ruleError(lp.Child("proxyProtocol"), msgUDPNoProxyProtocol))
			}
		}
		errs = append(errs, validateProbeTimeout(l.ProbeTimeout, lp.Child("probeTimeout"))...)
		errs = append(errs, validateLimits(l, lp)...)
		if l.TLS != nil {
			errs = append(errs, validateListenerTLS(l.TLS, lp.Child("tls"))...)
		}
		if l.ProxyProtocol != nil {
			errs = append(errs, validateTrustedCIDRs(l.ProxyProtocol.TrustedCIDRs, lp.Child("proxyProtocol", "trustedCIDRs"))...)
		}
	}
	return errs
}

// dnsLabel is the name pattern of listeners and routes, length included:
// names become metrics labels.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func validateDNSLabel(name string, p *field.Path) field.ErrorList {
	if !dnsLabel.MatchString(name) {
		return field.ErrorList{field.Invalid(p, name, msgDNSLabel)}
	}
	return nil
}

func validateListenerPort(port int32, p *field.Path) field.ErrorList {
	if port < 1 || port > 65535 {
		return field.ErrorList{field.Invalid(p, port, msgListenerPortRange)}
	}
	return nil
}

// validateParentRef checks a listener that shares a Gateway listener's
// port: it binds no port of its own and takes the connections as they
// come, and its parentRef names a Gateway.
func validateParentRef(l *v1alpha1.Listener, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	pp := p.Child("parentRef")
	ref := l.ParentRef
	if g := ref.Group; g != "" && g != gatewayGroup {
		errs = append(errs, field.NotSupported(pp.Child("group"), g, []string{gatewayGroup}))
	}
	if k := ref.Kind; k != "" && k != "Gateway" {
		errs = append(errs, field.NotSupported(pp.Child("kind"), k, []string{"Gateway"}))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(pp.Child("name"), "the name of the Gateway"))
	}
	if l.Port != nil {
		errs = append(errs, ruleError(pp, msgPortXorParentRef))
	}
	if l.TLS != nil || l.ProxyProtocol != nil || listenerTransport(l) == snapshot.UDP {
		errs = append(errs, ruleError(pp, msgParentRefPlain))
	}
	return errs
}

// gatewayGroup is the API group of the Gateways a PortMux listener may
// attach to.
const gatewayGroup = "gateway.networking.k8s.io"

// validateInternalListener checks a listener without a port: it
// terminates TLS for what routes hand it, and has no load balancer in
// front to send PROXY headers.
func validateInternalListener(l *v1alpha1.Listener, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if l.TLS == nil {
		errs = append(errs, field.Required(p.Child("port"), string(msgInternalNeedsTLS)))
	}
	if l.ProxyProtocol != nil {
		errs = append(errs, ruleError(p.Child("proxyProtocol"), msgInternalNoProxyProtocol))
	}
	return errs
}

func validateProbeTimeout(d *metav1.Duration, p *field.Path) field.ErrorList {
	if d != nil && (d.Duration < 10*time.Millisecond || d.Duration > 60*time.Second) {
		return field.ErrorList{field.Invalid(p, d.Duration.String(), string(msgProbeTimeoutRange))}
	}
	return nil
}

// validateLimits checks a listener's connection limits.
func validateLimits(l *v1alpha1.Listener, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, c := range []struct {
		name string
		v    *int32
	}{{"maxConnections", l.MaxConnections}, {"maxConnectionsPerClient", l.MaxConnectionsPerClient}, {"maxConnectionRatePerClient", l.MaxConnectionRatePerClient}} {
		if c.v != nil && (*c.v < 1 || *c.v > 1000000) {
			errs = append(errs, field.Invalid(p.Child(c.name), *c.v, msgLimitRange))
		}
	}
	return errs
}

func validateListenerTLS(t *v1alpha1.ListenerTLS, p *field.Path) field.ErrorList {
	if len(t.CertificateRefs) == 0 {
		return field.ErrorList{field.Required(p.Child("certificateRefs"), "at least one Secret")}
	}
	return nil
}

// validateTrustedCIDRs checks a listener's trusted PROXY header senders as
// the CRD does: at least one, each a CIDR written as its network address.
func validateTrustedCIDRs(cidrs []v1alpha1.CIDR, p *field.Path) field.ErrorList {
	if len(cidrs) == 0 {
		return field.ErrorList{field.Required(p, msgTrustedCIDRsRequired)}
	}
	return validateSet(cidrs, 32, p, func(c v1alpha1.CIDR) ruleMessage {
		prefix, err := netip.ParsePrefix(string(c))
		switch {
		case err != nil || len(c) > 64:
			return msgCIDR
		case prefix != prefix.Masked():
			return msgCIDRMasked
		}
		return ""
	})
}

// validateSet checks a list of distinct values as the CRD does: each valid
// (invalid says why one is not, "" when it is), none listed twice, and at
// most maxItems of them.
func validateSet[T ~string](items []T, maxItems int, p *field.Path, invalid func(T) ruleMessage) field.ErrorList {
	var errs field.ErrorList
	seen := map[T]bool{}
	for i, it := range items {
		if msg := invalid(it); msg != "" {
			errs = append(errs, field.Invalid(p.Index(i), string(it), string(msg)))
		} else if seen[it] {
			errs = append(errs, field.Duplicate(p.Index(i), string(it)))
		}
		seen[it] = true
	}
	if len(items) > maxItems {
		errs = append(errs, field.TooMany(p, len(items), maxItems))
	}
	return errs
}

// validateUniqueName checks the name of the listener or route at p: a DNS
// label, and not one of names, the names of those before it (it joins them).
func validateUniqueName(name string, names map[string]bool, p *field.Path) field.ErrorList {
	errs := validateDNSLabel(name, p.Child("name"))
	if names[name] {
		errs = append(errs, field.Duplicate(p, nameKey{name}))
	}
	names[name] = true
	return errs
}

// validateRoutes checks each route, and that names are unique.
func validateRoutes(routes []v1alpha1.Route, listeners []v1alpha1.Listener, declared map[string]*v1alpha1.Listener, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := map[string]bool{}
	for i := range routes {
		r := &routes[i]
		rp := p.Index(i)
		errs = append(errs, validateUniqueName(r.Name, names, rp)...)
		errs = append(errs, validateAttachment(r, listeners, declared, rp)...)
		errs = append(errs, validateMatch(&r.Match, rp.Child("match"))...)
		errs = append(errs, validateIdleTimeout(r.IdleTimeout, rp.Child("idleTimeout"))...)
		errs = append(errs, validateAction(r, declared, rp)...)
		errs = append(errs, validateOnUDP(r, listeners, rp)...)
	}
	return errs
}

// validateAttachment checks the listeners a route names: declared ones,
// at least one when the list is there at all, each of a protocol that
// carries the route's match.protocol. A route that leaves listeners out
// applies to every listener with a port that carries it, and there must
// be one.
func validateAttachment(r *v1alpha1.Route, listeners []v1alpha1.Listener, declared map[string]*v1alpha1.Listener, rp *field.Path) field.ErrorList {
	p := rp.Child("listeners")
	proto := snapshot.Protocol(r.Match.Protocol)
	// An unknown protocol is validateMatch's to report: no listener
	// carries it, and saying so again would only repeat it.
	known := slices.Contains(route.Protocols(), proto)
	if r.Listeners == nil {
		if !known {
			return nil
		}
		for i := range listeners {
			if attached(r, &listeners[i]) {
				return nil
			}
		}
		return field.ErrorList{field.Invalid(rp.Child("match", "protocol"), string(proto), fmt.Sprintf(msgAttachedNowhere, proto, carriedBy(r.Match.Protocol)))}
	}
	if len(r.Listeners) == 0 {
		e := field.TooFew(p, 0, 1)
		e.Detail += msgAttachNowhere
		return field.ErrorList{e}
	}
	var errs field.ErrorList
	for j, name := range r.Listeners {
		switch l := declared[name]; {
		case l == nil:
			e := field.NotFound(p.Index(j), name)
			e.Detail = msgListenerNotDeclared
			errs = append(errs, e)
		case known && !proto.FitsTransport(listenerTransport(l)):
			errs = append(errs, field.Invalid(p.Index(j), name, fmt.Sprintf(msgProtocolNotCarried, name, listenerTransport(l), proto, carriedBy(r.Match.Protocol))))
		}
	}
	return errs
}

// validateOnUDP refuses what a route cannot do on a UDP listener that its
// protocol does not refuse already: a PROXY header to its backend (tls
// termination, hand-offs, tunnels and http mode need protocols that UDP
// listeners do not carry).
func validateOnUDP(r *v1alpha1.Route, listeners []v1alpha1.Listener, rp *field.Path) field.ErrorList {
	if r.Backend == nil || r.Backend.ProxyProtocol == "" {
		return nil
	}
	for i := range listeners {
		if l := &listeners[i]; listenerTransport(l) == snapshot.UDP && attached(r, l) {
			return field.ErrorList{field.Invalid(rp.Child("backend", "proxyProtocol"), string(r.Backend.ProxyProtocol), fmt.Sprintf(msgBackendPROXYOnUDP, l.Name))}
		}
	}
	return nil
}

func validateIdleTimeout(d *metav1.Duration, p *field.Path) field.ErrorList {
	if d != nil && (d.Duration < time.Second || d.Duration > 168*time.Hour) {
		return field.ErrorList{field.Invalid(p, d.Duration.String(), string(msgIdleTimeoutRange))}
	}
	return nil
}

// hostPattern is the schema's pattern for sni and host entries.
var hostPattern = regexp.MustCompile(`^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$`)

// validateMatch checks the protocol, that only its own fields are set, and
// those fields.
func validateMatch(m *v1alpha1.RouteMatch, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	proto := m.Protocol
	if !slices.Contains(route.Protocols(), snapshot.Protocol(proto)) {
		errs = append(errs, field.NotSupported(p.Child("protocol"), string(proto), route.Protocols()))
	}
	isTLS := proto == v1alpha1.ProtocolTLS || proto == v1alpha1.ProtocolQUIC
	isHTTP := proto == v1alpha1.ProtocolHTTP || proto == v1alpha1.ProtocolWebSocket
	isBytes := proto == v1alpha1.ProtocolBytes
	for _, f := range []struct {
		name    string
		msg     ruleMessage
		set, ok bool
	}{
		{"sni", msgSNIOnlyTLS, len(m.SNI) > 0, isTLS},
		{"alpn", msgALPNOnlyTLS, len(m.ALPN) > 0, isTLS},
		{"host", msgHostOnlyHTTP, len(m.Host) > 0, isHTTP},
		{"pathPrefix", msgPathPrefixOnlyHTTP, m.PathPrefix != "", isHTTP},
		{"prefix", msgPrefixOnlyBytes, m.Prefix != "", isBytes},
		{"regex", msgRegexOnlyBytes, m.Regex != "", isBytes},
	} {
		if f.set && !f.ok {
			errs = append(errs, ruleError(p.Child(f.name), f.msg))
		}
	}
	if isBytes && (m.Prefix == "") == (m.Regex == "") {
		errs = append(errs, ruleError(p, msgBytesNeedsPrefixXorRegex))
	}
	if m.Regex != "" {
		if _, err := regexp.Compile(m.Regex); err != nil {
			errs = append(errs, field.Invalid(p.Child("regex"), m.Regex, "does not compile: "+err.Error()))
		}
	}
	if m.PathPrefix != "" && m.PathPrefix[0] != '/' {
		errs = append(errs, field.Invalid(p.Child("pathPrefix"), m.PathPrefix, "must start with /"))
	}
	errs = append(errs, validateHostNames(m.SNI, p.Child("sni"))...)
	errs = append(errs, validateHostNames(m.Host, p.Child("host"))...)
	return errs
}

func validateHostNames(names []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, n := range names {
		if len(n) > 253 || !hostPattern.MatchString(n) {
			errs = append(errs, field.Invalid(p.Index(i), n, msgHostName))
		}
	}
	return errs
}

// validateAction checks that a route has exactly one action, and that
// action.
func validateAction(r *v1alpha1.Route, declared map[string]*v1alpha1.Listener, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	actions := 0
	if r.Backend != nil {
		actions++
		errs = append(errs, validateBackend(r.Backend, r.Match.Protocol, p.Child("backend"))...)
	}
	if r.Listener != nil {
		actions++
		errs = append(errs, validateHandOff(r, declared, p.Child("listener"))...)
	}
	if r.Tunnel != nil {
		actions++
		errs = append(errs, validateTunnel(r.Tunnel, r.Match.Protocol, p.Child("tunnel"))...)
	}
	if actions != 1 {
		errs = append(errs, ruleError(p, msgOneAction))
	}
	return errs
}

func validateBackend(b *v1alpha1.Backend, proto v1alpha1.Protocol, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if (b.Service == nil) == (b.Address == "") {
		errs = append(errs, ruleError(p, msgBackendExactlyOne))
	}
	if b.Address != "" {
		errs = append(errs, validateAddress(b.Address, p.Child("address"))...)
	}
	if b.Service != nil {
		errs = append(errs, validateServicePort(b.Service, p.Child("service"))...)
	}
	if modes := []v1alpha1.BackendMode{v1alpha1.BackendModeTCP, v1alpha1.BackendModeHTTP}; b.Mode != "" && !slices.Contains(modes, b.Mode) {
		errs = append(errs, field.NotSupported(p.Child("mode"), string(b.Mode), modes))
	}
	if versions := []v1alpha1.ProxyProtocolVersion{v1alpha1.ProxyProtocolV1, v1alpha1.ProxyProtocolV2}; b.ProxyProtocol != "" && !slices.Contains(versions, b.ProxyProtocol) {
		errs = append(errs, field.NotSupported(p.Child("proxyProtocol"), string(b.ProxyProtocol), versions))
	}
	if b.Mode == v1alpha1.BackendModeHTTP {
		if proto != v1alpha1.ProtocolHTTP && proto != v1alpha1.ProtocolWebSocket {
			errs = append(errs, ruleError(p.Child("mode"), msgModeHTTPNeedsHTTP))
		}
		if b.ProxyProtocol != "" {
			errs = append(errs, ruleError(p.Child("proxyProtocol"), msgModeHTTPNoProxyProtocol))
		}
	}
	return errs
}

// validateHandOff checks a listener action: it hands TLS streams to an
// internal listener of the same PortMux, never to one the route is on.
func validateHandOff(r *v1alpha1.Route, declared map[string]*v1alpha1.Listener, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	name := *r.Listener
	switch target := declared[name]; {
	case target == nil:
		e := field.NotFound(p, name)
		e.Detail = msgHandOffTargetNotDeclared
		errs = append(errs, e)
	case target.Port != nil || target.ParentRef != nil:
		errs = append(errs, field.Invalid(p, name, msgHandOffTargetHasPort))
	case slices.Contains(r.Listeners, name):
		errs = append(errs, ruleError(p, msgHandOffToItself))
	}
	if r.Match.Protocol != v1alpha1.ProtocolTLS {
		errs = append(errs, ruleError(p, msgHandOffNeedsTLS))
	}
	return errs
}

func validateTunnel(t *v1alpha1.Tunnel, proto v1alpha1.Protocol, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if proto != v1alpha1.ProtocolWebSocket {
		errs = append(errs, ruleError(p, msgTunnelNeedsWebSocket))
	}
	if len(t.Allow) == 0 {
		errs = append(errs, field.Required(p.Child("allow"), "list at least one target"))
	}
	errs = append(errs, validateTunnelAuth(t.Auth, p.Child("auth"))...)
	errs = append(errs, validateOrigins(t.AllowedOrigins, p.Child("allowedOrigins"))...)
	for j := range t.Allow {
		errs = append(errs, validateTunnelTarget(&t.Allow[j], p.Child("allow").Index(j))...)
	}
	return errs
}

// validateTunnelAuth refuses a tunnel that does not say who may open it:
// leaving auth out must never mean "anyone".
func validateTunnelAuth(a *v1alpha1.TunnelAuth, p *field.Path) field.ErrorList {
	switch {
	case a == nil:
		return field.ErrorList{field.Required(p, string(msgTunnelAuthRequired))}
	case (a.TokenSecretRef != nil) == a.None:
		return field.ErrorList{ruleError(p, msgTunnelAuthExactlyOne)}
	case a.TokenSecretRef != nil && a.TokenSecretRef.Name == "":
		return field.ErrorList{field.Required(p.Child("tokenSecretRef", "name"), "the name of the token Secret")}
	}
	return nil
}

// originPattern is the CRD's rule for an allowed origin.
var originPattern = regexp.MustCompile(`^[a-zA-Z][-+.a-zA-Z0-9]*://(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$`)

// validateOrigins checks a tunnel's allowed origins as the CRD does, and
// that the dataplane reads each as an origin.
func validateOrigins(origins []v1alpha1.Origin, p *field.Path) field.ErrorList {
	return validateSet(origins, 16, p, func(o v1alpha1.Origin) ruleMessage {
		if _, ok := snapshot.CanonicalOrigin(string(o)); len(o) > 300 || !ok || !originPattern.MatchString(string(o)) {
			return msgOrigin
		}
		return ""
	})
}

func validateTunnelTarget(a *v1alpha1.TunnelTarget, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if (a.Service == nil) == (a.Address == "") {
		errs = append(errs, ruleError(p, msgTunnelTargetExactlyOne))
	}
	if a.Service != nil {
		errs = append(errs, validateServicePort(a.Service, p.Child("service"))...)
	}
	if transports := []v1alpha1.TransportProtocol{v1alpha1.TransportTCP, v1alpha1.TransportUDP}; a.Protocol != "" && !slices.Contains(transports, a.Protocol) {
		errs = append(errs, field.NotSupported(p.Child("protocol"), string(a.Protocol), transports))
	}
	if a.Address != "" {
		errs = append(errs, validateAddress(a.Address, p.Child("address"))...)
	}
	return errs
}

// portName is the schema's pattern for a Service port given by name.
var portName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validateServicePort checks a Service reference as the schema does.
func validateServicePort(sp *v1alpha1.ServicePort, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case sp.Name == "":
		errs = append(errs, field.Required(p.Child("name"), "the name of a Service"))
	case len(sp.Name) > 63:
		errs = append(errs, field.TooLong(p.Child("name"), sp.Name, 63))
	}
	switch {
	case sp.Port.Type == intstr.Int:
		if sp.Port.IntVal < 1 || sp.Port.IntVal > 65535 {
			errs = append(errs, field.Invalid(p.Child("port"), sp.Port.IntVal, string(msgServicePort)))
		}
	case len(sp.Port.StrVal) > 15:
		errs = append(errs, field.TooLong(p.Child("port"), sp.Port.StrVal, 15))
	case !portName.MatchString(sp.Port.StrVal):
		errs = append(errs, field.Invalid(p.Child("port"), sp.Port.StrVal, string(msgServicePort)))
	}
	return errs
}

// validateAddress checks a host:port to dial.
func validateAddress(addr string, p *field.Path) field.ErrorList {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return field.ErrorList{field.Invalid(p, addr, "must be host:port")}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return field.ErrorList{field.Invalid(p, addr, "port must be between 1 and 65535")}
	}
	return nil
}
