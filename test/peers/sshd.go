package peers

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshdPath is where Debian installs sshd. It must be run by its absolute
// path: sshd re-executes itself and refuses a relative one.
const sshdPath = "/usr/sbin/sshd"

// SSHCommandTimeout bounds one ssh client run.
const SSHCommandTimeout = 30 * time.Second

// SSHServer is an OpenSSH sshd on a Host that accepts the client key it
// was made with, for the user running the test.
type SSHServer struct {
	// Addr is Host:Port.
	Addr string
	Host Host
	Port int
	// ClientKey is the path of the client's private key (mode 0600).
	ClientKey string
	// User is the login name ssh uses.
	User string

	// Process is the running server.
	Process *Process
}

// SSHD starts sshd on Loopback with a fresh host key and an authorized
// client key. It skips the test when sshd or ssh is missing or the
// privilege separation directory cannot be made.
func SSHD(t testing.TB) *SSHServer {
	t.Helper()
	return Loopback.SSHD(t)
}

// SSHD is SSHD on h.
func (h Host) SSHD(t testing.TB) *SSHServer {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("sshd is not installed: %v", err)
	}
	LookPath(t, "ssh")
	// sshd exits "Missing privilege separation directory" without it.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Skipf("sshd needs /run/sshd: %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Skipf("no current user for ssh: %v", err)
	}

	dir := t.TempDir()
	WriteSSHKey(t, filepath.Join(dir, "host_ed25519"))
	clientPub := WriteSSHKey(t, filepath.Join(dir, "client_ed25519"))
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), clientPub, 0o600); err != nil {
		t.Fatal(err)
	}

	s := &SSHServer{Host: h, ClientKey: filepath.Join(dir, "client_ed25519"), User: u.Username}
	s.Process, s.Port = h.StartOnPort(t, func(port int) (*Process, error) {
		conf := strings.Join([]string{
			"Port " + strconv.Itoa(port),
			"ListenAddress " + string(h),
			"HostKey " + filepath.Join(dir, "host_ed25519"),
			"PidFile " + filepath.Join(dir, "sshd.pid"),
			"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
			"PermitRootLogin prohibit-password",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"StrictModes no",
			"PrintMotd no",
			"UseDNS no",
		}, "\n") + "\n"
		cfgFile := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		p := Start(t, "sshd", sshdPath, "-D", "-e", "-f", cfgFile)
		_, err := p.WaitFor(fmt.Sprintf("Server listening on %s port %d.", h, port), ReadyTimeout)
		return p, err
	})
	s.Addr = h.Addr(s.Port)
	return s
}

// WriteSSHKey writes a new ed25519 private key in OpenSSH format (mode
// 0600, as ssh demands) and returns its public key in authorized_keys form,
// for tests that run sshd or ssh themselves (in a pod, say).
func WriteSSHKey(t testing.TB, path string) []byte {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "portmux-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(sshPub)
}

// baseArgs are the ssh options every connection uses: only our key, no
// prompts, no known_hosts, no user configuration.
func (s *SSHServer) baseArgs() []string {
	return []string{
		"ssh", "-F", "/dev/null",
		"-i", s.ClientKey,
		"-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10",
	}
}

// Argv returns the ssh command line that logs in through addr (host:port,
// e.g. the mux) and runs cmd.
func (s *SSHServer) Argv(addr string, cmd ...string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, "22"
	}
	argv := append(s.baseArgs(), "-p", port, s.User+"@"+host)
	return append(argv, cmd...)
}

// ArgvProxy returns the ssh command line that reaches the server through
// proxyCommand (ssh's ProxyCommand: a program that carries the SSH stream
// on its stdin and stdout, %h and %p expanded) and runs cmd.
func (s *SSHServer) ArgvProxy(proxyCommand string, cmd ...string) []string {
	argv := append(s.baseArgs(), "-o", "ProxyCommand="+proxyCommand, s.User+"@127.0.0.1")
	return append(argv, cmd...)
}

// Run logs in through addr, runs cmd and returns its standard output. The
// error carries ssh's standard error.
func (s *SSHServer) Run(t testing.TB, addr string, cmd ...string) (string, error) {
	t.Helper()
	return runSSH(s.Argv(addr, cmd...))
}

// RunVia is Run through a ProxyCommand.
func (s *SSHServer) RunVia(t testing.TB, proxyCommand string, cmd ...string) (string, error) {
	t.Helper()
	return runSSH(s.ArgvProxy(proxyCommand, cmd...))
}

// EchoVia runs `echo ok` through proxyCommand and says what went wrong
// unless it printed exactly "ok\n".
func (s *SSHServer) EchoVia(t testing.TB, proxyCommand string) error {
	t.Helper()
	out, err := s.RunVia(t, proxyCommand, "echo", "ok")
	if err != nil {
		return err
	}
	if out != "ok\n" {
		return fmt.Errorf("ssh printed %q, want ok", out)
	}
	return nil
}

func runSSH(argv []string) (string, error) {
	out, errOut, err := Command{Timeout: SSHCommandTimeout}.Output(argv...)
	if err != nil {
		return out, fmt.Errorf("%s: %w; stderr: %s", strings.Join(argv, " "), err, errOut)
	}
	return out, nil
}
