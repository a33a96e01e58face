package controllers

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// gatherer does every read a compile needs. PortMuxes, Services and
// EndpointSlices come from the informer cache. Secrets do not: the cache
// holds only their metadata (so the controller notices changes without
// holding every Secret of the cluster in memory), and the data of the
// Secrets a PortMux names — and only those — is read from the API server,
// then kept until the Secret's resourceVersion changes.
type gatherer struct {
	cache     client.Reader // cached: PortMux, Service, EndpointSlice, Secret metadata
	apiReader client.Reader // uncached: referenced Secrets' data

	mu      sync.Mutex
	secrets map[types.NamespacedName]*corev1.Secret

	// gateway, when set, adds the Gateway API objects (gateway.go).
	gateway *gatewayAPI
}

func newGatherer(cache, apiReader client.Reader) *gatherer {
	return &gatherer{cache: cache, apiReader: apiReader, secrets: map[types.NamespacedName]*corev1.Secret{}}
}

// gather reads every PortMux and what they refer to into a compile input.
// It lists PortMuxes, Services and EndpointSlices once each, without the
// cache's deep copies (compile only reads; TestGolden checks it does not
// write), rather than asking the cache for each PortMux's Service and
// slices: per object, a cache read costs a REST mapping lookup and a
// deep copy, which made gathering most of an event's cost at 1,000
// PortMuxes (issue 19).
func (g *gatherer) gather(ctx context.Context) (compile.Input, error) {
	var in compile.Input
	var list v1alpha1.PortMuxList
	if err := g.cache.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("list PortMuxes: %w", err)
	}
	in.PortMuxes = list.Items
	in.Secrets = map[types.NamespacedName]*corev1.Secret{}
	in.Services = make(map[types.NamespacedName]*corev1.Service, len(list.Items))
	in.EndpointSlices = make(map[types.NamespacedName][]*discoveryv1.EndpointSlice, len(list.Items))

	wantSecrets := map[types.NamespacedName]bool{}
	wantServices := make(map[types.NamespacedName]bool, len(list.Items))
	for i := range list.Items {
		pm := &list.Items[i]
		for _, name := range secretRefs(pm) {
			wantSecrets[types.NamespacedName{Namespace: pm.Namespace, Name: name}] = true
		}
		for _, name := range serviceRefs(pm) {
			wantServices[types.NamespacedName{Namespace: pm.Namespace, Name: name}] = true
		}
	}
	if len(wantServices) > 0 {
		var svcs corev1.ServiceList
		if err := g.cache.List(ctx, &svcs, client.UnsafeDisableDeepCopy); err != nil {
			return in, fmt.Errorf("list Services: %w", err)
		}
		for i := range svcs.Items {
			svc := &svcs.Items[i]
			if key := (types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}); wantServices[key] {
				in.Services[key] = svc
			}
		}
		var slices discoveryv1.EndpointSliceList
		if err := g.cache.List(ctx, &slices, client.UnsafeDisableDeepCopy); err != nil {
			return in, fmt.Errorf("list EndpointSlices: %w", err)
		}
		for i := range slices.Items {
			es := &slices.Items[i]
			key := types.NamespacedName{Namespace: es.Namespace, Name: es.Labels[discoveryv1.LabelServiceName]}
			if _, ok := in.Services[key]; ok {
				in.EndpointSlices[key] = append(in.EndpointSlices[key], es)
			}
		}
	}
	if g.gateway != nil {
		if err := g.gateway.gather(ctx, g, &in, wantSecrets); err != nil {
			return in, err
		}
	}
	for key := range wantSecrets {
		s, err := g.secret(ctx, key)
		if err != nil {
			return in, err
		}
		if s != nil {
			in.Secrets[key] = s
		}
	}
	g.forgetExcept(wantSecrets)
	return in, nil
}

