//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// startDataplane serves the contract's routes with an in-process PortMux
// dataplane on a kernel-picked loopback port. misroute sends a route's
// connections to another route's backend: a mux that routes wrongly.
func startDataplane(t *testing.T, b *backends, misroute map[string]string) string {
	t.Helper()
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	if errs := srv.Apply(contractSnapshot(b, "127.0.0.1:0", misroute, false)); len(errs) > 0 {
		t.Fatal(errs)
	}
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	return srv.Addr("bench/public").String()
}

// contractSnapshot is the contract's routes on one listener at addr.
// misroute sends a route's connections to another route's backend; alt
// renames the SSH route and adds a route no connection takes: a changed
// configuration that routes the same.
func contractSnapshot(b *backends, addr string, misroute map[string]string, alt bool) *snapshot.Snapshot {
	to := func(route string) *snapshot.Backend {
		if other, ok := misroute[route]; ok {
			route = other
		}
		return &snapshot.Backend{Name: route, Endpoints: []string{b.addr(route)}}
	}
	routes := []snapshot.Route{
		{Name: "ssh", Match: snapshot.Match{Protocol: snapshot.SSH}, Backend: to(routeSSH)},
		{Name: "b", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{sniB}}, Backend: to(routeTLSB)},
		{Name: "a", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{sniA}}, Backend: to(routeTLSA)},
		{Name: "any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: to(routePlain)},
	}
	if alt {
		routes[0].Name = "ssh-alt"
		routes = slices.Insert(routes, 1, snapshot.Route{Name: "c", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"c.bench.test"}}, Backend: to(routePlain)})
	}
	return &snapshot.Snapshot{Listeners: []snapshot.Listener{{
		Name: "bench/public", Address: addr, ProbeTimeout: 2 * time.Second, Routes: routes,
	}}}
}

// testBackends starts the contract's backends on kernel-picked ports for
// the length of t.
func testBackends(t *testing.T) *backends {
	t.Helper()
	b, err := startBackends(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	return b
}

// shortOptions are the options every end-to-end test shares: one
// repetition of scenarios against the in-process dataplane at addr, each
// a fraction of a second, checked against routes.
func shortOptions(t *testing.T, addr string, routes []string, scenarios ...string) options {
	return options{
		peer: "dataplane", rep: 1, addr: addr, scenarios: scenarios, routes: routes,
		pid:     os.Getpid(), // the dataplane runs in this process
		workers: 4, warmup: 50 * time.Millisecond, d: 200 * time.Millisecond,
		idleBatch: 8, idleSettle: 10 * time.Millisecond, idleTimeout: 10 * time.Second,
		readyTimeout: 5 * time.Second, drainTimeout: 5 * time.Second, logDir: t.TempDir(),
	}
}

// runShort runs opt against the dataplane at opt.addr, in front of b, and
// returns the results it wrote; hooks change the mux for reload-N.
func runShort(t *testing.T, b *backends, opt options, hooks reloadHooks) ([]result, error) {
	t.Helper()
	var out, log bytes.Buffer
	r := &runner{
		reloadHooks: hooks, opt: opt,
		proc: procFS{root: "/proc"}, backends: b,
		target: target{mux: opt.addr, backends: b, udp: newUDPDialer()}, out: &out, log: &log,
	}
	err := r.runAll()
	t.Log(log.String())
	rs, derr := decodeResults(&out)
	if derr != nil {
		t.Fatal(derr)
	}
	return rs, err
}

// shortRun runs scenarios for a fraction of a second against addr and
// returns their results.
func shortRun(t *testing.T, b *backends, addr string, scenarios ...string) ([]result, error) {
	t.Helper()
	return shortRunReloading(t, b, addr, reloadHooks{}, scenarios...)
}

// shortRunReloading is shortRun with the reload-N scenarios changing the
// mux through hooks.
func shortRunReloading(t *testing.T, b *backends, addr string, hooks reloadHooks, scenarios ...string) ([]result, error) {
	t.Helper()
	opt := shortOptions(t, addr, routeNames, scenarios...)
	opt.tputBytes, opt.tputStreams, opt.tputTimeout = 4<<20, 2, 10*time.Second
	opt.reloadEvery, opt.reloadWindow, opt.reloadRate = 200*time.Millisecond, 50*time.Millisecond, 400
	opt.reloadBaseline, opt.reloadQuiet, opt.reloadWait, opt.reloadIdle = 100*time.Millisecond, 2, time.Second, 50*time.Millisecond
	return runShort(t, b, opt, hooks)
}

func TestEndToEndRoutesAndCounts(t *testing.T) {
	b := testBackends(t)
	addr := startDataplane(t, b, nil)
	rs, err := shortRun(t, b, addr, "conn-ssh", "lat-tls", "tput", "idle-20", "lat-bulk")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 5 {
		t.Fatalf("%d results, want 5", len(rs))
	}
	wantRoute := map[string]string{"conn-ssh": routeSSH, "lat-tls": routeTLSA, "tput": routeSSH, "idle-20": routeSSH, "lat-bulk": routeSSH}
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
	// lat-bulk's connections are the measured worker's and the bulk
	// streams', which stayed open until its end.
	if bulk := rs[4]; bulk.BulkStreams != rs[2].Streams || bulk.Streams != 0 || bulk.Conns == 0 ||
		bulk.ClientConns < bulk.Conns+int64(bulk.BulkStreams) {
		t.Errorf("lat-bulk: %d bulk streams, %d connections measured of %d opened", bulk.BulkStreams, bulk.Conns, bulk.ClientConns)
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
			b := testBackends(t)
			addr := startDataplane(t, b, c.misroute)
			rs, err := shortRun(t, b, addr, c.scenario)
			if err == nil || len(rs) != 1 || rs[0].RouteOK {
				t.Fatalf("misrouting went unnoticed: %v, %+v", err, rs)
			}
			if got := rs[0].RouteErr; !strings.HasPrefix(got, c.wantErr) {
				t.Errorf("route error %q, want %q...", got, c.wantErr)
			}
		})
	}
}

