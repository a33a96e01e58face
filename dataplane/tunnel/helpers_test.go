package tunnel_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"

	"github.com/portmux/portmux/test/peers"
)

const testToken = "correct horse battery staple"

// mux is a real dataplane.Server with one listener on 127.0.0.1:0 whose
// only route is a WebSocket tunnel on /tunnel.
type mux struct {
	srv  *dataplane.Server
	reg  *prometheus.Registry
	addr string
	// url is ws://addr/tunnel or wss://addr/tunnel.
	url string
}

// startMux serves tun on a new dataplane; with cert the listener
// terminates TLS first. It is shut down by t.Cleanup.
func startMux(t testing.TB, tun *snapshot.Tunnel, cert *tls.Certificate) *mux {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard(), Metrics: dataplane.NewMetrics(reg)})
	l := snapshot.Listener{
		Name:          "test/public",
		Address:       "127.0.0.1:0",
		ProbeTimeout:  snapshot.DefaultProbeTimeout,
		MaxProbeBytes: snapshot.DefaultMaxProbeBytes,
		Routes: []snapshot.Route{{
			Name:   "test/tunnel",
			Match:  snapshot.Match{Protocol: snapshot.WebSocket, PathPrefix: "/tunnel"},
			Tunnel: tun,
		}},
	}
	scheme := "ws"
	if cert != nil {
		l.TLS = &snapshot.TLSConfig{
			Certificates: []snapshot.Certificate{{Source: "test", Certificate: cert}},
			ALPN:         []string{"http/1.1"},
		}
		scheme = "wss"
	}
	if errs := srv.Apply(&snapshot.Snapshot{Listeners: []snapshot.Listener{l}}); len(errs) > 0 {
		t.Fatalf("apply: %v", errs)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("dataplane shutdown had to cut connections: %v", err)
		}
	})
	addr := srv.Addr("test/public").String()
	return &mux{srv: srv, reg: reg, addr: addr, url: scheme + "://" + addr + "/tunnel"}
}

// tunnels returns portmux_tunnels_total by outcome.
func (m *mux) tunnels(t testing.TB) map[string]float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "portmux_tunnels_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			out[label(mt, "outcome")] += mt.GetCounter().GetValue()
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// waitTunnels waits until the mux has reported n tunnels with outcome.
func (m *mux) waitTunnels(t testing.TB, outcome tunnel.Outcome, n float64) {
	t.Helper()
	var got map[string]float64
	if !within(10*time.Second, func() bool { got = m.tunnels(t); return got[string(outcome)] >= n }) {
		t.Fatalf("tunnels by outcome = %v, want %v %s", got, n, outcome)
	}
}

// within polls cond until it holds, for at most d, and reports whether it
// did.
func within(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// target is an allow-list entry for endpoints.
func target(udp bool, endpoints []string, names ...string) snapshot.TunnelTarget {
	return snapshot.TunnelTarget{
		Names: names,
		UDP:   udp,
		Backend: snapshot.Backend{
			Name:        "test/" + names[0],
			Endpoints:   endpoints,
			DialTimeout: 2 * time.Second,
		},
	}
}

// newClient returns a client of url with the test token.
func newClient(t testing.TB, rawURL string) *tunnel.Client {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return &tunnel.Client{
		URL:        u,
		Token:      testToken,
		Log:        testr.NewWithInterface(t, testr.Options{Verbosity: 1}),
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
	}
}

// echo copies what it reads back, and half-closes after the client has.
func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, c)
}

// echoTarget is a TCP target, known by names, whose one endpoint is a new
// echo server.
func echoTarget(t testing.TB, names ...string) snapshot.TunnelTarget {
	t.Helper()
	return target(false, []string{peers.NewTCPServer(t, echo).Addr}, names...)
}

// runUntilEnd runs serve until the test ends, then cancels its context
// and fails the test if it returned an error.
func runUntilEnd(t testing.TB, what string, serve func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", what, err)
		}
	})
}

// serveTCP runs c.ServeTCP on a new loopback listener until the test ends
// and returns the listener's address.
func serveTCP(t testing.TB, c *tunnel.Client, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, "ServeTCP", func(ctx context.Context) error { return c.ServeTCP(ctx, ln, target) })
	return ln.Addr().String()
}

// writeFile writes content into a new file of the test's temporary
// directory, mode 0600, and returns its path.
func writeFile(t testing.TB, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// connectProxy is an HTTP proxy that only speaks CONNECT, as corporate
// proxies let tunnels out, and counts what it was asked.
type connectProxy struct {
	url      *url.URL
	connects atomic.Int32
	mu       sync.Mutex
	targets  []string
	auth     []string
}

func startConnectProxy(t testing.TB) *connectProxy {
	t.Helper()
	p := &connectProxy{}
	p.url = &url.URL{Scheme: "http", Host: peers.NewTCPServer(t, p.serve).Addr}
	return p
}

// serve answers one CONNECT and relays until either side ends (the server
// closes c when the test ends, which ends the relay too).
func (p *connectProxy) serve(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	p.connects.Add(1)
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.auth = append(p.auth, req.Header.Get("Proxy-Authorization"))
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_ = up.Close()
		return
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			_ = up.Close()
			return
		}
	}
	forward.Pipe(c, up, forward.Options{})
}

// certPool trusts cert alone.
func certPool(cert *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p
}

// handshake sends one WebSocket handshake for path to addr, with the Host
// host (addr's if empty) and the headers h, and hands the answer and the
// connection's reader to read before it closes the connection.
func handshake(t *testing.T, addr, host, path string, h http.Header, read func(*http.Response, *bufio.Reader)) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if host != "" {
		req.Host = host
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	read(resp, br)
}
