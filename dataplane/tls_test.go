package dataplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// TLS termination with real clients: certificates chosen by SNI, ALPN as
// the listener declares it, TLS 1.2 as the floor, the decrypted stream
// sniffed again (SSH, OpenVPN, HTTP inside TLS), termination beside
// passthrough, and certificate rotation by a new snapshot.

// tlsOf is a listener TLS configuration serving certs (the first one the
// default) and offering alpn.
func tlsOf(alpn []string, certs ...*peers.Cert) *snapshot.TLSConfig {
	t := &snapshot.TLSConfig{ALPN: alpn}
	for i, c := range certs {
		t.Certificates = append(t.Certificates, snapshot.Certificate{Source: fmt.Sprintf("test/%d", i), Certificate: c.TLS})
	}
	return t
}

// terminating is listenerOn with TLS: a port listener that terminates
// every connection (haproxy's first recipe).
func terminating(name string, t *snapshot.TLSConfig, routes ...snapshot.Route) snapshot.Listener {
	l := listenerOn(name, routes...)
	l.TLS = t
	return l
}

// internalTLS is an internal listener (no port) that terminates what a
// route hands it (haproxy's second recipe).
func internalTLS(name string, t *snapshot.TLSConfig, routes ...snapshot.Route) snapshot.Listener {
	l := listenerOn(name, routes...)
	l.Address = ""
	l.TLS = t
	return l
}

// handTo is a TLS route (by SNI when names are given) that hands the
// stream to an internal listener.
func handTo(name, listener string, sni ...string) snapshot.Route {
	return snapshot.Route{Name: name, Match: snapshot.Match{Protocol: snapshot.TLS, SNI: sni}, Listener: listener}
}

// echoTerminating starts a mux whose listener pub terminates TLS with certs
// (the first one the default) and sends anything to an echo backend; it
// returns the mux and pub's address.
func echoTerminating(t *testing.T, certs ...*peers.Cert) (*testMux, string) {
	t.Helper()
	backend := echoBackend(t)
	m := startMux(t, snapshotOf(terminating("pub", tlsOf(nil, certs...), routeTo("any", snapshot.Any, backend.Addr))))
	return m, m.addr("pub")
}

// passTLS is a TLS route by SNI forwarded untouched (passthrough).
func passTLS(name, addr string, sni ...string) snapshot.Route {
	r := routeTo(name, snapshot.TLS, addr)
	r.Match.SNI = sni
	return r
}

// openssl runs `openssl args...` with stdin at EOF and returns its output.
func openssl(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return opensslHolding(t, 0, args...)
}

