package daemon_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/spf13/cobra"

	"github.com/portmux/portmux/dataplane/budget"
	"github.com/portmux/portmux/dataplane/control"
	"github.com/portmux/portmux/dataplane/daemon"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// The dataplane command's package, and everything it links, holds no
// Kubernetes package: the process that parses untrusted bytes cannot
// reach the API server however a bug in it is used. (The binary is shared
// with the manager; what matters is that no code the dataplane runs can
// build a client.) The logger it is given, controller-runtime's zap,
// links no client either.
func TestImportsNoKubernetes(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to list imports: %v", err)
	}
	for _, tc := range []struct {
		pkg    string
		denied []string // import path prefixes
	}{
		{"github.com/portmux/portmux/dataplane/daemon", []string{"k8s.io/", "sigs.k8s.io/", "github.com/portmux/portmux/controllers", "github.com/portmux/portmux/api"}},
		{"sigs.k8s.io/controller-runtime/pkg/log/zap", []string{"k8s.io/client-go", "k8s.io/api/"}},
	} {
		t.Run(tc.pkg, func(t *testing.T) {
			out, err := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}", tc.pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", tc.pkg, err, stderr(err))
			}
			deps := strings.Fields(string(out))
			if len(deps) < 10 {
				t.Fatalf("go list -deps %s listed %d packages: %q", tc.pkg, len(deps), deps)
			}
			for _, d := range deps {
				for _, p := range tc.denied {
					if strings.HasPrefix(d, p) {
						t.Errorf("%s depends on %s", tc.pkg, d)
					}
				}
			}
		})
	}
}

func stderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

func testLog(t *testing.T) func(*cobra.Command) func() logr.Logger {
	return func(*cobra.Command) func() logr.Logger { return func() logr.Logger { return testr.New(t) } }
}

// runDataplane runs `portmux dataplane` with args until the test ends and
// returns its socket; stop cancels it and returns what it returned.
func runDataplane(t *testing.T, args ...string) (socket string, stop func() error) {
	t.Helper()
	socket = peers.SocketPath(t, "pmx-dp-")
	cmd := daemon.NewCommand(testLog(t))
	cmd.SetArgs(append([]string{"--socket", socket, "--shutdown-grace", "1s"}, args...))
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	var exitErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case exitErr = <-ch:
			case <-time.After(10 * time.Second):
				exitErr = errors.New("the dataplane did not stop within 10s of SIGTERM")
			}
		})
		return exitErr
	}
	t.Cleanup(func() { _ = stop() })
	c := control.NewClient(socket)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.State(context.Background()); err == nil {
			return socket, stop
		} else if time.Now().After(deadline) {
			t.Fatalf("the dataplane never answered on %s: %v", socket, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probe runs `portmux dataplane probe` against socket.
func probe(t *testing.T, socket string, args ...string) error {
	cmd := daemon.NewCommand(testLog(t))
	cmd.SetArgs(append([]string{"probe", "--socket", socket, "--timeout", "2s"}, args...))
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	return cmd.Execute()
}

// The process serves what it is sent, on the host it is told to bind
// whatever the snapshot says, with the cap on connections it decides
// itself; its probes answer on the socket, and it is ready once it has a
// snapshot.
func TestDataplaneServesSnapshots(t *testing.T) {
	socket, _ := runDataplane(t, "--bind-address", "127.0.0.1", "--max-connections", "1")
	if err := probe(t, socket); err != nil {
		t.Errorf("liveness probe: %v", err)
	}
	if err := probe(t, socket, "--ready"); err == nil {
		t.Error("ready before any snapshot")
	}

	backend := peers.NewTCPServer(t, peers.Echo)
	port := strconv.Itoa(peers.FreePort(t))
	snap := &snapshot.Snapshot{MaxConnections: 1000, Listeners: []snapshot.Listener{{
		Name: "ns/pm/public", Address: net.JoinHostPort("0.0.0.0", port), MaxConnections: 100,
		Routes: []snapshot.Route{{Name: "ns/pm/echo", Match: snapshot.Match{Protocol: snapshot.Any},
			Backend: &snapshot.Backend{Name: "echo", Endpoints: []string{backend.Addr}, DialTimeout: time.Second}}},
	}}}
	wire, err := snapshot.Encode(snap)
	if err != nil {
		t.Fatal(err)
	}
	st, err := control.NewClient(socket).Apply(context.Background(), wire)
	if err != nil || len(st.BindErrors) != 0 {
		t.Fatalf("apply: %+v, %v", st, err)
	}
	if err := probe(t, socket, "--ready"); err != nil {
		t.Errorf("readiness probe after a snapshot: %v", err)
	}

	first, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
	if err != nil {
		t.Fatalf("the listener is not on 127.0.0.1:%s: %v", port, err)
	}
	defer first.Close()
	if _, err := first.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = first.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(first, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the dataplane: %q, %v", buf, err)
	}
	// --max-connections 1 wins over the snapshot's 1000: a second
	// connection is closed at once.
	second, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := second.Read(buf); err == nil {
		t.Errorf("a second connection read %q; want it closed (cap of 1)", buf[:n])
	}
	// 127.0.0.2 is this host too (Linux routes 127/8 to lo): a listener
	// on 0.0.0.0, as the snapshot asks, would answer there.
	if c, err := net.DialTimeout("tcp", "127.0.0.2:"+port, time.Second); err == nil {
		c.Close()
		t.Errorf("the listener answers on 127.0.0.2; --bind-address 127.0.0.1 should have won over the snapshot's 0.0.0.0")
	}
}

// On SIGTERM (a cancelled context) the process drains and removes its
// socket; a second one refuses a socket that a live one serves.
func TestDataplaneStops(t *testing.T) {
	socket, stop := runDataplane(t)
	second := daemon.NewCommand(testLog(t))
	second.SetArgs([]string{"--socket", socket})
	second.SetOut(io.Discard)
	second.SetErr(io.Discard)
	if err := second.Execute(); err == nil || !strings.Contains(err.Error(), "another process serves on it") {
		t.Errorf("a second dataplane on the same socket: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("the dataplane returned %v", err)
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is still there after the dataplane stopped: %v", err)
	}
	if err := probe(t, socket); err == nil {
		t.Error("the liveness probe passes with no dataplane")
	}
}

// TestApplyBudgetCollectsLessUnderALimit: a dataplane under a memory
// limit runs with budget.GCPercent's GOGC, and one told GOGC keeps it.
func TestApplyBudgetCollectsLessUnderALimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(512 << 20))
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	gogc := func() int { v := debug.SetGCPercent(100); debug.SetGCPercent(v); return v }

	t.Setenv("GOGC", "")
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	daemon.ApplyBudget(testr.New(t), 0)
	if got, want := gogc(), budget.GCPercent(512<<20); got != want || want <= 100 {
		t.Errorf("GOGC under a 512 MiB limit: %d, want %d (above the default)", got, want)
	}

	debug.SetGCPercent(100)
	t.Setenv("GOGC", "100")
	daemon.ApplyBudget(testr.New(t), 0)
	if got := gogc(); got != 100 {
		t.Errorf("GOGC=100 in the environment: the process runs with %d", got)
	}
}
