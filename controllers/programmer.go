// Package controllers reconciles PortMux objects into the dataplane that
// runs in the same pod, and reports the outcome in their status.
//
// Two reconcilers share the work:
//
//   - the programmer runs on every replica. All PortMuxes compile into one
//     snapshot. A change of what PortMuxes name (a Service, an
//     EndpointSlice, a Secret) or of a PortMux that moves no port is
//     incremental: it reads and recompiles the PortMuxes concerned, and
//     sends the dataplane their listeners only. Anything else (a
//     PortMux deleted or moving ports, Gateway API objects, a dataplane
//     that restarted) takes the whole-cluster path: gather
//     (the only I/O), compile (pure), apply. Either asks for a status
//     update of exactly the PortMuxes whose status it changed.
//   - the status writer runs on the leader only. It computes one PortMux's
//     status from the programmer's last result (pure) and writes it once,
//     only when it differs.
package controllers

import (
	"context"
	"fmt"
	"maps"
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
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
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

// DeltaDataplane is a Dataplane that takes changes: the programmer gives
// it a delta of the snapshot it applied or changed last, instead of the
// whole snapshot, so that a change costs what it changes (issue 19).
type DeltaDataplane interface {
	Dataplane
	// ApplyDelta serves the snapshot d makes of the current one and
	// returns what Apply returns.
	ApplyDelta(d *snapshot.Delta) map[string]error
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
	// bindErrsBefore are the bind errors before the last apply: the
	// status of the PortMuxes whose listeners' errors changed is
	// computed again (withBindErrorOwners).
	bindErrsBefore map[string]error
	// queue is the controller's work queue once it runs (retryQueue):
	// the whole path asks for its bind retries on the incremental key.
	queue atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]
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

	// What the incremental path changes: the last input (kept up to date
	// for the PortMuxes it recompiles), the position of each PortMux in
	// it, and the PortMuxes events concern since the last reconcile.
	in    *compile.Input
	index map[types.NamespacedName]int
	dirty dirtySet
}

// dirtySet is the PortMuxes events concern and that no reconcile has
// looked at yet. Event handlers add to it; the programmer takes it.
type dirtySet struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]bool
}

// add records keys.
func (d *dirtySet) add(keys ...types.NamespacedName) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.keys == nil {
		d.keys = map[types.NamespacedName]bool{}
	}
	for _, k := range keys {
		d.keys[k] = true
	}
}

// take returns the keys recorded so far and forgets them.
func (d *dirtySet) take() map[types.NamespacedName]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := d.keys
	d.keys = nil
	return keys
}

type statusChecked struct {
	res             *compile.Result
	resourceVersion string
}

// programmerKey asks the programmer for the whole-cluster path;
// changesKey for the incremental path over the dirty PortMuxes (which
// falls back to the whole-cluster path when it cannot tell the outcome).
// Two keys, not one per PortMux: a burst of events is one reconcile.
var (
	programmerKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "dataplane"}}
	changesKey    = reconcile.Request{NamespacedName: types.NamespacedName{Name: "dataplane-changes"}}
)

// A listener whose port another process holds does not take the others
// off the incremental path: every apply, a delta's too, binds again what
// is not bound, and a retry with nothing else to do is an empty delta
// (retryBinds). Only the PortMuxes whose listeners' bind errors came,
// went or changed have their status computed again for it.
func (p *programmer) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req == changesKey && p.in != nil && !p.force.Load() {
		res, done, err := p.incremental(ctx)
		if done || err != nil {
			return res, err
		}
	}
	return p.whole(ctx)
}

