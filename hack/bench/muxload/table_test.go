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

// wantAll fails t for each of wants that got does not contain.
func wantAll(t *testing.T, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
}
