package dataplane_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/pires/go-proxyproto"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// backend.mode http: the dataplane is a reverse proxy. Keep-alive on both
// sides, X-Forwarded-* from what it saw (the real client or the PROXY
// header's, https after termination), WebSocket upgrades carried end to
// end, and HTTP/2 from clients that negotiated h2.

// httpRoute is an http-mode route matching protocol http (and hosts).
func httpRoute(name, addr string, hosts ...string) snapshot.Route {
	r := routeTo(name, snapshot.HTTP, addr)
	r.Match.Host = hosts
	r.Backend.Mode = snapshot.ModeHTTP
	return r
}

// muxClient is an HTTP client whose every connection goes to addr, whatever
// the URL's host, with TLS unverified and HTTP/2 when h2 is set (the
// server decides by ALPN). Its idle connections are closed at cleanup.
func muxClient(t testing.TB, addr string, h2 bool) (*http.Client, *http.Transport) {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: h2,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: ioTimeout}, tr
}

func get(t testing.TB, c *http.Client, url string) (string, *http.Response) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return string(body), res
}

// checkForwarded asserts the forwarding headers a backend saw: the
// X-Forwarded-* set, X-Real-IP and Forwarded (RFC 7239), each once.
func checkForwarded(t testing.TB, req peers.Request, wantFor, wantProto, wantHost string) {
	t.Helper()
	if got := req.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != wantFor {
		t.Errorf("%s: X-Forwarded-For %q, want %q", req.Path, got, wantFor)
	}
	if got := req.Header.Values("X-Real-IP"); len(got) != 1 || got[0] != wantFor {
		t.Errorf("%s: X-Real-IP %q, want %q", req.Path, got, wantFor)
	}
	node, host := wantFor, wantHost
	if strings.Contains(node, ":") {
		node = `"[` + node + `]"`
	}
	if strings.Contains(host, ":") {
		host = `"` + host + `"`
	}
	if got, want := req.Header.Values("Forwarded"), "for="+node+";proto="+wantProto+";host="+host; len(got) != 1 || got[0] != want {
		t.Errorf("%s: Forwarded %q, want %q", req.Path, got, want)
	}
	if got := req.Header.Get("X-Forwarded-Proto"); got != wantProto {
		t.Errorf("%s: X-Forwarded-Proto %q, want %q", req.Path, got, wantProto)
	}
	if got := req.Header.Get("X-Forwarded-Host"); got != wantHost {
		t.Errorf("%s: X-Forwarded-Host %q, want %q", req.Path, got, wantHost)
	}
	if req.Host != wantHost {
		t.Errorf("%s: Host %q, want %q (the client's, untouched)", req.Path, req.Host, wantHost)
	}
}

// distinct counts the different values of f over reqs.
func distinct(reqs []peers.Request, f func(peers.Request) string) int {
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[f(r)] = true
	}
	return len(seen)
}

func TestHTTPModeKeepAliveBothSides(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr, "www.test"))))
	pub := m.addr("pub")
	client, tr := muxClient(t, pub, false)

	// Five requests on one client connection, then five on another: the
	// backend connection is pooled and reused. (Rarely two: the transport
	// returns a connection to its pool just after the response ends, and
	// the next request can win that race and dial.)
	for round := range 2 {
		for i := range 5 {
			path := fmt.Sprintf("/r%d/%d", round, i)
			if body, _ := get(t, client, "http://www.test"+path); body != "web GET "+path+"\n" {
				t.Fatalf("GET %s answered %q", path, body)
			}
		}
		tr.CloseIdleConnections()
		peers.Until(t, ioTimeout, "the client connection to end", func() bool {
			return m.outcomeCount("pub", dataplane.OutcomeHTTP) == round+1
		})
	}
	reqs := web.Requests()
	if len(reqs) != 10 {
		t.Fatalf("backend saw %d requests, want 10", len(reqs))
	}
	if n := distinct(reqs, func(r peers.Request) string { return r.RemoteAddr }); n > 2 {
		t.Errorf("backend saw %d connections for 10 requests over 2 client connections, want 1 or 2 (pooled)", n)
	}

	// curl sends two requests on one connection too.
	res, err := peers.Curl(t, "--resolve", resolve("www.test", pub), "http://www.test:"+portOf(pub)+"/c1",
		"--next", "--resolve", resolve("www.test", pub), "http://www.test:"+portOf(pub)+"/c2")
	if err != nil || res.Code != 200 {
		t.Fatalf("curl: %+v, %v", res, err)
	}
	peers.Until(t, ioTimeout, "curl's connection to end", func() bool { return m.outcomeCount("pub", dataplane.OutcomeHTTP) == 3 })
	if n := distinct(web.Requests(), func(r peers.Request) string { return r.RemoteAddr }); n > 3 {
		t.Errorf("backend connections after curl's 2 requests: %d, want at most 3 for 12 requests", n)
	}
	m.waitIdle()
}

