package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// The backend pool carries bodiless GET, HEAD, OPTIONS and TRACE requests
// itself (backendTransport) and the rest through http.Transport. These
// tests pin what http.Transport did for them and the pool must keep doing.

// TestHTTPModeBackendClosedPooledConnection: a backend that closes each
// connection after one response, without saying so, leaves a dead
// connection in the pool; the next request on it is sent again on a new
// connection, or, if it may not be sent twice, goes on a connection seen
// still open, and the client sees only 200s. Each request is sent once
// the dataplane's end of the last connection has the backend's FIN: one
// that comes later is a race no proxy wins for a POST.
func TestHTTPModeBackendClosedPooledConnection(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{}, 8)
	backend := peers.NewTCPServer(t, func(c net.Conn) {
		defer func() { closed <- struct{}{} }()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s\n", len(req.Method)+1, req.Method)
		peers.CloseWriteAcked(t, c.(*net.TCPConn))
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	for i, req := range []string{
		"GET /1 HTTP/1.1\r\nHost: www.test\r\n\r\n",
		"GET /2 HTTP/1.1\r\nHost: www.test\r\n\r\n",
		"OPTIONS /3 HTTP/1.1\r\nHost: www.test\r\n\r\n",
		"POST /4 HTTP/1.1\r\nHost: www.test\r\nContent-Length: 2\r\n\r\nhi",
		"GET /5 HTTP/1.1\r\nHost: www.test\r\n\r\n",
	} {
		method := strings.Fields(req)[0]
		if status, body := exchange(t, c, br, req); status != 200 || body != method+"\n" {
			t.Errorf("request %d (%s): %d %q, want 200 %q", i, method, status, body, method+"\n")
		}
		select {
		case <-closed:
		case <-time.After(ioTimeout):
			t.Fatalf("request %d: the backend's connection did not close", i)
		}
	}
	_ = c.Close()
	m.waitIdle()
}

// TestHTTPModeInformationalResponses: a 103 Early Hints from the backend
// reaches the client before the final response, as http.Transport and
// the reverse proxy forward it.
func TestHTTPModeInformationalResponses(t *testing.T) {
	t.Parallel()
	backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int) bool {
		_, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		return err == nil
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	for i := range 2 {
		hints := send(t, c, br, "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n")
		if hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") != "</s.css>; rel=preload" {
			t.Fatalf("request %d: first response %d %v, want 103 with the Link", i, hints.StatusCode, hints.Header)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: final response: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("request %d: final response %d %q", i, res.StatusCode, body)
		}
	}
	if n := backend.Accepted(); n != 1 {
		t.Errorf("the backend accepted %d connections for 2 requests, want 1 (kept alive)", n)
	}
	_ = c.Close()
	m.waitIdle()
}

// TestHTTPModeClientLeavesMidResponse: a client that goes away while its
// response streams makes the dataplane close the backend connection (it
// holds the rest of a response nobody reads) and give its slot back.
func TestHTTPModeClientLeavesMidResponse(t *testing.T) {
	t.Parallel()
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first part\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the dataplane closed the connection
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	res := send(t, c, br, "GET /stream HTTP/1.1\r\nHost: www.test\r\n\r\n")
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if res.StatusCode != http.StatusOK || line != "first part\n" {
		t.Fatalf("response %d %q %v", res.StatusCode, line, err)
	}
	_ = c.Close()
	peers.Until(t, ioTimeout, "the backend connection to close", func() bool { return web.OpenConns() == 0 })
	m.waitIdle()
	if n := m.metricSum("portmux_http_backend_connections", map[string]string{"listener": "pub"}); n != 0 {
		t.Errorf("portmux_http_backend_connections %v after the client left mid-response, want 0", n)
	}
}

// TestHTTPModeBodilessResponsesKeepTheConnection: responses without a
// body (HEAD, 204, 304) and with one all leave the backend connection in
// the pool: one connection serves them all.
func TestHTTPModeBodilessResponsesKeepTheConnection(t *testing.T) {
	t.Parallel()
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/none":
			w.WriteHeader(http.StatusNoContent)
		case "/same":
			w.WriteHeader(http.StatusNotModified)
		default:
			_, _ = io.WriteString(w, "web "+r.Method+" "+r.URL.Path+"\n")
		}
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	// path -> status and body
	want := map[string]string{"/a": "200 web GET /a\n", "/none": "204 ", "/same": "304 ", "/b": "200 web GET /b\n"}
	for _, path := range []string{"/a", "/none", "/same", "/b"} {
		status, body := exchange(t, c, br, "GET "+path+" HTTP/1.1\r\nHost: www.test\r\n\r\n")
		if got := fmt.Sprintf("%d %s", status, body); got != want[path] {
			t.Errorf("GET %s: %q, want %q", path, got, want[path])
		}
	}
	res := send(t, c, br, "HEAD /h HTTP/1.1\r\nHost: www.test\r\n\r\n")
	if res.StatusCode != http.StatusOK {
		t.Errorf("HEAD: %d", res.StatusCode)
	}
	if status, body := exchange(t, c, br, "GET /c HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 || body != "web GET /c\n" {
		t.Errorf("GET after HEAD: %d %q", status, body)
	}
	if n := distinct(web.Requests(), func(r peers.Request) string { return r.RemoteAddr }); n != 1 {
		t.Errorf("the backend saw %d connections for 6 requests, want 1", n)
	}
	_ = c.Close()
	m.waitIdle()
}
