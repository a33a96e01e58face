package compile

import (
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Cache remembers what each PortMux compiled to, so that a Compile given
// it redoes only the PortMuxes whose inputs changed: an EndpointSlice
// event recompiles the PortMuxes that name its Service, not the cluster
// (issue 19). A PortMux's entry stands while its spec (UID and
// generation), the Services and EndpointSlices it names (resource
// versions), the ports it may claim (port policy, and who holds them
// before it) and the settings that shape listeners are the same: these
// are everything its compile reads, so the output is the one a Compile
// without the cache gives. PortMuxes that name Secrets are compiled
// every time (their certificates depend on the last good ones).
//
// A Cache is used by one Compile at a time; the zero value is not usable,
// see NewCache.
type Cache struct {
	settings string
	entries  map[types.NamespacedName]*cacheEntry
	// round counts Compiles; entries not seen in the current one are
	// dropped at its end (deleted PortMuxes).
	round uint64
}

type cacheEntry struct {
	seen      uint64
	key       string
	listeners []snapshot.Listener
	res       *Result
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{entries: map[types.NamespacedName]*cacheEntry{}}
}

// begin starts a Compile: a change of the settings every listener
// depends on empties the cache.
func (c *Cache) begin(in *Input) {
	settings := in.BindAddress + "\x00" + strconv.FormatBool(in.AllowAddressBackends)
	if settings != c.settings {
		c.settings = settings
		clear(c.entries)
	}
	c.round++
}

// end drops the entries of PortMuxes the Compile did not see.
func (c *Cache) end() {
	for k, e := range c.entries {
		if e.seen != c.round {
			delete(c.entries, k)
		}
	}
}

// lookup returns pm's cached listeners and result when its inputs are
// those of the entry, with the key to store a new entry under; key is ""
// when pm is not cached.
func (c *Cache) lookup(in *Input, pm *v1alpha1.PortMux, ports map[portKey]string) (e *cacheEntry, key string) {
	if len(SecretRefs(pm)) > 0 || onGateway(pm) {
		return nil, ""
	}
	key = inputKey(in, pm, ports)
	if e := c.entries[types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}]; e != nil && e.key == key {
		e.seen = c.round
		return e, key
	}
	return nil, key
}

// hit returns pm's entry when its inputs are those of the entry, without
// counting pm as seen; nil for a nil Cache.
func (c *Cache) hit(in *Input, pm *v1alpha1.PortMux, ports map[portKey]string) *cacheEntry {
	if c == nil || len(SecretRefs(pm)) > 0 || onGateway(pm) {
		return nil
	}
	e := c.entries[types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}]
	if e == nil || e.key != inputKey(in, pm, ports) {
		return nil
	}
	e.seen = c.round
	return e
}

func (c *Cache) store(pm *v1alpha1.PortMux, key string, listeners []snapshot.Listener, res *Result) {
	if key == "" {
		return
	}
	c.entries[types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}] = &cacheEntry{seen: c.round, key: key, listeners: listeners, res: res}
}

// inputKey identifies everything pm's compile reads besides its Secrets.
func inputKey(in *Input, pm *v1alpha1.PortMux, ports map[portKey]string) string {
	var b strings.Builder
	b.WriteString(string(pm.UID))
	b.WriteByte('/')
	b.WriteString(strconv.FormatInt(pm.Generation, 10))
	eachPort(in, pm, func(k portKey, holder string, allowed bool) {
		b.WriteString("|p")
		switch h, held := ports[k]; {
		case !allowed:
			b.WriteString("!")
		case held && h != holder:
			b.WriteString("c:")
			b.WriteString(h)
		}
	})
	for _, name := range ServiceRefs(pm) {
		key := types.NamespacedName{Namespace: pm.Namespace, Name: name}
		b.WriteString("|s")
		if s := in.Services[key]; s != nil {
			b.WriteString(string(s.UID))
			b.WriteByte('/')
			b.WriteString(s.ResourceVersion)
		}
		for _, es := range in.EndpointSlices[key] {
			b.WriteString("|e")
			b.WriteString(es.Name)
			b.WriteByte('/')
			b.WriteString(es.ResourceVersion)
		}
	}
	return b.String()
}

// claimPorts takes the ports a cached PortMux holds, as its compile would.
func claimPorts(in *Input, pm *v1alpha1.PortMux, ports map[portKey]string) {
	eachPort(in, pm, func(k portKey, holder string, allowed bool) {
		if _, held := ports[k]; allowed && !held {
			ports[k] = holder
		}
	})
}

// eachPort calls f with each port pm's listeners claim, pm's name as a
// holder, and whether the port policy grants the port.
func eachPort(in *Input, pm *v1alpha1.PortMux, f func(k portKey, holder string, allowed bool)) {
	holder := (&compiler{pm: pm}).holder()
	for i := range pm.Spec.Listeners {
		l := &pm.Spec.Listeners[i]
		if l.Port == nil {
			continue
		}
		t := listenerTransport(l)
		f(portKey{t: t, port: *l.Port}, holder, in.PortPolicy.Allows(*l.Port, t, pm.Namespace))
	}
}

// SecretRefs lists the Secrets a PortMux names: certificates and tunnel
// tokens. The controller watches them and indexes PortMuxes by them.
func SecretRefs(pm *v1alpha1.PortMux) []string {
	var out []string
	for _, l := range pm.Spec.Listeners {
		if l.TLS != nil {
			for _, r := range l.TLS.CertificateRefs {
				out = addName(out, r.Name)
			}
		}
	}
	for _, r := range pm.Spec.Routes {
		if r.Tunnel != nil && r.Tunnel.Auth != nil && r.Tunnel.Auth.TokenSecretRef != nil {
			out = addName(out, r.Tunnel.Auth.TokenSecretRef.Name)
		}
	}
	return out
}

// ServiceRefs lists the Services a PortMux names: backends and tunnel
// targets. The controller watches them and indexes PortMuxes by them.
func ServiceRefs(pm *v1alpha1.PortMux) []string {
	var out []string
	for _, r := range pm.Spec.Routes {
		if r.Backend != nil && r.Backend.Service != nil {
			out = addName(out, r.Backend.Service.Name)
		}
		if r.Tunnel != nil {
			for _, a := range r.Tunnel.Allow {
				if a.Service != nil {
					out = addName(out, a.Service.Name)
				}
			}
		}
	}
	return out
}

// addName appends name unless names holds it.
func addName(names []string, name string) []string {
	if slices.Contains(names, name) {
		return names
	}
	return append(names, name)
}

// onGateway reports whether pm attaches a listener to a Gateway listener
// (parentRef): its compile adds routes to the Gateway's port and reads
// the Gateway's state, which the cache key does not hold, so it is
// compiled every time.
func onGateway(pm *v1alpha1.PortMux) bool {
	for i := range pm.Spec.Listeners {
		if pm.Spec.Listeners[i].ParentRef != nil {
			return true
		}
	}
	return false
}
