//go:build linux

package relayloop_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/h1"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/test/peers"
)

// exchanger is an Exchanger as a dataplane would write one, much
// simplified: heads parsed with fasthttp, every request forwarded to
// target with a field added, every response passed on with one added,
// and a few paths with a behaviour of their own:
//
//	/answer   answered by the exchanger itself (404, kept alive)
//	/handoff  the connection handed off (handOff receives it)
//	/close    forwarded, then the client's connection closed
type exchanger struct {
	target  *relayloop.Target
	opt     relayloop.Exchange
	handOff func(fd int, read []byte)
	// probe, if set, has Decide read up to that many first bytes before
	// it answers Exchange, as a sniffing Session does.
	probe int

	heads  *h1.Heads
	req    fasthttp.RequestHeader
	resp   fasthttp.ResponseHeader
	toHead bool
	out    []byte

	mu     sync.Mutex
	ended  []relayloop.ExchangeResult
	failed []error
	done   chan relayloop.Result
	// onDone, if set, hears of the end instead of done.
	onDone func(relayloop.Result)
	// beforeRequest, if set, runs on the loop as each request's head is
	// decided, with its method.
	beforeRequest func(method string)
}

func newExchanger(target *relayloop.Target) *exchanger {
	return &exchanger{target: target, heads: h1.NewHeads(64 << 10), done: make(chan relayloop.Result, 1)}
}

func (e *exchanger) Decide(b []byte, end relayloop.End) relayloop.Verdict {
	if e.probe > 0 && len(b) == 0 && end <= relayloop.Reading {
		return relayloop.Verdict{Wait: true, Limit: e.probe, Deadline: time.Now().Add(5 * time.Second)}
	}
	return relayloop.Verdict{Exchange: &e.opt}
}

func (e *exchanger) HandOff(fd int, read []byte) { e.handOff(fd, read) }
func (e *exchanger) Done(r relayloop.Result) {
	if e.onDone != nil {
		e.onDone(r)
		return
	}
	e.done <- r
}

func (e *exchanger) Request(head []byte) relayloop.Step {
	if err := e.heads.Request(head, &e.req); err != nil {
		return relayloop.Step{Head: []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), Close: true}
	}
	kind, n := h1.RequestBody(&e.req)
	switch string(e.req.RequestURI()) {
	case "/answer":
		return relayloop.Step{Head: []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"), Body: kind, Length: n}
	case "/handoff":
		return relayloop.Step{HandOff: true}
	}
	if e.beforeRequest != nil {
		e.beforeRequest(string(e.req.Method()))
	}
	e.toHead = e.req.IsHead()
	e.req.Set("X-Loop", "yes")
	e.out = e.req.AppendBytes(e.out[:0])
	method := string(e.req.Method())
	retry := method == "GET" || method == "HEAD"
	return relayloop.Step{Head: e.out, Body: kind, Length: n, Target: e.target, Retry: retry,
		Close: string(e.req.RequestURI()) == "/close"}
}

func (e *exchanger) Response(head []byte) relayloop.Step {
	if err := e.heads.Response(head, &e.resp); err != nil {
		return relayloop.Step{}
	}
	kind, n := h1.ResponseBody(&e.resp, e.toHead)
	interim := e.resp.StatusCode() < 200
	closeBackend := e.resp.ConnectionClose()
	e.resp.Set("X-Loop", "back")
	e.out = e.resp.AppendBytes(e.out[:0])
	return relayloop.Step{Head: e.out, Body: kind, Length: n, Interim: interim, Close: closeBackend}
}

