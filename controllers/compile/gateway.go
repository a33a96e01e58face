package compile

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// GatewayControllerName is the GatewayClass controllerName PortMux
// implements: Gateways of a class with another controllerName belong to
// another implementation and are never looked at.
const GatewayControllerName = "portmux.dev/gateway-controller"

// SupportedBundleVersion is the Gateway API release whose CRDs this
// translation is written against (the gateway.networking.k8s.io/bundle-version
// annotation of the installed CRDs is compared with it, minor version only).
const SupportedBundleVersion = "v1.6.3"

// SupportedFeatures are the Gateway API features the translation
// implements, sorted as the GatewayClass status requires: what the
// conformance suite is told to run. A new slice each call, so that no
// caller can change what another sees.
func SupportedFeatures() []gwv1.FeatureName {
	return []gwv1.FeatureName{
		"Gateway", "ReferenceGrant", "TCPRoute", "TLSRoute", "TLSRouteModeMixed", "TLSRouteModeTerminate", "UDPRoute",
	}
}

// The route kinds a Gateway listener can take, by their Gateway API names.
const (
	KindTLSRoute = "TLSRoute"
	KindTCPRoute = "TCPRoute"
	KindUDPRoute = "UDPRoute"
	// KindHTTPRoute is the kind of HTTP and HTTPS listeners. PortMux
	// does not implement HTTPRoute (it is not a supported feature): it
	// attaches and counts HTTPRoutes, as the core Gateway conformance
	// tests expect of HTTP listeners, writes no status for them and
	// carries no HTTP traffic (the listener closes its connections).
	KindHTTPRoute = "HTTPRoute"
)

// GatewayInput is the Gateway API part of a compile's input: the objects of
// the cluster, as the controller's cache has them. Secrets, Services and
// EndpointSlices that Gateways and routes name are in the Input's maps, with
// the PortMuxes'.
type GatewayInput struct {
	// ControllerName selects the GatewayClasses to implement; empty: the
	// Gateway API is off and nothing below is looked at.
	ControllerName string

	Classes         []gwv1.GatewayClass
	Gateways        []gwv1.Gateway
	TLSRoutes       []gwv1.TLSRoute
	TCPRoutes       []gwv1.TCPRoute
	UDPRoutes       []gwv1.UDPRoute
	ReferenceGrants []gwv1.ReferenceGrant
	// HTTPRoutes are only attached and counted (KindHTTPRoute); nil
	// when the cluster does not serve them.
	HTTPRoutes []gwv1.HTTPRoute

	// NamespaceLabels are the labels of every namespace, for listeners
	// that allow routes from namespaces chosen by a selector.
	NamespaceLabels map[string]map[string]string

	// BundleVersion is the bundle-version annotation of the installed
	// Gateway API CRDs ("" when missing or when they disagree).
	BundleVersion string

	// AddressSource names the dataplane Service whose addresses are every
	// Gateway's ("namespace/name"), "" when none is configured (`portmux
	// serve`, tests): then Programmed does not wait for an address.
	AddressSource string
	// Addresses are that Service's load-balancer addresses (or its cluster
	// IP for a ClusterIP Service).
	Addresses []gwv1.GatewayStatusAddress

	// Services, when set, gives every Gateway a Service and dataplane
	// ports of its own (gateway_ports.go): AddressSource and Addresses
	// are then unused. nil: every Gateway is served on the one dataplane
	// Service, and Gateways asking for one port are merged or refused.
	Services *GatewayServices

	// ClientLimits bound what one client may hold on every Gateway
	// listener: the Gateway API has no field for them, and a port facing
	// the internet needs them as much as a PortMux listener does. The
	// manager sets them from its flags (by default PortMux's own
	// defaults); zero values leave a limit off.
	ClientLimits ClientLimits
}

// ClientLimits are the per-client caps of a listener, a client being an
// IPv4 address or an IPv6 /64 (snapshot.Listener's fields of the same
// names).
type ClientLimits struct {
	MaxConnectionsPerClient    int
	MaxConnectionRatePerClient int
}

// GatewayOutput is what the translation decided for each Gateway API object
// PortMux implements: the inputs of their statuses.
type GatewayOutput struct {
	Classes  map[string]*GatewayClassResult
	Gateways map[types.NamespacedName]*GatewayResult
	Routes   map[RouteKey]*RouteResult
}

// GatewayClassResult is the decision on one GatewayClass of ours.
type GatewayClassResult struct {
	// Refused is the reason the class is not accepted ("" when it is).
	Refused Finding
	// SupportedVersion is false when the installed CRDs are not of the
	// release this translation knows; the class is served best effort.
	SupportedVersion bool
	VersionMessage   string
}

// GatewayResult is the decision on one Gateway of an implemented class.
type GatewayResult struct {
	// Refused is why the whole Gateway is not accepted ("" when it is).
	Refused Finding
	// Listeners in spec order.
	Listeners []GatewayListenerResult
	// AddressSource and Addresses are copied from the input, or, with
	// per-Gateway Services, the Gateway's Service and its addresses.
	AddressSource string
	Addresses     []gwv1.GatewayStatusAddress
	// Service is the Service the Gateway should have (per-Gateway
	// Services only; nil when no listener takes a port).
	Service *GatewayService
}

// GatewayListenerResult is the decision on one Gateway listener.
type GatewayListenerResult struct {
	Name           string
	Port           int32
	SupportedKinds []gwv1.RouteGroupKind
	AttachedRoutes int32
	// Refused is why the listener is not accepted ("" when it is):
	// UnsupportedProtocol, PortUnavailable, or the conflict's reason.
	Refused Finding
	// Conflicted is HostnameConflict or ProtocolConflict, "" for none.
	Conflicted Finding
	// Refs are unresolved references (certificates, route kinds); the
	// first one's reason is the ResolvedRefs condition's.
	Refs []Finding
	// Snapshot is the snapshot listener serving this one ("" when it is
	// not served); listeners on one port share one.
	Snapshot string
	// NotServed says why an accepted listener is not served.
	NotServed string
}

// RouteKey names a route of any kind.
type RouteKey struct {
	Kind string
	types.NamespacedName
}

