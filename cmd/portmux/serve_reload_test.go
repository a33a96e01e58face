package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// greeter answers every connection with greeting, then closes it: which
// backend a connection reached is what it reads.
func greeter(t *testing.T, greeting string) string {
	t.Helper()
	return peers.NewTCPServer(t, func(c net.Conn) { _, _ = io.WriteString(c, greeting) }).Addr
}

// answer is what a client that says hello on addr reads before the
// connection ends: a backend's greeting, or "" when it was closed without
// one (no route).
func answer(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "dial error"
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "hello\n")
	b, _ := io.ReadAll(c)
	return string(b)
}

// watchAnswers asks addr every 20 ms until stop is closed, and once more
// then, and returns the distinct answers in the order they came.
func watchAnswers(addr string, stop <-chan struct{}) <-chan []string {
	out := make(chan []string, 1)
	go func() {
		var seen []string
		for done := false; ; {
			if a := answer(addr); len(seen) == 0 || seen[len(seen)-1] != a {
				seen = append(seen, a)
			}
			if done {
				out <- seen
				return
			}
			select {
			case <-stop:
				done = true
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return out
}

// portmuxDoc is a PortMux with one listener on port and routes.
func portmuxDoc(port int, routes string) string {
	return fmt.Sprintf(`apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - {name: plain, port: %d}
  routes:
%s`, port, routes)
}

// anyRoute is a route, first, that sends anything to backend.
func anyRoute(backend string) string {
	return fmt.Sprintf("  - {name: first, listeners: [plain], match: {protocol: any}, backend: {address: %q}}\n", backend)
}

// served is serve running on one file, and what it serves.
type served struct {
	a, c       string // greeters answering "A\n" and "C\n"
	port       int
	file, addr string
	logs       *serveLog
}

// serveA starts the greeters A and C and serve (with settle, unless 0) on
// a file whose one route takes anything to A, and waits until A answers.
func serveA(t *testing.T, settle time.Duration) served {
	t.Helper()
	r := served{a: greeter(t, "A\n"), c: greeter(t, "C\n"), port: peers.FreePort(t)}
	r.file = filepath.Join(t.TempDir(), "portmux.yaml")
	writeAtomically(t, r.file, portmuxDoc(r.port, anyRoute(r.a)))
	r.logs = startServe(t, serveOptions{files: []string{r.file}, settle: settle})
	r.addr = fmt.Sprintf("127.0.0.1:%d", r.port)
	peers.Until(t, 10*time.Second, "the first routes", func() bool { return answer(r.addr) == "A\n" })
	return r
}

// TestServeAppliesInPlaceEditsOnceSettled: an editor or a script that
// writes a file in place writes it in pieces; the first piece alone may be
// a valid PortMux that means something else (here: the SSH route without
// the catch-all after it, so every other client is closed). serve applies
// a change only once the files have stayed the same for a while, so the
// half-written file is never served: clients see the old routes, then the
// new ones, nothing in between.
func TestServeAppliesInPlaceEditsOnceSettled(t *testing.T) {
	r := serveA(t, 0)
	a, c, port, file, addr, logs := r.a, r.c, r.port, r.file, r.addr, r.logs

	half := portmuxDoc(port, fmt.Sprintf(`  - {name: first, listeners: [plain], match: {protocol: ssh}, backend: {address: "%s"}}
`, a))
	rest := fmt.Sprintf(`  - {name: rest, listeners: [plain], match: {protocol: any}, backend: {address: "%s"}}
`, c)
	stop := make(chan struct{})
	answers := watchAnswers(addr, stop)
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, half); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // a slow writer: longer than the old 200 ms debounce, well under the settle period
	if _, err := io.WriteString(f, rest); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, 10*time.Second, "the new routes", func() bool { return answer(addr) == "C\n" })
	close(stop)
	if got := <-answers; !slices.Equal(got, []string{"A\n", "C\n"}) {
		t.Errorf("clients were answered %q while the file was written; want the old routes, then the new ones", got)
	}
	if !logs.contains("reloaded", "file changed") {
		t.Errorf("no reload was logged")
	}
}

// TestServeKeepsServingThroughAHalfWrittenFile: a file whose write stopped
// half way, for longer than the settle period, is read, found invalid and
// not applied (here: a tunnel cut before its auth line, which must not
// become an open tunnel); the previous configuration keeps serving, and the
// completed file is applied once it settles.
func TestServeKeepsServingThroughAHalfWrittenFile(t *testing.T) {
	r := serveA(t, 0)
	c, port, file, addr, logs := r.c, r.port, r.file, r.addr, r.logs

	cut := portmuxDoc(port, fmt.Sprintf(`  - name: tunnel
    listeners: [plain]
    match: {protocol: websocket}
    tunnel:
      allow: [{address: "%s"}]
`, c))
	if err := os.WriteFile(file, []byte(cut), 0o600); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, 10*time.Second, "the cut file to be refused", func() bool {
		return logs.contains("reload failed", "spec.routes[0].tunnel.auth")
	})
	if got := answer(addr); got != "A\n" {
		t.Errorf("after a half-written file, clients get %q; want the previous routes (A)", got)
	}
	complete := cut[:len(cut)-len(fmt.Sprintf("      allow: [{address: \"%s\"}]\n", c))] + fmt.Sprintf(`      auth: {none: true}
      allow: [{address: "%s"}]
  - {name: rest, listeners: [plain], match: {protocol: any}, backend: {address: "%s"}}
`, c, c)
	if err := os.WriteFile(file, []byte(complete), 0o600); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, 10*time.Second, "the completed file", func() bool { return answer(addr) == "C\n" })
}