func (e *exchanger) Failed(err error) []byte {
	e.mu.Lock()
	e.failed = append(e.failed, err)
	e.mu.Unlock()
	status := "502 Bad Gateway"
	switch {
	case errors.Is(err, relayloop.ErrHeadTooLarge):
		status = "431 Request Header Fields Too Large"
	case errors.Is(err, relayloop.ErrHeadTimeout):
		status = "408 Request Timeout"
	case errors.Is(err, relayloop.ErrNoSlot):
		status = "503 Service Unavailable"
	case errors.Is(err, relayloop.ErrResponseTimeout):
		status = "504 Gateway Timeout"
	case errors.Is(err, h1.ErrMalformed):
		status = "400 Bad Request"
	}
	return []byte("HTTP/1.1 " + status + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

func (e *exchanger) Ended(x relayloop.ExchangeResult) {
	e.mu.Lock()
	e.ended = append(e.ended, x)
	e.mu.Unlock()
}

// wait returns what Done reported, failing t if it does not come.
func (e *exchanger) wait(t *testing.T) relayloop.Result {
	t.Helper()
	select {
	case r := <-e.done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no Done")
		return relayloop.Result{}
	}
}

func (e *exchanger) results() ([]relayloop.ExchangeResult, []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]relayloop.ExchangeResult(nil), e.ended...), append([]error(nil), e.failed...)
}

// serveExchanges starts a Set whose every connection is carried by a new
// exchanger from mk.
func serveExchanges(t *testing.T, mk func() *exchanger) (string, *relayloop.Set, chan *exchanger) {
	t.Helper()
	made := make(chan *exchanger, 16)
	addr, set := serve(t, relayloop.Options{Loops: 1}, handler(func(*relayloop.Conn) relayloop.Session {
		e := mk()
		made <- e
		return e
	}))
	return addr, set, made
}

// httpBackend is a net/http server that answers with what it got, and
// counts the connections it accepted.
func httpBackend(t testing.TB, h http.HandlerFunc) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).AddrPort(), &conns
}

// echoHandler answers with the method, path, the X-Loop field it got and
// the body; a path ending in /chunked streams its answer in chunks.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	msg := fmt.Sprintf("%s %s loop=%s body=%s", r.Method, r.URL.Path, r.Header.Get("X-Loop"), body)
	if strings.HasSuffix(r.URL.Path, "/chunked") {
		for _, part := range strings.SplitAfter(msg, " ") {
			_, _ = io.WriteString(w, part)
			w.(http.Flusher).Flush()
		}
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(msg)))
	_, _ = io.WriteString(w, msg)
}

// roundTrip writes raw to c and reads one response.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, br, strings.HasPrefix(raw, "HEAD"))
}

