//go:build linux

package dataplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// udpListenerOn is a UDP listener on 127.0.0.1:0.
func udpListenerOn(name string, routes ...snapshot.Route) snapshot.Listener {
	l := listenerOn(name, routes...)
	l.Transport = snapshot.UDP
	return l
}

func quicRoute(name string, sni []string, endpoints ...string) snapshot.Route {
	r := routeTo(name, snapshot.QUIC, endpoints...)
	r.Match.SNI = sni
	return r
}

// h3Server is a quic-go HTTP/3 server on 127.0.0.1 that answers every
// request with its name.
func h3Server(t *testing.T, name string, cert *tls.Certificate) string {
	t.Helper()
	return h3ServerWith(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, name+" "+r.Proto)
	}))
}

// h3ServerWith is a quic-go HTTP/3 server on 127.0.0.1 serving h.
func h3ServerWith(t *testing.T, cert *tls.Certificate, h http.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{*cert}}),
		Handler:   h,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(pc) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// h3Get requests url over HTTP/3 through the mux at muxAddr (the URL's
// host is the SNI) on conn, and returns the body.
func h3Get(t *testing.T, tr *http3.Transport, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return string(b)
}

// h3Client is an HTTP/3 client that trusts ca and sends every connection
// to muxAddr over pc.
func h3Client(t *testing.T, ca *peers.CA, muxAddr string, pc net.PacketConn) *http3.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	qt := &quic.Transport{Conn: pc}
	mux, err := net.ResolveUDPAddr("udp", muxAddr)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return qt.DialEarly(ctx, mux, tlsCfg, cfg)
		},
	}
	t.Cleanup(func() {
		_ = tr.Close()
		_ = qt.Close()
	})
	return tr
}

// TestUDPQUICBySNI: two quic-go HTTP/3 servers behind one UDP port, each
// chosen by the SNI of the client's Initial, each reached with a full
// handshake and a request by quic-go's client; the UDP port shares its
// number with a TCP listener.
func TestUDPQUICBySNI(t *testing.T) {
	ca := peers.NewCA(t, "portmux QUIC test CA")
	a := h3Server(t, "server-a", ca.Issue(t, "a.example.test", x509.ExtKeyUsageServerAuth, "a.example.test").TLS)
	b := h3Server(t, "server-b", ca.Issue(t, "b.example.test", x509.ExtKeyUsageServerAuth, "b.example.test", "c.example.test").TLS)
	echoTCP := echoBackend(t)
	m := startMuxOnSharedPort(t, func(port string) *snapshot.Snapshot {
		u := udpListenerOn("udp443",
			quicRoute("quic-a", []string{"a.example.test"}, a),
			quicRoute("quic-b", []string{"*.example.test", "localhost"}, b),
		)
		u.Address = "127.0.0.1:" + port
		tcp := listenerOn("tcp443", routeTo("echo", snapshot.Any, echoTCP.Addr))
		tcp.Address = "127.0.0.1:" + port
		return snapshotOf(tcp, u)
	})
	muxAddr := m.addr("udp443")
	if tcpAddr := m.addr("tcp443"); tcpAddr != muxAddr {
		t.Fatalf("TCP on %s, UDP on %s: want one port", tcpAddr, muxAddr)
	}
	roundTrip(t, dial(t, m.addr("tcp443")), "TCP beside UDP\n")

	// A session is a client address: each host gets a client socket of
	// its own (a second connection on one socket would follow the
	// session's route, whatever its SNI).
	for _, tc := range []struct{ host, want string }{
		{"a.example.test", "server-a HTTP/3.0"},
		{"b.example.test", "server-b HTTP/3.0"},
		{"c.example.test", "server-b HTTP/3.0"},
	} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tr := h3Client(t, ca, muxAddr, pc)
		if got := h3Get(t, tr, "https://"+tc.host+"/"); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.host, got, tc.want)
		}
	}
	if n := m.UDPSessions(); n != 3 {
		t.Errorf("%d UDP sessions, want 3", n)
	}
}

