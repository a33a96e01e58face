//go:build linux

// Command muxload is PortMux's load generator for protocol-sniffing
// multiplexers: anything that shares one port between SSH, TLS passed
// through by SNI and a plain fallback, as `portmux serve`, haproxy in tcp
// mode and sslh do. hack/bench.sh runs it against each of them in turn;
// the README's Performance table comes from it.
//
//	muxload run -peer portmux -cmd 'exec portmux serve -f bench.yaml' -scenarios conn-ssh,tput
//	muxload run -peer direct -direct -scenarios conn-ssh,conn-tls
//	muxload table results.jsonl > table.md
//	muxload backends -for 10m
//
// It starts its own backends on 127.0.0.1 (base port 17000): 17001 an
// echo that stands for SSH, 17002 and 17004 TLS echo servers for the
// server names a.bench.test and b.bench.test, 17003 a plain echo for
// everything else. The mux listens on 127.0.0.1:17443 and must route SSH
// (first bytes "SSH-2.0") to 17001, SNI b.bench.test to 17004, SNI
// a.bench.test to 17002 and anything else to 17003, passing TLS through.
//
// Each scenario gets a fresh mux from -cmd (a shell command line, in a
// process group of its own), which must stay in the foreground: its
// process tree is what is measured, CPU from /proc/PID/stat (and from a
// cgroup of its own where one can be made, which also counts children
// that exit unreaped), memory from /proc/PID/smaps_rollup. After every
// run the backends' accept counts must show every connection on the right
// backend, and one probe per route must reach its backend.
//
// Scenarios:
//
//	conn-ssh  -c workers loop {connect, send an SSH banner, read its echo,
//	          close} for -warmup then -d: conn/s, latency, mux CPU per conn
//	conn-tls  the same with a full TLS handshake (SNI a.bench.test, Go's
//	          defaults, no resumption) and a line echoed inside it
//	lat-ssh, lat-tls  the same with one worker: the mux's own latency
//	tput      -tput-streams SSH-routed connections write -tput-bytes in
//	          all, in 64 KiB writes, reading the echo back: MB/s one way,
//	          mux CPU per GB
//	idle-N    hold N SSH-routed connections (banner echoed, so the mux
//	          holds both legs): memory per connection, from the tree's Pss
//	          and Rss before and after
//	reload-N  hold N SSH-routed connections, run -c workers opening new
//	          ones at -reload-rate a second, and through -d run
//	          -reload-cmd every -reload-every: new connections failed
//	          (must be 0), p50/p99 of those started within -reload-window
//	          of a swap against the others, held connections still
//	          echoing at the end (all must be), mux CPU per swap beyond
//	          the load's, whose CPU per connection comes from a
//	          -reload-baseline of the same load before the window, and
//	          with no load, -reload-quiet changes after it. Each
//	          swap must show in the mux's log as a line matching
//	          -reload-log, or the run is an error. The open-file limit is
//	          raised to 2N plus headroom (the mux inherits it).
//
// UDP scenarios run against the same address over UDP, where the mux must
// route a session whose first datagram is a DNS query to 17011 (udp-dns)
// and any other to 17012 (udp-any); both backends echo and count hellos,
// the first datagram of every session, to check the routing:
//
//	udp-rate-N   N udp-any sessions each keep -udp-window datagrams of
//	             -udp-size bytes in flight (sent and read in batches) for
//	             -warmup then -d: datagrams/s each way, MB/s, loss, mux CPU
//	             per million datagrams relayed (both ways counted)
//	udp-small-N  the same with 64-byte datagrams
//	udp-setup    -c workers open -udp-setup-sessions sessions (a new socket,
//	             a hello, its echo), held until all are open: sessions/s,
//	             set-up latency, mux CPU per session
//	udp-idle-N   hold N sessions: memory per session, as idle-N
//
// Only loopback addresses are used, and every run is bounded: connection
// loops by -warmup and -d, every connection by 10 s, throughput by
// -tput-timeout, opening idle connections by -idle-timeout, a mux's start
// by -ready-timeout and its stop by 3 s before SIGKILL.
//
// Output: one JSON object per run, appended to -out (stdout when empty),
// and a human line per run on stderr. `muxload table` renders JSON lines
// as markdown: medians over repeats, one column per peer.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/portmux/portmux/hack/internal/harness"
)

