// Package peers starts real programs on loopback for tests: OpenSSH's sshd
// and ssh, openssl s_server and s_client, curl, OpenVPN in point-to-point TLS
// mode without a tun device, and, in Go, a recording HTTP server, TCP
// servers, a UDP echo server and an HTTP CONNECT proxy. It also makes the
// certificates they need with crypto/x509.
//
// Every peer binds 127.0.0.1 only, is stopped and its files removed by
// t.Cleanup, and is waited for by its documented ready line with a bounded
// timeout. A test whose program is not installed is skipped with a one-line
// reason.
//
// Where a program reports the port it bound (s_server), port 0 is used.
// sshd and OpenVPN need a number up front: one is picked by binding
// 127.0.0.1:0 and closing, and the start is retried once when another
// process took the port in between.
//
// The package decides nothing about PortMux; it only runs the peers.
package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ReadyTimeout bounds how long a peer may take to print its ready line.
const ReadyTimeout = 15 * time.Second

// errAddrInUse says a peer could not bind the port it was given.
var errAddrInUse = errors.New("address already in use")

// LookPath returns the path of a program, or skips the test with a
// one-line reason when it is not installed.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

// Process is a peer program started by a test. Its stdout and stderr are
// collected together; WaitFor waits for a line in them.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *output

	exited chan struct{} // closed once the process has been reaped
}

// output collects a process's stdout and stderr and wakes waiters on every
// write.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
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
	p := &Process{
		name:   name,
		cmd:    exec.Command(argv[0], argv[1:]...),
		out:    &output{changed: make(chan struct{})},
		exited: make(chan struct{}),
	}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// Its own group, so that the children it forks (sshd's per-connection
	// processes) go with it; WaitDelay stops waiting for pipes a leftover
	// child might hold.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait() // the exit status is in ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// Stop kills the process and the children in its group and waits until it
// has been reaped. It can be called more than once.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	// The group id is the process id (Setpgid): only what this process
	// started is signalled.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Exited is closed once the process has ended and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Output is everything the process has written so far.
func (p *Process) Output() string {
	s, _ := p.out.snapshot()
	return s
}

// WaitFor waits until a line of the output contains substr and returns that
// line. It fails when the process exits first or timeout passes; the error
// includes the output.
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
			err := fmt.Errorf("%s exited (%s) before printing %q", p.name, p.cmd.ProcessState, substr)
			if isAddrInUse(p.Output()) {
				err = fmt.Errorf("%w: %w", errAddrInUse, err)
			}
			return "", fmt.Errorf("%w; output:\n%s", err, p.Output())
		case <-timer.C:
			return "", fmt.Errorf("%s did not print %q within %v; output:\n%s", p.name, substr, timeout, p.Output())
		}
	}
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

// pickPort returns a port that was free a moment ago on 127.0.0.1, for
// programs that cannot bind port 0 and report it. Callers retry once when
// the program says the address is in use.
func pickPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

// startOnPort picks a port and calls start with it; start runs the program
// and waits for its ready line. When the program could not bind the port it
// is tried once more with another.
func startOnPort(t testing.TB, start func(port int) (*Process, error)) (*Process, int) {
	t.Helper()
	var err error
	for range 2 {
		port := pickPort(t)
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

// runCommand runs a short-lived client with a timeout and returns its
// standard output and standard error.
func runCommand(timeout time.Duration, stdin string, argv ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 2 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", argv[0], timeout, err)
	}
	return out.String(), errOut.String(), err
}