func readResponse(t *testing.T, br *bufio.Reader, head bool) (*http.Response, string) {
	t.Helper()
	method := "GET"
	if head {
		method = "HEAD"
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestExchangeKeepAlive(t *testing.T) {
	be, conns := httpBackend(t, echoHandler)
	addr, set, _ := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	tests := []struct{ raw, want string }{
		{"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", "GET /a loop=yes body="},
		{"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "POST /b loop=yes body=hello"},
		{"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "POST /c loop=yes body=abcde"},
		{"GET /d/chunked HTTP/1.1\r\nHost: x\r\n\r\n", "GET /d/chunked loop=yes body="},
		{"HEAD /e HTTP/1.1\r\nHost: x\r\n\r\n", ""},
	}
	for _, tt := range tests {
		resp, body := roundTrip(t, c, br, tt.raw)
		if resp.StatusCode != http.StatusOK || body != tt.want || resp.Header.Get("X-Loop") != "back" {
			t.Errorf("%q: %d %q (X-Loop %q), want 200 %q", tt.raw, resp.StatusCode, body, resp.Header.Get("X-Loop"), tt.want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for 5 requests on one client connection, want 1", n)
	}
	// A second client reuses the pooled connection.
	c2 := dial(t, addr)
	if _, body := roundTrip(t, c2, bufio.NewReader(c2), "GET /f HTTP/1.1\r\nHost: x\r\n\r\n"); body != "GET /f loop=yes body=" {
		t.Errorf("second client: %q", body)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for two clients one after the other, want 1", n)
	}
	_ = c.Close()
	_ = c2.Close()
	waitStats(t, set, relayloop.Stats{Backends: 1, Idle: 1})
}

// waitStats waits for the loops to hold want.
func waitStats(t *testing.T, set *relayloop.Set, want relayloop.Stats) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for set.Stats() != want {
		if time.Now().After(deadline) {
			t.Fatalf("loops hold %+v, want %+v", set.Stats(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExchangePipelined(t *testing.T) {
	be, _ := httpBackend(t, echoHandler)
	addr, _, _ := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}})
	})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	var raw strings.Builder
	for i := range 20 {
		fmt.Fprintf(&raw, "POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d", i, i%10)
	}
	if _, err := io.WriteString(c, raw.String()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		_, body := readResponse(t, br, false)
		if want := fmt.Sprintf("POST /%d loop=yes body=%d", i, i%10); body != want {
			t.Fatalf("response %d: %q, want %q", i, body, want)
		}
	}
}

func TestExchangeAnswerThenHandOff(t *testing.T) {
	be, conns := httpBackend(t, echoHandler)
	handed := make(chan string, 1)
	addr, _, _ := serveExchanges(t, func() *exchanger {
		e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}})
		e.handOff = func(fd int, read []byte) {
			handed <- string(read)
			_ = unix.Close(fd)
		}
		return e
	})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	resp, body := roundTrip(t, c, br, "GET /answer HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusNotFound || body != "nope" {
		t.Fatalf("answered here: %d %q", resp.StatusCode, body)
	}
	const rest = "GET /handoff HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\n\r\n"
	if _, err := io.WriteString(c, rest); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-handed:
		if !strings.HasPrefix(rest, got) || !strings.HasPrefix(got, "GET /handoff ") {
			t.Errorf("handed off with %q, want a prefix of %q from the request on", got, rest)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not handed off")
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("backend accepted %d connections for requests answered or handed off", n)
	}
}

func TestExchangeFailures(t *testing.T) {
	tests := []struct {
		name   string
		target func(t *testing.T) *relayloop.Target
		opt    relayloop.Exchange
		raw    string
		status int
		err    error
	}{
		{
			name: "no backend",
			target: func(t *testing.T) *relayloop.Target {
				return &relayloop.Target{Endpoints: []netip.AddrPort{closedPort(t)}}
			},
			raw: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", status: 502,
		},
		{
			name: "no slot",
			target: func(t *testing.T) *relayloop.Target {
				be, _ := httpBackend(t, echoHandler)
				return &relayloop.Target{Endpoints: []netip.AddrPort{be}, Slot: func(relayloop.Evictor) (func(), bool) { return nil, false }}
			},
			raw: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", status: 503, err: relayloop.ErrNoSlot,
		},
		{
			name:   "head too large",
			target: func(t *testing.T) *relayloop.Target { return &relayloop.Target{} },
			opt:    relayloop.Exchange{MaxHead: 1024},
			raw:    "GET / HTTP/1.1\r\nHost: x\r\nCookie: " + strings.Repeat("c", 2000) + "\r\n\r\n", status: 431, err: relayloop.ErrHeadTooLarge,
		},
		{
			name:   "head too slow",
			target: func(t *testing.T) *relayloop.Target { return &relayloop.Target{} },
			opt:    relayloop.Exchange{HeadTimeout: 100 * time.Millisecond},
			raw:    "GET / HTTP/1.1\r\nHost: x\r\n", status: 408, err: relayloop.ErrHeadTimeout,
		},
		{
			name: "bad chunked body",
			target: func(t *testing.T) *relayloop.Target {
				be, _ := httpBackend(t, echoHandler)
				return &relayloop.Target{Endpoints: []netip.AddrPort{be}}
			},
			raw: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", status: 400, err: h1.ErrMalformed,
		},
		{
			name: "response too slow",
			target: func(t *testing.T) *relayloop.Target {
				be, _ := httpBackend(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
				return &relayloop.Target{Endpoints: []netip.AddrPort{be}}
			},
			opt: relayloop.Exchange{ResponseTimeout: 100 * time.Millisecond},
			raw: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", status: 504, err: relayloop.ErrResponseTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target(t)
			addr, set, made := serveExchanges(t, func() *exchanger {
				e := newExchanger(target)
				e.opt = tt.opt
				return e
			})
			c := dial(t, addr)
			resp, _ := roundTrip(t, c, bufio.NewReader(c), tt.raw)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if n, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("connection still open after the failure: read %d, %v", n, err)
			}
			_ = c.Close()
			e := <-made
			r := <-e.done
			_, failed := e.results()
			if len(failed) != 1 || (tt.err != nil && !errors.Is(failed[0], tt.err)) {
				t.Errorf("Failed asked about %v, want one error wrapping %v", failed, tt.err)
			}
			if r.Err == nil {
				t.Errorf("connection ended without an error")
			}
			waitStats(t, set, relayloop.Stats{})
		})
	}
}

// TestExchangeRetry: a pooled backend connection that the backend closes
// when the next request comes (as one whose keep-alive ran out does) is
// replaced by a new one for a GET, which the client never notices; a
// POST gets a 502 instead, as it may not be sent twice.
func TestExchangeRetry(t *testing.T) {
	srv := peers.NewTCPServer(t, func(c net.Conn) { // answers one request, then closes at the next
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_, _ = br.ReadByte()
	})
	be := netip.MustParseAddrPort(srv.Addr)
	addr, _, made := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	for i := range 3 {
		if resp, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := srv.Accepted(); n != 3 {
		t.Errorf("backend accepted %d connections for 3 GETs, want 3", n)
	}
	resp, _ := roundTrip(t, c, br, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("POST on a connection the backend closes: %d, want 502", resp.StatusCode)
	}
	_ = c.Close()
	e := <-made
	<-e.done
	ended, _ := e.results()
	var reused int
	for _, x := range ended[:3] {
		if x.Err != nil {
			t.Errorf("GET ended with %v", x.Err)
		}
		if x.Reused {
			reused++
		}
	}
	if reused != 0 {
		t.Errorf("%d GETs ended on a reused connection; each was retried on a new one", reused)
	}
	if last := ended[len(ended)-1]; !errors.Is(last.Err, relayloop.ErrBackendClosed) || !last.Reused {
		t.Errorf("POST ended with %+v, want ErrBackendClosed on a reused connection", last)
	}
}

// TestExchangePeeksBeforeUnsafeRequest: a POST is never sent twice, so
// a pooled connection is looked at before it carries one. The backend
// closes its connection after the first response, and the loop learns
// of it only as the POST is decided (its event still unread): the POST
// goes on a new connection and gets its 200, where sending it on the
// closed one would have cost the client a 502.
func TestExchangePeeksBeforeUnsafeRequest(t *testing.T) {
	closeFirst, firstClosed, testEnded := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	srv := peers.NewTCPServer(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if !first.CompareAndSwap(false, true) {
			return
		}
		select {
		case <-closeFirst:
		case <-testEnded: // the test failed before its POST
			return
		}
		peers.CloseWriteAcked(t, c.(*net.TCPConn))
		close(firstClosed)
	})
	t.Cleanup(func() { close(testEnded) }) // before the server's: it waits for its handlers
	be := netip.MustParseAddrPort(srv.Addr)
	addr, _, made := serveExchanges(t, func() *exchanger {
		e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
		e.beforeRequest = func(method string) {
			if method == "POST" {
				close(closeFirst)
				<-firstClosed
			}
		}
		return e
	})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	if resp, body := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	if resp, body := roundTrip(t, c, br, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("POST after the pooled connection closed: %d %q, want 200 on a new connection", resp.StatusCode, body)
	}
	_ = c.Close()
	e := <-made
	<-e.done
	if n := srv.Accepted(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
	ended, _ := e.results()
	if len(ended) != 2 || ended[1].Reused || ended[1].Err != nil {
		t.Errorf("POST ended with %+v, want a new connection and no error", ended)
	}
}

// TestExchangeResponseKinds: bodies that end with the backend's close,
// responses without a body, and interim responses.
func TestExchangeResponseKinds(t *testing.T) {
	srv := peers.NewTCPServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/close":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil close")
				return
			case "/204":
				_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			case "/103":
				_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
			}
		}
	})
	be := netip.MustParseAddrPort(srv.Addr)
	addr, set, _ := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	if resp, body := roundTrip(t, c, br, "GET /204 HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusNoContent || body != "" {
		t.Errorf("204: %d %q", resp.StatusCode, body)
	}
	// The interim response reaches the client before the final one.
	if _, err := io.WriteString(c, "GET /103 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 103") {
		t.Errorf("first line %q, want the 103", line)
	}
	for line != "\r\n" {
		line, _ = br.ReadString('\n')
	}
	if resp, body := readResponse(t, br, false); resp.StatusCode != http.StatusOK || body != "final" {
		t.Errorf("after the 103: %d %q", resp.StatusCode, body)
	}
	if resp, body := roundTrip(t, c, br, "GET /close HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK || body != "until close" {
		t.Errorf("until close: %d %q", resp.StatusCode, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("client connection open after a body that ended with the backend's close: %v", err)
	}
	_ = c.Close()
	waitStats(t, set, relayloop.Stats{})
}

