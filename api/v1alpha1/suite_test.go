package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/portmux/portmux/test/apiserver"
)

// The tests in this package run against a real kube-apiserver and etcd
// (envtest) with the CRD from config/crd/bases, so what they check is what a
// cluster enforces: the OpenAPI schema, the CEL rules and their messages, and
// the printer columns. Without KUBEBUILDER_ASSETS every test skips with
// skipReason.
var (
	skipReason string

	testEnv *envtest.Environment
	cfg     *rest.Config
	k8s     client.Client
)

func TestMain(m *testing.M) {
	os.Exit(apiserver.Main(m, filepath.Join("..", ".."), func(e *apiserver.Env) {
		skipReason, testEnv, cfg, k8s = e.SkipReason, e.Environment, e.Config, e.Client
	}))
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
