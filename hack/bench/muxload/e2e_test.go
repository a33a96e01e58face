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

// startBackendsT starts the contract's backends on kernel-picked ports and
// closes them when the test ends.
func startBackendsT(t *testing.T) *backends {
	t.Helper()
	b, err := startBackends(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	return b
}

// serveListener serves l with an in-process PortMux dataplane and returns
// the address it listens on (l's address is a kernel-picked loopback port).
func serveListener(t *testing.T, l snapshot.Listener) string {
	t.Helper()
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	if errs := srv.Apply(&snapshot.Snapshot{Listeners: []snapshot.Listener{l}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	return srv.Addr(l.Name).String()
}

// startDataplane serves the contract's routes with an in-process PortMux
// dataplane on a kernel-picked loopback port. misroute sends a route's
// connections to another route's backend: a mux that routes wrongly.
func startDataplane(t *testing.T, b *backends, misroute map[string]string) string {
	t.Helper()
	to := func(route string) *snapshot.Backend {
		if other, ok := misroute[route]; ok {
			route = other
		}
		return &snapshot.Backend{Name: route, Endpoints: []string{b.addr(route)}}
	}
	sshTo, bTo := to(routeSSH), to(routeTLSB)
	return serveListener(t, snapshot.Listener{
		Name: "bench/public", Address: "127.0.0.1:0", ProbeTimeout: 2 * time.Second,
		Routes: []snapshot.Route{
			{Name: "ssh", Match: snapshot.Match{Protocol: snapshot.SSH}, Backend: sshTo},
			{Name: "b", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{sniB}}, Backend: bTo},
			{Name: "a", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{sniA}}, Backend: to(routeTLSA)},
			{Name: "any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: to(routePlain)},
		},
	})
}

// startUDPDataplane serves the contract's UDP routes with an in-process
// dataplane; misroute sends DNS sessions to the udp-any backend.
func startUDPDataplane(t *testing.T, b *backends, misroute bool) string {
	t.Helper()
	dns := b.addr(routeUDPDNS)
	if misroute {
		dns = b.addr(routeUDPAny)
	}
	return serveListener(t, snapshot.Listener{
		Name: "bench/udp", Address: "127.0.0.1:0", Transport: snapshot.UDP, ProbeTimeout: 2 * time.Second,
		Routes: []snapshot.Route{
			{Name: "dns", Match: snapshot.Match{Protocol: snapshot.DNS}, Backend: &snapshot.Backend{Name: "dns", Endpoints: []string{dns}}},
			{Name: "any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "any", Endpoints: []string{b.addr(routeUDPAny)}}},
		},
	})
}

// shortRun runs scenarios for a fraction of a second against addr, which
// implements routes, and returns their results.
func shortRun(t *testing.T, b *backends, addr string, routes []string, scenarios ...string) ([]result, error) {
	t.Helper()
	var out, log bytes.Buffer
	r := &runner{
		opt: options{
			peer: "dataplane", rep: 1, addr: addr, scenarios: scenarios, routes: routes,
			pid:     os.Getpid(), // the dataplane runs in this process
			workers: 4, warmup: 50 * time.Millisecond, d: 200 * time.Millisecond,
			tputBytes: 4 << 20, tputStreams: 2, tputTimeout: 10 * time.Second,
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

func TestEndToEndRoutesAndCounts(t *testing.T) {
	b := startBackendsT(t)
	addr := startDataplane(t, b, nil)
	rs, err := shortRun(t, b, addr, routeNames, "conn-ssh", "lat-tls", "tput", "idle-20")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		t.Fatalf("%d results, want 4", len(rs))
	}
	wantRoute := map[string]string{"conn-ssh": routeSSH, "lat-tls": routeTLSA, "tput": routeSSH, "idle-20": routeSSH}
	for _, r := range rs {
		want := wantRoute[r.Scenario]
		if !r.RouteOK || r.Err != "" || !r.MuxAlive {
			t.Errorf("%s: route ok %v, error %q, alive %v", r.Scenario, r.RouteOK, r.Err, r.MuxAlive)
		}
		if len(r.ProbedRoutes) != len(routeNames) {
			t.Errorf("%s: probed %v, want every route", r.Scenario, r.ProbedRoutes)
		}
		// Every connection that got its echo reached the right backend,
		// and no backend got one it should not have.
		if r.ClientOK == 0 || r.Routed[want] < r.ClientOK || r.Routed[want] > r.ClientConns {
			t.Errorf("%s: %s received %d; client completed %d of %d", r.Scenario, want, r.Routed[want], r.ClientOK, r.ClientConns)
		}
		for route, n := range r.Routed {
			if route != want && n != 0 {
				t.Errorf("%s: %d connections reached %s", r.Scenario, n, route)
			}
		}
		if r.Conns+r.Failed > r.ClientConns {
			t.Errorf("%s: %d+%d in the window, more than the %d opened", r.Scenario, r.Conns, r.Failed, r.ClientConns)
		}
	}
	if rs[2].Bytes != 4<<20 || rs[3].Idle != 20 {
		t.Errorf("tput moved %d bytes, idle held %d", rs[2].Bytes, rs[3].Idle)
	}
}

func TestEndToEndCatchesMisrouting(t *testing.T) {
	for _, c := range []struct {
		name     string
		misroute map[string]string
		scenario string
		wantErr  string
	}{
		// The run's own connections land on the wrong backend.
		{"counts", map[string]string{routeSSH: routePlain}, "conn-ssh", "misrouted: "},
		// lat-tls itself goes where it should (SNI a); only the probe of
		// b after the run can tell that this mux sends b to a.
		{"probes", map[string]string{routeTLSB: routeTLSA}, "lat-tls", "probe tls-b: misrouted: 1 to tls-a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := startBackendsT(t)
			addr := startDataplane(t, b, c.misroute)
			rs, err := shortRun(t, b, addr, routeNames, c.scenario)
			if err == nil || len(rs) != 1 || rs[0].RouteOK {
				t.Fatalf("misrouting went unnoticed: %v, %+v", err, rs)
			}
			if got := rs[0].RouteErr; !strings.HasPrefix(got, c.wantErr) {
				t.Errorf("route error %q, want %q...", got, c.wantErr)
			}
		})
	}
}

func TestEndToEndUDP(t *testing.T) {
	b := startBackendsT(t)
	addr := startUDPDataplane(t, b, false)
	rs, err := shortRun(t, b, addr, udpRouteNames, "udp-rate-2", "udp-small-1", "udp-setup", "udp-idle-20")
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
	b := startBackendsT(t)
	addr := startUDPDataplane(t, b, true)
	rs, err := shortRun(t, b, addr, udpRouteNames, "udp-setup")
	if err == nil || len(rs) != 1 || rs[0].RouteOK {
		t.Fatalf("misrouting went unnoticed: %v, %+v", err, rs)
	}
	if got := rs[0].RouteErr; !strings.HasPrefix(got, "probe udp-dns: misrouted: 1 to udp-any") {
		t.Errorf("route error %q", got)
	}
}
