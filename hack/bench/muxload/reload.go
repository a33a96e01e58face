//go:build linux

package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// reload-N: what a configuration change costs a mux that holds N
// connections and takes a steady load of new ones. It opens N SSH-routed
// connections (as idle-N), starts the conn-ssh workers (paced at
// -reload-rate new connections a second; 0: as fast as they go), and
// through the measured window runs -reload-cmd every -reload-every. The
// mux's log must then show, in lines matching -reload-log, that it
// applied every change: a mux that ignores the command would otherwise be
// measured doing nothing. It records:
//
//   - new connections that failed, over the whole load (must be 0);
//   - the latency of new connections started within -reload-window of a
//     swap (when the mux's log showed it applied) against the others;
//   - the N held connections still echoing at the end (all must be);
//   - the mux's CPU per swap: a baseline of -reload-baseline runs the same
//     load before the window with no change made; its CPU per completed
//     connection, times the connections completed in the window, is taken
//     off the window's CPU, and what is left is divided by the swaps
//     (CPUmsReload). A second figure samples the CPU every cpuTick: the
//     ticks within -reload-window of a swap are "around", the rest
//     "between", and the CPU per connection between swaps is taken off
//     the CPU around them (CPUmsReloadAround); it misses what a swap costs
//     later (a garbage collection it brings forward, a worker exiting).
//     Both are at the mercy of the load's CPU per connection, which other
//     work on the box moves by more than a cheap swap costs; so after the
//     window the load stops and -reload-quiet more changes are made: their
//     CPU, less the mux's idle CPU, over the swaps is the third figure
//     (CPUmsReloadQuiet), the swap's own cost with N connections held.

// kindReload is a reload-N scenario.
const kindReload = "reload"

// Bounds and periods of a reload run.
const (
	// reloadCmdTimeout bounds one run of -reload-cmd.
	reloadCmdTimeout = 10 * time.Second
	// appliedWait bounds the wait, after the last reload command, for the
	// mux to show it applied every change (portmux serve --watch applies
	// a file once it has been still for a second).
	appliedWait = 5 * time.Second
	// appliedPoll is how often the mux's log is read for applied swaps:
	// the error on a swap's time.
	appliedPoll = 10 * time.Millisecond
	// cpuTick is how often the mux's CPU is sampled.
	cpuTick = 50 * time.Millisecond
)

// noFileHeadroom is the descriptors muxload keeps beyond two per held
// connection (its client end and its backend's): the load's workers, the
// probes, the log, the runtime.
const noFileHeadroom = 1024

// raiseNoFile raises this process's open-file limit to at least need, the
// hard limit too when it is lower and the process may (CAP_SYS_RESOURCE).
// The mux started from -cmd inherits it: it holds two descriptors per
// connection as well. Where the hard limit cannot be raised, a scenario
// that needs more fails here, before it starts, rather than midway.
func raiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("open-file limit: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("raise the open-file limit from %d (hard %d) to %d: %w", lim.Cur, lim.Max, need, err)
	}
	return nil
}

// noFileNeed is the open-file limit the scenarios need: two descriptors
// per held connection plus headroom; 0 when none holds many.
func noFileNeed(scs []scenario) uint64 {
	var most int
	for _, sc := range scs {
		if sc.kind == kindIdle || sc.kind == kindReload {
			most = max(most, sc.idle)
		}
	}
	if most == 0 {
		return 0
	}
	return uint64(2*most + noFileHeadroom)
}

// reloadHooks are how a reload run changes the mux's configuration and
// learns that the mux applied it. muxload builds them from -reload-cmd
// and -reload-log; tests with an in-process mux give their own.
type reloadHooks struct {
	// reload makes change k (1, 2, ...).
	reload func(k int) error
	// applied is how many changes the mux has applied since the run
	// began.
	applied func() (int, error)
}

