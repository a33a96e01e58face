// Package peers is the one home of the helpers that tests at every tier
// share, from a package's unit tests to the end-to-end ones: it starts real
// programs for tests (OpenSSH's sshd and ssh, openssl s_server and s_client,
// curl, OpenVPN in point-to-point TLS mode without a tun device, and any
// other program, with its output kept and waited on), runs short-lived
// commands with a bound, picks free ports, polls with a bound and a
// message, and runs in Go a recording HTTP server, TCP servers, a UDP echo
// server and an HTTP CONNECT proxy. It also makes the certificates they need
// with crypto/x509.
//
// Every peer binds a Host: Loopback (127.0.0.1) by default, or another local
// address (test/hostaddr's, which the API server accepts in
// EndpointSlices). It is stopped and its files removed by t.Cleanup, and is
// waited for by its documented ready line with a bounded timeout. A test
// whose program is not installed is skipped with a one-line reason.
//
// Where a program reports the port it bound (s_server), port 0 is used.
// sshd and OpenVPN need a number up front: one is picked by binding port 0
// and closing, and the start is retried once when another process took the
// port in between.
//
// The package decides nothing about PortMux; it only runs the peers.
package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ReadyTimeout bounds how long a peer may take to print its ready line.
const ReadyTimeout = 15 * time.Second

// logTailLines is how much of a long-lived process's output a failure
// shows when the whole output is in a file.
const logTailLines = 60

// errAddrInUse says a peer could not bind the port it was given.
var errAddrInUse = errors.New("address already in use")

// LookPath returns the path of a program, or skips the test with a
// one-line reason when it is not installed. An absolute name is checked
// as it is.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			t.Skipf("%s is not installed: %v", name, err)
		}
		return name
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

// Options adjust how StartWith runs a program. The zero value is Start's.
type Options struct {
	// LogDir, when set, also gets the output in LogDir/NAME.log; a failed
	// test then logs only the output's last lines and the file's path.
	LogDir string
	// Stdin gives the process a pipe for its standard input
	// (Process.Stdin); without it the process reads nothing.
	Stdin bool
	// Env, when not nil, is the process's whole environment.
	Env []string
	// Grace, when set, makes the stop at cleanup a shutdown: SIGTERM, and
	// the test fails when the process has not exited within Grace (it is
	// killed then). Without it the process is killed at once.
	Grace time.Duration
}

// Process is a program started by a test. Its stdout and stderr are
// collected together; WaitFor waits for a line in them.
type Process struct {
	// Stdin is the process's standard input, with Options.Stdin; else nil.
	Stdin io.WriteCloser
	// LogPath is the file that has the output, with Options.LogDir; else "".
	LogPath string

	t     testing.TB
	name  string
	cmd   *exec.Cmd
	out   *output
	grace time.Duration

	exited  chan struct{} // closed once the process has been reaped; waitErr is set before
	waitErr error
}

// output collects a process's stdout and stderr, in memory (for waiting on
// a line) and in a file when there is one, and wakes waiters on every
// write.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	file    *os.File
	changed chan struct{} // closed and replaced on every write
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if o.file != nil {
		_, _ = o.file.Write(p)
	}
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

// snapshot returns the output so far and a channel closed on the next write.
func (o *output) snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String(), o.changed
}

// Start runs argv[0] with the rest as arguments in its own process group,
// and registers a cleanup that kills the group and reaps the process. The
// output is logged when the test has failed.
func Start(t testing.TB, name string, argv ...string) *Process {
	t.Helper()
	return StartWith(t, name, Options{}, argv...)
}