// whole gathers, compiles and applies everything.
func (p *programmer) whole(ctx context.Context) (reconcile.Result, error) {
	// What is dirty now is in what gather reads.
	p.dirty.take()
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
	if p.applied && fp == p.fingerprint && !force {
		if retryBinds {
			return p.retryBinds(), nil
		}
		return reconcile.Result{}, nil
	}

	out := compile.Compile(in)
	p.lastGood = out.GoodSecrets
	bindErrs := p.dataplane.Apply(out.Snapshot)
	p.fingerprint, p.applied = fp, true
	p.in = &in
	p.index = make(map[types.NamespacedName]int, len(in.PortMuxes))
	for i := range in.PortMuxes {
		p.index[types.NamespacedName{Namespace: in.PortMuxes[i].Namespace, Name: in.PortMuxes[i].Name}] = i
	}
	p.state.mu.Lock()
	before := p.state.bindErrs
	p.state.out, p.state.bindErrs, p.state.ready = out, bindErrs, true
	p.state.mu.Unlock()
	p.bindErrsBefore = before
	p.log.V(1).Info("dataplane programmed", "listeners", len(out.Snapshot.Listeners), "bindErrors", len(bindErrs))
	p.kickGatewayStatus()
	checked := make(map[types.NamespacedName]statusChecked, len(in.PortMuxes))
	p.statusOf(p.allPortMuxes(), bindErrs, checked)
	p.checked = checked
	if len(bindErrs) > 0 {
		// The retry is an empty delta (retryBinds), not this path
		// again: requeued on programmerKey, it would gather and compile
		// everything whenever anything changed in between.
		if q := p.queue.Load(); q != nil {
			(*q).AddAfter(changesKey, p.opt.BindRetry)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{RequeueAfter: p.opt.BindRetry}, nil
	}
	return reconcile.Result{}, nil
}

// retryQueue hands the programmer its controller's work queue.
func retryQueue(p *programmer) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		p.queue.Store(&q)
		return nil
	})
}

// kickGatewayStatus asks the Gateway API's status writer, when there is
// one, to look at the new result.
func (p *programmer) kickGatewayStatus() {
	if p.gatewayStatus != nil {
		select {
		case p.gatewayStatus <- event.TypedGenericEvent[*gwv1.GatewayClass]{Object: &gwv1.GatewayClass{}}:
		default: // a write is pending already, or not the leader
		}
	}
}

