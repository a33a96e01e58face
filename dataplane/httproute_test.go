package dataplane_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// http mode decides per request: every HTTP/1.1 request and HTTP/2 stream
// is matched against the listener's routes, not only the one that opened
// the connection.

// exchange writes one raw request on c and reads its response, body
// included.
func exchange(t testing.TB, c net.Conn, br *bufio.Reader, req string) (int, string) {
	t.Helper()
	res := send(t, c, br, req)
	defer res.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("response body to %s: %v", requestLine(req), err)
	}
	return res.StatusCode, string(body)
}

// send writes one raw request on c and reads the head of its response.
func send(t testing.TB, c net.Conn, br *bufio.Reader, req string) *http.Response {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write %s: %v", requestLine(req), err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response to %s: %v", requestLine(req), err)
	}
	return res
}

// requestLine is the first line of a raw request, for messages.
func requestLine(req string) string {
	line, _, _ := strings.Cut(req, "\r\n")
	return strconv.Quote(line)
}

// readerConn reads through r (a bufio.Reader holding bytes read past a
// response) and writes to the connection.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// paths lists the paths a backend saw, in order.
func paths(reqs []peers.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.Path)
	}
	return out
}

// httpRequestCount sums portmux_http_requests_total of listener with outcome.
func (m *testMux) httpRequestCount(listener, outcome string) int {
	m.t.Helper()
	return int(m.metricSum("portmux_http_requests_total", map[string]string{"listener": listener, "outcome": outcome}))
}

// TestHTTPModeRoutesEveryRequest is the finding of issue 14: after a
// request a route allows, a request on the same kept-alive connection for
// a host (or path) no route allows reached the backend. Now every request
// is routed: to its own http-mode route's backend, or 421 when its route
// is not http mode or there is none, and nothing reaches a backend then.
func TestHTTPModeRoutesEveryRequest(t *testing.T) {
	t.Parallel()
	public := peers.HTTPBackend(t, "public")
	api := peers.HTTPBackend(t, "api")
	raw := peers.HTTPBackend(t, "raw")
	pub := httpRoute("public", public.Addr, "public.test")
	pub.Match.PathPrefix = "/public"
	tcpMode := routeTo("raw", snapshot.HTTP, raw.Addr)
	tcpMode.Match.Host = []string{"raw.test"}
	tun := snapshot.Route{
		Name:   "tunnel",
		Match:  snapshot.Match{Protocol: snapshot.WebSocket, Host: []string{"tunnel.test"}},
		Tunnel: &snapshot.Tunnel{},
	}
	m := startMux(t, snapshotOf(listenerOn("pub", pub, httpRoute("api", api.Addr, "api.test"), tcpMode, tun)))

	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	const wsHeaders = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, step := range []struct {
		req    string
		status int
		body   string
	}{
		{"GET /public/a HTTP/1.1\r\nHost: public.test\r\n\r\n", 200, "public GET /public/a\n"},
		{"GET /admin HTTP/1.1\r\nHost: admin.test\r\n\r\n", 421, ""},
		{"GET /public/../admin HTTP/1.1\r\nHost: public.test\r\n\r\n", 421, ""},
		{"GET /admin HTTP/1.1\r\nHost: public.test\r\n\r\n", 421, ""},
		{"GET /v1 HTTP/1.1\r\nHost: api.test\r\n\r\n", 200, "api GET /v1\n"},
		{"GET /x HTTP/1.1\r\nHost: raw.test\r\n\r\n", 421, ""},
		{"GET /t HTTP/1.1\r\nHost: tunnel.test\r\n" + wsHeaders + "\r\n", 421, ""},
		{"POST /admin HTTP/1.1\r\nHost: admin.test\r\nContent-Length: 5\r\n\r\nhello", 421, ""},
		{"GET /public/b HTTP/1.1\r\nHost: PUBLIC.test:80\r\n\r\n", 200, "public GET /public/b\n"},
	} {
		status, body := exchange(t, c, br, step.req)
		if status != step.status || (step.body != "" && body != step.body) {
			t.Errorf("%q: %d %q, want %d %q", step.req, status, body, step.status, step.body)
		}
	}
	_ = c.Close()
	m.waitIdle()

	if got := paths(public.Requests()); !slices.Equal(got, []string{"/public/a", "/public/b"}) {
		t.Errorf("public backend saw %q, want only /public/a and /public/b", got)
	}
	if got := paths(api.Requests()); !slices.Equal(got, []string{"/v1"}) {
		t.Errorf("api backend saw %q, want /v1", got)
	}
	if got := raw.Requests(); len(got) != 0 {
		t.Errorf("the tcp-mode backend saw %q through an http-mode connection", paths(got))
	}
	if n := m.httpRequestCount("pub", dataplane.RequestMisdirected); n != 6 {
		t.Errorf("%d requests counted misdirected, want 6", n)
	}
	if n := m.httpRequestCount("pub", dataplane.RequestProxied); n != 3 {
		t.Errorf("%d requests counted proxied, want 3", n)
	}
	if n := m.outcomeCount("pub", dataplane.OutcomeHTTP); n != 1 {
		t.Errorf("%d connections served as http, want 1", n)
	}
}

