package compile_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/controllers/compile"
)

// Gateway API golden tests: each testdata/gateway/NAME.in.yaml is compiled
// and its snapshot and the statuses of its GatewayClasses, Gateways, routes
// and PortMuxes rendered as YAML, compared with NAME.out.yaml.
//
//	go test ./controllers/compile -run TestGatewayGolden -update
//
// An input file starts with a comment saying what the case shows and holds,
// as YAML documents, gateway.networking.k8s.io/v1 GatewayClass, Gateway,
// TLSRoute, TCPRoute, UDPRoute and ReferenceGrant objects, v1 Namespace
// (their labels), Secret and Service, EndpointSlice and PortMux objects,
// all decoded strictly, and at most one `kind: GatewayOptions` document:
// bundleVersion (v1.6.3 unless set), addressSource, addresses, bindErrors
// portPolicy, and services (per-Gateway Services: their namespace, the
// port range, and the Services found, by Gateway, with their ports as
// "PROTOCOL/PORT=TARGETPORT" and addresses). The controller name is
// compile.GatewayControllerName.
type gatewayOptions struct {
	Kind          string            `json:"kind"`
	BundleVersion *string           `json:"bundleVersion,omitempty"`
	AddressSource string            `json:"addressSource,omitempty"`
	Addresses     []string          `json:"addresses,omitempty"`
	BindErrors    map[string]string `json:"bindErrors,omitempty"`
	PortPolicy    []string          `json:"portPolicy,omitempty"`
	Services      *struct {
		Namespace string `json:"namespace"`
		PortRange string `json:"portRange"`
		Existing  map[string]struct {
			Ports     []string `json:"ports,omitempty"`
			Addresses []string `json:"addresses,omitempty"`
		} `json:"existing,omitempty"`
	} `json:"services,omitempty"`
}

func TestGatewayGolden(t *testing.T) {
	for _, inPath := range goldenInputs(t, filepath.Join("testdata", "gateway"), 1) {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := loadGatewayCase(t, inPath)
			got, problems := renderGatewayGolden(t, c)
			// The order objects are listed in must not matter.
			reversed := loadGatewayCase(t, inPath)
			reverseGatewayInput(&reversed.in)
			again, _ := renderGatewayGolden(t, reversed)
			if d := lineDiff(string(got), string(again)); d != "" {
				problems.add("output depends on the order of the objects (-forward +reversed):\n%s", d)
			}
			// Nor may the compile cache change it, filling or filled:
			// PortMuxes on Gateway listeners read the Gateways' state.
			cached := loadGatewayCase(t, inPath)
			cached.in.Cache = compile.NewCache()
			for _, pass := range []string{"filling", "from the cache"} {
				out, _ := renderGatewayGolden(t, cached)
				if d := lineDiff(string(got), string(out)); d != "" {
					problems.add("the compile cache changes the output, %s (-without +with):\n%s", pass, d)
				}
			}
			compareGolden(t, strings.TrimSuffix(inPath, ".in.yaml")+".out.yaml", got, problems)
		})
	}
}

func reverseGatewayInput(in *compile.Input) {
	slices.Reverse(in.PortMuxes)
	g := &in.Gateway
	slices.Reverse(g.Classes)
	slices.Reverse(g.Gateways)
	slices.Reverse(g.TLSRoutes)
	slices.Reverse(g.TCPRoutes)
	slices.Reverse(g.UDPRoutes)
	slices.Reverse(g.HTTPRoutes)
	slices.Reverse(g.ReferenceGrants)
}

