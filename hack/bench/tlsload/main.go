// Command tlsload measures a TLS-terminating proxy on loopback: full
// handshakes per second and bulk throughput, with the proxy's own CPU time
// read from /proc. hack/bench/tls.sh runs it against `portmux serve` and
// haproxy with the same certificates.
//
//	tlsload echo -addr 127.0.0.1:17101
//	tlsload handshake -addr 127.0.0.1:17443 -c 32 -d 5s -pid PID
//	tlsload bulk -addr 127.0.0.1:17443 -conns 4 -bytes 256MiB -pid PID
//	tlsload idle -addr 127.0.0.1:17443 -n 9000 -pid PID
//
// Every handshake is a full one (no session resumption) unless -resume,
// TLS 1.3 unless -tls12, with key exchange X25519 unless -groups default (Go's default
// list, X25519MLKEM768 first, which OpenSSL 3.0 does not have). After the
// handshake the client writes a line and reads its echo, so the proxy
// has dialled its backend too. idle holds N such connections open and
// reports the proxy's memory (PSS) they cost, each. Only 127.0.0.1 is
// dialled.
//
// Output: one JSON object on stdout, a summary line on stderr.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portmux/portmux/hack/internal/harness"
)

func main() {
	harness.Main("tlsload",
		harness.Command{Name: "echo", Run: runEcho},
		harness.Command{Name: "handshake", Run: runHandshake},
		harness.Command{Name: "bulk", Run: runBulk},
		harness.Command{Name: "idle", Run: runIdle})
}

// runEcho is the backend: a plain TCP echo server.
func runEcho(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:17101", "listen address")
	_ = fs.Parse(args)
	if err := harness.Loopback(*addr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "echo listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer func() { _ = c.Close() }()
			// Read and write through the buffer, never splice: a splice
			// holds two pipe descriptors per connection, which idle's
			// 9000 held connections cannot afford under 20000 files.
			buf := make([]byte, 64<<10)
			_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
		}()
	}
}

// cpuSeconds is the user+system CPU time of pid and its threads.
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ
}

func clientConfig(sni, groups string, tls12 bool) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName:             sni,
		InsecureSkipVerify:     true, // the proxy's certificate is self-signed; its signature is still checked
		SessionTicketsDisabled: true,
		ClientSessionCache:     nil,
		MinVersion:             tls.VersionTLS12,
	}
	if tls12 {
		cfg.MaxVersion = tls.VersionTLS12
	}
	switch groups {
	case "x25519":
		// P-256 is listed too (with no key share): OpenSSL serves an
		// ECDSA P-256 certificate over TLS 1.2 only to clients that
		// list its curve (RFC 8422 §5.1).
		cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	case "p256":
		cfg.CurvePreferences = []tls.CurveID{tls.CurveP256}
	case "default":
	default:
		return nil, fmt.Errorf("groups %q: x25519, p256 or default", groups)
	}
	return cfg, nil
}

// client is what the handshake and bulk commands share: the proxy they
// load (on loopback), the server name they ask for, the proxy's PID to
// charge CPU time to, and the labels of their result.
type client struct {
	addr, sni  string
	pid        int
	peer, cert string
}

func clientFlags(fs *flag.FlagSet) *client {
	cl := &client{}
	fs.StringVar(&cl.addr, "addr", "127.0.0.1:17443", "proxy address")
	fs.StringVar(&cl.sni, "sni", "bench.test", "server name")
	fs.IntVar(&cl.pid, "pid", 0, "the proxy's PID, for its CPU time")
	fs.StringVar(&cl.peer, "peer", "", "label")
	fs.StringVar(&cl.cert, "cert", "", "label")
	return cl
}

// parse parses the command's flags and checks the address.
func (cl *client) parse(fs *flag.FlagSet, args []string) error {
	_ = fs.Parse(args)
	return harness.Loopback(cl.addr)
}

// labels name the run a result belongs to.
type labels struct {
	Peer     string `json:"peer"`
	Cert     string `json:"cert"`
	Scenario string `json:"scenario"`
}

// measured is the wall time of a measurement and the proxy's CPU time in
// it.
type measured struct {
	Seconds float64 `json:"seconds"`
	MuxCPUs float64 `json:"mux_cpu_s"`
}

// measure starts a measurement; the function it returns ends it.
func (cl *client) measure() func() measured {
	cpu0, t0 := cpuSeconds(cl.pid), time.Now()
	return func() measured {
		elapsed := time.Since(t0).Seconds()
		return measured{Seconds: elapsed, MuxCPUs: cpuSeconds(cl.pid) - cpu0}
	}
}

