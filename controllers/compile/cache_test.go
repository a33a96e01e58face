package compile_test

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// TestGoldenWithCache compiles every golden case twice through one Cache:
// the first compile fills it, the second serves every PortMux it can from
// it, and both must give the golden output.
func TestGoldenWithCache(t *testing.T) {
	for _, inPath := range goldenInputs(t, "testdata", 12) {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		if _, known := knownBugs[name]; known {
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := loadGoldenCase(t, inPath)
			c.in.Cache = compile.NewCache()
			outPath := strings.TrimSuffix(inPath, ".in.yaml") + ".out.yaml"
			for _, pass := range []string{"filling", "from the cache"} {
				got, problems := renderGolden(t, c)
				if d := lineDiff(readGolden(t, outPath), string(got)); d != "" || len(problems) > 0 {
					t.Fatalf("compile %s: problems %q\n--- %s\n+++ got\n%s", pass, problems, outPath, d)
				}
			}
		})
	}
}

// TestCacheFollowsChanges runs a sequence of cluster changes through one
// Cache and checks each compile against one without it: a cached PortMux
// must see a new EndpointSlice version, a Service appearing, its port's
// holder going away and its own new generation.
func TestCacheFollowsChanges(t *testing.T) {
	t0 := metav1.Now()
	pm := func(name string, gen int64, port int32, created metav1.Time) v1alpha1.PortMux {
		return v1alpha1.PortMux{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Generation: gen, CreationTimestamp: created},
			Spec: v1alpha1.PortMuxSpec{
				Listeners: []v1alpha1.Listener{{Name: "public", Port: ptr.To(port)}},
				Routes: []v1alpha1.Route{{Name: "any", Match: v1alpha1.RouteMatch{Protocol: v1alpha1.ProtocolAny},
					Backend: &v1alpha1.Backend{Service: &v1alpha1.ServicePort{Name: "svc", Port: intstr.FromInt32(80)}}}},
			},
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc", UID: "svc", ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "main", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}}}
	slice := func(rv, addr string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "svc-1", ResourceVersion: rv},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("main"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}
	}
	key := types.NamespacedName{Namespace: "ns", Name: "svc"}
	older := metav1.NewTime(t0.Add(-1e9))
	steps := []struct {
		name  string
		pms   []v1alpha1.PortMux
		svc   bool
		slice *discoveryv1.EndpointSlice
	}{
		{"no Service yet", []v1alpha1.PortMux{pm("a", 1, 80, older), pm("b", 1, 80, t0)}, false, nil},
		{"Service and slice appear", []v1alpha1.PortMux{pm("a", 1, 80, older), pm("b", 1, 80, t0)}, true, slice("1", "10.0.0.1")},
		{"slice changes", []v1alpha1.PortMux{pm("a", 1, 80, older), pm("b", 1, 80, t0)}, true, slice("2", "10.0.0.2")},
		{"the holder of port 80 goes", []v1alpha1.PortMux{pm("b", 1, 80, t0)}, true, slice("2", "10.0.0.2")},
		{"b moves to 81", []v1alpha1.PortMux{pm("b", 2, 81, t0)}, true, slice("2", "10.0.0.2")},
		{"a comes back on 81, older", []v1alpha1.PortMux{pm("a", 1, 81, older), pm("b", 2, 81, t0)}, true, slice("2", "10.0.0.2")},
	}
	cache := compile.NewCache()
	for _, s := range steps {
		in := compile.Input{PortMuxes: s.pms, Services: map[types.NamespacedName]*corev1.Service{},
			EndpointSlices: map[types.NamespacedName][]*discoveryv1.EndpointSlice{}}
		if s.svc {
			in.Services[key] = svc
		}
		if s.slice != nil {
			in.EndpointSlices[key] = []*discoveryv1.EndpointSlice{s.slice}
		}
		want := renderOutput(t, in)
		in.Cache = cache
		if got := renderOutput(t, in); got != want {
			t.Fatalf("%s: with the cache\n%s\nwithout\n%s", s.name, got, want)
		}
	}
}

// renderOutput is a compile's snapshot and statuses as golden YAML.
func renderOutput(t *testing.T, in compile.Input) string {
	t.Helper()
	got, problems := renderGolden(t, &goldenCase{in: in})
	if len(problems) > 0 {
		t.Fatalf("problems: %q", problems)
	}
	return string(got)
}