// statusOf asks for a status write for each of pms whose status the last
// result changes, and records in checked those found up to date. One
// whose Result (the same pointer: the cache served it) and object are
// those last found up to date (in p.checked) is, as long as no listener
// has a bind error. Only the programmer writes Results, so it reads them
// without the lock.
func (p *programmer) statusOf(pms []*v1alpha1.PortMux, bindErrs map[string]error, checked map[types.NamespacedName]statusChecked) {
	now := metav1.Now()
	results := p.state.out.Results
	for _, pm := range pms {
		key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
		res := results[key]
		if res == nil {
			continue
		}
		if c, ok := p.checked[key]; ok && len(bindErrs) == 0 && c.res == res && c.resourceVersion == pm.ResourceVersion {
			checked[key] = c
			continue
		}
		delete(checked, key)
		want := compile.Status(pm, res, bindErrs, now)
		switch {
		case statusEqual(&pm.Status, &want):
			if len(bindErrs) == 0 { // bind errors come and go without a compile
				checked[key] = statusChecked{res: res, resourceVersion: pm.ResourceVersion}
			}
		default:
			// Only its key: pm is in the input, which the incremental
			// path changes while the event is on its way.
			ask := &v1alpha1.PortMux{ObjectMeta: metav1.ObjectMeta{Namespace: pm.Namespace, Name: pm.Name}}
			select {
			case p.statusEvents <- event.TypedGenericEvent[*v1alpha1.PortMux]{Object: ask}:
			default: // not the leader (nobody drains) or a burst: the status writer resyncs
			}
		}
	}
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

// incremental recompiles the dirty PortMuxes and sends the dataplane what
// changed. done is false when it cannot tell the outcome (a PortMux
// appeared that takes another's port, went, or moves ports): the caller
// then runs the whole-cluster path, which reads everything again.
func (p *programmer) incremental(ctx context.Context) (res reconcile.Result, done bool, err error) {
	dirty := p.dirty.take()
	if len(dirty) == 0 {
		p.state.mu.RLock()
		retry := len(p.state.bindErrs) > 0
		p.state.mu.RUnlock()
		if retry {
			return p.retryBinds(), true, nil
		}
		return reconcile.Result{}, true, nil
	}
	// Read first (the cache, and the API server for a Secret's new data),
	// then compile under the state's lock.
	type change struct {
		key  types.NamespacedName
		pm   v1alpha1.PortMux
		gone bool
	}
	changes := make([]change, 0, len(dirty))
	for key := range dirty {
		c := change{key: key}
		var list v1alpha1.PortMuxList
		if err := p.gather.shared(ctx, key, &list); err != nil {
			p.dirty.add(slices.Collect(maps.Keys(dirty))...)
			return reconcile.Result{}, false, fmt.Errorf("get PortMux %s: %w", key, err)
		}
		if len(list.Items) == 0 {
			if _, known := p.index[key]; known {
				changes = append(changes, change{key: key, gone: true})
			}
			continue // never compiled: nothing to take away
		}
		c.pm = list.Items[0]
		if i, known := p.index[key]; known && p.in.PortMuxes[i].UID != c.pm.UID {
			return reconcile.Result{}, false, nil // deleted and created again
		}
		if err := p.gather.refresh(ctx, p.in, &c.pm); err != nil {
			p.dirty.add(slices.Collect(maps.Keys(dirty))...)
			return reconcile.Result{}, false, err
		}
		changes = append(changes, c)
	}

	p.state.mu.Lock()
	out := p.state.out
	p.in.LastGoodSecrets = p.lastGood
	delta := &snapshot.Delta{MaxConnections: out.Snapshot.MaxConnections}
	var recompiled []*v1alpha1.PortMux
	for i := range changes {
		c := &changes[i]
		if c.gone {
			before, ok := compile.Remove(p.in, out, c.key)
			if !ok {
				p.state.mu.Unlock()
				p.fingerprint = ""
				return reconcile.Result{}, false, nil // its ports go to another
			}
			p.forget(c.key)
			for i := range before {
				delta.Remove = append(delta.Remove, before[i].Name)
			}
			continue
		}
		// Where it is now: a removal above may have moved it.
		at, known := p.index[c.key]
		if known {
			p.in.PortMuxes[at] = c.pm
		} else {
			p.in.PortMuxes = append(p.in.PortMuxes, c.pm)
			at = len(p.in.PortMuxes) - 1
		}
		pm := &p.in.PortMuxes[at]
		before, after, ok := compile.Recompile(p.in, out, pm)
		if !ok {
			p.state.mu.Unlock()
			// out is partly updated: the whole path replaces it.
			p.fingerprint = ""
			return reconcile.Result{}, false, nil
		}
		p.index[c.key] = at
		recompiled = append(recompiled, &c.pm) // c.pm, not pm: a removal moves PortMuxes
		if len(before) == len(after) && (len(after) == 0 || &before[0] == &after[0]) {
			continue // its inputs did not change: same listeners
		}
		delta.Set = append(delta.Set, after...)
		for i := range before {
			if !slices.ContainsFunc(after, func(l snapshot.Listener) bool { return l.Name == before[i].Name }) {
				delta.Remove = append(delta.Remove, before[i].Name)
			}
		}
	}
	p.state.mu.Unlock()
	p.fingerprint = "" // the inputs are no longer those of the last whole compile

	if len(delta.Set) == 0 && len(delta.Remove) == 0 {
		p.state.mu.RLock()
		bindErrs := p.state.bindErrs
		p.state.mu.RUnlock()
		p.statusOf(recompiled, bindErrs, p.checked)
		return reconcile.Result{}, true, nil
	}
	bindErrs := p.applyDelta(delta, out)
	p.log.V(1).Info("dataplane changed", "portMuxes", len(recompiled), "set", len(delta.Set), "removed", len(delta.Remove), "bindErrors", len(bindErrs))
	p.kickGatewayStatus()
	p.statusOf(p.withBindErrorOwners(recompiled, bindErrs), bindErrs, p.checked)
	if len(bindErrs) > 0 {
		return reconcile.Result{RequeueAfter: p.opt.BindRetry}, true, nil
	}
	return reconcile.Result{}, true, nil
}

// applyDelta sends the dataplane a delta of out's snapshot and records
// the bind errors it answers (every listener not bound, the delta's or
// not), keeping the ones before for withBindErrorOwners.
func (p *programmer) applyDelta(delta *snapshot.Delta, out *compile.Output) map[string]error {
	var bindErrs map[string]error
	if dd, ok := p.dataplane.(DeltaDataplane); ok {
		// out.Snapshot stays behind: nothing reads it but the next
		// whole path, which replaces it.
		bindErrs = dd.ApplyDelta(delta)
	} else {
		snap := out.Snapshot.Patch(delta)
		bindErrs = p.dataplane.Apply(snap)
		p.state.mu.Lock()
		out.Snapshot = snap
		p.state.mu.Unlock()
	}
	p.state.mu.Lock()
	p.bindErrsBefore = p.state.bindErrs
	p.state.bindErrs = bindErrs
	p.state.mu.Unlock()
	return bindErrs
}

// retryBinds asks the dataplane to bind again the listeners it could not
// bind, with an empty delta (an apply binds whatever is not bound), and
// has the status of the PortMuxes whose bind errors changed computed
// again.
func (p *programmer) retryBinds() reconcile.Result {
	p.state.mu.RLock()
	out := p.state.out
	p.state.mu.RUnlock()
	bindErrs := p.applyDelta(&snapshot.Delta{MaxConnections: out.Snapshot.MaxConnections}, out)
	p.log.V(1).Info("listeners bound again", "bindErrors", len(bindErrs))
	p.statusOf(p.withBindErrorOwners(nil, bindErrs), bindErrs, p.checked)
	if len(bindErrs) > 0 {
		return reconcile.Result{RequeueAfter: p.opt.BindRetry}
	}
	return reconcile.Result{}
}

// withBindErrorOwners adds to pms the PortMuxes that own a listener whose
// bind error came, went or changed since the last apply.
func (p *programmer) withBindErrorOwners(pms []*v1alpha1.PortMux, bindErrs map[string]error) []*v1alpha1.PortMux {
	owners := bindErrorOwners(p.state.out.Results, p.bindErrsBefore, bindErrs)
	if len(owners) == 0 {
		return pms
	}
	for _, pm := range pms {
		delete(owners, types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name})
	}
	for key := range owners {
		if i, ok := p.index[key]; ok {
			pms = append(pms, &p.in.PortMuxes[i])
		}
	}
	return pms
}

