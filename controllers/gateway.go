package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/controllers/compile"
)

// The RBAC the Gateway API needs: read its objects, write the status of
// those of PortMux's classes, read namespace labels (listeners that select
// route namespaces by label) and the CRDs' bundle version (the
// GatewayClass's SupportedVersion).
//
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses;gateways;tlsroutes;tcproutes;udproutes;referencegrants;httproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gatewayclasses/status;gateways/status;tlsroutes/status;tcproutes/status;udproutes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get

// GatewayAPI says whether the manager implements the Gateway API: a
// cluster without its CRDs must keep working, so "auto" looks for them at
// start and goes without when they are missing.
type GatewayAPI string

// The values of --gateway-api.
const (
	GatewayAPIAuto GatewayAPI = "auto"
	GatewayAPIOn   GatewayAPI = "on"
	GatewayAPIOff  GatewayAPI = "off"
)

// ParseGatewayAPI parses --gateway-api.
func ParseGatewayAPI(s string) (GatewayAPI, error) {
	switch g := GatewayAPI(s); g {
	case GatewayAPIAuto, GatewayAPIOn, GatewayAPIOff:
		return g, nil
	}
	return "", fmt.Errorf("gateway API mode %q: want auto, on or off", s)
}

// gatewayResources are the Gateway API resources PortMux implements; all
// must be served (gateway.networking.k8s.io/v1, the Standard channel of
// v1.6) for the Gateway API to be on.
func gatewayResources() []string {
	return []string{"gatewayclasses", "gateways", "tlsroutes", "tcproutes", "udproutes", "referencegrants"}
}

// bundleVersionAnnotation is where a Gateway API CRD says its release.
const bundleVersionAnnotation = "gateway.networking.k8s.io/bundle-version"

// Field indexes on the Gateway API objects: what each one names, as
// "namespace/name", so that a Secret or Service event finds its users.
const (
	indexGatewaySecrets = "gateway.certificateRefs"
	indexRouteServices  = "route.backendRefs"
)

// gatewayAPI is the Gateway API part of the controller: gathering its
// objects for compile, and (on the leader) writing their status.
type gatewayAPI struct {
	controllerName string
	bundleVersion  string
	addressService types.NamespacedName // zero: none
	// portRange, when set, gives each Gateway its own Service, in
	// addressService's namespace, targeting dataplane ports of this range
	// (gateway_services.go).
	portRange *compile.PortRange
	// clientLimits bound each client on every Gateway listener.
	clientLimits compile.ClientLimits
	// httpRoutes: the cluster serves HTTPRoutes, which HTTP listeners
	// count (compile.KindHTTPRoute).
	httpRoutes bool
	log        logr.Logger
}

// gatewayAPIServed reports which Gateway API resources the API server
// lacks (none: it can be implemented).
func gatewayAPIServed(dc discovery.DiscoveryInterface) ([]string, error) {
	list, err := dc.ServerResourcesForGroupVersion(gwv1.GroupVersion.String())
	switch {
	case apierrors.IsNotFound(err):
		return gatewayResources(), nil
	case err != nil:
		return nil, fmt.Errorf("discover %s: %w", gwv1.GroupVersion, err)
	}
	var missing []string
	for _, r := range gatewayResources() {
		if !slices.ContainsFunc(list.APIResources, func(a metav1.APIResource) bool { return a.Name == r }) {
			missing = append(missing, r)
		}
	}
	return missing, nil
}

