package dataplane_test

import (
	"bufio"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// On a port where every client speaks first, a connected but silent client
// is held by the kernel: the dataplane has no connection for it until its
// first bytes arrive, and then routes it as usual. A timeout route (the
// server speaks first) turns that off, so a silent client is accepted at
// once and sent to the timeout route's backend.
func TestSilentClientCostsNothingWhereClientsSpeakFirst(t *testing.T) {
	t.Parallel()
	const banner = "SSH-2.0-Deferred\r\n"
	backend := echoBackend(t)
	speaker := greetingEchoBackend(t, "SSH-2.0-ServerFirst\r\n")
	l := listenerOn("pub", routeTo("ssh", snapshot.SSH, backend.Addr), routeTo("any", snapshot.Any, backend.Addr))
	m := startMux(t, snapshotOf(l))

	c := dial(t, m.addr("pub"))
	// Well under the kernel's one-second deferral; without it the accept
	// takes microseconds.
	time.Sleep(300 * time.Millisecond)
	if n := m.ActiveConnections(); n != 0 {
		t.Fatalf("a silent client holds %d connection(s) in the dataplane, want 0", n)
	}
	roundTrip(t, c, banner)
	if n := m.ActiveConnections(); n != 1 {
		t.Fatalf("after its first bytes the client has %d connection(s), want 1", n)
	}
	_ = c.Close()
	m.waitIdle()

	// The same port with a timeout route: silent clients are served.
	l.Routes = append([]snapshot.Route{routeTo("silent", snapshot.Timeout, speaker.Addr)}, l.Routes...)
	l.ProbeTimeout = 100 * time.Millisecond
	m.apply(snapshotOf(l))
	c = dial(t, m.addr("pub"))
	time.Sleep(300 * time.Millisecond)
	if n := m.ActiveConnections(); n != 1 {
		t.Fatalf("with a timeout route a silent client has %d connection(s), want 1 (accepted at once)", n)
	}
	if got := readLine(t, bufio.NewReader(c), c); got != "SSH-2.0-ServerFirst\r\n" {
		t.Fatalf("silent client received %q, want the timeout route's banner", got)
	}
	_ = c.Close()
	m.waitIdle()
}
