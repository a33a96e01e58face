//go:build linux

package main

import (
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

// shortUDPRun runs UDP scenarios for a fraction of a second against addr
// and returns their results.
func shortUDPRun(t *testing.T, b *backends, addr string, scenarios ...string) ([]result, error) {
	t.Helper()
	opt := shortOptions(t, addr, udpRouteNames, scenarios...)
	opt.udpSize, opt.udpWindow, opt.udpSetup = 1200, 4, 40
	return runShort(t, b, opt, reloadHooks{})
}

func TestEndToEndUDP(t *testing.T) {
	b := testBackends(t)
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
	b := testBackends(t)
	addr := startUDPDataplane(t, b, true)
	rs, err := shortUDPRun(t, b, addr, "udp-setup")
	if err == nil || len(rs) != 1 || rs[0].RouteOK {
		t.Fatalf("misrouting went unnoticed: %v, %+v", err, rs)
	}
	if got := rs[0].RouteErr; !strings.HasPrefix(got, "probe udp-dns: misrouted: 1 to udp-any") {
		t.Errorf("route error %q", got)
	}
}
