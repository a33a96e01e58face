//go:build linux

package main

import (
	"strings"
	"testing"
)

// sampleResults are three repeats of conn-ssh for two peers, the last of
// portmux misrouted, a throughput run and an idle run.
func sampleResults() []result {
	ok := func(r result) result {
		r.RouteOK, r.MuxAlive = true, true
		return r
	}
	return []result{
		ok(result{Peer: "portmux", Scenario: "conn-ssh", Rep: 1, Workers: 32, Conns: 36000, ConnPerS: 7200, CPUusConn: 120, CPUSource: "cgroup", P50ms: 1, P90ms: 2, P99ms: 9}),
		ok(result{Peer: "haproxy", Scenario: "conn-ssh", Rep: 1, Workers: 32, Conns: 44000, ConnPerS: 8800, CPUusConn: 95, CPUSource: "cgroup", P50ms: 2, P90ms: 3, P99ms: 10}),
		ok(result{Peer: "portmux", Scenario: "conn-ssh", Rep: 2, Workers: 32, Conns: 37000, ConnPerS: 7400, CPUusConn: 130, CPUSource: "cgroup", P50ms: 1, P90ms: 2, P99ms: 11}),
		ok(result{Peer: "haproxy", Scenario: "conn-ssh", Rep: 2, Workers: 32, Conns: 45000, ConnPerS: 9000, CPUusConn: 97, CPUSource: "cgroup", Disturbed: true, Other: 0.5}),
		{Peer: "portmux", Scenario: "conn-ssh", Rep: 3, Workers: 32, Conns: 1, ConnPerS: 1, RouteErr: "misrouted: 1 to plain", MuxAlive: true},
		ok(result{Peer: "portmux", Scenario: "tput", Rep: 1, Streams: 4, MBps: 992, CPUsPerG: 0.48, CPUSource: "cgroup"}),
		ok(result{Peer: "portmux", Scenario: "idle-2000", Rep: 1, Idle: 2000, PSSKBConn: 6.34}),
		ok(result{Peer: "direct", Scenario: "tput", Rep: 1, Streams: 4, MBps: 2000, CPUSource: "none"}),
	}
}

// TestTables: renderTables writes the headline table (a column a peer, a
// row a measure) and the detail table (a row a run).
func TestTables(t *testing.T) {
	got := renderTables(sampleResults())
	wantAll(t, got,
		// The headline table.
		"| | portmux | haproxy | direct |\n|---|---|---|---|\n",
		"| SSH-routed conn/s (32 workers) | 7.3k (1 failed) | 8.9k | — |\n",
		"| CPU per SSH connection | 125 µs (1 failed) | 96 µs | — |\n",
		"| throughput, 4 streams | 992 MB/s | — | 2000 MB/s |\n",
		"| CPU per GB forwarded | 0.48 s | — | — |\n",
		"| memory per idle connection @2000 (PSS) | 6.3 KB | — | — |\n",
		"| route checks passed | 4/5 | 2/2 | 1/1 |\n",
		// The detail table.
		"| portmux | conn-ssh | 3 | 7.3k [7.2k–7.4k] conn/s | 1.00 / 2.00 / 10.0 | 125 µs/conn (cgroup) | 0.0 % | 2/3 | 3/3 | 0 (0.00 cores) |\n",
		"| haproxy | conn-ssh | 2 | 8.9k [8.8k–9.0k] conn/s |",
		"| 1 (0.50 cores) |\n",
		"| portmux | tput | 1 | 992 MB/s | — | 0.48 s/GB (cgroup) |",
	)
	if strings.Contains(got, "TLS-SNI") {
		t.Errorf("a row for a scenario that did not run:\n%s", got)
	}
}

func TestDecodeResultsRoundTrip(t *testing.T) {
	rs, err := decodeResults(strings.NewReader(`{"peer":"a","scenario":"tput","mb_per_s":5,"route_ok":true}` + "\n\n" +
		`{"peer":"b","scenario":"conn-ssh","routed":{"ssh":3}}` + "\n"))
	if err != nil || len(rs) != 2 || rs[0].MBps != 5 || rs[1].Routed["ssh"] != 3 {
		t.Fatalf("decoded %+v, %v", rs, err)
	}
	if _, err := decodeResults(strings.NewReader("{not json\n")); err == nil {
		t.Fatal("garbage decoded")
	}
}