// RouteResult is the decision on one route.
type RouteResult struct {
	// Parents are its parentRefs that name a Gateway of ours, in spec
	// order: the entries of its status this controller owns.
	Parents []RouteParentResult
	// Refs are the backendRefs that could not be used; they are the same
	// for every parent.
	Refs []Finding
}

// RouteParentResult is a route's attachment to one parentRef.
type RouteParentResult struct {
	Ref gwv1.ParentReference
	// Refused is why the parent does not accept the route ("" when it
	// does).
	Refused Finding
}

// Reasons the Gateway API defines, used in findings and conditions.
const (
	reasonAccepted              = "Accepted"
	reasonProgrammed            = "Programmed"
	reasonResolvedRefs          = "ResolvedRefs"
	reasonInvalid               = "Invalid"
	reasonInvalidParameters     = "InvalidParameters"
	reasonUnsupportedAddress    = "UnsupportedAddress"
	reasonListenersNotValid     = "ListenersNotValid"
	reasonListenersNotResolved  = "ListenersNotResolved"
	reasonAddressNotAssigned    = "AddressNotAssigned"
	reasonSupportedVersion      = "SupportedVersion"
	reasonUnsupportedVersion    = "UnsupportedVersion"
	reasonPortUnavailable       = "PortUnavailable"
	reasonUnsupportedProtocol   = "UnsupportedProtocol"
	reasonUnsupportedValue      = "UnsupportedValue"
	reasonHostnameConflict      = "HostnameConflict"
	reasonProtocolConflict      = "ProtocolConflict"
	reasonNoConflicts           = "NoConflicts"
	reasonInvalidCertificateRef = "InvalidCertificateRef"
	reasonInvalidRouteKinds     = "InvalidRouteKinds"
	reasonRefNotPermitted       = "RefNotPermitted"
	reasonNotAllowedByListeners = "NotAllowedByListeners"
	reasonNoMatchingHostname    = "NoMatchingListenerHostname"
	reasonNoMatchingParent      = "NoMatchingParent"
	reasonBackendNotFound       = "BackendNotFound"
	reasonInvalidKind           = "InvalidKind"
)

// gatewayHolder is how a Gateway holds a port in the port table shared with
// PortMuxes; conflictMessage tells the two kinds of holder apart.
func gatewayHolder(gw *gwv1.Gateway) string { return "Gateway " + gw.Namespace + "/" + gw.Name }

// conflictMessage says who holds a PortMux listener's port (claimName's
// words: "port 443", "UDP port 443").
func conflictMessage(port, holder string) string {
	if strings.HasPrefix(holder, "the Gateway port range") {
		return fmt.Sprintf("%s is in %s (the manager's --gateway-port-range): its ports are the dataplane ports of Gateways", port, holder)
	}
	if gw, ok := strings.CutPrefix(holder, "Gateway "); ok {
		return fmt.Sprintf("%s is held by Gateway %s: a Gateway's ports are never taken by a PortMux", port, gw)
	}
	return fmt.Sprintf("%s is held by PortMux %s, which was created first (or, created at the same second, sorts first by namespace and name)", port, holder)
}

// gwRoute is a TLSRoute, TCPRoute or UDPRoute: they differ only in their
// hostnames (TLS) and in the listener protocol they need.
type gwRoute struct {
	key        RouteKey
	created    metav1.Time
	parentRefs []gwv1.ParentReference
	hostnames  []gwv1.Hostname
	backends   []gwv1.BackendRef
	// backend is the route's one rule compiled, once for all its parents.
	backend *snapshot.Backend
}

// gwListener is one Gateway listener while it is compiled.
type gwListener struct {
	gw     *gwv1.Gateway
	spec   *gwv1.Listener
	res    *GatewayListenerResult
	tls    *snapshot.TLSConfig // terminating listeners' certificates
	kind   string              // the route kind it takes, "" for none
	routes []*gwRoute          // attached, precedence order
	hosts  map[*gwRoute][]string
	// portmuxes are the PortMux listeners attached to it, oldest
	// PortMux first (gateway_portmux.go).
	portmuxes []*pmAttachment
}

// gwCompiler holds one compile's Gateway API state.
type gwCompiler struct {
	in   *Input
	gin  *GatewayInput
	out  *GatewayOutput
	good map[types.NamespacedName]*corev1.Secret

	gateways map[types.NamespacedName]*gwGateway
	// attachments counts PortMux listeners attached so far: their order
	// on a shared port.
	attachments int
	// groups are the ports Gateways hold, in the order they were claimed;
	// a port's listeners may come from several Gateways.
	groups map[portKey]*portGroup
	order  []portKey
}

// portKey is a port of one transport: TCP and UDP ports are distinct
// claims, for Gateways as for PortMux listeners, which share one table of
// them. With per-Gateway Services it is also one Gateway's (gw): Gateways
// never share a port; on the shared address, and in the table shared
// with PortMuxes, gw is zero.
type portKey struct {
	gw   types.NamespacedName
	t    snapshot.Transport
	port int32
}

// String says the port in conditions as claimName does: "port 443" for
// TCP, as before UDP listeners existed, and "UDP port 443".
func (pk portKey) String() string {
	if pk.t == snapshot.UDP {
		return fmt.Sprintf("UDP port %d", pk.port)
	}
	return fmt.Sprintf("port %d", pk.port)
}

// portGroup is one port held by Gateways: the Gateway that claimed it
// first and the listeners of every Gateway merged onto it.
type portGroup struct {
	holder    string
	listeners []*gwListener
	// bind is the dataplane port allocated to it (per-Gateway Services);
	// 0: the listener port itself.
	bind int32
}

type gwGateway struct {
	gw        *gwv1.Gateway
	res       *GatewayResult
	listeners []*gwListener
}

