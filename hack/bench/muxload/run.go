//go:build linux

package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"
)

// options are the flags of `muxload run`.
type options struct {
	peer      string
	rep       int
	addr      string   // the mux's listener
	direct    bool     // no mux: dial the backends themselves
	cmd       string   // starts the mux; empty: it runs already
	pid       int      // with no cmd: the running mux's PID, for CPU and memory
	scenarios []string // in order
	routes    []string // the routes the peer implements
	basePort  int
	// peerFDs is how many descriptors the peer holds per idle
	// connection when it is known to hold more than its two sockets
	// (0: two).
	peerFDs int

	workers     int
	warmup, d   time.Duration
	tputBytes   int64
	tputStreams int
	tputTimeout time.Duration
	idleBatch   int
	idleSettle  time.Duration
	idleTimeout time.Duration
	udpSize     int // datagram size of udp-rate-N
	udpWindow   int // datagrams in flight per session
	udpSetup    int // sessions udp-setup opens

	reloadCmd      string         // reload-N: makes a change, run every reloadEvery
	reloadEvery    time.Duration  // between changes
	reloadLog      *regexp.Regexp // a line the mux logs for each change it applied
	reloadWindow   time.Duration  // how far from a swap a new connection counts as around it
	reloadRate     float64        // new connections a second during reload-N; 0: back to back
	reloadBaseline time.Duration  // the same load with no change, before the window: the CPU to take off
	reloadQuiet    int            // changes made after the window with no load
	reloadWait     time.Duration  // bound on the wait for the last change to show; 0: appliedWait
	reloadIdle     time.Duration  // settle and probe of the idle CPU with no load; 0: idleSettle, idleProbe

	quiet        float64 // cores of other load that make a run disturbed
	quietWait    time.Duration
	retries      int // redos of a disturbed run
	cgroup       bool
	readyTimeout time.Duration
	drainTimeout time.Duration
	logDir       string
}

// runner runs scenarios against one peer with backends it owns.
type runner struct {
	opt      options
	proc     procFS
	backends *backends
	target   target
	out      io.Writer // JSON lines
	log      io.Writer // one human line per run

	// held are the UDP sessions of the run being measured, closed only
	// after the probes: a closed socket's port may be the next probe's,
	// and a mux rightly takes a datagram from a session's address for
	// that session.
	held []*net.UDPConn

	// muxLog is the log file of the mux running now ("" without -cmd).
	muxLog string
	// reloadHooks replace -reload-cmd and -reload-log when set (tests).
	reloadHooks reloadHooks

	mu      sync.Mutex
	current *muxProcess // the mux running now, for abort
	aborted bool
}

// track records the mux that runs now (nil: none), so that abort can stop
// it. It refuses a new mux once aborted.
func (r *runner) track(m *muxProcess) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = m
	return !r.aborted
}

// abort stops the running mux, if any, and any mux started after: the
// mux runs in a process group of its own, so a signal that stops muxload
// does not reach it, and without this it would outlive the run.
func (r *runner) abort() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.aborted = true
	if r.current != nil {
		_ = r.current.stop()
		r.current = nil
	}
}

// errRunsFailed says that some run failed or misrouted; its JSON line says
// which and why.
var errRunsFailed = errors.New("some runs failed or misrouted: see their JSON lines")

// runAll runs every scenario in order, each in a fresh mux, and writes one
// JSON line per kept run. Scenarios the peer cannot take (a route it does
// not implement, memory of no mux) are skipped with a line on the log.
func (r *runner) runAll() error {
	failed := false
	for _, name := range r.opt.scenarios {
		sc, err := parseScenario(name, r.opt.workers)
		if err != nil {
			return err
		}
		if why := r.skip(sc); why != "" {
			r.logf("%s %s: skipped, %s", r.opt.peer, sc.name, why)
			continue
		}
		res := r.runWithRetries(sc)
		if res.Err != "" || !res.RouteOK || lostConnections(res) {
			failed = true
		}
		if err := json.NewEncoder(r.out).Encode(res); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
		r.logf("%s", describe(res))
	}
	if failed {
		return errRunsFailed
	}
	return nil
}

// logf writes one line to the human log; a log that cannot be written
// must not stop a measurement.
func (r *runner) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(r.log, format+"\n", args...)
}