// setupGatewayAPI decides, from opt and the API server, whether the Gateway
// API is implemented; when it is, it registers the indexes and returns the
// part of the controller that gathers and writes status. nil: off.
func setupGatewayAPI(ctx context.Context, mgr ctrl.Manager, opt Options) (*gatewayAPI, error) {
	log := mgr.GetLogger().WithName("gateway-api")
	if opt.GatewayAPI == "" || opt.GatewayAPI == GatewayAPIOff {
		return nil, nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	missing, err := gatewayAPIServed(dc)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		if opt.GatewayAPI == GatewayAPIOn {
			return nil, fmt.Errorf("--gateway-api=on, but the API server does not serve %s %s: install the Gateway API v1.6 standard CRDs", gwv1.GroupVersion, strings.Join(missing, ", "))
		}
		log.Info("Gateway API not implemented: its CRDs are not installed", "missing", missing)
		return nil, nil
	}
	if !mgr.GetScheme().Recognizes(schema.GroupVersionKind{Group: gwv1.GroupName, Version: "v1", Kind: "Gateway"}) {
		return nil, errors.New("the manager's scheme lacks the Gateway API types")
	}
	if opt.GatewayPortRange != nil && opt.GatewayAddressService.Name == "" {
		return nil, errors.New("a Gateway port range needs the dataplane Service (--gateway-address-service): the Gateways' Services live in its namespace and take its type and selector")
	}
	g := &gatewayAPI{
		controllerName: cmpOr(opt.GatewayControllerName, compile.GatewayControllerName),
		addressService: opt.GatewayAddressService,
		portRange:      opt.GatewayPortRange,
		clientLimits:   opt.GatewayClientLimits,
		log:            log,
	}
	g.bundleVersion = bundleVersion(ctx, mgr.GetAPIReader(), log)
	if list, err := dc.ServerResourcesForGroupVersion(gwv1.GroupVersion.String()); err == nil {
		g.httpRoutes = slices.ContainsFunc(list.APIResources, func(a metav1.APIResource) bool { return a.Name == "httproutes" })
	}
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &gwv1.Gateway{}, indexGatewaySecrets, func(o client.Object) []string {
		return gatewaySecretRefs(o.(*gwv1.Gateway))
	}); err != nil {
		return nil, fmt.Errorf("index Gateways: %w", err)
	}
	for _, r := range []client.Object{&gwv1.TLSRoute{}, &gwv1.TCPRoute{}, &gwv1.UDPRoute{}} {
		if err := idx.IndexField(ctx, r, indexRouteServices, func(o client.Object) []string {
			ns, refs := routeBackendRefs(o)
			return serviceKeys(ns, refs)
		}); err != nil {
			return nil, fmt.Errorf("index %T: %w", r, err)
		}
	}
	log.Info("implementing the Gateway API", "controllerName", g.controllerName, "bundleVersion", g.bundleVersion)
	return g, nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// bundleVersion reads the release of the installed Gateway API CRDs: ""
// when they disagree, say nothing, or cannot be read (the GatewayClass
// then says SupportedVersion False, and is served best effort).
func bundleVersion(ctx context.Context, r client.Reader, log logr.Logger) string {
	version := ""
	for i, res := range gatewayResources() {
		crd := &metav1.PartialObjectMetadata{}
		crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
		if err := r.Get(ctx, types.NamespacedName{Name: res + "." + gwv1.GroupName}, crd); err != nil {
			log.Info("cannot read the Gateway API CRDs' bundle version", "error", err.Error())
			return ""
		}
		v := crd.GetAnnotations()[bundleVersionAnnotation]
		if i > 0 && v != version {
			log.Info("the Gateway API CRDs are of different releases", "crd", crd.GetName(), "version", v, "others", version)
			return ""
		}
		version = v
	}
	return version
}

// gatewaySecretRefs lists the Secrets a Gateway's listeners name, as
// "namespace/name".
func gatewaySecretRefs(gw *gwv1.Gateway) []string {
	var out []string
	for _, l := range gw.Spec.Listeners {
		if l.TLS == nil {
			continue
		}
		for _, r := range l.TLS.CertificateRefs {
			if ptr.Deref(r.Group, "") == "" && ptr.Deref(r.Kind, "Secret") == "Secret" {
				out = appendUnique(out, string(ptr.Deref(r.Namespace, gwv1.Namespace(gw.Namespace)))+"/"+string(r.Name))
			}
		}
	}
	return out
}