// compileGateways decides on the Gateways of the implemented classes and
// their routes, claiming their ports in ports before any PortMux does, and
// records every decision in out.Gateway. Their snapshot listeners come
// from snapshots, once the PortMuxes that attach to them are known.
func compileGateways(in *Input, out *Output, ports map[portKey]string) *gwCompiler {
	g := &gwCompiler{
		in: in, gin: &in.Gateway, good: out.GoodSecrets,
		out: &GatewayOutput{
			Classes:  map[string]*GatewayClassResult{},
			Gateways: map[types.NamespacedName]*GatewayResult{},
			Routes:   map[RouteKey]*RouteResult{},
		},
		gateways: map[types.NamespacedName]*gwGateway{},
		groups:   map[portKey]*portGroup{},
	}
	out.Gateway = g.out
	if g.gin.ControllerName == "" {
		return g
	}
	g.classes()
	gws := slices.Clone(g.gin.Gateways)
	slices.SortStableFunc(gws, func(a, b gwv1.Gateway) int { return olderFirst(a.ObjectMeta, b.ObjectMeta) })
	for i := range gws {
		gw := &gws[i]
		class, ours := g.out.Classes[string(gw.Spec.GatewayClassName)]
		key := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		if !ours {
			continue
		}
		if _, dup := g.gateways[key]; dup {
			continue
		}
		gg := &gwGateway{gw: gw, res: &GatewayResult{AddressSource: g.gin.AddressSource, Addresses: slices.Clone(g.gin.Addresses)}}
		if svcs := g.gin.Services; svcs != nil {
			svc := types.NamespacedName{Namespace: svcs.Namespace, Name: GatewayServiceName(key)}
			gg.res.AddressSource, gg.res.Addresses = svc.String(), slices.Clone(svcs.Existing[key].Addresses)
		}
		g.gateways[key] = gg
		g.out.Gateways[key] = gg.res
		switch {
		case class.Refused.Reason != "":
			gg.res.Refused = Finding{reasonInvalid, fmt.Sprintf("GatewayClass %s is not accepted: %s", gw.Spec.GatewayClassName, class.Refused.Message)}
			continue
		case len(gw.Spec.Addresses) > 0:
			gg.res.Refused = Finding{reasonUnsupportedAddress, "spec.addresses cannot be requested: every Gateway of PortMux is served on its dataplane Service's addresses"}
			continue
		}
		g.listeners(gg, ports)
	}
	if g.gin.Services != nil {
		g.allocate(ports)
	}
	g.routes()
	return g
}

// snapshots builds the snapshot listeners of every port Gateways hold.
func (g *gwCompiler) snapshots() []snapshot.Listener {
	var sls []snapshot.Listener
	for _, pk := range g.order {
		sls = append(sls, g.snapshot(pk, g.groups[pk])...)
	}
	return sls
}

// olderFirst orders objects by age, then namespace and name: the Gateway
// API's precedence among conflicting objects.
func olderFirst(a, b metav1.ObjectMeta) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// classes accepts every GatewayClass of ours that asks for no parameters
// (PortMux takes none).
func (g *gwCompiler) classes() {
	for i := range g.gin.Classes {
		gc := &g.gin.Classes[i]
		if string(gc.Spec.ControllerName) != g.gin.ControllerName {
			continue
		}
		res := &GatewayClassResult{SupportedVersion: true, VersionMessage: "Gateway API CRDs of " + g.gin.BundleVersion + " are supported"}
		if gc.Spec.ParametersRef != nil {
			res.Refused = Finding{reasonInvalidParameters, "PortMux takes no parameters: parametersRef must be unset"}
		}
		if !sameMinor(g.gin.BundleVersion, SupportedBundleVersion) {
			res.SupportedVersion = false
			found := cmp.Or(g.gin.BundleVersion, "no bundle-version annotation")
			res.VersionMessage = fmt.Sprintf("the installed Gateway API CRDs have %s; PortMux supports %s (served best effort)", found, SupportedBundleVersion)
		}
		g.out.Classes[gc.Name] = res
	}
}

// sameMinor reports whether two "vX.Y.Z" versions share X.Y.
func sameMinor(a, b string) bool {
	minor := func(v string) string {
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			return ""
		}
		return parts[0] + "." + parts[1]
	}
	return a != "" && minor(a) == minor(b)
}

// listenerKind is the route kind a listener protocol takes; "" for the
// protocols PortMux does not serve.
func listenerKind(l *gwv1.Listener) string {
	switch l.Protocol {
	case gwv1.TLSProtocolType:
		return KindTLSRoute
	case gwv1.TCPProtocolType:
		return KindTCPRoute
	case gwv1.UDPProtocolType:
		return KindUDPRoute
	case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		return KindHTTPRoute
	}
	return ""
}

// served reports whether PortMux serves a listener of this protocol. HTTP
// and HTTPS listeners are accepted and bound (their certificates checked)
// but take no route: PortMux implements no HTTPRoute yet, and Gateways
// with such listeners (the conformance suite's base Gateways) must still
// be Accepted and Programmed. Their connections are closed.
func served(l *gwv1.Listener) bool {
	switch l.Protocol {
	case gwv1.TLSProtocolType, gwv1.TCPProtocolType, gwv1.UDPProtocolType, gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		return true
	}
	return false
}

func transportOf(l *gwv1.Listener) snapshot.Transport {
	if l.Protocol == gwv1.UDPProtocolType {
		return snapshot.UDP
	}
	return snapshot.TCP
}

// listeners decides each listener's acceptance, conflicts, port and
// certificates.
func (g *gwCompiler) listeners(gg *gwGateway, ports map[portKey]string) {
	gw := gg.gw
	gg.res.Listeners = make([]GatewayListenerResult, len(gw.Spec.Listeners))
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		lr := &gg.res.Listeners[i]
		lr.Name, lr.Port = string(l.Name), l.Port
		gl := &gwListener{gw: gw, spec: l, res: lr, kind: listenerKind(l), hosts: map[*gwRoute][]string{}}
		gg.listeners = append(gg.listeners, gl)
		g.routeKinds(gl)
		switch {
		case !served(l):
			lr.Refused = Finding{reasonUnsupportedProtocol, fmt.Sprintf("protocol %s is not served by PortMux (TLS, TCP and UDP are; HTTP and HTTPS take no routes)", l.Protocol)}
		case (l.Protocol == gwv1.TLSProtocolType || l.Protocol == gwv1.HTTPSProtocolType) && l.TLS == nil:
			lr.Refused = Finding{reasonUnsupportedValue, fmt.Sprintf("a %s listener needs tls (the CRD requires it)", l.Protocol)}
		}
	}
	conflicts(gg.listeners)

	// Ports: one decision per transport and port, for every listener of
	// the Gateway on it.
	mine := map[portKey][]*gwListener{}
	var keys []portKey
	for _, gl := range gg.listeners {
		if gl.res.Refused.Reason != "" {
			continue
		}
		pk := portKey{t: transportOf(gl.spec), port: gl.spec.Port}
		if g.gin.Services != nil {
			pk.gw = types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		}
		if _, seen := mine[pk]; !seen {
			keys = append(keys, pk)
		}
		mine[pk] = append(mine[pk], gl)
	}
	for _, pk := range keys {
		g.claim(gw, pk, mine[pk], ports)
	}
	for _, gl := range gg.listeners {
		l := gl.spec
		if gl.res.Refused.Reason != "" || (l.Protocol != gwv1.TLSProtocolType && l.Protocol != gwv1.HTTPSProtocolType) || l.TLS == nil ||
			ptrOr(l.TLS.Mode, gwv1.TLSModeTerminate) != gwv1.TLSModeTerminate {
			continue
		}
		gl.tls = g.certificates(gw, gl)
		if gl.tls == nil {
			gl.res.NotServed = "no usable certificate in certificateRefs"
		}
	}
}

