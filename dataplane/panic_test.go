package dataplane_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// panickyListener hands out connections whose Read panics when the bytes
// it returns hold trigger: a stand-in for a bug that a client's bytes
// reach, in a sniffer or a forwarder.
type panickyListener struct {
	net.Listener
	trigger string
}

func (l panickyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &panickyConn{Conn: c, trigger: l.trigger}, nil
}

type panickyConn struct {
	net.Conn
	trigger string
}

func (c *panickyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if strings.Contains(string(b[:n]), c.trigger) {
		panic("bug reached by " + c.trigger)
	}
	return n, err
}

// TestPanicEndsOnlyItsConnection: a panic while sniffing one connection,
// and one while forwarding another, close those two connections, are
// counted, and every other connection (open before, or new) is served.
func TestPanicEndsOnlyItsConnection(t *testing.T) {
	backend := echoBackend(t)
	reg := prometheus.NewRegistry()
	m := newMux(t, dataplane.Options{
		Metrics: dataplane.NewMetrics(reg),
		Listen: func(ctx context.Context, address string) (net.Listener, error) {
			ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", address)
			if err != nil {
				return nil, err
			}
			return panickyListener{Listener: ln, trigger: "BOOM"}, nil
		},
	})
	m.apply(snapshotOf(listenerOn("pub", routeTo("ssh", snapshot.SSH, backend.Addr))))
	pub := m.addr("pub")

	before := dial(t, pub)
	roundTrip(t, before, "SSH-2.0-before\r\n")

	sniffed := dial(t, pub) // panics in the probe
	if _, err := sniffed.Write([]byte("SSH-2.0-BOOM\r\n")); err != nil {
		t.Fatal(err)
	}
	forwarded := dial(t, pub) // panics while forwarding
	roundTrip(t, forwarded, "SSH-2.0-forwarded\r\n")
	if _, err := forwarded.Write([]byte("BOOM\n")); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"sniffed": sniffed, "forwarded": forwarded} {
		if err := closedByPeer(c, ioTimeout); err != nil {
			t.Errorf("%s: the connection that panicked was not closed: %v", name, err)
		}
	}

	roundTrip(t, before, "still served\n")
	after := dial(t, pub)
	roundTrip(t, after, "SSH-2.0-after\r\n")

	if n := metricSum(t, reg, "portmux_panics_total", nil); n != 2 {
		t.Errorf("portmux_panics_total = %v, want 2", n)
	}
	_ = before.Close()
	_ = after.Close()
	m.waitIdle()
}
