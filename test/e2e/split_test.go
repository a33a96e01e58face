package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// TestSplitProcesses runs the pod's two containers as two processes, as
// the chart does: `portmux dataplane --socket` (no kubeconfig, nothing
// Kubernetes in its environment) and `portmux manager --dataplane-socket`
// against a real API server. It checks that
//
//   - SSH and TLS passthrough reach real sshd and s_server through the
//     dataplane, programmed over the socket;
//   - the dataplane process has no kubeconfig or API server in its
//     environment, no file open but sockets, pipes, epoll, /dev/null and
//     its cgroup's limits, and no TCP or UDP socket bound but its
//     listener;
//   - killing the manager (SIGKILL) cuts no open connection, new
//     connections still work and the dataplane stays ready; a new manager
//     brings a PortMux change to the dataplane, and the connections opened
//     before the kill still talk;
//   - killing the dataplane (SIGKILL) turns status to DataplaneUnreachable
//     and the manager unready; a new dataplane process gets the snapshot
//     from the manager at once, with no PortMux change, and status turns
//     Ready again.
func TestSplitProcesses(t *testing.T) {
	e := startProcessEnv(t)
	dir, cp, bin, phase := e.dir, e.cp, e.bin, e.phase
	sshd, tlsA, tlsB := e.sshd, e.tlsA, e.tlsB
	muxPort, metricsAddr, probeAddr := e.muxPort, e.metricsAddr, e.probeAddr
	phase("API server up, portmux built, backends started")

	socket := filepath.Join(dir, "dp.sock")
	startDataplane := func(name string) *peers.Process {
		t.Helper()
		p := startProc(t, dir, name, peers.Options{Env: withoutKubernetes(os.Environ())}, bin, "dataplane",
			"--socket", socket, "--bind-address", "127.0.0.1", "--shutdown-grace", "2s")
		p.MustWaitFor(t, "waiting for snapshots", readyTimeout)
		return p
	}
	startManager := func(name string) *peers.Process {
		t.Helper()
		return startProc(t, dir, name, peers.Options{}, bin, "manager", "--kubeconfig", cp.kubeconfig, "--dataplane-socket", socket,
			"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr)
	}
	dp := startDataplane("dataplane")
	mgr := startManager("manager")
	failed := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\n(logs in %s; tails below)", fmt.Sprintf(format, args...), dir)
	}

	cp.apply("backends.yaml", backendObjects(sshd, tlsA, tlsB))
	cp.apply("portmux.yaml", portMux(muxPort, "tls-a"))
	waitCondition(t, cp, "Ready", "True", "Ready")
	sshEcho := func(when string) { t.Helper(); e.sshEcho(t, when, failed) }
	tlsReaches := func(when string, want *peers.TLSServer) { t.Helper(); e.tlsReaches(t, when, want, failed) }
	sshEcho("programmed over the socket")
	tlsReaches("programmed over the socket", tlsA)
	phase("the manager programmed the dataplane process over %s: ssh and TLS passthrough through it", socket)

	checkHoldsNothing(t, dp.Pid(), muxPort)
	phase("the dataplane process: no Kubernetes in its environment, no file open but cgroup limits, no port bound but %d", muxPort)

	metrics := getURL(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{"portmux_connections_total{", "portmux_dataplane_up 1", "portmux_dataplane_go_goroutines "} {
		if !strings.Contains(metrics.body, want) {
			failed("the manager's /metrics has no %q (the dataplane's, over the socket):\n%s", want, peers.LastLines(metrics.body, 30))
		}
	}
	phase("the manager's /metrics mirrors the dataplane's")

	// Connections opened now must outlive the manager.
	var sessions []*peers.Process
	for i := range 3 {
		s := startProc(t, dir, fmt.Sprintf("ssh-session-%d", i), peers.Options{Stdin: true},
			sshd.Argv(peers.Loopback.Addr(muxPort), `echo started; while read x; do echo "still $x"; done`)...)
		s.MustWaitFor(t, "started", clientTimeout)
		sessions = append(sessions, s)
	}
	openssl := peers.LookPath(t, "openssl")
	tlsSession := startProc(t, dir, "s_client-session", peers.Options{Stdin: true}, openssl, "s_client", "-connect", peers.Loopback.Addr(muxPort), "-servername", "site.e2e.test")
	tlsSession.MustWaitFor(t, "Verify return code", clientTimeout)
	talk := func(when, word string) {
		t.Helper()
		survived := 0
		for i, s := range sessions {
			line := fmt.Sprintf("%s-%d", word, i)
			if _, err := io.WriteString(s.Stdin, line+"\n"); err == nil && printed(s, "still "+line, clientTimeout) {
				survived++
			} else {
				t.Errorf("%s: ssh session %d is gone:\n%s", when, i, s.Tail(10))
			}
		}
		if survived != len(sessions) {
			failed("%s: %d of %d ssh sessions survived", when, survived, len(sessions))
		}
	}

	if err := mgr.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-mgr.Exited()
	phase("manager killed (SIGKILL)")
	talk("after the manager was killed", "alive")
	// (s_server serves one connection at a time and tlsSession holds
	// backend A's: new TLS connections are checked with backend B below.)
	sshEcho("a new connection while no manager runs")
	if out, err := bounded(10*time.Second, bin, "dataplane", "probe", "--ready", "--socket", socket); err != nil {
		failed("the dataplane's readiness probe while no manager runs: %v\n%s", err, out)
	}
	phase("with no manager: %d open ssh sessions survived, new ssh connections work, the dataplane is ready", len(sessions))

	startManager("manager-2")
	waitURL(t, "http://"+probeAddr+"/readyz", http.StatusOK)
	cp.apply("portmux-edited.yaml", portMux(muxPort, "tls-b"))
	changed := time.Now()
	eventuallyTLS(t, muxPort, tlsB.CN(), "TLS passthrough reaching "+tlsB.CN())
	phase("a new manager: the PortMux change reached the dataplane after %s", time.Since(changed).Round(time.Millisecond))
	talk("after the new manager programmed a change", "again")
	if _, err := io.WriteString(tlsSession.Stdin, "GET / HTTP/1.0\r\n\r\n"); err != nil || !printed(tlsSession, "s_server", clientTimeout) {
		failed("the TLS passthrough connection opened before the manager was killed is gone (%v):\n%s", err, tlsSession.Tail(10))
	}
	phase("every connection opened before the kill still talks: %d ssh sessions, 1 TLS passthrough", len(sessions))
	for _, s := range sessions {
		_ = s.Stdin.Close()
	}

	// The dataplane goes: status and readiness say so; a new one gets the
	// snapshot at once.
	if err := dp.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-dp.Exited()
	waitCondition(t, cp, "Ready", "False", "DataplaneUnreachable")
	waitURL(t, "http://"+probeAddr+"/readyz", http.StatusInternalServerError)
	gen := generation(t, cp)
	phase("dataplane killed (SIGKILL): status DataplaneUnreachable, the manager not ready")

	restarted := time.Now()
	startDataplane("dataplane-2")
	listening := time.Since(restarted)
	serving := eventuallyBanner(t, muxPort)
	sshEcho("after the dataplane restarted")
	phase("a new dataplane process: listening on the socket after %s, routing SSH %s later, with no PortMux change",
		listening.Round(time.Millisecond), serving.Round(time.Millisecond))
	if serving > 5*time.Second {
		t.Errorf("the new dataplane served %s after it listened; the manager should send the snapshot at once", serving)
	}
	tlsReaches("after the dataplane restarted", tlsB)
	waitCondition(t, cp, "Ready", "True", "Ready")
	waitURL(t, "http://"+probeAddr+"/readyz", http.StatusOK)
	if g := generation(t, cp); g != gen {
		t.Errorf("the PortMux changed (generation %s, then %s); the dataplane should get its snapshot without", gen, g)
	}
	phase("status Ready and the manager ready again")
}

// withoutKubernetes drops from env what would point a process at an API
// server: a kubeconfig, the in-cluster variables, the envtest assets.
func withoutKubernetes(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "KUBERNETES_") || strings.HasPrefix(kv, "KUBEBUILDER_")
	})
}