// claim gives port pk to a Gateway's listeners ls on it. A port no one
// holds becomes the Gateway's. A port an older Gateway holds is shared
// when every listener on it, the older Gateway's and these, is of one
// protocol that tells listeners apart by hostname (TLS, HTTP, HTTPS): the
// Gateways are then merged onto the dataplane's one address, as the spec
// allows, and a listener whose hostname an older Gateway's listener on the
// port has already is Conflicted (the older keeps it). Otherwise the port
// is unavailable to ls. TCP and UDP ports are never shared.
func (g *gwCompiler) claim(gw *gwv1.Gateway, pk portKey, ls []*gwListener, ports map[portKey]string) {
	refuse := func(f Finding) {
		for _, gl := range ls {
			gl.res.Refused = f
		}
	}
	if !g.in.PortPolicy.Allows(pk.port, pk.t, gw.Namespace) {
		refuse(Finding{reasonPortUnavailable, fmt.Sprintf("%s is not granted to namespace %s by the cluster's port policy (the manager's --port-policy, the chart's portPolicy)", pk, gw.Namespace)})
		return
	}
	pg := g.groups[pk]
	if g.gin.Services != nil {
		// A port of the Gateway's own Service: nobody else's to take.
		pg = &portGroup{holder: gatewayHolder(gw), listeners: ls}
		g.groups[pk] = pg
		g.order = append(g.order, pk)
		return
	}
	if pg == nil {
		if h, held := ports[pk]; held {
			refuse(Finding{reasonPortUnavailable, fmt.Sprintf("%s is held by %s", pk, h)})
			return
		}
		pg = &portGroup{holder: gatewayHolder(gw)}
		g.groups[pk] = pg
		g.order = append(g.order, pk)
		ports[pk] = pg.holder
		pg.listeners = ls
		return
	}
	proto := pg.listeners[0].spec.Protocol
	for _, gl := range append(slices.Clone(pg.listeners), ls...) {
		if !hostnamed(gl.spec) || gl.spec.Protocol != proto {
			refuse(Finding{reasonPortUnavailable, fmt.Sprintf("%s port %d is held by %s, which was created first (Gateways share a port only when all their listeners on it are TLS, or all HTTP, or all HTTPS)", pk.t, pk.port, pg.holder)})
			return
		}
	}
	for _, gl := range ls {
		for _, o := range pg.listeners {
			if hostname(o.spec) == hostname(gl.spec) {
				gl.res.Conflicted = Finding{reasonHostnameConflict, fmt.Sprintf("listener %s of Gateway %s/%s, which was created first, uses port %d with the same hostname %q", o.spec.Name, o.gw.Namespace, o.gw.Name, pk.port, hostname(gl.spec))}
				gl.res.Refused = gl.res.Conflicted
				break
			}
		}
		if gl.res.Refused.Reason == "" {
			pg.listeners = append(pg.listeners, gl)
		}
	}
}

// routeKinds decides the listener's supported kinds: the ones it asks for
// that fit its protocol, or its protocol's kind.
func (g *gwCompiler) routeKinds(gl *gwListener) {
	group := gwv1.Group(gwv1.GroupName)
	if gl.spec.AllowedRoutes == nil || len(gl.spec.AllowedRoutes.Kinds) == 0 {
		if gl.kind != "" {
			gl.res.SupportedKinds = []gwv1.RouteGroupKind{{Group: &group, Kind: gwv1.Kind(gl.kind)}}
		}
		return
	}
	gl.res.SupportedKinds = []gwv1.RouteGroupKind{}
	for _, k := range gl.spec.AllowedRoutes.Kinds {
		kg := ptrOr(k.Group, group)
		if string(kg) == v1alpha1.GroupVersion.Group && k.Kind == KindPortMux {
			if f := portMuxListener(gl.spec); f != "" {
				gl.res.Refs = append(gl.res.Refs, Finding{reasonInvalidRouteKinds, "route kind " + string(kg) + "/" + KindPortMux + " cannot attach: " + f})
				continue
			}
			pg := kg
			gl.res.SupportedKinds = append(gl.res.SupportedKinds, gwv1.RouteGroupKind{Group: &pg, Kind: k.Kind})
			continue
		}
		if kg == group && string(k.Kind) == gl.kind && gl.kind != "" {
			gl.res.SupportedKinds = append(gl.res.SupportedKinds, gwv1.RouteGroupKind{Group: &group, Kind: k.Kind})
			continue
		}
		gl.res.Refs = append(gl.res.Refs, Finding{reasonInvalidRouteKinds, fmt.Sprintf("route kind %s/%s cannot attach to a %s listener", kg, k.Kind, gl.spec.Protocol)})
	}
}

