// Package compile turns PortMux objects, and the Secrets, Services and
// EndpointSlices they name, into one dataplane snapshot plus what each
// PortMux should be told about itself.
//
// It is a pure function: no client, no clock, no I/O. The controller gathers
// the objects from its cache and `portmux serve` reads them from files; both
// call Compile. Every problem becomes a finding on the PortMux it belongs to,
// and takes down only what depends on it: a missing certificate stops its
// listener, a missing Service leaves its route in place with no endpoints
// (so the route order the user wrote still holds), a missing tunnel token
// closes the tunnel, and a port held by an older PortMux stays with it.
package compile

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Input is everything Compile looks at.
type Input struct {
	PortMuxes []v1alpha1.PortMux

	// Secrets, Services and EndpointSlices by namespace and name; only those
	// the PortMuxes name are needed. EndpointSlices are keyed by the
	// namespace and name of their Service.
	Secrets        map[types.NamespacedName]*corev1.Secret
	Services       map[types.NamespacedName]*corev1.Service
	EndpointSlices map[types.NamespacedName][]*discoveryv1.EndpointSlice

	// LastGoodSecrets are the last versions of certificate Secrets that held
	// a valid key pair (Output.GoodSecrets of the previous compile). When a
	// Secret is updated with a broken key pair, its previous certificate
	// keeps being served, with a finding, instead of the listener going
	// down: a bad edit must not take a site offline. A deleted Secret is
	// not replaced.
	LastGoodSecrets map[types.NamespacedName]*corev1.Secret

	// BindAddress is the host listeners bind ("" for every interface).
	BindAddress string

	// AllowAddressBackends accepts `address` backends and tunnel targets.
	// Off in a cluster by default: it lets a PortMux author reach any address
	// the dataplane can.
	AllowAddressBackends bool

	// PortPolicy says which namespaces may claim which ports (of which
	// transport); empty: any.
	PortPolicy PortPolicy

	// MaxConnections caps connections across all listeners (the
	// snapshot's MaxConnections); 0: only each listener's maxConnections.
	MaxConnections int

	// Gateway holds the Gateway API objects (see gateway.go): they compile
	// into the same snapshot, and their ports come before any PortMux's.
	Gateway GatewayInput

	// Cache, when set, keeps each PortMux's compile for the next Compile,
	// which then redoes only the PortMuxes whose inputs changed; the
	// output is the same. Nil: every PortMux is compiled.
	Cache *Cache
}

// Output is the compiled snapshot and a Result per PortMux.
type Output struct {
	Snapshot *snapshot.Snapshot
	Results  map[types.NamespacedName]*Result

	// GoodSecrets are the certificate Secrets whose certificate is being
	// served (the current version, or the last good one): the next
	// compile's LastGoodSecrets.
	GoodSecrets map[types.NamespacedName]*corev1.Secret

	// Gateway is what the Gateway API objects were told (never nil).
	Gateway *GatewayOutput

	// What Recompile needs to redo one PortMux: who holds each port at
	// the end, each PortMux's listeners and the ports it claims.
	ports     map[portKey]string
	byPortMux map[types.NamespacedName]portMuxOutput
}

// portMuxOutput is one PortMux's part of an Output.
type portMuxOutput struct {
	listeners []snapshot.Listener
	claims    string
	secrets   []string // SecretRefs
}

// Result is what Compile found for one PortMux: the inputs of its Accepted
// and ResolvedRefs conditions and of its listener statuses.
type Result struct {
	// Invalid holds spec errors the API server would have refused (files
	// given to `portmux serve` never met it), as Validate gives them. Any
	// makes the PortMux not Accepted and nothing of it is served.
	Invalid field.ErrorList

	// Listeners by name, in spec order.
	Listeners []ListenerResult

	// Refs holds unresolved references (missing Secret, Service, port,
	// invalid certificate, no ready endpoints).
	Refs []Finding
}

// ListenerResult is the compiled state of one listener.
type ListenerResult struct {
	Name string
	Port *int32
	// Transport is what the listener binds: snapshot.TCP or snapshot.UDP.
	Transport      snapshot.Transport
	AttachedRoutes int32
	// Snapshot is the listener's name in the snapshot, "" when it is not
	// served (conflict or broken certificates).
	Snapshot string
	// Conflict names the PortMux that holds this listener's port.
	Conflict string
	// NotAllowed is set when the port policy does not grant the listener's
	// port to its namespace: it is not served and holds nothing.
	NotAllowed bool
	// Parent is the attachment of a listener with a parentRef to its
	// Gateway's listeners; nil for the others.
	Parent *ParentResult
	// Refs are the unresolved references that affect this listener.
	Refs []Finding
}

