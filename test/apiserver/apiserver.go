// Package apiserver runs a test binary against a real kube-apiserver and
// etcd (envtest) with PortMux's CRDs from config/crd/bases installed: the
// TestMain of every package whose tests need an API server calls Main.
//
// KUBEBUILDER_ASSETS names the directory with the kube-apiserver, etcd and
// kubectl binaries; `make test` sets it from hack/envtest-assets.sh.
// Without it the tests run with Env.SkipReason set, and those that need
// the API server skip with it.
package apiserver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/portmux/portmux/api/v1alpha1"
)

// Env is the running API server, or why there is none.
type Env struct {
	// SkipReason, when set, says why there is no API server.
	SkipReason string
	// Scheme knows the built-in kinds, CustomResourceDefinitions and
	// PortMux's kinds.
	Scheme *runtime.Scheme
	// Environment is envtest's (KubeConfig: an admin kubeconfig).
	Environment *envtest.Environment
	Config      *rest.Config
	Client      client.Client
}

// Main starts the API server with the CRDs below root (the module root,
// relative to the test's package), calls ready with it, runs m and stops
// the API server. It returns the exit code for os.Exit.
func Main(m *testing.M, root string, ready func(*Env)) int {
	env := &Env{Scheme: runtime.NewScheme()}
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha1.AddToScheme,
	} {
		if err := add(env.Scheme); err != nil {
			fmt.Fprintf(os.Stderr, "building the scheme: %v\n", err)
			return 1
		}
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		env.SkipReason = "KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)"
		ready(env)
		return m.Run()
	}
	// controller-runtime complains on stderr when its logger is never set.
	logf.SetLogger(logr.Discard())

	env.Environment = &envtest.Environment{
		Scheme:                env.Scheme,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	env.Config, err = env.Environment.Start()
	defer func() {
		if err := env.Environment.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
	}()
	if err != nil {
		// A CEL rule the API server cannot compile, or one over the cost
		// budget, shows up here: the CRD is refused.
		fmt.Fprintf(os.Stderr, "starting envtest with the CRDs from config/crd/bases: %v\n", err)
		return 1
	}
	env.Client, err = client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating the client: %v\n", err)
		return 1
	}
	ready(env)
	return m.Run()
}