// TestExchangeClientHangsUp: a client that leaves while its response is
// awaited takes the backend connection with it, rather than leaving the
// backend working for nobody.
func TestExchangeClientHangsUp(t *testing.T) {
	cancelled := make(chan struct{})
	be, _ := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(cancelled)
	})
	addr, set, made := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	})
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	e := <-made
	time.Sleep(50 * time.Millisecond) // the request reaches the backend
	_ = c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("backend's request not cancelled after the client left")
	}
	r := <-e.done
	if r.Err == nil {
		t.Error("connection of a client that left ended without an error")
	}
	waitStats(t, set, relayloop.Stats{})
}

// TestExchangeSlowReader: a large response to a client that reads slowly
// arrives whole, and the backend connection is pooled after it.
func TestExchangeSlowReader(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB: more than the buffers between
	be, conns := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		_, _ = w.Write(payload)
	})
	var released atomic.Int64
	addr, set, _ := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p",
			Slot: func(relayloop.Evictor) (func(), bool) { return func() { released.Add(1) }, true }})
	})
	c := dial(t, addr)
	_ = c.SetReadBuffer(64 << 10) // a window under the MSS would crawl
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(&slowReader{r: c}, 1024)
	for i := range 2 {
		_, body := readResponse(t, br, false)
		if sha256.Sum256([]byte(body)) != sha256.Sum256(payload) {
			t.Fatalf("response %d: %d bytes, not the payload", i, len(body))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
	_ = c.Close()
	waitStats(t, set, relayloop.Stats{Backends: 1, Idle: 1})
	if n := released.Load(); n != 0 {
		t.Errorf("%d slots released while the connection is pooled", n)
	}
	_ = set.Close()
	if n := released.Load(); n != 1 {
		t.Errorf("%d slots released after the loops closed, want 1", n)
	}
}

// TestExchangeTakesTurns: an exchange that moved its loop's budget stops
// and the loop comes back to it in a later round, though no socket event
// says there is more. With a budget of 4 KiB, thousands of turns: an
// 8 MiB upload answered by a 32 MiB download arrives whole both ways,
// twice on one connection, and the backend connection is pooled after.
func TestExchangeTakesTurns(t *testing.T) {
	down := bytes.Repeat([]byte("0123456789abcdef"), 1<<21)
	up := bytes.Repeat([]byte("fedcba9876543210"), 1<<19)
	be, conns := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Up-Sum", fmt.Sprintf("%x", sha256.Sum256(b)))
		w.Header().Set("Content-Length", fmt.Sprint(len(down)))
		_, _ = w.Write(down)
	})
	made := make(chan *exchanger, 1)
	opt := relayloop.WithMoveBudget(relayloop.Options{Loops: 1}, 4<<10)
	addr, set := serve(t, opt, handler(func(*relayloop.Conn) relayloop.Session {
		e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
		made <- e
		return e
	}))
	c := dial(t, addr)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		go func() {
			_, _ = fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(up))
			_, _ = c.Write(up)
		}()
		resp, body := readResponse(t, br, false)
		if body != string(down) {
			t.Fatalf("response %d: %d bytes, not the %d sent", i, len(body), len(down))
		}
		if got, want := resp.Header.Get("X-Up-Sum"), fmt.Sprintf("%x", sha256.Sum256(up)); got != want {
			t.Fatalf("response %d: the backend got other bytes than the client sent", i)
		}
	}
	_ = c.Close()
	if r := (<-made).wait(t); r.Err != nil {
		t.Fatalf("result %+v", r)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
	waitStats(t, set, relayloop.Stats{Backends: 1, Idle: 1})
}

