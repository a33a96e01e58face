package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portmux/portmux/controllers/compile"
)

// Per-Gateway Services (compile/gateway_ports.go decides their ports):
// the manager creates, updates and deletes them in the dataplane
// Service's namespace, the release namespace, and nowhere else. A Gateway
// lives in another namespace than its Service, so no owner reference can
// tie them (those never cross namespaces): a label names the dataplane
// Service the Services belong to (one release's), an annotation the
// Gateway, and the leader deletes those whose Gateway wants none.
//
// +kubebuilder:rbac:groups="",namespace=portmux-system,resources=services,verbs=get;list;watch;create;update;patch;delete

const (
	// labelGatewayServiceOf marks a Service as a Gateway's, made by the
	// release whose dataplane Service is named by the value.
	labelGatewayServiceOf = "portmux.dev/gateway-service-of"
	// annotationGateway names the Gateway a Service serves
	// (namespace/name; too long for a label value).
	annotationGateway = "portmux.dev/gateway"
)

// gatewayServices lists the Gateway Services of this release, by the
// Gateway each one serves.
func (g *gatewayAPI) gatewayServices(ctx context.Context, c client.Reader) (map[types.NamespacedName]*corev1.Service, error) {
	var list corev1.ServiceList
	if err := c.List(ctx, &list, client.InNamespace(g.addressService.Namespace),
		client.MatchingLabels{labelGatewayServiceOf: g.addressService.Name}); err != nil {
		return nil, fmt.Errorf("list the Gateways' Services in %s: %w", g.addressService.Namespace, err)
	}
	out := map[types.NamespacedName]*corev1.Service{}
	for i := range list.Items {
		s := &list.Items[i]
		if key, ok := gatewayOfService(s); ok {
			out[key] = s
		}
	}
	return out, nil
}

// gatewayOfService reads which Gateway a Service serves.
func gatewayOfService(s *corev1.Service) (types.NamespacedName, bool) {
	ns, name, ok := strings.Cut(s.Annotations[annotationGateway], "/")
	return types.NamespacedName{Namespace: ns, Name: name}, ok && ns != "" && name != ""
}

// gatherServices adds the per-Gateway Services to a compile's input: the
// ports they record (allocations to keep) and their addresses.
func (g *gatewayAPI) gatherServices(ctx context.Context, c client.Reader, gin *compile.GatewayInput) error {
	found, err := g.gatewayServices(ctx, c)
	if err != nil {
		return err
	}
	svcs := &compile.GatewayServices{
		Namespace: g.addressService.Namespace, Range: *g.portRange,
		Existing: map[types.NamespacedName]compile.ExistingGatewayService{},
	}
	for key, s := range found {
		svcs.Existing[key] = compile.ExistingGatewayService{Ports: slices.Clone(s.Spec.Ports), Addresses: serviceAddresses(s)}
	}
	gin.Services = svcs
	return nil
}

// desiredService is the Service of a Gateway as compile decided it, of the
// dataplane Service's type and selector (the pod that binds the ports),
// keeping the node ports the cluster assigned to cur (nil: none yet).
func desiredService(want *compile.GatewayService, gw types.NamespacedName, dataplane types.NamespacedName, template, cur *corev1.Service) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   want.Namespace,
			Name:        want.Name,
			Labels:      map[string]string{labelGatewayServiceOf: dataplane.Name, "app.kubernetes.io/managed-by": "portmux"},
			Annotations: map[string]string{annotationGateway: gw.String()},
		},
		Spec: corev1.ServiceSpec{
			Type:     cmp.Or(template.Spec.Type, corev1.ServiceTypeClusterIP),
			Selector: maps.Clone(template.Spec.Selector),
			Ports:    slices.Clone(want.Ports),
		},
	}
	if s.Spec.Type != corev1.ServiceTypeClusterIP {
		s.Spec.ExternalTrafficPolicy = template.Spec.ExternalTrafficPolicy
		s.Spec.LoadBalancerClass = template.Spec.LoadBalancerClass
	}
	if cur != nil {
		for i := range s.Spec.Ports {
			for _, c := range cur.Spec.Ports {
				if c.Port == s.Spec.Ports[i].Port && c.Protocol == s.Spec.Ports[i].Protocol {
					s.Spec.Ports[i].NodePort = c.NodePort
				}
			}
		}
	}
	return s
}

// serviceDiffers reports whether cur lacks what want says: labels and
// annotations it sets, type, selector, ports (fields the API server
// defaults are not compared).
func serviceDiffers(cur, want *corev1.Service) bool {
	for k, v := range want.Labels {
		if cur.Labels[k] != v {
			return true
		}
	}
	for k, v := range want.Annotations {
		if cur.Annotations[k] != v {
			return true
		}
	}
	if cur.Spec.Type != want.Spec.Type || !equality.Semantic.DeepEqual(cur.Spec.Selector, want.Spec.Selector) || len(cur.Spec.Ports) != len(want.Spec.Ports) {
		return true
	}
	for i, w := range want.Spec.Ports {
		c := cur.Spec.Ports[i]
		if c.Name != w.Name || c.Protocol != w.Protocol || c.Port != w.Port || c.TargetPort != w.TargetPort || (w.NodePort != 0 && c.NodePort != w.NodePort) {
			return true
		}
	}
	return false
}

// syncServices makes the Gateways' Services what the last compile says:
// creates the missing, updates the changed, deletes those of Gateways
// that want none. The leader does it, with status.
func (w *gatewayStatusWriter) syncServices(ctx context.Context, out *compile.GatewayOutput) error {
	g := w.g
	if g.portRange == nil {
		return nil
	}
	var template corev1.Service
	if err := w.client.Get(ctx, g.addressService, &template); err != nil {
		return fmt.Errorf("the dataplane Service %s, whose type and selector the Gateways' Services take: %w", g.addressService, err)
	}
	found, err := g.gatewayServices(ctx, w.client)
	if err != nil {
		return err
	}
	var errs []error
	for key, res := range out.Gateways {
		if res.Service == nil {
			continue
		}
		cur := found[key]
		delete(found, key)
		if cur != nil && cur.Name != res.Service.Name {
			errs = append(errs, client.IgnoreNotFound(w.client.Delete(ctx, cur)))
			cur = nil
		}
		want := desiredService(res.Service, key, g.addressService, &template, cur)
		switch {
		case cur == nil:
			if err := w.client.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("create Service %s/%s of Gateway %s: %w", want.Namespace, want.Name, key, err))
			}
		case serviceDiffers(cur, want):
			before := cur.DeepCopy()
			maps.Copy(initMap(&cur.Labels), want.Labels)
			maps.Copy(initMap(&cur.Annotations), want.Annotations)
			cur.Spec.Type, cur.Spec.Selector, cur.Spec.Ports = want.Spec.Type, want.Spec.Selector, want.Spec.Ports
			if err := w.client.Patch(ctx, cur, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
				errs = append(errs, fmt.Errorf("update Service %s/%s of Gateway %s: %w", cur.Namespace, cur.Name, key, err))
			}
		}
	}
	for key, s := range found {
		if err := w.client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("delete Service %s/%s of Gateway %s: %w", s.Namespace, s.Name, key, err))
		}
	}
	return errors.Join(errs...)
}

func initMap(m *map[string]string) map[string]string {
	if *m == nil {
		*m = map[string]string{}
	}
	return *m
}