func main() {
	harness.Main("muxload",
		harness.Command{Name: "run", Run: cmdRun},
		harness.Command{Name: "table", Run: cmdTable},
		harness.Command{Name: "backends", Run: cmdBackends})
}

// cmdRun is `muxload run`: start the backends, run the scenarios against
// one peer, write the results.
func cmdRun(args []string) error {
	opt, out, err := parseRunFlags(args)
	if err != nil {
		return err
	}
	w := os.Stdout
	if out != "" {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("results: %w", err)
		}
		defer func() { _ = f.Close() }()
		w = f
	}
	if err := os.MkdirAll(opt.logDir, 0o755); err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	if opt.cmd != "" {
		if err := waitFree(opt.addr, time.Second); err != nil {
			return err
		}
	}
	var scs []scenario
	for _, name := range opt.scenarios {
		sc, err := parseScenario(name, opt.workers)
		if err != nil {
			return err
		}
		scs = append(scs, sc)
	}
	if need := noFileNeed(scs); need > 0 {
		if err := raiseNoFile(need); err != nil {
			return err
		}
	}
	b, err := startBackends(opt.basePort)
	if err != nil {
		return err
	}
	defer b.close()
	r := &runner{opt: opt, proc: procFS{root: "/proc"}, backends: b,
		target: target{mux: opt.addr, direct: opt.direct, backends: b, udp: newUDPDialer()}, out: w, log: os.Stderr}
	stopOnSignal(r)
	return r.runAll()
}

// stopOnSignal makes SIGINT, SIGTERM and SIGHUP stop the running mux
// before muxload exits.
func stopOnSignal(r *runner) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		r.abort()
		fmt.Fprintln(os.Stderr, "muxload: stopped by", s)
		code := 1
		if n, ok := s.(syscall.Signal); ok {
			code = 128 + int(n)
		}
		os.Exit(code)
	}()
}

