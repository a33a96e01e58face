package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/test/peers"
)

func TestTCPTunnelCarriesEveryByteBothWays(t *testing.T) {
	t.Parallel()
	m, s := echoTunnel(t)
	defer s.Close()
	payload := make([]byte, 8<<20)
	_, _ = rand.Read(payload)
	if err := peers.EchoBack(s, payload, func() { _ = s.CloseWrite() }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	m.waitTunnels(t, tunnel.OutcomeClosed, 1)
}

func TestTCPTunnelHalfCloseLetsTheAnswerThrough(t *testing.T) {
	t.Parallel()
	// The backend answers only once the client has finished sending, as
	// request/response protocols that shut down their side do.
	b := peers.NewTCPServer(t, func(c net.Conn) {
		req, _ := io.ReadAll(c)
		_, _ = c.Write(append([]byte("answer to "), req...))
	})
	m := startMux(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{b.Addr}, "qa:1")}}, nil)
	c := newClient(t, m.url)
	c.Token = "" // the tunnel has no token: none needed

	local := serveTCP(t, c, "qa:1")
	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("question"))
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "answer to question" {
		t.Fatalf("got %q, %v", got, err)
	}
	m.waitTunnels(t, tunnel.OutcomeClosed, 1)
}

func TestTCPTunnelBackendResetResetsTheClient(t *testing.T) {
	t.Parallel()
	b := peers.NewTCPServer(t, func(c net.Conn) {
		buf := make([]byte, 5)
		_, _ = io.ReadFull(c, buf)
		_ = c.(*net.TCPConn).SetLinger(0) // close sends RST
	})
	m := startMux(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{target(false, []string{b.Addr}, "rst:1")}}, nil)
	s, err := newClient(t, m.url).Dial(context.Background(), "rst:1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, _ = s.Write([]byte("hello"))
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(s); done <- err }()
	select {
	case err := <-done:
		if _, ok := err.(*tunnel.ResetError); !ok {
			t.Fatalf("read after the backend reset: %v (%T), want a *tunnel.ResetError", err, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client never saw the reset")
	}
}

// sshTunnel is an sshd behind a tunnel route that allows it as "sshd:22"
// and "sshd:ssh".
func sshTunnel(t *testing.T, tlsCert *peers.Cert) (*peers.SSHServer, *mux) {
	t.Helper()
	sshd := peers.SSHD(t)
	tun := &snapshot.Tunnel{
		Token: []byte(testToken),
		Allow: []snapshot.TunnelTarget{target(false, []string{sshd.Addr}, "sshd:22", "sshd:ssh")},
	}
	var cert *tls.Certificate
	if tlsCert != nil {
		cert = tlsCert.TLS
	}
	return sshd, startMux(t, tun, cert)
}

func TestSSHThroughStdioTunnel(t *testing.T) {
	t.Parallel()
	bin := portmuxBinary(t)
	tokenFile := writeFile(t, "token", []byte(testToken+"\n"))

	t.Run("ws", func(t *testing.T) {
		t.Parallel()
		sshd, m := sshTunnel(t, nil)
		proxy := bin + " tunnel --token-file " + tokenFile + " -L stdio:sshd:22 " + m.url
		if err := sshd.EchoVia(t, proxy); err != nil {
			t.Fatal(err)
		}
		// A bigger stream, and the port asked for by its name.
		proxy = bin + " tunnel --token-file " + tokenFile + " -L stdio:sshd:ssh " + m.url
		out, err := sshd.RunVia(t, proxy, "head -c 8388608 /dev/zero | wc -c")
		if err != nil {
			t.Fatal(err)
		}
		if out != "8388608\n" {
			t.Fatalf("ssh printed %q, want 8388608", out)
		}
		m.waitTunnels(t, tunnel.OutcomeClosed, 2)
	})

	t.Run("wss", func(t *testing.T) {
		t.Parallel()
		cert := peers.CertPair(t, "127.0.0.1")
		sshd, m := sshTunnel(t, cert)
		caFile := writeFile(t, "ca.pem", cert.CertPEM)
		proxy := bin + " tunnel --token-file " + tokenFile + " --ca-file " + caFile + " -L stdio:sshd:22 " + m.url
		if err := sshd.EchoVia(t, proxy); err != nil {
			t.Fatal(err)
		}
		// Without the CA the server is not trusted, and nothing is sent.
		proxy = bin + " tunnel --token-file " + tokenFile + " --retries 0 -L stdio:sshd:22 " + m.url
		if out, err := sshd.RunVia(t, proxy, "echo", "ok"); err == nil {
			t.Fatalf("ssh through an unverified wss:// server succeeded: %q", out)
		}
		m.waitTunnels(t, tunnel.OutcomeClosed, 1)
	})
}

// A dataplane that stops while a tunnel is open waits for it (draining),
// then ends it with close code 1001: the client is told the server went
// away, not left with a cut connection.
func TestShutdownEndsTunnelsGoingAway(t *testing.T) {
	t.Parallel()
	m, s := echoTunnel(t)
	defer s.Close()
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}

	// The client reads, as a tunnel client does while it waits for data.
	readErr := make(chan error, 1)
	go func() { _, err := s.Read(buf); readErr <- err }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := m.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the drain deadline to pass (the tunnel is open)", err)
	}
	err := <-readErr
	var re *tunnel.ResetError
	if !errors.As(err, &re) || re.Code != websocket.StatusGoingAway {
		t.Fatalf("client read after shutdown: %v, want close 1001 (going away)", err)
	}
	m.waitTunnels(t, tunnel.OutcomeClosed, 1)
}