// shellReload runs cmdline with /bin/sh for change k, with MUXLOAD_PID
// (the mux's root process: a master to signal) and MUXLOAD_RELOAD (k, to
// pick which configuration to install) in its environment.
func shellReload(cmdline string, muxPID int) func(k int) error {
	return func(k int) error {
		ctx, cancel := context.WithTimeout(context.Background(), reloadCmdTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
		cmd.Env = append(os.Environ(), "MUXLOAD_PID="+strconv.Itoa(muxPID), "MUXLOAD_RELOAD="+strconv.Itoa(k))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("reload %d: %q: %w: %s", k, cmdline, err, bytes.TrimSpace(out))
		}
		return nil
	}
}

// logCounter counts the lines matching re that a log file gains after
// the counter is made: each is a swap the mux says it applied.
type logCounter struct {
	path    string
	re      *regexp.Regexp
	off     int64  // read up to here
	partial []byte // an unfinished last line
	n       int
}

// newLogCounter starts counting at the log's current end.
func newLogCounter(path string, re *regexp.Regexp) (*logCounter, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("mux log: %w", err)
	}
	return &logCounter{path: path, re: re, off: st.Size()}, nil
}

// applied reads what the log gained and returns the matching lines so
// far.
func (l *logCounter) applied() (int, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return l.n, fmt.Errorf("mux log: %w", err)
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.NewSectionReader(f, l.off, 1<<40))
	if err != nil {
		return l.n, fmt.Errorf("mux log: %w", err)
	}
	l.off += int64(len(b))
	b = append(l.partial, b...)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		if l.re.Match(b[:i]) {
			l.n++
		}
		b = b[i+1:]
	}
	l.partial = slices.Clone(b)
	return l.n, nil
}

// opRecord is one new connection of the load: when it started and how
// long it took, from the load's start.
type opRecord struct {
	start, took time.Duration
	ok          bool
}

// pacedLoad runs workers clients doing op until stopped, all together
// starting a new connection every 1/rate seconds (rate 0: back to back),
// and records every one.
type pacedLoad struct {
	t0       time.Time
	stop     atomic.Bool
	wg       sync.WaitGroup
	recs     [][]opRecord
	firstErr atomic.Pointer[string]
}

// startLoad starts the workers.
func startLoad(workers int, rate float64, op func() error) *pacedLoad {
	l := &pacedLoad{t0: time.Now(), recs: make([][]opRecord, workers)}
	var every time.Duration
	if rate > 0 {
		every = time.Duration(float64(workers) / rate * float64(time.Second))
	}
	for w := range workers {
		l.wg.Go(func() {
			// Worker w starts at w/rate and then every workers/rate: a
			// steady arrival of one connection every 1/rate. A worker
			// behind its schedule starts at once.
			next := l.t0.Add(time.Duration(w) * every / time.Duration(workers))
			for !l.stop.Load() {
				if every > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(every)
				}
				t := time.Now()
				err := op()
				rec := opRecord{start: t.Sub(l.t0), took: time.Since(t), ok: err == nil}
				if err != nil {
					msg := err.Error()
					l.firstErr.CompareAndSwap(nil, &msg)
				}
				l.recs[w] = append(l.recs[w], rec)
			}
		})
	}
	return l
}

// finish stops the workers and returns every connection's record.
func (l *pacedLoad) finish() []opRecord {
	l.stop.Store(true)
	l.wg.Wait()
	var all []opRecord
	for _, r := range l.recs {
		all = append(all, r...)
	}
	return all
}

// cpuSample is the mux's CPU seconds so far at a time from the load's
// start.
type cpuSample struct {
	at  time.Duration
	cpu float64
}

// muxCPUNow reads the mux's CPU seconds so far: its cgroup's when it has
// one, else its /proc tree's.
func muxCPUNow(m meter) (float64, error) {
	if m.cg != nil {
		u, err := m.cg.usage()
		return u.Seconds(), err
	}
	if m.pid == 0 {
		return 0, errors.New("no mux to measure")
	}
	ticks, _, err := m.proc.treeTicks(m.pid)
	return float64(ticks) / clockTicks, err
}

