//go:build linux

package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

func TestSplitAround(t *testing.T) {
	recs := []opRecord{
		{start: 100 * ms, took: 1 * ms, ok: true},  // before the window
		{start: 900 * ms, took: 2 * ms, ok: true},  // between
		{start: 960 * ms, took: 30 * ms, ok: true}, // 40 ms before the swap at 1 s
		{start: 1050 * ms, took: 9 * ms, ok: true}, // 50 ms after it: the window's edge
		{start: 1020 * ms, took: 99 * ms},          // failed: no latency
		{start: 1500 * ms, took: 3 * ms, ok: true}, // between
		{start: 2500 * ms, took: 4 * ms, ok: true}, // after the window
	}
	around, between := splitAround(recs, []time.Duration{time.Second}, 50*ms, 500*ms, 2*time.Second)
	if want := []time.Duration{9 * ms, 30 * ms}; !equalDurations(around, want) {
		t.Errorf("around = %v, want %v", around, want)
	}
	if want := []time.Duration{2 * ms, 3 * ms}; !equalDurations(between, want) {
		t.Errorf("between = %v, want %v", between, want)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSwapCPU(t *testing.T) {
	// Samples every 100 ms; a swap at 250 ms with a 50 ms window makes the
	// interval 200-300 ms the only one around it.
	samples := []cpuSample{{0, 0}, {100 * ms, 0.010}, {200 * ms, 0.020}, {300 * ms, 0.045}, {400 * ms, 0.055}}
	// Ten connections end in every interval: 1 ms of CPU each between
	// swaps, so 10 ms of the 25 ms around the swap are theirs.
	var ends []time.Duration
	for i := range 40 {
		ends = append(ends, time.Duration(i)*10*ms+5*ms)
	}
	per, perConn, ok := swapCPU(samples, ends, []time.Duration{250 * ms}, 50*ms)
	if !ok || !near0(perConn-0.001) || !near0(per-0.015) {
		t.Errorf("swapCPU = %v s/swap, %v s/conn, %v; want 0.015, 0.001, true", per, perConn, ok)
	}
	if _, _, ok := swapCPU(samples, ends, nil, 50*ms); ok {
		t.Error("a figure with no swap")
	}
}

func TestBaselineCPU(t *testing.T) {
	// A baseline of 1 s with 100 connections and 0.1 s of CPU: 1 ms a
	// connection. The window's 200 connections cost 0.2 s of its 0.26 s;
	// the 0.06 s left are 3 swaps' of 20 ms.
	var ends []time.Duration
	for i := range 100 {
		ends = append(ends, time.Duration(i)*10*ms)
	}
	for i := range 200 {
		ends = append(ends, 2*time.Second+time.Duration(i)*5*ms)
	}
	s := reloadStats{baseFrom: 0, baseTo: time.Second, baseCPU: 0.1, from: 2 * time.Second, to: 3 * time.Second, cpu: 0.26, applied: 3}
	per, perConn, ok := baselineCPU(s, ends)
	if !ok || !near0(perConn-0.001) || !near0(per-0.02) {
		t.Errorf("baselineCPU = %v s/swap, %v s/conn, %v; want 0.02, 0.001, true", per, perConn, ok)
	}
	s.applied = 0
	if _, _, ok := baselineCPU(s, ends); ok {
		t.Error("a figure with no swap")
	}
}

func near0(x float64) bool { return x < 1e-9 && x > -1e-9 }

func TestLogCounter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mux.log")
	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
	appendTo(`{"msg":"reloaded"}` + "\n") // before the counter: not counted
	lc, err := newLogCounter(path, regexp.MustCompile(`"msg":"reloaded"`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		add  string
		want int
	}{
		{`{"msg":"serving"}` + "\n" + `{"msg":"relo`, 0}, // half a line is not a line
		{`aded"}` + "\n", 1},
		{`{"msg":"reloaded"}` + "\n" + `{"msg":"reloaded"}` + "\n", 3},
		{"", 3},
	} {
		appendTo(c.add)
		if n, err := lc.applied(); n != c.want || err != nil {
			t.Errorf("after %q: %d, %v; want %d", c.add, n, err, c.want)
		}
	}
}

func TestNoFileNeed(t *testing.T) {
	scs := []scenario{{kind: kindConn, workers: 32}, {kind: kindIdle, idle: 2000}, {kind: kindReload, idle: 10000}}
	if got := noFileNeed(scs); got != 2*10000+noFileHeadroom {
		t.Errorf("need %d", got)
	}
	if got := noFileNeed(scs[:1]); got != 0 {
		t.Errorf("need %d for no held connections", got)
	}
}

// TestCheckHeld: held connections whose other end has closed are counted
// out.
func TestCheckHeld(t *testing.T) {
	b := testBackends(t)
	conns, err := openMany(b.addr(routeSSH), 6, 2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Two connections left in a listener's queue, reset when it closes:
	// as a mux that dropped them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	_ = ln.Close()
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	alive, err := checkHeld(conns, 3)
	if alive != 6 || err == nil {
		t.Errorf("%d alive, %v; want 6 and an error", alive, err)
	}
}

// TestShellReload: the command learns the mux's PID and the change's
// number from its environment, and a failing command is an error that
// says what it printed.
func TestShellReload(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	reload := shellReload(`echo "$MUXLOAD_PID $MUXLOAD_RELOAD" > `+out, 4242)
	if err := reload(3); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "4242 3\n" {
		t.Errorf("the command saw %q, %v", b, err)
	}
	err := shellReload("echo no such config >&2; exit 3", 1)(1)
	if err == nil || !strings.Contains(err.Error(), "no such config") {
		t.Errorf("a failing reload command: %v", err)
	}
}
