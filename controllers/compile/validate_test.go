package compile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/test/specs"
)

// Validate is all the checking `portmux serve` gets: its files never meet
// the API server's schema and CEL rules. The table it shares with the CRD's
// tests, test/specs/portmux.yaml, lists for each invalid spec the errors
// Validate must give, in order, each containing the given text, which starts
// with the field path; each valid spec must pass.

func TestValidateRefuses(t *testing.T) {
	refused, _ := specs.Load(t)
	for _, row := range refused {
		if row.Serve == nil {
			continue // refused by the API server alone
		}
		t.Run(row.Name, func(t *testing.T) {
			errs := validateSpec(t, row.Spec)
			problem := validateProblem(errs, row.Serve)
			switch {
			case problem != "" && row.Bug != "":
				t.Skipf("known bug: %s\n%s", row.Bug, problem)
			case problem != "":
				t.Error(problem)
			case row.Bug != "":
				t.Errorf("Validate now gives %q: the bug is fixed, remove the row's bug mark", errs)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	_, accepted := specs.Load(t)
	for _, row := range accepted {
		t.Run(row.Name, func(t *testing.T) {
			if problem := validateProblem(validateSpec(t, row.Spec), nil); problem != "" {
				t.Error(problem)
			}
		})
	}
}

// TestValidateAcceptsTheSamples checks the PortMux samples shipped in
// config/samples: `portmux serve` must take what `kubectl apply` takes; and
// `make serve`'s config/serve/demo.yaml and the benchmarks' serve files,
// so a benchmark never measures a mux that refused its configuration.
func TestValidateAcceptsTheSamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "portmux_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no samples found in config/samples")
	}
	paths = append(paths, filepath.Join("..", "..", "config", "serve", "demo.yaml"))
	bench, err := filepath.Glob(filepath.Join("..", "..", "hack", "bench", "peers", "portmux*.yaml"))
	if err != nil || len(bench) < 2 {
		t.Fatalf("found %d portmux*.yaml in hack/bench/peers (%v), want the TCP and the UDP one", len(bench), err)
	}
	paths = append(paths, bench...)
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var pm v1alpha1.PortMux
			if err := sigsyaml.UnmarshalStrict(data, &pm); err != nil {
				t.Fatal(err)
			}
			if errs := compile.Validate(&pm); errs != nil {
				t.Errorf("Validate(%s) = %q, want nil", p, errs)
			}
		})
	}
}

// validateSpec runs Validate on a PortMux with the given spec (YAML or
// JSON), as `portmux serve` decodes it.
func validateSpec(t *testing.T, spec []byte) []string {
	t.Helper()
	var pm v1alpha1.PortMux
	pm.Name, pm.Namespace = "edge", "infra"
	if err := sigsyaml.UnmarshalStrict(spec, &pm.Spec); err != nil {
		t.Fatalf("spec does not decode: %v", err)
	}
	return errorStrings(compile.Validate(&pm))
}

// errorStrings renders errs as `portmux serve` and conditions show them.
func errorStrings(errs field.ErrorList) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

// validateProblem says how errs differs from want (substrings, in order).
func validateProblem(errs, want []string) string {
	if len(want) == 0 {
		if errs != nil {
			return "Validate = " + quoteAll(errs) + ", want nil"
		}
		return ""
	}
	if len(errs) != len(want) {
		return "Validate = " + quoteAll(errs) + ", want errors containing " + quoteAll(want)
	}
	for i := range want {
		if !strings.Contains(errs[i], want[i]) {
			return "Validate = " + quoteAll(errs) + ", want errors containing " + quoteAll(want)
		}
	}
	return ""
}

func quoteAll(s []string) string {
	if len(s) == 0 {
		return "[]"
	}
	return "[\n\t" + strings.Join(s, "\n\t") + "\n]"
}

// TestLegacyProxyProtocolBool: a PortMux stored with the boolean
// proxyProtocol of an earlier version of the API still decodes (else the
// controller could list no PortMux at all), and is refused with a message
// that says what to write.
func TestLegacyProxyProtocolBool(t *testing.T) {
	for _, v := range []string{"true", "false"} {
		var pm v1alpha1.PortMux
		doc := `{"apiVersion":"portmux.dev/v1alpha1","kind":"PortMux","metadata":{"name":"old"},
			"spec":{"listeners":[{"name":"public","port":443,"proxyProtocol":` + v + `}]}}`
		if err := json.Unmarshal([]byte(doc), &pm); err != nil {
			t.Fatalf("proxyProtocol: %s does not decode: %v", v, err)
		}
		errs := errorStrings(compile.Validate(&pm))
		if len(errs) != 1 || !strings.HasPrefix(errs[0], "spec.listeners[0].proxyProtocol.trustedCIDRs: Required value: ") || !strings.Contains(errs[0], "no longer accepted") {
			t.Errorf("proxyProtocol: %s: Validate = %q, want one error naming trustedCIDRs", v, errs)
		}
	}
	var pm v1alpha1.PortMux
	if err := json.Unmarshal([]byte(`{"spec":{"listeners":[{"name":"p","port":1,"proxyProtocol":{"trustedCIDRs":["10.0.0.0/8"]}}]}}`), &pm); err != nil ||
		pm.Spec.Listeners[0].ProxyProtocol == nil || len(pm.Spec.Listeners[0].ProxyProtocol.TrustedCIDRs) != 1 {
		t.Errorf("the object form: %+v, %v", pm.Spec.Listeners[0].ProxyProtocol, err)
	}
}
