package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// loopsCarrying is how many connections the relay loops carry of one a
// test expects them to: none without them (-relay-loops=-1, or not
// Linux).
func loopsCarrying() int {
	if runtime.GOOS != "linux" || *relayLoops < 0 {
		return 0
	}
	return 1
}

// onRelayLoops waits for the relay loops to hold want connections.
func onRelayLoops(t *testing.T, m *testMux, want int) {
	t.Helper()
	peers.Eventually(t, ioTimeout, fmt.Sprintf("%d connection(s) on the relay loops", want), func() error {
		if got := int(m.metricSum("portmux_relay_loop_connections", nil)); got != want {
			return fmt.Errorf("%d", got)
		}
		return nil
	})
}

// On Linux the relay loops carry a plain tcp-mode route without a
// goroutine, and hand everything else to one: a backend named by host
// name here. With -relay-loops=-1 (make test's second run) both are on
// goroutines and the loops carry nothing.
func TestRelayLoopsCarryPlainRoutes(t *testing.T) {
	backend := echoBackend(t)
	_, port, err := net.SplitHostPort(backend.Addr)
	if err != nil {
		t.Fatal(err)
	}
	m := startMux(t, snapshotOf(
		listenerOn("plain", routeTo("plain", snapshot.Any, backend.Addr)),
		listenerOn("named", routeTo("named", snapshot.Any, net.JoinHostPort("localhost", port))),
	))
	loops := loopsCarrying()

	plain := dial(t, m.addr("plain"))
	roundTrip(t, plain, "on the loop\n")
	onRelayLoops(t, m, loops)
	named := dial(t, m.addr("named"))
	roundTrip(t, named, "handed off\n")
	onRelayLoops(t, m, loops) // the handed-off one is not among them
	if n := m.ActiveConnections(); n != 2 {
		t.Fatalf("%d active connections, want 2", n)
	}
	_ = plain.Close()
	_ = named.Close()
	onRelayLoops(t, m, 0)
	m.waitIdle()
	if got := m.outcomeCount("", "forwarded"); got != 2 {
		t.Fatalf("%d connections counted forwarded, want 2", got)
	}
}

// HTTP/1.1 inside TLS to an http-mode route is carried by the relay loops
// once the handshake and the first request's sniff are done on the
// connection's goroutine; a request the loops do not carry (HTTP/1.0)
// brings the connection back to a goroutine, where it goes on over the
// same TLS session; HTTP/2 by ALPN moves to the loops too, once its
// preface is read (TestRelayLoopsServeHTTP2Connections serves it).
func TestRelayLoopsCarryHTTPOverTLS(t *testing.T) {
	addr, seen := wireBackend(t)
	cert := peers.CertPair(t, "loop.test")
	m := startMux(t, snapshotOf(terminating("tls", tlsOf([]string{"h2", "http/1.1"}, cert), httpRoute("web", addr))))
	loops := loopsCarrying()
	c := tlsDial(t, m.addr("tls"), "loop.test", "http/1.1")
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	br := bufio.NewReader(c)
	ask := func(raw, want string) {
		t.Helper()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(body) != want {
			t.Fatalf("%q: %d %q, want 200 %q", raw, res.StatusCode, body, want)
		}
	}
	ask("GET /one HTTP/1.1\r\nHost: loop.test\r\n\r\n", "/one")
	ask("POST /two HTTP/1.1\r\nHost: loop.test\r\nContent-Length: 3\r\n\r\nabc", "/two")
	onRelayLoops(t, m, loops)
	ask("GET /three HTTP/1.0\r\nHost: loop.test\r\nConnection: keep-alive\r\n\r\n", "/three")
	onRelayLoops(t, m, 0) // back on a goroutine, and still served
	ask("GET /four HTTP/1.1\r\nHost: loop.test\r\n\r\n", "/four")
	onRelayLoops(t, m, 0)

	h2 := tlsDial(t, m.addr("tls"), "loop.test", "h2")
	if got := h2.ConnectionState().NegotiatedProtocol; got != "h2" {
		t.Fatalf("ALPN %q", got)
	}
	_, _ = io.WriteString(h2, http2.ClientPreface)
	onRelayLoops(t, m, loops)
	_ = c.Close()
	_ = h2.Close()
	m.waitIdle()
	want := []string{"GET /one []", "POST /two [abc]", "GET /three []", "GET /four []"}
	if got := seen(); !slices.Equal(got, want) {
		t.Errorf("backend saw %q, want %q", got, want)
	}
}

