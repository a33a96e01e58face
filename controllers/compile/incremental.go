package compile

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Recompile redoes one PortMux's compile in out, the Output of a Compile,
// after a change that moves no port: of the Services, EndpointSlices or
// Secrets pm names, or of its spec when the ports it claims stay the
// same. Compile redoes every PortMux (reusing its Cache), which costs in
// proportion to the cluster; Recompile costs pm's compile (issue 19).
//
// in is the Input of that Compile with pm and what pm names brought up
// to date: no other PortMux changed, nor the Gateway API objects. What a
// PortMux compiles to depends on the others only through the ports they
// hold (older ones first), which depend on their specs alone; so as long
// as pm claims the same ports as before, everyone else's compile stands
// and pm's, given the ports as they were at its turn, is the one Compile
// would give.
//
// It updates out's Results, GoodSecrets and in's Cache, not
// out.Snapshot: it returns pm's listeners before and after (the change of
// the snapshot, see snapshot.Delta). ok is false, and out unchanged, when
// the change could move a port or reach beyond pm (pm is new, attaches to
// a Gateway, claims other ports, or stops serving a certificate another
// PortMux may serve): then a Compile must run.
func Recompile(in *Input, out *Output, pm *v1alpha1.PortMux) (before, after []snapshot.Listener, ok bool) {
	key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
	prev, known := out.byPortMux[key]
	if out.ports == nil || onGateway(pm) {
		return nil, nil, false
	}
	errs := Validate(pm)
	sig := claims(in, pm, len(errs) > 0)
	holder := (&compiler{pm: pm}).holder()
	// The ports held at pm's turn: those held by older PortMuxes. A port
	// pm holds at the end was free at its turn.
	ports := map[portKey]string{}
	free := true
	eachPort(in, pm, func(k portKey, _ string, allowed bool) {
		if h, held := out.ports[k]; held && h != holder {
			ports[k] = h
			free = free && !allowed
		}
	})
	switch {
	case known && sig != prev.claims:
		return nil, nil, false
	case !known && (!free || len(errs) > 0):
		// A new PortMux that takes no port another holds (nobody waits
		// for a free port) changes nobody else's compile.
		return nil, nil, false
	}
	if e := in.Cache.hit(in, pm, ports); e != nil && known {
		out.Results[key] = e.res
		return prev.listeners, prev.listeners, true
	}
	good := map[types.NamespacedName]*corev1.Secret{}
	c := &compiler{in: in, pm: pm, res: &Result{}, good: good}
	var ls []snapshot.Listener
	if len(errs) > 0 {
		c.res.Invalid = errs
	} else {
		ls = c.listeners(ports)
	}
	// A certificate Secret pm named or names and no longer serves may
	// still be served by another PortMux or a Gateway: only a Compile
	// tells.
	refs := SecretRefs(pm)
	for _, name := range append(refs, prev.secrets...) {
		k := types.NamespacedName{Namespace: pm.Namespace, Name: name}
		if _, served := good[k]; !served && out.GoodSecrets[k] != nil {
			return nil, nil, false
		}
	}
	for k, s := range good {
		out.GoodSecrets[k] = s
	}
	out.Results[key] = c.res
	out.byPortMux[key] = portMuxOutput{listeners: ls, claims: sig, secrets: refs}
	for k, h := range ports {
		if h == holder {
			out.ports[k] = h
		}
	}
	if in.Cache != nil && len(refs) == 0 {
		in.Cache.entries[key] = &cacheEntry{seen: in.Cache.round, key: inputKey(in, pm, ports), listeners: ls, res: c.res}
	}
	return prev.listeners, ls, true
}

// claims identifies the ports pm claims, whether it may, and whether it
// attaches to a Gateway: what pm's spec does to the rest of the output.
func claims(in *Input, pm *v1alpha1.PortMux, invalid bool) string {
	if invalid {
		return "invalid"
	}
	var b strings.Builder
	if onGateway(pm) {
		b.WriteString("gateway,")
	}
	eachPort(in, pm, func(k portKey, _ string, allowed bool) {
		b.WriteString(string(k.t))
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(int(k.port)))
		if !allowed {
			b.WriteByte('!')
		}
		b.WriteByte(',')
	})
	return b.String()
}

// Remove takes a PortMux that is gone out of out, the Output of a
// Compile, and in's Cache, when that changes nobody else's compile: it
// held no port another PortMux waits for (a listener in conflict with
// it), attached to no Gateway and served no certificate Secret (another
// PortMux may serve it too: only a Compile tells). It returns the
// PortMux's listeners, for the change of the snapshot; ok is false, and
// out unchanged, when a Compile must run. It looks at every Result when
// the PortMux held a port: cheap next to a Compile.
func Remove(in *Input, out *Output, key types.NamespacedName) (before []snapshot.Listener, ok bool) {
	prev, known := out.byPortMux[key]
	if !known || out.ports == nil || strings.HasPrefix(prev.claims, "gateway,") {
		return nil, false
	}
	for _, name := range prev.secrets {
		if out.GoodSecrets[types.NamespacedName{Namespace: key.Namespace, Name: name}] != nil {
			return nil, false
		}
	}
	holder := key.Name
	if key.Namespace != "" {
		holder = key.Namespace + "/" + key.Name
	}
	var held []portKey
	for k, h := range out.ports {
		if h == holder {
			held = append(held, k)
		}
	}
	if len(held) > 0 {
		for _, res := range out.Results {
			for i := range res.Listeners {
				if res.Listeners[i].Conflict == holder {
					return nil, false
				}
			}
		}
	}
	for _, k := range held {
		delete(out.ports, k)
	}
	delete(out.Results, key)
	delete(out.byPortMux, key)
	if in.Cache != nil {
		delete(in.Cache.entries, key)
	}
	return prev.listeners, true
}