// reloadingDataplane is an in-process dataplane whose reload hooks apply
// the contract's snapshot and its alternate in turn; gap, when set, first
// applies a snapshot without the listener and waits that long: a mux that
// stops accepting during a swap.
func reloadingDataplane(t *testing.T, b *backends, gap time.Duration) (string, reloadHooks) {
	t.Helper()
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	// A fixed port, as a mux's: a listener whose address changes is
	// closed and bound again, which resets what waits in its queue.
	addr := peers.Loopback.Addr(peers.FreePort(t))
	if errs := srv.Apply(contractSnapshot(b, addr, nil, false)); len(errs) > 0 {
		t.Fatal(errs)
	}
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	var applied atomic.Int64
	return addr, reloadHooks{
		reload: func(k int) error {
			if gap > 0 {
				srv.Apply(&snapshot.Snapshot{})
				time.Sleep(gap)
			}
			if errs := srv.Apply(contractSnapshot(b, addr, nil, k%2 == 1)); len(errs) > 0 {
				return fmt.Errorf("apply %d: %v", k, errs)
			}
			applied.Add(1)
			return nil
		},
		applied: func() (int, error) { return int(applied.Load()), nil },
	}
}

func TestEndToEndReload(t *testing.T) {
	b := testBackends(t)
	addr, hooks := reloadingDataplane(t, b, 0)
	rs, err := shortRunReloading(t, b, addr, hooks, "reload-50")
	if len(rs) != 1 {
		t.Fatalf("%d results: %v", len(rs), err)
	}
	r := rs[0]
	if !r.RouteOK || r.Err != "" || r.Failed != 0 || r.Idle != 50 || r.HeldAlive != 50 {
		t.Errorf("route ok %v, error %q, %d failed (%s), %d of %d held alive", r.RouteOK, r.Err, r.Failed, r.FirstErr, r.HeldAlive, r.Idle)
	}
	// 200 ms apart in a 200 ms window: one swap, seen applied; then two
	// with no load.
	if r.Reloads != 1 || r.ReloadsApplied != 1 || r.QuietReloads != 2 || r.QuietReloadsApplied != 2 {
		t.Errorf("%d reloads, %d applied, %d and %d with no load; want 1, 1, 2, 2", r.Reloads, r.ReloadsApplied, r.QuietReloads, r.QuietReloadsApplied)
	}
	if r.Conns == 0 || r.AroundConns == 0 || r.BetweenConns == 0 || r.AroundP99ms == 0 || r.BetweenP99ms == 0 {
		t.Errorf("latencies around and between swaps not measured: %+v", r)
	}
	// The held connections and the load all went to the SSH backend.
	if r.Routed[routeSSH] < 50+r.Conns {
		t.Errorf("ssh backend received %d, want at least %d", r.Routed[routeSSH], 50+r.Conns)
	}
}

// TestEndToEndReloadCatches: a mux that stops accepting during a swap
// fails the run, as does one that does not show it applied the change.
func TestEndToEndReloadCatches(t *testing.T) {
	b := testBackends(t)
	t.Run("refused during the swap", func(t *testing.T) {
		addr, hooks := reloadingDataplane(t, b, 50*time.Millisecond)
		rs, err := shortRunReloading(t, b, addr, hooks, "reload-20")
		if !errors.Is(err, errRunsFailed) || len(rs) != 1 || rs[0].Failed == 0 || !lostConnections(rs[0]) {
			t.Fatalf("connections refused during a swap went unnoticed: %v, %+v", err, rs)
		}
	})
	t.Run("not applied", func(t *testing.T) {
		addr, hooks := reloadingDataplane(t, b, 0)
		hooks.applied = func() (int, error) { return 0, nil }
		rs, err := shortRunReloading(t, b, addr, hooks, "reload-20")
		if err == nil || len(rs) != 1 || !strings.Contains(rs[0].Err, "0 applied swaps for 1 reloads") {
			t.Fatalf("swaps never applied went unnoticed: %v, %+v", err, rs)
		}
	})
}
