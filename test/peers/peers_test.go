package peers

import (
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The helpers against each other, without PortMux in between: when these
// fail, the dataplane tests that use them say nothing about the dataplane.

func TestSSHDDirect(t *testing.T) {
	t.Parallel()
	s := SSHD(t)
	out, err := s.Run(t, s.Addr, "echo", "ok")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "ok" {
		t.Fatalf("ssh printed %q, want ok", out)
	}
}

func TestOpenSSLDirect(t *testing.T) {
	t.Parallel()
	srv := OpenSSLServer(t, "direct.test", "h2", "http/1.1")
	cn, alpn := SClient(t, srv.Addr, "direct.test", "h2", "http/1.1")
	if cn != "direct.test" || alpn != "h2" {
		t.Fatalf("s_client saw CN %q ALPN %q, want direct.test h2", cn, alpn)
	}
	r, err := Curl(t, "-k", "--http1.1", "https://"+srv.Addr+"/")
	if err != nil || r.Code != 200 {
		t.Fatalf("curl to s_server: %+v, %v", r, err)
	}
}

func TestHTTPBackendDirect(t *testing.T) {
	t.Parallel()
	h := HTTPBackend(t, "web")
	r, err := Curl(t, "http://"+h.Addr+"/x")
	if err != nil || r.Code != 200 || r.Body != "web GET /x\n" {
		t.Fatalf("curl: %+v, %v", r, err)
	}
	if reqs := h.Requests(); len(reqs) != 1 || reqs[0].Path != "/x" {
		t.Fatalf("recorded %+v", reqs)
	}
}

func TestOpenVPNDirect(t *testing.T) {
	t.Parallel()
	o := OpenVPN(t)
	c := o.Client(t, o.Addr)
	o.WaitConnected(t, c)
}

func TestCAIssues(t *testing.T) {
	t.Parallel()
	ca := NewCA(t, "ca")
	leaf := ca.Issue(t, "srv", x509.ExtKeyUsageServerAuth, "srv.test", "127.0.0.1")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "srv.test"}); err != nil {
		t.Fatal(err)
	}
	if !ca.Leaf.IsCA || len(leaf.Leaf.IPAddresses) != 1 {
		t.Fatalf("CA %v, IP SANs %v", ca.Leaf.IsCA, leaf.Leaf.IPAddresses)
	}
}

func TestStartOnPortRetriesWhenThePortWasTaken(t *testing.T) {
	t.Parallel()
	sh := LookPath(t, "sh")
	calls := 0
	p, port := Loopback.StartOnPort(t, func(port int) (*Process, error) {
		calls++
		script := "echo 'bind: Address already in use' >&2; exit 1"
		if calls == 2 {
			script = "echo peer-is-up; exec sleep 60"
		}
		p := Start(t, "fake peer", sh, "-c", script)
		_, err := p.WaitFor("peer-is-up", ReadyTimeout)
		return p, err
	})
	if calls != 2 || port == 0 {
		t.Fatalf("calls = %d, port = %d; want a second attempt that succeeded", calls, port)
	}
	p.Stop()
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned before the process exited")
	}
}

func TestUDPEchoDirect(t *testing.T) {
	t.Parallel()
	s := UDPEcho(t)
	c, err := net.Dial("udp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(ReadyTimeout))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" || s.Received() != 1 {
		t.Fatalf("echo: %q, %v, received %d", buf[:n], err, s.Received())
	}
}

func TestConnectProxyDirect(t *testing.T) {
	t.Parallel()
	h := HTTPBackend(t, "web")
	p := ConnectProxy(t, map[string]string{"web.test:80": h.Addr})
	r, err := Curl(t, "--proxytunnel", "--proxy", p.URL, "http://web.test/x")
	if err != nil || r.Code != 200 || r.Body != "web GET /x\n" || p.Connects() != 1 {
		t.Fatalf("curl through the proxy: %+v, %v, %d CONNECTs", r, err, p.Connects())
	}
	// A name not in the table reaches nothing.
	if r, err := Curl(t, "--proxytunnel", "--proxy", p.URL, "http://other.test/x"); err == nil {
		t.Fatalf("curl to a name the proxy does not know: %+v, want a failure", r)
	}
	if len(h.Requests()) != 1 || p.Connects() != 1 {
		t.Fatalf("after a refused CONNECT: %d requests, %d CONNECTs", len(h.Requests()), p.Connects())
	}
}