// routeBackendRefs returns a route's namespace and backendRefs, whatever
// its kind.
func routeBackendRefs(o client.Object) (string, []gwv1.BackendRef) {
	var refs []gwv1.BackendRef
	switch r := o.(type) {
	case *gwv1.TLSRoute:
		for _, rule := range r.Spec.Rules {
			refs = append(refs, rule.BackendRefs...)
		}
	case *gwv1.TCPRoute:
		for _, rule := range r.Spec.Rules {
			refs = append(refs, rule.BackendRefs...)
		}
	case *gwv1.UDPRoute:
		for _, rule := range r.Spec.Rules {
			refs = append(refs, rule.BackendRefs...)
		}
	}
	return o.GetNamespace(), refs
}

// serviceKeys lists the Services of backendRefs as "namespace/name".
func serviceKeys(ns string, refs []gwv1.BackendRef) []string {
	var out []string
	for _, r := range refs {
		if ptr.Deref(r.Group, "") == "" && ptr.Deref(r.Kind, "Service") == "Service" {
			out = appendUnique(out, string(ptr.Deref(r.Namespace, gwv1.Namespace(ns)))+"/"+string(r.Name))
		}
	}
	return out
}

// gather adds the Gateway API objects, and the Secrets and Services they
// name, to a compile's input. Secrets are read through the gatherer (data
// only of those named); wantSecrets collects them.
func (g *gatewayAPI) gather(ctx context.Context, gt *gatherer, in *compile.Input, wantSecrets map[types.NamespacedName]bool) error {
	gin := &in.Gateway
	gin.ControllerName, gin.BundleVersion = g.controllerName, g.bundleVersion
	gin.ClientLimits = g.clientLimits
	var classes gwv1.GatewayClassList
	if err := gt.cache.List(ctx, &classes); err != nil {
		return fmt.Errorf("list GatewayClasses: %w", err)
	}
	ours := map[string]bool{}
	for _, c := range classes.Items {
		if string(c.Spec.ControllerName) == g.controllerName {
			gin.Classes = append(gin.Classes, c)
			ours[c.Name] = true
		}
	}
	var grants gwv1.ReferenceGrantList
	if err := gt.cache.List(ctx, &grants); err != nil {
		return fmt.Errorf("list ReferenceGrants: %w", err)
	}
	gin.ReferenceGrants = grants.Items
	var gws gwv1.GatewayList
	if err := gt.cache.List(ctx, &gws); err != nil {
		return fmt.Errorf("list Gateways: %w", err)
	}
	for _, gw := range gws.Items {
		if !ours[string(gw.Spec.GatewayClassName)] {
			continue
		}
		gin.Gateways = append(gin.Gateways, gw)
		for _, k := range gatewaySecretRefs(&gw) {
			ns, name, _ := strings.Cut(k, "/")
			key := types.NamespacedName{Namespace: ns, Name: name}
			// Another namespace's Secret is read only when a
			// ReferenceGrant there allows it: compile would refuse it.
			if ns != gw.Namespace && !compile.ReferenceGranted(gin.ReferenceGrants, gwv1.GroupName, "Gateway", gw.Namespace, "", "Secret", ns, name) {
				continue
			}
			// A Secret in a namespace the cache does not watch is
			// missing, not an error that would stop every compile.
			if err := gt.cache.Get(ctx, key, secretMetadata()); err != nil && !apierrors.IsNotFound(err) {
				g.log.V(1).Info("certificate Secret not readable; taken as missing", "secret", key, "error", err.Error())
				continue
			}
			wantSecrets[key] = true
		}
	}
	var tls gwv1.TLSRouteList
	var tcp gwv1.TCPRouteList
	var udp gwv1.UDPRouteList
	for _, l := range []client.ObjectList{&tls, &tcp, &udp} {
		if err := gt.cache.List(ctx, l); err != nil {
			return fmt.Errorf("list %T: %w", l, err)
		}
	}
	gin.TLSRoutes, gin.TCPRoutes, gin.UDPRoutes = tls.Items, tcp.Items, udp.Items
	if g.httpRoutes {
		var http gwv1.HTTPRouteList
		if err := gt.cache.List(ctx, &http); err != nil {
			return fmt.Errorf("list HTTPRoutes: %w", err)
		}
		gin.HTTPRoutes = http.Items
	}
	var routes []client.Object
	for i := range tls.Items {
		routes = append(routes, &tls.Items[i])
	}
	for i := range tcp.Items {
		routes = append(routes, &tcp.Items[i])
	}
	for i := range udp.Items {
		routes = append(routes, &udp.Items[i])
	}
	for _, r := range routes {
		ns, refs := routeBackendRefs(r)
		for _, k := range serviceKeys(ns, refs) {
			sns, name, _ := strings.Cut(k, "/")
			if err := g.addService(ctx, gt, in, types.NamespacedName{Namespace: sns, Name: name}); err != nil {
				return err
			}
		}
	}
	var nss metav1.PartialObjectMetadataList
	nss.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := gt.cache.List(ctx, &nss); err != nil {
		return fmt.Errorf("list Namespaces: %w", err)
	}
	gin.NamespaceLabels = map[string]map[string]string{}
	for _, ns := range nss.Items {
		gin.NamespaceLabels[ns.Name] = ns.Labels
	}
	if g.addressService.Name != "" {
		gin.AddressSource = g.addressService.String()
		var svc corev1.Service
		// Not found, or in a namespace the cache does not watch: no
		// address (the Gateways say AddressNotAssigned).
		if err := gt.cache.Get(ctx, g.addressService, &svc); err == nil {
			gin.Addresses = serviceAddresses(&svc)
		} else if !apierrors.IsNotFound(err) {
			g.log.V(1).Info("the dataplane Service is not readable", "service", g.addressService, "error", err.Error())
		}
	}
	if g.portRange != nil {
		if err := g.gatherServices(ctx, gt.cache, gin); err != nil {
			return err
		}
	}
	return nil
}