// h2Conn opens one HTTP/2 connection to addr: TLS with ALPN h2 when sni is
// set, else cleartext with prior knowledge. It is closed at cleanup.
func h2Conn(t testing.TB, addr, sni string) *http.ClientConn {
	t.Helper()
	// Strict: past the server's stream limit, requests wait for a stream
	// instead of failing (a pool would dial another connection).
	tr := &http.Transport{HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: true}, Protocols: new(http.Protocols)}
	scheme := "http"
	if sni != "" {
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{ServerName: sni, InsecureSkipVerify: true}
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	cc, err := tr.NewClientConn(context.Background(), scheme, addr)
	if err != nil {
		t.Fatalf("HTTP/2 client connection: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// transportTo is a client transport whose connections all go to addr,
// whatever a URL's host: HTTP/1.1, h2c or h2 as proto says, over TLS
// (server name sni) when secure (h2 always is, h2c never); scheme is
// what its URLs start with.
func transportTo(addr, sni, proto string, secure bool) (tr *http.Transport, scheme string) {
	tr = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true},
		Protocols:       new(http.Protocols),
	}
	switch proto {
	case "h2c":
		tr.Protocols.SetUnencryptedHTTP2(true)
		secure = false
	case "h2":
		tr.Protocols.SetHTTP2(true)
		secure = true
	default:
		tr.Protocols.SetHTTP1(true)
	}
	if secure {
		return tr, "https"
	}
	return tr, "http"
}

// h2Get sends GET url with host on cc and returns the status and body.
func h2Get(t testing.TB, cc *http.ClientConn, host, url string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	return peers.StatusBody(cc.RoundTrip(req))
}

// h2Post sends POST url with body on cc and returns the status and body
// of the response: a request with a body, which net/http's Transport
// carries to the backend even on the relay loops.
func h2Post(t testing.TB, cc *http.ClientConn, url, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return peers.StatusBody(cc.RoundTrip(req))
}

// TestHTTPModeRoutesEveryHTTP2Stream: on one HTTP/2 connection (the TLS
// server name chose the first route) each stream goes where its
// :authority routes it, or gets 421.
func TestHTTPModeRoutesEveryHTTP2Stream(t *testing.T) {
	t.Parallel()
	a := peers.HTTPBackend(t, "a")
	b := peers.HTTPBackend(t, "b")
	raw := peers.HTTPBackend(t, "raw")
	tcpMode := routeTo("raw", snapshot.HTTP, raw.Addr)
	tcpMode.Match.Host = []string{"raw.h2.test"}
	cert := peers.CertPair(t, "*.h2.test")
	m := startMux(t, snapshotOf(terminating("h2", tlsOf([]string{"h2"}, cert),
		httpRoute("a", a.Addr, "a.h2.test"),
		httpRoute("b", b.Addr, "b.h2.test"),
		tcpMode,
	)))
	cc := h2Conn(t, m.addr("h2"), "a.h2.test")
	for _, step := range []struct {
		host   string
		status int
		body   string
	}{
		{"a.h2.test", 200, "a GET /s\n"},
		{"b.h2.test", 200, "b GET /s\n"},
		{"raw.h2.test", 421, ""},
		{"admin.h2.test", 421, ""},
		{"a.h2.test", 200, "a GET /s\n"},
	} {
		status, body, err := h2Get(t, cc, step.host, "https://"+step.host+"/s")
		if err != nil || status != step.status || (step.body != "" && body != step.body) {
			t.Errorf("stream for %s: %d %q %v, want %d %q", step.host, status, body, err, step.status, step.body)
		}
	}
	_ = cc.Close()
	m.waitIdle()
	if n, n2 := len(a.Requests()), len(b.Requests()); n != 2 || n2 != 1 {
		t.Errorf("a saw %d requests (want 2), b %d (want 1)", n, n2)
	}
	if n := len(raw.Requests()); n != 0 {
		t.Errorf("the tcp-mode backend saw %d requests", n)
	}
}

// upgradeBackend answers every Upgrade request with 101 and then echoes
// the raw bytes: what a backend that speaks h2c does with "Upgrade: h2c".
// A request without Upgrade gets 200 "plain". It records the headers of
// every request.
func upgradeBackend(t testing.TB) (addr string, seen func() []http.Header) {
	t.Helper()
	var mu sync.Mutex
	var headers []http.Header
	srv := requestServer(t, func(c net.Conn, br *bufio.Reader, req *http.Request, _ int) bool {
		mu.Lock()
		headers = append(headers, req.Header.Clone())
		mu.Unlock()
		if up := req.Header.Get("Upgrade"); up != "" {
			if _, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", up); err != nil {
				return false
			}
			echo(c, br)
			return false
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nplain\n")
		return err == nil
	})
	return srv.Addr, func() []http.Header {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(headers)
	}
}

// TestHTTPModeRefusesUpgradesOtherThanWebSocket: an "Upgrade: h2c" passed
// on would let a backend that speaks h2c turn the connection into a raw
// tunnel, where HTTP/2 streams for any host reach it unrouted. Only
// WebSocket handshakes keep their Upgrade; any other is stripped with its
// Connection tokens and the request is served as a plain one.
func TestHTTPModeRefusesUpgradesOtherThanWebSocket(t *testing.T) {
	t.Parallel()
	backend, seen := upgradeBackend(t)
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend, "public.test"))))

	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	if status, body := exchange(t, c, br, "GET / HTTP/1.1\r\nHost: public.test\r\n\r\n"); status != 200 || body != "plain\n" {
		t.Fatalf("first request: %d %q", status, body)
	}
	h2cUpgrade := "GET / HTTP/1.1\r\nHost: public.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
	if status, body := exchange(t, c, br, h2cUpgrade); status != 200 || body != "plain\n" {
		t.Fatalf("h2c upgrade: %d %q, want 200 \"plain\\n\" (served as a plain request)", status, body)
	}
	for _, up := range []string{"websocketx", "TLS/1.2"} {
		req := "GET / HTTP/1.1\r\nHost: public.test\r\nConnection: Upgrade\r\nUpgrade: " + up + "\r\n\r\n"
		if status, _ := exchange(t, c, br, req); status != 200 {
			t.Errorf("Upgrade: %s: status %d, want 200", up, status)
		}
	}
	// A WebSocket handshake still upgrades, end to end.
	ws := "GET /ws HTTP/1.1\r\nHost: public.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if status, _ := exchange(t, c, br, ws); status != http.StatusSwitchingProtocols {
		t.Fatalf("WebSocket handshake: status %d, want 101", status)
	}
	roundTrip(t, readerConn{Conn: c, r: br}, "through the upgrade\n")
	_ = c.Close()
	m.waitIdle()

	hs := seen()
	if len(hs) != 5 {
		t.Fatalf("backend saw %d requests, want 5", len(hs))
	}
	for i, h := range hs[:4] {
		if h.Get("Upgrade") != "" || h.Get("Connection") != "" || h.Get("Http2-Settings") != "" {
			t.Errorf("request %d reached the backend with Upgrade %q, Connection %q, HTTP2-Settings %q", i, h.Get("Upgrade"), h.Get("Connection"), h.Get("Http2-Settings"))
		}
	}
	if h := hs[4]; !strings.EqualFold(h.Get("Upgrade"), "websocket") || !strings.EqualFold(h.Get("Connection"), "upgrade") {
		t.Errorf("WebSocket handshake reached the backend with Upgrade %q, Connection %q", h.Get("Upgrade"), h.Get("Connection"))
	}
}

