package dataplane_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// Real programs as clients and backends, through an in-process dataplane on
// loopback. Each test starts its own peers, so they run in parallel.

// resolve is curl's --resolve for name on the mux's port.
func resolve(name, muxAddr string) string {
	_, port, _ := net.SplitHostPort(muxAddr)
	return name + ":" + port + ":127.0.0.1"
}

// portOf is the port of a host:port address.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func TestPeerOpenSSHThroughMux(t *testing.T) {
	t.Parallel()
	sshd := peers.SSHD(t)
	tlsSrv := peers.OpenSSLServer(t, "tls.test")
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(listenerOn("pub",
		routeTo("ssh", snapshot.SSH, sshd.Addr),
		routeTo("tls", snapshot.TLS, tlsSrv.Addr),
		routeTo("any", snapshot.Any, web.Addr),
	)))
	pub := m.addr("pub")

	out, err := sshd.Run(t, pub, "echo", "ok")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "ok" {
		t.Fatalf("ssh through the mux printed %q, want ok", out)
	}

	// The same port still sends TLS and the rest elsewhere.
	if cn, _ := peers.SClient(t, pub, "tls.test"); cn != "tls.test" {
		t.Fatalf("TLS through the mux reached CN %q, want tls.test", cn)
	}
	r, err := peers.Curl(t, "http://"+pub+"/other")
	if err != nil || r.Code != 200 || r.Body != "web GET /other\n" {
		t.Fatalf("HTTP through the any route: %+v, %v", r, err)
	}
	m.waitIdle()
}

func TestPeerOpenSSLBySNI(t *testing.T) {
	t.Parallel()
	a := peers.OpenSSLServer(t, "a.test")
	b := peers.OpenSSLServer(t, "b.test")
	m := startMux(t, snapshotOf(listenerOn("pub",
		passTLS("a", a.Addr, "a.test"),
		passTLS("b", b.Addr, "*.b.test"),
		passTLS("b-apex", b.Addr, "b.test"),
	)))
	pub := m.addr("pub")

	for _, tc := range []struct{ sni, wantCN string }{
		{"a.test", "a.test"},
		{"b.test", "b.test"},
		{"www.b.test", "b.test"},
		{"A.TEST", "a.test"}, // SNI is matched case-insensitively
	} {
		if cn, _ := peers.SClient(t, pub, tc.sni); cn != tc.wantCN {
			t.Errorf("s_client -servername %s reached CN %q, want %q", tc.sni, cn, tc.wantCN)
		}
	}

	// A name no route takes is closed without a certificate.
	if r, err := peers.SClientTry(t, pub, "c.test"); err == nil {
		t.Errorf("s_client -servername c.test got a certificate for %q; want no route", r.CN)
	}

	// curl over the same route gets s_server's page.
	r, err := peers.Curl(t, "-k", "--http1.1", "--resolve", resolve("b.test", pub), "https://b.test:"+portOf(pub)+"/")
	if err != nil || r.Code != 200 || !strings.Contains(r.Body, "s_server") {
		t.Fatalf("curl https://b.test through the mux: %+v, %v", r, err)
	}
	m.waitIdle()
}

func TestPeerOpenSSLByALPN(t *testing.T) {
	t.Parallel()
	h2 := peers.OpenSSLServer(t, "h2.test", "h2")
	h1 := peers.OpenSSLServer(t, "h1.test", "http/1.1")
	alpnRoute := func(name, alpn, addr string) snapshot.Route {
		r := routeTo(name, snapshot.TLS, addr)
		r.Match.ALPN = []string{alpn}
		return r
	}
	m := startMux(t, snapshotOf(listenerOn("pub",
		alpnRoute("h2", "h2", h2.Addr),
		alpnRoute("h1", "http/1.1", h1.Addr),
	)))
	pub := m.addr("pub")

	for _, tc := range []struct {
		offer            []string
		wantCN, wantALPN string
	}{
		{[]string{"h2"}, "h2.test", "h2"},
		{[]string{"http/1.1"}, "h1.test", "http/1.1"},
		// A client offering both matches the first route that lists one.
		{[]string{"h2", "http/1.1"}, "h2.test", "h2"},
		{[]string{"http/1.1", "h2"}, "h2.test", "h2"},
	} {
		cn, alpn := peers.SClient(t, pub, "alpn.test", tc.offer...)
		if cn != tc.wantCN || alpn != tc.wantALPN {
			t.Errorf("ALPN %v reached CN %q negotiating %q, want %q and %q", tc.offer, cn, alpn, tc.wantCN, tc.wantALPN)
		}
	}
	// No ALPN at all: no route.
	if r, err := peers.SClientTry(t, pub, "alpn.test"); err == nil {
		t.Errorf("a ClientHello without ALPN reached CN %q; want no route", r.CN)
	}
	m.waitIdle()
}

