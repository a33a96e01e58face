package dataplane_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/h1"
	"github.com/portmux/portmux/test/peers"
)

// HTTP/1.x in http mode is served by fasthttp. These tests pin, on the
// wire, what net/http's server did with pipelined, ambiguous and
// malformed requests, and the retry rule of the backend pool; where
// fasthttp is stricter, the case says so.

// requestServer is a raw HTTP/1.1 backend: serve handles the i-th
// request of each connection (br holds what was read past its head) and
// says whether to read the next one.
func requestServer(t testing.TB, serve func(c net.Conn, br *bufio.Reader, req *http.Request, i int) bool) *peers.TCPServer {
	t.Helper()
	return peers.NewTCPServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil || !serve(c, br, req, i) {
				return
			}
		}
	})
}

// wireBackend is an HTTP/1.1 backend that records each request it reads
// as "METHOD PATH [body]" (and an X-Fold field as the backend saw it),
// and answers 200 with the path.
func wireBackend(t testing.TB) (addr string, seen func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	srv := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ int) bool {
		body, _ := io.ReadAll(req.Body)
		rec := fmt.Sprintf("%s %s [%s]", req.Method, req.URL.Path, body)
		if v, ok := req.Header["X-Fold"]; ok {
			rec += fmt.Sprintf(" X-Fold=%q", v)
		}
		mu.Lock()
		got = append(got, rec)
		mu.Unlock()
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return err == nil
	})
	return srv.Addr, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// responses writes raw on a new connection to addr and reads every
// response until the dataplane closes the connection: "STATUS body"
// each.
func responses(t testing.TB, addr, raw string) []string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []string
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		out = append(out, strings.TrimSpace(fmt.Sprintf("%d %s", res.StatusCode, body)))
	}
}