// skip says why the peer cannot run sc, or "".
func (r *runner) skip(sc scenario) string {
	if !slices.Contains(r.opt.routes, sc.route) {
		return "the peer does not route " + sc.route
	}
	if sc.kind == kindReload && (r.opt.direct || r.opt.reloadCmd == "" && r.reloadHooks.reload == nil) {
		return "no mux to reload"
	}
	idle := sc.kind == kindIdle || sc.kind == kindUDPIdle
	if idle && r.opt.direct {
		return "no mux to measure the memory of"
	}
	if idle && r.opt.peerFDs > 2 {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(sc.idle*r.opt.peerFDs) > lim.Cur {
			return fmt.Sprintf("the peer holds %d descriptors per idle connection: %d need %d, the open-file limit is %d",
				r.opt.peerFDs, sc.idle, sc.idle*r.opt.peerFDs, lim.Cur)
		}
	}
	if idle && r.opt.cmd == "" && r.opt.pid == 0 {
		return "no -pid to measure the memory of"
	}
	return ""
}

// runWithRetries runs sc, and again up to -retries times while other load
// disturbed it; the last try is kept, marked if still disturbed. Memory
// is not redone: other load does not change what the mux holds.
func (r *runner) runWithRetries(sc scenario) result {
	for attempt := 1; ; attempt++ {
		res := r.runOnce(sc, attempt)
		// Idle and reload runs are not redone: other load does not change
		// what the mux holds, and a reload run is long.
		if !res.Disturbed || sc.kind == kindIdle || sc.kind == kindUDPIdle || sc.kind == kindReload || attempt > r.opt.retries || res.Err != "" {
			return res
		}
		r.logf("%s %s: other load %.2f cores before, %.2f during: again",
			r.opt.peer, sc.name, res.PreLoad, res.Other)
	}
}

// runOnce starts a fresh mux, waits until it routes, runs sc, checks the
// routing and stops the mux.
func (r *runner) runOnce(sc scenario, attempt int) result {
	res := result{Peer: r.opt.peer, Scenario: sc.name, Rep: r.opt.rep, Attempt: attempt,
		Start: time.Now().UTC().Format(time.RFC3339), MuxAlive: true}
	if r.opt.quiet > 0 {
		res.PreLoad = waitQuiet(r.proc, r.opt.quiet, r.opt.quietWait)
	}
	m := meter{proc: r.proc, pid: r.opt.pid}
	var mux *muxProcess
	if r.opt.cmd != "" {
		var err error
		if mux, err = r.startMux(sc, attempt); err != nil {
			res.Err = err.Error()
			return res
		}
		if !r.track(mux) {
			_ = mux.stop()
			res.Err = "aborted"
			return res
		}
		m.pid, m.cg = mux.pid(), mux.cg
	}
	alive := func() bool { return mux == nil || mux.alive() }
	if err := r.waitReady(sc, alive); err != nil {
		res.Err = err.Error()
	} else {
		r.measure(sc, m, &res)
		res.MuxAlive = alive()
	}
	if mux != nil && r.track(nil) {
		if err := mux.stop(); err != nil && res.Err == "" {
			res.Err = err.Error()
		}
	}
	res.BackendsDrain = r.backends.drain(r.opt.drainTimeout)
	res.Disturbed = r.opt.quiet > 0 && (res.PreLoad > r.opt.quiet || res.Other > r.opt.quiet)
	return res
}

// measure runs the scenario's load, fills res and checks the routing.
func (r *runner) measure(sc scenario, m meter, res *result) {
	before := r.backends.counts()
	var client clientCount
	var err error
	switch sc.kind {
	case kindConn:
		client, err = r.measureConns(sc, m, res)
	case kindTput:
		client, err = r.measureTput(m, res)
	case kindIdle:
		client, err = r.measureIdle(sc, m, res)
	case kindUDPRate:
		client, err = r.measureUDPRate(sc, m, res)
	case kindUDPSetup:
		client, err = r.measureUDPSetup(sc, m, res)
	case kindUDPIdle:
		client, err = r.measureUDPIdle(sc, m, res)
	case kindReload:
		client, err = r.measureReload(sc, m, res)
	}
	if err != nil {
		res.Err = err.Error()
	}
	delta := routeDelta(before, r.backends.counts())
	res.Routed, res.ClientConns, res.ClientOK = delta, client.attempts, client.succeeded
	rerr := checkRoutes(delta, sc.route, client.succeeded, client.attempts)
	if rerr == nil {
		res.ProbedRoutes = sameTransport(r.opt.routes, sc.udp())
		rerr = probeRoutes(r.target, r.backends, res.ProbedRoutes)
	}
	res.RouteOK = rerr == nil
	if rerr != nil {
		res.RouteErr = rerr.Error()
	}
	closeAll(r.held)
	r.held = nil
}

