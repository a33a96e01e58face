// Package controllers reconciles PortMux objects into the dataplane that
// runs in the same pod, and reports the outcome in their status.
//
// Two reconcilers share the work:
//
//   - the programmer runs on every replica. All PortMuxes compile into one
//     snapshot, so it reconciles a single key: gather (the only I/O), compile
//     (pure), apply to the local dataplane. It then asks for a status update
//     of exactly the PortMuxes whose status it changed.
//   - the status writer runs on the leader only. It computes one PortMux's
//     status from the programmer's last result (pure) and writes it once,
//     only when it differs.
package controllers

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Dataplane is what the programmer programs: a RemoteDataplane in the pod
// (the dataplane runs in its own container), dataplane.Server in this
// process otherwise, a recorder in tests.
type Dataplane interface {
	// Apply serves snap and returns bind errors by snapshot listener name.
	Apply(snap *snapshot.Snapshot) map[string]error
}

// Options are the controller's settings from the command line.
type Options struct {
	// BindAddress is the host the dataplane's listeners bind.
	BindAddress string
	// AllowAddressBackends accepts `address` backends (see compile.Input).
	AllowAddressBackends bool
	// PortPolicy says which namespaces may claim which ports (see
	// compile.PortPolicy); empty: any.
	PortPolicy compile.PortPolicy
	// BindRetry is how soon listeners that failed to bind are tried again.
	// Default 10s.
	BindRetry time.Duration
	// MaxConnections caps connections across all listeners (0: only each
	// listener's maxConnections).
	MaxConnections int

	// GatewayAPI says whether to implement the Gateway API (gateway.go);
	// empty: off. GatewayControllerName is the GatewayClass controllerName
	// served (default compile.GatewayControllerName), and
	// GatewayAddressService the dataplane Service whose addresses every
	// Gateway reports (none: Gateways report no address).
	GatewayAPI            GatewayAPI
	GatewayControllerName string
	GatewayAddressService types.NamespacedName
	// GatewayPortRange, when set, gives each Gateway a Service of its own
	// (in GatewayAddressService's namespace, of its type and selector)
	// targeting dataplane ports of this range; nil: every Gateway is
	// served on GatewayAddressService's ports.
	GatewayPortRange *compile.PortRange
	// GatewayClientLimits are the per-client caps of every Gateway
	// listener (compile.GatewayInput.ClientLimits); zero: none.
	GatewayClientLimits compile.ClientLimits
}

// programmed is the outcome of the last compile and apply, shared by the two
// reconcilers.
type programmed struct {
	mu       sync.RWMutex
	out      *compile.Output
	bindErrs map[string]error
	ready    bool
}

func (p *programmed) get(key types.NamespacedName) (*compile.Result, map[string]error, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.out == nil {
		return nil, nil, false
	}
	r, ok := p.out.Results[key]
	return r, p.bindErrs, ok
}

// Ready reports whether the dataplane has been programmed at least once;
// the readiness probe waits for it.
func (p *programmed) Ready() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ready
}

// programmer compiles every PortMux into the local dataplane.
type programmer struct {
	gather    *gatherer
	dataplane Dataplane
	opt       Options
	state     *programmed
	// statusEvents asks the status writer to look at a PortMux.
	statusEvents chan<- event.TypedGenericEvent[*v1alpha1.PortMux]
	log          logr.Logger

	// fingerprint of the inputs last applied; an identical set of inputs
	// compiles to an identical snapshot (compile is pure), so it is skipped.
	fingerprint string
	applied     bool
	// lastGood are the certificate Secrets served by the last compile.
	lastGood map[types.NamespacedName]*corev1.Secret
	// force applies even unchanged inputs once: the dataplane changed on
	// its own (a Resyncer said so), and status must follow.
	force atomic.Bool
	// gatewayStatus, when the Gateway API is on, asks its status writer
	// to look at the new result.
	gatewayStatus chan<- event.TypedGenericEvent[*gwv1.GatewayClass]
	// cache keeps each PortMux's compile: a change recompiles the
	// PortMuxes it concerns, not the cluster.
	cache *compile.Cache
	// checked remembers, per PortMux, the Result and resourceVersion whose
	// status was last found up to date, so that a compile that left them
	// alone does not recompute their status.
	checked map[types.NamespacedName]statusChecked
}

type statusChecked struct {
	res             *compile.Result
	resourceVersion string
}