// parseRunFlags reads and checks the flags of `muxload run`; out is the
// results file.
func parseRunFlags(args []string) (opt options, out string, err error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&opt.peer, "peer", "", "the peer's name in the results (required)")
	fs.IntVar(&opt.rep, "rep", 1, "repeat number, recorded in the results (the caller interleaves repeats)")
	fs.StringVar(&opt.addr, "addr", "127.0.0.1:17443", "the mux's listener (loopback only)")
	fs.BoolVar(&opt.direct, "direct", false, "no mux: the client dials the backends (the baseline)")
	fs.IntVar(&opt.peerFDs, "peer-fds-per-conn", 0, "descriptors the peer holds per idle connection, when more than its two sockets: idle-N scenarios it cannot hold under the open-file limit are skipped (0: two)")
	fs.StringVar(&opt.cmd, "cmd", "", "shell command line that runs the mux in the foreground, started afresh for every scenario")
	fs.IntVar(&opt.pid, "pid", 0, "without -cmd: the PID of a mux started by hand, for its CPU and memory")
	scen := fs.String("scenarios", "conn-ssh,conn-tls,lat-ssh,lat-tls,tput,idle-400", "comma-separated scenarios, run in this order")
	routes := fs.String("routes", strings.Join(append(slices.Clone(routeNames), udpRouteNames...), ","), "the routes the peer implements; scenarios needing others are skipped, and those of the scenario's transport are probed after every run")
	fs.IntVar(&opt.basePort, "base-port", 17000, "backends listen on 127.0.0.1 at base+1 (ssh), +2 (tls-a), +3 (plain), +4 (tls-b)")
	fs.IntVar(&opt.workers, "c", 32, "workers in conn-ssh and conn-tls")
	fs.DurationVar(&opt.warmup, "warmup", time.Second, "unmeasured load before each connection scenario's window")
	fs.DurationVar(&opt.d, "d", 5*time.Second, "each connection scenario's measured window")
	size := fs.String("tput-bytes", "1GiB", "bytes all throughput streams write together (and read back)")
	fs.IntVar(&opt.tputStreams, "tput-streams", 4, "throughput streams")
	fs.DurationVar(&opt.tputTimeout, "tput-timeout", time.Minute, "bound on a throughput run")
	fs.IntVar(&opt.idleBatch, "idle-batch", 64, "idle connections opened at once")
	fs.DurationVar(&opt.idleSettle, "idle-settle", 2*time.Second, "wait between opening the idle connections and reading memory")
	fs.DurationVar(&opt.idleTimeout, "idle-timeout", 2*time.Minute, "bound on opening the idle connections")
	fs.IntVar(&opt.udpSize, "udp-size", 1200, "datagram size of udp-rate-N, in bytes")
	fs.IntVar(&opt.udpWindow, "udp-window", 16, "datagrams each session of udp-rate-N and udp-small-N keeps in flight")
	fs.StringVar(&opt.reloadCmd, "reload-cmd", "", "reload-N: shell command that changes the mux's configuration, run every -reload-every with MUXLOAD_PID (the mux's root process) and MUXLOAD_RELOAD (1, 2, ...) set")
	fs.DurationVar(&opt.reloadEvery, "reload-every", time.Second, "reload-N: time between changes")
	reloadLog := fs.String("reload-log", "", "reload-N: regular expression of the line the mux logs for each change it applied (required with reload-N)")
	fs.DurationVar(&opt.reloadWindow, "reload-window", 250*time.Millisecond, "reload-N: new connections started this close to a swap count as around it")
	fs.DurationVar(&opt.reloadBaseline, "reload-baseline", 5*time.Second, "reload-N: the same load with no change before the window, whose CPU per connection is taken off the window's to leave the swaps' CPU")
	fs.IntVar(&opt.reloadQuiet, "reload-quiet", 5, "reload-N: changes made after the window with the load stopped, for the CPU of a swap alone (0: none)")
	fs.Float64Var(&opt.reloadRate, "reload-rate", 1000, "reload-N: new connections a second from the -c workers together (0: back to back)")
	fs.IntVar(&opt.udpSetup, "udp-setup-sessions", 5000, "sessions udp-setup opens (and holds until the last is open)")
	fs.Float64Var(&opt.quiet, "quiet", 0.3, "cores of other load, before or during a run, that make it disturbed (0: do not wait or check)")
	fs.DurationVar(&opt.quietWait, "quiet-wait", 30*time.Second, "longest wait for a quiet machine before a run")
	fs.IntVar(&opt.retries, "retries", 1, "times a disturbed connection or throughput run is redone")
	fs.BoolVar(&opt.cgroup, "cgroup", true, "start the mux in a cgroup v2 of its own when one can be made (exact CPU of children that exit unreaped)")
	fs.DurationVar(&opt.readyTimeout, "ready-timeout", 10*time.Second, "bound on a mux's start, until it routes an SSH connection")
	fs.DurationVar(&opt.drainTimeout, "drain-timeout", 5*time.Second, "bound on waiting for the backends to close their connections after a run")
	fs.StringVar(&opt.logDir, "logdir", "logs", "directory of the muxes' logs, one file per peer")
	fs.StringVar(&out, "out", "", "append JSON results to this file (default: stdout)")
	if err := fs.Parse(args); err != nil {
		return opt, "", err
	}
	if opt.peer == "" {
		return opt, "", errors.New("-peer is required")
	}
	if opt.direct && (opt.cmd != "" || opt.pid != 0) {
		return opt, "", errors.New("-direct runs no mux: no -cmd or -pid")
	}
	if err := harness.Loopback(opt.addr); err != nil {
		return opt, "", err
	}
	if opt.basePort < 0 || opt.basePort > 65535-4 {
		return opt, "", fmt.Errorf("-base-port %d is out of range", opt.basePort)
	}
	if opt.tputBytes, err = harness.ParseSize(*size); err != nil {
		return opt, "", fmt.Errorf("-tput-bytes: %w", err)
	}
	if opt.workers < 1 || opt.tputStreams < 1 || opt.idleBatch < 1 || opt.d <= 0 || opt.udpWindow < 1 || opt.udpSetup < 1 {
		return opt, "", errors.New("-c, -tput-streams, -idle-batch, -d, -udp-window and -udp-setup-sessions must be positive")
	}
	if opt.udpSize < 1 || opt.udpSize > maxUDPSize {
		return opt, "", fmt.Errorf("-udp-size %d: between 1 and %d", opt.udpSize, maxUDPSize)
	}
	opt.scenarios = splitList(*scen)
	opt.routes = splitList(*routes)
	var tcp, udp, reload bool
	for _, s := range opt.scenarios {
		sc, err := parseScenario(s, opt.workers)
		if err != nil {
			return opt, "", err
		}
		tcp, udp = tcp || !sc.udp(), udp || sc.udp()
		reload = reload || sc.kind == kindReload
	}
	if reload {
		if err := checkReloadFlags(opt, *reloadLog); err != nil {
			return opt, "", err
		}
		if opt.reloadLog, err = regexp.Compile(*reloadLog); err != nil {
			return opt, "", fmt.Errorf("-reload-log: %w", err)
		}
	}
	if err := validRoutes(opt.routes, tcp, udp); err != nil {
		return opt, "", fmt.Errorf("-routes %q: %w", *routes, err)
	}
	return opt, out, nil
}