// TestIdleTunnelHoldsOnlyItsOwnGoroutines checks what an open tunnel
// costs the dataplane: its two directions, not also the goroutine that
// sniffed the connection and parsed the handshake (with the stack it grew
// doing so), which hands the connection over and ends. The connection is
// still finished, counted and logged when the tunnel ends.
//
// Not parallel: it counts the goroutines of the whole process.
func TestIdleTunnelHoldsOnlyItsOwnGoroutines(t *testing.T) {
	const n = 20
	m := echoMux(t)
	c := newClient(t, m.url)
	streams := make([]*tunnel.Stream, n)
	for i := range streams {
		s, err := c.Dial(context.Background(), "echo:7")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		streams[i] = s
	}
	waiting := func() int {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		return strings.Count(buf.String(), "dataplane.(*Server).serveTunnel(")
	}
	if !within(5*time.Second, func() bool { return waiting() == 0 }) {
		t.Fatalf("%d of %d idle tunnels still hold the goroutine that accepted them", waiting(), n)
	}
	if a := m.srv.ActiveConnections(); a != n {
		t.Fatalf("active connections = %d while %d tunnels are open", a, n)
	}

	for _, s := range streams {
		pingThenEnd(t, s)
	}
	m.waitTunnels(t, tunnel.OutcomeClosed, n)
	if !within(5*time.Second, func() bool { return m.srv.ActiveConnections() == 0 }) {
		t.Fatalf("active connections = %d after every tunnel ended", m.srv.ActiveConnections())
	}
}

// echoMux starts a dataplane with the test token whose tunnels may reach
// "echo:7", an echo backend.
func echoMux(t *testing.T) *mux {
	t.Helper()
	m, _ := echoMuxOver(t, "ws")
	return m
}

// echoMuxOver starts an echoMux that speaks scheme: "ws", or "wss" with a
// certificate of its own, and a client that trusts it.
func echoMuxOver(t *testing.T, scheme string) (*mux, *tunnel.Client) {
	t.Helper()
	tun := &snapshot.Tunnel{Token: []byte(testToken), Allow: []snapshot.TunnelTarget{echoTarget(t, "echo:7")}}
	if scheme != "wss" {
		m := startMux(t, tun, nil)
		return m, newClient(t, m.url)
	}
	cert := peers.CertPair(t, "127.0.0.1")
	m := startMux(t, tun, cert.TLS)
	c := newClient(t, m.url)
	c.TLS = &tls.Config{RootCAs: certPool(cert.Leaf)}
	return m, c
}

// pingThenEnd uses a tunnel to "echo:7" as a user would: a few bytes
// there and back, a half-close, the echo's end read, the stream closed.
func pingThenEnd(t *testing.T, s *tunnel.Stream) {
	t.Helper()
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the tunnel: %q, %v", buf, err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(s); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// echoTunnel opens a tunnel to "echo:7" through a new echoMux.
func echoTunnel(t *testing.T) (*mux, *tunnel.Stream) {
	t.Helper()
	m := echoMux(t)
	s, err := newClient(t, m.url).Dial(context.Background(), "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}