// addService adds a Service and its EndpointSlices to the input, once. A
// Service the cache cannot hold (a namespace it does not watch) is missing,
// as for the PortMux's own.
func (g *gatewayAPI) addService(ctx context.Context, gt *gatherer, in *compile.Input, key types.NamespacedName) error {
	if _, done := in.Services[key]; done {
		return nil
	}
	var svc corev1.Service
	if err := gt.cache.Get(ctx, key, &svc); err != nil {
		if !apierrors.IsNotFound(err) {
			g.log.V(1).Info("backend Service not readable; taken as missing", "service", key, "error", err.Error())
		}
		return nil
	}
	in.Services[key] = &svc
	var slices discoveryv1.EndpointSliceList
	if err := gt.cache.List(ctx, &slices, client.InNamespace(key.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: key.Name}); err != nil {
		return fmt.Errorf("list EndpointSlices of %s: %w", key, err)
	}
	for j := range slices.Items {
		in.EndpointSlices[key] = append(in.EndpointSlices[key], &slices.Items[j])
	}
	return nil
}

// serviceAddresses are a Service's addresses as a Gateway reports them:
// its load balancer's when it has one, else its cluster IPs.
func serviceAddresses(svc *corev1.Service) []gwv1.GatewayStatusAddress {
	var out []gwv1.GatewayStatusAddress
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		switch {
		case ing.IP != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: ing.IP})
		case ing.Hostname != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.HostnameAddressType), Value: ing.Hostname})
		}
	}
	if len(out) > 0 || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		return out // a load balancer not yet assigned: no address yet
	}
	for _, ip := range svc.Spec.ClusterIPs {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: ip})
		}
	}
	return out
}

