//go:build linux

package main

import (
	"slices"
	"testing"
)

// fixture is a small /proc: init (1), kernel threads (2, 15), a mux
// started as "sh" (100) with a child whose name holds parentheses (101)
// and a grandchild (102), and another user's job (200).
var fixture = procFS{root: "testdata/proc"}

func TestParseStatOddName(t *testing.T) {
	s, err := fixture.stat(101)
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{pid: 101, ppid: 100, flags: 4194560, utime: 700, stime: 300}
	if s != want {
		t.Fatalf("stat = %+v, want %+v", s, want)
	}
}

func TestParseStatRejectsGarbage(t *testing.T) {
	for _, line := range []string{"", "12 no parens", "12 (x) S 1 2", "x (x) S 1 1 1 0 -1 0 0 0 0 0 1 2 3 4"} {
		if _, err := parseStat([]byte(line)); err == nil {
			t.Errorf("parseStat(%q) succeeded", line)
		}
	}
}

func TestAllSkipsWhatIsNotAProcess(t *testing.T) {
	all, err := fixture.all()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, s := range all {
		pids = append(pids, s.pid)
	}
	slices.Sort(pids)
	if want := []int{1, 2, 15, 100, 101, 102, 200}; !slices.Equal(pids, want) {
		t.Fatalf("pids = %v, want %v", pids, want)
	}
}

func TestTreeTicksSumsTheTreeOnly(t *testing.T) {
	ticks, procs, err := fixture.treeTicks(100)
	if err != nil {
		t.Fatal(err)
	}
	// sh 1+2+30+10, mux 700+300, child 40+60+5+5; not init, not 200.
	if ticks != 43+1000+110 || procs != 3 {
		t.Fatalf("ticks, procs = %d, %d; want 1153, 3", ticks, procs)
	}
	if _, procs, _ := fixture.treeTicks(4242); procs != 0 {
		t.Fatalf("a missing root has %d processes", procs)
	}
}

func TestKernelThreads(t *testing.T) {
	all, err := fixture.all()
	if err != nil {
		t.Fatal(err)
	}
	if got := kthreadTicks(all); got != 7+340 {
		t.Fatalf("kernel thread ticks = %d, want 347", got)
	}
}

func TestTreeMemory(t *testing.T) {
	m, err := fixture.treeMemory(100)
	if err != nil {
		t.Fatal(err)
	}
	want := memory{rssKB: 1500 + 20000 + 19000, pssKB: 400 + 15000 + 1200, procs: 3}
	if m != want {
		t.Fatalf("memory = %+v, want %+v", m, want)
	}
	if _, err := fixture.treeMemory(4242); err == nil {
		t.Fatal("memory of a missing process")
	}
}

func TestParseSmapsRollup(t *testing.T) {
	if _, err := parseSmapsRollup([]byte("Rss: 12 kB\n")); err == nil {
		t.Error("no Pss line accepted")
	}
	if _, err := parseSmapsRollup([]byte("Rss: 12 MB\nPss: 3 kB\n")); err == nil {
		t.Error("a unit other than kB accepted")
	}
	m, err := parseSmapsRollup([]byte("Rss: 12 kB\nPss_Anon: 99 kB\nPss: 3 kB\n"))
	if err != nil || m.rssKB != 12 || m.pssKB != 3 {
		t.Errorf("parse = %+v, %v; want Rss 12, Pss 3 (not Pss_Anon)", m, err)
	}
}

func TestCPUTimes(t *testing.T) {
	c, err := fixture.cpuTimes()
	if err != nil {
		t.Fatal(err)
	}
	if c.busy != 508417+71427+192324 || c.steal != 12431 {
		t.Fatalf("busy, steal = %d, %d", c.busy, c.steal)
	}
	if _, err := parseProcStat([]byte("cpu0 1 2 3 4 5 6 7 8\n")); err == nil {
		t.Fatal("a per-CPU line taken for the total")
	}
}

func TestBetweenToleratesVanishedChildren(t *testing.T) {
	m := meter{pid: 100}
	a := sample{muxTicks: 500, machine: cpuTimes{busy: 1000, steal: 10}, selfTicks: 100}
	b := sample{muxTicks: 400, machine: cpuTimes{busy: 1250, steal: 60}, selfTicks: 200}
	b.at = a.at.Add(1e9)
	u := m.between(a, b)
	if u.MuxCPU != 0 || u.Source != "proc" {
		t.Fatalf("mux CPU %v from %s, want 0 from proc", u.MuxCPU, u.Source)
	}
	// 2.5 s busy, 1 s ours, none the mux's, 0.5 s stolen: 2 cores of
	// other load.
	if u.OtherCores != 2 || u.StealCores != 0.5 {
		t.Fatalf("other load = %v cores, %v stolen; want 2, 0.5", u.OtherCores, u.StealCores)
	}
}