// A cleartext connection behind a PROXY header is read on its goroutine
// (the header, then the first request) and then carried by the loops,
// with the header's client in X-Forwarded-For.
func TestRelayLoopsCarryHTTPBehindProxyHeader(t *testing.T) {
	web := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ int) bool {
		xff := req.Header.Get("X-Forwarded-For")
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(xff), xff)
		return err == nil
	})
	l := listenerOn("lb", httpRoute("web", web.Addr))
	l.ProxyProtocol = trustingLocalhost()
	m := startMux(t, snapshotOf(l))
	loops := loopsCarrying()
	c := dial(t, m.addr("lb"))
	src, _ := net.ResolveTCPAddr("tcp", "203.0.113.7:4000")
	if _, err := proxyproto.HeaderProxyFromAddrs(2, src, c.RemoteAddr()).WriteTo(c); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range 3 {
		if _, err := fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: lb.test\r\n\r\n", i); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(body) != "203.0.113.7" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	onRelayLoops(t, m, loops)
	// HTTP/1.0 goes back to a goroutine, which reads no PROXY header
	// again and keeps the one it had.
	if _, err := io.WriteString(c, "GET /old HTTP/1.0\r\nHost: lb.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(res.Body); res.StatusCode != http.StatusOK || string(body) != "203.0.113.7" {
		t.Fatalf("HTTP/1.0 after the loops: %d %q", res.StatusCode, body)
	}
	onRelayLoops(t, m, 0)
}

// HTTP/2 streams without a body are sent to the backend from a relay
// loop (portmux_relay_loop_http2_requests counts them while they wait
// for their answers), over TLS as in clear; a stream with a body runs on
// a goroutine, on the same connection; a stream the client resets while
// the loop waits for its answer closes that backend connection and
// counts as the client's leaving.
func TestRelayLoopsCarryHTTP2Streams(t *testing.T) {
	release, stop := make(chan struct{}), make(chan struct{})
	held := make(chan struct{}, 16)
	gone := make(chan string, 16)
	web := requestServer(t, func(c net.Conn, br *bufio.Reader, req *http.Request, _ int) bool {
		body, _ := io.ReadAll(req.Body)
		if req.URL.Path == "/reset" {
			held <- struct{}{}
			_, err := br.ReadByte() // until the connection closes
			gone <- fmt.Sprint(err)
			return false
		}
		if req.URL.Path != "/post" {
			held <- struct{}{}
			select {
			case <-release:
			case <-stop:
				return false
			}
		}
		msg := req.Method + " " + req.URL.Path + " " + string(body)
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		return err == nil
	})
	t.Cleanup(func() { close(stop) }) // before the server's cleanup, which waits for it
	cert := peers.CertPair(t, "loop.test")
	m := startMux(t, snapshotOf(
		listenerOn("pub", httpRoute("web", web.Addr)),
		terminating("tls", tlsOf([]string{"h2"}, cert), httpRoute("web-tls", web.Addr)),
	))
	loops := loopsCarrying()
	onLoops := func(want int) {
		t.Helper()
		peers.Eventually(t, ioTimeout, fmt.Sprintf("%d HTTP/2 request(s) on the relay loops", want), func() error {
			if got := int(m.metricSum("portmux_relay_loop_http2_requests", nil)); got != want {
				return fmt.Errorf("%d", got)
			}
			return nil
		})
	}
	for _, tc := range []struct{ listener, sni string }{{"pub", ""}, {"tls", "loop.test"}} {
		cc := h2Conn(t, m.addr(tc.listener), tc.sni)
		results := make(chan string, 8)
		for _, path := range []string{"/a", "/b", "/c"} {
			go func() {
				res, body, err := h2Do(t, cc, http.MethodGet, "https://loop.test"+path)
				if err != nil {
					results <- err.Error()
					return
				}
				results <- fmt.Sprintf("%d %s", res.StatusCode, body)
			}()
		}
		for range 3 {
			<-held
		}
		onLoops(3 * loops)
		req, _ := http.NewRequest(http.MethodPost, "https://loop.test/post", strings.NewReader("body"))
		res, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if string(body) != "POST /post body" {
			t.Errorf("%s: POST: %q", tc.listener, body)
		}
		for range 3 {
			release <- struct{}{}
		}
		var got []string
		for range 3 {
			got = append(got, <-results)
		}
		slices.Sort(got)
		if want := []string{"200 GET /a ", "200 GET /b ", "200 GET /c "}; !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", tc.listener, got, want)
		}
		onLoops(0)

		ctx, cancel := context.WithCancel(context.Background())
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "https://loop.test/reset", nil)
		failed := make(chan error, 1)
		go func() {
			_, err := cc.RoundTrip(req)
			failed <- err
		}()
		<-held
		onLoops(loops)
		cancel()
		if err := <-failed; err == nil {
			t.Errorf("%s: the reset request succeeded", tc.listener)
		}
		select {
		case err := <-gone:
			if err != io.EOF.Error() {
				t.Errorf("%s: the backend connection of the reset stream ended with %s, want EOF", tc.listener, err)
			}
		case <-time.After(ioTimeout):
			t.Fatalf("%s: the backend connection of the reset stream stayed open", tc.listener)
		}
		onLoops(0)
		peers.Until(t, ioTimeout, "the reset stream counted as the client's", func() bool {
			return m.httpRequestCount(tc.listener, dataplane.RequestClientGone) == 1
		})
		if n := m.httpRequestCount(tc.listener, dataplane.RequestProxied); n != 4 {
			t.Errorf("%s: %d requests counted proxied, want 4", tc.listener, n)
		}
	}
}