// TestHTTPModeWire sends each case after a valid first request (the
// first is the sniffer's to refuse) and a last one that closes the
// connection, and checks what the client got and what the backend saw.
func TestHTTPModeWire(t *testing.T) {
	t.Parallel()
	backend, seen := wireBackend(t)
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend, "www.test"))))
	const (
		first = "GET /first HTTP/1.1\r\nHost: www.test\r\n\r\n"
		last  = "GET /end HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n"
	)
	ok := []string{"200 /first"}
	for _, tc := range []struct {
		name, raw       string
		client, backend []string
	}{
		{
			name: "pipelined, one misdirected",
			raw: "GET /1 HTTP/1.1\r\nHost: www.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: www.test\r\n\r\n" +
				"POST /3 HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\n\r\nabc" +
				"GET /4 HTTP/1.1\r\nHost: other.test\r\n\r\nGET /5 HTTP/1.1\r\nHost: www.test\r\n\r\n" + last,
			client:  []string{"200 /1", "200 /2", "200 /3", "421 no route for this request on this connection", "200 /5", "200 /end"},
			backend: []string{"GET /1 []", "GET /2 []", "POST /3 [abc]", "GET /5 []", "GET /end []"},
		},
		{
			// Chunked wins over Content-Length (RFC 9112 §6.3), and the
			// connection is closed after the response, as §6.3 says a
			// server must; net/http served the bytes after the chunked
			// body as a next request, routed (GET /smuggled).
			name:    "Content-Length then Transfer-Encoding",
			raw:     "POST /cl-te HTTP/1.1\r\nHost: www.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: www.test\r\n\r\n" + last,
			client:  []string{"200 /cl-te"},
			backend: []string{"POST /cl-te []"},
		},
		{
			name:    "Transfer-Encoding then Content-Length",
			raw:     "POST /te-cl HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + last,
			client:  []string{"200 /te-cl"},
			backend: []string{"POST /te-cl [abc]"},
		},
		{
			name:   "two Content-Lengths",
			raw:    "POST /two-cl HTTP/1.1\r\nHost: www.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			name:   "negative Content-Length",
			raw:    "POST /neg HTTP/1.1\r\nHost: www.test\r\nContent-Length: -1\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			// net/http: 501 Unsupported transfer encoding.
			name:   "Transfer-Encoding gzip, chunked",
			raw:    "POST /te-gzip HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			// net/http answered 200 and dropped the body.
			name:   "chunked in HTTP/1.0",
			raw:    "POST /te-10 HTTP/1.0\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			// net/http forwarded what it had of the request; the
			// backend sees nothing now.
			// The relay loops read the chunks as they pass and refuse
			// the body themselves; fasthttp's path finds out while the
			// body streams to the backend, and answers 400 too, the
			// client's fault (it answered 502 before).
			name:   "bad chunk size",
			raw:    "POST /bad-chunk HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + last,
			client: onPath([]string{"400 400 Bad Request"}, []string{"400"}),
		},
		{
			name:    "obs-fold",
			raw:     "GET /fold HTTP/1.1\r\nHost: www.test\r\nX-Fold: a\r\n b\r\n\r\n" + last,
			client:  []string{"200 /fold", "200 /end"},
			backend: []string{`GET /fold [] X-Fold=["a b"]`, "GET /end []"},
		},
		{
			// net/http's messages said why ("malformed Host header",
			// "missing required Host header"); the status is the same.
			name:   "obs-fold in Host",
			raw:    "GET /fold-host HTTP/1.1\r\nHost: www.test\r\n other.test\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			name:   "two Hosts",
			raw:    "GET /two-hosts HTTP/1.1\r\nHost: www.test\r\nHost: other.test\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			name:   "no Host",
			raw:    "GET /no-host HTTP/1.1\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			name:   "malformed Host",
			raw:    "GET /bad-host HTTP/1.1\r\nHost: www test\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			name:   "space before the colon",
			raw:    "GET /space HTTP/1.1\r\nHost : www.test\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
		{
			name:    "bare LF",
			raw:     "GET /lf HTTP/1.1\nHost: www.test\n\n" + last,
			client:  []string{"200 /lf", "200 /end"},
			backend: []string{"GET /lf []", "GET /end []"},
		},
		{
			// Routed by the target's host, as net/http's Request.Host.
			name:    "absolute form",
			raw:     "GET http://www.test/abs HTTP/1.1\r\nHost: other.test\r\n\r\n" + last,
			client:  []string{"200 /abs", "200 /end"},
			backend: []string{"GET /abs []", "GET /end []"},
		},
		{
			name:    "escaped path",
			raw:     "GET /a%2Fb%20c HTTP/1.1\r\nHost: www.test\r\n\r\n" + last,
			client:  []string{"200 /a/b c", "200 /end"},
			backend: []string{"GET /a/b c []", "GET /end []"},
		},
		{
			name:   "bad escape",
			raw:    "GET /a%zz HTTP/1.1\r\nHost: www.test\r\n\r\n" + last,
			client: []string{"400 400 Bad Request"},
		},
	} {
		before := len(seen())
		got := responses(t, m.addr("pub"), first+tc.raw)
		if want := append(ok, tc.client...); !slices.Equal(got, want) {
			t.Errorf("%s: client got %q, want %q", tc.name, got, want)
		}
		if got, want := seen()[before:], append([]string{"GET /first []"}, tc.backend...); !slices.Equal(got, want) {
			t.Errorf("%s: backend saw %q, want %q", tc.name, got, want)
		}
	}
	m.waitIdle()
}

// TestHTTPModeRetriesOnlyIdempotentRequests: a backend that reads a
// request on a kept-alive connection and closes it without an answer
// gets a GET again on a new connection (the client sees 200), but not a
// POST, which the client gets 502 for, and which reached it once.
func TestHTTPModeRetriesOnlyIdempotentRequests(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, i int) bool {
		_, _ = io.Copy(io.Discard, req.Body)
		mu.Lock()
		got = append(got, req.Method+" "+req.URL.Path)
		mu.Unlock()
		if i == 1 {
			return false // the second request on a connection: hang up
		}
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return err == nil
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	for _, tc := range []struct {
		req, want string
	}{
		{"GET /1 HTTP/1.1\r\nHost: www.test\r\n\r\n", "200 /1"},
		{"GET /2 HTTP/1.1\r\nHost: www.test\r\n\r\n", "200 /2"}, // retried
		{"POST /3 HTTP/1.1\r\nHost: www.test\r\nContent-Length: 2\r\n\r\nhi", "502 "},
	} {
		status, body := exchange(t, c, br, tc.req)
		if s := fmt.Sprintf("%d %s", status, body); s != tc.want {
			t.Errorf("%s: %q, want %q", requestLine(tc.req), s, tc.want)
		}
	}
	_ = c.Close()
	m.waitIdle()
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"GET /1", "GET /2", "GET /2", "POST /3"}; !slices.Equal(got, want) {
		t.Errorf("backend saw %q, want %q", got, want)
	}
}

