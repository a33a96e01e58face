package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestSecureMetricsAskTheAPIServer runs the manager's metrics endpoint with
// --metrics-secure against a real API server: a scraper's service account
// token is authenticated with a TokenReview and its right to get /metrics
// checked with a SubjectAccessReview, as Prometheus scraping Kubernetes'
// own components is.
func TestSecureMetricsAskTheAPIServer(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	env := &envtest.Environment{ControlPlaneStartTimeout: time.Minute}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start the API server: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)

	// Two scrapers: one bound to a role that may get /metrics, one not.
	const ns = "monitoring"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	must(err)
	for _, sa := range []string{"prometheus", "nosy"} {
		_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		must(err)
	}
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "portmux-metrics-reader"},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{})
	must(err)
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-portmux-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "portmux-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}},
	}, metav1.CreateOptions{})
	must(err)
	token := func(sa string) string {
		t.Helper()
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		must(err)
		return tr.Status.Token
	}
	allowed, denied := token("prometheus"), token("nosy")

	addr := fmt.Sprintf("127.0.0.1:%d", peers.FreePort(t))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsOptions(managerOptions{metricsBindAddress: addr, metricsSecure: true}),
		HealthProbeBindAddress: "0",
	})
	must(err)
	mctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() { stop(); <-done })

	// The certificate is self-signed: this test checks who may read, not
	// the certificate.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(url, bearer string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, "", err
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		return peers.StatusBody(hc.Do(req))
	}
	var code int
	var body string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, body, err = get("https://"+addr+"/metrics", allowed); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || code != http.StatusOK || !strings.Contains(body, "# TYPE ") {
		t.Fatalf("scraper allowed to get /metrics: %d, %v\n%.300s", code, err, body)
	}
	for _, c := range []struct {
		who, token string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a token the API server does not know", "not-a-token", http.StatusUnauthorized},
		{"a service account without the role", denied, http.StatusForbidden},
	} {
		code, body, err := get("https://"+addr+"/metrics", c.token)
		if err != nil || code != c.want || strings.Contains(body, "# TYPE ") {
			t.Errorf("%s: %d, %v; want %d and no metrics", c.who, code, err, c.want)
		}
	}
	// Plain HTTP gets no metrics either.
	if code, body, err := get("http://"+addr+"/metrics", allowed); err == nil && (code == http.StatusOK || strings.Contains(body, "# TYPE ")) {
		t.Errorf("plain HTTP: %d with metrics; want HTTPS only", code)
	}
}
