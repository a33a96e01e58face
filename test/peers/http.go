package peers

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// CurlTimeout bounds one curl run (curl's own --max-time is a little less).
const CurlTimeout = 30 * time.Second

// Request is what an HTTPBackend saw of one request.
type Request struct {
	Method     string
	Host       string
	Path       string
	RemoteAddr string
	Header     http.Header
}

// HTTPServer is a Go HTTP/1.1 server on 127.0.0.1 that records every
// request and answers "NAME METHOD PATH\n" with status 200.
type HTTPServer struct {
	Name string
	// Addr is 127.0.0.1:Port.
	Addr string
	Port int

	srv   *httptest.Server
	mu    sync.Mutex
	reqs  []Request
	conns map[net.Conn]http.ConnState
	peak  int
}

// HTTPBackend starts a recording HTTP server named name. It is closed by
// t.Cleanup.
func HTTPBackend(t testing.TB, name string) *HTTPServer {
	t.Helper()
	return HTTPHandler(t, name, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = fmt.Fprintf(w, "%s %s %s\n", name, r.Method, r.URL.Path)
	})
}

// HTTPHandler is HTTPBackend that answers with handle (after recording
// the request). Cleanup waits for the handlers: one that blocks must be
// released by an earlier cleanup.
func HTTPHandler(t testing.TB, name string, handle http.HandlerFunc) *HTTPServer {
	t.Helper()
	h := &HTTPServer{Name: name, conns: map[net.Conn]http.ConnState{}}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.reqs = append(h.reqs, Request{
			Method: r.Method, Host: r.Host, Path: r.URL.Path,
			RemoteAddr: r.RemoteAddr, Header: r.Header.Clone(),
		})
		h.mu.Unlock()
		handle(w, r)
	}))
	h.srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if st == http.StateClosed || st == http.StateHijacked {
			delete(h.conns, c)
		} else {
			h.conns[c] = st
		}
		h.peak = max(h.peak, len(h.conns))
	}
	ln, err := net.Listen("tcp", Loopback.Addr(0))
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Listener = ln
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	h.Addr = ln.Addr().String()
	h.Port = ln.Addr().(*net.TCPAddr).Port
	return h
}

// Requests returns the requests seen so far, oldest first.
func (h *HTTPServer) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Request(nil), h.reqs...)
}

// PeakConns is the most client connections it has held open at once.
func (h *HTTPServer) PeakConns() int { return h.locked(func() int { return h.peak }) }

// OpenConns counts the client connections open now (active or idle
// keep-alive ones).
func (h *HTTPServer) OpenConns() int { return h.locked(func() int { return len(h.conns) }) }

// locked is f's count, read under the server's lock.
func (h *HTTPServer) locked(f func() int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return f()
}

// CurlResult is the outcome of one curl request.
type CurlResult struct {
	// Code is the HTTP status, 0 when there was no response.
	Code int
	// Version is curl's %{http_version}: "1.1", "2", ...
	Version string
	Body    string
	// Stderr is curl's error output (-sS: errors only).
	Stderr string
}

// curlStatusMarker separates the body from curl's -w line.
const curlStatusMarker = "\n--portmux-curl-status-- "

// Curl runs curl with args (a URL and options such as --resolve, -k,
// --http1.1, -H) and returns the status, version and body. err is curl's
// failure (e.g. exit status 52, empty reply) with its message. It skips the
// test when curl is not installed.
func Curl(t testing.TB, args ...string) (CurlResult, error) {
	t.Helper()
	curl := LookPath(t, "curl")
	// The marker starts a line of its own: -w writes right after the
	// body, which may not end in a newline.
	argv := append([]string{curl, "-sS", "--max-time", strconv.Itoa(int(CurlTimeout/time.Second) - 5),
		"-w", curlStatusMarker + "%{http_code} %{http_version}"}, args...)
	out, errOut, err := Command{Timeout: CurlTimeout}.Output(argv...)
	r := CurlResult{Stderr: errOut}
	body, status, ok := strings.Cut(out, curlStatusMarker)
	if !ok {
		return r, fmt.Errorf("curl %s: no status line (%s); stderr: %s", strings.Join(args, " "), fmt.Sprint(err), errOut)
	}
	r.Body = body
	code, version, _ := strings.Cut(strings.TrimSpace(status), " ")
	r.Code, _ = strconv.Atoi(code)
	r.Version = version
	if err != nil {
		return r, fmt.Errorf("curl %s: %w; stderr: %s", strings.Join(args, " "), err, errOut)
	}
	return r, nil
}

// StatusBody reads and closes the body of a response, as returned with its
// error by http.Client.Do or a RoundTripper: the status, the body, and the
// first error.
func StatusBody(resp *http.Response, err error) (int, string, error) {
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