// checkHoldsNothing fails unless the process has nothing Kubernetes in its
// environment, no file open but sockets, pipes, event fds, /dev/null and
// its cgroup's limits, and binds no TCP or UDP socket but a TCP listener
// on port.
func checkHoldsNothing(t *testing.T, pid, port int) {
	t.Helper()
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for kv := range strings.SplitSeq(string(environ), "\x00") {
		if strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "KUBERNETES_") {
			t.Errorf("the dataplane's environment has %s", kv)
		}
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		switch {
		case strings.HasPrefix(target, "socket:["):
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		case strings.HasPrefix(target, "pipe:["), strings.HasPrefix(target, "anon_inode:"), target == "/dev/null":
		case strings.HasPrefix(target, "/sys/fs/cgroup/"):
			// The Go runtime keeps the CPU quota open to follow it
			// (GOMAXPROCS); the budget reads the memory limit there.
		default:
			t.Errorf("the dataplane holds %s open (fd %s)", target, fd.Name())
		}
	}
	var bound []string
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		bound = append(bound, socketsOf(t, pid, table, inodes)...)
	}
	if want := []string{"tcp listen " + strconv.Itoa(port)}; !slices.Equal(bound, want) {
		t.Errorf("the dataplane's TCP and UDP sockets: %q; want only %q", bound, want)
	}
}

