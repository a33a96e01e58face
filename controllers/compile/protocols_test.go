package compile_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// TestProtocolsAgree checks every place that lists the protocols a route
// can match against the router's table (route.Protocols): the API's
// Protocol constants and the CRD's enum (in the same order, which the API
// server's "supported values" message shows), the snapshot's Protocol
// constants, and what the snapshot's decoder accepts. compile converts an
// API protocol to the snapshot's by its name, so a protocol added in one
// place and not in another would be refused, or dropped, somewhere in
// between.
func TestProtocolsAgree(t *testing.T) {
	var table []string
	for _, p := range route.Protocols() {
		table = append(table, string(p))
	}

	if api := protocolConsts(t, filepath.Join("..", "..", "api", "v1alpha1")); !slices.Equal(api, table) {
		t.Errorf("api/v1alpha1's Protocol constants are %q; the router's table has %q", api, table)
	}
	if enum := crdProtocolEnum(t); !slices.Equal(enum, table) {
		t.Errorf("the CRD's match.protocol enum is %q; the router's table has %q", enum, table)
	}
	snap := protocolConsts(t, filepath.Join("..", "..", "dataplane", "snapshot"))
	if !slices.Equal(slices.Sorted(slices.Values(snap)), slices.Sorted(slices.Values(table))) {
		t.Errorf("dataplane/snapshot's Protocol constants are %q; the router's table has %q", snap, table)
	}
	for _, p := range append(slices.Clone(table), "gopher") {
		known := p != "gopher"
		if err := decodesWith(snapshot.Protocol(p)); (err == nil) != known {
			t.Errorf("snapshot.Decode of a route of protocol %q: %v, want accepted %v", p, err, known)
		}
	}
}

// protocolConsts returns the values of the constants of type Protocol
// declared in the Go package in dir, in the order they are declared.
func protocolConsts(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(path string) bool { return strings.HasSuffix(path, "_test.go") })
	return stringConsts(t, "Protocol", files...)
}

// crdProtocolEnum returns the enum of match.protocol in the generated CRD,
// which the API server enforces.
func crdProtocolEnum(t *testing.T) []string {
	t.Helper()
	crd := loadCRD(t)
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("the CRD has %d versions; this test reads one", len(crd.Spec.Versions))
	}
	s := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	for _, name := range []string{"spec", "routes", "match", "protocol"} {
		if s.Items != nil {
			s = s.Items.Schema
		}
		p, ok := s.Properties[name]
		if !ok {
			t.Fatalf("the CRD's schema has no %s", name)
		}
		s = &p
	}
	var out []string
	for _, v := range s.Enum {
		var p string
		if err := sigsyaml.Unmarshal(v.Raw, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// decodesWith reports whether a snapshot with one route of protocol p
// crosses the wire.
func decodesWith(p snapshot.Protocol) error {
	transport := snapshot.TCP
	if !p.FitsTransport(snapshot.TCP) {
		transport = snapshot.UDP
	}
	snap := &snapshot.Snapshot{Listeners: []snapshot.Listener{{
		Name: "ns/pm/public", Address: ":443", Transport: transport, ProbeTimeout: time.Second,
		Routes: []snapshot.Route{{
			Name:    "ns/pm/r",
			Match:   snapshot.Match{Protocol: p},
			Backend: &snapshot.Backend{Name: "b", Endpoints: []string{"127.0.0.1:1"}, Mode: snapshot.ModeTCP},
		}},
	}}}
	wire, err := snapshot.Encode(snap)
	if err != nil {
		return err
	}
	_, err = snapshot.Decode(wire)
	return err
}