// near says whether t is within w of one of swaps.
func near(t time.Duration, swaps []time.Duration, w time.Duration) bool {
	for _, s := range swaps {
		if t >= s-w && t <= s+w {
			return true
		}
	}
	return false
}

// splitAround sorts the latencies of the connections that started in
// [from, to] and got their echo: around those that started within w of a
// swap, between the others.
func splitAround(recs []opRecord, swaps []time.Duration, w, from, to time.Duration) (around, between []time.Duration) {
	for _, r := range recs {
		if !r.ok || r.start < from || r.start > to {
			continue
		}
		if near(r.start, swaps, w) {
			around = append(around, r.took)
		} else {
			between = append(between, r.took)
		}
	}
	slices.Sort(around)
	slices.Sort(between)
	return around, between
}

// swapCPU is the mux's CPU seconds per swap beyond what the new
// connections around the swaps cost: a sampling interval whose middle is
// within w of a swap counts as around; the CPU per completed connection of
// the intervals between swaps is charged to the connections completed
// around them, and the rest, divided by the swaps, is returned. ends are
// the completion times of the connections that got their echo, sorted.
// ok is false when there is no interval of either kind or no swap.
func swapCPU(samples []cpuSample, ends, swaps []time.Duration, w time.Duration) (perSwap, perConn float64, ok bool) {
	var cpuAround, cpuBetween float64
	var connsAround, connsBetween int
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		lo, _ := slices.BinarySearch(ends, a.at)
		hi, _ := slices.BinarySearch(ends, b.at)
		if near((a.at+b.at)/2, swaps, w) {
			cpuAround += b.cpu - a.cpu
			connsAround += hi - lo
		} else {
			cpuBetween += b.cpu - a.cpu
			connsBetween += hi - lo
		}
	}
	if len(swaps) == 0 || connsBetween == 0 || cpuAround == 0 && connsAround == 0 {
		return 0, 0, false
	}
	perConn = cpuBetween / float64(connsBetween)
	return (cpuAround - perConn*float64(connsAround)) / float64(len(swaps)), perConn, true
}

// baselineCPU is the mux's CPU seconds per swap beyond the load's: the
// CPU per completed connection of the baseline (the same load, no change
// made) is charged to the connections completed in the window, and the
// rest of the window's CPU, divided by the swaps, is returned. ends are
// the completion times of the connections that got their echo, sorted.
// ok is false with no baseline connection or no swap.
func baselineCPU(s reloadStats, ends []time.Duration) (perSwap, perConn float64, ok bool) {
	count := func(from, to time.Duration) int {
		lo, _ := slices.BinarySearch(ends, from)
		hi, _ := slices.BinarySearch(ends, to)
		return hi - lo
	}
	base := count(s.baseFrom, s.baseTo)
	if base == 0 || s.applied == 0 {
		return 0, 0, false
	}
	perConn = s.baseCPU / float64(base)
	return (s.cpu - perConn*float64(count(s.from, s.to))) / float64(s.applied), perConn, true
}

// checkHeld writes a banner on every held connection, batch at a time,
// and counts those that echo it back.
func checkHeld(conns []net.Conn, batch int) (alive int, firstErr error) {
	var n atomic.Int64
	var mu sync.Mutex
	sem := make(chan struct{}, batch)
	var wg sync.WaitGroup
	for i, c := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.SetDeadline(time.Now().Add(opTimeout))
			if err := roundTrip(c, sshBanner); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("held connection %d: %w", i, err)
				}
				mu.Unlock()
				return
			}
			n.Add(1)
		})
	}
	wg.Wait()
	return int(n.Load()), firstErr
}

