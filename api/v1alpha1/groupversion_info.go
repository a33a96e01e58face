// Package v1alpha1 holds the PortMux API: what a user declares (listeners that
// bind ports or terminate TLS, and routes that decide where each sniffed
// connection goes) and what the controller reports back.
//
// The types are the only source of the CRD: validation lives in kubebuilder
// and CEL markers here, and controller-gen writes config/crd/bases and the
// chart's crds/ from them.
//
// +kubebuilder:object:generate=true
// +groupName=portmux.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion names the API group and version every PortMux object carries.
	GroupVersion = schema.GroupVersion{Group: "portmux.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the PortMux kinds with a runtime.Scheme. It
	// depends on apimachinery only, so the API package stays cheap to import.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme lets clients and managers decode PortMux objects.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &PortMux{}, &PortMuxList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