// slowReader reads at most 8 KiB a call, pausing between calls at first.
type slowReader struct {
	r     io.Reader
	calls int
}

func (s *slowReader) Read(p []byte) (int, error) {
	s.calls++
	if s.calls < 50 {
		time.Sleep(2 * time.Millisecond)
	}
	return s.r.Read(p[:min(len(p), 8<<10)])
}

// TestExchangeIdle: a kept-alive client with no request for IdleTimeout
// is closed, with Result.Idle.
func TestExchangeIdle(t *testing.T) {
	be, _ := httpBackend(t, echoHandler)
	addr, set, made := serveExchanges(t, func() *exchanger {
		e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}})
		e.opt.IdleTimeout = 100 * time.Millisecond
		return e
	})
	c := dial(t, addr)
	if _, body := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); body != "GET / loop=yes body=" {
		t.Fatalf("body %q", body)
	}
	e := <-made
	r := <-e.done
	if !r.Idle || r.Err != nil {
		t.Errorf("idle client ended with %+v, want Idle", r)
	}
	if r.Down == 0 || r.Up == 0 {
		t.Errorf("Result counts %d bytes up, %d down, want both", r.Up, r.Down)
	}
	waitStats(t, set, relayloop.Stats{})
}

// TestExchangePoolSharedByLoops: a client of one loop reuses the
// backend connection a client of the other loop left idle: it moves to
// the loop that needs it.
func TestExchangePoolSharedByLoops(t *testing.T) {
	be, conns := httpBackend(t, echoHandler)
	var accepted atomic.Int64
	addr, set := serve(t, relayloop.Options{Loops: 2}, handler(func(*relayloop.Conn) relayloop.Session {
		if accepted.Add(1) == 1 {
			// Keeps the first client's loop busy, so that the other
			// loop accepts the second client (a Handler must not block;
			// this one places connections for the test).
			time.Sleep(300 * time.Millisecond)
		}
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	}))
	first := dial(t, addr)
	time.Sleep(100 * time.Millisecond)
	second := dial(t, addr)
	for i, c := range []net.Conn{first, second, first, second} {
		if _, body := roundTrip(t, c, bufio.NewReader(c), fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i)); body != fmt.Sprintf("GET /%d loop=yes body=", i) {
			t.Fatalf("request %d: %q", i, body)
		}
		// The response reaches the client just before its loop pools
		// the connection: the next request waits for that.
		waitStats(t, set, relayloop.Stats{Conns: 2, Backends: 1, Idle: 1})
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections for clients of two loops taking turns, want 1", n)
	}
	_ = first.Close()
	_ = second.Close()
	waitStats(t, set, relayloop.Stats{Backends: 1, Idle: 1})
}