// reloadStats is what a reload run saw.
type reloadStats struct {
	client      clientCount
	held, alive int
	heldErr     string
	reloads     int // changes made
	applied     int // changes the mux showed it applied
	lagMs       float64
	recs        []opRecord
	window      time.Duration
	from, to    time.Duration // the measured window, from the load's start
	cpu         float64       // the mux's CPU seconds in the window
	// The baseline before the window: the same load, no change.
	baseFrom, baseTo time.Duration
	baseCPU          float64
	// The swaps made with no load after the window.
	quiet           quietRun
	swaps           []time.Duration
	samples         []cpuSample
	use             usage
	firstErr        string
	reloadErr       error
	appliedErr      error
	cpuErr          error
	sampleErr       error
	connsInWindowOK int64
}

// runReload runs one reload-N scenario against addr: see the comment at
// the top of this file.
func runReload(sc scenario, o options, addr string, hooks reloadHooks, m meter) (reloadStats, error) {
	var s reloadStats
	conns, err := openMany(addr, sc.idle, o.idleBatch, o.idleTimeout)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	s.held = len(conns)
	s.client = clientCount{attempts: int64(sc.idle), succeeded: int64(len(conns))}
	if err != nil {
		return s, err
	}

	op := func() error { return sshOnce(addr) }
	load := startLoad(sc.workers, o.reloadRate, op)
	stopPolls := make(chan struct{})
	var polls sync.WaitGroup
	// The CPU, every cpuTick.
	polls.Go(func() {
		t := time.NewTicker(cpuTick)
		defer t.Stop()
		for {
			cpu, err := muxCPUNow(m)
			if err != nil {
				s.sampleErr = err
				return
			}
			s.samples = append(s.samples, cpuSample{at: time.Since(load.t0), cpu: cpu})
			select {
			case <-stopPolls:
				return
			case <-t.C:
			}
		}
	})
	time.Sleep(o.warmup)
	// The baseline: the same load with no change made.
	if o.reloadBaseline > 0 {
		s.baseFrom = time.Since(load.t0)
		c0, err := muxCPUNow(m)
		time.Sleep(o.reloadBaseline)
		c1, err1 := muxCPUNow(m)
		s.baseTo, s.baseCPU = time.Since(load.t0), c1-c0
		if err = errors.Join(err, err1); err != nil {
			s.cpuErr = err
		}
	}

	// The swaps the mux shows, timed as seen, every appliedPoll.
	var mu sync.Mutex
	var swaps []time.Duration
	counted := 0
	poll := func() {
		n, err := hooks.applied()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			s.appliedErr = err
			return
		}
		for ; counted < n; counted++ {
			swaps = append(swaps, time.Since(load.t0))
		}
	}
	poll() // starts the count here
	polls.Go(func() {
		t := time.NewTicker(appliedPoll)
		defer t.Stop()
		for {
			select {
			case <-stopPolls:
				return
			case <-t.C:
				poll()
			}
		}
	})
	appliedNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return counted
	}

	a := m.sample()
	cpuFrom, cpuErr := muxCPUNow(m)
	t0 := time.Now()
	s.from = t0.Sub(load.t0)
	var cmdAt []time.Duration
	// Change k is made at (k-1/2) periods into the window.
	for k := 1; ; k++ {
		at := t0.Add(time.Duration(k)*o.reloadEvery - o.reloadEvery/2)
		if at.After(t0.Add(o.d)) {
			break
		}
		time.Sleep(time.Until(at))
		cmdAt = append(cmdAt, time.Since(load.t0))
		s.reloads++
		if err := hooks.reload(k); err != nil {
			s.reloadErr = err
			break
		}
	}
	time.Sleep(time.Until(t0.Add(o.d)))
	// The last change may still be settling: wait for it, then for the
	// window after it.
	deadline := time.Now().Add(cmp.Or(o.reloadWait, appliedWait))
	for appliedNow() < s.reloads && time.Now().Before(deadline) {
		time.Sleep(appliedPoll)
	}
	time.Sleep(o.reloadWindow)
	b := m.sample()
	cpuTo, cpuErr1 := muxCPUNow(m)
	s.cpu = cpuTo - cpuFrom
	if err := errors.Join(cpuErr, cpuErr1); err != nil {
		s.cpuErr = err
	}
	s.to = time.Since(load.t0)
	s.window = time.Since(t0)
	close(stopPolls)
	polls.Wait()
	s.recs = load.finish()
	s.use = m.between(a, b)
	poll()
	s.swaps, s.applied = swaps, counted
	if p := load.firstErr.Load(); p != nil {
		s.firstErr = *p
	}
	var lags []float64
	for i := 0; i < min(len(cmdAt), len(s.swaps)); i++ {
		lags = append(lags, float64(s.swaps[i]-cmdAt[i])/float64(time.Millisecond))
	}
	if len(lags) > 0 {
		s.lagMs = median(lags)
	}
	for _, r := range s.recs {
		s.client.attempts++
		if r.ok {
			s.client.succeeded++
			if r.start >= s.from && r.start+r.took <= s.to {
				s.connsInWindowOK++
			}
		}
	}

	if o.reloadQuiet > 0 && s.reloadErr == nil && s.applied == s.reloads {
		s.quiet = quietSwaps(o, hooks.reload, func() int { poll(); return appliedNow() }, m, s.reloads+1)
	}

	s.alive, err = checkHeld(conns, o.idleBatch)
	if err != nil {
		s.heldErr = err.Error()
	}
	return s, nil
}

