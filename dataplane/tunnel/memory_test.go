package tunnel_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/test/peers"
)

// TestEndedTunnelsLeaveNoMemory: what a tunnel held, at both ends, is free
// once it ends. Tunnels go one at a time, each carrying a few bytes both
// ways and a half-close, after a warm-up that fills what the dataplane
// and the client keep on purpose (buffer pools, metric series); the live
// heap is compared after a collection (dataplane's
// TestEndedConnectionsLeaveNoMemory does the same for the other paths).
func TestEndedTunnelsLeaveNoMemory(t *testing.T) {
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) { endedTunnelsLeaveNoMemory(t, scheme) })
	}
}

func endedTunnelsLeaveNoMemory(t *testing.T, scheme string) {
	const (
		n = 500
		// perTunnel is the most the live heap may grow by per ended
		// tunnel: noise, far below what one holds.
		perTunnel = 100
	)
	m, c := echoMuxOver(t, scheme)
	c.Log = logr.Discard() // a line a tunnel would be memory too
	run := func(count int) {
		for range count {
			s, err := c.Dial(context.Background(), "echo:7")
			if err != nil {
				t.Fatal(err)
			}
			pingThenEnd(t, s)
		}
		if !within(10*time.Second, func() bool { return m.srv.ActiveConnections() == 0 }) {
			t.Fatalf("%d connections still open after every tunnel ended", m.srv.ActiveConnections())
		}
	}
	run(n / 4)
	peers.HeldAfter(t, n, perTunnel, "tunnels", run)
}