// TestUDPQUICDownload: a download of several MB from a quic-go HTTP/3
// server through the mux arrives whole, byte for byte. quic-go sends a
// bulk download's packets in segmented buffers (UDP_SEGMENT) on Linux,
// which the relay reads whole and sends on segmented.
func TestUDPQUICDownload(t *testing.T) {
	body := randomBody(1)
	tr := h3Behind(t, "dl.example.test", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	got := h3Get(t, tr, "https://dl.example.test/")
	if len(got) != len(body) || got != string(body) {
		t.Fatalf("downloaded %d bytes, want the server's %d", len(got), len(body))
	}
}

// randomBody is 8 MB of bytes from seed: a bulk transfer's content.
func randomBody(seed byte) []byte {
	b := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// h3Behind starts a quic-go HTTP/3 server for host serving h and a mux
// with a QUIC route to it, and returns an HTTP/3 client of the mux.
func h3Behind(t *testing.T, host string, h http.Handler) *http3.Transport {
	t.Helper()
	ca := peers.NewCA(t, "portmux QUIC test CA")
	be := h3ServerWith(t, ca.Issue(t, host, x509.ExtKeyUsageServerAuth, host).TLS, h)
	m := startMux(t, snapshotOf(udpListenerOn("udp", quicRoute("h3", []string{host}, be))))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return h3Client(t, ca, m.addr("udp"), pc)
}

// TestUDPQUICUpload: an upload of several MB to a quic-go HTTP/3 server
// through the mux arrives whole: quic-go's client sends in segmented
// buffers too, which the relay reads whole from the listener socket
// (UDP_GRO) and sends on to the backend segmented.
func TestUDPQUICUpload(t *testing.T) {
	body := randomBody(2)
	tr := h3Behind(t, "ul.example.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := io.ReadAll(r.Body)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		case !bytes.Equal(got, body):
			http.Error(w, fmt.Sprintf("received %d bytes, not the client's %d", len(got), len(body)), http.StatusBadRequest)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://ul.example.test/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	answer, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(answer) != "ok" {
		t.Fatalf("POST: %s %q %v", resp.Status, answer, err)
	}
}

// startMuxOnSharedPort applies the snapshot build makes for a free port
// number, trying again when the port was taken in between.
func startMuxOnSharedPort(t *testing.T, build func(port string) *snapshot.Snapshot) *testMux {
	t.Helper()
	m := newMux(t, dataplane.Options{})
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		_ = ln.Close()
		if errs := m.Apply(build(port)); len(errs) == 0 {
			return m
		}
	}
	t.Fatal("no free port for TCP and UDP")
	return nil
}

// TestUDPQUICSessionPerClient: each quic-go client socket is a session;
// one that reaches a.example.test and one b.example.test go apart, and
// the ngtcp2 client (Debian's gtlsclient), an independent implementation,
// reaches the server its SNI names.
func TestUDPQUICSessionPerClient(t *testing.T) {
	ca := peers.NewCA(t, "portmux QUIC test CA")
	a := h3Server(t, "server-a", ca.Issue(t, "a.example.test", x509.ExtKeyUsageServerAuth, "a.example.test").TLS)
	b := h3Server(t, "server-b", ca.Issue(t, "b.example.test", x509.ExtKeyUsageServerAuth, "b.example.test", "localhost").TLS)
	m := startMux(t, snapshotOf(udpListenerOn("udp",
		quicRoute("quic-a", []string{"a.example.test"}, a),
		quicRoute("quic-b", []string{"b.example.test", "localhost"}, b),
	)))
	for _, tc := range []struct{ host, want string }{{"b.example.test", "server-b"}, {"a.example.test", "server-a"}} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tr := h3Client(t, ca, m.addr("udp"), pc)
		if got := h3Get(t, tr, "https://"+tc.host+"/"); got != tc.want+" HTTP/3.0" {
			t.Errorf("%s: %q", tc.host, got)
		}
	}
	if n := m.UDPSessions(); n != 2 {
		t.Errorf("%d UDP sessions, want 2", n)
	}

	gtls := peers.LookPath(t, "gtlsclient")
	_, port, _ := net.SplitHostPort(m.addr("udp"))
	// With an IP address for host, gtlsclient sends SNI "localhost"; it
	// prints the response body as a hex dump.
	ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, gtls, "--exit-on-all-streams-close",
		"127.0.0.1", port, "https://localhost/").CombinedOutput()
	if err != nil {
		t.Fatalf("gtlsclient: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "|server-b HTTP/3.|") {
		t.Fatalf("gtlsclient did not get server-b's answer:\n%s", out)
	}
}