// TestHTTPModeHTTPSThroughTermination is the curl test: HTTPS
// terminated here, HTTP inside routed by Host and proxied to a backend
// that checks X-Forwarded-*, X-Real-IP and Forwarded. Those sent by the
// client are replaced, not trusted.
func TestHTTPModeHTTPSThroughTermination(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	api := peers.HTTPBackend(t, "api")
	cert := peers.CertPair(t, "www.example.test", "*.example.test")
	m := startMux(t, snapshotOf(terminating("pub", tlsOf([]string{"http/1.1"}, cert),
		httpRoute("api", api.Addr, "api.example.test"),
		httpRoute("web", web.Addr),
	)))
	pub := m.addr("pub")
	port := portOf(pub)

	r, err := peers.Curl(t, "-k", "--resolve", resolve("www.example.test", pub),
		"-H", "X-Forwarded-For: 198.51.100.66", "-H", "X-Forwarded-Proto: gopher",
		"-H", "X-Real-IP: 198.51.100.66", "-H", "Forwarded: for=198.51.100.66;proto=https",
		"https://www.example.test:"+port+"/page")
	if err != nil || r.Code != 200 || r.Body != "web GET /page\n" || r.Version != "1.1" {
		t.Fatalf("curl https://www.example.test: %+v, %v", r, err)
	}
	r, err = peers.Curl(t, "-k", "--resolve", resolve("api.example.test", pub), "https://api.example.test:"+port+"/v1")
	if err != nil || r.Body != "api GET /v1\n" {
		t.Fatalf("curl https://api.example.test: %+v, %v", r, err)
	}
	if reqs := web.Requests(); len(reqs) != 1 {
		t.Fatalf("web saw %d requests", len(reqs))
	} else {
		checkForwarded(t, reqs[0], "127.0.0.1", "https", "www.example.test:"+port)
	}
	if reqs := api.Requests(); len(reqs) == 1 {
		checkForwarded(t, reqs[0], "127.0.0.1", "https", "api.example.test:"+port)
	}
	m.waitIdle()
}

// TestHTTPModeHTTP2 serves clients that negotiated h2: the connection
// preface is sniffed as HTTP, routed by the TLS server name (HTTP/2 names
// no host up front), and each stream proxied to an HTTP/1.1 backend.
func TestHTTPModeHTTP2(t *testing.T) {
	t.Parallel()
	a := peers.HTTPBackend(t, "a")
	b := peers.HTTPBackend(t, "b")
	cert := peers.CertPair(t, "h2.test", "*.h2.test")
	m := startMux(t, snapshotOf(
		terminating("h2", tlsOf([]string{"h2", "http/1.1"}, cert),
			httpRoute("a", a.Addr, "a.h2.test"),
			httpRoute("b", b.Addr, "b.h2.test"),
		),
		terminating("h1", tlsOf([]string{"http/1.1"}, cert), httpRoute("a", a.Addr)),
	))
	h2, h1 := m.addr("h2"), m.addr("h1")

	for _, host := range []string{"a.h2.test", "b.h2.test"} {
		r, err := peers.Curl(t, "-k", "--http2", "--resolve", resolve(host, h2), "https://"+host+":"+portOf(h2)+"/x")
		want := host[:1] + " GET /x\n"
		if err != nil || r.Code != 200 || r.Version != "2" || r.Body != want {
			t.Errorf("curl --http2 https://%s: %+v, %v; want HTTP/2 and %q", host, r, err, want)
		}
	}
	// A name no route has: no route, the connection is closed.
	if r, err := peers.Curl(t, "-k", "--http2", "--resolve", resolve("c.h2.test", h2), "https://c.h2.test:"+portOf(h2)+"/"); err == nil {
		t.Errorf("curl to c.h2.test was answered: %+v", r)
	}
	// Declared http/1.1 only: curl --http2 falls back to HTTP/1.1.
	r, err := peers.Curl(t, "-k", "--http2", "--resolve", resolve("a.h2.test", h1), "https://a.h2.test:"+portOf(h1)+"/old")
	if err != nil || r.Version != "1.1" || r.Body != "a GET /old\n" {
		t.Errorf("curl --http2 to an http/1.1 listener: %+v, %v; want HTTP/1.1", r, err)
	}

	// Many concurrent streams on one HTTP/2 connection. A first request
	// sets the connection up: 20 at once on a cold transport would each
	// dial, and the one extra connection Go's pool sometimes keeps from
	// that race outlives CloseIdleConnections.
	client, tr := muxClient(t, h2, true)
	if body, res := get(t, client, "https://a.h2.test/s-first"); res.ProtoMajor != 2 || body != "a GET /s-first\n" {
		t.Fatalf("first request: %s %q", res.Proto, body)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := client.Get(fmt.Sprintf("https://a.h2.test/s%d", i))
			if err != nil {
				errs <- err
				return
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.ProtoMajor != 2 || string(body) != fmt.Sprintf("a GET /s%d\n", i) {
				errs <- fmt.Errorf("stream %d: %s %q", i, res.Proto, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tr.CloseIdleConnections()
	m.waitIdle()
	// curl a, curl b and the Go client: three HTTP/2 connections served.
	if n := m.outcomeCount("h2", dataplane.OutcomeHTTP); n != 3 {
		t.Errorf("%d connections served as http on the h2 listener, want 3", n)
	}
	for _, req := range a.Requests() {
		if strings.HasPrefix(req.Path, "/s") || req.Path == "/x" {
			checkForwarded(t, req, "127.0.0.1", "https", req.Header.Get("X-Forwarded-Host"))
			if !strings.HasPrefix(req.Host, "a.h2.test") {
				t.Errorf("%s: Host %q, want the :authority a.h2.test", req.Path, req.Host)
			}
		}
	}
}

// wsEchoBackend is a WebSocket server (coder/websocket) that echoes every
// message and records the upgrade requests' headers.
func wsEchoBackend(t testing.TB) (addr string, upgrades func() []http.Header) {
	t.Helper()
	var mu sync.Mutex
	var seen []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(4 << 20)
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), func() []http.Header {
		mu.Lock()
		defer mu.Unlock()
		return append([]http.Header(nil), seen...)
	}
}

func TestHTTPModeWebSocketUpgrade(t *testing.T) {
	t.Parallel()
	backend, upgrades := wsEchoBackend(t)
	cert := peers.CertPair(t, "ws.test")
	m := startMux(t, snapshotOf(
		listenerOn("plain", httpRoute("ws", backend)),
		terminating("tls", tlsOf([]string{"http/1.1"}, cert), httpRoute("ws", backend, "ws.test")),
	))
	for _, tc := range []struct{ listener, url, proto string }{
		{"plain", "ws://ws.test/echo", "http"},
		{"tls", "wss://ws.test/echo", "https"},
	} {
		client, _ := muxClient(t, m.addr(tc.listener), false)
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		c, res, err := websocket.Dial(ctx, tc.url, &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			cancel()
			t.Fatalf("%s: WebSocket dial: %v", tc.url, err)
		}
		if res.StatusCode != http.StatusSwitchingProtocols {
			t.Errorf("%s: status %d", tc.url, res.StatusCode)
		}
		c.SetReadLimit(4 << 20)
		big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
		for _, msg := range []string{"hello", big, "bye"} {
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatalf("%s: write: %v", tc.url, err)
			}
			_, got, err := c.Read(ctx)
			if err != nil || string(got) != msg {
				t.Fatalf("%s: echo of %d bytes: %d bytes, %v", tc.url, len(msg), len(got), err)
			}
		}
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Errorf("%s: close: %v", tc.url, err)
		}
		cancel()
		h := upgrades()[len(upgrades())-1]
		if h.Get("X-Forwarded-Proto") != tc.proto || h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Host") != "ws.test" {
			t.Errorf("%s: upgrade request forwarded with %v", tc.url, h)
		}
	}
	m.waitIdle()
}

