package docs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// The user guide (docs/user-guide.md) shows, for each setup, two PortMux
// files from docs/examples/SETUP/: portmux.yaml (in a cluster, Service
// backends) and serve.yaml (`portmux serve`, address backends). test/e2e's
// TestUserGuide runs each serve.yaml against real servers and clients;
// these tests keep what a reader copies equal to what it runs.

var guideExamples = filepath.Join(root, "docs", "examples")

// TestUserGuideShowsTheExamples: every example file is shown in the guide,
// byte for byte, as a fenced block right under a line that ends naming it
// ("`docs/examples/sslh/serve.yaml`:"), and every file the guide names
// that way exists.
func TestUserGuideShowsTheExamples(t *testing.T) {
	guide, err := os.ReadFile(filepath.Join(root, "docs", "user-guide.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?m)`(docs/examples/[^`]+)`:\\n\\n?```[a-z]*\\n((?s:.*?))^```$")
	shown := map[string]string{}
	for _, m := range block.FindAllStringSubmatch(string(guide), -1) {
		if _, twice := shown[m[1]]; twice {
			t.Errorf("the guide shows %s twice", m[1])
		}
		shown[m[1]] = m[2]
	}
	files := globAtLeast(t, filepath.Join(guideExamples, "*", "*.yaml"), 8, "example files in docs/examples, want a portmux.yaml and a serve.yaml for each of 4 setups")
	for _, f := range files {
		rel := filepath.ToSlash(strings.TrimPrefix(f, root+string(filepath.Separator)))
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := shown[rel]
		switch {
		case !ok:
			t.Errorf("the guide does not show %s (a line ending \"`%s`:\" and a fenced block under it)", rel, rel)
		case got != string(want):
			t.Errorf("the guide's copy of %s differs from the file:\n--- guide\n%s--- file\n%s", rel, got, want)
		}
		delete(shown, rel)
	}
	for rel := range shown {
		t.Errorf("the guide shows %s, which is not a file in docs/examples", rel)
	}
	if !strings.Contains(string(guide), "docs/examples/secret.sh") {
		t.Errorf("the guide does not say how to write the Secrets (docs/examples/secret.sh)")
	}
}

// TestUserGuideFormsAgree: each setup's two files are valid PortMuxes and
// the same one but for where traffic goes: portmux.yaml names Services
// only, serve.yaml addresses only, and everything else (listeners,
// certificates, matches, order, modes, timeouts, tunnel auth and
// protocols) is equal. So the in-cluster form, which no test runs with
// traffic, behaves as the serve form that TestUserGuide runs.
func TestUserGuideFormsAgree(t *testing.T) {
	dirs := globAtLeast(t, filepath.Join(guideExamples, "*", "serve.yaml"), 4, "setups in docs/examples, want 4")
	for _, serveFile := range dirs {
		setup := filepath.Base(filepath.Dir(serveFile))
		t.Run(setup, func(t *testing.T) {
			cluster := readPortMux(t, filepath.Join(filepath.Dir(serveFile), "portmux.yaml"))
			serve := readPortMux(t, serveFile)
			if cluster.Name != serve.Name {
				t.Errorf("portmux.yaml names the PortMux %q, serve.yaml %q", cluster.Name, serve.Name)
			}
			blank(t, "portmux.yaml", &cluster, true)
			blank(t, "serve.yaml", &serve, false)
			if !reflect.DeepEqual(cluster.Spec, serve.Spec) {
				c, _ := yaml.Marshal(cluster.Spec)
				s, _ := yaml.Marshal(serve.Spec)
				t.Errorf("the two forms differ in more than their backends:\n--- portmux.yaml\n%s--- serve.yaml\n%s", c, s)
			}
		})
	}
}

// readPortMux decodes a file holding one PortMux, strictly, and validates
// it as `portmux serve` does.
func readPortMux(t *testing.T, path string) v1alpha1.PortMux {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "#") {
		t.Errorf("%s does not start with a comment saying what it replaces", path)
	}
	var pm v1alpha1.PortMux
	if err := yaml.UnmarshalStrict(b, &pm); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if pm.GroupVersionKind() != v1alpha1.GroupVersion.WithKind("PortMux") {
		t.Fatalf("%s holds a %v, want a PortMux", path, pm.GroupVersionKind())
	}
	if errs := compile.Validate(&pm); len(errs) > 0 {
		t.Fatalf("%s is not valid: %v", path, errs.ToAggregate())
	}
	return pm
}

// blank removes where each backend and tunnel target points, after
// checking it is a Service (services) or an address (!services).
func blank(t *testing.T, file string, pm *v1alpha1.PortMux, services bool) {
	t.Helper()
	check := func(what string, svc *v1alpha1.ServicePort, addr string) {
		if services && (svc == nil || addr != "") {
			t.Errorf("%s: %s is not a Service: the in-cluster form names Services", file, what)
		}
		if !services && (svc != nil || addr == "") {
			t.Errorf("%s: %s is not an address: the serve form names addresses", file, what)
		}
	}
	for i := range pm.Spec.Routes {
		r := &pm.Spec.Routes[i]
		if b := r.Backend; b != nil {
			check("route "+r.Name+"'s backend", b.Service, b.Address)
			b.Service, b.Address = nil, ""
		}
		if tn := r.Tunnel; tn != nil {
			for j := range tn.Allow {
				a := &tn.Allow[j]
				check("a target of route "+r.Name, a.Service, a.Address)
				a.Service, a.Address = nil, ""
			}
		}
	}
}

// globAtLeast returns the files pattern matches, or fails t if there are
// fewer than n: "found N " what.
func globAtLeast(t *testing.T, pattern string, n int, what string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < n {
		t.Fatalf("found %d %s", len(files), what)
	}
	return files
}