// quietRun is what the swaps made with no load cost.
type quietRun struct {
	made, applied int
	perSwap       float64 // the mux's CPU seconds per swap, its idle CPU taken off
	err           error
}

// The idle CPU around the swaps with no load: measured for idleProbe
// before them, idleSettle after the load stopped (its connections close,
// its garbage is collected), and for idleProbe after them.
const (
	idleSettle = 2 * time.Second
	idleProbe  = 2 * time.Second
)

// quietSwaps makes o.reloadQuiet changes, numbered from first, every
// o.reloadEvery with no load running, and measures the mux's CPU from
// before the first to o.reloadWindow after the last was applied, less
// its idle CPU over as long (the mean rate of idleProbe before and after):
// what the swaps themselves cost, with nothing else for the figure to be
// confused with. applied polls the count of applied changes.
func quietSwaps(o options, reload func(k int) error, applied func() int, m meter, first int) quietRun {
	var q quietRun
	var cpuErr error
	cpuNow := func() float64 {
		c, err := muxCPUNow(m)
		cpuErr = cmp.Or(cpuErr, err)
		return c
	}
	settle, probe := cmp.Or(o.reloadIdle, idleSettle), cmp.Or(o.reloadIdle, idleProbe)
	time.Sleep(settle)
	c0 := cpuNow()
	time.Sleep(probe)
	c1 := cpuNow()
	n0 := applied()
	t0 := time.Now()
	for i := range o.reloadQuiet {
		time.Sleep(time.Until(t0.Add(time.Duration(i)*o.reloadEvery + o.reloadEvery/2)))
		q.made++
		if err := reload(first + i); err != nil {
			q.err = err
			return q
		}
	}
	deadline := time.Now().Add(cmp.Or(o.reloadWait, appliedWait))
	for q.applied = applied() - n0; q.applied < q.made && time.Now().Before(deadline); q.applied = applied() - n0 {
		time.Sleep(appliedPoll)
	}
	time.Sleep(o.reloadWindow)
	c2 := cpuNow()
	took := time.Since(t0)
	q.applied = applied() - n0
	time.Sleep(probe)
	c3 := cpuNow()
	if q.err = cpuErr; q.err != nil {
		return q
	}
	idleRate := (c1 - c0 + c3 - c2) / (2 * probe.Seconds())
	if q.applied > 0 {
		q.perSwap = (c2 - c1 - idleRate*took.Seconds()) / float64(q.applied)
	}
	return q
}