// bindErrorOwners returns the PortMuxes with a listener (by its snapshot
// name) whose bind error differs between before and after. Pure: it
// reads the last Results only.
func bindErrorOwners(results map[types.NamespacedName]*compile.Result, before, after map[string]error) map[types.NamespacedName]bool {
	changed := map[string]bool{}
	for name, err := range after {
		if b, ok := before[name]; !ok || b.Error() != err.Error() {
			changed[name] = true
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			changed[name] = true
		}
	}
	if len(changed) == 0 {
		return nil
	}
	owners := map[types.NamespacedName]bool{}
	for key, res := range results {
		for _, l := range res.Listeners {
			if l.Snapshot != "" && changed[l.Snapshot] {
				owners[key] = true
				break
			}
		}
	}
	return owners
}

// forget drops a PortMux that is gone from the last input, moving the
// last one into its place.
func (p *programmer) forget(key types.NamespacedName) {
	i, ok := p.index[key]
	if !ok {
		return
	}
	last := len(p.in.PortMuxes) - 1
	if i != last {
		moved := &p.in.PortMuxes[last]
		p.in.PortMuxes[i] = *moved
		p.index[types.NamespacedName{Namespace: moved.Namespace, Name: moved.Name}] = i
	}
	p.in.PortMuxes[last] = v1alpha1.PortMux{}
	p.in.PortMuxes = p.in.PortMuxes[:last]
	delete(p.index, key)
	delete(p.checked, key)
}

// allPortMuxes points at every PortMux of the last input.
func (p *programmer) allPortMuxes() []*v1alpha1.PortMux {
	pms := make([]*v1alpha1.PortMux, len(p.in.PortMuxes))
	for i := range p.in.PortMuxes {
		pms[i] = &p.in.PortMuxes[i]
	}
	return pms
}