func TestUDPTable(t *testing.T) {
	ok := func(r result) result {
		r.RouteOK, r.MuxAlive = true, true
		return r
	}
	rs := []result{
		ok(result{Peer: "portmux", Scenario: "udp-rate-1", Sessions: 1, DgramSize: 1200, DgramPerS: 20000, MBps: 24, CPUsPerMDgram: 9.5, CPUSource: "cgroup"}),
		ok(result{Peer: "nginx", Scenario: "udp-rate-1", Sessions: 1, DgramSize: 1200, DgramPerS: 22000, MBps: 26.4, CPUsPerMDgram: 9.4, CPUSource: "cgroup", LossPct: 0.5}),
		ok(result{Peer: "direct", Scenario: "udp-rate-1", Sessions: 1, DgramSize: 1200, DgramPerS: 90000, MBps: 108, CPUSource: "none"}),
		ok(result{Peer: "portmux", Scenario: "udp-small-64", Sessions: 64, DgramSize: 64, DgramPerS: 30000, MBps: 1.9, CPUsPerMDgram: 9, CPUSource: "cgroup"}),
		ok(result{Peer: "portmux", Scenario: "udp-setup", Workers: 32, SessionsPerS: 7500, CPUusSession: 53, CPUSource: "cgroup", P50ms: 3.5, P90ms: 6, P99ms: 15}),
		ok(result{Peer: "portmux", Scenario: "udp-idle-5000", Idle: 5000, PSSKBConn: 0.9}),
	}
	got := renderTables(rs)
	wantAll(t, got,
		"| | portmux | nginx | direct |\n",
		"| UDP datagrams/s each way, 1 session, 1200 B | 20.0k | 22.0k | 90.0k |\n",
		"| UDP MB/s each way, 1 session, 1200 B | 24 MB/s | 26 MB/s | 108 MB/s |\n",
		"| CPU per million datagrams, 1 session, 1200 B | 9.50 s | 9.40 s | — |\n",
		"| UDP datagrams/s each way, 64 sessions, 64 B | 30.0k | — | — |\n",
		"| UDP sessions set up/s (32 workers) | 7.5k | — | — |\n",
		"| CPU per UDP session set up | 53 µs | — | — |\n",
		"| memory per idle UDP session @5000 (PSS) | 0.9 KB | — | — |\n",
		"| portmux | udp-rate-1 | 1 | 20.0k datagrams/s | — | 9.50 s/M datagrams (cgroup) |",
		"| portmux | udp-setup | 1 | 7.5k sessions/s | 3.50 / 6.00 / 15.0 | 53 µs/session (cgroup) |",
		"| nginx | udp-rate-1 | 1 | 22.0k datagrams/s | — | 9.40 s/M datagrams (cgroup) | 0.5 % lost |",
	)
}

// wantAll fails t for each of wants that got does not contain.
func wantAll(t *testing.T, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
}