// measureReload runs a reload-N scenario and records its figures.
func (r *runner) measureReload(sc scenario, m meter, res *result) (clientCount, error) {
	hooks := r.reloadHooks
	if hooks.reload == nil {
		hooks.reload = shellReload(r.opt.reloadCmd, m.pid)
	}
	if hooks.applied == nil {
		lc, err := newLogCounter(r.muxLog, r.opt.reloadLog)
		if err != nil {
			return clientCount{}, err
		}
		hooks.applied = lc.applied
	}
	st, err := runReload(sc, r.opt, r.target.addr(routeSSH), hooks, m)
	res.Idle, res.Workers = st.held, sc.workers
	if err != nil {
		return st.client, err
	}
	res.HeldAlive, res.HeldErr = st.alive, st.heldErr
	res.Reloads, res.ReloadsApplied, res.ReloadLagMs = st.reloads, st.applied, st.lagMs
	res.ReloadRate, res.ReloadEveryS, res.ReloadWindowMs = r.opt.reloadRate, r.opt.reloadEvery.Seconds(), float64(r.opt.reloadWindow)/float64(time.Millisecond)
	res.Seconds = st.window.Seconds()
	for _, rec := range st.recs {
		if rec.ok {
			res.Conns++
		} else {
			res.Failed++
		}
	}
	if n := res.Conns + res.Failed; n > 0 {
		res.FailPct = 100 * float64(res.Failed) / float64(n)
	}
	res.FirstErr = st.firstErr
	res.ConnPerS = float64(st.connsInWindowOK) / st.window.Seconds()
	w := r.opt.reloadWindow
	around, between := splitAround(st.recs, st.swaps, w, st.from, st.to)
	all := append(slices.Clone(around), between...)
	l := summarize(all)
	res.P50ms, res.P90ms, res.P99ms, res.MaxMs = l.P50, l.P90, l.P99, l.Max
	la, lb := summarize(around), summarize(between)
	res.AroundConns, res.BetweenConns = len(around), len(between)
	res.AroundP50ms, res.AroundP99ms, res.AroundMaxMs = la.P50, la.P99, la.Max
	res.BetweenP50ms, res.BetweenP99ms = lb.P50, lb.P99
	recordUsage(res, st.use)
	var ends []time.Duration
	for _, rec := range st.recs {
		if rec.ok {
			ends = append(ends, rec.start+rec.took)
		}
	}
	slices.Sort(ends)
	if per, perConn, ok := baselineCPU(st, ends); ok && st.cpuErr == nil {
		res.CPUmsReload, res.CPUusConn = per*1e3, perConn*1e6
		res.BaselineS = (st.baseTo - st.baseFrom).Seconds()
	}
	if per, _, ok := swapCPU(st.samples, ends, st.swaps, w); ok && st.sampleErr == nil {
		res.CPUmsReloadAround = per * 1e3
	}
	res.QuietReloads, res.QuietReloadsApplied = st.quiet.made, st.quiet.applied
	if st.quiet.applied > 0 && st.quiet.err == nil {
		res.CPUmsReloadQuiet = st.quiet.perSwap * 1e3
	}
	switch {
	case st.reloadErr != nil:
		return st.client, st.reloadErr

	case st.appliedErr != nil:
		return st.client, fmt.Errorf("reading the applied swaps: %w", st.appliedErr)
	case st.applied != st.reloads:
		return st.client, fmt.Errorf("the mux showed %d applied swaps for %d reloads (-reload-log)", st.applied, st.reloads)
	case st.quiet.err != nil:
		return st.client, fmt.Errorf("swaps with no load: %w", st.quiet.err)
	case st.quiet.applied != st.quiet.made:
		return st.client, fmt.Errorf("with no load, the mux showed %d applied swaps for %d reloads (-reload-log)", st.quiet.applied, st.quiet.made)
	case st.cpuErr != nil || st.sampleErr != nil:
		return st.client, fmt.Errorf("reading the mux's CPU: %w", errors.Join(st.cpuErr, st.sampleErr))
	}
	return st.client, nil
}
