//go:build linux

package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// meter samples, at the two ends of a measured window, the CPU of the mux
// (its /proc tree and, where it has one, its cgroup), of this process
// (client and backends) and of the whole machine, so a run can report the
// mux's cost and whether something else was using the box meanwhile.
type meter struct {
	proc procFS
	pid  int     // root of the mux's tree; 0 when there is no mux
	cg   *cgroup // nil without a cgroup
}

// sample is the counters at one instant.
type sample struct {
	at          time.Time
	muxTicks    uint64 // the mux's /proc tree
	muxProcs    int
	cgroupCPU   time.Duration
	selfTicks   uint64
	machine     cpuTimes
	kernelTicks uint64 // kernel threads
	err         error
}

// window lets a running load warm up, then sets measuring for d, and
// returns the measured window's length and the CPU used over it.
func (m meter) window(measuring *atomic.Bool, warmup, d time.Duration) (time.Duration, usage) {
	time.Sleep(warmup)
	a := m.sample()
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(d)
	measuring.Store(false)
	window := time.Since(t0)
	return window, m.between(a, m.sample())
}

// sample reads every counter; an error is kept and reported by between.
func (m meter) sample() sample {
	s := sample{at: time.Now()}
	all, err := m.proc.all()
	if err != nil {
		s.err = err
		return s
	}
	s.kernelTicks = kthreadTicks(all)
	if m.pid > 0 {
		for _, p := range descendants(all, m.pid) {
			s.muxTicks += p.ticks()
			s.muxProcs++
		}
	}
	if m.cg != nil {
		if s.cgroupCPU, err = m.cg.usage(); err != nil {
			s.err = err
		}
	}
	self, err := m.proc.stat(os.Getpid())
	if err != nil {
		s.err = fmt.Errorf("own stat: %w", err)
	}
	// Own time only: the mux is this process's child, and an earlier
	// mux reaped in between would land in cutime.
	s.selfTicks = self.utime + self.stime
	if s.machine, err = m.proc.cpuTimes(); err != nil {
		s.err = err
	}
	return s
}

// usage is what was used between two samples.
type usage struct {
	Seconds float64 // wall time
	// MuxCPU is the mux's CPU seconds: from its cgroup when it has one,
	// else from its /proc tree (MuxProcCPU, always kept as a check).
	MuxCPU, MuxProcCPU float64
	Source             string // "cgroup", "proc" or "none"
	MuxProcs           int    // processes in the mux's tree at the end
	SelfCPU            float64
	// OtherCores is the rest of the machine's busy time, kernel threads
	// left out, plus the time stolen by the hypervisor, per second of the
	// window: other people's jobs, here or on the host.
	OtherCores float64
	StealCores float64 // the hypervisor's share of OtherCores
	Err        error
}

// between turns two samples into usage. Differences are taken in float:
// a counter summed over processes can go down when one exits unreaped.
func (m meter) between(a, b sample) usage {
	diff := func(x, y uint64) float64 { return (float64(y) - float64(x)) / clockTicks }
	u := usage{Seconds: b.at.Sub(a.at).Seconds(), MuxProcs: b.muxProcs, Source: "none"}
	u.Err = a.err
	if u.Err == nil {
		u.Err = b.err
	}
	if m.pid > 0 {
		u.MuxProcCPU = max(diff(a.muxTicks, b.muxTicks), 0)
		u.MuxCPU, u.Source = u.MuxProcCPU, "proc"
	}
	if m.cg != nil {
		u.MuxCPU, u.Source = (b.cgroupCPU - a.cgroupCPU).Seconds(), "cgroup"
	}
	u.SelfCPU = diff(a.selfTicks, b.selfTicks)
	other := diff(a.machine.busy, b.machine.busy) - diff(a.kernelTicks, b.kernelTicks) - u.SelfCPU - u.MuxCPU
	steal := diff(a.machine.steal, b.machine.steal)
	if u.Seconds > 0 {
		u.StealCores = max(steal, 0) / u.Seconds
		u.OtherCores = max(other, 0)/u.Seconds + u.StealCores
	}
	return u
}

// waitQuiet waits until the machine's load, kernel threads and this
// process left out, is below cores over one second, for at most maxWait,
// and returns the last load seen. It runs before the mux starts, so what
// it sees is other people's work.
func waitQuiet(p procFS, cores float64, maxWait time.Duration) float64 {
	m := meter{proc: p}
	deadline := time.Now().Add(maxWait)
	for {
		a := m.sample()
		time.Sleep(time.Second)
		load := m.between(a, m.sample()).OtherCores
		if load <= cores || time.Now().After(deadline) {
			return load
		}
	}
}
