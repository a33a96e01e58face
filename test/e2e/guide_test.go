package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// guideExamples holds the files docs/user-guide.md shows.
var guideExamples = filepath.Join("..", "..", "docs", "examples")

// TestUserGuide tries every setup of docs/user-guide.md end to end, as the
// guide shows it: `portmux serve -f` with the guide's serve.yaml, changed
// only where it names the port and the backends' addresses (the peers here
// listen on ports of their own), with the Secrets docs/examples/secret.sh
// prints from the test's certificates and token, driven by the clients the
// guide names against real servers. test/docs checks that the guide shows
// these files as they are, and that each in-cluster form is its serve form
// with Services.
func TestUserGuide(t *testing.T) {
	goBin := peers.LookPath(t, "go")
	bin := filepath.Join(t.TempDir(), "portmux")
	if err := buildPortmux(goBin, bin); err != nil {
		t.Fatalf("build portmux: %v", err)
	}
	for _, s := range []struct {
		name string
		run  func(*testing.T, string)
	}{
		{"sslh", guideSSLH},
		{"haproxy-sni", guideHAProxySNI},
		{"nginx-stream", guideNginxStream},
		{"wstunnel", guideWSTunnel},
	} {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			s.run(t, bin)
		})
	}
}

// guideSSLH: sslh on 443 sharing SSH, OpenVPN and an HTTPS web server.
func guideSSLH(t *testing.T, bin string) {
	sshd := peers.SSHD(t)
	vpn := peers.OpenVPN(t)
	web := peers.OpenSSLServer(t, "www.example.com")
	dir := t.TempDir()
	mux := startGuideServe(t, bin, dir, "sslh", nil,
		`"127.0.0.1:22"`, strconv.Quote(sshd.Addr),
		`"127.0.0.1:1194"`, strconv.Quote(vpn.Addr),
		`"127.0.0.1:8443"`, strconv.Quote(web.Addr))

	guideSSH(t, sshd, "ssh -p 443", mux, "")

	client := vpn.Client(t, mux)
	vpn.WaitConnected(t, client)
	t.Logf("openvpn --proto tcp-client --remote %s: %s", mux, peers.OpenVPNReady)

	// Passthrough: the client checks the web server's own certificate.
	webCA := writeGuideFile(t, dir, "www.crt", web.Cert.CertPEM)
	guideCurl(t, "s_server", "--cacert", webCA, "--resolve", resolve("www.example.com", mux),
		"https://www.example.com:"+portOf(mux)+"/")

	// A client that says nothing gets sshd's banner after probeTimeout,
	// as from sslh --on-timeout ssh.
	c, err := net.DialTimeout("tcp", mux, clientTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(clientTimeout))
	banner, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
		t.Fatalf("a silent client got %q (%v), want sshd's SSH-2.0- banner", banner, err)
	}
	t.Logf("a silent client: %s", strings.TrimSpace(banner))
}