// checkReloadFlags says whether the flags can run a reload-N scenario: a
// mux started here (its log is where the swaps are seen), a command that
// changes it, a way to see that it did, positive periods.
func checkReloadFlags(opt options, reloadLog string) error {
	switch {
	case opt.cmd == "":
		return errors.New("reload-N needs -cmd: the swaps are read from the mux's log")
	case opt.reloadCmd == "":
		return errors.New("reload-N needs -reload-cmd")
	case reloadLog == "":
		return errors.New("reload-N needs -reload-log: nothing else shows that the mux applied a change")
	case opt.reloadEvery <= 0 || opt.reloadWindow <= 0 || opt.reloadBaseline <= 0 || opt.reloadRate < 0 || opt.reloadQuiet < 0:
		return errors.New("-reload-every, -reload-window and -reload-baseline must be positive, -reload-rate and -reload-quiet not negative")
	}
	return nil
}

// validRoutes says whether routes are known and include the route the
// readiness check of each transport in use takes: ssh for TCP scenarios,
// udp-any for UDP ones.
func validRoutes(routes []string, tcp, udp bool) error {
	known := append(slices.Clone(routeNames), udpRouteNames...)
	for _, r := range routes {
		if !slices.Contains(known, r) {
			return fmt.Errorf("unknown route %q (%s)", r, strings.Join(known, ", "))
		}
	}
	if tcp && !slices.Contains(routes, routeSSH) {
		return errors.New("TCP scenarios need the ssh route (the readiness check uses it)")
	}
	if udp && !slices.Contains(routes, routeUDPAny) {
		return errors.New("UDP scenarios need the udp-any route (the readiness check uses it)")
	}
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// cmdTable is `muxload table FILES...`: markdown from JSON lines.
func cmdTable(args []string) error {
	fs := flag.NewFlagSet("table", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("no results: muxload table FILE.jsonl [FILE.jsonl]")
	}
	rs, err := readResults(fs.Args())
	if err != nil {
		return err
	}
	_, err = os.Stdout.WriteString(renderTables(rs))
	return err
}

// cmdBackends is `muxload backends`: the backends alone, in the
// foreground, for trying a mux by hand; bounded by -for.
func cmdBackends(args []string) error {
	fs := flag.NewFlagSet("backends", flag.ContinueOnError)
	base := fs.Int("base-port", 17000, "backends listen on 127.0.0.1 at base+1..base+4")
	bound := fs.Duration("for", 10*time.Minute, "stop after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := startBackends(*base)
	if err != nil {
		return err
	}
	defer b.close()
	for _, r := range append(slices.Clone(routeNames), udpRouteNames...) {
		fmt.Fprintf(os.Stderr, "%-7s %s\n", r, b.addr(r))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
	case <-time.After(*bound):
	}
	fmt.Fprintln(os.Stderr, "accepted:", b.counts())
	return nil
}