// fingerprintObjects appends one fingerprint part for each of objs, of
// kind: its generation when byGeneration (objects with a status, whose
// status writes must not trigger compiles), else its resource version.
func fingerprintObjects[T any, P interface {
	*T
	metav1.Object
}](parts []string, kind string, objs []T, byGeneration bool) []string {
	for i := range objs {
		m := P(&objs[i])
		v := m.GetResourceVersion()
		if byGeneration {
			v = fmt.Sprint(m.GetGeneration())
		}
		ts := m.GetCreationTimestamp()
		parts = append(parts, fmt.Sprintf("%s/%s/%s/%s/%s/%s", kind, m.GetNamespace(), m.GetName(), m.GetUID(), v, ts.UTC()))
	}
	return parts
}

// gatewayFingerprint identifies the Gateway API inputs of a compile:
// generations of what has a status (so that status writes do not trigger
// compiles), resource versions of the rest.
func gatewayFingerprint(g *compile.GatewayInput) []string {
	var parts []string
	parts = fingerprintObjects(parts, "gc", g.Classes, true)
	parts = fingerprintObjects(parts, "gw", g.Gateways, true)
	parts = fingerprintObjects(parts, "tls", g.TLSRoutes, true)
	parts = fingerprintObjects(parts, "tcp", g.TCPRoutes, true)
	parts = fingerprintObjects(parts, "udp", g.UDPRoutes, true)
	parts = fingerprintObjects(parts, "http", g.HTTPRoutes, true)
	parts = fingerprintObjects(parts, "rg", g.ReferenceGrants, false)
	for ns, l := range g.NamespaceLabels {
		parts = append(parts, fmt.Sprintf("ns/%s/%v", ns, l))
	}
	parts = append(parts, "gwctl/"+g.ControllerName+"/"+g.BundleVersion+"/"+g.AddressSource)
	for _, a := range g.Addresses {
		parts = append(parts, "addr/"+a.Value)
	}
	if s := g.Services; s != nil {
		parts = append(parts, fmt.Sprintf("gwsvcs/%s/%d-%d", s.Namespace, s.Range.From, s.Range.To))
		for k, e := range s.Existing {
			for _, p := range e.Ports {
				parts = append(parts, fmt.Sprintf("gwsvc/%s/%s/%d/%s", k, p.Protocol, p.Port, p.TargetPort.String()))
			}
			for _, a := range e.Addresses {
				parts = append(parts, fmt.Sprintf("gwsvc/%s/addr/%s", k, a.Value))
			}
		}
	}
	return parts
}

// watches adds the Gateway API objects, and the Secrets and Services they
// name, to what makes the programmer compile.
func (g *gatewayAPI) watches(b *builder.TypedBuilder[reconcile.Request], c client.Client, always handler.EventHandler) *builder.TypedBuilder[reconcile.Request] {
	used := func(index string, key func(client.Object) string) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			k := key(o)
			if k == "" {
				return nil
			}
			if k == g.addressService.String() {
				return []reconcile.Request{programmerKey}
			}
			if g.portRange != nil && o.GetNamespace() == g.addressService.Namespace && o.GetLabels()[labelGatewayServiceOf] == g.addressService.Name {
				return []reconcile.Request{programmerKey} // a Gateway's own Service
			}
			lists := []client.ObjectList{&gwv1.GatewayList{}}
			if index == indexRouteServices {
				lists = []client.ObjectList{&gwv1.TLSRouteList{}, &gwv1.TCPRouteList{}, &gwv1.UDPRouteList{}}
			}
			for _, l := range lists {
				if err := c.List(ctx, l, client.MatchingFields{index: k}); err == nil && listLen(l) > 0 {
					return []reconcile.Request{programmerKey}
				}
			}
			return nil
		})
	}
	name := func(o client.Object) string { return o.GetNamespace() + "/" + o.GetName() }
	ofSlice := func(o client.Object) string {
		if svc := o.GetLabels()[discoveryv1.LabelServiceName]; svc != "" {
			return o.GetNamespace() + "/" + svc
		}
		return ""
	}
	if g.httpRoutes {
		b = b.Watches(&gwv1.HTTPRoute{}, always)
	}
	return b.
		Watches(&gwv1.GatewayClass{}, always).
		Watches(&gwv1.Gateway{}, always).
		Watches(&gwv1.TLSRoute{}, always).
		Watches(&gwv1.TCPRoute{}, always).
		Watches(&gwv1.UDPRoute{}, always).
		Watches(&gwv1.ReferenceGrant{}, always).
		Watches(&corev1.Namespace{}, always, builder.OnlyMetadata).
		Watches(&corev1.Secret{}, used(indexGatewaySecrets, name), builder.OnlyMetadata).
		Watches(&corev1.Service{}, used(indexRouteServices, name)).
		Watches(&discoveryv1.EndpointSlice{}, used(indexRouteServices, ofSlice))
}