// TestHTTPModeStripsHopByHopFields: the hop-by-hop fields of RFC 9110
// §7.6.1, and every field a Connection header names, are the business of
// one connection and go no further, in either direction; end-to-end
// fields pass untouched.
func TestHTTPModeStripsHopByHopFields(t *testing.T) {
	t.Parallel()
	hop := []string{"Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "X-Named-Hop"}
	// Passed on as sent, odd spacing and a bare value included.
	const cookie = "a=b;c=d;  e; f=\"g h\""
	var mu sync.Mutex
	var seen http.Header
	backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ int) bool {
		mu.Lock()
		seen = req.Header.Clone()
		mu.Unlock()
		_, _ = io.Copy(io.Discard, req.Body)
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, X-Named-Hop\r\n"+
			"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nX-Named-Hop: 1\r\nX-End: kept\r\n\r\nok\n")
		return err == nil
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr, "public.test"))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	for i := range 2 { // the second on a pooled backend connection
		res := send(t, c, br, "GET / HTTP/1.1\r\nHost: public.test\r\nConnection: keep-alive, X-Named-Hop\r\n"+
			"Keep-Alive: 300\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nTe: trailers\r\nX-Named-Hop: 1\r\nX-End: kept\r\n"+
			"Cookie: "+cookie+"\r\n\r\n")
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Fatalf("request %d: %d %q %v", i, res.StatusCode, body, err)
		}
		mu.Lock()
		req := seen
		mu.Unlock()
		for name, h := range map[string]http.Header{"request": req, "response": res.Header} {
			for _, k := range append(hop, "Connection") {
				if v := h.Values(k); len(v) > 0 {
					t.Errorf("%d: the %s passed on %s: %q", i, name, k, v)
				}
			}
			if got := h.Get("X-End"); got != "kept" {
				t.Errorf("%d: the %s lost an end-to-end field: X-End %q", i, name, got)
			}
		}
		if got := req.Values("Cookie"); len(got) != 1 || got[0] != cookie {
			t.Errorf("%d: the backend got Cookie %q, want %q", i, got, cookie)
		}
	}
}