func TestPeerCurlByHostAndPath(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	api := peers.HTTPBackend(t, "api")
	byHost := routeTo("web", snapshot.HTTP, web.Addr)
	byHost.Match.Host = []string{"www.test"}
	byPath := routeTo("api", snapshot.HTTP, api.Addr)
	byPath.Match.PathPrefix = "/api"
	m := startMux(t, snapshotOf(listenerOn("pub", byHost, byPath)))
	pub := m.addr("pub")
	port := portOf(pub)

	get := func(host, path string) (peers.CurlResult, error) {
		return peers.Curl(t, "--resolve", resolve(host, pub), "http://"+host+":"+port+path)
	}
	for _, tc := range []struct{ host, path, want string }{
		{"www.test", "/index.html", "web"},
		{"api.test", "/api/v1/items", "api"},
		{"api.test", "/api", "api"},
		{"www.test", "/api/v1", "web"}, // the first route that matches wins
	} {
		r, err := get(tc.host, tc.path)
		if err != nil || r.Code != 200 {
			t.Fatalf("GET http://%s%s: %+v, %v", tc.host, tc.path, r, err)
		}
		if want := tc.want + " GET " + tc.path + "\n"; r.Body != want {
			t.Errorf("GET http://%s%s answered %q, want %q", tc.host, tc.path, r.Body, want)
		}
	}
	// /apis is not under /api (segment boundary): no route, empty reply.
	if r, err := get("api.test", "/apis"); err == nil {
		t.Errorf("GET /apis was answered: %+v", r)
	}

	webReqs, apiReqs := web.Requests(), api.Requests()
	if len(webReqs) != 2 || len(apiReqs) != 2 {
		t.Fatalf("web saw %d requests, api %d; want 2 each", len(webReqs), len(apiReqs))
	}
	// The request arrives untouched: the Host header as curl sent it.
	if got, want := webReqs[0].Host, "www.test:"+port; got != want {
		t.Errorf("web saw Host %q, want %q", got, want)
	}
	if webReqs[0].Path != "/index.html" || apiReqs[0].Path != "/api/v1/items" {
		t.Errorf("paths seen: web %q, api %q", webReqs[0].Path, apiReqs[0].Path)
	}
	m.waitIdle()
}

func TestPeerOpenVPNThroughMux(t *testing.T) {
	t.Parallel()
	vpn := peers.OpenVPN(t)
	// ssh first and any last: the OpenVPN reset must be told from both.
	sink := peers.NewTCPServer(t, func(c net.Conn) {})
	m := startMux(t, snapshotOf(listenerOn("pub",
		routeTo("ssh", snapshot.SSH, sink.Addr),
		routeTo("vpn", snapshot.OpenVPN, vpn.Addr),
		routeTo("any", snapshot.Any, sink.Addr),
	)))
	client := vpn.Client(t, m.addr("pub"))
	vpn.WaitConnected(t, client)
	if n := sink.Accepted(); n != 0 {
		t.Fatalf("the ssh/any sink got %d connections; OpenVPN was misrouted", n)
	}
	// Stop the client first so the mux has nothing left to drain.
	client.Stop()
	m.waitIdle()
}

// proxyRoute is a route of protocol p to a new proxyBackend, which wants a
// PROXY header of version; the headers it reads come on the channel.
func proxyRoute(t testing.TB, name string, p snapshot.Protocol, version int) (snapshot.Route, *peers.TCPServer, <-chan *proxyproto.Header) {
	backend, headers := proxyBackend(t)
	r := routeTo(name, p, backend.Addr)
	r.Backend.ProxyProtocol = version
	return r, backend, headers
}

// proxyBackend reads a PROXY header on every connection, hands it to the
// test, then echoes what follows.
func proxyBackend(t testing.TB) (*peers.TCPServer, <-chan *proxyproto.Header) {
	headers := make(chan *proxyproto.Header, 4)
	b := peers.NewTCPServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			t.Errorf("backend: no PROXY header: %v", err)
			return
		}
		headers <- h
		echo(c, br)
	})
	return b, headers
}