// rebindingConn is a client socket whose local port changes when Rebind is
// called, as a NAT rebinding would make it look to the mux: the QUIC
// connection goes on from a new address with the same connection IDs.
type rebindingConn struct {
	mu  sync.Mutex
	cur *net.UDPConn
}

func newRebindingConn(t *testing.T) *rebindingConn {
	t.Helper()
	c := &rebindingConn{}
	c.Rebind(t)
	return c
}

// Rebind moves the socket to a new local port; the old one is closed, so a
// ReadFrom blocked on it moves on.
func (c *rebindingConn) Rebind(t *testing.T) {
	t.Helper()
	nc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	prev := c.cur
	c.cur = nc
	c.mu.Unlock()
	if prev != nil {
		_ = prev.Close()
	}
}

func (c *rebindingConn) conn() *net.UDPConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *rebindingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		cur := c.conn()
		n, addr, err := cur.ReadFrom(b)
		if err != nil && errors.Is(err, net.ErrClosed) && c.conn() != cur {
			continue // rebound while reading
		}
		return n, addr, err
	}
}

func (c *rebindingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	return c.conn().WriteTo(b, addr)
}
func (c *rebindingConn) Close() error                      { return c.conn().Close() }
func (c *rebindingConn) LocalAddr() net.Addr               { return c.conn().LocalAddr() }
func (c *rebindingConn) SetDeadline(d time.Time) error     { return c.conn().SetDeadline(d) }
func (c *rebindingConn) SetReadDeadline(d time.Time) error { return c.conn().SetReadDeadline(d) }
func (c *rebindingConn) SetWriteDeadline(d time.Time) error {
	return c.conn().SetWriteDeadline(d)
}

// TestUDPQUICRebinding: a quic-go client whose source port changes
// mid-connection keeps its session: the mux finds it by the connection
// ID the server gave, and the server sees one peer throughout.
func TestUDPQUICRebinding(t *testing.T) {
	ca := peers.NewCA(t, "portmux QUIC test CA")
	a := h3Server(t, "server-a", ca.Issue(t, "a.example.test", x509.ExtKeyUsageServerAuth, "a.example.test").TLS)
	m := startMux(t, snapshotOf(udpListenerOn("udp", quicRoute("quic-a", []string{"a.example.test"}, a))))
	rc := newRebindingConn(t)
	tr := h3Client(t, ca, m.addr("udp"), rc)
	// Two requests on the first path: quic-go moves to a connection ID
	// the server gave it encrypted (NEW_CONNECTION_ID) right after the
	// handshake, and the mux learns that ID only from a short header sent
	// on a path it knows. A NAT rebinding before the client has sent a
	// packet with its new ID cannot be followed (docs/architecture.md);
	// one request alone sometimes ended before the move (2 runs in 15).
	for i := range 2 {
		if got := h3Get(t, tr, "https://a.example.test/"); got != "server-a HTTP/3.0" {
			t.Fatalf("before, request %d: %q", i+1, got)
		}
	}
	t.Log("requests done; rebinding")
	before := rc.LocalAddr().String()
	rc.Rebind(t)
	if rc.LocalAddr().String() == before {
		t.Fatal("the port did not change")
	}
	// The same connection (quic-go's Transport keeps it): no new
	// handshake would even be possible without a new Initial.
	if got := h3Get(t, tr, "https://a.example.test/"); got != "server-a HTTP/3.0" {
		t.Fatalf("after rebinding: %q", got)
	}
	if n := m.UDPSessions(); n != 1 {
		t.Errorf("%d UDP sessions, want 1", n)
	}
}