// TestHTTPModeRefusedUpgrade: a backend that refuses a WebSocket
// handshake with 403 has its answer passed on, body and trailers
// included, and the client connection serves the next request (its
// backend connection is not reused: it was opened for the upgrade).
func TestHTTPModeRefusedUpgrade(t *testing.T) {
	t.Parallel()
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			w.Header().Set("Trailer", "X-Why")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, "no websockets here\n")
			w.(http.Flusher).Flush() // chunked
			w.Header().Set("X-Why", "policy")
			return
		}
		_, _ = io.WriteString(w, "plain "+r.URL.Path+"\n")
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	ws := "GET /ws HTTP/1.1\r\nHost: www.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	res := send(t, c, br, ws)
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	body, err := io.ReadAll(res.Body)
	_ = c.SetReadDeadline(time.Time{})
	if res.StatusCode != http.StatusForbidden || string(body) != "no websockets here\n" || err != nil {
		t.Errorf("refused handshake: %d %q %v", res.StatusCode, body, err)
	}
	if got := res.Trailer.Get("X-Why"); got != "policy" {
		t.Errorf("refused handshake: trailer X-Why %q, want the backend's %q", got, "policy")
	}
	if status, body := exchange(t, c, br, "GET /after HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 || body != "plain /after\n" {
		t.Errorf("request after the refused handshake: %d %q", status, body)
	}
	_ = c.Close()
	m.waitIdle()
	peers.Until(t, ioTimeout, "the upgrade's backend connection to close", func() bool { return web.OpenConns() <= 1 })
}

// TestHTTPModeHTTP10ClientGetsNoChunks: a response of unknown length
// (chunked from the backend) reaches an HTTP/1.0 client, which cannot
// read chunks, as the bytes up to the end of the connection; an HTTP/1.1
// client on the same route gets it chunked and keeps its connection.
func TestHTTPModeHTTP10ClientGetsNoChunks(t *testing.T) {
	t.Parallel()
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "part1\n")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2\n")
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	for _, tc := range []struct {
		proto   string
		chunked bool
	}{{"HTTP/1.0", false}, {"HTTP/1.1", true}} {
		c := dial(t, m.addr("pub"))
		br := bufio.NewReader(c)
		res := send(t, c, br, "GET /first HTTP/1.1\r\nHost: www.test\r\n\r\n")
		_, _ = io.Copy(io.Discard, res.Body)
		res = send(t, c, br, "GET /stream "+tc.proto+"\r\nHost: www.test\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		body, err := io.ReadAll(res.Body)
		if err != nil || string(body) != "part1\npart2\n" {
			t.Errorf("%s: body %q, %v", tc.proto, body, err)
		}
		if chunked := slices.Contains(res.TransferEncoding, "chunked"); chunked != tc.chunked {
			t.Errorf("%s: chunked %v, want %v", tc.proto, chunked, tc.chunked)
		}
		if got := res.Close; got == tc.chunked {
			t.Errorf("%s: connection closed after the response: %v, want %v", tc.proto, got, !tc.chunked)
		}
		_ = c.Close()
	}
	m.waitIdle()
}

// TestHTTPModeClientLeavesBeforeTheResponse: a client that goes away
// while its backend holds the response (a long poll) makes the dataplane
// close that backend connection and give its slot back, and end the
// client's connection, without waiting for the backend to answer.
func TestHTTPModeClientLeavesBeforeTheResponse(t *testing.T) {
	t.Parallel()
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/poll" {
			<-r.Context().Done() // the dataplane closed the connection
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	if status, _ := exchange(t, c, bufio.NewReader(c), "GET /first HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 {
		t.Fatalf("first request: %d", status)
	}
	if _, err := io.WriteString(c, "GET /poll HTTP/1.1\r\nHost: www.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, ioTimeout, "the backend to hold the request", func() bool {
		reqs := web.Requests()
		return len(reqs) == 2 && reqs[1].Path == "/poll"
	})
	_ = c.Close()
	peers.Until(t, ioTimeout, "the backend connection to close", func() bool { return web.OpenConns() == 0 })
	m.waitIdle()
	if n := m.outcomeCount("pub", dataplane.OutcomeHTTP); n != 1 {
		t.Errorf("%d connections reported, want the client's", n)
	}
	if n := m.metricSum("portmux_http_backend_connections", map[string]string{"listener": "pub"}); n != 0 {
		t.Errorf("portmux_http_backend_connections %v after the client left, want 0", n)
	}
}