// Finding is one unresolved reference, with a reason for conditions.
type Finding struct {
	Reason  string
	Message string
}

// Reasons used in findings.
const (
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonInvalidCertificate  = "InvalidCertificate"
	ReasonInvalidSecret       = "InvalidSecret"
	ReasonServiceNotFound     = "ServiceNotFound"
	ReasonServicePortNotFound = "ServicePortNotFound"
	ReasonNoReadyEndpoints    = "NoReadyEndpoints"
	ReasonAddressNotAllowed   = "AddressBackendNotAllowed"
	ReasonListenerNotServed   = "InternalListenerNotServed"
)

// DefaultTokenKey is the Secret key a tunnel token is read from when the
// reference names none.
const DefaultTokenKey = "token"

// Compile builds the snapshot. PortMuxes are processed oldest first, so the
// oldest holder of a port keeps it whatever order they are listed in. A
// port is claimed per transport, as the kernel binds it and as Gateway API
// and Services count ports: the holder of TCP 443 and the holder of UDP
// 443 may be two PortMuxes.
func Compile(in Input) *Output {
	out := &Output{Snapshot: &snapshot.Snapshot{MaxConnections: in.MaxConnections}, Results: make(map[types.NamespacedName]*Result, len(in.PortMuxes)), GoodSecrets: map[types.NamespacedName]*corev1.Secret{},
		byPortMux: make(map[types.NamespacedName]portMuxOutput, len(in.PortMuxes))}
	// Pointers are sorted: moving the PortMuxes themselves was a tenth of
	// an event's cost at 1,000 PortMuxes.
	pms := make([]*v1alpha1.PortMux, len(in.PortMuxes))
	for i := range in.PortMuxes {
		pms[i] = &in.PortMuxes[i]
	}
	slices.SortStableFunc(pms, func(a, b *v1alpha1.PortMux) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	if in.Cache != nil {
		in.Cache.begin(&in)
	}
	ports := map[portKey]string{} // port and transport → holder "namespace/name", or gatewayHolder
	// Gateways first: a Gateway is the cluster's infrastructure (its class
	// and its Gateways are the admin's), so its ports are never a PortMux's.
	gws := compileGateways(&in, out, ports)
	for _, pm := range pms {
		key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
		if _, dup := out.Results[key]; dup {
			// The same object twice can only come from files given to
			// `portmux serve` (which refuses them when loading): the first
			// one stands.
			continue
		}
		var cacheKey string
		if in.Cache != nil {
			var e *cacheEntry
			if e, cacheKey = in.Cache.lookup(&in, pm, ports); e != nil {
				out.Results[key] = e.res
				if len(e.res.Invalid) == 0 {
					claimPorts(&in, pm, ports)
					out.Snapshot.Listeners = append(out.Snapshot.Listeners, e.listeners...)
				}
				out.byPortMux[key] = portMuxOutput{listeners: e.listeners, claims: claims(&in, pm, len(e.res.Invalid) > 0)}
				continue
			}
		}
		c := &compiler{in: &in, pm: pm, res: &Result{}, good: out.GoodSecrets, gateways: gws}
		out.Results[key] = c.res
		if errs := Validate(pm); len(errs) > 0 {
			c.res.Invalid = errs
			if in.Cache != nil {
				in.Cache.store(pm, cacheKey, nil, c.res)
			}
			out.byPortMux[key] = portMuxOutput{claims: claims(&in, pm, true), secrets: SecretRefs(pm)}
			continue
		}
		ls := c.listeners(ports)
		if in.Cache != nil {
			in.Cache.store(pm, cacheKey, ls, c.res)
		}
		out.byPortMux[key] = portMuxOutput{listeners: ls, claims: claims(&in, pm, false), secrets: SecretRefs(pm)}
		out.Snapshot.Listeners = append(out.Snapshot.Listeners, ls...)
	}
	if in.Cache != nil {
		in.Cache.end()
	}
	// Gateway ports last: PortMux listeners attached to their listeners
	// (parentRef) add routes to them.
	out.Snapshot.Listeners = append(out.Snapshot.Listeners, gws.snapshots()...)
	slices.SortFunc(out.Snapshot.Listeners, func(a, b snapshot.Listener) int { return cmp.Compare(a.Name, b.Name) })
	out.ports = ports
	return out
}

type compiler struct {
	in  *Input
	pm  *v1alpha1.PortMux
	res *Result
	// routeName names the route being compiled, for findings.
	routeName string
	// good collects the certificate Secrets being served.
	good map[types.NamespacedName]*corev1.Secret
	// gateways takes the listeners that attach to a Gateway listener.
	gateways *gwCompiler
}

func (c *compiler) qualify(name string) string {
	if c.pm.Namespace == "" {
		return c.pm.Name + "/" + name
	}
	return c.pm.Namespace + "/" + c.pm.Name + "/" + name
}

func (c *compiler) holder() string {
	if c.pm.Namespace == "" {
		return c.pm.Name
	}
	return c.pm.Namespace + "/" + c.pm.Name
}

func (c *compiler) ref(lr *ListenerResult, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if c.routeName != "" {
		msg = "route " + c.routeName + ": " + msg
	}
	f := Finding{Reason: reason, Message: msg}
	if lr != nil && !slices.Contains(lr.Refs, f) {
		lr.Refs = append(lr.Refs, f)
	}
	if !slices.Contains(c.res.Refs, f) {
		c.res.Refs = append(c.res.Refs, f)
	}
}

// listeners compiles every listener of the PortMux that can be served.
func (c *compiler) listeners(ports map[portKey]string) []snapshot.Listener {
	spec := &c.pm.Spec
	c.res.Listeners = make([]ListenerResult, len(spec.Listeners))
	var out []snapshot.Listener
	for i := range spec.Listeners {
		l := &spec.Listeners[i]
		lr := &c.res.Listeners[i]
		lr.Name, lr.Port, lr.Transport = l.Name, l.Port, listenerTransport(l)
		for j := range spec.Routes {
			if attached(&spec.Routes[j], l) {
				lr.AttachedRoutes++
			}
		}
		if l.ParentRef != nil {
			c.attachToGateway(lr, l)
			continue
		}
		if l.Port != nil {
			if !c.in.PortPolicy.Allows(*l.Port, lr.Transport, c.pm.Namespace) {
				lr.NotAllowed = true
				continue
			}
			cl := portKey{t: lr.Transport, port: *l.Port}
			if h, held := ports[cl]; held && h != c.holder() {
				lr.Conflict = h
				continue
			}
			ports[cl] = c.holder()
		}
		sl := snapshot.Listener{
			Name:           c.qualify(l.Name),
			Transport:      lr.Transport,
			ProbeTimeout:   snapshot.DefaultProbeTimeout,
			MaxProbeBytes:  snapshot.DefaultMaxProbeBytes,
			MaxConnections: snapshot.DefaultMaxConnections,
			ProxyProtocol:  proxyProtocol(l.ProxyProtocol),

			MaxConnectionsPerClient:    int(ptrOr(l.MaxConnectionsPerClient, snapshot.DefaultMaxConnectionsPerClient)),
			MaxConnectionRatePerClient: int(ptrOr(l.MaxConnectionRatePerClient, snapshot.DefaultMaxConnectionRatePerClient)),
		}
		if l.Port != nil {
			sl.Address = net.JoinHostPort(c.in.BindAddress, strconv.Itoa(int(*l.Port)))
		}
		if l.ProbeTimeout != nil {
			sl.ProbeTimeout = l.ProbeTimeout.Duration
		}
		if l.MaxConnections != nil {
			sl.MaxConnections = int(*l.MaxConnections)
		}
		if l.TLS != nil {
			t, ok := c.tls(lr, l.TLS)
			if !ok {
				continue // no usable certificate: this listener is down
			}
			sl.TLS = t
		}
		for j := range spec.Routes {
			if r := &spec.Routes[j]; attached(r, l) {
				sl.Routes = append(sl.Routes, c.route(lr, r, l))
			}
		}
		lr.Snapshot = sl.Name
		out = append(out, sl)
	}
	// A route that hands its streams to an internal listener that is not
	// served (its certificates are missing) leaves them nowhere to go.
	for j := range spec.Routes {
		r := &spec.Routes[j]
		if r.Listener == nil {
			continue
		}
		target := c.listenerResult(*r.Listener)
		if target == nil || target.Snapshot != "" {
			continue
		}
		for i := range spec.Listeners {
			if lr := &c.res.Listeners[i]; attached(r, &spec.Listeners[i]) && lr.Snapshot != "" {
				c.routeName = r.Name
				c.ref(lr, ReasonListenerNotServed, "hands TLS streams to listener %s, which is not served; they are closed", *r.Listener)
				c.routeName = ""
			}
		}
	}
	return out
}

// attached reports whether route r applies to listener l: l is among the
// listeners r names, or r names none and l has a port whose transport
// carries r's protocol (as a Gateway API parentRef without sectionName
// attaches to every listener of its Gateway that accepts the route's
// kind): a quic route goes to UDP listeners, an ssh route to TCP ones,
// and an openvpn, bytes or any route to both. Internal listeners only
// take the routes that name them.
func attached(r *v1alpha1.Route, l *v1alpha1.Listener) bool {
	if len(r.Listeners) == 0 {
		return (l.Port != nil || l.ParentRef != nil) && snapshot.Protocol(r.Match.Protocol).FitsTransport(listenerTransport(l))
	}
	return slices.Contains(r.Listeners, l.Name)
}

// proxyProtocol compiles a listener's trusted PROXY header senders. An
// IPv4-mapped IPv6 network (::ffff:10.0.0.0/104) becomes the IPv4 network
// it maps: the dataplane matches IPv4-mapped peers as IPv4, so as written
// it would match nobody.
func proxyProtocol(pp *v1alpha1.ListenerProxyProtocol) *snapshot.ProxyProtocol {
	if pp == nil {
		return nil
	}
	out := &snapshot.ProxyProtocol{}
	for _, c := range pp.TrustedCIDRs {
		p, err := netip.ParsePrefix(string(c))
		if err != nil {
			continue // Validate refused it
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out.TrustedCIDRs = append(out.TrustedCIDRs, p.Masked())
	}
	return out
}

func (c *compiler) listenerResult(name string) *ListenerResult {
	for i := range c.res.Listeners {
		if c.res.Listeners[i].Name == name {
			return &c.res.Listeners[i]
		}
	}
	return nil
}

// tls loads the listener's certificates. Broken ones are findings; the
// listener is served as long as one certificate is usable.
func (c *compiler) tls(lr *ListenerResult, t *v1alpha1.ListenerTLS) (*snapshot.TLSConfig, bool) {
	out := &snapshot.TLSConfig{ALPN: slices.Clone(t.ALPN)}
	for _, ref := range t.CertificateRefs {
		key := types.NamespacedName{Namespace: c.pm.Namespace, Name: ref.Name}
		s := c.in.Secrets[key]
		if s == nil {
			c.ref(lr, ReasonSecretNotFound, "Secret %s (listener %s certificateRefs) not found", ref.Name, lr.Name)
			continue
		}
		cert, err := keyPair(s)
		if err != nil {
			prev := c.in.LastGoodSecrets[key]
			var prevCert *tls.Certificate
			if prev != nil {
				prevCert, _ = keyPair(prev)
			}
			if prevCert == nil {
				c.ref(lr, ReasonInvalidCertificate, "Secret %s (listener %s certificateRefs): %v", ref.Name, lr.Name, err)
				continue
			}
			c.ref(lr, ReasonInvalidCertificate, "Secret %s (listener %s certificateRefs): %v; still serving its previous certificate", ref.Name, lr.Name, err)
			cert, s = prevCert, prev
		}
		c.good[key] = s
		out.Certificates = append(out.Certificates, snapshot.Certificate{Source: "secret/" + ref.Name, Certificate: cert})
	}
	return out, len(out.Certificates) > 0
}

// keyPair parses a kubernetes.io/tls Secret's tls.crt and tls.key.
func keyPair(s *corev1.Secret) (*tls.Certificate, error) {
	crt, key := secretValue(s, corev1.TLSCertKey), secretValue(s, corev1.TLSPrivateKeyKey)
	if len(crt) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("needs %s and %s", corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("invalid key pair: %w", err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("invalid certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	return &cert, nil
}

// secretValue reads data, or stringData for Secrets that never went through
// the API server (files given to `portmux serve`).
func secretValue(s *corev1.Secret, key string) []byte {
	if v, ok := s.Data[key]; ok {
		return v
	}
	if v, ok := s.StringData[key]; ok {
		return []byte(v)
	}
	return nil
}

// route compiles r for listener l. A route on a TCP and a UDP listener
// compiles once for each: its backend is the Service port of each
// listener's transport.
func (c *compiler) route(lr *ListenerResult, r *v1alpha1.Route, l *v1alpha1.Listener) snapshot.Route {
	c.routeName = r.Name
	defer func() { c.routeName = "" }()
	sr := snapshot.Route{Name: c.qualify(r.Name), Match: compileMatch(&r.Match)}
	if r.IdleTimeout != nil {
		sr.IdleTimeout = r.IdleTimeout.Duration
	}
	switch {
	case r.Backend != nil:
		proto := corev1.ProtocolTCP
		if listenerTransport(l) == snapshot.UDP {
			proto = corev1.ProtocolUDP
		}
		b := c.backend(lr, r.Backend.Service, r.Backend.Address, proto)
		b.Mode = snapshot.ModeTCP
		if r.Backend.Mode == v1alpha1.BackendModeHTTP {
			b.Mode = snapshot.ModeHTTP
		}
		switch r.Backend.ProxyProtocol {
		case v1alpha1.ProxyProtocolV1:
			b.ProxyProtocol = 1
		case v1alpha1.ProxyProtocolV2:
			b.ProxyProtocol = 2
		}
		sr.Backend = &b
	case r.Listener != nil:
		sr.Listener = c.qualify(*r.Listener)
	case r.Tunnel != nil:
		sr.Tunnel = c.tunnel(lr, r.Tunnel)
	}
	return sr
}

func compileMatch(m *v1alpha1.RouteMatch) snapshot.Match {
	out := snapshot.Match{
		Protocol:   snapshot.Protocol(m.Protocol), // the same names: TestProtocolsAgree
		SNI:        lower(m.SNI),
		ALPN:       slices.Clone(m.ALPN),
		Host:       lower(m.Host),
		PathPrefix: m.PathPrefix,
	}
	if m.Prefix != "" {
		out.Prefix = []byte(m.Prefix)
	}
	if m.Regex != "" {
		out.Regex = regexp.MustCompile(m.Regex) // Validate compiled it already
	}
	return out
}

func lower(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.TrimSuffix(strings.ToLower(s), ".")
	}
	return out
}

func (c *compiler) tunnel(lr *ListenerResult, t *v1alpha1.Tunnel) *snapshot.Tunnel {
	out := &snapshot.Tunnel{}
	for _, o := range t.AllowedOrigins {
		co, _ := snapshot.CanonicalOrigin(string(o)) // Validate checked it
		out.AllowedOrigins = append(out.AllowedOrigins, co)
	}
	for _, a := range t.Allow {
		proto := corev1.ProtocolTCP
		if a.Protocol == v1alpha1.TransportUDP {
			proto = corev1.ProtocolUDP
		}
		tt := snapshot.TunnelTarget{UDP: proto == corev1.ProtocolUDP}
		tt.Backend = c.backend(lr, a.Service, a.Address, proto)
		if a.Service != nil {
			tt.Names = append(tt.Names, a.Service.Name+":"+a.Service.Port.String())
			if p := c.servicePort(a.Service, proto); p != nil {
				// Clients may ask by number or by name.
				for _, alt := range []string{strconv.Itoa(int(p.Port)), p.Name} {
					if n := a.Service.Name + ":" + alt; alt != "" && !slices.Contains(tt.Names, n) {
						tt.Names = append(tt.Names, n)
					}
				}
			}
		} else {
			tt.Names = append(tt.Names, a.Address)
		}
		out.Allow = append(out.Allow, tt)
	}
	if t.Auth.TokenSecretRef != nil { // Validate refused a tunnel without auth
		ref := t.Auth.TokenSecretRef
		key := cmp.Or(ref.Key, DefaultTokenKey)
		s := c.in.Secrets[types.NamespacedName{Namespace: c.pm.Namespace, Name: ref.Name}]
		var token []byte
		if s == nil {
			c.ref(lr, ReasonSecretNotFound, "Secret %s (tunnel token) not found; the tunnel refuses every client until it exists", ref.Name)
		} else {
			raw := secretValue(s, key)
			token = trimToken(raw)
			switch {
			case len(raw) == 0:
				c.ref(lr, ReasonInvalidSecret, "Secret %s has no value under key %q for the tunnel token; the tunnel refuses every client", ref.Name, key)
			case len(token) == 0:
				c.ref(lr, ReasonInvalidSecret, "Secret %s holds only whitespace under key %q for the tunnel token; the tunnel refuses every client", ref.Name, key)
			}
		}
		if len(token) == 0 {
			// Fail closed: without its token the tunnel allows nothing.
			return &snapshot.Tunnel{Token: []byte{}, Allow: nil}
		}
		out.Token = token
	}
	return out
}

// trimToken drops the whitespace at the end of a token Secret's value:
// `kubectl create secret --from-file` keeps the file's final newline (CRLF
// from some editors), which no client sends. The result is a copy: a
// snapshot never shares the Secret's bytes.
func trimToken(v []byte) []byte {
	return bytes.Clone(bytes.TrimRight(v, " \t\r\n"))
}

// backend resolves a Service port to its ready endpoints, or takes an
// address as is.
func (c *compiler) backend(lr *ListenerResult, svc *v1alpha1.ServicePort, address string, proto corev1.Protocol) snapshot.Backend {
	b := snapshot.Backend{DialTimeout: snapshot.DefaultDialTimeout}
	if svc == nil {
		b.Name = address
		if !c.in.AllowAddressBackends {
			c.ref(lr, ReasonAddressNotAllowed, "address %s is not allowed in this cluster (the controller runs without --allow-address-backends); use a Service", address)
			return b
		}
		b.Endpoints = []string{address}
		return b
	}
	b.Name = c.pm.Namespace + "/" + svc.Name + ":" + svc.Port.String()
	sp := c.servicePort(svc, proto)
	if sp == nil {
		if c.in.Services[types.NamespacedName{Namespace: c.pm.Namespace, Name: svc.Name}] == nil {
			c.ref(lr, ReasonServiceNotFound, "Service %s not found", svc.Name)
		} else {
			c.ref(lr, ReasonServicePortNotFound, "Service %s has no %s port %s", svc.Name, proto, svc.Port.String())
		}
		return b
	}
	b.Endpoints = c.endpoints(svc.Name, sp)
	if len(b.Endpoints) == 0 {
		c.ref(lr, ReasonNoReadyEndpoints, "Service %s port %s has no ready endpoints", svc.Name, svc.Port.String())
	}
	return b
}

func (c *compiler) servicePort(svc *v1alpha1.ServicePort, proto corev1.Protocol) *corev1.ServicePort {
	s := c.in.Services[types.NamespacedName{Namespace: c.pm.Namespace, Name: svc.Name}]
	if s == nil {
		return nil
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if cmp.Or(p.Protocol, corev1.ProtocolTCP) != proto {
			continue
		}
		if (svc.Port.Type == intstr.Int && p.Port == svc.Port.IntVal) ||
			(svc.Port.Type == intstr.String && p.Name == svc.Port.StrVal) {
			return p
		}
	}
	return nil
}

// endpoints lists the ready addresses of a Service port, sorted, from its
// EndpointSlices. A slice port matches by the Service port's name (EndpointSlice
// ports carry it); an endpoint with no ready condition counts as ready, as
// the API defines.
func (c *compiler) endpoints(service string, sp *corev1.ServicePort) []string {
	return readyEndpoints(c.in, types.NamespacedName{Namespace: c.pm.Namespace, Name: service}, sp)
}

// readyEndpoints lists the ready addresses of port sp of the Service svc,
// sorted, from its EndpointSlices.
func readyEndpoints(in *Input, svc types.NamespacedName, sp *corev1.ServicePort) []string {
	var out []string
	for _, es := range in.EndpointSlices[svc] {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var port int32 = -1
		for _, p := range es.Ports {
			if p.Port != nil && ptrOr(p.Name, "") == sp.Name && cmp.Or(ptrOr(p.Protocol, corev1.ProtocolTCP), corev1.ProtocolTCP) == cmp.Or(sp.Protocol, corev1.ProtocolTCP) {
				port = *p.Port
				break
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(port))))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
