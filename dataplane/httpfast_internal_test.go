package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// testDirectPool is a direct pool to plain TCP, with limits of the test's.
func testDirectPool(maxConns int, idle time.Duration) *directPool {
	p := newDirectPool(func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
	p.maxConns, p.idleTimeout = maxConns, idle
	return p
}

func directGet(t *testing.T, p *directPool, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.roundTrip(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// TestDirectPoolQueuesPastMaxConns: past its connections to an endpoint,
// a request waits for one to come back instead of dialling another.
func TestDirectPoolQueuesPastMaxConns(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	var once sync.Once
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			<-gate
		}
		_, _ = io.WriteString(w, "ok "+r.URL.Path+"\n")
	})
	t.Cleanup(func() { once.Do(func() { close(gate) }) })
	p := testDirectPool(1, time.Minute)
	t.Cleanup(p.closeIdle)

	first := make(chan string, 1)
	go func() { _, b := directGet(t, p, "http://"+web.Addr+"/first"); first <- b }()
	peers.Until(t, 10*time.Second, "the first request to reach the backend", func() bool { return len(web.Requests()) == 1 })
	second := make(chan string, 1)
	go func() { _, b := directGet(t, p, "http://"+web.Addr+"/second"); second <- b }()
	time.Sleep(50 * time.Millisecond) // would the second dial? (the backend would see it)
	if n := len(web.Requests()); n != 1 {
		t.Fatalf("the backend saw %d requests while the only connection was busy, want 1", n)
	}
	once.Do(func() { close(gate) })
	if b := <-first; b != "ok /first\n" {
		t.Errorf("first: %q", b)
	}
	if b := <-second; b != "ok /second\n" {
		t.Errorf("second: %q", b)
	}
	if peak := web.PeakConns(); peak != 1 {
		t.Errorf("the backend had %d connections at once, want 1", peak)
	}
}

// TestDirectPoolClosesIdleConnections: a pooled connection idle for the
// idle timeout is closed (giving its slot back).
func TestDirectPoolClosesIdleConnections(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	p := testDirectPool(4, 100*time.Millisecond)
	if status, body := directGet(t, p, "http://"+web.Addr+"/a"); status != 200 || body != "web GET /a\n" {
		t.Fatalf("GET: %d %q", status, body)
	}
	if n := web.OpenConns(); n != 1 {
		t.Fatalf("the backend holds %d connections after one request, want 1 (pooled)", n)
	}
	peers.Until(t, 10*time.Second, "the idle connection to be closed", func() bool { return web.OpenConns() == 0 })
}

// TestBackendTransportValidatesHeaders: Request.Write writes header
// fields as they are, where http.Transport refuses invalid ones. A field
// with a line break (which neither net/http server lets through, but the
// pool must not rely on that) is refused too, never written raw: no
// smuggled field reaches the backend.
func TestBackendTransportValidatesHeaders(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	p := testDirectPool(8, time.Minute)
	t.Cleanup(p.closeIdle)
	tr := &backendTransport{std: &http.Transport{}, direct: p}
	t.Cleanup(tr.std.CloseIdleConnections)
	for _, h := range []http.Header{
		{"X-Note": {"a\r\nX-Smuggled: 1"}},
		{"X-Smuggled: 1\r\nX-Note": {"a"}},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://"+web.Addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		if res, err := tr.RoundTrip(req); err == nil {
			_ = res.Body.Close()
			t.Errorf("header %q was sent", h)
		}
	}
	if status, body := directGet(t, p, "http://"+web.Addr+"/ok"); status != 200 || body != "web GET /ok\n" {
		t.Errorf("GET after: %d %q", status, body)
	}
	for _, r := range web.Requests() {
		if r.Header.Get("X-Smuggled") != "" {
			t.Errorf("the backend got a smuggled field: %v", r.Header)
		}
	}
}

// TestWriteBodilessRequest: what a backend reads of a bodiless request
// written by writeBodilessRequest is what it reads of Request.Write's:
// the same method, target, Host and fields (each name's values in
// order), User-Agent included or left out alike.
func TestWriteBodilessRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, url, host string
		header                  http.Header
	}{
		{name: "proxied GET", method: http.MethodGet, url: "http://10.0.0.1:80/a/b?c=d&e", host: "www.test",
			header: http.Header{"User-Agent": {""}, "Accept": {"*/*"}, "X-Forwarded-For": {"192.0.2.1"}, "Cookie": {"a=1; b=2"}}},
		{name: "no User-Agent field", method: http.MethodHead, url: "http://10.0.0.1/", header: http.Header{}},
		{name: "client User-Agent, values in order", method: http.MethodGet, url: "http://h/", host: "h",
			header: http.Header{"User-Agent": {"curl/8", "other"}, "Accept": {"a", "b", "c"}, "X-Pad": {"  v \t"}}},
		{name: "OPTIONS", method: http.MethodOptions, url: "http://h/x", host: "h", header: http.Header{"User-Agent": {""}}},
		{name: "escaped path", method: http.MethodGet, url: "http://h/a%20b/%2F?q=%41", host: "h:8080", header: http.Header{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := func(write func(*bufio.Writer, *http.Request) error) *http.Request {
				t.Helper()
				req, err := http.NewRequest(tc.method, tc.url, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host, req.Header = tc.host, tc.header.Clone()
				var buf bytes.Buffer
				bw := bufio.NewWriter(&buf)
				if err := write(bw, req); err != nil {
					t.Fatal(err)
				}
				_ = bw.Flush()
				got, err := http.ReadRequest(bufio.NewReader(&buf))
				if err != nil {
					t.Fatalf("%q: %v", buf.String(), err)
				}
				return got
			}
			want := read(func(w *bufio.Writer, r *http.Request) error { return r.Write(w) })
			got := read(writeBodilessRequest)
			if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Host != want.Host ||
				got.ContentLength != want.ContentLength || !reflect.DeepEqual(got.Header, want.Header) {
				t.Errorf("read back %s %s Host %s %v length %d\nwant %s %s Host %s %v length %d",
					got.Method, got.RequestURI, got.Host, got.Header, got.ContentLength,
					want.Method, want.RequestURI, want.Host, want.Header, want.ContentLength)
			}
		})
	}
	bad, _ := http.NewRequest(http.MethodGet, "http://h/", nil)
	bad.Host = "a b"
	if err := writeBodilessRequest(bufio.NewWriter(io.Discard), bad); err == nil {
		t.Error("a Host with a space was written")
	}
}
