package compile_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestValidateSaysTheCRDsRules: every CEL rule of the CRD has its message
// among Validate's ruleMessages, word for word, and every ruleMessage is a
// rule's; so a rule added to the CRD, or reworded there, fails here until
// `portmux serve` says the same. The rules in perItem sit on a list
// because CEL must see the whole spec; Validate names the item instead.
func TestValidateSaysTheCRDsRules(t *testing.T) {
	perItem := []string{
		// validateAttachment: NotFound on spec.routes[i].listeners[j].
		"each name in a route's listeners must be a listener declared in spec.listeners: add the listener or fix the name",
		// validateHandOff: NotFound or Invalid on spec.routes[i].listener.
		"a route's listener action must name an internal listener: one declared in spec.listeners without a port",
		// validateListeners: Duplicate on spec.listeners[i].port.
		"two listeners have the same port and protocol: give each its own port, or make one TCP and the other UDP",
		// validateAttachment: Invalid on spec.routes[i].listeners[j].
		"a route's match.protocol must be one its listeners' protocol carries: quic, wireguard and dns on UDP listeners, ssh, tls, http, websocket, socks5 and timeout on TCP listeners, openvpn, bytes and any on both",
		// validateAttachment: Invalid on spec.routes[i].match.protocol.
		"a route that leaves out listeners attaches to every listener with a port whose protocol carries its match.protocol, and none does: add a UDP listener for quic, wireguard and dns, a TCP one for the others, or name the route's listeners",
		// validateOnUDP: Invalid on spec.routes[i].backend.proxyProtocol.
		"backend.proxyProtocol applies only to routes on TCP listeners: UDP sessions reach their backend without a PROXY header; name the route's TCP listeners in listeners",
	}
	crd := loadCRD(t)
	var rules []string
	for _, v := range crd.Spec.Versions {
		rules = append(rules, celMessages(v.Schema.OpenAPIV3Schema)...)
	}
	ours := stringConsts(t, "ruleMessage", "validate.go")
	for _, m := range rules {
		if !slices.Contains(ours, m) && !slices.Contains(perItem, m) {
			t.Errorf("the CRD's rule %q is not a ruleMessage of Validate", m)
		}
	}
	for _, m := range append(ours, perItem...) {
		if !slices.Contains(rules, m) {
			t.Errorf("%q is no rule's message in the CRD", m)
		}
	}
}

// celMessages returns the messages of the CEL rules in s and below it.
func celMessages(s *apiextensionsv1.JSONSchemaProps) []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, r := range s.XValidations {
		out = append(out, r.Message)
	}
	for _, p := range s.Properties {
		out = append(out, celMessages(&p)...)
	}
	if s.Items != nil {
		out = append(out, celMessages(s.Items.Schema)...)
	}
	return out
}

// loadCRD reads the generated CRD, which the API server enforces.
func loadCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "portmux.dev_portmuxes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := sigsyaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	return &crd
}

// stringConsts returns the values of the constants of the named type
// declared in the Go files at paths, in the order they are declared; each
// must be a string literal, and there must be one at least.
func stringConsts(t *testing.T, typeName string, paths ...string) []string {
	t.Helper()
	fset := token.NewFileSet()
	var out []string
	for _, path := range paths {
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != typeName {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: a %s constant that is not a string literal", fset.Position(v.Pos()), typeName)
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, s)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s constants in %s", typeName, strings.Join(paths, ", "))
	}
	return out
}
