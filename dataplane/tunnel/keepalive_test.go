package tunnel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"

	"github.com/portmux/portmux/test/peers"
)

// Small keepalive settings, so that a dead peer is found in about three
// and a half seconds: within 2 intervals + the pong timeout. The pong
// timeout leaves a loaded 2-core CI machine (with -race) room to answer a
// healthy ping: 1 s was not enough twice (a healthy tunnel of
// TestDeadPeerClosesBothEnds closed while idle, with every package
// testing at once).
const (
	testKeepAlive   = 200 * time.Millisecond
	testPongTimeout = 3 * time.Second
	// closeBound is the generous bound the tests assert: the keepalive
	// bound is 3.4s, the rest is room for a loaded machine.
	closeBound = 10 * time.Second
)

// handlerServer serves a tunnel Handler with the test keepalive on a plain
// http.Server and sends its reports on a channel.
type handlerServer struct {
	addr    string
	reports chan *tunnel.Report
}

func startHandler(t *testing.T, tun *snapshot.Tunnel, opts ...func(*tunnel.Options)) *handlerServer {
	t.Helper()
	hs := &handlerServer{reports: make(chan *tunnel.Report, 16)}
	opt := tunnel.Options{
		KeepAlive:   testKeepAlive,
		PongTimeout: testPongTimeout,
		Report:      func(_ context.Context, r *tunnel.Report) { hs.reports <- r },
	}
	for _, o := range opts {
		o(&opt)
	}
	h := tunnel.NewHandler(tun, opt)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	hs.addr = ln.Addr().String()
	return hs
}

// report waits for the next report.
func (hs *handlerServer) report(t *testing.T) *tunnel.Report {
	t.Helper()
	select {
	case r := <-hs.reports:
		return r
	case <-time.After(closeBound):
		t.Fatal("the server did not report the tunnel")
		return nil
	}
}

// pausableProxy relays TCP connections and, once paused, stops relaying
// anything either way while keeping the sockets open: a peer gone silent,
// as behind a dead NAT mapping.
type pausableProxy struct {
	addr  string
	gate  sync.RWMutex // write-locked while paused
	pause sync.Once
	// pauseFn stops all relaying, for good.
	pauseFn func()
}

func startPausableProxy(t *testing.T, upstream string) *pausableProxy {
	t.Helper()
	p := &pausableProxy{}
	p.addr = peers.NewTCPServer(t, func(c net.Conn) {
		up, err := net.Dial("tcp", upstream)
		if err != nil {
			return
		}
		defer up.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.relay(up, c)
		}()
		p.relay(c, up)
		<-done
	}).Addr
	paused := false
	// This runs before the server's own cleanup, which closes the
	// connections and waits for the relays: let the blocked ones go.
	t.Cleanup(func() {
		p.pause.Do(func() {}) // a later Pause does nothing
		if paused {
			p.gate.Unlock()
		}
	})
	p.pauseFn = func() { p.pause.Do(func() { p.gate.Lock(); paused = true }) }
	return p
}

func (p *pausableProxy) relay(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate.RLock()
			_, werr := dst.Write(buf[:n])
			p.gate.RUnlock()
			if werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

// dialKeptAlive dials target through the tunnel endpoint at addr with the
// tests' short keepalive and pong timeout; the stream is closed when the
// test ends.
func dialKeptAlive(t *testing.T, addr, target string) *tunnel.Stream {
	t.Helper()
	c := newClient(t, "ws://"+addr+"/tunnel")
	c.KeepAlive, c.PongTimeout = testKeepAlive, testPongTimeout
	s, err := c.Dial(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestDeadPeerClosesBothEnds(t *testing.T) {
	t.Parallel()
	hs := startHandler(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{echoTarget(t, "echo:7")}})
	p := startPausableProxy(t, hs.addr)
	s := dialKeptAlive(t, p.addr, "echo:7")
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := s.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q, %v", buf, err)
		}
	}
	roundTrip("before")
	// Idle for many keepalive periods: pings keep a healthy tunnel open.
	time.Sleep(20 * testKeepAlive)
	roundTrip("still there")

	// The path goes silent: nothing passes either way, no FIN, no RST.
	p.pauseFn()
	start := time.Now()
	readErr := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, s); readErr <- err }()
	select {
	case err := <-readErr:
		if !errors.Is(err, tunnel.ErrDeadPeer) {
			t.Fatalf("the client's read ended with %v, want ErrDeadPeer", err)
		}
		t.Logf("client closed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(closeBound):
		t.Fatal("the client did not close its end of the silent tunnel")
	}
	r := hs.report(t)
	t.Logf("server closed after %v: %v", time.Since(start).Round(time.Millisecond), r.Err)
	if r.Outcome != tunnel.OutcomeDeadPeer {
		t.Fatalf("server outcome %s (%v), want %s", r.Outcome, r.Err, tunnel.OutcomeDeadPeer)
	}
}