// TestUDPDig: dig through the mux to dnsmasq, on a listener that also
// routes QUIC and OpenVPN.
func TestUDPDig(t *testing.T) {
	dnsmasq := peers.LookPath(t, "dnsmasq")
	dig := peers.LookPath(t, "dig")
	// dnsmasq binds TCP as well as UDP on its port, which a busy machine's
	// own connections may take first: StartOnPort tries another then.
	_, dnsPort := peers.Loopback.StartOnPort(t, func(port int) (*peers.Process, error) {
		p := peers.Start(t, "dnsmasq", dnsmasq, "--no-daemon", "--log-queries", "--conf-file=/dev/null",
			"--port="+strconv.Itoa(port), "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
			"--user=root", "--address=/portmux.test/10.1.2.3")
		_, err := p.WaitFor("started, version", peers.ReadyTimeout)
		return p, err
	})
	port := strconv.Itoa(dnsPort)
	m, echoUDP := startUDPMuxBesideDecoy(t, routeTo("dns", snapshot.DNS, "127.0.0.1:"+port), snapshot.OpenVPN)
	host, muxPort, _ := net.SplitHostPort(m.addr("udp"))
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, dig, "@"+host, "-p", muxPort, "+short", "+tries=1", "+time=5", "a.portmux.test").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "10.1.2.3" {
		t.Fatalf("dig: %q, want 10.1.2.3", got)
	}
	if echoUDP.Received() != 0 {
		t.Errorf("the QUIC and OpenVPN backend received %d datagrams", echoUDP.Received())
	}
}

// startUDPMuxBesideDecoy starts a mux whose UDP listener "udp" routes
// QUIC, then each protocol of decoys (named after it), to a UDP echo
// server, the decoy, and last target. The decoy should receive nothing.
func startUDPMuxBesideDecoy(t *testing.T, target snapshot.Route, decoys ...snapshot.Protocol) (*testMux, *peers.UDPServer) {
	t.Helper()
	echoUDP := peers.UDPEcho(t)
	routes := []snapshot.Route{quicRoute("quic", nil, echoUDP.Addr)}
	for _, p := range decoys {
		routes = append(routes, routeTo(string(p), p, echoUDP.Addr))
	}
	return startMux(t, snapshotOf(udpListenerOn("udp", append(routes, target)...))), echoUDP
}

// freeUDPPort picks a UDP port nobody holds on 127.0.0.1.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	_ = pc.Close()
	return port
}