// StartWith is Start with options: a log file, a stdin pipe, an
// environment, a graceful stop.
func StartWith(t testing.TB, name string, o Options, argv ...string) *Process {
	t.Helper()
	p := &Process{
		t:      t,
		name:   name,
		cmd:    exec.Command(argv[0], argv[1:]...),
		out:    &output{changed: make(chan struct{})},
		grace:  o.Grace,
		exited: make(chan struct{}),
	}
	if o.LogDir != "" {
		p.LogPath = filepath.Join(o.LogDir, name+".log")
		f, err := os.Create(p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		p.out.file = f
		t.Cleanup(func() { _ = f.Close() }) // runs after the stop below
	}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.Env = o.Env
	if o.Stdin {
		var err error
		if p.Stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	// Its own group, so that the children it forks (sshd's per-connection
	// processes) go with it; WaitDelay stops waiting for pipes a leftover
	// child might hold.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if !t.Failed() {
			return
		}
		if p.LogPath != "" {
			t.Logf("--- last %d lines of %s (%s) ---\n%s", logTailLines, name, p.LogPath, p.Tail(logTailLines))
		} else {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// Stop ends the process and the children in its group and waits until it
// has been reaped: at once, or with Options.Grace by SIGTERM first (the
// test fails when that is not enough). It can be called more than once.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	if p.grace > 0 {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			return
		case <-time.After(p.grace):
			p.t.Errorf("%s did not exit %s after SIGTERM; killing it", p.name, p.grace)
		}
	}
	// The group id is the process id (Setpgid): only what this process
	// started is signalled.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Exited is closed once the process has ended and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is how the process ended (exec.Cmd.Wait's error), once Exited is
// closed.
func (p *Process) Err() error {
	<-p.exited
	return p.waitErr
}

// Running reports whether the process has not ended yet.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (not to its group).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Output is everything the process has written so far.
func (p *Process) Output() string {
	s, _ := p.out.snapshot()
	return s
}

// Tail is the last n lines of the output so far.
func (p *Process) Tail(n int) string { return LastLines(p.Output(), n) }

// LastLines is the last n lines of s, after a line that counts the ones
// left out.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// WaitFor waits until a line of the output contains substr and returns that
// line. It fails when the process exits first or timeout passes; the error
// includes the output (its last lines when it is in a file).
func (p *Process) WaitFor(substr string, timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s, changed := p.out.snapshot()
		if i := strings.Index(s, substr); i >= 0 {
			start := strings.LastIndexByte(s[:i], '\n') + 1
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				return s[start:], nil
			}
			return strings.TrimRight(s[start:i+end], "\r"), nil
		}
		select {
		case <-changed:
		case <-p.exited:
			// Read once more: the last write may have come with the exit.
			if s, _ := p.out.snapshot(); strings.Contains(s, substr) {
				continue
			}
			status := p.waitErr
			if status == nil {
				status = errors.New("exit status 0")
			}
			err := fmt.Errorf("%s exited (%w) before printing %q", p.name, status, substr)
			if isAddrInUse(p.Output()) {
				err = fmt.Errorf("%w: %w", errAddrInUse, err)
			}
			return "", fmt.Errorf("%w; output:\n%s", err, p.shown())
		case <-timer.C:
			return "", fmt.Errorf("%s did not print %q within %v; output:\n%s", p.name, substr, timeout, p.shown())
		}
	}
}

// shown is the output a failure message carries.
func (p *Process) shown() string {
	if p.LogPath != "" {
		return p.Tail(logTailLines)
	}
	return p.Output()
}

// MustWaitFor is WaitFor that fails the test.
func (p *Process) MustWaitFor(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	line, err := p.WaitFor(substr, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func isAddrInUse(out string) bool {
	return strings.Contains(strings.ToLower(out), "address already in use")
}

// StartOnPort picks a free port on h and calls start with it; start runs
// the program and waits for its ready line (WaitFor). A port picked free
// can be taken before the program binds it on a busy machine: when the
// program says its address is in use it is tried once more with another.
func (h Host) StartOnPort(t testing.TB, start func(port int) (*Process, error)) (*Process, int) {
	t.Helper()
	var err error
	for range 2 {
		port := h.FreePort(t)
		var p *Process
		p, err = start(port)
		if err == nil {
			return p, port
		}
		p.Stop()
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatal(err)
	return nil, 0
}

// Command is a short-lived program run to its end with a bound: a client
// (ssh, s_client, curl, kubectl) or a script.
type Command struct {
	// Timeout bounds the run; the program is killed when it passes.
	Timeout time.Duration
	// Stdin is what the program reads; nil: nothing.
	Stdin io.Reader
	// Env, when not nil, is the program's whole environment.
	Env []string
	// Dir is where it runs; "": here.
	Dir string
}

// Output runs argv and returns its standard output and standard error.
func (c Command) Output(argv ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = c.run(&out, &errOut, argv)
	return out.String(), errOut.String(), err
}

// Combined runs argv and returns its standard output and standard error
// together, in the order it wrote them.
func (c Command) Combined(argv ...string) (string, error) {
	var out bytes.Buffer
	err := c.run(&out, &out, argv)
	return out.String(), err
}

func (c Command) run(stdout, stderr io.Writer, argv []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, stdout, stderr
	cmd.Env, cmd.Dir = c.Env, c.Dir
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: %w (timed out after %s)", argv[0], err, c.Timeout)
	}
	return err
}