// TestExchangeSlotEviction: at the cap, a request whose pool has no idle
// connection gets the slot of another pool's idle one, which its Slot
// has the loops close (Evictor).
func TestExchangeSlotEviction(t *testing.T) {
	be, conns := httpBackend(t, echoHandler)
	var held atomic.Int64
	slot := func(loops relayloop.Evictor) (func(), bool) {
		for held.Add(1) > 1 {
			held.Add(-1)
			if !loops.EvictIdle(nil) {
				return nil, false
			}
		}
		return func() { held.Add(-1) }, true
	}
	var n atomic.Int64
	addr, set, _ := serveExchanges(t, func() *exchanger {
		key := fmt.Sprint("pool-", n.Add(1)) // every client a pool of its own
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: key, Slot: slot})
	})
	for i := range 3 {
		c := dial(t, addr)
		if resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK {
			t.Fatalf("client %d: %d, want 200 through an evicted idle connection's slot", i, resp.StatusCode)
		}
		_ = c.Close()
	}
	if got := conns.Load(); got != 3 {
		t.Errorf("backend accepted %d connections, want 3 (one per pool)", got)
	}
	waitStats(t, set, relayloop.Stats{Backends: 1, Idle: 1})
	if h := held.Load(); h != 1 {
		t.Errorf("%d slots held with one idle connection, want 1", h)
	}
}

