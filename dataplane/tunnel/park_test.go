package tunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/test/peers"
)

// testParkThreshold parks an idle direction quickly.
const testParkThreshold = 20 * time.Millisecond

func newParker(t *testing.T) *forward.Parker {
	t.Helper()
	pk, err := forward.NewParker(testParkThreshold)
	if err != nil {
		t.Skipf("no parker here: %v", err)
	}
	t.Cleanup(func() { _ = pk.Close() })
	return pk
}

// parkingTunnel is a tunnel server and client that both park the TCP side
// of idle tunnels, in front of an echo backend.
type parkingTunnel struct {
	srvPk, cliPk *forward.Parker
	reports      chan *tunnel.Report
	shutdown     context.CancelFunc // the server's going away
	client       *tunnel.Client
	url          string
}

func startParkingTunnel(t *testing.T, backend func(net.Conn)) *parkingTunnel {
	t.Helper()
	b := peers.NewTCPServer(t, backend)
	pt := &parkingTunnel{srvPk: newParker(t), cliPk: newParker(t), reports: make(chan *tunnel.Report, 4)}
	h := tunnel.NewHandler(&snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{b.Addr}, "echo:7")}}, tunnel.Options{
		Parker: pt.srvPk,
		Report: func(_ context.Context, r *tunnel.Report) { pt.reports <- r },
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	shutdown, goAway := context.WithCancel(context.Background())
	pt.shutdown = goAway
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return tunnel.WithShutdown(context.Background(), shutdown) }}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { goAway(); _ = srv.Close(); <-done })
	pt.url = "ws://" + ln.Addr().String() + "/tunnel"
	pt.client = newClient(t, pt.url)
	pt.client.Token = ""
	pt.client.Parker = pt.cliPk
	return pt
}

// serve runs the client on a local listener until stop is called, which
// reports ServeTCP's error.
func (pt *parkingTunnel) serve(t *testing.T) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pt.client.ServeTCP(ctx, ln, "echo:7") }()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(closeBound):
			return errors.New("ServeTCP did not return: a tunnel was left running")
		}
	})
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}

func (pt *parkingTunnel) waitParked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(closeBound)
	for pt.srvPk.Parked() != 1 || pt.cliPk.Parked() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("parked: server %d, client %d; want the idle tunnel's TCP side parked at both ends", pt.srvPk.Parked(), pt.cliPk.Parked())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (pt *parkingTunnel) report(t *testing.T) *tunnel.Report {
	t.Helper()
	select {
	case r := <-pt.reports:
		return r
	case <-time.After(closeBound):
		t.Fatal("the server did not report the tunnel")
		return nil
	}
}

func echoLine(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(closeBound))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q, %v; want %q", buf, err, msg)
	}
}

func TestIdleTunnelParksAtBothEndsAndWakes(t *testing.T) {
	t.Parallel()
	pt := startParkingTunnel(t, echo)
	addr, _ := pt.serve(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoLine(t, c, "first")
	pt.waitParked(t)
	echoLine(t, c, "after parking")
	pt.waitParked(t)

	// A clean end from a parked tunnel: half-close, the echo's end comes
	// back, and the tunnel closes normally.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q, %v; want a clean end", rest, err)
	}
	r := pt.report(t)
	if r.Outcome != tunnel.OutcomeClosed || r.Err != nil || r.Up != 18 || r.Down != 18 {
		t.Fatalf("report: outcome %s, err %v, up %d, down %d; want closed, nil, 18, 18", r.Outcome, r.Err, r.Up, r.Down)
	}
	if a, b := pt.srvPk.Parked(), pt.cliPk.Parked(); a != 0 || b != 0 {
		t.Fatalf("still parked after the end: server %d, client %d", a, b)
	}
}

func TestServerGoingAwayEndsParkedTunnel(t *testing.T) {
	t.Parallel()
	pt := startParkingTunnel(t, echo)
	addr, _ := pt.serve(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoLine(t, c, "hello")
	pt.waitParked(t)

	pt.shutdown()
	r := pt.report(t)
	if r.Outcome != tunnel.OutcomeClosed || r.Err == nil {
		t.Fatalf("report: outcome %s, err %v; want closed by the shutdown", r.Outcome, r.Err)
	}
	// The client's parked side is woken and the local connection ends.
	_ = c.SetReadDeadline(time.Now().Add(closeBound))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("local connection after the server went away: %v; want it ended", err)
	}
	if a, b := pt.srvPk.Parked(), pt.cliPk.Parked(); a != 0 || b != 0 {
		t.Fatalf("still parked: server %d, client %d", a, b)
	}
}

func TestClientStopEndsParkedTunnel(t *testing.T) {
	t.Parallel()
	pt := startParkingTunnel(t, echo)
	addr, stop := pt.serve(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoLine(t, c, "hello")
	pt.waitParked(t)

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The server hears 1001 (going away): the client stopped on purpose.
	r := pt.report(t)
	var re *tunnel.ResetError
	if r.Outcome != tunnel.OutcomeClosed || !errors.As(r.Err, &re) || re.Code != 1001 {
		t.Fatalf("report: outcome %s, err %v; want closed with 1001", r.Outcome, r.Err)
	}
	if a, b := pt.srvPk.Parked(), pt.cliPk.Parked(); a != 0 || b != 0 {
		t.Fatalf("still parked: server %d, client %d", a, b)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestClientStopEndsHalfClosedParkedTunnel stops the client while the
// target has finished its half (the stream's direction has ended, nothing
// reads on it) and the local side is parked: only the parker can end it.
func TestClientStopEndsHalfClosedParkedTunnel(t *testing.T) {
	t.Parallel()
	pt := startParkingTunnel(t, func(c net.Conn) {
		_, _ = c.Write([]byte("bye"))
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	addr, stop := pt.serve(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(closeBound))
	if got, err := io.ReadAll(c); err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want the target's half, then its end", got, err)
	}
	deadline := time.Now().Add(closeBound)
	for pt.cliPk.Parked() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the local side of the half-closed tunnel did not park")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := pt.cliPk.Parked(); n != 0 {
		t.Fatalf("still parked after stop: %d", n)
	}
}