func TestReloadTable(t *testing.T) {
	ok := func(r result) result {
		r.RouteOK, r.MuxAlive = true, true
		return r
	}
	rs := []result{
		ok(result{Peer: "portmux", Scenario: "reload-10000", Rep: 1, Idle: 10000, HeldAlive: 10000, Reloads: 10, ReloadsApplied: 10,
			Conns: 12000, ConnPerS: 1000, AroundP50ms: 0.5, AroundP99ms: 4, BetweenP50ms: 0.4, BetweenP99ms: 2, P50ms: 0.4, P90ms: 1, P99ms: 3, CPUmsReload: 12, CPUmsReloadQuiet: 1, CPUSource: "cgroup"}),
		ok(result{Peer: "portmux", Scenario: "reload-10000", Rep: 2, Idle: 10000, HeldAlive: 9990, Reloads: 10, ReloadsApplied: 10,
			Conns: 11999, Failed: 1, ConnPerS: 1000, AroundP50ms: 0.7, AroundP99ms: 6, BetweenP50ms: 0.4, BetweenP99ms: 2, CPUmsReload: 14, CPUmsReloadQuiet: 2, CPUSource: "cgroup"}),
		ok(result{Peer: "haproxy", Scenario: "reload-10000", Rep: 1, Idle: 10000, HeldAlive: 10000, Reloads: 10, ReloadsApplied: 9,
			Conns: 12000, ConnPerS: 1000, AroundP50ms: 0.3, AroundP99ms: 30, BetweenP50ms: 0.3, BetweenP99ms: 1, CPUmsReload: 40, CPUSource: "cgroup", Err: "the mux showed 9 applied swaps for 10 reloads (-reload-log)"}),
	}
	got := renderTables(rs)
	if strings.Contains(got, "13.0 ms") {
		t.Errorf("the CPU per swap under load, at the mercy of the box's other load, is in the table:\n%s", got)
	}
	wantAll(t, got,
		"| | portmux | haproxy |\n",
		"| reload, 10000 held: swaps applied | 20/20 | 9/10 |\n",
		"| reload, 10000 held: new connections failed | 1 of 24.0k | 0 of 12.0k |\n",
		"| reload, 10000 held: held connections alive at the end | 19990/20000 | 10000/10000 |\n",
		"| reload, 10000 held: new-conn p50 / p99 around swaps | 0.60 / 5.00 ms | — (1 failed) |\n",
		"| reload, 10000 held: new-conn p50 / p99 between swaps | 0.40 / 2.00 ms | — (1 failed) |\n",
		"| reload, 10000 held: mux CPU per swap, no load | 1.50 ms | — (1 failed) |\n",
		"| portmux | reload-10000 | 2 | 3.00 [2.00–4.00] ms p99 added around swaps | ",
		" | 1.50 ms/swap, no load (cgroup) | 0.0 % |",
		"| haproxy | reload-10000 | 1 | — | — | — | 0.0 %, 1 run(s) with errors |",
	)
}

// TestPaired: with portmux-before beside portmux, the tables end with
// their ratios repeat by repeat, a misrouted run left out; without it,
// with nothing.
func TestPaired(t *testing.T) {
	ok := func(r result) result {
		r.RouteOK, r.MuxAlive, r.CPUSource = true, true, "cgroup"
		return r
	}
	rs := []result{
		ok(result{Peer: "portmux-before", Scenario: "conn-ssh", Rep: 1, ConnPerS: 1000, CPUusConn: 100, P99ms: 2}),
		ok(result{Peer: "portmux", Scenario: "conn-ssh", Rep: 1, ConnPerS: 1100, CPUusConn: 90, P99ms: 1}),
		ok(result{Peer: "portmux-before", Scenario: "conn-ssh", Rep: 2, ConnPerS: 2000, CPUusConn: 100, P99ms: 4}),
		ok(result{Peer: "portmux", Scenario: "conn-ssh", Rep: 2, ConnPerS: 2600, CPUusConn: 70, P99ms: 4}),
		{Peer: "portmux", Scenario: "conn-ssh", Rep: 3, ConnPerS: 1, RouteErr: "misrouted"},
		ok(result{Peer: "portmux-before", Scenario: "conn-ssh", Rep: 3, ConnPerS: 9000, CPUusConn: 10, P99ms: 1}),
		ok(result{Peer: "portmux-before", Scenario: "tput", Rep: 1, Streams: 4, MBps: 500, CPUsPerG: 1}),
		ok(result{Peer: "portmux", Scenario: "tput", Rep: 1, Streams: 4, MBps: 1000, CPUsPerG: 0.5}),
	}
	wantAll(t, renderTables(rs),
		"portmux over portmux-before: the median of the repeats' ratios [min–max]\n",
		"| conn-ssh | 1.200 [1.10–1.30] conn/s | 0.800 [0.70–0.90] | 0.750 [0.50–1.00] | 2 |\n",
		"| tput | 2.000 [2.00–2.00] MB/s | 0.500 [0.50–0.50] | — | 1 |\n",
	)
	if got := renderPaired(sampleResults()); got != "" {
		t.Errorf("ratios without portmux-before:\n%s", got)
	}
}