// TestServeReloadsAtOnceOnSIGHUP: SIGHUP does not wait for files to settle
// (here the settle period is a minute); it still applies only a complete,
// valid configuration.
func TestServeReloadsAtOnceOnSIGHUP(t *testing.T) {
	r := serveA(t, time.Minute)
	c, port, file, addr, logs := r.c, r.port, r.file, r.addr, r.logs

	if err := os.WriteFile(file, []byte("spec: {listeners: [{name: plain, port: "), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(t)
	peers.Until(t, 10*time.Second, "the broken file to be refused", func() bool { return logs.contains("reload failed", "SIGHUP") })
	if got := answer(addr); got != "A\n" {
		t.Errorf("after SIGHUP with a broken file, clients get %q; want the previous routes (A)", got)
	}
	if err := os.WriteFile(file, []byte(portmuxDoc(port, anyRoute(c))), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(t)
	peers.Until(t, 5*time.Second, "the new routes after SIGHUP", func() bool { return answer(addr) == "C\n" })
}

// hup sends SIGHUP to this process, which runServe (running) catches.
func hup(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// TestServeSeesAChangeMadeWhileStarting: a file changed after serve read
// it at start, before the first connection, is applied like any other
// change. It used to be lost for good when it came before the file watch
// was set up (found as a flaky TestServeKeepsServingThroughAHalfWrittenFile
// on a loaded machine); the hook makes that moment certain.
func TestServeSeesAChangeMadeWhileStarting(t *testing.T) {
	a, c := greeter(t, "A\n"), greeter(t, "C\n")
	port := peers.FreePort(t)
	file := filepath.Join(t.TempDir(), "portmux.yaml")
	doc := func(backend string) string {
		return portmuxDoc(port, fmt.Sprintf("  - {name: first, match: {protocol: any}, backend: {address: %q}}\n", backend))
	}
	writeAtomically(t, file, doc(a))
	logs := startServe(t, serveOptions{files: []string{file}, afterFirstRead: func() { writeAtomically(t, file, doc(c)) }})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	peers.Until(t, 10*time.Second, "the file written during start to be served", func() bool { return answer(addr) == "C\n" })
	if !logs.contains("reloaded", "file changed") {
		t.Errorf("no reload was logged")
	}
}