// conflicts marks the listeners that are not distinct (Gateway API
// "Distinct Listeners"): on one port, a TCP listener next to TLS ones is a
// ProtocolConflict for all of them, two listeners of one protocol with the
// same hostname (TCP and UDP have none) a HostnameConflict for both. TLS
// listeners of both modes share a port: PortMux tells them apart by SNI.
func conflicts(ls []*gwListener) {
	for _, a := range ls {
		if a.res.Refused.Reason != "" {
			continue
		}
		for _, b := range ls {
			if a == b || !served(b.spec) || a.spec.Port != b.spec.Port || transportOf(a.spec) != transportOf(b.spec) {
				continue
			}
			switch {
			case a.spec.Protocol != b.spec.Protocol:
				a.res.Conflicted = Finding{reasonProtocolConflict, fmt.Sprintf("listener %s uses port %d with protocol %s", b.spec.Name, b.spec.Port, b.spec.Protocol)}
			case !hostnamed(a.spec) || hostname(a.spec) == hostname(b.spec):
				if a.res.Conflicted.Reason == "" {
					a.res.Conflicted = Finding{reasonHostnameConflict, fmt.Sprintf("listener %s uses port %d with the same hostname %q", b.spec.Name, b.spec.Port, hostname(b.spec))}
				}
			}
		}
	}
	for _, a := range ls {
		if a.res.Conflicted.Reason != "" {
			a.res.Refused = a.res.Conflicted
		}
	}
}

// hostnamed reports whether listeners of l's protocol tell each other
// apart by hostname on one port.
func hostnamed(l *gwv1.Listener) bool {
	switch l.Protocol {
	case gwv1.TLSProtocolType, gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		return true
	}
	return false
}

func hostname(l *gwv1.Listener) string {
	return strings.ToLower(string(ptrOr(l.Hostname, "")))
}

// certificates loads a terminating listener's certificateRefs; nil when
// none is usable.
func (g *gwCompiler) certificates(gw *gwv1.Gateway, gl *gwListener) *snapshot.TLSConfig {
	out := &snapshot.TLSConfig{}
	for _, ref := range gl.spec.TLS.CertificateRefs {
		group, kind := string(ptrOr(ref.Group, "")), string(ptrOr(ref.Kind, "Secret"))
		ns := string(ptrOr(ref.Namespace, gwv1.Namespace(gw.Namespace)))
		what := fmt.Sprintf("certificateRef %s/%s", ns, ref.Name)
		if group != "" || kind != "Secret" {
			gl.res.Refs = append(gl.res.Refs, Finding{reasonInvalidCertificateRef, fmt.Sprintf("%s: kind %s/%s is not a Secret", what, group, kind)})
			continue
		}
		if ns != gw.Namespace && !g.granted(gwv1.GroupName, "Gateway", gw.Namespace, "", "Secret", ns, string(ref.Name)) {
			gl.res.Refs = append(gl.res.Refs, Finding{reasonRefNotPermitted, what + ": no ReferenceGrant in namespace " + ns + " allows Gateways of namespace " + gw.Namespace + " to use it"})
			continue
		}
		key := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
		s := g.in.Secrets[key]
		if s == nil {
			gl.res.Refs = append(gl.res.Refs, Finding{reasonInvalidCertificateRef, what + ": Secret not found"})
			continue
		}
		cert, err := keyPair(s)
		if err != nil {
			var prev *tls.Certificate
			if p := g.in.LastGoodSecrets[key]; p != nil {
				prev, _ = keyPair(p)
				s = p
			}
			if prev == nil {
				gl.res.Refs = append(gl.res.Refs, Finding{reasonInvalidCertificateRef, fmt.Sprintf("%s: %v", what, err)})
				continue
			}
			gl.res.Refs = append(gl.res.Refs, Finding{reasonInvalidCertificateRef, fmt.Sprintf("%s: %v; still serving its previous certificate", what, err)})
			cert = prev
		}
		g.good[key] = s
		out.Certificates = append(out.Certificates, snapshot.Certificate{Source: "secret/" + key.String(), Certificate: cert})
	}
	if len(out.Certificates) == 0 {
		return nil
	}
	return out
}

// granted reports whether a ReferenceGrant in toNS lets objects of
// fromGroup/fromKind in fromNS refer to toGroup/toKind toName.
func (g *gwCompiler) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	return ReferenceGranted(g.gin.ReferenceGrants, fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName)
}

// ReferenceGranted reports whether one of grants, in toNS, lets objects of
// fromGroup/fromKind in fromNS refer to toGroup/toKind toName. The
// controller asks it too, so that it reads no Secret of another namespace
// that compile would refuse.
func ReferenceGranted(grants []gwv1.ReferenceGrant, fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	for i := range grants {
		rg := &grants[i]
		if rg.Namespace != toNS {
			continue
		}
		from := slices.ContainsFunc(rg.Spec.From, func(f gwv1.ReferenceGrantFrom) bool {
			return string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(rg.Spec.To, func(t gwv1.ReferenceGrantTo) bool {
			return string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == toName)
		})
		if from && to {
			return true
		}
	}
	return false
}

// allRoutes gathers the three kinds, in the Gateway API's precedence: the
// oldest first, then by namespace and name (then kind).
func (g *gwCompiler) allRoutes() []*gwRoute {
	var rs []*gwRoute
	add := func(kind string, m metav1.ObjectMeta, spec gwv1.CommonRouteSpec, hosts []gwv1.Hostname, backends []gwv1.BackendRef) {
		rs = append(rs, &gwRoute{
			key:     RouteKey{Kind: kind, NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: m.Name}},
			created: m.CreationTimestamp, parentRefs: spec.ParentRefs, hostnames: hosts, backends: backends,
		})
	}
	for i := range g.gin.TLSRoutes {
		r := &g.gin.TLSRoutes[i]
		add(KindTLSRoute, r.ObjectMeta, r.Spec.CommonRouteSpec, r.Spec.Hostnames, firstRule(r.Spec.Rules, func(x gwv1.TLSRouteRule) []gwv1.BackendRef { return x.BackendRefs }))
	}
	for i := range g.gin.TCPRoutes {
		r := &g.gin.TCPRoutes[i]
		add(KindTCPRoute, r.ObjectMeta, r.Spec.CommonRouteSpec, nil, firstRule(r.Spec.Rules, func(x gwv1.TCPRouteRule) []gwv1.BackendRef { return x.BackendRefs }))
	}
	for i := range g.gin.UDPRoutes {
		r := &g.gin.UDPRoutes[i]
		add(KindUDPRoute, r.ObjectMeta, r.Spec.CommonRouteSpec, nil, firstRule(r.Spec.Rules, func(x gwv1.UDPRouteRule) []gwv1.BackendRef { return x.BackendRefs }))
	}
	for i := range g.gin.HTTPRoutes {
		r := &g.gin.HTTPRoutes[i]
		var refs []gwv1.BackendRef
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendRef)
			}
		}
		add(KindHTTPRoute, r.ObjectMeta, r.Spec.CommonRouteSpec, r.Spec.Hostnames, refs)
	}
	slices.SortStableFunc(rs, func(a, b *gwRoute) int {
		if c := a.created.Compare(b.created.Time); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.key.Namespace, b.key.Namespace), cmp.Compare(a.key.Name, b.key.Name), cmp.Compare(a.key.Kind, b.key.Kind))
	})
	return rs
}

