package compile_test

import (
	"cmp"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// TestRecompileMatchesCompile takes every golden case, changes one thing
// a PortMux names (a Service or its EndpointSlices or a Secret goes, a
// Service loses its ports, a slice its endpoints), recompiles the
// PortMuxes that name it one by one and patches the snapshot with their
// listeners, and checks that this gives what a Compile of the changed
// input gives: the same snapshot, Results and served Secrets. Recompile
// may refuse (a Compile must run), never be wrong.
func TestRecompileMatchesCompile(t *testing.T) {
	recompiled := 0
	for _, inPath := range goldenInputs(t, "testdata", 12) {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		base := loadGoldenCase(t, inPath).in
		for _, ch := range changesOf(base) {
			t.Run(name+"/"+ch.name, func(t *testing.T) {
				for _, cached := range []bool{false, true} {
					in := base
					if cached {
						in.Cache = compile.NewCache()
					}
					out := compile.Compile(in)
					lastGood := maps.Clone(out.GoodSecrets)
					next := ch.apply(in)
					next.LastGoodSecrets = out.GoodSecrets
					snap := out.Snapshot
					for _, pm := range uniquePortMuxes(next.PortMuxes) {
						if !names(pm, ch.ns, ch.object) {
							continue
						}
						before, after, ok := compile.Recompile(&next, out, pm)
						if !ok {
							t.Logf("%s: Recompile refused", pm.Name)
							return
						}
						recompiled++
						snap = snap.Patch(delta(snap.MaxConnections, before, after))
					}
					ref := next
					ref.Cache, ref.LastGoodSecrets = nil, lastGood
					want := compile.Compile(ref)
					if got, exp := renderSnap(t, snap), renderSnap(t, want.Snapshot); got != exp {
						t.Fatalf("cached %v: snapshot\n%s\nwant\n%s", cached, got, exp)
					}
					if !reflect.DeepEqual(out.Results, want.Results) {
						t.Fatalf("cached %v: results differ\n%s\nwant\n%s", cached, dump(t, out.Results), dump(t, want.Results))
					}
					if !maps.Equal(out.GoodSecrets, want.GoodSecrets) {
						t.Fatalf("cached %v: good secrets %v, want %v", cached, slices.Collect(maps.Keys(out.GoodSecrets)), slices.Collect(maps.Keys(want.GoodSecrets)))
					}
					if cached {
						// The cache serves the recompiled PortMuxes: a
						// Compile through it gives the same again.
						next.LastGoodSecrets = lastGood
						if got, exp := renderSnap(t, compile.Compile(next).Snapshot), renderSnap(t, want.Snapshot); got != exp {
							t.Fatalf("compile through the cache after Recompile:\n%s\nwant\n%s", got, exp)
						}
					}
				}
			})
		}
	}
	if recompiled < 20 {
		t.Fatalf("only %d PortMuxes recompiled across the cases: the test checks too little", recompiled)
	}
}

// change is one edit of what PortMuxes name.
type change struct {
	name       string
	ns, object string
	apply      func(compile.Input) compile.Input
}

// changesOf lists the edits of in's Services, EndpointSlices and Secrets.
func changesOf(in compile.Input) []change {
	var out []change
	add := func(name string, k types.NamespacedName, apply func(*compile.Input)) {
		out = append(out, change{name + "-" + k.Name, k.Namespace, k.Name, func(in compile.Input) compile.Input {
			apply(&in)
			return in
		}})
	}
	for _, k := range slices.SortedFunc(maps.Keys(in.Services), cmpKey) {
		add("service-gone", k, func(in *compile.Input) {
			in.Services, in.EndpointSlices = gone(in.Services, k), gone(in.EndpointSlices, k)
		})
		add("service-no-ports", k, func(in *compile.Input) {
			in.Services = edited(in.Services, k, func(s *corev1.Service) *corev1.Service {
				s = s.DeepCopy()
				s.Spec.Ports, s.ResourceVersion = nil, s.ResourceVersion+"x"
				return s
			})
		})
	}
	for _, k := range slices.SortedFunc(maps.Keys(in.EndpointSlices), cmpKey) {
		add("slices-gone", k, func(in *compile.Input) { in.EndpointSlices = gone(in.EndpointSlices, k) })
		add("slice-first-endpoint-gone", k, func(in *compile.Input) {
			in.EndpointSlices = edited(in.EndpointSlices, k, func(list []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
				list = slices.Clone(list)
				es := list[0].DeepCopy()
				if len(es.Endpoints) > 0 {
					es.Endpoints = es.Endpoints[1:]
				}
				es.ResourceVersion += "x"
				list[0] = es
				return list
			})
		})
	}
	for _, k := range slices.SortedFunc(maps.Keys(in.Secrets), cmpKey) {
		add("secret-gone", k, func(in *compile.Input) { in.Secrets = gone(in.Secrets, k) })
		add("secret-broken", k, func(in *compile.Input) {
			in.Secrets = edited(in.Secrets, k, func(s *corev1.Secret) *corev1.Secret {
				s = s.DeepCopy()
				for key := range s.Data {
					s.Data[key] = []byte("broken")
				}
				s.ResourceVersion += "x"
				return s
			})
		})
	}
	return out
}

// gone is m without k, and edited m with k's value changed by f: copies,
// for the input they come from is shared.
func gone[V any](m map[types.NamespacedName]V, k types.NamespacedName) map[types.NamespacedName]V {
	m = maps.Clone(m)
	delete(m, k)
	return m
}

func edited[V any](m map[types.NamespacedName]V, k types.NamespacedName, f func(V) V) map[types.NamespacedName]V {
	m = maps.Clone(m)
	m[k] = f(m[k])
	return m
}

func cmpKey(a, b types.NamespacedName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// names reports whether pm names object (a Service or Secret) of ns.
func names(pm *v1alpha1.PortMux, ns, object string) bool {
	return pm.Namespace == ns && (slices.Contains(compile.ServiceRefs(pm), object) || slices.Contains(compile.SecretRefs(pm), object))
}

// uniquePortMuxes are the first of each namespace/name, as a cluster
// holds them.
func uniquePortMuxes(pms []v1alpha1.PortMux) []*v1alpha1.PortMux {
	seen := map[types.NamespacedName]bool{}
	var out []*v1alpha1.PortMux
	for i := range pms {
		k := types.NamespacedName{Namespace: pms[i].Namespace, Name: pms[i].Name}
		if !seen[k] {
			seen[k] = true
			out = append(out, &pms[i])
		}
	}
	return out
}

// delta is the change from a PortMux's listeners before to after.
func delta(maxConnections int, before, after []snapshot.Listener) *snapshot.Delta {
	d := &snapshot.Delta{MaxConnections: maxConnections, Set: after}
	for i := range before {
		if !slices.ContainsFunc(after, func(l snapshot.Listener) bool { return l.Name == before[i].Name }) {
			d.Remove = append(d.Remove, before[i].Name)
		}
	}
	return d
}

func renderSnap(t *testing.T, s *snapshot.Snapshot) string {
	t.Helper()
	var pr problems
	b, err := yaml.Marshal(renderSnapshot(&pr, s))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dump(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// TestRecompileAddsPortMux compiles every golden case without one of its
// PortMuxes, then adds that one with Recompile, and checks the outcome is
// a Compile's of the whole case; Recompile refuses when the newcomer
// takes a port another holds.
func TestRecompileAddsPortMux(t *testing.T) {
	added := forEachLeftOut(t, func(t *testing.T, full, without compile.Input, pm *v1alpha1.PortMux) bool {
		without.Cache = compile.NewCache()
		out := compile.Compile(without)
		with := full
		with.Cache = without.Cache
		with.LastGoodSecrets = out.GoodSecrets
		before, after, ok := compile.Recompile(&with, out, pm)
		if !ok {
			return false
		}
		snap := out.Snapshot.Patch(delta(out.Snapshot.MaxConnections, before, after))
		sameOutput(t, snap, out, compile.Compile(full))
		return true
	})
	if added < 20 {
		t.Fatalf("only %d PortMuxes added across the cases: the test checks too little", added)
	}
}

// TestRemoveMatchesCompile compiles every golden case, takes one of its
// PortMuxes away with Remove, and checks the outcome is a Compile's of
// the case without it; Remove refuses when another PortMux waits for a
// port the removed one held.
func TestRemoveMatchesCompile(t *testing.T) {
	removed := forEachLeftOut(t, func(t *testing.T, full, without compile.Input, pm *v1alpha1.PortMux) bool {
		full.Cache = compile.NewCache()
		without.Cache = full.Cache
		out := compile.Compile(full)
		before, ok := compile.Remove(&without, out, types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name})
		if !ok {
			return false
		}
		ref := without
		ref.Cache = nil
		want := compile.Compile(ref)
		sameOutput(t, out.Snapshot.Patch(delta(out.Snapshot.MaxConnections, before, nil)), out, want)
		// A Compile through the cache Remove left gives the same.
		if got, exp := renderSnap(t, compile.Compile(without).Snapshot), renderSnap(t, want.Snapshot); got != exp {
			t.Fatalf("compile through the cache after Remove:\n%s\nwant\n%s", got, exp)
		}
		return true
	})
	if removed < 20 {
		t.Fatalf("only %d PortMuxes removed across the cases: the test checks too little", removed)
	}
}

// forEachLeftOut runs check, as a subtest, for each PortMux of each
// golden case, given the case's input and the input without that
// PortMux, and counts the checks that did not return false (Recompile
// or Remove refused).
func forEachLeftOut(t *testing.T, check func(t *testing.T, full, without compile.Input, pm *v1alpha1.PortMux) bool) int {
	checked := 0
	for _, inPath := range goldenInputs(t, "testdata", 12) {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		full := loadGoldenCase(t, inPath).in
		for i, pm := range uniquePortMuxes(full.PortMuxes) {
			t.Run(fmt.Sprintf("%s/%d-%s", name, i, pm.Name), func(t *testing.T) {
				without := full
				without.PortMuxes = slices.DeleteFunc(slices.Clone(full.PortMuxes), func(o v1alpha1.PortMux) bool {
					return o.Namespace == pm.Namespace && o.Name == pm.Name
				})
				if check(t, full, without, pm) {
					checked++
				}
			})
		}
	}
	return checked
}

// sameOutput fails t unless snap and got's Results are want's.
func sameOutput(t *testing.T, snap *snapshot.Snapshot, got, want *compile.Output) {
	t.Helper()
	if g, exp := renderSnap(t, snap), renderSnap(t, want.Snapshot); g != exp {
		t.Fatalf("snapshot\n%s\nwant\n%s", g, exp)
	}
	if !reflect.DeepEqual(got.Results, want.Results) {
		t.Fatalf("results differ\n%s\nwant\n%s", dump(t, got.Results), dump(t, want.Results))
	}
}
