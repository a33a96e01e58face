// Package chart tests the Helm chart in charts/portmux: it lints it, renders
// it with default and non-default values (golden files), checks what the
// rendered objects say about security and ports, checks that its generated
// parts (CRDs, ClusterRole rules) and config/default agree with what
// controller-gen writes, and creates every rendered object with a
// server-side dry run on a real kube-apiserver, so that each is valid for the
// Kubernetes version the envtest assets are built from (v1.37).
//
// It needs helm: $HELM, or bin/helm-$(HELM_VERSION) as `make helm` installs
// it; without it every test that renders skips. The API-server tests also
// need KUBEBUILDER_ASSETS (set by `make test`); the kustomize comparison uses
// the kubectl in it.
package chart

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/portmux/portmux/test/apiserver"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.yaml from the chart")

const (
	repoRoot = "../.."
	// The release every case is rendered as: with these, the default values
	// give the names and namespace of config/default.
	releaseName      = "portmux"
	releaseNamespace = "portmux-system"
	// A namespace that enforces the restricted Pod Security profile, where
	// the pod template is created (dry run) as a Pod.
	restrictedNamespace = "psa-restricted"
)

var chartDir = filepath.Join(repoRoot, "charts", "portmux")

// valuesCase is one way of installing the chart.
type valuesCase struct {
	name   string
	values string // a values file, or "" for the defaults
}

var valuesCases = []valuesCase{
	{name: "default"},
	{name: "custom", values: "testdata/values-custom.yaml"},
	{name: "minimal", values: "testdata/values-minimal.yaml"},
}

var (
	helmPath   string
	helmSkip   string // why tests that need helm skip ("" when helm is there)
	apiSkip    string // why tests that need the API server skip
	testEnv    *envtest.Environment
	k8s        client.Client
	kubeconfig string // a kubeconfig file for the envtest API server
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	helmPath, helmSkip = findHelm()
	switch {
	case helmSkip != "":
		apiSkip = helmSkip
	case os.Getenv("KUBEBUILDER_ASSETS") == "":
		apiSkip = "KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)"
	default:
		stop, err := startAPIServer()
		defer stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "starting envtest with the chart's CRDs: %v\n", err)
			return 1
		}
	}
	return m.Run()
}

// findHelm returns the helm binary `make helm` installs (or $HELM), or why
// there is none.
func findHelm() (path, skip string) {
	if p := os.Getenv("HELM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Sprintf("HELM=%s: %v", p, err)
		}
		return p, ""
	}
	mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		return "", fmt.Sprintf("reading the Makefile for HELM_VERSION: %v", err)
	}
	v := regexp.MustCompile(`(?m)^HELM_VERSION \?= (\S+)$`).FindSubmatch(mk)
	if v == nil {
		return "", "no HELM_VERSION in the Makefile"
	}
	p, _ := filepath.Abs(filepath.Join(repoRoot, "bin", "helm-"+string(v[1])))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Sprintf("helm is not in ./bin (%s): run `make helm`", filepath.Base(p))
	}
	return p, ""
}

func startAPIServer() (stop func(), err error) {
	stop = func() {}
	logf.SetLogger(logr.Discard())
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return stop, err
		}
	}
	testEnv = &envtest.Environment{
		Scheme: scheme,
		// The chart's own copy, so that what Helm would install is what the
		// API server checks.
		// The Gateway API's CRDs are the cluster's (the chart never
		// installs them); values that create a GatewayClass need them.
		CRDDirectoryPaths:     []string{filepath.Join(chartDir, "crds"), filepath.Join(repoRoot, "config", "gateway-api")},
		CRDs:                  []*apiextensionsv1.CustomResourceDefinition{serviceMonitorCRD()},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	stop = func() {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
		if kubeconfig != "" {
			_ = os.RemoveAll(filepath.Dir(kubeconfig))
		}
	}
	if err != nil {
		return stop, err
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return stop, err
	}
	ctx := context.Background()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}},
		// The namespaces values-custom.yaml watches (RoleBindings go there).
		{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}},
		{ObjectMeta: metav1.ObjectMeta{Name: restrictedNamespace, Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
		}}},
	} {
		if err := k8s.Create(ctx, ns); err != nil {
			return stop, fmt.Errorf("creating namespace %s: %w", ns.Name, err)
		}
	}
	dir, err := os.MkdirTemp("", "portmux-chart-")
	if err != nil {
		return stop, err
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	_, err = apiserver.WriteAdminKubeconfig(testEnv, "chart-test", kubeconfig)
	return stop, err
}

// serviceMonitorCRD is a stand-in for the Prometheus Operator's CRD: the
// real one is not vendored here, so the API server checks the
// ServiceMonitor's apiVersion, kind and metadata, and its spec only for
// being an object.
func serviceMonitorCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "monitoring.coreos.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Plural: "servicemonitors", Singular: "servicemonitor", Kind: "ServiceMonitor", ListKind: "ServiceMonitorList",
			},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", XPreserveUnknownFields: ptr.To(true)},
					},
				}},
			}},
		},
	}
}

func requireHelm(t *testing.T) {
	t.Helper()
	if helmSkip != "" {
		t.Skip(helmSkip)
	}
}

func requireAPIServer(t *testing.T) {
	t.Helper()
	if apiSkip != "" {
		t.Skip(apiSkip)
	}
}

// helm runs the pinned helm with its configuration and caches in a
// temporary directory, and returns stdout; stderr goes into the error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	requireHelm(t)
	home := t.TempDir()
	cmd := exec.Command(helmPath, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfigOrNone(home),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &helmError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// helmError is a failed helm run; stderr holds helm's own message.
type helmError struct {
	args   []string
	err    error
	stderr string
}

func (e *helmError) Error() string {
	return fmt.Sprintf("helm %s: %v\n%s", strings.Join(e.args, " "), e.err, e.stderr)
}

// kubeconfigOrNone keeps helm away from the user's cluster: it gets the
// envtest API server or nothing.
func kubeconfigOrNone(dir string) string {
	if kubeconfig != "" {
		return kubeconfig
	}
	return filepath.Join(dir, "no-kubeconfig")
}

// render runs helm template for a values case (plus extra arguments) and
// returns the YAML and the decoded objects.
func render(t *testing.T, c valuesCase, extra ...string) (string, []*unstructured.Unstructured) {
	t.Helper()
	args := []string{"template", releaseName, chartDir, "--namespace", releaseNamespace}
	if c.values != "" {
		args = append(args, "--values", c.values)
	}
	out, err := helm(t, append(args, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out, decode(t, out)
}

// decode splits a YAML stream into objects, skipping empty documents.
func decode(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	for {
		var m map[string]any
		if err := d.Decode(&m); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("decoding rendered YAML: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the object of that kind and name, or nil.
func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// mustFind is find, failing the test when the object is missing.
func mustFind(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := find(objs, kind, name)
	if o == nil {
		t.Fatalf("no %s %q among the rendered objects: %v", kind, name, names(objs))
	}
	return o
}

// into converts an unstructured object into a typed one.
func into[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	v := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return v
}

func names(objs []*unstructured.Unstructured) []string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetKind()+"/"+o.GetName())
	}
	return s
}