type handshakeResult struct {
	labels
	Workers int `json:"workers"`
	measured
	Handshakes   int64   `json:"handshakes"`
	Failures     int64   `json:"failures"`
	Resumed      int64   `json:"resumed"`
	PerSecond    float64 `json:"per_second"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	MuxCPUus     float64 `json:"mux_cpu_us_per_handshake"`
	FirstFailure string  `json:"first_failure,omitempty"`
}

func runHandshake(args []string) error {
	fs := flag.NewFlagSet("handshake", flag.ExitOnError)
	cl := clientFlags(fs)
	groups := fs.String("groups", "x25519", "key exchange: x25519, p256 or default")
	tls12 := fs.Bool("tls12", false, "TLS 1.2 instead of 1.3")
	resume := fs.Bool("resume", false, "each client keeps its session ticket and resumes")
	workers := fs.Int("c", 32, "concurrent clients")
	d := fs.Duration("d", 5*time.Second, "measured duration")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up")
	if err := cl.parse(fs, args); err != nil {
		return err
	}
	cfg, err := clientConfig(cl.sni, *groups, *tls12)
	if err != nil {
		return err
	}

	var measuring, stop atomic.Bool
	var ok, failed, resumed atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, *workers)
	var wg sync.WaitGroup
	msg := []byte("ping\n")
	for w := range *workers {
		wg.Add(1)
		wcfg := cfg
		if *resume {
			wcfg = cfg.Clone()
			wcfg.SessionTicketsDisabled = false
			wcfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		go func() {
			defer wg.Done()
			buf := make([]byte, len(msg))
			for !stop.Load() {
				start := time.Now()
				didResume, err := oneHandshake(cl.addr, wcfg, msg, buf)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
				if didResume {
					resumed.Add(1)
				}
				lat[w] = append(lat[w], time.Since(start))
			}
		}()
	}
	time.Sleep(*warmup)
	done := cl.measure()
	measuring.Store(true)
	time.Sleep(*d)
	measuring.Store(false)
	mt := done()
	n := ok.Load()
	stop.Store(true)
	wg.Wait()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
	scen := "tls13"
	if *tls12 {
		scen = "tls12"
	}
	if *resume {
		scen += "-resumed"
	}
	r := handshakeResult{
		labels: labels{Peer: cl.peer, Cert: cl.cert, Scenario: "handshake-" + scen + "-" + *groups}, Workers: *workers,
		measured: mt, Handshakes: n, Failures: failed.Load(),
		Resumed: resumed.Load(), PerSecond: float64(n) / mt.Seconds, P50ms: pct(0.5), P99ms: pct(0.99),
	}
	if n > 0 && cl.pid > 0 {
		r.MuxCPUus = mt.MuxCPUs / float64(n) * 1e6
	}
	if v, ok := firstErr.Load().(string); ok {
		r.FirstFailure = v
	}
	fmt.Fprintf(os.Stderr, "%s %s %s: %.0f handshakes/s (%d resumed), p50 %.2f ms, p99 %.2f ms, %d failed, proxy CPU %.0f µs/handshake\n",
		r.Peer, r.Cert, r.Scenario, r.PerSecond, r.Resumed, r.P50ms, r.P99ms, r.Failures, r.MuxCPUus)
	return json.NewEncoder(os.Stdout).Encode(r)
}

// oneHandshake connects, completes a handshake (full unless cfg holds a
// session to resume), and round-trips msg (which also reads a TLS 1.3
// session ticket).
func oneHandshake(addr string, cfg *tls.Config, msg, buf []byte) (resumed bool, err error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false, err
	}
	defer func() { _ = raw.Close() }()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return false, fmt.Errorf("handshake: %w", err)
	}
	if _, err := c.Write(msg); err != nil {
		return false, err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return false, fmt.Errorf("echo: %w", err)
	}
	return c.ConnectionState().DidResume, nil
}

type bulkResult struct {
	labels
	Conns int   `json:"conns"`
	Bytes int64 `json:"bytes_each_way"`
	measured
	MBps      float64 `json:"mb_per_s"`
	MuxCPUsGB float64 `json:"mux_cpu_s_per_gb"`
}

func runBulk(args []string) error {
	fs := flag.NewFlagSet("bulk", flag.ExitOnError)
	cl := clientFlags(fs)
	conns := fs.Int("conns", 4, "parallel connections")
	size := fs.String("bytes", "256MiB", "bytes each connection writes (and reads back)")
	if err := cl.parse(fs, args); err != nil {
		return err
	}
	each, err := harness.ParseSize(*size)
	if err != nil {
		return err
	}
	cfg, err := clientConfig(cl.sni, "x25519", false)
	if err != nil {
		return err
	}
	// Connect and handshake first, so only the transfer is timed.
	var cs []*tls.Conn
	for range *conns {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", cl.addr, cfg)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		cs = append(cs, c)
	}
	done := cl.measure()
	var wg sync.WaitGroup
	errs := make(chan error, 2**conns)
	for _, c := range cs {
		_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for left := each; left > 0; {
				n := min(left, int64(len(buf)))
				if _, err := c.Write(buf[:n]); err != nil {
					errs <- err
					return
				}
				left -= n
			}
		}()
		go func() {
			defer wg.Done()
			if n, err := io.CopyN(io.Discard, c, each); err != nil {
				errs <- fmt.Errorf("read back %d of %d bytes: %w", n, each, err)
			}
		}()
	}
	wg.Wait()
	mt := done()
	close(errs)
	for err := range errs {
		return err
	}
	total := float64(each) * float64(*conns)
	r := bulkResult{
		labels: labels{Peer: cl.peer, Cert: cl.cert, Scenario: "bulk"}, Conns: *conns, Bytes: each, measured: mt,
		MBps: total / mt.Seconds / 1e6,
	}
	if cl.pid > 0 {
		r.MuxCPUsGB = mt.MuxCPUs / (total / 1e9)
	}
	fmt.Fprintf(os.Stderr, "%s %s bulk: %.0f MB/s (one way, %d conns), proxy CPU %.2f s/GB\n",
		r.Peer, r.Cert, r.MBps, r.Conns, r.MuxCPUsGB)
	return json.NewEncoder(os.Stdout).Encode(r)
}

type idleResult struct {
	labels
	Conns     int     `json:"conns"`
	PSSBefore int64   `json:"pss_kb_before"`
	PSSAfter  int64   `json:"pss_kb_after"`
	KBPerConn float64 `json:"pss_kb_per_conn"`
}

// runIdle opens n TLS connections (handshake and one echoed line each,
// batch at a time), holds them for settle, reads the proxy's PSS, checks a
// few still echo, and reports the PSS they added, per connection.
func runIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	cl := clientFlags(fs)
	n := fs.Int("n", 9000, "connections held")
	batch := fs.Int("batch", 64, "connections opened at once")
	settle := fs.Duration("settle", 2*time.Second, "wait between the last connection and reading memory")
	if err := cl.parse(fs, args); err != nil {
		return err
	}
	if cl.pid <= 0 || *n <= 0 || *batch <= 0 {
		return errors.New("idle needs -pid, a positive -n and -batch")
	}
	cfg, err := clientConfig(cl.sni, "x25519", false)
	if err != nil {
		return err
	}
	before, err := pssKB(cl.pid)
	if err != nil {
		return err
	}
	conns := make([]*tls.Conn, *n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	msg := []byte("ping\n")
	sem := make(chan struct{}, *batch)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := echoConn(cl.addr, cfg, msg)
			if err != nil {
				firstErr.CompareAndSwap(nil, fmt.Sprintf("connection %d: %v", i, err))
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if v, ok := firstErr.Load().(string); ok {
		return errors.New(v)
	}
	time.Sleep(*settle)
	after, err := pssKB(cl.pid)
	if err != nil {
		return err
	}
	// The proxy must still carry them: a proxy that dropped idle
	// connections must not pass for a cheap one.
	buf := make([]byte, len(msg))
	for i := 0; i < len(conns); i += max(len(conns)/5, 1) {
		c := conns[i]
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("held connection %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("held connection %d: %w", i, err)
		}
	}
	r := idleResult{
		labels: labels{Peer: cl.peer, Cert: cl.cert, Scenario: fmt.Sprintf("idle-%d", *n)}, Conns: *n,
		PSSBefore: before, PSSAfter: after, KBPerConn: float64(after-before) / float64(*n),
	}
	fmt.Fprintf(os.Stderr, "%s %s %s: %.1f KB/conn PSS\n", r.Peer, r.Cert, r.Scenario, r.KBPerConn)
	return json.NewEncoder(os.Stdout).Encode(r)
}

// echoConn connects, completes a handshake, round-trips msg and returns
// the connection with no deadline, to be held.
func echoConn(addr string, cfg *tls.Config, msg []byte) (*tls.Conn, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, cfg)
	buf := make([]byte, len(msg))
	if err := c.Handshake(); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	_, err = c.Write(msg)
	if err == nil {
		_, err = io.ReadFull(c, buf)
	}
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("echo: %w", err)
	}
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// pssKB is pid's proportional set size in KiB, from smaps_rollup.
func pssKB(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no Pss in /proc/%d/smaps_rollup", pid)
}