// programmerKey is the one request the programmer reconciles: every change
// leads to the same whole-cluster compile.
var programmerKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "dataplane"}}

func (p *programmer) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	in, err := p.gather.gather(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	in.BindAddress = p.opt.BindAddress
	in.AllowAddressBackends = p.opt.AllowAddressBackends
	in.PortPolicy = p.opt.PortPolicy
	in.LastGoodSecrets = p.lastGood
	in.MaxConnections = p.opt.MaxConnections
	if p.cache == nil {
		p.cache = compile.NewCache()
	}
	in.Cache = p.cache

	p.state.mu.RLock()
	retryBinds := len(p.state.bindErrs) > 0
	p.state.mu.RUnlock()
	force := p.force.Swap(false)
	fp := fingerprint(in)
	if p.applied && fp == p.fingerprint && !retryBinds && !force {
		return reconcile.Result{}, nil
	}

	out := compile.Compile(in)
	p.lastGood = out.GoodSecrets
	bindErrs := p.dataplane.Apply(out.Snapshot)
	p.fingerprint, p.applied = fp, true
	p.state.mu.Lock()
	p.state.out, p.state.bindErrs, p.state.ready = out, bindErrs, true
	p.state.mu.Unlock()
	p.log.V(1).Info("dataplane programmed", "listeners", len(out.Snapshot.Listeners), "bindErrors", len(bindErrs))
	if p.gatewayStatus != nil {
		select {
		case p.gatewayStatus <- event.TypedGenericEvent[*gwv1.GatewayClass]{Object: &gwv1.GatewayClass{}}:
		default: // a write is pending already, or not the leader
		}
	}

	// Ask for a status write for each PortMux whose status this changes.
	// One whose Result (the same pointer: the cache served it) and object
	// are those last found up to date is, as long as no listener has a
	// bind error.
	now := metav1.Now()
	checked := make(map[types.NamespacedName]statusChecked, len(in.PortMuxes))
	for i := range in.PortMuxes {
		pm := &in.PortMuxes[i]
		key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
		res := out.Results[key]
		if res == nil {
			continue
		}
		if c, ok := p.checked[key]; ok && len(bindErrs) == 0 && c.res == res && c.resourceVersion == pm.ResourceVersion {
			checked[key] = c
			continue
		}
		want := compile.Status(pm, res, bindErrs, now)
		switch {
		case statusEqual(&pm.Status, &want):
			if len(bindErrs) == 0 { // bind errors come and go without a compile
				checked[key] = statusChecked{res: res, resourceVersion: pm.ResourceVersion}
			}
		default:
			select {
			case p.statusEvents <- event.TypedGenericEvent[*v1alpha1.PortMux]{Object: pm}:
			default: // not the leader (nobody drains) or a burst: the status writer resyncs
			}
		}
	}
	p.checked = checked
	if len(bindErrs) > 0 {
		return reconcile.Result{RequeueAfter: p.opt.BindRetry}, nil
	}
	return reconcile.Result{}, nil
}

// fingerprint identifies the inputs of a compile by the resource versions of
// everything gathered. Built without fmt: at 10,000 PortMuxes it runs on
// every event.
func fingerprint(in compile.Input) string {
	parts := make([]string, 0, len(in.PortMuxes)+len(in.Secrets)+2*len(in.Services))
	for i := range in.PortMuxes {
		pm := &in.PortMuxes[i]
		parts = append(parts, "pm/"+pm.Namespace+"/"+pm.Name+"/"+string(pm.UID)+"/"+strconv.FormatInt(pm.Generation, 10)+"/"+strconv.FormatInt(pm.CreationTimestamp.UnixNano(), 10))
	}
	for k, s := range in.Secrets {
		parts = append(parts, "s/"+k.String()+"/"+s.ResourceVersion)
	}
	for k, s := range in.Services {
		parts = append(parts, "svc/"+k.String()+"/"+s.ResourceVersion)
	}
	for k, list := range in.EndpointSlices {
		for _, es := range list {
			parts = append(parts, "es/"+k.String()+"/"+es.Name+"/"+es.ResourceVersion)
		}
	}
	parts = append(parts, gatewayFingerprint(&in.Gateway)...)
	slices.Sort(parts)
	return strings.Join(parts, "\n")
}

// statusEqual reports whether writing b over a would change nothing.
// compile.Status keeps a condition's LastTransitionTime while its status
// holds, so a recomputed, unchanged status is equal.
func statusEqual(a, b *v1alpha1.PortMuxStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}