// listLen counts the items of a list.
func listLen(l client.ObjectList) int {
	switch l := l.(type) {
	case *gwv1.GatewayList:
		return len(l.Items)
	case *gwv1.TLSRouteList:
		return len(l.Items)
	case *gwv1.TCPRouteList:
		return len(l.Items)
	case *gwv1.UDPRouteList:
		return len(l.Items)
	}
	return 0
}

// gatewayStatusKey is the one request the Gateway API status writer
// reconciles: it looks at every object of ours each time.
var gatewayStatusKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "gateway-api"}}

// gatewayStatusWriter writes the status of the GatewayClasses, Gateways
// and routes of the last compile, on the leader, each only when it
// changed.
type gatewayStatusWriter struct {
	g      *gatewayAPI
	client client.Client
	state  *programmed
	log    logr.Logger
	// mu serialises writes (one reconcile at a time anyway).
	mu sync.Mutex
}

// setupStatus registers the leader-only status writer; kick asks it to
// look again after each compile.
func (g *gatewayAPI) setupStatus(mgr ctrl.Manager, state *programmed, kick <-chan event.TypedGenericEvent[*gwv1.GatewayClass]) error {
	w := &gatewayStatusWriter{g: g, client: mgr.GetClient(), state: state, log: g.log.WithName("status")}
	toKey := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{gatewayStatusKey}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("gateway-api-status").
		Watches(&gwv1.GatewayClass{}, toKey).
		Watches(&gwv1.Gateway{}, toKey).
		Watches(&gwv1.TLSRoute{}, toKey).
		Watches(&gwv1.TCPRoute{}, toKey).
		Watches(&gwv1.UDPRoute{}, toKey).
		WatchesRawSource(source.Channel(kick, handler.TypedEnqueueRequestsFromMapFunc(
			func(context.Context, *gwv1.GatewayClass) []reconcile.Request {
				return []reconcile.Request{gatewayStatusKey}
			}))).
		Complete(w)
}

func (w *gatewayStatusWriter) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state.mu.RLock()
	out, bindErrs := w.state.out, w.state.bindErrs
	w.state.mu.RUnlock()
	if out == nil || out.Gateway == nil {
		return reconcile.Result{}, nil // not compiled yet: the programmer kicks again
	}
	now := metav1.Now()
	var errs []error
	// The Services first: a Gateway's address comes from its Service.
	errs = append(errs, w.syncServices(ctx, out.Gateway))
	for name, res := range out.Gateway.Classes {
		var gc gwv1.GatewayClass
		if err := w.client.Get(ctx, types.NamespacedName{Name: name}, &gc); err != nil {
			errs = append(errs, client.IgnoreNotFound(err))
			continue
		}
		want := compile.GatewayClassStatus(&gc, res, now)
		errs = append(errs, w.patch(ctx, &gc, &gc.Status, &want, func() { gc.Status = want }))
	}
	for key, res := range out.Gateway.Gateways {
		var gw gwv1.Gateway
		if err := w.client.Get(ctx, key, &gw); err != nil {
			errs = append(errs, client.IgnoreNotFound(err))
			continue
		}
		want := compile.GatewayStatus(&gw, res, bindErrs, now)
		errs = append(errs, w.patch(ctx, &gw, &gw.Status, &want, func() { gw.Status = want }))
	}
	for key, res := range out.Gateway.Routes {
		errs = append(errs, w.route(ctx, key, res, now))
	}
	errs = append(errs, w.forgetRoutes(ctx, out.Gateway.Routes, now))
	if err := errors.Join(errs...); err != nil {
		return reconcile.Result{}, fmt.Errorf("write Gateway API status: %w", err)
	}
	return reconcile.Result{}, nil
}