// sameTransport is the routes of one transport: UDP ones or TCP ones.
func sameTransport(routes []string, udp bool) []string {
	var out []string
	for _, rt := range routes {
		if isUDPRoute(rt) == udp {
			out = append(out, rt)
		}
	}
	return out
}

// measureConns runs a connection loop and records rate, latency and CPU
// (for lat-bulk, the bulk streams' CPU included).
func (r *runner) measureConns(sc scenario, m meter, res *result) (clientCount, error) {
	var stopBulk func() (clientCount, error)
	if sc.bulk {
		var err error
		if stopBulk, err = startBulk(r.target.addr(routeSSH), r.opt.tputStreams); err != nil {
			return clientCount{}, err
		}
		res.BulkStreams = r.opt.tputStreams
	}
	st := connLoop(sc.workers, r.opt.warmup, r.opt.d, r.target.routeOp(sc.route), m)
	var bulkErr error
	if stopBulk != nil {
		var bc clientCount
		bc, bulkErr = stopBulk()
		st.client.attempts += bc.attempts
		st.client.succeeded += bc.succeeded
	}
	l := summarize(st.lat)
	res.Workers, res.Seconds, res.Conns, res.Failed = sc.workers, st.window.Seconds(), st.ok, st.failed
	if n := st.ok + st.failed; n > 0 {
		res.FailPct = 100 * float64(st.failed) / float64(n)
	}
	res.ConnPerS = float64(st.ok) / st.window.Seconds()
	res.P50ms, res.P90ms, res.P99ms, res.MaxMs = l.P50, l.P90, l.P99, l.Max
	res.FirstErr = st.firstErr
	recordUsage(res, st.use)
	if st.ok > 0 && st.use.Source != "none" {
		res.CPUusConn = res.MuxCPU / float64(st.ok) * 1e6
	}
	return st.client, bulkErr
}

// measureTput runs the throughput streams and records MB/s and CPU per GB.
func (r *runner) measureTput(m meter, res *result) (clientCount, error) {
	st, err := runTput(r.target.addr(routeSSH), r.opt.tputStreams, r.opt.tputBytes, r.opt.tputTimeout, m)
	res.Streams, res.Bytes, res.Seconds = r.opt.tputStreams, st.bytes, st.elapsed.Seconds()
	if err != nil {
		return st.client, err
	}
	res.MBps = float64(st.bytes) / st.elapsed.Seconds() / 1e6
	recordUsage(res, st.use)
	if st.use.Source != "none" {
		res.CPUsPerG = res.MuxCPU / (float64(st.bytes) / 1e9)
	}
	return st.client, nil
}

// measureIdle holds the idle connections and records memory per
// connection, from the mux tree's Pss and Rss.
func (r *runner) measureIdle(sc scenario, m meter, res *result) (clientCount, error) {
	mem := func() (memory, error) { return r.proc.treeMemory(m.pid) }
	st, err := runIdle(r.target.addr(routeSSH), sc.idle, r.opt.idleBatch, r.opt.idleSettle, r.opt.idleTimeout, mem)
	return recordIdle(res, st, err)
}

