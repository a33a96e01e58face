package compile_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// Golden tests: each testdata/NAME.in.yaml is compiled and its snapshot and
// statuses rendered as YAML, compared with testdata/NAME.out.yaml.
//
//	go test ./controllers/compile -run TestGolden -update
//
// rewrites the .out.yaml files from the current output (review the diff).
//
// An input file starts with a comment saying what the case shows (copied to
// the top of the output) and holds, as YAML documents:
//
//   - PortMux (portmux.dev/v1alpha1), Secret, Service (v1) and EndpointSlice
//     (discovery.k8s.io/v1) objects, decoded strictly. EndpointSlices belong
//     to the Service named by their kubernetes.io/service-name label, as the
//     controller's gatherer finds them.
//   - at most one `kind: CompileOptions` document, which only this test
//     understands: bindAddress, allowAddressBackends, maxConnections and
//     portPolicy (a list of --port-policy values) of compile.Input, and
//     bindErrors, the errors the dataplane would return for listeners, by
//     snapshot listener name.
//
// Status is computed at goldenNow on PortMuxes with an empty status (unless
// the input carries one). The output never holds key or token bytes: a
// certificate shows where it came from and the names in its leaf, a token
// whether it is set.
var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the current output")

// goldenNow is the time Status is computed at.
var goldenNow = metav1.NewTime(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))

// knownBugs are cases whose .out.yaml holds the output compile should
// produce but does not yet, each with the bug. They are skipped while the
// output differs (-update leaves them alone) and fail once it matches, so
// that the entry is removed with the fix.
var knownBugs = map[string]string{}

// compileOptions is the test-only document that sets compile.Input's options.
type compileOptions struct {
	Kind                 string            `json:"kind"`
	BindAddress          string            `json:"bindAddress,omitempty"`
	AllowAddressBackends bool              `json:"allowAddressBackends,omitempty"`
	BindErrors           map[string]string `json:"bindErrors,omitempty"`
	// PortPolicy holds --port-policy values.
	PortPolicy []string `json:"portPolicy,omitempty"`
	// MaxConnections is the cap across all listeners.
	MaxConnections int `json:"maxConnections,omitempty"`
}

// goldenCase is a golden input file, read: TestGolden's and
// TestGatewayGolden's.
type goldenCase struct {
	header   string // the input's leading comment
	in       compile.Input
	bindErrs map[string]error
}

// newGoldenCase is a case with no object read yet.
func newGoldenCase() *goldenCase {
	return &goldenCase{
		in: compile.Input{
			Secrets:        map[types.NamespacedName]*corev1.Secret{},
			Services:       map[types.NamespacedName]*corev1.Service{},
			EndpointSlices: map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		},
		bindErrs: map[string]error{},
	}
}

// addOptions adds what both options documents can set: --port-policy
// values and the errors the dataplane would return for listeners.
func (c *goldenCase) addOptions(t *testing.T, path string, portPolicy []string, bindErrors map[string]string) {
	t.Helper()
	for _, v := range portPolicy {
		r, err := compile.ParsePortRule(v)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		c.in.PortPolicy = append(c.in.PortPolicy, r)
	}
	for k, v := range bindErrors {
		c.bindErrs[k] = errors.New(v)
	}
}

func TestGolden(t *testing.T) {
	for _, inPath := range goldenInputs(t, "testdata", 12) {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := loadGoldenCase(t, inPath)
			got, problems := renderGolden(t, c)
			outPath := strings.TrimSuffix(inPath, ".in.yaml") + ".out.yaml"
			if bug, known := knownBugs[name]; known {
				d := lineDiff(readGolden(t, outPath), string(got))
				if d == "" && len(problems) == 0 {
					t.Fatalf("the output now matches %s: the bug is fixed, remove %q from knownBugs", outPath, name)
				}
				t.Skipf("known bug: %s\nproblems: %q\n--- %s\n+++ got\n%s", bug, problems, outPath, d)
			}
			compareGolden(t, outPath, got, problems)
		})
	}
}