func TestPeerProxyProtocolOut(t *testing.T) {
	t.Parallel()
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			t.Parallel()
			r, _, headers := proxyRoute(t, "any", snapshot.Any, version)
			m := startMux(t, snapshotOf(listenerOn("pub", r)))
			c := dial(t, m.addr("pub"))
			roundTrip(t, c, "hello through PROXY\n")
			h := <-headers // sent before the first byte, so here by now
			if int(h.Version) != version {
				t.Errorf("header version %d, want %d", h.Version, version)
			}
			if got, want := h.SourceAddr.String(), c.LocalAddr().String(); got != want {
				t.Errorf("PROXY source %s, want the client's address %s", got, want)
			}
			if got, want := h.DestinationAddr.String(), c.RemoteAddr().String(); got != want {
				t.Errorf("PROXY destination %s, want the mux address %s", got, want)
			}
			m.hangUp(c)
		})
	}
}

func TestPeerProxyProtocolInToOut(t *testing.T) {
	t.Parallel()
	// A listener behind an outer load balancer passes the address its
	// PROXY header carried on to a backend that wants one too.
	r, _, headers := proxyRoute(t, "any", snapshot.Any, 2)
	l := listenerOn("pub", r)
	l.ProxyProtocol = trustingLocalhost()
	m := startMux(t, snapshotOf(l))
	c := dial(t, m.addr("pub"))
	if _, err := c.Write([]byte("PROXY TCP4 203.0.113.7 127.0.0.1 4444 443\r\n")); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "hello")
	h := <-headers
	if got := h.SourceAddr.String(); got != "203.0.113.7:4444" {
		t.Errorf("PROXY source %s, want 203.0.113.7:4444 from the incoming header", got)
	}
	m.hangUp(c)
}

func TestPeerCurlHTTPMode(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	r := routeTo("web", snapshot.HTTP, web.Addr)
	r.Match.Host = []string{"www.test"}
	r.Backend.Mode = snapshot.ModeHTTP
	m := startMux(t, snapshotOf(listenerOn("pub", r)))
	pub := m.addr("pub")
	port := portOf(pub)

	// Two requests on one connection: both are proxied.
	url := "http://www.test:" + port
	res, err := peers.Curl(t, "--resolve", resolve("www.test", pub), url+"/one", "--next", "--resolve", resolve("www.test", pub), url+"/two")
	if err != nil || res.Code != 200 {
		t.Fatalf("curl through an http-mode backend: %+v, %v", res, err)
	}
	reqs := web.Requests()
	if len(reqs) != 2 || reqs[0].Path != "/one" || reqs[1].Path != "/two" {
		t.Fatalf("backend saw %+v, want /one and /two", reqs)
	}
	for _, req := range reqs {
		if got := req.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want 127.0.0.1", got)
		}
		if got := req.Header.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("X-Forwarded-Proto %q, want http", got)
		}
		if got, want := req.Header.Get("X-Forwarded-Host"), "www.test:"+port; got != want {
			t.Errorf("X-Forwarded-Host %q, want %q", got, want)
		}
		if got, want := req.Host, "www.test:"+port; got != want {
			t.Errorf("Host %q, want %q", got, want)
		}
	}
	m.waitIdle()
}

func TestPeerOpenSSHInsideTerminatedTLS(t *testing.T) {
	t.Parallel()
	sshd := peers.SSHD(t)
	openssl := peers.LookPath(t, "openssl")
	cert := peers.CertPair(t, "ssh.test")
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(
		listenerOn("pub", handTo("unwrap", "unwrapped", "ssh.test")),
		internalTLS("unwrapped", tlsOf(nil, cert),
			routeTo("ssh", snapshot.SSH, sshd.Addr),
			routeTo("web", snapshot.HTTP, web.Addr),
		),
	))
	pub := m.addr("pub")

	// ssh's stream travels inside TLS that the mux terminates, then is
	// sniffed again: the recipe for networks that only let TLS out.
	if err := sshd.EchoVia(t, openssl+" s_client -quiet -verify_quiet -connect "+pub+" -servername ssh.test"); err != nil {
		t.Fatalf("ssh inside TLS: %v", err)
	}
	// HTTP inside the same TLS goes to the web backend.
	r, err := peers.Curl(t, "-k", "--http1.1", "--resolve", resolve("ssh.test", pub), "https://ssh.test:"+portOf(pub)+"/inside")
	if err != nil || r.Body != "web GET /inside\n" {
		t.Fatalf("HTTPS through the terminating listener: %+v, %v", r, err)
	}
	m.waitIdle()
}
