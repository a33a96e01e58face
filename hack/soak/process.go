package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/portmux/portmux/hack/internal/harness"
)

// portmux is the process under test, in its own memory cgroup when the
// machine lets us make one.
type portmux struct {
	cmd     *exec.Cmd
	log     string
	metrics string
	// pprof serves portmux's profiles: the live heap is read there.
	pprof  string
	exited atomic.Bool
	done   chan struct{}

	cgroup     string // directory of its memory cgroup, "" without one
	cgroupV2   bool
	cgroupNote string
	limit      int64
}

func startPortmux(ctx context.Context, o options, cfg string) (*portmux, error) {
	mport, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &portmux{log: filepath.Join(o.out, "portmux.log"), metrics: fmt.Sprintf("127.0.0.1:%d", mport), done: make(chan struct{})}
	if o.limit != "" {
		if p.limit, err = harness.ParseSize(o.limit); err != nil {
			return nil, fmt.Errorf("memory limit %q: want e.g. 512Mi: %w", o.limit, err)
		}
		p.cgroup, p.cgroupV2, err = makeCgroup(p.limit)
		if err != nil {
			p.cgroupNote = "no memory cgroup (" + err.Error() + "): portmux runs without a limit"
			p.limit = 0
		}
	}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.pprof = o.pprof
	if p.pprof == "" {
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		p.pprof = fmt.Sprintf("127.0.0.1:%d", pport)
	}
	args := []string{"serve", "-f", cfg, "--bind-address", "127.0.0.1", "--metrics-addr", p.metrics, "--pprof-addr", p.pprof, "--log-connections=false"}
	bin, err := filepath.Abs(o.portmux)
	if err != nil {
		return nil, err
	}
	if p.cgroup != "" {
		// Into the cgroup before exec: portmux's first allocation counts,
		// and it reads its limit at start.
		script := `echo $$ > "$0/cgroup.procs" && exec "$@"`
		p.cmd = exec.Command("sh", append([]string{"-c", script, p.cgroup, bin}, args...)...)
	} else {
		p.cmd = exec.Command(bin, args...)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		_ = logf.Close()
		p.exited.Store(true)
		close(p.done)
	}()
	return p, nil
}

func (p *portmux) describe() string {
	s := fmt.Sprintf("portmux pid %d, log %s", p.cmd.Process.Pid, p.log)
	if p.cgroup != "" {
		s += fmt.Sprintf(", memory cgroup %s limited to %d MiB", p.cgroup, p.limit>>20)
	}
	if p.cgroupNote != "" {
		s += "; " + p.cgroupNote
	}
	return s
}

func (p *portmux) dead() bool { return p.exited.Load() }

// stop ends portmux (SIGTERM, then SIGKILL) and removes its cgroup.
func (p *portmux) stop() {
	if !p.dead() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(40 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if p.cgroup != "" {
		_ = os.Remove(p.cgroup)
	}
}

// budgetLine is portmux's "memory budget" log line: the limit it read, its
// GOMEMLIMIT and connection cap.
func (p *portmux) budgetLine() string {
	f, err := os.Open(p.log)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "memory budget") {
			return sc.Text()
		}
	}
	return ""
}