// goldenInputs is the *.in.yaml files in dir; there must be at least min.
func goldenInputs(t *testing.T, dir string, min int) []string {
	t.Helper()
	ins, err := filepath.Glob(filepath.Join(dir, "*.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) < min {
		t.Fatalf("found %d golden cases in %s, want at least %d", len(ins), dir, min)
	}
	return ins
}

// readGolden is the content of the golden file outPath.
func readGolden(t *testing.T, outPath string) string {
	t.Helper()
	want, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	return string(want)
}

// compareGolden writes got to outPath under -update; otherwise it reports
// each problem and any difference between got and outPath.
func compareGolden(t *testing.T, outPath string, got []byte, problems problems) {
	t.Helper()
	if *update {
		if err := os.WriteFile(outPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want := readGolden(t, outPath)
	for _, p := range problems {
		t.Error(p)
	}
	if d := lineDiff(want, string(got)); d != "" {
		t.Errorf("output differs from %s (-want +got; run with -update if the change is intended):\n%s", outPath, d)
	}
}

// TestGoldenIsDeterministic compiles every case twice, with the PortMuxes in
// reverse order the second time: the output must not depend on the order
// objects are listed in, nor on map iteration.
func TestGoldenIsDeterministic(t *testing.T) {
	for _, inPath := range goldenInputs(t, "testdata", 0) {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		if _, known := knownBugs[name]; known {
			continue
		}
		if name == "duplicate-portmux" {
			continue // which copy stands is the order, by definition
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := loadGoldenCase(t, inPath)
			first, _ := renderGolden(t, c)
			slices.Reverse(c.in.PortMuxes)
			second, _ := renderGolden(t, c)
			if d := lineDiff(string(first), string(second)); d != "" {
				t.Errorf("output depends on the order of the PortMuxes (-forward +reversed):\n%s", d)
			}
		})
	}
}

func loadGoldenCase(t *testing.T, path string) *goldenCase {
	t.Helper()
	c := newGoldenCase()
	options := 0
	c.header = readGoldenDocs(t, path, func(n int, gvk string, strict func(any)) {
		switch gvk {
		case " ": // a comment-only document
		case " CompileOptions":
			var o compileOptions
			strict(&o)
			if options++; options > 1 {
				t.Fatalf("%s: more than one CompileOptions document", path)
			}
			c.in.BindAddress, c.in.AllowAddressBackends, c.in.MaxConnections = o.BindAddress, o.AllowAddressBackends, o.MaxConnections
			c.addOptions(t, path, o.PortPolicy, o.BindErrors)
		default:
			if !addCoreDoc(t, path, n, gvk, strict, &c.in) {
				t.Fatalf("%s: document %d: unexpected %s", path, n, gvk)
			}
		}
	})
	if len(c.in.PortMuxes) == 0 {
		t.Fatalf("%s: no PortMux", path)
	}
	return c
}

// readGoldenDocs reads the golden input file path: it returns the comment
// it must start with and hands each YAML document, numbered from 1, to doc
// with its "apiVersion kind" and a strict decoder.
func readGoldenDocs(t *testing.T, path string, doc func(n int, gvk string, strict func(any))) (header string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() && strings.HasPrefix(sc.Text(), "#") {
		header += sc.Text() + "\n"
	}
	if header == "" {
		t.Fatalf("%s: start with a comment saying what the case shows", path)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return header
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, n, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := sigsyaml.Unmarshal(raw, &head); err != nil {
			t.Fatalf("%s: document %d: %v", path, n, err)
		}
		doc(n, head.APIVersion+" "+head.Kind, func(into any) {
			t.Helper()
			if err := sigsyaml.UnmarshalStrict(raw, into); err != nil {
				t.Fatalf("%s: document %d (%s): %v", path, n, head.Kind, err)
			}
		})
	}
}

// decode is the document strict decodes into a T.
func decode[T any](strict func(any)) T {
	var o T
	strict(&o)
	return o
}

// addCoreDoc adds a PortMux, Secret, Service or EndpointSlice document to
// in; it reports false for any other gvk.
func addCoreDoc(t *testing.T, path string, n int, gvk string, strict func(any), in *compile.Input) bool {
	t.Helper()
	switch gvk {
	case v1alpha1.GroupVersion.String() + " PortMux":
		in.PortMuxes = append(in.PortMuxes, decode[v1alpha1.PortMux](strict))
	case "v1 Secret":
		s := decode[corev1.Secret](strict)
		in.Secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = &s
	case "v1 Service":
		s := decode[corev1.Service](strict)
		in.Services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = &s
	case "discovery.k8s.io/v1 EndpointSlice":
		es := decode[discoveryv1.EndpointSlice](strict)
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			t.Fatalf("%s: document %d: EndpointSlice %s has no %s label", path, n, es.Name, discoveryv1.LabelServiceName)
		}
		key := types.NamespacedName{Namespace: es.Namespace, Name: svc}
		in.EndpointSlices[key] = append(in.EndpointSlices[key], &es)
	default:
		return false
	}
	return true
}

// problems collects broken invariants that the rendered output cannot show.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// renderGolden compiles the case and renders the snapshot and statuses.
func renderGolden(t *testing.T, c *goldenCase) ([]byte, problems) {
	t.Helper()
	var pr problems
	out := compileChecked(&pr, c.in)

	g := goldenOutput{Snapshot: renderSnapshot(&pr, out.Snapshot), Status: []goldenStatus{}}
	// One status per namespace/name, of the first PortMux listed with it.
	pms := sortedByName(c.in.PortMuxes)
	pms = slices.CompactFunc(pms, func(a, b v1alpha1.PortMux) bool { return a.Namespace == b.Namespace && a.Name == b.Name })
	for i := range pms {
		pm := &pms[i]
		key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
		res := out.Results[key]
		if res == nil {
			pr.add("no Result for PortMux %s", key)
			continue
		}
		st := compile.Status(pm, res, c.bindErrs, goldenNow)
		checkConditionMeta(&pr, key.String(), pm.Generation, st.Conditions)
		gs := goldenStatus{
			PortMux:            strings.TrimPrefix(key.String(), "/"),
			ObservedGeneration: st.ObservedGeneration,
			Ports:              st.Ports,
			Conditions:         renderConditions(st.Conditions),
			Listeners:          []goldenListenerStatus{},
		}
		for _, ls := range st.Listeners {
			checkConditionMeta(&pr, key.String()+" listener "+ls.Name, pm.Generation, ls.Conditions)
			if (ls.Port != nil) != (ls.Protocol != "") {
				pr.add("%s listener %s: port %v with protocol %q; want a protocol exactly when there is a port", key, ls.Name, ls.Port, ls.Protocol)
			}
			gls := goldenListenerStatus{
				Name: ls.Name, Port: ls.Port, AttachedRoutes: ls.AttachedRoutes, Conditions: renderConditions(ls.Conditions),
			}
			if ls.Protocol != v1alpha1.TransportTCP {
				gls.Protocol = string(ls.Protocol)
			}
			gs.Listeners = append(gs.Listeners, gls)
		}
		g.Status = append(g.Status, gs)
	}
	if len(out.Results) != len(g.Status) {
		pr.add("Compile returned %d Results for %d PortMuxes", len(out.Results), len(g.Status))
	}

	return encodeGolden(t, c.header, "TestGolden", g), pr
}

// encodeGolden is a golden output file: header, a line saying that test
// -update generated it, then g as YAML.
func encodeGolden(t *testing.T, header, test string, g any) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(header)
	b.WriteString("#\n# Generated by `go test ./controllers/compile -run " + test + " -update` from the .in.yaml file.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(g); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// compileChecked compiles in, adding to pr when Compile changes its input
// (it is the controller's cache) or returns a snapshot that fails its own
// invariants.
func compileChecked(pr *problems, in compile.Input) *compile.Output {
	before := deepCopyInput(in)
	out := compile.Compile(in)
	if d := inputDiff(before, in); d != "" {
		pr.add("Compile modified its input: %s", d)
	}
	if err := out.Snapshot.Validate(); err != nil {
		pr.add("the snapshot fails its own invariants: %v", err)
	}
	return out
}

// checkConditionMeta checks what the output leaves out: every condition
// carries the generation and the time of this computation.
func checkConditionMeta(pr *problems, what string, gen int64, conds []metav1.Condition) {
	for _, c := range conds {
		if c.ObservedGeneration != gen {
			pr.add("%s: condition %s has observedGeneration %d, want %d", what, c.Type, c.ObservedGeneration, gen)
		}
		if !c.LastTransitionTime.Equal(&goldenNow) {
			pr.add("%s: condition %s has lastTransitionTime %v, want %v", what, c.Type, c.LastTransitionTime, goldenNow)
		}
	}
}

// The rendered form. Field order is the order printed.

type goldenOutput struct {
	Snapshot goldenSnapshot `yaml:"snapshot"`
	Status   []goldenStatus `yaml:"status"`
}

type goldenSnapshot struct {
	MaxConnections int              `yaml:"maxConnections,omitempty"`
	Listeners      []goldenListener `yaml:"listeners"`
}

type goldenListener struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address,omitempty"`
	// Transport is printed for UDP only: TCP is the default, and the
	// cases written before UDP listeners existed keep their output.
	Transport     string        `yaml:"transport,omitempty"`
	Internal      bool          `yaml:"internal,omitempty"`
	Limits        goldenLimits  `yaml:"limits,flow"`
	ProxyProtocol *goldenProxy  `yaml:"proxyProtocol,omitempty"`
	TLS           *goldenTLS    `yaml:"tls,omitempty"`
	Routes        []goldenRoute `yaml:"routes"`
}

type goldenProxy struct {
	TrustedCIDRs []string `yaml:"trustedCIDRs,flow"`
}

type goldenLimits struct {
	ProbeTimeout               string `yaml:"probeTimeout"`
	MaxProbeBytes              int    `yaml:"maxProbeBytes"`
	MaxConnections             int    `yaml:"maxConnections"`
	MaxConnectionsPerClient    int    `yaml:"maxConnectionsPerClient"`
	MaxConnectionRatePerClient int    `yaml:"maxConnectionRatePerClient"`
}

type goldenTLS struct {
	ALPN         []string            `yaml:"alpn,flow,omitempty"`
	Certificates []goldenCertificate `yaml:"certificates"`
}

type goldenCertificate struct {
	Source     string   `yaml:"source"`
	CommonName string   `yaml:"commonName,omitempty"`
	DNSNames   []string `yaml:"dnsNames,flow,omitempty"`
	// KeyPair says the certificate comes with its private key and a parsed
	// leaf; nothing of the key is printed.
	KeyPair bool `yaml:"keyPair"`
}

type goldenRoute struct {
	Name        string         `yaml:"name"`
	Match       goldenMatch    `yaml:"match,flow"`
	IdleTimeout string         `yaml:"idleTimeout,omitempty"`
	Backend     *goldenBackend `yaml:"backend,omitempty"`
	Listener    string         `yaml:"listener,omitempty"`
	Tunnel      *goldenTunnel  `yaml:"tunnel,omitempty"`
}

type goldenMatch struct {
	Protocol   string   `yaml:"protocol"`
	SNI        []string `yaml:"sni,omitempty"`
	ALPN       []string `yaml:"alpn,omitempty"`
	Host       []string `yaml:"host,omitempty"`
	PathPrefix string   `yaml:"pathPrefix,omitempty"`
	Prefix     string   `yaml:"prefix,omitempty"`
	Regex      string   `yaml:"regex,omitempty"`
}

type goldenBackend struct {
	Name          string   `yaml:"name"`
	Mode          string   `yaml:"mode,omitempty"`
	ProxyProtocol int      `yaml:"proxyProtocol,omitempty"`
	DialTimeout   string   `yaml:"dialTimeout"`
	Endpoints     []string `yaml:"endpoints,flow"`
}

type goldenTunnel struct {
	// Token is "none" (no auth), "set", or "empty: refuses every client"
	// (auth is required but its token could not be read).
	Token          string         `yaml:"token"`
	AllowedOrigins []string       `yaml:"allowedOrigins,flow,omitempty"`
	Allow          []goldenTarget `yaml:"allow"`
}

type goldenTarget struct {
	Names   []string      `yaml:"names,flow"`
	UDP     bool          `yaml:"udp,omitempty"`
	Backend goldenBackend `yaml:"backend"`
}

type goldenStatus struct {
	PortMux            string                 `yaml:"portmux"`
	ObservedGeneration int64                  `yaml:"observedGeneration"`
	Ports              string                 `yaml:"ports,omitempty"`
	Conditions         []goldenCondition      `yaml:"conditions"`
	Listeners          []goldenListenerStatus `yaml:"listeners"`
}

type goldenListenerStatus struct {
	Name string `yaml:"name"`
	Port *int32 `yaml:"port,omitempty"`
	// Protocol is printed for UDP only, so that the cases written before
	// UDP listeners existed kept their output; a test checks that every
	// listener with a port has one.
	Protocol       string            `yaml:"protocol,omitempty"`
	AttachedRoutes int32             `yaml:"attachedRoutes"`
	Conditions     []goldenCondition `yaml:"conditions"`
}

type goldenCondition struct {
	Type    string `yaml:"type"`
	Status  string `yaml:"status"`
	Reason  string `yaml:"reason"`
	Message string `yaml:"message"`
}

func renderSnapshot(pr *problems, s *snapshot.Snapshot) goldenSnapshot {
	g := goldenSnapshot{MaxConnections: s.MaxConnections, Listeners: []goldenListener{}}
	names := map[string]bool{}
	for _, l := range s.Listeners {
		if names[l.Name] {
			pr.add("snapshot listener name %q is not unique", l.Name)
		}
		names[l.Name] = true
		if l.Transport != "" && l.Transport != snapshot.TCP && l.Transport != snapshot.UDP {
			pr.add("listener %s has transport %q", l.Name, l.Transport)
		}
		gl := goldenListener{
			Name:     l.Name,
			Address:  l.Address,
			Internal: l.Internal(),
			Limits: goldenLimits{
				ProbeTimeout: l.ProbeTimeout.String(), MaxProbeBytes: l.MaxProbeBytes, MaxConnections: l.MaxConnections,
				MaxConnectionsPerClient: l.MaxConnectionsPerClient, MaxConnectionRatePerClient: l.MaxConnectionRatePerClient,
			},
			Routes: []goldenRoute{},
		}
		if l.UDP() {
			gl.Transport = string(l.Transport)
		}
		if pp := l.ProxyProtocol; pp != nil {
			gl.ProxyProtocol = &goldenProxy{TrustedCIDRs: []string{}}
			for _, p := range pp.TrustedCIDRs {
				gl.ProxyProtocol.TrustedCIDRs = append(gl.ProxyProtocol.TrustedCIDRs, p.String())
			}
		}
		if l.TLS != nil {
			gl.TLS = &goldenTLS{ALPN: l.TLS.ALPN, Certificates: []goldenCertificate{}}
			for _, c := range l.TLS.Certificates {
				gc := goldenCertificate{Source: c.Source}
				if c.Certificate != nil {
					gc.KeyPair = c.Certificate.PrivateKey != nil && c.Certificate.Leaf != nil && len(c.Certificate.Certificate) > 0
					if leaf := c.Certificate.Leaf; leaf != nil {
						gc.CommonName, gc.DNSNames = leaf.Subject.CommonName, leaf.DNSNames
					}
				}
				gl.TLS.Certificates = append(gl.TLS.Certificates, gc)
			}
		}
		for _, r := range l.Routes {
			gr := goldenRoute{Name: r.Name, Match: renderMatch(r.Match), Listener: r.Listener}
			if r.IdleTimeout != 0 {
				gr.IdleTimeout = r.IdleTimeout.String()
			}
			actions := 0
			if r.Listener != "" {
				actions++
			}
			if r.Backend != nil {
				actions++
				b := renderBackend(r.Backend)
				gr.Backend = &b
			}
			if r.Tunnel != nil {
				actions++
				gr.Tunnel = renderTunnel(r.Tunnel)
			}
			if actions != 1 {
				pr.add("route %s of listener %s has %d actions, want exactly 1", r.Name, l.Name, actions)
			}
			gl.Routes = append(gl.Routes, gr)
		}
		g.Listeners = append(g.Listeners, gl)
	}
	if !slices.IsSortedFunc(s.Listeners, func(a, b snapshot.Listener) int { return strings.Compare(a.Name, b.Name) }) {
		pr.add("snapshot listeners are not sorted by name")
	}
	return g
}

func renderMatch(m snapshot.Match) goldenMatch {
	g := goldenMatch{Protocol: string(m.Protocol), SNI: m.SNI, ALPN: m.ALPN, Host: m.Host, PathPrefix: m.PathPrefix, Prefix: string(m.Prefix)}
	if m.Regex != nil {
		g.Regex = m.Regex.String()
	}
	return g
}

func renderBackend(b *snapshot.Backend) goldenBackend {
	return goldenBackend{
		Name:          b.Name,
		Mode:          string(b.Mode),
		ProxyProtocol: b.ProxyProtocol,
		DialTimeout:   b.DialTimeout.String(),
		Endpoints:     append([]string{}, b.Endpoints...),
	}
}

func renderTunnel(tn *snapshot.Tunnel) *goldenTunnel {
	g := &goldenTunnel{Token: "none", AllowedOrigins: tn.AllowedOrigins, Allow: []goldenTarget{}}
	switch {
	case tn.Token != nil && len(tn.Token) == 0:
		g.Token = "empty: refuses every client"
	case len(tn.Token) > 0:
		g.Token = "set"
	}
	for _, a := range tn.Allow {
		g.Allow = append(g.Allow, goldenTarget{Names: a.Names, UDP: a.UDP, Backend: renderBackend(&a.Backend)})
	}
	return g
}

func renderConditions(conds []metav1.Condition) []goldenCondition {
	out := []goldenCondition{}
	for _, c := range conds {
		out = append(out, goldenCondition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
	}
	return out
}

// deepCopyInput copies what Compile is given, to check it leaves it alone.
func deepCopyInput(in compile.Input) compile.Input {
	out := in
	out.PortMuxes = deepCopies(in.PortMuxes)
	out.Secrets = map[types.NamespacedName]*corev1.Secret{}
	for k, v := range in.Secrets {
		out.Secrets[k] = v.DeepCopy()
	}
	out.Services = map[types.NamespacedName]*corev1.Service{}
	for k, v := range in.Services {
		out.Services[k] = v.DeepCopy()
	}
	out.EndpointSlices = map[types.NamespacedName][]*discoveryv1.EndpointSlice{}
	for k, list := range in.EndpointSlices {
		for _, es := range list {
			out.EndpointSlices[k] = append(out.EndpointSlices[k], es.DeepCopy())
		}
	}
	return out
}

// sortedByName is a copy of list sorted by namespace/name; objects with
// the same name stay in the order listed.
func sortedByName[T any, P interface {
	*T
	GetNamespace() string
	GetName() string
}](list []T) []T {
	out := slices.Clone(list)
	key := func(o *T) string { return P(o).GetNamespace() + "/" + P(o).GetName() }
	slices.SortStableFunc(out, func(a, b T) int { return strings.Compare(key(&a), key(&b)) })
	return out
}

// deepCopies copies every object of list with its generated DeepCopy.
func deepCopies[T any, P interface {
	*T
	DeepCopy() *T
}](list []T) []T {
	var out []T
	for i := range list {
		out = append(out, *P(&list[i]).DeepCopy())
	}
	return out
}

// inputDiff says which part of two inputs differs.
func inputDiff(a, b compile.Input) string {
	for _, part := range []struct {
		name string
		a, b any
	}{
		{"PortMuxes", a.PortMuxes, b.PortMuxes},
		{"Secrets", a.Secrets, b.Secrets},
		{"Services", a.Services, b.Services},
		{"EndpointSlices", a.EndpointSlices, b.EndpointSlices},
	} {
		if !equality.Semantic.DeepEqual(part.a, part.b) {
			return part.name + " changed"
		}
	}
	return ""
}

// lineDiff returns a line diff of want and got ("-" want, "+" got, with two
// lines of context), or "" when they are equal.
func lineDiff(want, got string) string {
	if want == got {
		return ""
	}
	a, b := strings.Split(want, "\n"), strings.Split(got, "\n")
	// Longest common subsequence table; golden files are small.
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var lines []line
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			lines = append(lines, line{' ', a[i]})
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			lines = append(lines, line{'+', b[j]})
			j++
		default:
			lines = append(lines, line{'-', a[i]})
			i++
		}
	}
	const context = 2
	var out strings.Builder
	last := -1
	for k, l := range lines {
		near := false
		for d := max(0, k-context); d <= min(len(lines)-1, k+context); d++ {
			if lines[d].op != ' ' {
				near = true
				break
			}
		}
		if !near {
			continue
		}
		if last >= 0 && k > last+1 {
			out.WriteString("@@\n")
		}
		fmt.Fprintf(&out, "%c %s\n", l.op, l.text)
		last = k
	}
	return out.String()
}