// TestHTTPModeBackendStatusUnder100: a backend's status under 100 is
// a bad gateway on every path: 099, and 000, which fasthttp's parser
// reads as "not set" and would send on as 200.
func TestHTTPModeBackendStatusUnder100(t *testing.T) {
	t.Parallel()
	for _, status := range []string{"000", "099", "0"} {
		backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ int) bool {
			_, _ = io.Copy(io.Discard, req.Body)
			_, err := io.WriteString(c, "HTTP/1.1 "+status+" Odd\r\nContent-Length: 3\r\n\r\nok\n")
			return err == nil
		})
		m := startMux(t, snapshotOf(listenerOn("plain", httpRoute("web", backend.Addr))))
		for _, v := range []string{"HTTP/1.1", "HTTP/1.0"} {
			got := responses(t, m.addr("plain"), "GET / "+v+"\r\nHost: a\r\nConnection: close\r\n\r\n")
			if len(got) != 1 || !strings.HasPrefix(got[0], "502") {
				t.Errorf("status %s, %s: the client got %q, want a 502", status, v, got)
			}
		}
		cc := h2Conn(t, m.addr("plain"), "")
		if code, body, err := h2Get(t, cc, "a", "http://a/"); code != http.StatusBadGateway {
			t.Errorf("status %s, h2c: %d %q %v, want a 502", status, code, body, err)
		}
		_ = cc.Close()
		m.waitIdle()
	}
}

// TestHTTPModeBackendTrailerSectionIsBounded: a backend whose trailer
// section never ends makes the proxy read and hold no more of it than
// the relay loops' limit (h1.MaxTrailer): the client gets the body, cut
// short or whole without trailers, at once.
func TestHTTPModeBackendTrailerSectionIsBounded(t *testing.T) {
	t.Parallel()
	const endless = 256 << 20 // as far as the backend goes
	written := make(chan int, 8)
	backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int) bool {
		n, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Big\r\n\r\n"+
			"3\r\nok\n\r\n0\r\nX-Big: ")
		line := []byte(strings.Repeat("a", 64<<10))
		for err == nil && n < endless {
			var k int
			k, err = c.Write(line)
			n += k
		}
		written <- n
		return false
	})
	cert := peers.CertPair(t, "trailer.test")
	m := startMux(t, snapshotOf(
		listenerOn("plain", httpRoute("web", backend.Addr)),
		terminating("tls", tlsOf([]string{"h2", "http/1.1"}, cert), httpRoute("web", backend.Addr)),
	))
	// What the backend could write: the proxy's limit, and what the
	// sockets' buffers take after it stopped reading.
	const buffered = 32 << 20
	drained := func(name string) {
		t.Helper()
		select {
		case n := <-written:
			if n > buffered {
				t.Errorf("%s: the proxy read %d bytes of the trailer section", name, n)
			}
		case <-time.After(2 * ioTimeout):
			t.Errorf("%s: the backend is still writing its trailers", name)
		}
	}
	check := func(name string, res *http.Response, err error) {
		t.Helper()
		if err == nil {
			var body []byte
			body, err = io.ReadAll(res.Body)
			_ = res.Body.Close()
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
				t.Errorf("%s: the client waited for the end of the trailers: %v", name, err)
			case err == nil && string(body) != "ok\n":
				t.Errorf("%s: body %q", name, body)
			case len(res.Trailer.Get("X-Big")) > h1.MaxTrailer:
				t.Errorf("%s: the client got a trailer of %d bytes", name, len(res.Trailer.Get("X-Big")))
			}
		} else {
			t.Errorf("%s: %v", name, err)
		}
		drained(name)
	}
	for _, tc := range []struct{ name, listener, proto string }{
		{"HTTP/1.1", "plain", "http/1.1"},
		{"HTTP/1.1 inside TLS", "tls", "http/1.1"},
		{"h2c", "plain", "h2c"},
		{"h2", "tls", "h2"},
	} {
		tr, scheme := transportTo(m.addr(tc.listener), "trailer.test", tc.proto, tc.listener == "tls")
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://trailer.test/", nil)
		res, err := (&http.Client{Transport: tr}).Do(req)
		check(tc.name, res, err)
		cancel()
		tr.CloseIdleConnections()
	}
	// HTTP/1.0 has no trailers: the body ends with the connection.
	if got := responses(t, m.addr("plain"), "GET / HTTP/1.0\r\nHost: trailer.test\r\n\r\n"); len(got) != 1 || got[0] != "200 ok" {
		t.Errorf("HTTP/1.0: the client got %q, want the body", got)
	}
	drained("HTTP/1.0")
	m.waitIdle()
}