func loadGatewayCase(t *testing.T, path string) *goldenCase {
	t.Helper()
	c := newGoldenCase()
	c.in.Gateway = compile.GatewayInput{
		ControllerName:  compile.GatewayControllerName,
		BundleVersion:   compile.SupportedBundleVersion,
		NamespaceLabels: map[string]map[string]string{},
	}
	g := &c.in.Gateway
	c.header = readGoldenDocs(t, path, func(n int, gvk string, strict func(any)) {
		gw := gwv1.GroupVersion.String() + " "
		switch gvk {
		case " ":
		case " GatewayOptions":
			var o gatewayOptions
			strict(&o)
			if o.BundleVersion != nil {
				g.BundleVersion = *o.BundleVersion
			}
			g.AddressSource = o.AddressSource
			for _, a := range o.Addresses {
				g.Addresses = append(g.Addresses, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: a})
			}
			if s := o.Services; s != nil {
				r, err := compile.ParseGatewayPortRange(s.PortRange)
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				g.Services = &compile.GatewayServices{Namespace: s.Namespace, Range: r, Existing: map[types.NamespacedName]compile.ExistingGatewayService{}}
				for k, e := range s.Existing {
					ns, name, _ := strings.Cut(k, "/")
					var es compile.ExistingGatewayService
					for _, p := range e.Ports {
						var proto string
						var port, target int32
						if _, err := fmt.Sscanf(strings.NewReplacer("/", " ", "=", " ").Replace(p), "%s %d %d", &proto, &port, &target); err != nil {
							t.Fatalf("%s: services port %q: %v", path, p, err)
						}
						es.Ports = append(es.Ports, corev1.ServicePort{Protocol: corev1.Protocol(proto), Port: port, TargetPort: intstr.FromInt32(target)})
					}
					for _, a := range e.Addresses {
						es.Addresses = append(es.Addresses, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: a})
					}
					g.Services.Existing[types.NamespacedName{Namespace: ns, Name: name}] = es
				}
			}
			c.addOptions(t, path, o.PortPolicy, o.BindErrors)
		case gw + "GatewayClass":
			g.Classes = append(g.Classes, decode[gwv1.GatewayClass](strict))
		case gw + "Gateway":
			g.Gateways = append(g.Gateways, decode[gwv1.Gateway](strict))
		case gw + "TLSRoute":
			g.TLSRoutes = append(g.TLSRoutes, decode[gwv1.TLSRoute](strict))
		case gw + "TCPRoute":
			g.TCPRoutes = append(g.TCPRoutes, decode[gwv1.TCPRoute](strict))
		case gw + "UDPRoute":
			g.UDPRoutes = append(g.UDPRoutes, decode[gwv1.UDPRoute](strict))
		case gw + "HTTPRoute":
			g.HTTPRoutes = append(g.HTTPRoutes, decode[gwv1.HTTPRoute](strict))
		case gw + "ReferenceGrant":
			g.ReferenceGrants = append(g.ReferenceGrants, decode[gwv1.ReferenceGrant](strict))
		case "v1 Namespace":
			o := decode[corev1.Namespace](strict)
			g.NamespaceLabels[o.Name] = o.Labels
		default:
			if !addCoreDoc(t, path, n, gvk, strict, &c.in) {
				t.Fatalf("%s: document %d: unexpected %s", path, n, gvk)
			}
		}
	})
	return c
}

type gatewayGolden struct {
	Snapshot goldenSnapshot `yaml:"snapshot"`
	// UDP names the snapshot listeners of transport UDP (the PortMux
	// goldens' rendering has no transport yet).
	UDP      []string                  `yaml:"udpListeners,flow,omitempty"`
	Classes  []goldenGatewayClass      `yaml:"gatewayClasses"`
	Gateways []goldenGatewayStatus     `yaml:"gateways"`
	Routes   []goldenRouteStatus       `yaml:"routes"`
	PortMux  []goldenPortMuxListenerSt `yaml:"portmuxes,omitempty"`
}

type goldenGatewayClass struct {
	Name       string            `yaml:"name"`
	Conditions []goldenCondition `yaml:"conditions"`
	Features   []string          `yaml:"supportedFeatures,flow"`
}

type goldenGatewayStatus struct {
	Gateway    string                  `yaml:"gateway"`
	Service    *goldenGatewayService   `yaml:"service,omitempty"`
	Addresses  []string                `yaml:"addresses,flow,omitempty"`
	Conditions []goldenCondition       `yaml:"conditions"`
	Listeners  []goldenGatewayListener `yaml:"listeners"`
}