// TestUDPOpenVPN: an OpenVPN client over UDP (TLS, --dev null) reaches
// "Initialization Sequence Completed" with its server through a UDP
// listener that also routes QUIC and DNS.
func TestUDPOpenVPN(t *testing.T) {
	openvpn := peers.LookPath(t, "openvpn")
	pki := peers.NewOpenVPNPKI(t)
	port := freeUDPPort(t)
	server := peers.Start(t, "openvpn server", openvpn,
		"--dev", "null", "--proto", "udp", "--local", "127.0.0.1", "--port", port,
		"--tls-server", "--ca", pki.CA, "--cert", pki.ServerCert, "--key", pki.ServerKey,
		"--dh", "none", "--verb", "3")
	server.MustWaitFor(t, "UDPv4 link local", peers.ReadyTimeout)
	// OpenVPN's own port, held as another OpenVPN on the machine (or a
	// test beside this one) would: the client must not need it.
	if pc, err := net.ListenPacket("udp", ":1194"); err == nil {
		t.Cleanup(func() { _ = pc.Close() })
	}
	m, echoUDP := startUDPMuxBesideDecoy(t, routeTo("openvpn", snapshot.OpenVPN, "127.0.0.1:"+port), snapshot.DNS)
	host, muxPort, _ := net.SplitHostPort(m.addr("udp"))
	client := peers.Start(t, "openvpn client", openvpn,
		"--dev", "null", "--proto", "udp", "--nobind", "--remote", host, muxPort, "--tls-client",
		"--ca", pki.CA, "--cert", pki.ClientCert, "--key", pki.ClientKey,
		"--remote-cert-tls", "server", "--verb", "3")
	deadline := time.Now().Add(peers.OpenVPNConnectTimeout)
	client.MustWaitFor(t, peers.OpenVPNReady, time.Until(deadline))
	server.MustWaitFor(t, peers.OpenVPNReady, max(time.Until(deadline), time.Second))
	if echoUDP.Received() != 0 {
		t.Errorf("the QUIC and DNS backend received %d datagrams", echoUDP.Received())
	}
	client.Stop()
	server.Stop()
}

// TestUDPWireGuard: two wireguard-go devices complete a handshake through
// the mux, when this host lets tests make TUN devices (root and
// /dev/net/tun); otherwise the test says what is missing. dataplane/route
// and dataplane/sniff test a real initiation captured from wireguard-go
// either way.
func TestUDPWireGuard(t *testing.T) {
	wggo := peers.LookPath(t, "wireguard-go")
	wg := peers.LookPath(t, "wg")
	ipCmd := peers.LookPath(t, "ip")
	if os.Geteuid() != 0 {
		t.Skip("making TUN devices needs root")
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		t.Skipf("/dev/net/tun is not usable: %v", err)
	} else {
		_ = f.Close()
	}
	run := func(argv ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	suffix := strconv.Itoa(os.Getpid() % 10000)
	names := []string{"pmwga" + suffix, "pmwgb" + suffix}
	keys := make([]string, 2)
	pubs := make([]string, 2)
	dir := t.TempDir()
	for i, name := range names {
		// wireguard-go defers to a kernel that has WireGuard built in,
		// whether or not its module can be loaded here.
		p := peers.Start(t, "wireguard-go "+name, "env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=verbose", wggo, "-f", name)
		p.MustWaitFor(t, "UAPI listener started", peers.ReadyTimeout)
		t.Cleanup(func() { p.Stop() })
		keys[i] = run(wg, "genkey")
		cmd := exec.Command(wg, "pubkey")
		cmd.Stdin = strings.NewReader(keys[i])
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		pubs[i] = strings.TrimSpace(string(out))
		if err := os.WriteFile(dir+"/"+name, []byte(keys[i]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	portB := freeUDPPort(t)
	run(wg, "set", names[1], "private-key", dir+"/"+names[1], "listen-port", portB,
		"peer", pubs[0], "allowed-ips", "10.77.0.1/32")
	m, echoUDP := startUDPMuxBesideDecoy(t, routeTo("wireguard", snapshot.WireGuard, "127.0.0.1:"+portB))
	run(wg, "set", names[0], "private-key", dir+"/"+names[0],
		"peer", pubs[1], "allowed-ips", "10.77.0.2/32", "endpoint", m.addr("udp"), "persistent-keepalive", "1")
	for _, name := range names {
		run(ipCmd, "link", "set", name, "up")
	}
	peers.Until(t, ioTimeout, "a WireGuard handshake through the mux", func() bool {
		out := run(wg, "show", names[0], "latest-handshakes")
		f := strings.Fields(out)
		return len(f) == 2 && f[1] != "0"
	})
	if echoUDP.Received() != 0 {
		t.Errorf("the QUIC backend received %d datagrams", echoUDP.Received())
	}
	t.Logf("handshake completed through the mux: %s", run(wg, "show", names[1], "latest-handshakes"))
}
