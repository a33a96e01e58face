package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// Bounds on waits: every wait in these tests ends with a message, never a
// hang until the test binary's own timeout.
const (
	readyTimeout   = 15 * time.Second // a peer's ready line
	clientTimeout  = 20 * time.Second // one ssh or s_client run
	stopTimeout    = 10 * time.Second // SIGTERM to exit
	followTimeout  = 20 * time.Second // a change reaching the dataplane
	logTailLines   = 60
	sshdPath       = "/usr/sbin/sshd" // by absolute path: sshd re-executes itself
	privsepDirPath = "/run/sshd"
)

// needProgram returns the path of a program or skips the test with a one-line
// reason.
func needProgram(t *testing.T, name string) string {
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

// procOutput collects a process's stdout and stderr in memory (for waiting on a
// line) and in a file (for the log tail on failure).
type procOutput struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	file    *os.File
	changed chan struct{} // closed and replaced on every write
}

func (o *procOutput) Write(p []byte) (int, error) {
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

func (o *procOutput) snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String(), o.changed
}

// proc is a program started by a test, stopped by t.Cleanup.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *procOutput
	logPath string
	stdin   io.WriteCloser // nil unless started with a stdin pipe

	exited  chan struct{} // closed once reaped; err is set before
	waitErr error
}

// startProc runs argv with its output going to dir/name.log and to memory. With
// withStdin the process reads from a pipe (proc.stdin), else from nothing.
// On test failure the tail of the log is printed.
func startProc(t *testing.T, dir, name string, withStdin bool, argv ...string) *proc {
	t.Helper()
	return startProcWith(t, dir, name, withStdin, nil, argv...)
}

// startProcWith is startProc where configure, when set, adjusts the
// command before it starts (its environment, say).
func startProcWith(t *testing.T, dir, name string, withStdin bool, configure func(*exec.Cmd), argv ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{
		name:    name,
		cmd:     exec.Command(argv[0], argv[1:]...),
		out:     &procOutput{file: f, changed: make(chan struct{})},
		logPath: logPath,
		exited:  make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if configure != nil {
		configure(p.cmd)
	}
	if withStdin {
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- last %d lines of %s (%s) ---\n%s", logTailLines, name, logPath, p.tail(logTailLines))
		}
		f.Close()
	})
	return p
}