// TestRelayLoopsServeHTTP2Connections: an HTTP/2 connection to an
// http-mode route stays on its relay loop (h2c), or moves to one after
// its TLS handshake (h2 by ALPN), which serves it (no goroutine reading
// it and another writing it): while five are open the loops hold five
// connections; their streams are answered, bodiless and with a body; and
// each, once closed, leaves the loops and is counted as an http
// connection, with its bytes on its route.
func TestRelayLoopsServeHTTP2Connections(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	cert := peers.CertPair(t, "loop.test")
	m := startMux(t, snapshotOf(
		listenerOn("pub", httpRoute("web", web.Addr)),
		terminating("tls", tlsOf([]string{"h2"}, cert), httpRoute("web-tls", web.Addr)),
	))
	for _, tc := range []struct{ listener, sni, route string }{{"pub", "", "web"}, {"tls", "loop.test", "web-tls"}} {
		var conns []*http.ClientConn
		for i := range 5 {
			cc := h2Conn(t, m.addr(tc.listener), tc.sni)
			conns = append(conns, cc)
			res, body, err := h2Do(t, cc, http.MethodGet, fmt.Sprintf("https://loop.test/get/%d", i))
			if err != nil || res.StatusCode != http.StatusOK || body != fmt.Sprintf("web GET /get/%d\n", i) {
				t.Fatalf("%s: GET on connection %d: %v %q", tc.listener, i, err, body)
			}
		}
		onRelayLoops(t, m, 5*loopsCarrying())
		req, _ := http.NewRequest(http.MethodPost, "https://loop.test/post", strings.NewReader("a body"))
		res, err := conns[0].RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "web POST /post\n" {
			t.Errorf("%s: POST: %d %q", tc.listener, res.StatusCode, body)
		}
		for _, cc := range conns {
			_ = cc.Close()
		}
		onRelayLoops(t, m, 0)
		peers.Until(t, ioTimeout, "five http connections counted", func() bool {
			return m.outcomeCount(tc.listener, dataplane.OutcomeHTTP) == 5
		})
		if up := m.metricSum("portmux_bytes_total", map[string]string{"route": tc.route, "direction": "up"}); up < 5*24 {
			t.Errorf("%s: %v bytes up on the route, want at least the five prefaces", tc.listener, up)
		}
	}
}

// TestRelayLoopsSkipStreamsResetInTheirBatch: streams a client opens and
// resets in the same read (rapid reset) start no backend request. Their
// calls used to start with the batch, since a reset reaches a call
// through a goroutine (the stream's context), after the batch's start:
// each dialled or took a backend connection, sent the request and then
// closed the connection, which the soak's rapid-reset clients turned
// into a thousand backend connections at once.
func TestRelayLoopsSkipStreamsResetInTheirBatch(t *testing.T) {
	if loopsCarrying() == 0 {
		t.Skip("the relay loops are off (-relay-loops=-1, or not Linux)")
	}
	var requests atomic.Int64
	web := requestServer(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int) bool {
		requests.Add(1)
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	var out bytes.Buffer
	fr := h2Open(t, &out)
	get := h2Block(":method", "GET", ":scheme", "http", ":authority", "www.test", ":path", "/")
	id := uint32(1)
	for ; id < 100; id += 2 { // 50 streams opened and reset
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: get, EndStream: true, EndHeaders: true})
		_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: get, EndStream: true, EndHeaders: true})
	c := dial(t, m.addr("pub"))
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(out.Bytes()); err != nil { // one write, one read of the loop
		t.Fatal(err)
	}
	in := http2.NewFramer(nil, c)
	for {
		f, err := in.ReadFrame()
		if err != nil {
			t.Fatalf("no answer to the stream waited for: %v", err)
		}
		if f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream) {
			break
		}
	}
	if n := requests.Load(); n > 1 {
		t.Errorf("%d requests reached the backend for 50 streams reset in the read that opened them and one kept, want about 1", n)
	}
}