// TestHTTPModeForwardedForFromProxyHeader: behind an outer load balancer,
// X-Forwarded-For, X-Real-IP and Forwarded name the client its PROXY
// header names (an IPv6 one bracketed and quoted in Forwarded), over plain
// HTTP and inside TLS terminated here; the client's own are replaced.
func TestHTTPModeForwardedForFromProxyHeader(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	cert := peers.CertPair(t, "lb.test")
	plain := listenerOn("plain", httpRoute("web", web.Addr))
	plain.ProxyProtocol = trustingLocalhost()
	secure := terminating("secure", tlsOf([]string{"http/1.1"}, cert), httpRoute("web", web.Addr))
	secure.ProxyProtocol = trustingLocalhost()
	m := startMux(t, snapshotOf(plain, secure))

	for i, tc := range []struct {
		listener string
		version  byte
		client   string
		tls      bool
	}{
		{"plain", 1, "203.0.113.7:4000", false},
		{"plain", 2, "[2001:db8::7]:4001", false},
		{"secure", 2, "198.51.100.9:4002", true},
		{"secure", 1, "198.51.100.10:4003", true},
	} {
		raw := dial(t, m.addr(tc.listener))
		src, _ := net.ResolveTCPAddr("tcp", tc.client)
		h := proxyproto.HeaderProxyFromAddrs(tc.version, src, raw.RemoteAddr())
		if _, err := h.WriteTo(raw); err != nil {
			t.Fatal(err)
		}
		var c net.Conn = raw
		if tc.tls {
			tc := tls.Client(raw, &tls.Config{ServerName: "lb.test", InsecureSkipVerify: true})
			c = tc
		}
		path := fmt.Sprintf("/%d", i)
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: lb.test\r\nX-Real-IP: 192.0.2.1\r\nForwarded: for=192.0.2.1\r\nConnection: close\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s v%d: %v", tc.listener, tc.version, err)
		}
		_ = res.Body.Close()
		_ = c.Close()
		reqs := web.Requests()
		req := reqs[len(reqs)-1]
		proto := "http"
		if tc.tls {
			proto = "https"
		}
		if req.Path != path {
			t.Fatalf("backend's last request %q, want %q", req.Path, path)
		}
		checkForwarded(t, req, src.IP.String(), proto, "lb.test")
	}
	m.waitIdle()
}