// measureUDPRate runs a datagram-rate run and records datagrams/s, MB/s,
// loss and CPU per million datagrams.
func (r *runner) measureUDPRate(sc scenario, m meter, res *result) (clientCount, error) {
	size := cmp.Or(sc.size, r.opt.udpSize)
	st, err := runUDPRate(r.target.udp, r.target.addr(routeUDPAny), sc.sessions, r.opt.udpWindow, size, r.opt.warmup, r.opt.d, m)
	r.held = st.held
	res.Sessions, res.DgramSize, res.Window, res.Seconds = sc.sessions, size, r.opt.udpWindow, st.window.Seconds()
	res.Datagrams, res.FirstErr = st.echoed, st.firstErr
	if err != nil {
		return st.client, err
	}
	res.DgramPerS = float64(st.echoed) / st.window.Seconds()
	res.MBps = res.DgramPerS * float64(size) / 1e6
	if st.sent > 0 {
		res.LossPct = 100 * float64(st.lost) / float64(st.sent)
	}
	recordUsage(res, st.use)
	if st.use.Source != "none" {
		res.CPUsPerMDgram = res.MuxCPU / (2 * float64(st.echoed) / 1e6)
	}
	return st.client, nil
}

// measureUDPSetup opens -udp-setup-sessions sessions and records sessions
// per second, set-up latency and CPU per session.
func (r *runner) measureUDPSetup(sc scenario, m meter, res *result) (clientCount, error) {
	st, err := runUDPSetup(r.target.udp, r.target.addr(routeUDPAny), r.opt.udpSetup, sc.workers, r.opt.idleTimeout, m)
	r.held = st.held
	res.Workers, res.Seconds, res.Sessions = sc.workers, st.elapsed.Seconds(), st.ok
	l := summarize(st.lat)
	res.P50ms, res.P90ms, res.P99ms, res.MaxMs = l.P50, l.P90, l.P99, l.Max
	if err != nil {
		return st.client, err
	}
	res.SessionsPerS = float64(st.ok) / st.elapsed.Seconds()
	recordUsage(res, st.use)
	if st.ok > 0 && st.use.Source != "none" {
		res.CPUusSession = res.MuxCPU / float64(st.ok) * 1e6
	}
	return st.client, nil
}

// measureUDPIdle holds idle UDP sessions and records memory per session.
func (r *runner) measureUDPIdle(sc scenario, m meter, res *result) (clientCount, error) {
	mem := func() (memory, error) { return r.proc.treeMemory(m.pid) }
	st, held, err := runUDPIdle(r.target.udp, r.target.addr(routeUDPAny), sc.idle, r.opt.idleBatch, r.opt.idleSettle, r.opt.idleTimeout, mem)
	r.held = held
	return recordIdle(res, st, err)
}

// recordIdle copies an idle run's memory figures into res, and the memory
// per connection or session when the run held all it opened (err nil).
func recordIdle(res *result, st idleStats, err error) (clientCount, error) {
	res.Idle = st.opened
	res.PSSBeforeKB, res.PSSAfterKB = st.before.pssKB, st.after.pssKB
	res.RSSBeforeKB, res.RSSAfterKB = st.before.rssKB, st.after.rssKB
	res.MuxProcs = st.after.procs
	if err != nil {
		return st.client, err
	}
	res.PSSKBConn = float64(st.after.pssKB-st.before.pssKB) / float64(st.opened)
	res.RSSKBConn = float64(st.after.rssKB-st.before.rssKB) / float64(st.opened)
	return st.client, nil
}

// recordUsage copies a window's CPU figures into res.
func recordUsage(res *result, u usage) {
	res.MuxCPU, res.MuxProcCPU, res.CPUSource = u.MuxCPU, u.MuxProcCPU, u.Source
	res.MuxProcs, res.SelfCPU, res.Other, res.Steal = u.MuxProcs, u.SelfCPU, u.OtherCores, u.StealCores
	if u.Err != nil && res.Err == "" {
		res.Err = "measure CPU: " + u.Err.Error()
	}
}

// lostConnections says whether a reload run failed new connections or
// lost held ones: a reload must do neither.
func lostConnections(r result) bool {
	return r.Reloads > 0 && (r.Failed > 0 || r.HeldAlive < r.Idle)
}

// unsafeName matches what may not appear in a file or cgroup name.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// startMux starts the peer's command once the mux's address is free.
func (r *runner) startMux(sc scenario, attempt int) (*muxProcess, error) {
	if err := waitFree(r.opt.addr, r.opt.readyTimeout); err != nil {
		return nil, err
	}
	name := unsafeName.ReplaceAllString(fmt.Sprintf("%s-%s-%d-%d", r.opt.peer, sc.name, r.opt.rep, attempt), "_")
	logPath := filepath.Join(r.opt.logDir, unsafeName.ReplaceAllString(r.opt.peer, "_")+".log")
	if err := appendLine(logPath, "=== muxload "+name+" "+time.Now().UTC().Format(time.RFC3339)); err != nil {
		return nil, err
	}
	r.muxLog = logPath
	return startMux(r.opt.cmd, logPath, name, r.opt.cgroup)
}

