//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// result is one run: one scenario against one peer, one JSON line. Fields
// that a scenario does not measure are left out.
type result struct {
	Peer     string `json:"peer"`
	Scenario string `json:"scenario"`
	Rep      int    `json:"rep"`
	Attempt  int    `json:"attempt"` // >1 when an earlier try was disturbed
	Start    string `json:"start"`   // RFC 3339

	// Connection scenarios.
	Workers   int     `json:"workers,omitempty"`
	Seconds   float64 `json:"seconds,omitempty"` // measured window
	Conns     int64   `json:"conns,omitempty"`   // finished inside the window
	Failed    int64   `json:"failed"`
	FailPct   float64 `json:"fail_pct"`
	ConnPerS  float64 `json:"conn_per_s,omitempty"`
	P50ms     float64 `json:"p50_ms,omitempty"`
	P90ms     float64 `json:"p90_ms,omitempty"`
	P99ms     float64 `json:"p99_ms,omitempty"`
	MaxMs     float64 `json:"max_ms,omitempty"`
	CPUusConn float64 `json:"mux_cpu_us_per_conn,omitempty"`
	// BulkStreams (lat-bulk) moved bytes through the mux all along.
	BulkStreams int `json:"bulk_streams,omitempty"`

	// Throughput.
	Streams  int     `json:"streams,omitempty"`
	Bytes    int64   `json:"bytes_one_way,omitempty"`
	MBps     float64 `json:"mb_per_s,omitempty"` // 1e6 bytes/s of payload, one way
	CPUsPerG float64 `json:"mux_cpu_s_per_gb,omitempty"`

	// UDP. Datagrams and DgramPerS count echoes, one datagram each way;
	// CPUsPerMDgram counts both ways: a round trip is two datagrams.
	Sessions      int     `json:"udp_sessions,omitempty"`
	DgramSize     int     `json:"datagram_bytes,omitempty"`
	Window        int     `json:"window,omitempty"`
	Datagrams     int64   `json:"datagrams,omitempty"`
	DgramPerS     float64 `json:"datagrams_per_s,omitempty"`
	LossPct       float64 `json:"loss_pct,omitempty"`
	CPUsPerMDgram float64 `json:"mux_cpu_s_per_million_datagrams,omitempty"`
	SessionsPerS  float64 `json:"sessions_per_s,omitempty"`
	CPUusSession  float64 `json:"mux_cpu_us_per_session,omitempty"`

	// Idle.
	Idle        int     `json:"idle_conns,omitempty"`
	PSSBeforeKB int64   `json:"pss_kb_before,omitempty"`
	PSSAfterKB  int64   `json:"pss_kb_after,omitempty"`
	RSSBeforeKB int64   `json:"rss_kb_before,omitempty"`
	RSSAfterKB  int64   `json:"rss_kb_after,omitempty"`
	PSSKBConn   float64 `json:"pss_kb_per_conn,omitempty"`
	RSSKBConn   float64 `json:"rss_kb_per_conn,omitempty"`

	// Reload: Idle held connections, HeldAlive of them echoing at the end;
	// Reloads changes made, ReloadsApplied seen applied in the mux's log,
	// ReloadLagMs the median time from a change to its line in the log.
	// Conns and Failed count the whole load, warm-up included; ConnPerS,
	// the latencies and MuxCPU the measured window. Around are the new
	// connections started within ReloadWindowMs of a swap, Between the
	// others. CPUmsReload is the mux's CPU per swap beyond the CPU per
	// connection of a baseline of BaselineS seconds before the window
	// (CPUusConn), the same load with no change; CPUmsReloadAround the
	// same from the CPU sampled around the swaps against between them.
	HeldAlive         int     `json:"held_alive,omitempty"`
	HeldErr           string  `json:"held_error,omitempty"`
	Reloads           int     `json:"reloads,omitempty"`
	ReloadsApplied    int     `json:"reloads_applied,omitempty"`
	ReloadLagMs       float64 `json:"reload_lag_ms,omitempty"`
	ReloadRate        float64 `json:"reload_load_conn_per_s,omitempty"`
	ReloadEveryS      float64 `json:"reload_every_s,omitempty"`
	ReloadWindowMs    float64 `json:"reload_window_ms,omitempty"`
	AroundConns       int     `json:"around_conns,omitempty"`
	BetweenConns      int     `json:"between_conns,omitempty"`
	AroundP50ms       float64 `json:"around_p50_ms,omitempty"`
	AroundP99ms       float64 `json:"around_p99_ms,omitempty"`
	AroundMaxMs       float64 `json:"around_max_ms,omitempty"`
	BetweenP50ms      float64 `json:"between_p50_ms,omitempty"`
	BetweenP99ms      float64 `json:"between_p99_ms,omitempty"`
	CPUmsReload       float64 `json:"mux_cpu_ms_per_reload,omitempty"`
	CPUmsReloadAround float64 `json:"mux_cpu_ms_per_reload_around,omitempty"`
	BaselineS         float64 `json:"baseline_s,omitempty"`
	// QuietReloads more changes made after the window with no load,
	// QuietReloadsApplied of them seen applied; CPUmsReloadQuiet the mux's
	// CPU per swap then, its idle CPU taken off.
	QuietReloads        int     `json:"quiet_reloads,omitempty"`
	QuietReloadsApplied int     `json:"quiet_reloads_applied,omitempty"`
	CPUmsReloadQuiet    float64 `json:"mux_cpu_ms_per_reload_no_load,omitempty"`

	// The mux's CPU over the measured window and where it was read.
	MuxCPU     float64 `json:"mux_cpu_s"`
	MuxProcCPU float64 `json:"mux_cpu_proc_s"`
	CPUSource  string  `json:"cpu_source"`
	MuxProcs   int     `json:"mux_procs,omitempty"`
	SelfCPU    float64 `json:"client_backends_cpu_s"`

	// Whether the box was quiet.
	PreLoad   float64 `json:"pre_load_cores"`
	Other     float64 `json:"other_cores"` // steal included
	Steal     float64 `json:"steal_cores"`
	Disturbed bool    `json:"disturbed"`

	// Routing: what each backend accepted during the run (warm-up and
	// the readiness probe excluded), what the client tried and completed,
	// and the verdict, with the per-route probes after the run.
	Routed        map[string]int64 `json:"routed"`
	ClientConns   int64            `json:"client_conns"`
	ClientOK      int64            `json:"client_ok"`
	RouteOK       bool             `json:"route_ok"`
	RouteErr      string           `json:"route_error,omitempty"`
	MuxAlive      bool             `json:"mux_alive"`
	FirstErr      string           `json:"first_error,omitempty"`
	Err           string           `json:"error,omitempty"` // the run could not be completed
	ProbedRoutes  []string         `json:"probed_routes,omitempty"`
	BackendsDrain bool             `json:"backends_drained"`
}

// readResults reads JSON lines from files, in order.
func readResults(paths []string) ([]result, error) {
	var rs []result
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("results: %w", err)
		}
		got, err := decodeResults(f)
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		rs = append(rs, got...)
	}
	return rs, nil
}

// decodeResults reads one result per non-empty line.
func decodeResults(r io.Reader) ([]result, error) {
	var rs []result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var x result
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		rs = append(rs, x)
	}
	return rs, sc.Err()
}
