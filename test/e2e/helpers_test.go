package e2e

import (
	"io"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// Bounds on waits: every wait in these tests ends with a message, never a
// hang until the test binary's own timeout.
const (
	readyTimeout  = 15 * time.Second // a peer's ready line
	clientTimeout = 20 * time.Second // one ssh or s_client run
	stopTimeout   = 10 * time.Second // SIGTERM to exit
	followTimeout = 20 * time.Second // a change reaching the dataplane
)

// startProc runs a long-lived program the way every test here does, with
// o's stdin and environment: its output in dir/NAME.log (the tail printed
// on failure), stopped by SIGTERM at the test's end, which fails unless it
// exits within stopTimeout.
func startProc(t *testing.T, dir, name string, o peers.Options, argv ...string) *peers.Process {
	t.Helper()
	o.LogDir, o.Grace = dir, stopTimeout
	return peers.StartWith(t, name, o, argv...)
}

// bounded runs a short-lived program for at most timeout and returns its
// output, stdout and stderr together.
func bounded(timeout time.Duration, argv ...string) (string, error) {
	return peers.Command{Timeout: timeout}.Combined(argv...)
}

// sClientCN is the subject CN of the certificate a TLS handshake with
// servername through 127.0.0.1:port gets.
func sClientCN(t *testing.T, port int, servername string) (string, error) {
	t.Helper()
	r, err := peers.SClientTry(t, peers.Loopback.Addr(port), servername)
	return r.CN, err
}

// endSession sends an ssh session started with `echo started; read x;
// echo still $x` the line "alive", closes its stdin and waits for it to
// print "still alive" and exit cleanly; fail says what went wrong.
func endSession(t *testing.T, session *peers.Process, what string, fail func(string, ...any)) {
	t.Helper()
	if _, err := io.WriteString(session.Stdin, "alive\n"); err != nil {
		fail("%s is gone: %v\n%s", what, err, session.Tail(20))
	}
	_ = session.Stdin.Close()
	session.MustWaitFor(t, "still alive", clientTimeout)
	select {
	case <-session.Exited():
		if err := session.Err(); err != nil {
			fail("%s ended with %v\n%s", what, err, session.Tail(20))
		}
	case <-time.After(clientTimeout):
		fail("%s did not end", what)
	}
}