// stop sends SIGTERM, then SIGKILL if the process is still there after
// stopTimeout.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		t.Errorf("%s did not exit %s after SIGTERM; killing it", p.name, stopTimeout)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// waitFor waits until a line of output contains substr and returns that
// line. It fails the test if the process exits first or the bound passes.
func (p *proc) waitFor(t *testing.T, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s, changed := p.out.snapshot()
		for line := range strings.SplitSeq(s, "\n") {
			if strings.Contains(line, substr) {
				return line
			}
		}
		select {
		case <-changed:
		case <-p.exited:
			// The last writes may have raced the exit: look once more.
			s, _ = p.out.snapshot()
			for line := range strings.SplitSeq(s, "\n") {
				if strings.Contains(line, substr) {
					return line
				}
			}
			t.Fatalf("%s exited (%v) before printing %q; output:\n%s", p.name, p.waitErr, substr, lastLines(s, logTailLines))
		case <-deadline.C:
			t.Fatalf("%s did not print %q within %s; output:\n%s", p.name, substr, timeout, lastLines(s, logTailLines))
		}
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	s, _ := p.out.snapshot()
	return lastLines(s, n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runBounded runs a short-lived program with a bound and returns its combined
// output.
func runBounded(timeout time.Duration, stdin io.Reader, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = stdin
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (killed after %s)", err, timeout)
	}
	return string(out), err
}

// freeTCPPort returns a TCP port on host that was free a moment ago. PortMux
// ports and sshd's port are declared up front, so the kernel cannot choose
// them at bind time.
func freeTCPPort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// sshServer is an OpenSSH sshd on a test address.
type sshServer struct {
	host      string
	port      int
	clientKey string
	user      string
}

// startSSHD starts sshd on host with a fresh host key, accepting a fresh
// client key for the current user. Another process may take the port
// between choosing and binding it; then it tries once more.
func startSSHD(t *testing.T, dir, host string) *sshServer {
	t.Helper()
	if err := os.MkdirAll(privsepDirPath, 0o755); err != nil {
		t.Skipf("sshd needs %s: %v", privsepDirPath, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Skipf("no current user for ssh: %v", err)
	}
	dir = filepath.Join(dir, "sshd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	peers.WriteSSHKey(t, filepath.Join(dir, "host_ed25519"))
	pub := peers.WriteSSHKey(t, filepath.Join(dir, "client_ed25519"))
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &sshServer{host: host, clientKey: filepath.Join(dir, "client_ed25519"), user: u.Username}
	for attempt := 1; ; attempt++ {
		s.port = freeTCPPort(t, host)
		conf := filepath.Join(dir, fmt.Sprintf("sshd_config.%d", attempt))
		if err := os.WriteFile(conf, []byte(strings.Join([]string{
			"Port " + strconv.Itoa(s.port),
			"ListenAddress " + host,
			"HostKey " + filepath.Join(dir, "host_ed25519"),
			"PidFile " + filepath.Join(dir, "sshd.pid"),
			"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
			"PermitRootLogin prohibit-password",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"StrictModes no",
		}, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, dir, fmt.Sprintf("sshd.%d", attempt), false, sshdPath, "-D", "-e", "-f", conf)
		ready := fmt.Sprintf("Server listening on %s port %d.", host, s.port)
		if attempt == 1 && !waitOrExit(p, ready, readyTimeout) && strings.Contains(p.tail(20), "Address already in use") {
			continue
		}
		p.waitFor(t, ready, readyTimeout)
		return s
	}
}

// waitOrExit reports whether the process printed substr before it exited
// or the bound passed.
func waitOrExit(p *proc, substr string, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s, changed := p.out.snapshot()
		if strings.Contains(s, substr) {
			return true
		}
		select {
		case <-changed:
		case <-p.exited:
			s, _ := p.out.snapshot()
			return strings.Contains(s, substr)
		case <-deadline.C:
			return false
		}
	}
}

// sshArgs is an ssh command line through 127.0.0.1:port to s, running
// remote.
func (s *sshServer) sshArgs(sshPath string, port int, remote string) []string {
	return []string{sshPath, "-F", "/dev/null", "-p", strconv.Itoa(port), "-i", s.clientKey,
		"-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		s.user + "@127.0.0.1", remote}
}

// tlsServer is an `openssl s_server -www` on a test address.
type tlsServer struct {
	host string
	port int
	cn   string
}

// startSServer starts s_server on host with a new self-signed certificate
// for cn. It binds port 0 and reads the port from its ready line.
func startSServer(t *testing.T, dir, host, cn, opensslPath, stdbufPath string) *tlsServer {
	t.Helper()
	certFile, keyFile := peers.CertPair(t, cn).WriteFiles(t, dir, cn)
	// s_server's stdout is block-buffered: the ready line needs -oL.
	p := startProc(t, dir, "s_server-"+cn, false, stdbufPath, "-oL", opensslPath, "s_server",
		"-accept", net.JoinHostPort(host, "0"), "-cert", certFile, "-key", keyFile, "-www")
	line := p.waitFor(t, "ACCEPT", readyTimeout)
	_, portStr, err := net.SplitHostPort(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "ACCEPT")))
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port == 0 {
		t.Fatalf("s_server ready line %q does not name a port", line)
	}
	return &tlsServer{host: host, port: port, cn: cn}
}

var subjectCN = regexp.MustCompile(`(?m)^subject=.*CN ?= ?([^,/\r\n]+)`)

// sClientCN connects with `openssl s_client -servername` through
// 127.0.0.1:port, completes a handshake, and returns the subject CN of the
// certificate the server sent.
func sClientCN(opensslPath string, port int, servername string) (string, error) {
	out, err := runBounded(clientTimeout, nil, opensslPath, "s_client",
		"-connect", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "-servername", servername)
	m := subjectCN.FindStringSubmatch(out)
	if m == nil {
		if err == nil {
			err = errors.New("no server certificate")
		}
		return "", fmt.Errorf("s_client -servername %s: %w; output:\n%s", servername, err, lastLines(out, 20))
	}
	return strings.TrimSpace(m[1]), nil
}