func TestSlowConsumersAreNotTakenForDeadPeers(t *testing.T) {
	t.Parallel()
	// Longer than the library's 5s bound on writing a pong: a pong that
	// waited behind a blocked data write would end the tunnel.
	const stall = 6 * time.Second
	const size = 16 << 20
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)

	t.Run("client", func(t *testing.T) {
		t.Parallel()
		// The target sends a lot; the client's reader does not read for a
		// while.
		b := peers.NewTCPServer(t, func(c net.Conn) { _, _ = c.Write(payload) })
		hs := startHandler(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{b.Addr}, "src:1")}})
		s := dialKeptAlive(t, hs.addr, "src:1")
		_ = s.CloseWrite()
		time.Sleep(stall)
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, payload) {
			r := hs.report(t)
			t.Fatalf("read %d bytes, %v; want %d (server: %s %v)", len(got), err, size, r.Outcome, r.Err)
		}
		_ = s.Close()
		if r := hs.report(t); r.Outcome != tunnel.OutcomeClosed {
			t.Fatalf("server outcome %s (%v), want closed", r.Outcome, r.Err)
		}
	})

	t.Run("target", func(t *testing.T) {
		t.Parallel()
		// The client sends a lot; the target does not read for a while.
		b := peers.NewTCPServer(t, func(c net.Conn) {
			time.Sleep(stall)
			n, _ := io.Copy(io.Discard, c)
			_, _ = fmt.Fprint(c, n)
		})
		hs := startHandler(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{b.Addr}, "sink:1")}})
		s := dialKeptAlive(t, hs.addr, "sink:1")
		if _, err := s.Write(payload); err != nil {
			r := hs.report(t)
			t.Fatalf("write: %v (server: %s %v)", err, r.Outcome, r.Err)
		}
		_ = s.CloseWrite()
		got, err := io.ReadAll(s)
		if err != nil || string(got) != strconv.Itoa(size) {
			t.Fatalf("target counted %q, %v; want %d", got, err, size)
		}
		_ = s.Close()
		if r := hs.report(t); r.Outcome != tunnel.OutcomeClosed {
			t.Fatalf("server outcome %s (%v), want closed", r.Outcome, r.Err)
		}
	})
}

// TestTCPTunnelIdleTimeout: a TCP tunnel that carries nothing either way
// for its idle timeout is closed (pings do not keep it), and reported so;
// one that carries bytes is not.
func TestTCPTunnelIdleTimeout(t *testing.T) {
	t.Parallel()
	// The busy phase sends a byte every idle/6; only a stall of the whole
	// idle timeout can close it. 600 ms was once not enough margin: a CI
	// run with every package testing under -race on 2 cores closed the
	// busy tunnel as idle.
	const idle = 1500 * time.Millisecond
	hs := startHandler(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{echoTarget(t, "echo:7")}},
		func(o *tunnel.Options) { o.IdleTimeout = idle })
	c := newClient(t, "ws://"+hs.addr+"/tunnel")
	s, err := c.Dial(context.Background(), "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Busy for longer than the idle timeout, a byte at a time.
	for deadline := time.Now().Add(2 * idle); time.Now().Before(deadline); time.Sleep(idle / 6) {
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatalf("write while busy: %v", err)
		}
		if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
			t.Fatalf("echo while busy: %v", err)
		}
	}
	// Then silent: pings go on (testKeepAlive is shorter), bytes do not.
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, s); ended <- err }()
	select {
	case err := <-ended:
		if err == nil {
			t.Error("the idle tunnel ended cleanly for the client, want it told")
		}
	case <-time.After(closeBound):
		t.Fatalf("the idle tunnel is still open after %v", closeBound)
	}
	if rep := hs.report(t); rep.Outcome != tunnel.OutcomeIdleTimeout {
		t.Fatalf("report outcome %s (%v), want %s", rep.Outcome, rep.Err, tunnel.OutcomeIdleTimeout)
	}
}
