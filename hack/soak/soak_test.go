package main

import (
	"bytes"
	"runtime/pprof"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

func TestMetricLine(t *testing.T) {
	name, v, ok := metricLine(`portmux_connections_total{listener="soak/public",outcome="no_route",protocol="",route=""} 42`)
	if !ok || v != 42 || label(name, "outcome") != "no_route" || label(name, "listener") != "soak/public" {
		t.Errorf("metricLine = %q %v %v", name, v, ok)
	}
	for _, line := range []string{"", "# HELP go_goroutines x", "go_goroutines notanumber"} {
		if _, _, ok := metricLine(line); ok {
			t.Errorf("metricLine(%q) parsed", line)
		}
	}
}

// TestHeapAlloc reads HeapAlloc from a heap profile in the form
// portmux's /debug/pprof/heap?debug=1 serves: this process's own.
func TestHeapAlloc(t *testing.T) {
	var profile bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&profile, 1); err != nil {
		t.Fatal(err)
	}
	if n, err := heapAlloc(profile.Bytes()); err != nil || n <= 0 {
		t.Errorf("heapAlloc = %d, %v; want this process's heap", n, err)
	}
	if _, err := heapAlloc([]byte("heap profile: 0: 0 [0: 0] @ heap/1048576\n")); err == nil {
		t.Error("heapAlloc of a profile without MemStats: no error")
	}
}

// TestConfigIsAValidPortMux: what the soak serves is a PortMux that
// portmux serve accepts, with the defaults under test left alone.
func TestConfigIsAValidPortMux(t *testing.T) {
	var pm v1alpha1.PortMux
	if err := yaml.UnmarshalStrict([]byte(config(8443, &backends{ssh: "127.0.0.1:1", tls: "127.0.0.1:2", http: "127.0.0.1:3", echo: "127.0.0.1:4"})), &pm); err != nil {
		t.Fatal(err)
	}
	if errs := compile.Validate(&pm); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	l := pm.Spec.Listeners[0]
	if l.MaxConnections != nil || l.MaxConnectionsPerClient != nil || l.MaxConnectionRatePerClient != nil || l.ProbeTimeout != nil {
		t.Errorf("the soak must run on the default limits: %+v", l)
	}
}

func TestReportMarkdown(t *testing.T) {
	r := &report{
		Limit:     512 << 20,
		Baseline:  map[string]kindSummary{"ssh": {Ops: 10, Success: 1, P50: 1, P99: 2}},
		Attack:    map[string]kindSummary{"ssh": {Ops: 10, Success: 0.9, Failures: 1, P50: 2, P99: 5, LastError: "boom"}},
		Attackers: map[string]attackSummary{"slowloris": {Clients: 2, Connects: 4, Statuses: map[string]int64{"431": 3}}},
		Peak:      sample{PeakRSS: 256 << 20},
	}
	md := r.markdown()
	for _, want := range []string{"| ssh | 10 | 100.00% | 1.00 / 2.00 | 10 | 90.00% | 2.00 / 5.00 | +3.00 | 0 |", "last error under attack: boom", "| slowloris | 2 | 4 | 0 | 0 | 431 3 |", "(50% of it)"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
