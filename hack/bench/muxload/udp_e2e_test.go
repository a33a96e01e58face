package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// startUDPDataplane serves the contract's UDP routes with an in-process
// dataplane; misroute sends DNS sessions to the udp-any backend.
func startUDPDataplane(t *testing.T, b *backends, misroute bool) string {
	t.Helper()
	dns := b.addr(routeUDPDNS)
	if misroute {
		dns = b.addr(routeUDPAny)
	}
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	snap := &snapshot.Snapshot{Listeners: []snapshot.Listener{{
		Name: "bench/udp", Address: "127.0.0.1:0", Transport: snapshot.UDP, ProbeTimeout: 2 * time.Second,
		Routes: []snapshot.Route{
			{Name: "dns", Match: snapshot.Match{Protocol: snapshot.DNS}, Backend: &snapshot.Backend{Name: "dns", Endpoints: []string{dns}}},
			{Name: "any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "any", Endpoints: []string{b.addr(routeUDPAny)}}},
		},
	}}}
	if errs := srv.Apply(snap); len(errs) > 0 {
		t.Fatal(errs)
	}
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	return srv.Addr("bench/udp").String()
}

func shortUDPRun(t *testing.T, b *backends, addr string, scenarios ...string) ([]result, error) {
	t.Helper()
	var out, log bytes.Buffer
	r := &runner{
		opt: options{
			peer: "dataplane", rep: 1, addr: addr, scenarios: scenarios, routes: udpRouteNames,
			pid: os.Getpid(), workers: 4, warmup: 50 * time.Millisecond, d: 200 * time.Millisecond,
			udpSize: 1200, udpWindow: 4, udpSetup: 40,
			idleBatch: 8, idleSettle: 10 * time.Millisecond, idleTimeout: 10 * time.Second,
			readyTimeout: 5 * time.Second, drainTimeout: 5 * time.Second, logDir: t.TempDir(),
		},
		proc: procFS{root: "/proc"}, backends: b,
		target: target{mux: addr, backends: b}, out: &out, log: &log,
	}
	err := r.runAll()
	t.Log(log.String())
	rs, derr := decodeResults(&out)
	if derr != nil {
		t.Fatal(derr)
	}
	return rs, err
}

func TestEndToEndUDP(t *testing.T) {
	b, err := startBackends(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	addr := startUDPDataplane(t, b, false)
	rs, err := shortUDPRun(t, b, addr, "udp-rate-2", "udp-small-1", "udp-setup", "udp-idle-20")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		t.Fatalf("%d results, want 4", len(rs))
	}
	for _, r := range rs {
		if !r.RouteOK || r.Err != "" || !r.MuxAlive || len(r.ProbedRoutes) != 2 {
			t.Errorf("%s: route ok %v (%s), error %q, alive %v, probed %v", r.Scenario, r.RouteOK, r.RouteErr, r.Err, r.MuxAlive, r.ProbedRoutes)
		}
		if r.Routed[routeUDPAny] < r.ClientOK || r.Routed[routeUDPDNS] != 0 || r.Routed[routeSSH] != 0 {
			t.Errorf("%s: routed %v, client completed %d", r.Scenario, r.Routed, r.ClientOK)
		}
	}
	if rs[0].DgramPerS <= 0 || rs[0].Sessions != 2 || rs[0].DgramSize != 1200 || rs[1].DgramSize != smallDatagram {
		t.Errorf("rate runs: %+v, %+v", rs[0], rs[1])
	}
	if rs[2].Sessions != 40 || rs[2].SessionsPerS <= 0 || rs[3].Idle != 20 {
		t.Errorf("set-up held %d sessions at %.0f/s, idle %d", rs[2].Sessions, rs[2].SessionsPerS, rs[3].Idle)
	}
}

func TestEndToEndUDPCatchesMisrouting(t *testing.T) {
	b, err := startBackends(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	addr := startUDPDataplane(t, b, true)
	rs, err := shortUDPRun(t, b, addr, "udp-setup")
	if err == nil || len(rs) != 1 || rs[0].RouteOK {
		t.Fatalf("misrouting went unnoticed: %v, %+v", err, rs)
	}
	if got := rs[0].RouteErr; !strings.HasPrefix(got, "probe udp-dns: misrouted: 1 to udp-any") {
		t.Errorf("route error %q", got)
	}
}