// TestHTTPModeKeepsTheOrderOfRepeatedFields: the order of a field's
// lines is part of its value (RFC 9110 §5.3), so fields repeated after
// a hop-by-hop one reach the other side in the order they were sent, in
// both directions and on every path: HTTP/1.1 and 1.0 in the clear and
// inside TLS, h2c and h2.
func TestHTTPModeKeepsTheOrderOfRepeatedFields(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string
	backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ int) bool {
		mu.Lock()
		seen = req.Header.Values("X-A")
		mu.Unlock()
		_, _ = io.Copy(io.Discard, req.Body)
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: h\r\n"+
			"X-B: 1\r\nX-B: 2\r\nX-C: c\r\nX-B: 3\r\nContent-Length: 3\r\n\r\nok\n")
		return err == nil
	})
	cert := peers.CertPair(t, "order.test")
	m := startMux(t, snapshotOf(
		listenerOn("plain", httpRoute("web", backend.Addr)),
		terminating("tls", tlsOf([]string{"h2", "http/1.1"}, cert), httpRoute("web", backend.Addr)),
	))
	const fields = "Connection: keep-alive, X-Hop\r\nX-Hop: h\r\nX-A: 1\r\nX-A: 2\r\nX-D: d\r\nX-A: 3\r\n"
	h1 := func(listener, version string, secure bool) func() (http.Header, error) {
		return func() (http.Header, error) {
			var c net.Conn = dial(t, m.addr(listener))
			if secure {
				c = tls.Client(c, &tls.Config{ServerName: "order.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := io.WriteString(c, "GET / "+version+"\r\nHost: order.test\r\n"+fields+"\r\n"); err != nil {
				return nil, err
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return nil, err
			}
			_ = res.Body.Close()
			return res.Header, nil
		}
	}
	h2 := func(listener, sni string) func() (http.Header, error) {
		return func() (http.Header, error) {
			req, err := http.NewRequest(http.MethodGet, "http://order.test/", nil)
			if err != nil {
				return nil, err
			}
			req.Header["X-A"] = []string{"1", "2"}
			req.Header["X-D"] = []string{"d"}
			req.Header.Add("X-A", "3")
			cc := h2Conn(t, m.addr(listener), sni)
			defer cc.Close()
			res, err := cc.RoundTrip(req)
			if err != nil {
				return nil, err
			}
			_ = res.Body.Close()
			return res.Header, nil
		}
	}
	for _, tc := range []struct {
		name string
		do   func() (http.Header, error)
	}{
		{"HTTP/1.1", h1("plain", "HTTP/1.1", false)},
		{"HTTP/1.0", h1("plain", "HTTP/1.0", false)},
		{"HTTP/1.1 in TLS", h1("tls", "HTTP/1.1", true)},
		{"h2c", h2("plain", "")},
		{"h2", h2("tls", "order.test")},
	} {
		got, err := tc.do()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		mu.Lock()
		req := seen
		mu.Unlock()
		if want := []string{"1", "2", "3"}; !slices.Equal(req, want) {
			t.Errorf("%s: the backend got X-A %q, want %q", tc.name, req, want)
		}
		if res, want := got.Values("X-B"), []string{"1", "2", "3"}; !slices.Equal(res, want) {
			t.Errorf("%s: the client got X-B %q, want %q", tc.name, res, want)
		}
		if v := got.Values("X-Hop"); len(v) > 0 {
			t.Errorf("%s: the client got X-Hop %q", tc.name, v)
		}
	}
	m.waitIdle()
}

// TestHTTPModeHTTP1Trailers: the trailers of a chunked response reach an
// HTTP/1.1 client on every path: in the clear and inside TLS.
func TestHTTPModeHTTP1Trailers(t *testing.T) {
	t.Parallel()
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", "X-Sum, X-Many")
		_, _ = io.WriteString(w, "part1\n")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2\n")
		w.Header().Set("X-Sum", "42")
		w.Header()["X-Many"] = []string{"a", "b"}
	})
	cert := peers.CertPair(t, "trailers.test")
	m := startMux(t, snapshotOf(
		listenerOn("plain", httpRoute("web", web.Addr)),
		terminating("tls", tlsOf([]string{"http/1.1"}, cert), httpRoute("web", web.Addr)),
	))
	for _, tc := range []struct{ name, listener string }{
		{"in the clear", "plain"},
		{"inside TLS", "tls"},
	} {
		tr, scheme := transportTo(m.addr(tc.listener), "trailers.test", "http/1.1", tc.listener == "tls")
		res, err := (&http.Client{Transport: tr}).Get(scheme + "://trailers.test/")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		tr.CloseIdleConnections()
		if err != nil || string(body) != "part1\npart2\n" || res.ProtoMajor != 1 {
			t.Errorf("%s: HTTP/%d %q, %v", tc.name, res.ProtoMajor, body, err)
		}
		if got := fmt.Sprintf("%q %q", res.Trailer.Get("X-Sum"), res.Trailer.Values("X-Many")); got != `"42" ["a" "b"]` {
			t.Errorf("%s: trailers %s, want the backend's X-Sum 42 and X-Many a, b", tc.name, got)
		}
	}
	m.waitIdle()
}