// opensslHolding is openssl with stdin held open for hold before EOF, so
// that s_client reads what the server sends after the handshake (TLS 1.3
// session tickets).
func opensslHolding(t testing.TB, hold time.Duration, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := peers.LookPath(t, "openssl")
	ctx, cancel := context.WithTimeout(context.Background(), peers.SClientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	stdin, w := io.Pipe()
	timer := time.AfterFunc(hold, func() { _ = w.Close() })
	defer timer.Stop()
	defer w.Close()
	cmd.Stdin = stdin
	cmd.WaitDelay = 2 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// tlsDial completes a TLS handshake with addr as a client offering sni and
// alpn (no verification: the tests compare certificates themselves). The
// connection is closed at cleanup.
func tlsDial(t testing.TB, addr, sni string, alpn ...string) *tls.Conn {
	t.Helper()
	c, err := tlsDialTry(addr, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS to %s (SNI %q): %v", addr, sni, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func tlsDialTry(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: ioTimeout}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return fmt.Sprintf("%x", sum[:8])
}

func TestTLSTerminationChoosesCertificateBySNI(t *testing.T) {
	t.Parallel()
	def := peers.CertPair(t, "default.test")
	exact := peers.CertPair(t, "a.test", "a.test")
	wild := peers.CertPair(t, "wildcard.w.test", "*.w.test")
	// Listed after the wildcard, but an exact name beats a wildcard.
	exactUnderWild := peers.CertPair(t, "x.w.test", "x.w.test")
	backend := echoBackend(t)
	m := startMux(t, snapshotOf(terminating("pub", tlsOf(nil, def, exact, wild, exactUnderWild),
		routeTo("any", snapshot.Any, backend.Addr))))
	pub := m.addr("pub")

	for _, tc := range []struct{ sni, wantCN string }{
		{"a.test", "a.test"},
		{"A.Test", "a.test"}, // names compare case-insensitively
		{"y.w.test", "wildcard.w.test"},
		{"x.w.test", "x.w.test"},
		{"deep.y.w.test", "default.test"}, // a wildcard covers one label
		{"w.test", "default.test"},
		{"unknown.test", "default.test"},
	} {
		if cn, _ := peers.SClient(t, pub, tc.sni); cn != tc.wantCN {
			t.Errorf("s_client -servername %s got CN %q, want %q", tc.sni, cn, tc.wantCN)
		}
	}
	// No SNI at all: the default certificate.
	out, errOut, err := openssl(t, "s_client", "-connect", pub, "-noservername")
	if err != nil || !strings.Contains(out, "subject=CN = default.test") {
		t.Errorf("s_client -noservername: %v; want the default certificate\n%s\n%s", err, out, errOut)
	}
	// The stream inside is carried: a Go client's bytes come back.
	c := tlsDial(t, pub, "a.test")
	roundTrip(t, c, "inside TLS\n")
	_ = c.Close()
	m.waitIdle()
}

func TestTLSTerminationALPNAsDeclared(t *testing.T) {
	t.Parallel()
	cert := peers.CertPair(t, "alpn.test")
	backend := echoBackend(t)
	m := startMux(t, snapshotOf(
		terminating("both", tlsOf([]string{"h2", "http/1.1"}, cert), routeTo("any", snapshot.Any, backend.Addr)),
		terminating("h1", tlsOf([]string{"http/1.1"}, cert), routeTo("any", snapshot.Any, backend.Addr)),
		terminating("none", tlsOf(nil, cert), routeTo("any", snapshot.Any, backend.Addr)),
	))
	for _, tc := range []struct {
		listener string
		offer    []string
		want     string
	}{
		{"both", []string{"h2", "http/1.1"}, "h2"},
		{"both", []string{"http/1.1", "h2"}, "h2"}, // the server's preference
		{"both", []string{"http/1.1"}, "http/1.1"},
		{"h1", []string{"h2", "http/1.1"}, "http/1.1"},
		{"none", []string{"h2", "http/1.1"}, ""}, // no ALPN declared: none negotiated
	} {
		if _, got := peers.SClient(t, m.addr(tc.listener), "alpn.test", tc.offer...); got != tc.want {
			t.Errorf("listener %s, client offers %v: negotiated %q, want %q", tc.listener, tc.offer, got, tc.want)
		}
	}
	// A client that only speaks h2 cannot get it from an http/1.1 listener.
	if _, err := tlsDialTry(m.addr("h1"), &tls.Config{ServerName: "alpn.test", NextProtos: []string{"h2"}, InsecureSkipVerify: true}); err == nil {
		t.Error("an h2-only client completed a handshake with a listener declaring only http/1.1")
	}
	m.waitIdle()
}

func TestTLSTerminationRefusesTLS11(t *testing.T) {
	t.Parallel()
	cert := peers.CertPair(t, "old.test")
	backend := echoBackend(t)
	m := startMux(t, snapshotOf(terminating("pub", tlsOf(nil, cert), routeTo("any", snapshot.Any, backend.Addr))))
	pub := m.addr("pub")

	// OpenSSL 3 builds TLS 1.1 ClientHellos only at security level 0; at
	// the default level the client would fail before sending anything.
	out, errOut, err := openssl(t, "s_client", "-connect", pub, "-servername", "old.test", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
	if err == nil || strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("s_client -tls1_1 got through: %v\n%s", err, out)
	}
	if !strings.Contains(errOut, "protocol version") {
		t.Errorf("s_client -tls1_1 failed without a protocol_version alert:\n%s", errOut)
	}
	// TLS 1.2 and 1.3 are served.
	for _, v := range []string{"-tls1_2", "-tls1_3"} {
		out, _, err := openssl(t, "s_client", "-connect", pub, "-servername", "old.test", v)
		if err != nil || !strings.Contains(out, "subject=CN = old.test") {
			t.Errorf("s_client %s: %v\n%s", v, err, out)
		}
	}
	// Go's client pinned to TLS 1.1 is refused the same way.
	if _, err := tlsDialTry(pub, &tls.Config{ServerName: "old.test", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true}); err == nil {
		t.Error("a TLS 1.1 Go client completed a handshake")
	}
	m.waitIdle()
	if n := backend.Accepted(); n != 2 {
		t.Errorf("the backend was dialled %d times; want 2, for the TLS 1.2 and 1.3 clients only", n)
	}
	if n := m.outcomeCount("pub", dataplane.OutcomeTLSError); n < 2 {
		t.Errorf("%d connections ended tls_error, want the 2 TLS 1.1 clients at least", n)
	}
}

// TestTLSPortListenerTerminatesEverything is haproxy's first recipe: the
// public port terminates TLS and sniffs what is inside: SSH for a client
// behind a TLS-only firewall (ssh with openssl s_client as ProxyCommand),
// HTTPS, and anything else.
func TestTLSPortListenerTerminatesEverything(t *testing.T) {
	t.Parallel()
	sshd := peers.SSHD(t)
	web := peers.HTTPBackend(t, "web")
	other := greetingEchoBackend(t, "other\n")
	cert := peers.CertPair(t, "ssh.example.test", "*.example.test")
	m := startMux(t, snapshotOf(terminating("pub", tlsOf([]string{"http/1.1"}, cert),
		routeTo("ssh", snapshot.SSH, sshd.Addr),
		routeTo("web", snapshot.HTTP, web.Addr),
		routeTo("other", snapshot.Any, other.Addr),
	)))
	pub := m.addr("pub")
	opensslBin := peers.LookPath(t, "openssl")

	if err := sshd.EchoVia(t, opensslBin+" s_client -quiet -verify_quiet -connect "+pub+" -servername ssh.example.test"); err != nil {
		t.Fatalf("ssh inside TLS: %v", err)
	}
	r, err := peers.Curl(t, "-k", "--resolve", resolve("www.example.test", pub), "https://www.example.test:"+portOf(pub)+"/x")
	if err != nil || r.Body != "web GET /x\n" || r.Version != "1.1" {
		t.Fatalf("curl over HTTPS through termination: %+v, %v", r, err)
	}
	c := tlsDial(t, pub, "misc.example.test")
	br := make([]byte, len("other\n"))
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c, br); err != nil || string(br) != "other\n" {
		t.Fatalf("a silent client inside TLS did not reach the any route: %q, %v", br, err)
	}
	_ = c.Close()
	m.waitIdle()
}

// TestTLSPassthroughAndTerminationBySNI puts both on one port: one name is
// passed through to a TLS server untouched, another is terminated here
// and its inside sniffed (haproxy's second recipe), a third matches no
// route.
func TestTLSPassthroughAndTerminationBySNI(t *testing.T) {
	t.Parallel()
	sshd := peers.SSHD(t)
	passed := peers.OpenSSLServer(t, "pass.test")
	web := peers.HTTPBackend(t, "web")
	ours := peers.CertPair(t, "terminated.test", "*.term.test")
	m := startMux(t, snapshotOf(
		listenerOn("pub",
			passTLS("pass", passed.Addr, "pass.test"),
			handTo("unwrap", "inner", "*.term.test"),
		),
		internalTLS("inner", tlsOf([]string{"http/1.1"}, ours),
			routeTo("ssh", snapshot.SSH, sshd.Addr),
			routeTo("web", snapshot.HTTP, web.Addr),
		),
	))
	pub := m.addr("pub")

	if cn, _ := peers.SClient(t, pub, "pass.test"); cn != "pass.test" {
		t.Errorf("SNI pass.test reached CN %q; want s_server's own certificate (passthrough)", cn)
	}
	if cn, alpn := peers.SClient(t, pub, "a.term.test", "h2", "http/1.1"); cn != "terminated.test" || alpn != "http/1.1" {
		t.Errorf("SNI a.term.test: CN %q ALPN %q; want our certificate and http/1.1", cn, alpn)
	}
	if _, err := peers.SClientTry(t, pub, "none.test"); err == nil {
		t.Error("SNI none.test got a certificate; want no route")
	}
	r, err := peers.Curl(t, "-k", "--http1.1", "--resolve", resolve("pass.test", pub), "https://pass.test:"+portOf(pub)+"/")
	if err != nil || !strings.Contains(r.Body, "s_server") {
		t.Errorf("curl to the passed-through name: %+v, %v", r, err)
	}
	r, err = peers.Curl(t, "-k", "--resolve", resolve("b.term.test", pub), "https://b.term.test:"+portOf(pub)+"/in")
	if err != nil || r.Body != "web GET /in\n" {
		t.Errorf("curl to the terminated name: %+v, %v", r, err)
	}
	opensslBin := peers.LookPath(t, "openssl")
	if err := sshd.EchoVia(t, opensslBin+" s_client -quiet -verify_quiet -connect "+pub+" -servername ssh.term.test"); err != nil {
		t.Errorf("ssh inside the terminated name: %v", err)
	}
	m.waitIdle()
}

// tlsRelay listens on loopback and carries every connection inside TLS
// (SNI sni) to addr: a stand-in for stunnel's client end, for programs
// that cannot speak TLS themselves (OpenVPN).
func tlsRelay(t testing.TB, addr, sni string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if open == nil {
			return false
		}
		open[c] = struct{}{}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if !track(c) {
					return
				}
				up, err := tlsDialTry(addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
				if err != nil {
					return
				}
				defer up.Close()
				if !track(up) {
					return
				}
				done := make(chan struct{})
				go func() { _, _ = io.Copy(up, c); _ = up.CloseWrite(); close(done) }()
				_, _ = io.Copy(c, up)
				_ = c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		open = nil
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestTLSOpenVPNInsideTerminatedTLS(t *testing.T) {
	t.Parallel()
	vpn := peers.OpenVPN(t)
	sink := peers.NewTCPServer(t, func(c net.Conn) {})
	cert := peers.CertPair(t, "vpn.test")
	m := startMux(t, snapshotOf(terminating("pub", tlsOf(nil, cert),
		routeTo("ssh", snapshot.SSH, sink.Addr),
		routeTo("vpn", snapshot.OpenVPN, vpn.Addr),
		routeTo("any", snapshot.Any, sink.Addr),
	)))
	relay := tlsRelay(t, m.addr("pub"), "vpn.test")
	client := vpn.Client(t, relay)
	vpn.WaitConnected(t, client)
	if n := sink.Accepted(); n != 0 {
		t.Fatalf("the ssh/any sink got %d connections; OpenVPN inside TLS was misrouted", n)
	}
	client.Stop()
	m.waitIdle()
}

// TestTLSCertificateRotation applies a snapshot whose listener serves a new
// certificate: new handshakes get it at once, a stream opened before keeps
// flowing on the old one.
func TestTLSCertificateRotation(t *testing.T) {
	t.Parallel()
	oldCert := peers.CertPair(t, "old.rot.test", "rot.test")
	newCert := peers.CertPair(t, "new.rot.test", "rot.test")
	backend := echoBackend(t)
	cfg := func(c *peers.Cert) *snapshot.Snapshot {
		return snapshotOf(
			terminating("pub", tlsOf(nil, c), routeTo("any", snapshot.Any, backend.Addr)),
			listenerOn("wrapped", handTo("unwrap", "inner")),
			internalTLS("inner", tlsOf(nil, c), routeTo("any", snapshot.Any, backend.Addr)),
		)
	}
	m := startMux(t, cfg(oldCert))
	pub, wrapped := m.addr("pub"), m.addr("wrapped")

	before := tlsDial(t, pub, "rot.test")
	beforeInner := tlsDial(t, wrapped, "rot.test")
	for _, c := range []*tls.Conn{before, beforeInner} {
		if got := fingerprint(c.ConnectionState().PeerCertificates[0].Raw); got != fingerprint(oldCert.Leaf.Raw) {
			t.Fatalf("first handshake got certificate %s, want the old one", got)
		}
		roundTrip(t, c, "before rotation\n")
	}

	m.apply(cfg(newCert))
	if m.addr("pub") != pub || m.addr("wrapped") != wrapped {
		t.Fatal("rotation rebound the listeners")
	}
	for _, addr := range []string{pub, wrapped} {
		if cn, _ := peers.SClient(t, addr, "rot.test"); cn != "new.rot.test" {
			t.Errorf("s_client after rotation (%s) got CN %q, want new.rot.test", addr, cn)
		}
		c := tlsDial(t, addr, "rot.test")
		if got := fingerprint(c.ConnectionState().PeerCertificates[0].Raw); got != fingerprint(newCert.Leaf.Raw) {
			t.Errorf("handshake after rotation got certificate %s, want the new one", got)
		}
		roundTrip(t, c, "after rotation\n")
		_ = c.Close()
	}
	// The streams opened before still flow, both ways.
	for _, c := range []*tls.Conn{before, beforeInner} {
		roundTrip(t, c, "still flowing after rotation\n")
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if err := closedByPeer(c, ioTimeout); err != nil {
			t.Fatal(err)
		}
	}
	m.waitIdle()
}

// TestTLSListenerWithoutCertificateLeavesOthersServing: compile drops a
// listener whose Secrets are all missing or broken, and routes that hand
// streams to it then point nowhere. The dataplane closes those connections
// (outcome error) and serves every other route and listener. (A listener
// with TLS and no certificate at all fails snapshot.Validate: Apply keeps
// the previous snapshot, TestApplyKeepsServingWhenASnapshotIsInvalid.)
func TestTLSListenerWithoutCertificateLeavesOthersServing(t *testing.T) {
	t.Parallel()
	sshd := greetingEchoBackend(t, "")
	good := peers.CertPair(t, "good.test")
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(
		listenerOn("pub",
			handTo("to-dropped", "dropped", "dropped.test"),
			handTo("to-good", "good", "good.test"),
			routeTo("ssh", snapshot.SSH, sshd.Addr),
		),
		internalTLS("good", tlsOf(nil, good), routeTo("web", snapshot.HTTP, web.Addr)),
	))
	pub := m.addr("pub")

	if _, err := peers.SClientTry(t, pub, "dropped.test"); err == nil {
		t.Error("a route to the dropped listener served a certificate")
	}
	r, err := peers.Curl(t, "-k", "--resolve", resolve("good.test", pub), "https://good.test:"+portOf(pub)+"/ok")
	if err != nil || r.Body != "web GET /ok\n" {
		t.Errorf("the other terminating route: %+v, %v", r, err)
	}
	c := dial(t, pub)
	roundTrip(t, c, "SSH-2.0-test\r\n")
	_ = c.Close()
	m.waitIdle()
	if n := m.outcomeCount("pub", dataplane.OutcomeError); n != 1 {
		t.Errorf("%d connections ended error on pub, want 1 (the dropped listener's)", n)
	}
	if len(web.Requests()) != 1 {
		t.Errorf("web saw %d requests, want 1", len(web.Requests()))
	}
}

// TestTLSSessionResumptionSurvivesReload: a snapshot applied (the
// controller applies one on every EndpointSlice change) builds new TLS
// configurations; tickets issued before must still resume, or every
// returning client pays a full handshake after each reload. A ticket
// from one listener does not resume on another.
func TestTLSSessionResumptionSurvivesReload(t *testing.T) {
	t.Parallel()
	cert := peers.CertPair(t, "resume.test")
	backend := echoBackend(t)
	snap := func(backends ...string) *snapshot.Snapshot {
		return snapshotOf(
			terminating("a", tlsOf(nil, cert), routeTo("any", snapshot.Any, backends...)),
			terminating("b", tlsOf(nil, cert), routeTo("any", snapshot.Any, backends...)),
		)
	}
	m := startMux(t, snap(backend.Addr))
	a, b := m.addr("a"), m.addr("b")

	// openssl s_client saves its session, a reload happens, and it
	// resumes.
	sess := filepath.Join(t.TempDir(), "session.pem")
	out, errOut, err := opensslHolding(t, 300*time.Millisecond, "s_client", "-connect", a, "-servername", "resume.test", "-sess_out", sess)
	if err != nil || !strings.Contains(out, "New, TLSv1.3") {
		t.Fatalf("s_client -sess_out: %v\n%s\n%s", err, out, errOut)
	}
	m.apply(snap(backend.Addr, backend.Addr))
	out, errOut, err = opensslHolding(t, 300*time.Millisecond, "s_client", "-connect", a, "-servername", "resume.test", "-sess_in", sess)
	if err != nil || !strings.Contains(out, "Reused, TLSv1.3") {
		t.Errorf("s_client -sess_in after a reload did not resume: %v\n%s\n%s", err, out, errOut)
	}
	m.apply(snap(backend.Addr))
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(4)
		cfg := func() *tls.Config {
			return &tls.Config{ServerName: "resume.test", InsecureSkipVerify: true, ClientSessionCache: cache, MaxVersion: v}
		}
		dialResume := func(addr string) bool {
			c, err := tlsDialTry(addr, cfg())
			if err != nil {
				t.Fatalf("TLS to %s: %v", addr, err)
			}
			defer c.Close()
			roundTrip(t, c, "resume?\n")
			return c.ConnectionState().DidResume
		}
		if dialResume(a) {
			t.Fatal("the first handshake resumed")
		}
		if !dialResume(a) {
			t.Fatalf("version %x: no resumption without a reload", v)
		}
		m.apply(snap(backend.Addr, backend.Addr)) // any change: new TLS configurations
		if !dialResume(a) {
			t.Errorf("version %x: the session did not resume after a reload", v)
		}
		if dialResume(b) {
			t.Errorf("version %x: a ticket from listener a resumed on listener b", v)
		}
	}
	m.waitIdle()
}

// TestTLSDualCertificatesECDSAFirst: an RSA and an ECDSA certificate for
// the same name, the RSA one listed first. A client that takes ECDSA gets
// it (the cheaper handshake); one that only verifies RSA signatures gets
// the RSA one.
func TestTLSDualCertificatesECDSAFirst(t *testing.T) {
	t.Parallel()
	rsaC := peers.RSACert(t, "rsa.dual.test", "dual.test", "*.dual.test")
	ecC := peers.CertPair(t, "ecdsa.dual.test", "dual.test", "*.dual.test")
	m, pub := echoTerminating(t, rsaC, ecC)
	for _, tc := range []struct {
		name   string
		args   []string
		wantCN string
	}{
		{"both, exact name", []string{"-servername", "dual.test"}, "ecdsa.dual.test"},
		{"both, wildcard", []string{"-servername", "www.dual.test"}, "ecdsa.dual.test"},
		{"RSA only, TLS 1.3", []string{"-servername", "dual.test", "-sigalgs", "rsa_pss_rsae_sha256"}, "rsa.dual.test"},
		{"RSA only, TLS 1.2", []string{"-servername", "dual.test", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"}, "rsa.dual.test"},
		{"ECDSA only", []string{"-servername", "dual.test", "-sigalgs", "ecdsa_secp256r1_sha256"}, "ecdsa.dual.test"},
		// No matching name: the first certificate the client can use.
		{"other name", []string{"-servername", "other.test"}, "rsa.dual.test"},
		{"other name, ECDSA only", []string{"-servername", "other.test", "-sigalgs", "ecdsa_secp256r1_sha256"}, "ecdsa.dual.test"},
	} {
		out, errOut, err := openssl(t, append([]string{"s_client", "-connect", pub}, tc.args...)...)
		if err != nil || !strings.Contains(out, "subject=CN = "+tc.wantCN+"\n") {
			t.Errorf("%s: want CN %s; %v\n%s\n%s", tc.name, tc.wantCN, err, out, errOut)
		}
	}
	m.waitIdle()
}

// TestTLS12OffersOnlyForwardSecretAEAD: a terminating listener speaks TLS
// 1.2 with ECDHE and an AEAD cipher only (Mozilla's intermediate profile).
// A client pinned to TLS 1.2 that offers nothing else, whether CBC (Lucky
// 13, the "obsolete CBC" finding of scanners), RSA key exchange (no forward
// secrecy) or 3DES, gets no handshake; each of the six AEAD suites works,
// with an ECDSA and an RSA certificate on the listener.
func TestTLS12OffersOnlyForwardSecretAEAD(t *testing.T) {
	t.Parallel()
	rsaC := peers.RSACert(t, "rsa.suites.test", "suites.test")
	ecC := peers.CertPair(t, "ecdsa.suites.test", "suites.test")
	m, pub := echoTerminating(t, ecC, rsaC)
	for _, tc := range []struct {
		name   string
		suites []uint16
		ok     bool
	}{
		{"ECDHE with CBC", []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
			tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
		}, false},
		{"RSA key exchange", []uint16{
			tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
		}, false},
		{"3DES", []uint16{tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA, tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA}, false},
		{"RC4", []uint16{tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA, tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, tls.TLS_RSA_WITH_RC4_128_SHA}, false},
		{"ECDHE-ECDSA-AES128-GCM-SHA256", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"ECDHE-ECDSA-AES256-GCM-SHA384", []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, true},
		{"ECDHE-ECDSA-CHACHA20-POLY1305", []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"ECDHE-RSA-AES128-GCM-SHA256", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, true},
		{"ECDHE-RSA-AES256-GCM-SHA384", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}, true},
		{"ECDHE-RSA-CHACHA20-POLY1305", []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, true},
	} {
		c, err := tlsDialTry(pub, &tls.Config{
			ServerName: "suites.test", InsecureSkipVerify: true,
			MaxVersion: tls.VersionTLS12, CipherSuites: tc.suites,
		})
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: no handshake: %v", tc.name, err)
		case tc.ok && c.ConnectionState().CipherSuite != tc.suites[0]:
			t.Errorf("%s: negotiated %s", tc.name, tls.CipherSuiteName(c.ConnectionState().CipherSuite))
		case !tc.ok && err == nil:
			t.Errorf("%s: a TLS 1.2 client offering only these got %s", tc.name, tls.CipherSuiteName(c.ConnectionState().CipherSuite))
		}
		if c != nil {
			_ = c.Close()
		}
	}
	m.waitIdle()
}

// TestConnectionsCountedByListenerRouteAndOutcome checks the labels of
// portmux_connections_total, whose children are resolved once per route
// and outcome: a connection routed directly, one no route took, and one routed inside TLS an internal listener terminated (it
// counts under the listener that accepted it and the inner route), before
// and after a reload builds new configurations over the same series.
func TestConnectionsCountedByListenerRouteAndOutcome(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	cert := peers.CertPair(t, "in.test")
	snap := func() *snapshot.Snapshot {
		pub := listenerOn("pub", routeTo("ssh", snapshot.SSH, backend.Addr), handTo("unwrap", "inner", "in.test"))
		pub.Address = "127.0.0.1:0"
		return snapshotOf(pub, internalTLS("inner", tlsOf(nil, cert), routeTo("inside", snapshot.Any, backend.Addr)))
	}
	m := startMux(t, snap())
	addr := m.addr("pub")
	count := func(route, protocol, outcome string) int {
		t.Helper()
		return int(m.metricSum("portmux_connections_total", map[string]string{
			"listener": "pub", "route": route, "protocol": protocol, "outcome": outcome,
		}))
	}
	each := func() {
		t.Helper()
		c := dial(t, addr)
		roundTrip(t, c, "SSH-2.0-test\r\n")
		m.hangUp(c)

		tc := tlsDial(t, addr, "in.test")
		roundTrip(t, tc, "hello inside\n")
		_ = tc.CloseWrite()
		if err := closedByPeer(tc, ioTimeout); err != nil {
			t.Fatal(err)
		}
		m.waitIdle()

		// Neither SSH nor TLS: no route takes it.
		c = dial(t, addr)
		if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := closedByPeer(c, ioTimeout); err != nil {
			t.Fatal(err)
		}
		m.waitIdle()
	}

	each()
	if got := [3]int{count("ssh", "ssh", dataplane.OutcomeForwarded), count("inside", "any", dataplane.OutcomeForwarded), count("", "", dataplane.OutcomeNoRoute)}; got != [3]int{1, 1, 1} {
		t.Fatalf("ssh forwarded, inside forwarded, unrouted = %v, want one each", got)
	}
	m.apply(snap())
	each()
	if got := [3]int{count("ssh", "ssh", dataplane.OutcomeForwarded), count("inside", "any", dataplane.OutcomeForwarded), count("", "", dataplane.OutcomeNoRoute)}; got != [3]int{2, 2, 2} {
		t.Fatalf("after a reload: ssh forwarded, inside forwarded, unrouted = %v, want two each", got)
	}
	if n := m.metricSum("portmux_active_connections", map[string]string{"listener": "pub"}); n != 0 {
		t.Fatalf("portmux_active_connections{listener=pub} = %v after every connection ended", n)
	}
}
