package dataplane_test

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"

	"github.com/portmux/portmux/test/peers"
)

// relayLoops is Options.RelayLoops of every test's Server. `make test` runs
// the package a second time with -relay-loops=-1, so that every behaviour
// is asserted on both connection paths: the relay loops' (Linux's
// default) and the goroutines' (other platforms', and Linux's with
// --relay-loops=-1).
var relayLoops = flag.Int("relay-loops", 0, "Options.RelayLoops of every test's Server (-1: goroutines only)")

// onPath is loops where the relay loops carry cleartext connections
// (Linux, relay loops on), goroutines elsewhere: for the few answers the
// two paths give differently, each documented where it is used.
func onPath[T any](loops, goroutines T) T {
	if runtime.GOOS == "linux" && *relayLoops >= 0 {
		return loops
	}
	return goroutines
}

// TestMain fails the package when a test leaves a goroutine behind: no byte
// sequence, slow client, reload or shutdown may leak one. Every server,
// backend and peer a test starts is stopped by its cleanup, and the
// dataplane's Shutdown waits for its own goroutines. The one goroutine
// ignored is fasthttp's, one per process, which refreshes the Date of its
// responses once a second.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

// ioTimeout bounds any single wait for bytes or for an end of stream in
// these tests.
const ioTimeout = peers.IOTimeout

// testMux is an in-process dataplane for one test.
type testMux struct {
	*dataplane.Server
	t testing.TB
	// reg holds the server's metrics, for outcomeCount and metricSum.
	reg *prometheus.Registry
}

// startMux starts a Server, applies snap (every listener must bind) and
// shuts it down at cleanup, failing the test when Shutdown had to cut
// connections the test left open.
func startMux(t testing.TB, snap *snapshot.Snapshot) *testMux {
	t.Helper()
	m := newMux(t, dataplane.Options{})
	m.apply(snap)
	return m
}

// newMux is startMux with options and nothing applied. The logger is the
// test's, with a line per connection; the metrics are on the mux's own
// registry.
func newMux(t testing.TB, opt dataplane.Options) *testMux {
	t.Helper()
	if opt.RelayLoops == 0 {
		opt.RelayLoops = *relayLoops
	}
	opt.Log = testr.NewWithInterface(t, testr.Options{Verbosity: 1})
	opt.LogConnections = true
	reg := prometheus.NewRegistry()
	opt.Metrics = dataplane.NewMetrics(reg)
	srv := dataplane.NewServer(opt)
	m := &testMux{Server: srv, t: t, reg: reg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown at cleanup: %v (connections left open)", err)
		}
	})
	return m
}

// apply applies snap and fails the test on any bind error.
func (m *testMux) apply(snap *snapshot.Snapshot) {
	m.t.Helper()
	if errs := m.Apply(snap); len(errs) > 0 {
		m.t.Fatalf("Apply: %v", errs)
	}
}

// addr is the bound address of a listener.
func (m *testMux) addr(listener string) string {
	m.t.Helper()
	a := m.Addr(listener)
	if a == nil {
		m.t.Fatalf("listener %q is not bound", listener)
	}
	return a.String()
}

// waitIdle waits until the dataplane holds no connection.
func (m *testMux) waitIdle() {
	m.t.Helper()
	peers.Until(m.t, ioTimeout, "the dataplane to hold no connection", func() bool { return m.ActiveConnections() == 0 })
}

// shutdownWithin starts Shutdown with a deadline d from now, and returns
// what it returns once it does.
func (m *testMux) shutdownWithin(d time.Duration) <-chan error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	done := make(chan error, 1)
	go func() {
		defer cancel()
		done <- m.Shutdown(ctx)
	}()
	return done
}

// hangUp half-closes c, which the dataplane must then close, and waits
// until the dataplane holds no connection.
func (m *testMux) hangUp(c *net.TCPConn) {
	m.t.Helper()
	_ = c.CloseWrite()
	if err := closedByPeer(c, ioTimeout); err != nil {
		m.t.Fatal(err)
	}
	m.waitIdle()
}

// outcomeCount sums portmux_connections_total over the connections of
// listener (every one when "") that ended with outcome.
func (m *testMux) outcomeCount(listener, outcome string) int {
	m.t.Helper()
	want := map[string]string{"outcome": outcome}
	if listener != "" {
		want["listener"] = listener
	}
	return int(m.metricSum("portmux_connections_total", want))
}

// metricSum sums the counters or gauges of the family name whose labels
// include want.
func (m *testMux) metricSum(name string, want map[string]string) float64 {
	m.t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		m.t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, metric := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			sum += metric.GetCounter().GetValue() + metric.GetGauge().GetValue()
		}
	}
	return sum
}

// echoListener is a listener pub whose one route sends anything to a new
// echo backend.
func echoListener(t testing.TB) (*peers.TCPServer, snapshot.Listener) {
	t.Helper()
	backend := echoBackend(t)
	return backend, listenerOn("pub", routeTo("any", snapshot.Any, backend.Addr))
}

// listenerOn returns a listener on 127.0.0.1:0 with a 2s probe timeout.
func listenerOn(name string, routes ...snapshot.Route) snapshot.Listener {
	return snapshot.Listener{
		Name:          name,
		Address:       "127.0.0.1:0",
		ProbeTimeout:  2 * time.Second,
		MaxProbeBytes: snapshot.DefaultMaxProbeBytes,
		Routes:        routes,
	}
}

// routeTo returns a route matching proto that forwards to the endpoints.
func routeTo(name string, proto snapshot.Protocol, endpoints ...string) snapshot.Route {
	return snapshot.Route{
		Name:    name,
		Match:   snapshot.Match{Protocol: proto},
		Backend: &snapshot.Backend{Name: name, Endpoints: endpoints, DialTimeout: 5 * time.Second},
	}
}

func snapshotOf(listeners ...snapshot.Listener) *snapshot.Snapshot {
	return &snapshot.Snapshot{Listeners: listeners}
}

// echoBackend echoes every connection until the client half-closes, then
// half-closes back.
func echoBackend(t testing.TB) *peers.TCPServer {
	return greetingEchoBackend(t, "")
}

// greetingEchoBackend writes greeting as soon as it accepts (a server that
// speaks first, or a way to tell backends apart), then echoes.
func greetingEchoBackend(t testing.TB, greeting string) *peers.TCPServer {
	return peers.NewTCPServer(t, func(c net.Conn) {
		if greeting != "" {
			if _, err := io.WriteString(c, greeting); err != nil {
				return
			}
		}
		echo(c, c)
	})
}

// echo copies r back to c and half-closes c at the end of r.
func echo(c net.Conn, r io.Reader) {
	if _, err := io.Copy(c, r); err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// dial connects to addr and closes the connection at cleanup.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip writes msg on c and reads the same bytes back (through an echo
// backend).
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo of %q: %v (got %q)", msg, err, got)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// readLine reads one line (with its newline) within ioTimeout.
func readLine(t testing.TB, r *bufio.Reader, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, line)
	}
	return line
}

// closedByPeer reads c until it ends and reports how: nil when the peer
// closed it (EOF or reset) within d, an error when d passed first or data
// arrived that nobody should have sent.
func closedByPeer(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			return errors.New("received data: " + string(buf[:n]))
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errors.New("still open after " + d.String())
		default:
			return nil // EOF or connection reset: closed
		}
	}
}
