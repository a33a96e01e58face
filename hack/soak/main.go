// Command soak puts portmux serve under the attacks issue 14 describes,
// all at once, while real SSH, TLS and HTTP clients use it, and reports
// what the legitimate clients saw and what the process held.
//
// It is a benchmark, not a test: nothing in it passes or fails on timing.
// What it measures:
//
//   - the legitimate clients' success rate and latency (p50, p99) with no
//     attack (baseline) and under attack, and whether any byte they sent
//     came back wrong (never acceptable);
//   - the process's peak RSS and its cgroup's peak usage against the
//     memory limit it runs under (by default the chart's 512Mi), so that
//     portmux's own memory budget (it reads the limit at start) is the real
//     one;
//   - goroutines and open files before, at the peak and after the attack
//     has ended and every connection has closed, and the live heap (right
//     after two forced collections) before and after: anything left is a
//     leak.
//
// The attack, from many source addresses in 127.1.0.0/16 (one per
// attacker, as a botnet's would be: portmux's limits are per client):
// slowloris clients that never finish a header block (half of them after a
// first, complete request), clients sending 1 MiB header blocks, keep-alive
// hogs from one address, clients dribbling one byte per write at a regex
// route, random garbage, and HTTP/2 clients that open and reset streams
// as fast as they can (rapid reset) or open all the streams they may and
// never take a byte of the answers, and HTTP/2 clients from one address
// that stall more streams together than one client may have in flight
// (maxConnectionsPerClient). The legitimate clients come from
// 127.0.0.2.
//
// Usage (make soak builds portmux and runs this):
//
//	go run ./hack/soak -portmux bin/portmux -duration 60s -limit 512Mi
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type options struct {
	portmux    string
	baseline   time.Duration
	duration   time.Duration
	drain      time.Duration
	limit      string
	out        string
	slowloris  int
	bigHeaders int
	hogs       int
	dribblers  int
	garbage    int
	h2Floods   int
	h2Hogs     int
	legit      int
	legitRate  float64
	pprof      string
	// attack, when set, makes this process the attackers' child (see
	// attackproc.go), aimed at this address.
	attack string
}