// TestHTTPModeBrokenRequestBodyIsTheClients: a client whose chunked
// body is malformed, at once or after 64 KiB went to the backend, gets
// 400 on every HTTP/1.1 path, counted as a bad request; a client that
// leaves before the response, and an HTTP/2 stream whose body ends short
// of its content-length (reset), count as requests whose client is
// gone. None counts as a failing backend (portmux_dial_errors_total),
// which a client could otherwise raise at will.
func TestHTTPModeBrokenRequestBodyIsTheClients(t *testing.T) {
	t.Parallel()
	backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ int) bool {
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return false
		}
		if req.URL.Path == "/slow" {
			time.Sleep(time.Second) // the client leaves meanwhile
		}
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		return err == nil
	})
	cert := peers.CertPair(t, "body.test")
	m := startMux(t, snapshotOf(
		listenerOn("plain", httpRoute("web", backend.Addr)),
		terminating("tls", tlsOf([]string{"http/1.1", "h2"}, cert), httpRoute("web", backend.Addr)),
	))
	// open connects to listener l, over TLS to "tls".
	open := func(l string) net.Conn {
		if l == "tls" {
			return tlsDial(t, m.addr(l), "body.test", "http/1.1")
		}
		return dial(t, m.addr(l))
	}
	head := "POST /up HTTP/1.1\r\nHost: body.test\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, body := range []string{"zz\r\n", "10000\r\n" + strings.Repeat("a", 0x10000) + "\r\nzz\r\n"} {
		for _, l := range []string{"plain", "tls"} {
			c := open(l)
			_ = c.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := io.WriteString(c, head+body); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || res.StatusCode != http.StatusBadRequest {
				t.Errorf("%s, a body of %d bytes: %v %v, want 400", l, len(body), res, err)
			}
			_ = c.Close()
		}
	}
	// A client that leaves while the backend thinks.
	for _, l := range []string{"plain", "tls"} {
		c := open(l)
		if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: body.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		_ = c.Close()
	}
	// HTTP/2: content-length 10, and 5 bytes before the end of the stream.
	c := dial(t, m.addr("plain"))
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	fr := h2Open(t, c)
	post := h2Block(":method", "POST", ":scheme", "http", ":authority", "body.test", ":path", "/up", "content-length", "10")
	if err := errors.Join(
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post, EndHeaders: true}),
		fr.WriteData(1, true, []byte("short"))); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("HTTP/2: %v before the stream's reset", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
			break
		}
	}
	_ = c.Close()
	m.waitIdle()
	peers.Until(t, ioTimeout, "the HTTP/2 stream to be counted", func() bool {
		return m.httpRequestCount("plain", dataplane.RequestBadRequest) == 2 &&
			m.httpRequestCount("plain", dataplane.RequestClientGone) == 2
	})
	if n := m.httpRequestCount("tls", dataplane.RequestBadRequest); n != 2 {
		t.Errorf("%d bad requests counted inside TLS, want 2", n)
	}
	if n := m.httpRequestCount("tls", dataplane.RequestClientGone); n != 1 {
		t.Errorf("%d requests whose client left counted inside TLS, want 1", n)
	}
	if n := m.metricSum("portmux_dial_errors_total", nil); n != 0 {
		t.Errorf("%v dial errors counted against the backend, want none", n)
	}
}