// TestExchangeHostileBackend: a backend is as untrusted as a client. A
// response head that never ends, or one that is not HTTP, gets the
// client a 502 and costs the loop no more than MaxHead; bytes after a
// response keep its connection out of the pool.
func TestExchangeHostileBackend(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		status int
		body   string
		pooled bool
	}{
		{name: "endless head", answer: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 200<<10), status: http.StatusBadGateway},
		{name: "not HTTP", answer: "SSH-2.0-OpenSSH_9.2\r\n\r\n", status: http.StatusBadGateway},
		{name: "bytes after the body", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforge", status: http.StatusOK, body: "ok"},
		{name: "well-behaved", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", status: http.StatusOK, body: "ok", pooled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := peers.NewTCPServer(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = io.WriteString(c, tt.answer)
				_, _ = io.Copy(io.Discard, c) // until the dataplane closes
			})
			be := netip.MustParseAddrPort(srv.Addr)
			addr, set, _ := serveExchanges(t, func() *exchanger {
				e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
				e.opt.MaxHead = 16 << 10
				return e
			})
			c := dial(t, addr)
			resp, body := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != tt.status || body != tt.body {
				t.Errorf("client got %d %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			_ = c.Close()
			want := relayloop.Stats{}
			if tt.pooled {
				want = relayloop.Stats{Backends: 1, Idle: 1}
			}
			waitStats(t, set, want)
		})
	}
}

// TestExchangeMaxHeadAfterProbe: MaxHead bounds a request head whatever
// buffer the loop read it into. A Session that reads the first bytes
// before it decides (16 KiB at most, as the dataplane's sniffer does)
// may have the whole head of a 2 KiB request when it answers Exchange;
// with MaxHead 1 KiB the request still gets 431.
func TestExchangeMaxHeadAfterProbe(t *testing.T) {
	be, _ := httpBackend(t, echoHandler)
	addr, _, _ := serveExchanges(t, func() *exchanger {
		e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}})
		e.opt.MaxHead = 1024
		e.probe = 16 << 10
		return e
	})
	c := dial(t, addr)
	head := "GET / HTTP/1.1\r\nHost: x\r\nCookie: " + strings.Repeat("c", 2000) + "\r\n\r\n"
	resp, _ := roundTrip(t, c, bufio.NewReader(c), head)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 2 KiB head with MaxHead 1 KiB: %d, want 431", resp.StatusCode)
	}
}