// socketsOf lists the sockets of /proc/PID/net/TABLE whose inode is one of
// the process's: "tcp listen PORT" for a TCP listener, "PROTO STATE PORT"
// for anything else bound (a TCP connection to the process is not).
func socketsOf(t *testing.T, pid int, table string, inodes map[string]bool) []string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || !inodes[fields[9]] {
			continue
		}
		_, hexPort, _ := strings.Cut(fields[1], ":")
		port, _ := strconv.ParseUint(hexPort, 16, 16)
		proto := strings.TrimSuffix(table, "6")
		switch {
		case proto == "tcp" && fields[3] == "0A":
			out = append(out, fmt.Sprintf("tcp listen %d", port))
		case proto == "tcp" && fields[3] == "01":
			// an established connection: a client's or a backend's
		default:
			out = append(out, fmt.Sprintf("%s state %s port %d", proto, fields[3], port))
		}
	}
	return out
}

// waitCondition waits until kubectl shows the PortMux edge's condition
// with that status and reason.
func waitCondition(t *testing.T, cp *controlPlane, typ, status, reason string) {
	t.Helper()
	jsonpath := fmt.Sprintf(`jsonpath={.status.conditions[?(@.type=="%s")].status} {.status.conditions[?(@.type=="%s")].reason}`, typ, typ)
	peers.Eventually(t, followTimeout, fmt.Sprintf("PortMux edge %s %s %s", typ, status, reason), func() error {
		last, _ := cp.kubectl(10*time.Second, "get", "-n", e2eNamespace, "portmux/edge", "-o", jsonpath)
		if strings.TrimSpace(last) == status+" "+reason {
			return nil
		}
		return fmt.Errorf("%s is %q", typ, last)
	})
}

func generation(t *testing.T, cp *controlPlane) string {
	t.Helper()
	out, err := cp.kubectl(10*time.Second, "get", "-n", e2eNamespace, "portmux/edge", "-o", "jsonpath={.metadata.generation}")
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// waitURL waits until a GET of url answers code.
func waitURL(t *testing.T, url string, code int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	peers.Eventually(t, followTimeout, fmt.Sprintf("GET %s answering %d", url, code), func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == code {
			return nil
		}
		return fmt.Errorf("%d %s", resp.StatusCode, body)
	})
}

// eventuallyTLS waits until TLS passthrough through 127.0.0.1:port for
// site.e2e.test reaches the backend named cn; what names the wait in a
// failure.
func eventuallyTLS(t *testing.T, port int, cn, what string) {
	t.Helper()
	peers.Eventually(t, followTimeout, what, func() error {
		got, err := sClientCN(t, port, "site.e2e.test")
		if err == nil && got != cn {
			err = fmt.Errorf("got CN %q, want %q", got, cn)
		}
		return err
	})
}

// eventuallyBanner waits until an SSH client's first line sent to the
// port is routed to sshd (its identification line comes back), and
// returns how long that took.
func eventuallyBanner(t *testing.T, port int) time.Duration {
	t.Helper()
	return peers.Eventually(t, followTimeout, fmt.Sprintf("SSH through 127.0.0.1:%d routed", port), func() error { return sshBanner(port) })
}

// printed reports whether p printed substr before it exited or timeout
// passed.
func printed(p *peers.Process, substr string, timeout time.Duration) bool {
	_, err := p.WaitFor(substr, timeout)
	return err == nil
}

func sshBanner(port int) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "SSH-2.0-portmux-e2e\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-2.0-OpenSSH") {
		return fmt.Errorf("answer %q", line)
	}
	return nil
}