// forgetRoutes drops this controller's entries from the status of routes
// that no longer name a Gateway of ours (their parentRefs changed, or the
// Gateway went): an entry left behind would say the route is attached.
func (w *gatewayStatusWriter) forgetRoutes(ctx context.Context, current map[compile.RouteKey]*compile.RouteResult, now metav1.Time) error {
	var tls gwv1.TLSRouteList
	var tcp gwv1.TCPRouteList
	var udp gwv1.UDPRouteList
	var errs []error
	for _, l := range []client.ObjectList{&tls, &tcp, &udp} {
		if err := w.client.List(ctx, l); err != nil {
			errs = append(errs, fmt.Errorf("list %T: %w", l, err))
		}
	}
	forget := func(kind string, obj client.Object, st *gwv1.RouteStatus) {
		if _, ok := current[compile.RouteKeyOf(kind, obj.GetNamespace(), obj.GetName())]; ok {
			return
		}
		if !slices.ContainsFunc(st.Parents, func(p gwv1.RouteParentStatus) bool { return string(p.ControllerName) == w.g.controllerName }) {
			return
		}
		want := compile.RouteStatus(*st, obj.GetGeneration(), w.g.controllerName, &compile.RouteResult{}, now)
		errs = append(errs, w.patch(ctx, obj, st, &want, func() { *st = want }))
	}
	for i := range tls.Items {
		forget(compile.KindTLSRoute, &tls.Items[i], &tls.Items[i].Status.RouteStatus)
	}
	for i := range tcp.Items {
		forget(compile.KindTCPRoute, &tcp.Items[i], &tcp.Items[i].Status.RouteStatus)
	}
	for i := range udp.Items {
		forget(compile.KindUDPRoute, &udp.Items[i], &udp.Items[i].Status.RouteStatus)
	}
	return errors.Join(errs...)
}

// route writes one route's status.
func (w *gatewayStatusWriter) route(ctx context.Context, key compile.RouteKey, res *compile.RouteResult, now metav1.Time) error {
	var obj client.Object
	var st *gwv1.RouteStatus
	switch key.Kind {
	case compile.KindTLSRoute:
		r := &gwv1.TLSRoute{}
		obj, st = r, &r.Status.RouteStatus
	case compile.KindTCPRoute:
		r := &gwv1.TCPRoute{}
		obj, st = r, &r.Status.RouteStatus
	case compile.KindUDPRoute:
		r := &gwv1.UDPRoute{}
		obj, st = r, &r.Status.RouteStatus
	case compile.KindHTTPRoute:
		return nil // counted on listeners, not implemented: no status
	default:
		return fmt.Errorf("route kind %q", key.Kind)
	}
	if err := w.client.Get(ctx, key.NamespacedName, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	want := compile.RouteStatus(*st, obj.GetGeneration(), w.g.controllerName, res, now)
	return w.patch(ctx, obj, st, &want, func() { *st = want })
}

// patch writes want over the object's status cur when they differ, with
// an optimistic lock: a write based on a stale read fails and is retried
// rather than overwrite what another controller wrote meanwhile.
func (w *gatewayStatusWriter) patch(ctx context.Context, obj client.Object, cur, want any, set func()) error {
	if equality.Semantic.DeepEqual(cur, want) {
		return nil
	}
	before := obj.DeepCopyObject().(client.Object)
	set()
	if err := w.client.Status().Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("%T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}