// makeCgroup makes a memory cgroup limited to limit bytes under this
// process's own (cgroup v2 or the v1 memory hierarchy).
func makeCgroup(limit int64) (dir string, v2 bool, err error) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false, err
	}
	name := fmt.Sprintf("portmux-soak-%d", os.Getpid())
	for line := range strings.SplitSeq(strings.TrimSpace(string(self)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var base, file string
		switch {
		case parts[0] == "0" && parts[1] == "" && fileExists("/sys/fs/cgroup/cgroup.controllers"):
			base, file, v2 = "/sys/fs/cgroup", "memory.max", true
		case strings.Contains(","+parts[1]+",", ",memory,"):
			base, file, v2 = "/sys/fs/cgroup/memory", "memory.limit_in_bytes", false
		default:
			continue
		}
		for _, parent := range []string{filepath.Join(base, parts[2]), base} {
			d := filepath.Join(parent, name)
			if err := os.Mkdir(d, 0o755); err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(d, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
				_ = os.Remove(d)
				return "", false, fmt.Errorf("set %s: %w", file, err)
			}
			return d, v2, nil
		}
	}
	return "", false, errors.New("cannot create a memory cgroup here")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cgroupPeak is the cgroup's peak memory use and how often it hit its
// limit (v1 failcnt; v2 the "max" events).
func (p *portmux) cgroupPeak() (int64, int64) {
	if p.cgroup == "" {
		return 0, 0
	}
	peakFile, failFile := "memory.max_usage_in_bytes", "memory.failcnt"
	if p.cgroupV2 {
		peakFile = "memory.peak"
	}
	peak := readInt(filepath.Join(p.cgroup, peakFile))
	fails := readInt(filepath.Join(p.cgroup, failFile))
	if p.cgroupV2 {
		if b, err := os.ReadFile(filepath.Join(p.cgroup, "memory.events")); err == nil {
			for line := range strings.SplitSeq(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "max "); ok {
					fails, _ = strconv.ParseInt(v, 10, 64)
				}
			}
		}
	}
	return peak, fails
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// sample is what portmux holds at one moment.
type sample struct {
	At          time.Time          `json:"at"`
	Goroutines  float64            `json:"goroutines"`
	OpenFDs     float64            `json:"openFDs"`
	RSS         int64              `json:"rssBytes"`
	PeakRSS     int64              `json:"peakRSSBytes"` // VmHWM
	Active      float64            `json:"activeConnections"`
	HTTPBackend float64            `json:"httpBackendConnections"`
	Panics      float64            `json:"panics"`
	CPU         float64            `json:"cpuSeconds"`
	Outcomes    map[string]float64 `json:"outcomes"`
}

// metricsClient reads portmux's metrics on a new connection each time, so
// that no connection of ours stays open in the goroutines and files
// counted before and after.
var metricsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// readBody reads and closes the body of a response, as http.Client
// returns it with its error.
func readBody(resp *http.Response, err error) (*http.Response, []byte, error) {
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func (p *portmux) sample() (sample, error) {
	s := sample{At: time.Now(), Outcomes: map[string]float64{}}
	_, body, err := readBody(metricsClient.Get("http://" + p.metrics + "/metrics"))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		name, value, ok := metricLine(line)
		if !ok {
			continue
		}
		switch {
		case name == "go_goroutines":
			s.Goroutines = value
		case name == "process_open_fds":
			s.OpenFDs = value
		case strings.HasPrefix(name, "portmux_active_connections"):
			s.Active += value
		case strings.HasPrefix(name, "portmux_http_backend_connections"):
			s.HTTPBackend += value
		case name == "portmux_panics_total":
			s.Panics = value
		case name == "process_cpu_seconds_total":
			s.CPU = value
		case strings.HasPrefix(name, "portmux_connections_total{"):
			s.Outcomes[label(name, "outcome")] += value
		}
	}
	s.RSS, s.PeakRSS = procStatus(p.cmd.Process.Pid)
	return s, nil
}

// liveHeap is what portmux's heap holds right after a collection, which
// the request forces: the memory an attack left behind shows here, where
// the RSS keeps what the runtime has not yet given back and the metrics'
// heap figures count garbage not yet collected. It asks twice: what
// sync.Pools held survives one collection (their victim caches).
func (p *portmux) liveHeap() (int64, error) {
	var body []byte
	for range 2 {
		var err error
		if _, body, err = readBody(metricsClient.Get("http://" + p.pprof + "/debug/pprof/heap?gc=1&debug=1")); err != nil {
			return 0, err
		}
	}
	return heapAlloc(body)
}

// saveHeapProfile writes portmux's heap profile, after a collection, to
// path: where what liveHeap counts sits (go tool pprof -sample_index=inuse_space).
func (p *portmux) saveHeapProfile(path string) error {
	_, body, err := readBody(metricsClient.Get("http://" + p.pprof + "/debug/pprof/heap?gc=1"))
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// heapAlloc reads runtime.MemStats' HeapAlloc from a heap profile in its
// text form (debug=1), which ends with them as comments.
func heapAlloc(profile []byte) (int64, error) {
	for line := range strings.SplitSeq(string(profile), "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no HeapAlloc in the heap profile")
}

// metricLine splits a line of the Prometheus text format into its series
// and value.
func metricLine(line string) (string, float64, bool) {
	if line == "" || line[0] == '#' {
		return "", 0, false
	}
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(line[i+1:], 64)
	return line[:i], v, err == nil
}

func label(series, name string) string {
	_, rest, ok := strings.Cut(series, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// procStatus reads VmRSS and VmHWM (peak RSS) in bytes.
func procStatus(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// waitIdle waits until portmux holds no connection (or bound passes) and
// says how long that took.
func (p *portmux) waitIdle(ctx context.Context, bound time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < bound && ctx.Err() == nil {
		if s, err := p.sample(); err == nil && s.Active == 0 && s.HTTPBackend == 0 {
			return time.Since(start).Round(time.Millisecond), true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(start).Round(time.Millisecond), false
}

func waitListening(ctx context.Context, addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("portmux does not listen on %s", addr)
}
