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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion names the API group and version every PortMux object carries.
	GroupVersion = schema.GroupVersion{Group: "portmux.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the PortMux kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme lets clients and managers decode PortMux objects.
	AddToScheme = SchemeBuilder.AddToScheme
)
