package controllers

import (
	"context"
	"errors"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/api/v1alpha1"
)

// The RBAC the manager needs, and nothing more. Secrets: list and watch
// serve the metadata-only cache (change notifications); get reads the data
// of the Secrets a PortMux names, and no others.
//
// +kubebuilder:rbac:groups=portmux.dev,resources=portmuxes,verbs=get;list;watch
// +kubebuilder:rbac:groups=portmux.dev,resources=portmuxes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
//
// Leader election's Lease lives in the manager's namespace: a namespaced Role
// in config/rbac grants it, not this ClusterRole.

// Field indexes on PortMux: which Secrets and Services each one names.
const (
	indexSecretRefs  = "spec.secretRefs"
	indexServiceRefs = "spec.serviceRefs"
	// indexSliceService indexes EndpointSlices by their Service's name,
	// so that the incremental path reads one Service's slices, not all.
	indexSliceService = "metadata.labels.serviceName"
	// indexName indexes PortMuxes and Services by name, so that the
	// incremental path reads one without a copy (gatherer.shared).
	indexName = "metadata.name"
)

// statusWorkers is how many PortMux statuses are written at once: one at
// a time, a round trip each, 10,000 new PortMuxes took minutes to be Ready.
const statusWorkers = 8

// Controller is the PortMux controller as the manager runs it.
type Controller struct {
	state *programmed
}

// Setup registers the field indexes and both reconcilers with mgr. The
// dataplane is programmed on every replica; status is written by the leader.
func Setup(ctx context.Context, mgr ctrl.Manager, dp Dataplane, opt Options) (*Controller, error) {
	if opt.BindRetry <= 0 {
		opt.BindRetry = 10 * time.Second
	}
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.PortMux{}, indexSecretRefs, func(o client.Object) []string {
		return secretRefs(o.(*v1alpha1.PortMux))
	}); err != nil {
		return nil, err
	}
	if err := idx.IndexField(ctx, &v1alpha1.PortMux{}, indexServiceRefs, func(o client.Object) []string {
		return serviceRefs(o.(*v1alpha1.PortMux))
	}); err != nil {
		return nil, err
	}

	if err := idx.IndexField(ctx, &discoveryv1.EndpointSlice{}, indexSliceService, sliceService); err != nil {
		return nil, err
	}
	for _, o := range []client.Object{&v1alpha1.PortMux{}, &corev1.Service{}} {
		if err := idx.IndexField(ctx, o, indexName, objectName); err != nil {
			return nil, err
		}
	}

	gw, err := setupGatewayAPI(ctx, mgr, opt)
	if err != nil {
		return nil, err
	}

	state := &programmed{}
	statusEvents := make(chan event.TypedGenericEvent[*v1alpha1.PortMux], 1024)
	c := mgr.GetClient()
	p := &programmer{
		gather:       newGatherer(c, mgr.GetAPIReader()),
		dataplane:    dp,
		opt:          opt,
		state:        state,
		statusEvents: statusEvents,
		log:          mgr.GetLogger().WithName("programmer"),
	}
	if gw != nil {
		p.gather.gateway = gw
		gwStatus := make(chan event.TypedGenericEvent[*gwv1.GatewayClass], 1)
		p.gatewayStatus = gwStatus
		if err := gw.setupStatus(mgr, state, gwStatus); err != nil {
			return nil, err
		}
	}
	users := &referrers{c: c}
	// An object PortMuxes name makes them dirty, for the incremental path.
	toProgrammer := func(find func(context.Context, client.Object) []reconcile.Request) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			users := find(ctx, o)
			if len(users) == 0 {
				return nil // nobody uses it: nothing to recompile
			}
			for _, u := range users {
				p.dirty.add(u.NamespacedName)
			}
			return []reconcile.Request{changesKey}
		})
	}
	portMuxChanged := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		p.dirty.add(types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()})
		return []reconcile.Request{changesKey}
	})
	always := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{programmerKey}
	})
	// One compile at start, so that a cluster without any PortMux still
	// programs (an empty snapshot) and the pod becomes ready.
	kick := make(chan event.TypedGenericEvent[*v1alpha1.PortMux], 1)
	kick <- event.TypedGenericEvent[*v1alpha1.PortMux]{Object: &v1alpha1.PortMux{}}
	programmerBuilder := ctrl.NewControllerManagedBy(mgr).
		Named("dataplane").
		// Only a spec change (or a create or delete) changes what compiles:
		// status writes, one per PortMux, would each gather everything.
		Watches(&v1alpha1.PortMux{}, portMuxChanged, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(kick, handler.TypedEnqueueRequestsFromMapFunc(
			func(context.Context, *v1alpha1.PortMux) []reconcile.Request {
				return []reconcile.Request{programmerKey}
			}))).
		Watches(&corev1.Secret{}, toProgrammer(users.ofSecret), builder.OnlyMetadata).
		Watches(&corev1.Service{}, toProgrammer(users.ofService)).
		Watches(&discoveryv1.EndpointSlice{}, toProgrammer(users.ofEndpointSlice)).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 1})
	if gw != nil {
		programmerBuilder = gw.watches(programmerBuilder, c, always)
	}
	if rs, ok := dp.(Resyncer); ok {
		programmerBuilder = programmerBuilder.WatchesRawSource(resyncs(rs, p))
	}
	programmerBuilder = programmerBuilder.WatchesRawSource(retryQueue(p))
	if err := programmerBuilder.Complete(p); err != nil {
		return nil, err
	}

	w := &statusWriter{
		client:   c,
		state:    state,
		recorder: mgr.GetEventRecorder("portmux"),
		log:      mgr.GetLogger().WithName("status"),
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("portmux-status").
		For(&v1alpha1.PortMux{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(users.ofSecret), builder.OnlyMetadata).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(users.ofService)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(users.ofEndpointSlice)).
		WatchesRawSource(source.Channel(statusEvents, &handler.TypedEnqueueRequestForObject[*v1alpha1.PortMux]{})).
		// Each write waits for the API server; PortMuxes are written
		// independently (never one key twice at once).
		WithOptions(controller.Options{MaxConcurrentReconciles: statusWorkers}).
		Complete(w)
	if err != nil {
		return nil, err
	}
	return &Controller{state: state}, nil
}

