package v1alpha1_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/portmux/portmux/api/v1alpha1"
)

func TestCRDIsEstablished(t *testing.T) {
	requireAPIServer(t)

	var crd apiextensionsv1.CustomResourceDefinition
	if err := env.Client.Get(t.Context(), types.NamespacedName{Name: "portmuxes.portmux.dev"}, &crd); err != nil {
		t.Fatalf("getting the CRD: %v", err)
	}
	for _, want := range []apiextensionsv1.CustomResourceDefinitionConditionType{
		apiextensionsv1.Established, apiextensionsv1.NamesAccepted,
	} {
		if !crdCondition(&crd, want) {
			t.Errorf("CRD condition %s is not True: %+v", want, crd.Status.Conditions)
		}
	}
	if got, want := crd.Spec.Names.ShortNames, []string{"pmx"}; !slices.Equal(got, want) {
		t.Errorf("short names = %v, want %v", got, want)
	}
	if got, want := crd.Spec.Names.Categories, []string{"portmux"}; !slices.Equal(got, want) {
		t.Errorf("categories = %v, want %v", got, want)
	}
}

func crdCondition(crd *apiextensionsv1.CustomResourceDefinition, typ apiextensionsv1.CustomResourceDefinitionConditionType) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == typ {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

// TestSamplesAreAccepted creates every config/samples/portmux_v1alpha1_*.yaml
// as it is, so a sample can never drift from what the API server accepts.
func TestSamplesAreAccepted(t *testing.T) {
	ns := newNamespace(t)

	files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "portmux_v1alpha1_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found %d samples in config/samples, want at least 5", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { createAsItIs(t, ns, file) })
	}
}

// TestUserGuideExamplesAreAccepted creates every PortMux the user guide
// shows (docs/examples/*/*.yaml), in-cluster and serve forms alike, as it
// is: serve refuses what the API server would, so both must pass.
func TestUserGuideExamplesAreAccepted(t *testing.T) {
	// The two forms of a setup share a name: a namespace for each form.
	ns := map[string]string{"portmux.yaml": newNamespace(t), "serve.yaml": newNamespace(t)}

	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "examples", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("found %d files in docs/examples, want at least 8", len(files))
	}
	for _, file := range files {
		form := filepath.Base(file)
		if ns[form] == "" {
			t.Fatalf("%s: the guide's files are portmux.yaml and serve.yaml", file)
		}
		t.Run(filepath.Base(filepath.Dir(file))+"/"+form, func(t *testing.T) { createAsItIs(t, ns[form], file) })
	}
}

// createAsItIs creates the PortMux in file in namespace ns, failing the
// test when the API server refuses it.
func createAsItIs(t *testing.T, ns, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var pm v1alpha1.PortMux
	if err := yaml.UnmarshalStrict(data, &pm); err != nil {
		t.Fatalf("decoding %s as a PortMux: %v", file, err)
	}
	if gvk := pm.GroupVersionKind(); gvk != v1alpha1.GroupVersion.WithKind("PortMux") {
		t.Fatalf("%s holds a %v, want a PortMux", file, gvk)
	}
	if !strings.HasPrefix(string(data), "#") {
		t.Errorf("%s does not start with a comment saying what it shows", file)
	}
	pm.Namespace = ns
	if err := env.Client.Create(t.Context(), &pm); err != nil {
		t.Fatalf("the API server refused %s: %v", file, err)
	}
}

