package chart

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Every object the chart renders, for every values case, is accepted by a
// real kube-apiserver (v1.37) with a server-side dry run: schema, defaulting,
// validation and admission, nothing stored. The pod template is also
// created, as a Pod, in a namespace that enforces the restricted Pod
// Security profile. The CRDs are the chart's crds/, installed by envtest.
func TestDryRunOnAPIServer(t *testing.T) {
	requireAPIServer(t)
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			_, objs := render(t, c)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			ctx := context.Background()
			for _, o := range objs {
				if err := k8s.Create(ctx, o.DeepCopy(), client.DryRunAll); err != nil {
					t.Errorf("the API server refuses %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			for _, o := range objs {
				if o.GetKind() != "Deployment" {
					continue
				}
				dep := into[appsv1.Deployment](t, o)
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{
						Name: dep.Name, Namespace: restrictedNamespace,
						Labels: dep.Spec.Template.Labels, Annotations: dep.Spec.Template.Annotations,
					},
					Spec: dep.Spec.Template.Spec,
				}
				if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
					t.Errorf("the pod template is refused in a namespace enforcing the restricted Pod Security profile: %v", err)
				}
			}
		})
	}
}

// NOTES.txt renders and tells the user what to apply next; the PortMux it
// shows is valid.
func TestNotes(t *testing.T) {
	requireAPIServer(t)
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"install", releaseName, chartDir, "--namespace", releaseNamespace, "--dry-run=client"}
			if c.values != "" {
				args = append(args, "--values", c.values)
			}
			out, err := helm(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			_, notes, ok := strings.Cut(out, "\nNOTES:\n")
			if !ok {
				t.Fatalf("no NOTES in the output of helm install --dry-run:\n%s", out)
			}
			for _, want := range []string{"kubectl get pmx", "kind: PortMux", "service.ports"} {
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES do not mention %q:\n%s", want, notes)
				}
			}
			_, sample, ok := strings.Cut(notes, "<<'YAML'\n")
			if ok {
				sample, _, ok = strings.Cut(sample, "\n     YAML\n")
			}
			if !ok {
				t.Fatalf("no sample PortMux (a here-document between <<'YAML' and YAML) in the NOTES:\n%s", notes)
			}
			var lines []string
			for l := range strings.SplitSeq(sample, "\n") {
				lines = append(lines, strings.TrimPrefix(l, "     "))
			}
			objs := decode(t, strings.Join(lines, "\n"))
			if len(objs) != 1 || objs[0].GetKind() != "PortMux" {
				t.Fatalf("the NOTES' sample is %v, want one PortMux", names(objs))
			}
			objs[0].SetNamespace("default")
			if err := k8s.Create(context.Background(), objs[0], client.DryRunAll); err != nil {
				t.Errorf("the API server refuses the NOTES' sample PortMux: %v", err)
			}
		})
	}
}

// `kubectl apply -k config/default` and the chart with its default values
// (release portmux in portmux-system) install the same objects, with the
// same names, the same container arguments, ports, probes and security
// context, and the same RBAC rules and CRDs. Only labels and label
// selectors may differ (the chart adds Helm's standard labels, e.g.
// app.kubernetes.io/instance), and config/default also creates the
// namespace, labelled for the restricted Pod Security profile.
func TestKustomizeMatchesChart(t *testing.T) {
	requireHelm(t)
	kubectl := kubectlPath(t)
	cmd := exec.Command(kubectl, "kustomize", filepath.Join(repoRoot, "config", "default"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v\n%s", err, stderrOf(err))
	}
	kust := decode(t, string(out))
	_, chart := render(t, valuesCases[0], "--include-crds")

	ns := mustFind(t, kust, "Namespace", releaseNamespace)
	if ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("config/default's namespace labels %v: want pod-security.kubernetes.io/enforce=restricted", ns.GetLabels())
	}
	kust = slices.DeleteFunc(kust, func(o *unstructured.Unstructured) bool { return o.GetKind() == "Namespace" })

	key := func(o *unstructured.Unstructured) string {
		return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
	}
	keys := func(objs []*unstructured.Unstructured) []string {
		var s []string
		for _, o := range objs {
			s = append(s, key(o))
		}
		slices.Sort(s)
		return s
	}
	if k, h := keys(kust), keys(chart); !slices.Equal(k, h) {
		t.Fatalf("different objects:\nconfig/default: %q\nchart:          %q", k, h)
	}
	for _, k := range kust {
		h := find(chart, k.GetKind(), k.GetName())
		a, b := withoutLabels(k), withoutLabels(h)
		for _, d := range diffValues(".", a.Object, b.Object) {
			t.Errorf("%s differs (config/default, then the chart): %s", key(k), d)
		}
	}
}

// withoutLabels drops what may differ between the two installs: labels,
// label selectors and the pod template's labels.
func withoutLabels(o *unstructured.Unstructured) *unstructured.Unstructured {
	o = o.DeepCopy()
	unstructured.RemoveNestedField(o.Object, "metadata", "labels")
	switch o.GetKind() {
	case "Deployment":
		unstructured.RemoveNestedField(o.Object, "spec", "selector")
		unstructured.RemoveNestedField(o.Object, "spec", "template", "metadata", "labels")
	case "Service", "PodDisruptionBudget":
		unstructured.RemoveNestedField(o.Object, "spec", "selector")
	}
	return o
}

// diffValues lists the paths where two decoded YAML values differ.
func diffValues(path string, a, b any) []string {
	if reflect.DeepEqual(a, b) {
		return nil
	}
	switch a := a.(type) {
	case map[string]any:
		if b, ok := b.(map[string]any); ok {
			var d []string
			for _, k := range slices.Sorted(maps.Keys(a)) {
				d = append(d, diffValues(path+k+".", a[k], b[k])...)
			}
			for _, k := range slices.Sorted(maps.Keys(b)) {
				if _, ok := a[k]; !ok {
					d = append(d, diffValues(path+k+".", nil, b[k])...)
				}
			}
			return d
		}
	case []any:
		if b, ok := b.([]any); ok && len(a) == len(b) {
			var d []string
			for i := range a {
				d = append(d, diffValues(path+strconv.Itoa(i)+".", a[i], b[i])...)
			}
			return d
		}
	}
	return []string{fmt.Sprintf("%s %v != %v", strings.TrimSuffix(path, "."), a, b)}
}

// kubectlPath is the kubectl of the envtest assets (the version the tests
// target), else the one on PATH.
func kubectlPath(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		p := filepath.Join(dir, "kubectl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl in KUBEBUILDER_ASSETS or on PATH: run `make test`")
	}
	return p
}

func stderrOf(err error) string {
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