// waitReady waits until an SSH-routed connection (for a UDP scenario: a
// udp-any session) gets its echo through the target, failing early when
// the mux has exited. The readiness connection is made before the run's
// counts are taken.
func (r *runner) waitReady(sc scenario, alive func() bool) error {
	deadline := time.Now().Add(r.opt.readyTimeout)
	what, once := "SSH connection", func() error { return sshOnce(r.target.addr(routeSSH)) }
	if sc.udp() {
		what, once = "UDP session", func() error { return udpOnce(r.target.udp, r.target.addr(routeUDPAny), routeUDPAny) }
	}
	var err error
	for time.Now().Before(deadline) {
		if !alive() {
			return fmt.Errorf("the mux exited before it routed a %s (see its log)", what)
		}
		if err = once(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no %s routed in %v: %w", what, r.opt.readyTimeout, err)
}

// waitFree waits until nothing accepts connections on addr over TCP and
// nothing holds it over UDP: the last mux has let go of it, and no one
// else's proxy would be measured.
func waitFree(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			pc, uerr := net.ListenPacket("udp", addr)
			if uerr == nil {
				return pc.Close()
			}
		} else {
			_ = c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is in use by another process", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appendLine appends one line to a file.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	_, werr := fmt.Fprintln(f, line)
	return errors.Join(werr, f.Close())
}

// describe is a run's human line.
func describe(r result) string {
	s := fmt.Sprintf("%s %s rep %d:", r.Peer, r.Scenario, r.Rep)
	switch {
	case r.Reloads > 0:
		s += fmt.Sprintf(" %d/%d swaps applied (lag %.0f ms) with %d held, %d/%d alive; %.0f conn/s, %d failed; p99 %.2f ms around swaps, %.2f between; mux %.2f ms CPU/swap (%.2f sampled around swaps, %.2f with no load)",
			r.ReloadsApplied, r.Reloads, r.ReloadLagMs, r.Idle, r.HeldAlive, r.Idle, r.ConnPerS, r.Failed, r.AroundP99ms, r.BetweenP99ms, r.CPUmsReload, r.CPUmsReloadAround, r.CPUmsReloadQuiet)
		if lostConnections(r) {
			s += " NEW CONNECTIONS FAILED OR HELD ONES LOST"
		}
	case r.ConnPerS > 0:
		s += fmt.Sprintf(" %.0f conn/s, p50 %.2f ms, p99 %.2f ms, %.1f%% failed, mux %.0f µs/conn",
			r.ConnPerS, r.P50ms, r.P99ms, r.FailPct, r.CPUusConn)
	case r.DgramPerS > 0:
		s += fmt.Sprintf(" %.0f datagrams/s each way, %.0f MB/s, %.2f%% lost, mux %.2f s per million datagrams",
			r.DgramPerS, r.MBps, r.LossPct, r.CPUsPerMDgram)
	case r.MBps > 0:
		s += fmt.Sprintf(" %.0f MB/s with %d streams, mux %.2f s/GB", r.MBps, r.Streams, r.CPUsPerG)
	case r.SessionsPerS > 0:
		s += fmt.Sprintf(" %.0f sessions/s, p50 %.2f ms, p99 %.2f ms, mux %.0f µs/session",
			r.SessionsPerS, r.P50ms, r.P99ms, r.CPUusSession)
	case r.Idle > 0:
		s += fmt.Sprintf(" %d idle, %.1f KB/conn PSS (%.1f RSS), %d procs", r.Idle, r.PSSKBConn, r.RSSKBConn, r.MuxProcs)
	}
	s += fmt.Sprintf(" [cpu %s, other load %.2f/%.2f cores]", r.CPUSource, r.PreLoad, r.Other)
	if r.RouteOK {
		s += " routes ok"
	} else {
		s += " ROUTES: " + r.RouteErr
	}
	if !r.MuxAlive {
		s += " MUX DIED"
	}
	if r.Err != "" {
		s += " ERROR: " + r.Err
	}
	return s
}
