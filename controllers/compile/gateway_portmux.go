package compile

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// KindPortMux is the kind a Gateway listener lists in allowedRoutes.kinds
// (group portmux.dev) to let PortMux listeners attach to it (issue 18):
// their sniffing routes then share its port with the Gateway's routes. A
// listener must list it explicitly, so that the supportedKinds of every
// other listener stay what the Gateway API expects.
const KindPortMux = "PortMux"

// ParentResult is the attachment of a PortMux listener with a parentRef:
// the Gateway it names, and why it does not attach (the Gateway API's
// route reasons: NoMatchingParent, NotAllowedByListeners), or the Gateway
// listeners it attached to.
type ParentResult struct {
	// Gateway is "namespace/name".
	Gateway string
	// Refused is why no listener of the Gateway takes the PortMux listener
	// ("" when one does).
	Refused Finding
	// Listeners are the Gateway listeners it attached to, in the
	// Gateway's order.
	Listeners []string
	// Conflicts are the PortMux routes whose SNI names the Gateway claims
	// (a TLSRoute's hostname, or a listener's): those ClientHellos go to
	// the Gateway, never to the PortMux route.
	Conflicts []Finding
}

// Reasons of a PortMux listener's attachment, as the Gateway API words
// them for routes.
const (
	ReasonNotAllowedByListeners = reasonNotAllowedByListeners
	ReasonNoMatchingParent      = reasonNoMatchingParent
	ReasonHostnameConflict      = reasonHostnameConflict
	ReasonNoConflicts           = reasonNoConflicts
)

// pmAttachment is one PortMux listener attached to a Gateway listener: its
// routes, compiled once, and where its result goes.
type pmAttachment struct {
	seq    int // PortMuxes are compiled oldest first: their order on the port
	pm     types.NamespacedName
	lr     *ListenerResult
	routes []snapshot.Route
	// sni are the SNI names of its tls routes, by route name.
	sni map[string][]string
}

// portMuxListener says why a Gateway listener cannot take PortMux
// listeners, "" when it can: only TLS Passthrough and TCP listeners hand
// over connections untouched, as a PortMux listener takes them.
func portMuxListener(l *gwv1.Listener) string {
	switch {
	case l.Protocol == gwv1.TCPProtocolType:
		return ""
	case l.Protocol == gwv1.TLSProtocolType && l.TLS != nil && ptrOr(l.TLS.Mode, gwv1.TLSModeTerminate) == gwv1.TLSModePassthrough:
		return ""
	}
	return fmt.Sprintf("PortMux listeners attach only to TLS listeners in Passthrough mode and to TCP listeners, not to a %s listener%s", l.Protocol, terminating(l))
}

func terminating(l *gwv1.Listener) string {
	if l.TLS != nil && ptrOr(l.TLS.Mode, gwv1.TLSModeTerminate) == gwv1.TLSModeTerminate {
		return " that terminates TLS"
	}
	return ""
}

// attachToGateway attaches a PortMux listener with a parentRef to the
// Gateway listeners it selects that allow it (allowedRoutes: the PortMux
// kind, listed, and the PortMux's namespace), as a Gateway API route
// attaches, and records the outcome in lr.Parent. Its routes are compiled
// here, once; the Gateway port's snapshot listener takes them.
func (c *compiler) attachToGateway(lr *ListenerResult, l *v1alpha1.Listener) {
	ref := l.ParentRef
	ns := cmp.Or(ref.Namespace, c.pm.Namespace)
	pr := &ParentResult{Gateway: ns + "/" + ref.Name}
	lr.Parent = pr
	lr.Transport = snapshot.TCP
	g := c.gateways
	gg := g.gateways[types.NamespacedName{Namespace: ns, Name: ref.Name}]
	switch {
	case g.gin.ControllerName == "":
		pr.Refused = Finding{reasonNoMatchingParent, fmt.Sprintf("Gateway %s cannot be attached to: the Gateway API is off (portmux serve, or the manager's --gateway-api off or without its CRDs)", pr.Gateway)}
		return
	case gg == nil:
		pr.Refused = Finding{reasonNoMatchingParent, fmt.Sprintf("Gateway %s is not found, or not of a GatewayClass of PortMux's (controllerName %s)", pr.Gateway, GatewayControllerName)}
		return
	case gg.res.Refused.Reason != "":
		pr.Refused = Finding{reasonNoMatchingParent, fmt.Sprintf("Gateway %s is not accepted: %s", pr.Gateway, gg.res.Refused.Message)}
		return
	}
	var selected, allowed []*gwListener
	for _, gl := range gg.listeners {
		if ref.SectionName == "" || ref.SectionName == string(gl.spec.Name) {
			selected = append(selected, gl)
		}
	}
	if len(selected) == 0 {
		pr.Refused = Finding{reasonNoMatchingParent, fmt.Sprintf("Gateway %s has no listener %s", pr.Gateway, ref.SectionName)}
		return
	}
	for _, gl := range selected {
		if slices.ContainsFunc(gl.res.SupportedKinds, isPortMuxKind) && g.namespaceAllowed(gg.gw, gl, c.pm.Namespace) {
			allowed = append(allowed, gl)
		}
	}
	if len(allowed) == 0 {
		pr.Refused = Finding{reasonNotAllowedByListeners, fmt.Sprintf(
			"no listener of Gateway %s that parentRef selects allows a PortMux from namespace %s: the listener must be TLS Passthrough or TCP, list {group: %s, kind: %s} in allowedRoutes.kinds, and allow the namespace in allowedRoutes.namespaces",
			pr.Gateway, c.pm.Namespace, v1alpha1.GroupVersion.Group, KindPortMux)}
		return
	}
	at := &pmAttachment{seq: g.attachments, pm: types.NamespacedName{Namespace: c.pm.Namespace, Name: c.pm.Name}, lr: lr, sni: map[string][]string{}}
	g.attachments++
	spec := &c.pm.Spec
	for j := range spec.Routes {
		r := &spec.Routes[j]
		if !attached(r, l) {
			continue
		}
		sr := c.route(lr, r, l)
		at.routes = append(at.routes, sr)
		if r.Match.Protocol == v1alpha1.ProtocolTLS {
			at.sni[sr.Name] = sr.Match.SNI
		}
	}
	for _, gl := range allowed {
		pr.Listeners = append(pr.Listeners, string(gl.spec.Name))
		if lr.Port == nil {
			lr.Port = &gl.spec.Port
		}
		if !slices.ContainsFunc(gl.portmuxes, func(o *pmAttachment) bool { return o.lr == lr }) {
			gl.portmuxes = append(gl.portmuxes, at)
		}
		// attachedRoutes counts each PortMux once.
		if !slices.ContainsFunc(gl.portmuxes, func(o *pmAttachment) bool { return o != at && o.pm == at.pm }) {
			gl.res.AttachedRoutes++
		}
	}
}

