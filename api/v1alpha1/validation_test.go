package v1alpha1_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/test/specs"
)

// The validation table, shared with compile.Validate's tests, is in
// test/specs/portmux.yaml. Each spec is created as a PortMux (from YAML, so
// that it can hold what Go types cannot, like probeTimeout "abc"); the API
// server's refusal is compared with the expected causes, each exactly as
// kubectl prints it ("field: kind of error: message"), and no others: a rule
// that misfires on a valid part of the spec fails the test too.

func TestInvalidPortMuxIsRefused(t *testing.T) {
	ns := newNamespace(t)
	refused, _ := specs.Load(t)
	for _, tc := range refused {
		if tc.CRD == nil {
			continue // valid as far as the API server is concerned
		}
		t.Run(tc.Name, func(t *testing.T) {
			err := createSpec(t, ns, tc.Spec)
			if err == nil {
				t.Fatalf("the API server accepted the PortMux; want a refusal with %q", tc.CRD)
			}
			got := refusalCauses(t, err)
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.CRD))
			if !slices.Equal(got, want) {
				t.Errorf("the API server refused it with\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

func TestValidEdgeCasesAreAccepted(t *testing.T) {
	ns := newNamespace(t)
	_, accepted := specs.Load(t)
	for _, tc := range accepted {
		t.Run(tc.Name, func(t *testing.T) {
			if err := createSpec(t, ns, tc.Spec); err != nil {
				t.Fatalf("the API server refused a valid PortMux:\n  %s", strings.Join(refusalCauses(t, err), "\n  "))
			}
		})
	}
}

// createSpec creates a PortMux with the given spec (YAML or JSON) in ns,
// under a generated name.
func createSpec(t *testing.T, ns string, spec []byte) error {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal(spec, &s); err != nil {
		t.Fatalf("test spec is not YAML: %v\n%s", err, spec)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": s}}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("PortMux"))
	u.SetNamespace(ns)
	u.SetGenerateName("case-")
	return env.Client.Create(t.Context(), u)
}

// refusalCauses returns each cause of an Invalid refusal as
// "field: message", the way kubectl prints them.
func refusalCauses(t *testing.T, err error) []string {
	t.Helper()
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !apierrors.IsInvalid(err) {
		t.Fatalf("want an Invalid refusal from the API server, got: %v", err)
	}
	details := status.Status().Details
	if details == nil || len(details.Causes) == 0 {
		t.Fatalf("refusal without causes: %v", err)
	}
	var causes []string
	for _, c := range details.Causes {
		causes = append(causes, c.Field+": "+c.Message)
	}
	return causes
}

// TestListenerProtocolDefaultsToTCP: a listener that says no protocol is
// stored as TCP, the listeners of PortMuxes written before UDP existed
// among them, so that every reader (the CEL rules, compile, kubectl get)
// sees the transport it binds.
func TestListenerProtocolDefaultsToTCP(t *testing.T) {
	ns := newNamespace(t)
	pm := &v1alpha1.PortMux{}
	pm.Namespace, pm.Name = ns, "defaults"
	pm.Spec.Listeners = []v1alpha1.Listener{
		{Name: "https", Port: ptr.To[int32](443)},
		{Name: "h3", Port: ptr.To[int32](443), Protocol: v1alpha1.TransportUDP},
		{Name: "inner", TLS: &v1alpha1.ListenerTLS{CertificateRefs: []v1alpha1.SecretRef{{Name: "cert"}}}},
	}
	if err := env.Client.Create(t.Context(), pm); err != nil {
		t.Fatalf("creating %s: %v", pm.Name, err)
	}
	var got v1alpha1.PortMux
	if err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: pm.Name}, &got); err != nil {
		t.Fatal(err)
	}
	var protocols []v1alpha1.TransportProtocol
	for _, l := range got.Spec.Listeners {
		protocols = append(protocols, l.Protocol)
	}
	if want := []v1alpha1.TransportProtocol{"TCP", "UDP", "TCP"}; !slices.Equal(protocols, want) {
		t.Errorf("stored listener protocols = %v, want %v", protocols, want)
	}
}
