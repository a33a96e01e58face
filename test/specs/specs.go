// Package specs holds the PortMux specs that the API server (the CRD's
// schema and CEL rules) and compile.Validate (all the checking
// `portmux serve` gets) must refuse or accept, with what each side says: one
// table for both, in portmux.yaml.
package specs

import (
	_ "embed"
	"encoding/json"
	"testing"

	"sigs.k8s.io/yaml"
)

//go:embed portmux.yaml
var table []byte

// Refused is a spec that is invalid.
type Refused struct {
	Name string
	// Spec is the PortMux's spec, as JSON.
	Spec json.RawMessage
	// CRD is the API server's causes, exactly, in any order, as kubectl
	// prints them; nil if the API server accepts the spec.
	CRD []string
	// Serve is what Validate's errors contain, in order; nil if Validate
	// is not to judge the spec.
	Serve []string
	// Bug, when set, says why Validate does not give Serve yet.
	Bug string
}

// Accepted is a valid spec.
type Accepted struct {
	Name string
	Spec json.RawMessage
}

type file struct {
	NotChecked string
	Refused    []Refused
	Accepted   []Accepted
}

// Load returns the table's refused and accepted specs, or fails t if the
// table is malformed: a name used twice, a refused spec neither side
// refuses.
func Load(t testing.TB) ([]Refused, []Accepted) {
	t.Helper()
	var f file
	if err := yaml.UnmarshalStrict(table, &f); err != nil {
		t.Fatalf("portmux.yaml: %v", err)
	}
	names := map[string]bool{}
	unique := func(name string) {
		if names[name] {
			t.Fatalf("portmux.yaml: two specs named %q", name)
		}
		names[name] = true
	}
	for _, r := range f.Refused {
		unique(r.Name)
		if r.CRD == nil && r.Serve == nil {
			t.Fatalf("portmux.yaml: %q: a refused spec needs crd or serve", r.Name)
		}
	}
	for _, a := range f.Accepted {
		unique(a.Name)
	}
	return f.Refused, f.Accepted
}