// refresh reads again what pm names into in: its Services, their
// EndpointSlices (through the service-name index) and its Secrets. An
// object gone is dropped from in; one pm no longer names stays (another
// PortMux may name it; compile reads only what is named).
func (g *gatherer) refresh(ctx context.Context, in *compile.Input, pm *v1alpha1.PortMux) error {
	for _, name := range serviceRefs(pm) {
		key := types.NamespacedName{Namespace: pm.Namespace, Name: name}
		var svcs corev1.ServiceList
		if err := g.shared(ctx, key, &svcs); err != nil {
			return fmt.Errorf("get Service %s: %w", key, err)
		}
		if len(svcs.Items) == 0 {
			delete(in.Services, key)
			delete(in.EndpointSlices, key)
			continue
		}
		in.Services[key] = &svcs.Items[0]
		var slices discoveryv1.EndpointSliceList
		if err := g.cache.List(ctx, &slices, client.InNamespace(pm.Namespace),
			client.MatchingFields{indexSliceService: name}, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("list EndpointSlices of Service %s: %w", key, err)
		}
		list := make([]*discoveryv1.EndpointSlice, len(slices.Items))
		for i := range slices.Items {
			list[i] = &slices.Items[i]
		}
		if len(list) == 0 {
			delete(in.EndpointSlices, key)
		} else {
			in.EndpointSlices[key] = list
		}
	}
	for _, name := range secretRefs(pm) {
		key := types.NamespacedName{Namespace: pm.Namespace, Name: name}
		s, err := g.secret(ctx, key)
		if err != nil {
			return err
		}
		if s != nil {
			in.Secrets[key] = s
		} else {
			delete(in.Secrets, key)
		}
	}
	return nil
}

// shared lists the object of key into list, without a deep copy (as
// gather does): the input holds the cache's object rather than a copy
// of its own, which at 10,000 PortMuxes was 30 MB of copies (each with
// its managed fields). Nothing it is given may be written.
func (g *gatherer) shared(ctx context.Context, key types.NamespacedName, list client.ObjectList) error {
	return g.cache.List(ctx, list, client.InNamespace(key.Namespace), client.MatchingFields{indexName: key.Name}, client.UnsafeDisableDeepCopy)
}

// objectName is the index of objects by name, for shared.
func objectName(o client.Object) []string { return []string{o.GetName()} }

// sliceService is the index of EndpointSlices by their Service's name.
func sliceService(o client.Object) []string {
	if svc := o.GetLabels()[discoveryv1.LabelServiceName]; svc != "" {
		return []string{svc}
	}
	return nil
}

// secret returns a referenced Secret, reading its data only when the cached
// metadata shows a resourceVersion the gatherer has not read yet.
func (g *gatherer) secret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	meta := secretMetadata()
	switch err := g.cache.Get(ctx, key, meta); {
	case apierrors.IsNotFound(err):
		g.mu.Lock()
		delete(g.secrets, key)
		g.mu.Unlock()
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get Secret %s metadata: %w", key, err)
	}
	rv := meta.ResourceVersion
	g.mu.Lock()
	cached := g.secrets[key]
	g.mu.Unlock()
	if cached != nil && cached.ResourceVersion == rv {
		return cached, nil
	}
	s := &corev1.Secret{}
	switch err := g.apiReader.Get(ctx, key, s); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get Secret %s: %w", key, err)
	}
	g.mu.Lock()
	g.secrets[key] = s
	g.mu.Unlock()
	return s, nil
}

// forgetExcept drops the data of Secrets no PortMux names any more.
func (g *gatherer) forgetExcept(keep map[types.NamespacedName]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.secrets {
		if !keep[k] {
			delete(g.secrets, k)
		}
	}
}

// secretRefs lists the Secrets a PortMux names (compile.SecretRefs). It
// is also the field index that maps a Secret to its users.
func secretRefs(pm *v1alpha1.PortMux) []string { return compile.SecretRefs(pm) }

// serviceRefs lists the Services a PortMux names (compile.ServiceRefs).
func serviceRefs(pm *v1alpha1.PortMux) []string { return compile.ServiceRefs(pm) }

// secretMetadata is the metadata-only form in which Secrets are watched and
// cached.
func secretMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m
}
func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}