// firstRule returns the backendRefs of a route's rule: the CRDs allow
// exactly one.
func firstRule[R any](rules []R, refs func(R) []gwv1.BackendRef) []gwv1.BackendRef {
	if len(rules) == 0 {
		return nil
	}
	return refs(rules[0])
}

// routes attaches every route to the listeners of its parents that allow
// it, and records why the others do not.
func (g *gwCompiler) routes() {
	for _, r := range g.allRoutes() {
		if _, dup := g.out.Routes[r.key]; dup {
			continue
		}
		res := &RouteResult{}
		var parents []RouteParentResult
		for _, ref := range r.parentRefs {
			if string(ptrOr(ref.Group, gwv1.GroupName)) != gwv1.GroupName || string(ptrOr(ref.Kind, "Gateway")) != "Gateway" {
				continue // not a Gateway: another implementation's
			}
			key := types.NamespacedName{Namespace: string(ptrOr(ref.Namespace, gwv1.Namespace(r.key.Namespace))), Name: string(ref.Name)}
			gg := g.gateways[key]
			if gg == nil {
				continue // not a Gateway of ours (or none at all): not ours to tell
			}
			parents = append(parents, RouteParentResult{Ref: ref, Refused: g.attach(r, gg, &ref)})
		}
		if len(parents) == 0 {
			continue
		}
		res.Parents = parents
		b, refs := g.backend(r)
		r.backend, res.Refs = &b, refs
		g.out.Routes[r.key] = res
	}
}

// attach attaches r to the listeners of gg that ref selects and that
// allow it; it returns why none does, or nothing.
func (g *gwCompiler) attach(r *gwRoute, gg *gwGateway, ref *gwv1.ParentReference) Finding {
	if gg.res.Refused.Reason != "" {
		return Finding{reasonNoMatchingParent, fmt.Sprintf("Gateway %s/%s is not accepted: %s", gg.gw.Namespace, gg.gw.Name, gg.res.Refused.Message)}
	}
	var selected, allowed, matched []*gwListener
	for _, gl := range gg.listeners {
		if (ref.SectionName == nil || *ref.SectionName == gl.spec.Name) && (ref.Port == nil || *ref.Port == gl.spec.Port) {
			selected = append(selected, gl)
		}
	}
	if len(selected) == 0 {
		return Finding{reasonNoMatchingParent, "the Gateway has no listener with this parentRef's sectionName and port"}
	}
	for _, gl := range selected {
		if g.allows(gg.gw, gl, r) {
			allowed = append(allowed, gl)
		}
	}
	if len(allowed) == 0 {
		return Finding{reasonNotAllowedByListeners, fmt.Sprintf("no listener this parentRef selects allows a %s from namespace %s", r.key.Kind, r.key.Namespace)}
	}
	for _, gl := range allowed {
		hosts, ok := intersect(hostname(gl.spec), r.hostnames, r.key.Kind == KindTLSRoute || r.key.Kind == KindHTTPRoute)
		if !ok {
			continue
		}
		matched = append(matched, gl)
		gl.routes = append(gl.routes, r)
		gl.hosts[r] = hosts
		gl.res.AttachedRoutes++
	}
	if len(matched) == 0 {
		return Finding{reasonNoMatchingHostname, "no hostname of the route matches the hostname of a listener this parentRef selects"}
	}
	return Finding{}
}

// allows applies a listener's allowedRoutes: the route's kind and
// namespace.
func (g *gwCompiler) allows(gw *gwv1.Gateway, gl *gwListener, r *gwRoute) bool {
	if !slices.ContainsFunc(gl.res.SupportedKinds, func(k gwv1.RouteGroupKind) bool { return string(k.Kind) == r.key.Kind }) {
		return false
	}
	return g.namespaceAllowed(gw, gl, r.key.Namespace)
}

// namespaceAllowed applies a listener's allowedRoutes.namespaces to an
// attaching object's namespace ns.
func (g *gwCompiler) namespaceAllowed(gw *gwv1.Gateway, gl *gwListener, ns string) bool {
	from := gwv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := gl.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		from, sel = ptrOr(ar.Namespaces.From, gwv1.NamespacesFromSame), ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return ns == gw.Namespace
	case gwv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		return s.Matches(labels.Set(g.gin.NamespaceLabels[ns]))
	}
	return false
}

// intersect is the set of SNI names a TLSRoute takes on a listener: its
// hostnames within the listener's hostname, narrowed to the listener's
// where the listener's is the more specific. ok is false when none
// intersects. Routes of other kinds ignore hostnames.
func intersect(listener string, route []gwv1.Hostname, tlsRoute bool) ([]string, bool) {
	if !tlsRoute {
		return nil, true
	}
	if len(route) == 0 {
		if listener == "" {
			return []string{""}, true
		}
		return []string{listener}, true
	}
	var out []string
	for _, h := range route {
		rh := strings.ToLower(string(h))
		var got string
		switch {
		case listener == "" || listener == rh:
			got = rh
		case hostMatches(listener, rh):
			got = rh // the route's is within the listener's wildcard
		case hostMatches(rh, listener):
			got = listener
		default:
			continue
		}
		if !slices.Contains(out, got) {
			out = append(out, got)
		}
	}
	return out, len(out) > 0
}