// TestExchangeSplicesLargeBodies: a large response body with a length
// goes to a cleartext client through a pipe: while the client does not
// read, the bytes the sockets cannot take wait in a pipe the loop holds
// (the copy path holds them in memory instead); the body arrives whole,
// the pipe is given back and the backend connection pooled. A client
// that leaves mid-body takes the pipe and the backend connection with it.
func TestExchangeSplicesLargeBodies(t *testing.T) {
	// 16 MiB: more than the sockets between take (tcp_wmem tops at 4 MiB).
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<20)
	be, conns := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		_, _ = w.Write(payload)
	})
	addr, set, made := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	})
	stalled := func(c net.Conn) {
		t.Helper()
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for set.Stats().Pipes != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("loops hold %+v while the client does not read, want a pipe", set.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	c := dial(t, addr)
	_ = c.SetReadBuffer(64 << 10)
	br := bufio.NewReader(c)
	stalled(c)
	if _, body := readResponse(t, br, false); body != string(payload) {
		t.Fatalf("%d bytes, not the payload", len(body))
	}
	if resp, body := roundTrip(t, c, br, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK || body != string(payload) {
		t.Fatalf("second response: %d, %d bytes", resp.StatusCode, len(body))
	}
	waitStats(t, set, relayloop.Stats{Conns: 1, Backends: 1, Idle: 1})
	if n := conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
	e := <-made

	stalled(c)
	_ = c.Close()
	if r := e.wait(t); r.Err == nil {
		t.Errorf("result %+v of a client that left mid-body, want an error", r)
	}
	waitStats(t, set, relayloop.Stats{})
}

// junkBackend is a backend whose first connection answers each request
// with body and then a second response, "evil", that nobody asked for:
// the head and all of body but its last bytes first, then, once they
// were read, those last bytes and the junk in one write. Its later
// connections answer "good". conns counts its connections.
func junkBackend(t *testing.T, body []byte, last int) (be netip.AddrPort, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	srv := peers.NewTCPServer(t, func(c net.Conn) {
		first := conns.Add(1) == 1
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if !first {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
				continue
			}
			split := len(body) - last
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			_, _ = c.Write(body[:split])
			time.Sleep(100 * time.Millisecond)
			_, _ = c.Write(append(slices.Clip(body[split:]), "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"...))
		}
	})
	return netip.MustParseAddrPort(srv.Addr), conns
}

// TestExchangeSplicedBodyThenJunk: bytes a backend sends after a spliced
// body (a second response nobody asked for) never answer another
// request: its connection is not pooled, as it is not when the body is
// copied and the bytes are read with it.
func TestExchangeSplicedBodyThenJunk(t *testing.T) {
	body := bytes.Repeat([]byte("b"), 256<<10)
	// The body's last 80 KiB come with the junk in one write, once the
	// rest was read: the last splice takes the body's bytes of it and
	// leaves the junk in the socket, with no event to come for it.
	be, conns := junkBackend(t, body, 80<<10)
	// A turn larger than the body: its last bytes are spliced, not
	// copied (with the default turn, only a body with exactly a turn
	// left at a turn's start ends so).
	opt := relayloop.WithMoveBudget(relayloop.Options{Loops: 1}, 1<<20)
	addr, _ := serve(t, opt, handler(func(*relayloop.Conn) relayloop.Session {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	}))
	c := dial(t, addr)
	br := bufio.NewReader(c)
	if _, got := roundTrip(t, c, br, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); got != string(body) {
		t.Fatalf("first response: %d bytes, want %d", len(got), len(body))
	}
	if _, got := roundTrip(t, c, br, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"); got != "good" {
		t.Errorf("second response %q, want the backend's answer to it", got)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2: the first is not to be trusted again", n)
	}
}

// TestExchangeSplicedBodyCutShort: a backend that closes in the middle
// of a spliced body ends the client's connection (it must not take the
// body as whole), with ErrBackendClosed, and leaves no pipe held.
func TestExchangeSplicedBodyCutShort(t *testing.T) {
	srv := peers.NewTCPServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
		_, _ = c.Write(bytes.Repeat([]byte("c"), 200<<10))
		_ = c.Close()
	})
	be := netip.MustParseAddrPort(srv.Addr)
	addr, set, made := serveExchanges(t, func() *exchanger {
		return newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	})
	c := dial(t, addr)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /cut HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n != 200<<10 {
		t.Errorf("read %d bytes, %v; want the 200 KiB sent and then an error", n, err)
	}
	e := <-made
	if r := e.wait(t); !errors.Is(r.Err, relayloop.ErrBackendClosed) {
		t.Errorf("result %+v, want ErrBackendClosed", r)
	}
	waitStats(t, set, relayloop.Stats{})
}