// TestPrinterColumns reads `kubectl get portmux` the way kubectl does: as a
// server-side Table, built by the API server from the CRD's
// additionalPrinterColumns.
func TestPrinterColumns(t *testing.T) {
	ns := newNamespace(t)

	pm := &v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: ns},
		Spec: v1alpha1.PortMuxSpec{Listeners: []v1alpha1.Listener{
			{Name: "public", Port: ptr.To[int32](443)},
			{Name: "inner", TLS: &v1alpha1.ListenerTLS{CertificateRefs: []v1alpha1.SecretRef{{Name: "cert"}}}},
			{Name: "alt", Port: ptr.To[int32](8443)},
		}},
	}
	if err := env.Client.Create(t.Context(), pm); err != nil {
		t.Fatalf("creating the PortMux: %v", err)
	}

	table := getTable(t, ns)
	wantColumns := []string{"Name", "Ports", "Ready", "Reason", "Age"}
	var gotColumns []string
	for _, c := range table.ColumnDefinitions {
		gotColumns = append(gotColumns, c.Name)
	}
	if !slices.Equal(gotColumns, wantColumns) {
		t.Fatalf("columns = %v, want %v", gotColumns, wantColumns)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(table.Rows))
	}
	cells := table.Rows[0].Cells
	// The API server renders a CRD column from the FIRST value its JSONPath
	// finds (apiextensions-apiserver tableconvertor: results[0][0]), so the
	// column reads status.ports, which the controller fills in; before any
	// status it is empty.
	if got := cells[1]; got != nil {
		t.Errorf("Ports before any status = %#v, want none", got)
	}
	if got := cells[2]; got != nil {
		t.Errorf("Ready before any status = %#v, want none", got)
	}

	meta.SetStatusCondition(&pm.Status.Conditions, metav1.Condition{
		Type: "Ready", Status: metav1.ConditionFalse, Reason: "PortInUse",
		Message: "port 443 is held by PortMux other/edge", ObservedGeneration: pm.Generation,
	})
	meta.SetStatusCondition(&pm.Status.Conditions, metav1.Condition{
		Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted",
		ObservedGeneration: pm.Generation,
	})
	pm.Status.Ports = "443,8443"
	if err := env.Client.Status().Update(t.Context(), pm); err != nil {
		t.Fatalf("writing status: %v", err)
	}
	cells = getTable(t, ns).Rows[0].Cells
	if got, want := cells[1], any("443,8443"); got != want {
		t.Errorf("Ports = %#v, want %#v", got, want)
	}
	if got, want := cells[2], any("False"); got != want {
		t.Errorf("Ready = %#v, want %#v", got, want)
	}
	if got, want := cells[3], any("PortInUse"); got != want {
		t.Errorf("Reason = %#v, want %#v", got, want)
	}

	t.Run("kubectl", func(t *testing.T) {
		kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
		if _, err := os.Stat(kubectl); err != nil {
			t.Skipf("no kubectl in KUBEBUILDER_ASSETS: %v", err)
		}
		kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(kubeconfig, env.Environment.KubeConfig, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", kubeconfig,
			"get", "pmx", "-n", ns, "-o", "wide").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl get: %v\n%s", err, out)
		}
		t.Logf("kubectl get pmx -o wide:\n%s", out)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 2 {
			t.Fatalf("want a header and one row, got:\n%s", out)
		}
		if got, want := strings.Fields(lines[0]), []string{"NAME", "PORTS", "READY", "REASON", "AGE"}; !slices.Equal(got, want) {
			t.Errorf("header = %v, want %v", got, want)
		}
		if got := strings.Fields(lines[1]); len(got) != 5 || got[0] != "edge" || got[1] != "443,8443" || got[2] != "False" || got[3] != "PortInUse" {
			t.Errorf("row = %v, want [edge 443,8443 False PortInUse AGE]", got)
		}
	})
}

// getTable lists the PortMux objects in ns as a meta.k8s.io/v1 Table, with
// the Accept header kubectl sends.
func getTable(t *testing.T, ns string) *metav1.Table {
	t.Helper()
	httpClient, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimSuffix(env.Config.Host, "/") + path.Join("/apis", v1alpha1.GroupVersion.Group, v1alpha1.GroupVersion.Version, "namespaces", ns, "portmuxes")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("listing PortMux objects as a Table: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("listing PortMux objects as a Table: %s %v\n%s", resp.Status, err, body)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		t.Fatalf("decoding the Table: %v\n%s", err, body)
	}
	if table.Kind != "Table" {
		t.Fatalf("got a %q, want a Table:\n%s", table.Kind, body)
	}
	return &table
}
