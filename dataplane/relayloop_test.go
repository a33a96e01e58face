package dataplane_test

import (
	"fmt"
	"net"
	"runtime"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// On Linux the relay loops carry a plain tcp-mode route without a
// goroutine, and hand everything else to one: a backend named by host
// name here. With -relay-loops=-1 (make test's second run) both are on
// goroutines and the loops carry nothing.
func TestRelayLoopsCarryPlainRoutes(t *testing.T) {
	backend := echoBackend(t)
	_, port, err := net.SplitHostPort(backend.Addr)
	if err != nil {
		t.Fatal(err)
	}
	m := startMux(t, snapshotOf(
		listenerOn("plain", routeTo("plain", snapshot.Any, backend.Addr)),
		listenerOn("named", routeTo("named", snapshot.Any, net.JoinHostPort("localhost", port))),
	))
	loops := 1
	if runtime.GOOS != "linux" || *relayLoops < 0 {
		loops = 0
	}
	carried := func(want int) {
		t.Helper()
		peers.Eventually(t, ioTimeout, fmt.Sprintf("%d connection(s) on the relay loops", want), func() error {
			if got := int(m.metricSum("portmux_relay_loop_connections", nil)); got != want {
				return fmt.Errorf("%d", got)
			}
			return nil
		})
	}

	plain := dial(t, m.addr("plain"))
	roundTrip(t, plain, "on the loop\n")
	carried(loops)
	named := dial(t, m.addr("named"))
	roundTrip(t, named, "handed off\n")
	carried(loops) // the handed-off one is not among them
	if n := m.ActiveConnections(); n != 2 {
		t.Fatalf("%d active connections, want 2", n)
	}
	_ = plain.Close()
	_ = named.Close()
	carried(0)
	m.waitIdle()
	if got := m.outcomeCount("", "forwarded"); got != 2 {
		t.Fatalf("%d connections counted forwarded, want 2", got)
	}
}