// hostMatches reports whether pattern ("*.example.com" or a name) covers
// name (a name or a narrower wildcard), as Gateway API wildcards do: "*."
// stands for one or more labels.
func hostMatches(pattern, name string) bool {
	if pattern == name {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok {
		return false
	}
	return strings.HasSuffix(name, suffix) && len(strings.TrimPrefix(name, "*")) > len(suffix)
}

// specificity ranks SNI names for the order routes are tried: exact names
// first, then wildcards with more labels, then no name.
func specificity(h string) int {
	switch {
	case h == "":
		return 0
	case strings.HasPrefix(h, "*."):
		return 1 + strings.Count(h, ".")
	}
	return 1 << 16
}

// backend compiles a route's backendRefs into one backend: the ready
// endpoints of every usable Service port with a weight above zero, each
// repeated in proportion to its share of the weights (weightedEndpoints:
// the dataplane spreads connections and sessions evenly over the list, so
// repetition is how weights reach it). A route none of whose backends is
// usable gets a backend without endpoints: its connections are closed, as
// the spec requires of an invalid backend.
func (g *gwCompiler) backend(r *gwRoute) (snapshot.Backend, []Finding) {
	proto := corev1.ProtocolTCP
	if r.key.Kind == KindUDPRoute {
		proto = corev1.ProtocolUDP
	}
	b := snapshot.Backend{Mode: snapshot.ModeTCP, DialTimeout: snapshot.DefaultDialTimeout}
	var names []string
	var refs []Finding
	var weighted []weightedBackend
	for _, ref := range r.backends {
		group, kind := string(ptrOr(ref.Group, "")), string(ptrOr(ref.Kind, "Service"))
		ns := string(ptrOr(ref.Namespace, gwv1.Namespace(r.key.Namespace)))
		what := fmt.Sprintf("backendRef %s/%s", ns, ref.Name)
		if ref.Port != nil {
			what += ":" + strconv.Itoa(int(*ref.Port))
		}
		switch {
		case group != "" || kind != "Service":
			refs = append(refs, Finding{reasonInvalidKind, fmt.Sprintf("%s: kind %s/%s is not a Service", what, group, kind)})
			continue
		case ns != r.key.Namespace && !g.granted(gwv1.GroupName, r.key.Kind, r.key.Namespace, "", "Service", ns, string(ref.Name)):
			refs = append(refs, Finding{reasonRefNotPermitted, fmt.Sprintf("%s: no ReferenceGrant in namespace %s allows %ss of namespace %s to use it", what, ns, r.key.Kind, r.key.Namespace)})
			continue
		}
		key := types.NamespacedName{Namespace: ns, Name: string(ref.Name)}
		svc := g.in.Services[key]
		if svc == nil {
			refs = append(refs, Finding{reasonBackendNotFound, what + ": Service not found"})
			continue
		}
		var sp *corev1.ServicePort
		for i := range svc.Spec.Ports {
			if p := &svc.Spec.Ports[i]; ref.Port != nil && p.Port == *ref.Port && cmp.Or(p.Protocol, corev1.ProtocolTCP) == proto {
				sp = p
			}
		}
		if sp == nil {
			refs = append(refs, Finding{reasonBackendNotFound, fmt.Sprintf("%s: the Service has no %s port %d", what, proto, ptrOr(ref.Port, 0))})
			continue
		}
		if ptrOr(ref.Weight, 1) == 0 {
			continue
		}
		names = append(names, ns+"/"+string(ref.Name)+":"+strconv.Itoa(int(sp.Port)))
		weighted = append(weighted, weightedBackend{weight: int64(ptrOr(ref.Weight, 1)), endpoints: readyEndpoints(g.in, key, sp)})
	}
	b.Endpoints = weightedEndpoints(weighted)
	b.Name = strings.Join(names, ",")
	if b.Name == "" {
		b.Name = r.key.Kind + " " + r.key.String() + ": no usable backend"
	}
	return b, refs
}

// entry is one way through a TLS port: an SNI name and what takes it.
type entry struct {
	sni      string
	route    *gwRoute // nil: the listener's isolation (close)
	listener *gwListener
}

// snapshot builds the snapshot listeners of a port held by Gateways: the
// port's listener, holding the routes of every served Gateway listener on
// it (of one Gateway, or of several merged), and the internal listeners
// of its Terminate routes.
//
// On a TLS port, routes are tried by SNI, most specific name first (exact
// names, then longer wildcards, then none), then the oldest route: the
// Gateway API's listener and route precedence as one ordered table. Each
// listener with a hostname ends with a route that closes what no route of
// its took, so that a connection for it never falls through to a less
// specific listener's routes (listener isolation). A Terminate listener's
// routes hand the stream to an internal listener that terminates TLS with
// its certificates and forwards what is inside. The port's listener is
// named by its port alone, so that it stays the same listener whichever
// Gateways hold it.
func (g *gwCompiler) snapshot(pk portKey, pg *portGroup) []snapshot.Listener {
	var ls []*gwListener
	for _, gl := range pg.listeners {
		if gl.res.Refused.Reason == "" && gl.res.NotServed == "" {
			ls = append(ls, gl)
		}
	}
	if len(ls) == 0 {
		return nil
	}
	var out []snapshot.Listener
	name := fmt.Sprintf("gateway:%d", pk.port)
	bind := pk.port
	if pg.bind != 0 {
		name = fmt.Sprintf("gateway:%s:%d", pk.gw, pk.port)
		bind = pg.bind
	}
	if pk.t == snapshot.UDP {
		name += "/udp"
	}
	sl := snapshot.Listener{
		Name:                       name,
		Address:                    net.JoinHostPort(g.in.BindAddress, strconv.Itoa(int(bind))),
		ProbeTimeout:               snapshot.DefaultProbeTimeout,
		MaxProbeBytes:              snapshot.DefaultMaxProbeBytes,
		MaxConnections:             snapshot.DefaultMaxConnections,
		MaxConnectionsPerClient:    g.gin.ClientLimits.MaxConnectionsPerClient,
		MaxConnectionRatePerClient: g.gin.ClientLimits.MaxConnectionRatePerClient,
	}
	if pk.t == snapshot.UDP {
		sl.Transport = snapshot.UDP
	}
	for _, gl := range ls {
		gl.res.Snapshot = sl.Name
	}
	if ls[0].kind != KindTLSRoute {
		// TCP and UDP: one listener per port (others conflict); the
		// oldest route takes every connection. HTTP and HTTPS: no
		// route, every connection is closed.
		// PortMux routes attached to a TCP listener come first: the
		// TCPRoute's catch-all is what none of them matched.
		sl.Routes = g.portMuxRoutes(&sl, ls, nil)
		if rs := ls[0].routes; len(rs) > 0 && ls[0].kind != KindHTTPRoute {
			sl.Routes = append(sl.Routes, snapshot.Route{Name: routeName(rs[0]), Match: snapshot.Match{Protocol: snapshot.Any}, Backend: cloneBackend(rs[0].backend)})
		}
		return append(out, sl)
	}
	var es []entry
	for _, gl := range ls {
		for _, r := range gl.routes {
			for _, h := range gl.hosts[r] {
				es = append(es, entry{sni: h, route: r, listener: gl})
			}
		}
		if h := hostname(gl.spec); h != "" {
			es = append(es, entry{sni: h, listener: gl})
		}
	}
	// An entry whose name a more specific listener covers belongs to
	// that listener (isolation), and of the entries for one name only
	// the first can match.
	es = slices.DeleteFunc(es, func(e entry) bool {
		return slices.ContainsFunc(ls, func(o *gwListener) bool {
			return specificity(hostname(o.spec)) > specificity(hostname(e.listener.spec)) && hostMatches(hostname(o.spec), e.sni)
		})
	})
	slices.SortStableFunc(es, func(a, b entry) int {
		if c := cmp.Compare(specificity(b.sni), specificity(a.sni)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.sni, b.sni); c != 0 {
			return c
		}
		if c := cmp.Compare(specificity(hostname(b.listener.spec)), specificity(hostname(a.listener.spec))); c != 0 {
			return c
		}
		return cmp.Compare(boolInt(a.route == nil), boolInt(b.route == nil)) // routes before the isolation
	})
	es = slices.CompactFunc(es, func(a, b entry) bool { return a.sni == b.sni })
	internal := map[string]bool{}
	for _, e := range es {
		m := snapshot.Match{Protocol: snapshot.TLS}
		if e.sni != "" {
			m.SNI = []string{snapshotSNI(e.sni)}
		}
		switch {
		case e.route == nil:
			sl.Routes = append(sl.Routes, snapshot.Route{
				Name:  listenerLabel(e.listener) + ": no route",
				Match: m,
				Backend: &snapshot.Backend{
					Name: "listener " + string(e.listener.spec.Name) + " has no route for this name", Mode: snapshot.ModeTCP,
					DialTimeout: snapshot.DefaultDialTimeout,
				},
			})
		case e.listener.tls == nil: // Passthrough
			sl.Routes = append(sl.Routes, snapshot.Route{Name: routeName(e.route), Match: m, Backend: cloneBackend(e.route.backend)})
		default: // Terminate
			name := listenerLabel(e.listener) + "/" + routeName(e.route)
			sl.Routes = append(sl.Routes, snapshot.Route{Name: routeName(e.route), Match: m, Listener: name})
			if internal[name] {
				continue
			}
			internal[name] = true
			out = append(out, snapshot.Listener{
				Name:           name,
				ProbeTimeout:   snapshot.DefaultProbeTimeout,
				MaxProbeBytes:  snapshot.DefaultMaxProbeBytes,
				MaxConnections: snapshot.DefaultMaxConnections,
				TLS:            cloneTLS(e.listener.tls),
				Routes:         []snapshot.Route{{Name: routeName(e.route), Match: snapshot.Match{Protocol: snapshot.Any}, Backend: cloneBackend(e.route.backend)}},
			})
		}
	}
	// What no TLSRoute (and no listener hostname) claimed goes through
	// the attached PortMuxes' routes.
	sl.Routes = append(sl.Routes, g.portMuxRoutes(&sl, ls, es)...)
	out = append(out, sl)
	return out
}

// weightedBackend is one usable backendRef: its weight and its ready
// endpoints.
type weightedBackend struct {
	weight    int64
	endpoints []string
}

// maxWeightedEndpoints bounds the list weights expand to; beyond it the
// proportions are rounded (every endpoint keeps at least one place).
const maxWeightedEndpoints = 1000

// weightedEndpoints is the endpoint list of backends with weights: each
// endpoint appears in proportion to its share, its backend's weight
// divided among the backend's endpoints (an endpoint of two backends gets
// both shares), reduced to the smallest whole numbers, sorted. Equal
// shares give each endpoint once.
func weightedEndpoints(bs []weightedBackend) []string {
	// Shares as whole numbers: weight × L / n with L the lcm of the
	// endpoint counts.
	l := int64(1)
	for _, b := range bs {
		if n := int64(len(b.endpoints)); n > 0 && b.weight > 0 {
			l = l / gcd(l, n) * n
		}
	}
	share := map[string]int64{}
	for _, b := range bs {
		if b.weight <= 0 {
			continue
		}
		for _, e := range b.endpoints {
			share[e] += b.weight * l / int64(len(b.endpoints))
		}
	}
	var d, total int64
	for _, v := range share {
		d = gcd(d, v)
	}
	for _, v := range share {
		total += v / d
	}
	keys := slices.Sorted(maps.Keys(share))
	var out []string
	for _, e := range keys {
		n := share[e] / d
		if total > maxWeightedEndpoints {
			n = max(1, n*maxWeightedEndpoints/total)
		}
		for range n {
			out = append(out, e)
		}
	}
	return out
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// snapshotSNI writes a Gateway API hostname as a snapshot SNI pattern: a
// Gateway API wildcard stands for one or more labels, the snapshot's
// "*." for one (as in certificates), its "**." for one or more.
func snapshotSNI(h string) string {
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		return "**." + rest
	}
	return h
}

// listenerLabel names a Gateway listener in the snapshot.
func listenerLabel(gl *gwListener) string {
	return "gateway:" + gl.gw.Namespace + "/" + gl.gw.Name + "/" + string(gl.spec.Name)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// routeName is a route's label in the snapshot: its kind and name.
func routeName(r *gwRoute) string {
	return strings.ToLower(r.key.Kind) + ":" + r.key.Namespace + "/" + r.key.Name
}

// cloneBackend gives each snapshot route its own backend: the snapshot
// shares nothing between its parts.
func cloneBackend(b *snapshot.Backend) *snapshot.Backend {
	c := *b
	c.Endpoints = slices.Clone(b.Endpoints)
	return &c
}

func cloneTLS(t *snapshot.TLSConfig) *snapshot.TLSConfig {
	return &snapshot.TLSConfig{Certificates: slices.Clone(t.Certificates), ALPN: slices.Clone(t.ALPN)}
}