func isPortMuxKind(k gwv1.RouteGroupKind) bool {
	return string(ptrOr(k.Group, "")) == v1alpha1.GroupVersion.Group && k.Kind == KindPortMux
}

// portMuxRoutes are the routes of the PortMux listeners attached to the
// served Gateway listeners ls of snapshot listener sl, each once, the
// oldest PortMux first. On a TLS port, claimed are the Gateway's entries
// (TLSRoute names and listener hostnames, which come first on the port):
// a PortMux tls route for one of their names never sees it, and its
// listener says so.
func (g *gwCompiler) portMuxRoutes(sl *snapshot.Listener, ls []*gwListener, claimed []entry) []snapshot.Route {
	var ats []*pmAttachment
	for _, gl := range ls {
		for _, at := range gl.portmuxes {
			if !slices.Contains(ats, at) {
				ats = append(ats, at)
			}
		}
	}
	slices.SortFunc(ats, func(a, b *pmAttachment) int { return cmp.Compare(a.seq, b.seq) })
	var out []snapshot.Route
	for _, at := range ats {
		if at.lr.Snapshot == "" {
			at.lr.Snapshot = sl.Name
		}
		for _, r := range at.routes {
			if slices.ContainsFunc(out, func(o snapshot.Route) bool { return o.Name == r.Name }) {
				continue // two listeners of one PortMux on one port
			}
			out = append(out, cloneRoute(r))
			for _, name := range at.sni[r.Name] {
				if f, ok := claim(claimed, name); ok {
					msg := fmt.Sprintf("route %s: sni %s %s: those ClientHellos go to the Gateway, never to this route", strings.TrimPrefix(r.Name, routePrefix(r.Name)), name, f)
					if p := at.lr.Parent; !slices.Contains(p.Conflicts, Finding{reasonHostnameConflict, msg}) {
						p.Conflicts = append(p.Conflicts, Finding{reasonHostnameConflict, msg})
					}
				}
			}
		}
	}
	return out
}

// routePrefix is the "namespace/portmux/" of a qualified route name.
func routePrefix(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i+1]
	}
	return ""
}

// claim says which Gateway entry takes the SNI name of a PortMux route
// (snapshot form: "*." one label, "**." one or more), if one does.
func claim(es []entry, name string) (string, bool) {
	gwName := name
	if rest, ok := strings.CutPrefix(name, "**."); ok {
		gwName = "*." + rest
	}
	for _, e := range es {
		if e.sni != "" && !hostMatches(e.sni, gwName) {
			continue
		}
		what := "is"
		if e.sni == "" {
			what = "(every name) is"
		}
		if e.route != nil {
			return fmt.Sprintf("%s claimed by %s %s on listener %s of Gateway %s/%s", what, e.route.key.Kind, e.route.key.String(), e.listener.spec.Name, e.listener.gw.Namespace, e.listener.gw.Name), true
		}
		return fmt.Sprintf("%s within hostname %s of listener %s of Gateway %s/%s, which closes the names its TLSRoutes do not take", what, e.sni, e.listener.spec.Name, e.listener.gw.Namespace, e.listener.gw.Name), true
	}
	return "", false
}

// cloneRoute gives each snapshot listener its own copy of a route: the
// snapshot shares nothing between its parts (a compiled Regex is
// immutable).
func cloneRoute(r snapshot.Route) snapshot.Route {
	m := &r.Match
	m.SNI, m.ALPN, m.Host, m.Prefix = slices.Clone(m.SNI), slices.Clone(m.ALPN), slices.Clone(m.Host), slices.Clone(m.Prefix)
	if r.Backend != nil {
		r.Backend = cloneBackend(r.Backend)
	}
	if r.Tunnel != nil {
		t := *r.Tunnel
		t.Token, t.AllowedOrigins = slices.Clone(t.Token), slices.Clone(t.AllowedOrigins)
		t.Allow = slices.Clone(t.Allow)
		for i := range t.Allow {
			a := &t.Allow[i]
			a.Names = slices.Clone(a.Names)
			a.Backend.Endpoints = slices.Clone(a.Backend.Endpoints)
		}
		r.Tunnel = &t
	}
	return r
}