// resyncs asks the programmer for a forced apply each time the dataplane
// changed on its own, for as long as the controller runs (a manager that
// is rebuilt starts a new one).
func resyncs(rs Resyncer, p *programmer) source.Source {
	return source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-rs.Resynced():
					p.force.Store(true)
					q.Add(programmerKey)
				}
			}
		}()
		return nil
	})
}

// ReadyCheck is a readiness probe: ready once the dataplane has been
// programmed from the cluster's PortMuxes at least once.
func (c *Controller) ReadyCheck(*http.Request) error {
	if !c.state.Ready() {
		return errors.New("dataplane not programmed yet")
	}
	return nil
}

// referrers finds the PortMuxes that name an object, through the indexes.
type referrers struct{ c client.Client }

func (r *referrers) list(ctx context.Context, namespace, index, name string) []reconcile.Request {
	var list v1alpha1.PortMuxList
	if err := r.c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{index: name}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, pm := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}})
	}
	return out
}

func (r *referrers) ofSecret(ctx context.Context, o client.Object) []reconcile.Request {
	return r.list(ctx, o.GetNamespace(), indexSecretRefs, o.GetName())
}

func (r *referrers) ofService(ctx context.Context, o client.Object) []reconcile.Request {
	return r.list(ctx, o.GetNamespace(), indexServiceRefs, o.GetName())
}

func (r *referrers) ofEndpointSlice(ctx context.Context, o client.Object) []reconcile.Request {
	svc := o.GetLabels()[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil
	}
	return r.list(ctx, o.GetNamespace(), indexServiceRefs, svc)
}
