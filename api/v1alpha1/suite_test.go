package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/portmux/portmux/api/v1alpha1"
)

// The tests in this package run against a real kube-apiserver and etcd
// (envtest) with the CRD from config/crd/bases, so what they check is what a
// cluster enforces: the OpenAPI schema, the CEL rules and their messages, and
// the printer columns.
//
// KUBEBUILDER_ASSETS names the directory with the kube-apiserver, etcd and
// kubectl binaries; `make test` sets it from hack/envtest-assets.sh. Without
// it every test skips with skipReason.
var (
	skipReason string

	scheme  = runtime.NewScheme()
	testEnv *envtest.Environment
	cfg     *rest.Config
	k8s     client.Client
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		skipReason = "KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)"
		return m.Run()
	}
	// controller-runtime complains on stderr when its logger is never set.
	logf.SetLogger(logr.Discard())

	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			fmt.Fprintf(os.Stderr, "building the scheme: %v\n", err)
			return 1
		}
	}

	testEnv = &envtest.Environment{
		Scheme:                scheme,
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = testEnv.Start()
	defer func() {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
	}()
	if err != nil {
		// A CEL rule the API server cannot compile, or one over the cost
		// budget, shows up here: the CRD is refused.
		fmt.Fprintf(os.Stderr, "starting envtest with the CRDs from config/crd/bases: %v\n", err)
		return 1
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating the client: %v\n", err)
		return 1
	}
	return m.Run()
}

// requireAPIServer skips the test when there is no envtest control plane.
func requireAPIServer(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// newNamespace creates a namespace for one test and deletes it afterwards
// (envtest runs no namespace controller, so it stays Terminating; names are
// generated, so that does not matter).
func newNamespace(t *testing.T) string {
	t.Helper()
	requireAPIServer(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "portmux-test-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a test namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(context.Background(), ns); err != nil {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}
