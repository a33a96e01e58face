package controllers

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/portmux/portmux/test/peers"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// A manager that watches one namespace needs the generated rules only
// there: bound by a RoleBinding in that namespace (what the chart renders
// for watchNamespaces), it programs a PortMux to Ready and carries traffic,
// while the same identity can list no Secret cluster-wide.
func TestWatchedNamespaceNeedsOnlyARoleBinding(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ctx := context.Background()
	b, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(b, &role); err != nil || len(role.Rules) == 0 {
		t.Fatalf("config/rbac/role.yaml: %v (%d rules)", err, len(role.Rules))
	}
	role.ObjectMeta = metav1.ObjectMeta{GenerateName: "portmux-manager-"}
	create(t, &role)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), &role) })

	const saNamespace, saName = "portmux-system", "portmux-rbac-test"
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + saNamespace + ":" + saName}
	ns, _, _ := startControllerAs(t, cfg, func(ns string) {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "portmux-manager", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: saName, Namespace: saNamespace}},
		}
		create(t, rb)
	})

	echoService(t, ns, "one")
	port := int32(peers.FreePort(t))
	createReady(t, sshMux(ns, "edge", port, "one"))
	if got, err := talk(port, "hi"); err != nil || got != "one:hi" {
		t.Fatalf("through the mux: %q, %v", got, err)
	}

	as, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := as.List(ctx, &corev1.SecretList{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing Secrets cluster-wide as the manager: %v, want Forbidden", err)
	}
}