// guideHAProxySNI: some SNI names passed through, others terminated and
// routed by what is inside (HTTP by Host, SSH-over-TLS) by an internal
// listener.
func guideHAProxySNI(t *testing.T, bin string) {
	openssl := peers.LookPath(t, "openssl")
	sshd := peers.SSHD(t)
	git := peers.OpenSSLServer(t, "git.example.com")
	www := peers.HTTPBackend(t, "www")
	blog := peers.HTTPBackend(t, "blog")
	dir := t.TempDir()
	ca := peers.NewCA(t, "guide test CA")
	caFile, _ := ca.WriteFiles(t, dir, "ca")
	webCrt, webKey := ca.Issue(t, "www.example.com", x509.ExtKeyUsageServerAuth, "www.example.com", "blog.example.com").WriteFiles(t, dir, "web")
	sshCrt, sshKey := ca.Issue(t, "ssh.example.com", x509.ExtKeyUsageServerAuth, "ssh.example.com").WriteFiles(t, dir, "ssh")
	secrets := guideSecrets(t, dir,
		[]string{"tls", "web-tls", webCrt, webKey},
		[]string{"tls", "ssh-tls", sshCrt, sshKey})
	mux := startGuideServe(t, bin, dir, "haproxy-sni", []string{secrets},
		`"127.0.0.1:3443"`, strconv.Quote(git.Addr),
		`"127.0.0.1:22"`, strconv.Quote(sshd.Addr),
		`"127.0.0.1:8080"`, strconv.Quote(www.Addr),
		`"127.0.0.1:8081"`, strconv.Quote(blog.Addr))
	port := portOf(mux)

	// Passed through: git's own certificate, which the CA does not sign.
	gitCA := writeGuideFile(t, dir, "git.crt", git.Cert.CertPEM)
	guideCurl(t, "s_server", "--cacert", gitCA, "--resolve", resolve("git.example.com", mux),
		"https://git.example.com:"+port+"/")

	// Terminated with the Secrets' certificates, then routed by Host.
	for _, site := range []*peers.HTTPServer{www, blog} {
		name := site.Name + ".example.com"
		guideCurl(t, site.Name+" GET /about\n", "--cacert", caFile, "--resolve", resolve(name, mux),
			"https://"+name+":"+port+"/about")
		reqs := site.Requests()
		if len(reqs) != 1 {
			t.Fatalf("%s saw %d requests, want 1: %+v", site.Name, len(reqs), reqs)
		}
		h := reqs[0].Header
		if h.Get("X-Forwarded-Proto") != "https" || h.Get("X-Forwarded-For") != "127.0.0.1" || reqs[0].Host != name+":"+port {
			t.Fatalf("%s saw Host %q, X-Forwarded-Proto %q, X-Forwarded-For %q; want %s:%s, https, 127.0.0.1",
				site.Name, reqs[0].Host, h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-For"), name, port)
		}
	}

	// SSH inside TLS for ssh.example.com, the certificate checked; and
	// plain SSH on the same port.
	proxy := strings.Join([]string{openssl, "s_client", "-quiet", "-verify_return_error", "-CAfile", caFile,
		"-servername", "ssh.example.com", "-connect", mux}, " ")
	guideSSH(t, sshd, "ssh over TLS", "", proxy)
	guideSSH(t, sshd, "plain ssh", mux, "")
}

// guideNginxStream: TLS passed through by SNI to several upstreams, and a
// default for every other TLS client.
func guideNginxStream(t *testing.T, bin string) {
	git := peers.OpenSSLServer(t, "git.example.com")
	mail := peers.OpenSSLServer(t, "mail.example.com")
	web := peers.OpenSSLServer(t, "www.example.com")
	dir := t.TempDir()
	mux := startGuideServe(t, bin, dir, "nginx-stream", nil,
		`"127.0.0.1:3443"`, strconv.Quote(git.Addr),
		`"127.0.0.1:4443"`, strconv.Quote(mail.Addr),
		`"127.0.0.1:8443"`, strconv.Quote(web.Addr))

	for _, tc := range []struct{ sni, want string }{
		{"git.example.com", "git.example.com"},
		{"mail.example.com", "mail.example.com"},
		{"imap.mail.example.com", "mail.example.com"},
		{"www.example.com", "www.example.com"},
		{"other.example.net", "www.example.com"},
		{"", "www.example.com"},
	} {
		r, err := peers.SClientTry(t, mux, tc.sni)
		if err != nil || r.CN != tc.want {
			t.Fatalf("s_client -servername %q through %s: got CN %q (%v), want %q", tc.sni, mux, r.CN, err, tc.want)
		}
		t.Logf("s_client -servername %q: CN %s", tc.sni, r.CN)
	}
	for _, srv := range []*peers.TLSServer{git, web} {
		name := srv.Cert.Leaf.Subject.CommonName
		ca := writeGuideFile(t, dir, name+".crt", srv.Cert.CertPEM)
		guideCurl(t, "s_server", "--cacert", ca, "--resolve", resolve(name, mux), "https://"+name+":"+portOf(mux)+"/")
	}
}

// guideWSTunnel: a tunnel server on a TLS-terminating listener, with a
// token, carrying SSH (TCP) and datagrams (UDP) from `portmux tunnel`, and
// the web site beside it. The clients reach vpn.example.com:443 the way a
// network that only lets HTTPS out through a proxy would let them: by an
// HTTP CONNECT proxy, which also stands in for DNS.
func guideWSTunnel(t *testing.T, bin string) {
	sshd := peers.SSHD(t)
	udp := peers.UDPEcho(t)
	web := peers.HTTPBackend(t, "web")
	dir := t.TempDir()
	ca := peers.NewCA(t, "guide test CA")
	caFile, _ := ca.WriteFiles(t, dir, "ca")
	crt, key := ca.Issue(t, "vpn.example.com", x509.ExtKeyUsageServerAuth, "vpn.example.com").WriteFiles(t, dir, "vpn")
	tokenFile := writeGuideFile(t, dir, "token", []byte(randomHex(t)+"\n")) // as `openssl rand -hex 32 > token`
	secrets := guideSecrets(t, dir,
		[]string{"tls", "vpn-tls", crt, key},
		[]string{"token", "tunnel-token", tokenFile})
	mux := startGuideServe(t, bin, dir, "wstunnel", []string{secrets},
		`"127.0.0.1:22"`, strconv.Quote(sshd.Addr),
		`"127.0.0.1:51820"`, strconv.Quote(udp.Addr),
		`"127.0.0.1:8080"`, strconv.Quote(web.Addr))
	proxy := peers.ConnectProxy(t, map[string]string{"vpn.example.com:443": mux})

	const url = "wss://vpn.example.com/tunnel"
	client := func(token string, forwards ...string) []string {
		argv := []string{bin, "tunnel", "--token-file", token, "--ca-file", caFile, "--http-proxy", proxy.URL}
		for _, f := range forwards {
			argv = append(argv, "-L", f)
		}
		return append(argv, url)
	}

	// -L for TCP and UDP, on ports the kernel picks (the log names them).
	tun := startProc(t, dir, "tunnel", peers.Options{}, client(tokenFile, "0:"+sshd.Addr, "udp://0:"+udp.Addr)...)
	localTCP := forwardedAddr(t, tun, "tcp")
	localUDP := forwardedAddr(t, tun, "udp")
	guideSSH(t, sshd, "ssh through the tunnel's -L", localTCP, "")
	udpEcho(t, localUDP)
	t.Logf("a datagram to %s came back from the echo server through the tunnel", localUDP)

	// stdio, as ssh's ProxyCommand.
	guideSSH(t, sshd, "ssh with the tunnel as ProxyCommand", "", strings.Join(client(tokenFile, "stdio:"+sshd.Addr), " "))

	// Refused: a wrong token, and a target the allow list does not hold.
	badToken := writeGuideFile(t, dir, "bad-token", []byte("not-the-token\n"))
	for _, tc := range []struct {
		what string
		argv []string
		want string
	}{
		{"a wrong token", client(badToken, "stdio:"+sshd.Addr), "401"},
		{"a target not allowed", client(tokenFile, "stdio:127.0.0.1:25"), "403"},
	} {
		out, err := peers.Command{Timeout: clientTimeout, Stdin: strings.NewReader("SSH-2.0-guide\r\n")}.Combined(tc.argv...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Fatalf("portmux tunnel with %s: %v, output:\n%s\nwant a failure saying %s", tc.what, err, out, tc.want)
		}
		t.Logf("portmux tunnel with %s: refused (%s)", tc.what, tc.want)
	}

	// The web site beside the tunnel, through the same proxy.
	guideCurl(t, "web GET /\n", "--proxy", proxy.URL, "--cacert", caFile, "https://vpn.example.com/")
	if reqs := web.Requests(); len(reqs) != 1 || reqs[0].Header.Get("X-Forwarded-Proto") != "https" {
		t.Fatalf("the web site saw %+v, want one request with X-Forwarded-Proto https", reqs)
	}
	if udp.Received() == 0 {
		t.Fatal("the UDP echo server received nothing")
	}
}

// startGuideServe writes docs/examples/SETUP/serve.yaml into dir with its
// port 443 and each fill pair (old, new) replaced, starts `portmux serve`
// with it and the extra files, and returns the listener's address. Every
// old string must be in the file: the test follows the guide, not a copy.
func startGuideServe(t *testing.T, bin, dir, setup string, extra []string, fill ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(guideExamples, setup, "serve.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	port := peers.FreePort(t)
	text := string(b)
	fill = append([]string{"port: 443\n", fmt.Sprintf("port: %d\n", port)}, fill...)
	for i := 0; i+1 < len(fill); i += 2 {
		if !strings.Contains(text, fill[i]) {
			t.Fatalf("docs/examples/%s/serve.yaml no longer holds %s: change this test with the guide", setup, fill[i])
		}
		text = strings.ReplaceAll(text, fill[i], fill[i+1])
	}
	file := writeGuideFile(t, dir, "serve.yaml", []byte(text))
	argv := []string{bin, "serve", "-f", file}
	for _, f := range extra {
		argv = append(argv, "-f", f)
	}
	argv = append(argv, "--bind-address", "127.0.0.1", "--shutdown-grace", "2s")
	p := startProc(t, dir, "portmux-serve", peers.Options{}, argv...)
	p.MustWaitFor(t, `"msg":"serving"`, readyTimeout)
	addr := peers.Loopback.Addr(port)
	t.Logf("portmux serve -f %s/serve.yaml on %s", setup, addr)
	return addr
}

// guideSecrets runs docs/examples/secret.sh once per argument list and
// writes what it prints to dir/secrets.yaml, as the guide does.
func guideSecrets(t *testing.T, dir string, calls ...[]string) string {
	t.Helper()
	sh := peers.LookPath(t, "sh")
	script := filepath.Join(guideExamples, "secret.sh")
	var all strings.Builder
	for _, args := range calls {
		out, err := bounded(clientTimeout, append([]string{sh, script}, args...)...)
		if err != nil {
			t.Fatalf("sh secret.sh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		all.WriteString(out)
	}
	return writeGuideFile(t, dir, "secrets.yaml", []byte(all.String()))
}

// guideSSH runs `echo ok` with ssh, to addr or through proxyCommand.
func guideSSH(t *testing.T, sshd *peers.SSHServer, what, addr, proxyCommand string) {
	t.Helper()
	var out string
	var err error
	if proxyCommand != "" {
		out, err = sshd.RunVia(t, proxyCommand, "echo", "ok")
	} else {
		out, err = sshd.Run(t, addr, "echo", "ok")
	}
	if err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("%s: %v, printed %q, want ok", what, err, out)
	}
	t.Logf("%s: echo ok", what)
}

// guideCurl runs curl with args and wants a 200 whose body holds want.
func guideCurl(t *testing.T, want string, args ...string) {
	t.Helper()
	r, err := peers.Curl(t, args...)
	if err != nil || r.Code != 200 || !strings.Contains(r.Body, want) {
		t.Fatalf("curl %s: %v, status %d, body:\n%s\nwant 200 with %q", strings.Join(args, " "), err, r.Code, peers.LastLines(r.Body, 10), want)
	}
	t.Logf("curl %s: 200 (HTTP/%s)", args[len(args)-1], r.Version)
}

var forwardingLine = regexp.MustCompile(`"listen":"(tcp|udp)://([^"]+)"`)

// forwardedAddr returns the local address `portmux tunnel` logged for its
// -L of kind tcp or udp.
func forwardedAddr(t *testing.T, p *peers.Process, kind string) string {
	t.Helper()
	line := p.MustWaitFor(t, `"listen":"`+kind+`://`, readyTimeout)
	m := forwardingLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("tunnel log line %q names no listen address", line)
	}
	return m[2]
}

// udpEcho sends datagrams to addr until one comes back as it went. The
// first opens the tunnel; a datagram may be lost, so it tries a few.
func udpEcho(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	var lastErr error
	for i := range 5 {
		msg := fmt.Sprintf("datagram %d through the tunnel", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == msg {
			return
		}
		lastErr = fmt.Errorf("sent %q, got %q (%v)", msg, buf[:n], err)
	}
	t.Fatalf("UDP through the tunnel at %s: %v", addr, lastErr)
}

func writeGuideFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// resolve is curl's --resolve value that sends name, at addr's port, to
// addr's host.
func resolve(name, addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return name + ":" + port + ":" + host
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