// goldenGatewayService is a Gateway's own Service: its ports as
// "PROTOCOL PORT -> TARGETPORT".
type goldenGatewayService struct {
	Name  string   `yaml:"name"`
	Ports []string `yaml:"ports,flow"`
}

type goldenGatewayListener struct {
	Name           string            `yaml:"name"`
	SupportedKinds []string          `yaml:"supportedKinds,flow"`
	AttachedRoutes int32             `yaml:"attachedRoutes"`
	Conditions     []goldenCondition `yaml:"conditions"`
}

type goldenRouteStatus struct {
	Route   string              `yaml:"route"`
	Parents []goldenRouteParent `yaml:"parents"`
}

type goldenRouteParent struct {
	ParentRef  string            `yaml:"parentRef"`
	Conditions []goldenCondition `yaml:"conditions"`
}

// goldenPortMuxListenerSt is a PortMux's Accepted condition and its
// listeners' (what a Gateway can take from it).
type goldenPortMuxListenerSt struct {
	PortMux    string            `yaml:"portmux"`
	Conditions []goldenCondition `yaml:"conditions"`
}

func renderGatewayGolden(t *testing.T, c *goldenCase) ([]byte, problems) {
	t.Helper()
	var pr problems
	beforeGW := deepCopyGateway(c.in.Gateway)
	out := compileChecked(&pr, c.in)
	if !equality.Semantic.DeepEqual(beforeGW, c.in.Gateway) {
		pr.add("Compile modified its Gateway API input")
	}
	g := gatewayGolden{Snapshot: renderSnapshot(&pr, out.Snapshot), Classes: []goldenGatewayClass{}, Gateways: []goldenGatewayStatus{}, Routes: []goldenRouteStatus{}}
	gin := &c.in.Gateway
	for _, l := range out.Snapshot.Listeners {
		if l.UDP() {
			g.UDP = append(g.UDP, l.Name)
		}
	}

	classes := sortedByName(gin.Classes)
	for i := range classes {
		gc := &classes[i]
		res := out.Gateway.Classes[gc.Name]
		if res == nil {
			continue
		}
		st := compile.GatewayClassStatus(gc, res, goldenNow)
		checkConditionMeta(&pr, "GatewayClass "+gc.Name, gc.Generation, st.Conditions)
		gg := goldenGatewayClass{Name: gc.Name, Conditions: renderConditions(st.Conditions)}
		for _, f := range st.SupportedFeatures {
			gg.Features = append(gg.Features, string(f.Name))
		}
		g.Classes = append(g.Classes, gg)
	}

	gws := sortedByName(gin.Gateways)
	for i := range gws {
		gw := &gws[i]
		key := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		res := out.Gateway.Gateways[key]
		if res == nil {
			continue
		}
		st := compile.GatewayStatus(gw, res, c.bindErrs, goldenNow)
		checkConditionMeta(&pr, "Gateway "+key.String(), gw.Generation, st.Conditions)
		gs := goldenGatewayStatus{Gateway: key.String(), Conditions: renderConditions(st.Conditions), Listeners: []goldenGatewayListener{}}
		for _, a := range st.Addresses {
			gs.Addresses = append(gs.Addresses, a.Value)
		}
		if s := res.Service; s != nil {
			gs.Service = &goldenGatewayService{Name: s.String()}
			for _, p := range s.Ports {
				gs.Service.Ports = append(gs.Service.Ports, fmt.Sprintf("%s %d -> %s", p.Protocol, p.Port, p.TargetPort.String()))
			}
		}
		for _, ls := range st.Listeners {
			checkConditionMeta(&pr, "Gateway "+key.String()+" listener "+string(ls.Name), gw.Generation, ls.Conditions)
			gl := goldenGatewayListener{Name: string(ls.Name), AttachedRoutes: ls.AttachedRoutes, Conditions: renderConditions(ls.Conditions), SupportedKinds: []string{}}
			for _, k := range ls.SupportedKinds {
				gl.SupportedKinds = append(gl.SupportedKinds, string(k.Kind))
			}
			gs.Listeners = append(gs.Listeners, gl)
		}
		g.Gateways = append(g.Gateways, gs)
	}

	type route struct {
		kind string
		meta interface {
			GetNamespace() string
			GetName() string
			GetGeneration() int64
		}
		status gwv1.RouteStatus
	}
	var routes []route
	for i := range gin.TLSRoutes {
		routes = append(routes, route{compile.KindTLSRoute, &gin.TLSRoutes[i], gin.TLSRoutes[i].Status.RouteStatus})
	}
	for i := range gin.TCPRoutes {
		routes = append(routes, route{compile.KindTCPRoute, &gin.TCPRoutes[i], gin.TCPRoutes[i].Status.RouteStatus})
	}
	for i := range gin.UDPRoutes {
		routes = append(routes, route{compile.KindUDPRoute, &gin.UDPRoutes[i], gin.UDPRoutes[i].Status.RouteStatus})
	}
	slices.SortFunc(routes, func(a, b route) int {
		return strings.Compare(a.kind+" "+a.meta.GetNamespace()+"/"+a.meta.GetName(), b.kind+" "+b.meta.GetNamespace()+"/"+b.meta.GetName())
	})
	for _, r := range routes {
		name := r.kind + " " + r.meta.GetNamespace() + "/" + r.meta.GetName()
		res := out.Gateway.Routes[compile.RouteKeyOf(r.kind, r.meta.GetNamespace(), r.meta.GetName())]
		if res == nil {
			g.Routes = append(g.Routes, goldenRouteStatus{Route: name, Parents: []goldenRouteParent{}})
			continue
		}
		st := compile.RouteStatus(r.status, r.meta.GetGeneration(), compile.GatewayControllerName, res, goldenNow)
		gr := goldenRouteStatus{Route: name, Parents: []goldenRouteParent{}}
		for _, p := range st.Parents {
			if string(p.ControllerName) == compile.GatewayControllerName {
				checkConditionMeta(&pr, name, r.meta.GetGeneration(), p.Conditions)
			}
			gr.Parents = append(gr.Parents, goldenRouteParent{ParentRef: renderParentRef(p), Conditions: renderConditions(p.Conditions)})
		}
		g.Routes = append(g.Routes, gr)
	}

	pms := sortedByName(c.in.PortMuxes)
	for i := range pms {
		pm := &pms[i]
		key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
		st := compile.Status(pm, out.Results[key], c.bindErrs, goldenNow)
		g.PortMux = append(g.PortMux, goldenPortMuxListenerSt{PortMux: key.String(), Conditions: renderConditions(st.Conditions)})
	}

	return encodeGolden(t, c.header, "TestGatewayGolden", g), pr
}

// renderParentRef writes a status entry's parentRef on one line, with the
// controller that owns the entry when it is not PortMux.
func renderParentRef(p gwv1.RouteParentStatus) string {
	r := p.ParentRef
	s := ""
	if r.Namespace != nil {
		s = string(*r.Namespace) + "/"
	}
	s += string(r.Name)
	if r.SectionName != nil {
		s += "/" + string(*r.SectionName)
	}
	if r.Port != nil {
		s += fmt.Sprintf(":%d", *r.Port)
	}
	if string(p.ControllerName) != compile.GatewayControllerName {
		s += " (" + string(p.ControllerName) + ")"
	}
	return s
}

func deepCopyGateway(in compile.GatewayInput) compile.GatewayInput {
	out := in
	out.Classes, out.Gateways = deepCopies(in.Classes), deepCopies(in.Gateways)
	out.TLSRoutes, out.TCPRoutes, out.UDPRoutes = deepCopies(in.TLSRoutes), deepCopies(in.TCPRoutes), deepCopies(in.UDPRoutes)
	out.ReferenceGrants = deepCopies(in.ReferenceGrants)
	return out
}