func main() {
	var o options
	flag.StringVar(&o.portmux, "portmux", "bin/portmux", "the portmux binary")
	flag.DurationVar(&o.baseline, "baseline", 15*time.Second, "how long the legitimate clients run alone first")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long the attack lasts")
	flag.DurationVar(&o.drain, "drain", 90*time.Second, "how long to wait, after the attack, for every connection to close")
	flag.StringVar(&o.limit, "limit", "512Mi", "memory limit of portmux's cgroup (the chart's default); empty: none")
	flag.StringVar(&o.out, "out", "soak-results", "directory of the report (report.md, report.json, portmux.log, heap-after.pb.gz)")
	flag.IntVar(&o.slowloris, "slowloris", 2000, "slowloris clients")
	flag.IntVar(&o.bigHeaders, "big-headers", 300, "clients sending 1 MiB header blocks")
	flag.IntVar(&o.hogs, "hogs", 50, "keep-alive hogs, all from one address")
	flag.IntVar(&o.dribblers, "dribblers", 50, "clients sending one byte per write to a regex route")
	flag.IntVar(&o.garbage, "garbage", 20, "clients sending random garbage")
	flag.IntVar(&o.h2Floods, "h2-floods", 20, "HTTP/2 clients: half reset every stream they open (rapid reset), half stall their windows")
	flag.IntVar(&o.h2Hogs, "h2-hogs", 10, "HTTP/2 clients from one address that stall their windows: together they open 2,000 streams, past the client's cap of 512 in flight")
	flag.IntVar(&o.legit, "legit", 8, "legitimate clients of each kind (SSH, TLS, HTTP), each from its own address")
	flag.Float64Var(&o.legitRate, "legit-rate", 10, "operations per second of each legitimate client")
	flag.StringVar(&o.pprof, "pprof", "", "portmux's --pprof-addr (e.g. 127.0.0.1:6060), to profile it during the attack; empty: a free port (the live heap is read there)")
	flag.StringVar(&o.attack, "attack", "", "internal: run only the attackers against this address (the harness starts itself so)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.attack != "" {
		if err := runAttacker(ctx, o, o.attack); err != nil {
			fmt.Fprintln(os.Stderr, "soak attackers:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// selfCPU is the CPU time this process (the clients, attackers and
// backends) has used, in seconds: it shares the machine with portmux.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func run(ctx context.Context, o options) error {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	be, err := startBackends()
	if err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	defer be.close()

	port, err := freePort()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(o.out, "portmux.yaml")
	if err := os.WriteFile(cfgPath, []byte(config(port, be)), 0o644); err != nil {
		return err
	}
	pm, err := startPortmux(ctx, o, cfgPath)
	if err != nil {
		return fmt.Errorf("portmux: %w", err)
	}
	defer pm.stop()
	fmt.Println(pm.describe())

	target := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(ctx, target); err != nil {
		return err
	}
	rep := &report{Limit: pm.limit, CgroupNote: pm.cgroupNote, Budget: pm.budgetLine()}
	if rep.LiveHeapBefore, err = pm.liveHeap(); err != nil {
		return fmt.Errorf("live heap: %w", err)
	}
	rep.Before, err = pm.sample()
	if err != nil {
		return fmt.Errorf("first sample: %w", err)
	}

	samples := newSampler(pm)
	go samples.run(ctx)

	// Phase 1: the legitimate clients alone.
	fmt.Printf("baseline: %d legitimate clients of each kind, %.0f operations/s each, for %v\n", o.legit, o.legitRate, o.baseline)
	base := runLegit(ctx, o.legit, o.legitRate, o.baseline, target, be)
	rep.Baseline = base.summary()
	if pm.dead() {
		return errors.New("portmux died during the baseline")
	}

	// Phase 2: the same, under attack.
	fmt.Printf("attack: %v\n", o.duration)
	cpuStart, _ := pm.sample()
	selfStart, attackStart := selfCPU(), time.Now()
	atk, err := startAttackChild(o, target, o.duration)
	if err != nil {
		return err
	}
	under := runLegit(ctx, o.legit, o.legitRate, o.duration, target, be)
	rep.Attack = under.summary()
	var attackCPU float64
	rep.Attackers, attackCPU, err = atk.wait()
	if err != nil {
		return err
	}
	if cpuEnd, err := pm.sample(); err == nil {
		wall := time.Since(attackStart).Seconds()
		rep.PortmuxCores = (cpuEnd.CPU - cpuStart.CPU) / wall
		rep.ClientCores = (selfCPU() - selfStart) / wall
		rep.AttackerCores = attackCPU / wall
	}
	rep.Peak = samples.peak()
	if pm.dead() {
		rep.Died = true
	}

	// Phase 3: everything has stopped; wait for the process to let go.
	if !rep.Died {
		rep.DrainTime, rep.Drained = pm.waitIdle(ctx, o.drain)
		rep.After, err = pm.sample()
		if err != nil {
			return fmt.Errorf("last sample: %w", err)
		}
		if rep.LiveHeapAfter, err = pm.liveHeap(); err != nil {
			return fmt.Errorf("live heap: %w", err)
		}
		if err := pm.saveHeapProfile(filepath.Join(o.out, "heap-after.pb.gz")); err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
	}
	rep.Outcomes = samples.last().Outcomes
	rep.CgroupPeak, rep.CgroupFailcnt = pm.cgroupPeak()
	rep.LegitBytesLost = base.lost() + under.lost()

	if err := rep.write(o.out); err != nil {
		return err
	}
	fmt.Println(rep.markdown())
	if rep.Died {
		return errors.New("portmux died under the attack: see " + filepath.Join(o.out, "portmux.log"))
	}
	return nil
}
