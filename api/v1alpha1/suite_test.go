package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portmux/portmux/test/apiserver"
)

// The tests in this package run against a real kube-apiserver and etcd
// (envtest) with the CRD from config/crd/bases, so what they check is what a
// cluster enforces: the OpenAPI schema, the CEL rules and their messages, and
// the printer columns. Without KUBEBUILDER_ASSETS every test skips.

// env is the API server the tests run against, or why there is none.
var env *apiserver.Env

func TestMain(m *testing.M) {
	os.Exit(apiserver.Main(m, filepath.Join("..", ".."), func(e *apiserver.Env) { env = e }))
}

// requireAPIServer skips the test when there is no envtest control plane.
func requireAPIServer(t *testing.T) {
	t.Helper()
	if env.SkipReason != "" {
		t.Skip(env.SkipReason)
	}
}

// newNamespace creates a namespace for one test and deletes it afterwards
// (envtest runs no namespace controller, so it stays Terminating; names are
// generated, so that does not matter).
func newNamespace(t *testing.T) string {
	t.Helper()
	requireAPIServer(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "portmux-test-"}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a test namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Client.Delete(context.Background(), ns); err != nil {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}
