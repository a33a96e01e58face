package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"reflect"
	"strings"
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
	}, DefaultHTTPMaxHeaderBytes, new(idleConns))
	p.maxConns, p.idleTimeout = maxConns, idle
	return p
}

func directGet(t *testing.T, p *directPool, url string) (int, string) {
	t.Helper()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	dc, _, err := p.get(context.Background(), u.Host)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	_, _ = fmt.Fprintf(dc.bw, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u.RequestURI(), u.Host)
	if err := dc.bw.Flush(); err != nil {
		t.Errorf("GET %s: %v", url, err)
		dc.close()
		return 0, ""
	}
	res, err := http.ReadResponse(dc.br, nil)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		dc.close()
		return 0, ""
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		dc.close()
	} else {
		p.put(dc)
	}
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

// TestIdleConnsFollowsTheDirectPool: the server's count of idle direct
// connections is what lets the evictor skip every listener's pools at a
// cap; a count too low leaves an idle connection holding a slot a client
// is refused for, one too high walks every pool for nothing.
func TestIdleConnsFollowsTheDirectPool(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	p := testDirectPool(4, time.Hour)
	t.Cleanup(p.closeIdle)
	url := "http://" + web.Addr + "/"
	idle := func() int64 { return p.idle.direct.Load() }

	// Two connections at once, both pooled after.
	a, _, err := p.get(context.Background(), web.Addr)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := p.get(context.Background(), web.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if n := idle(); n != 0 {
		t.Fatalf("idle %d with two connections in use, want 0", n)
	}
	p.put(a)
	p.put(b)
	if n := idle(); n != 2 {
		t.Fatalf("idle %d after both came back, want 2", n)
	}
	if status, _ := directGet(t, p, url); status != 200 {
		t.Fatalf("GET: %d", status)
	}
	if n := idle(); n != 2 {
		t.Fatalf("idle %d after a request on a pooled connection, want 2", n)
	}
	if !p.evictOne() {
		t.Fatal("evictOne found nothing idle")
	}
	if n := idle(); n != 1 {
		t.Fatalf("idle %d after an eviction, want 1", n)
	}
	p.closeIdle()
	if n := idle(); n != 0 {
		t.Fatalf("idle %d after closeIdle, want 0", n)
	}

	// The sweep of expired connections counts them out too.
	swept := testDirectPool(4, 50*time.Millisecond)
	if status, _ := directGet(t, swept, url); status != 200 {
		t.Fatalf("GET: %d", status)
	}
	if n := swept.idle.direct.Load(); n != 1 {
		t.Fatalf("idle %d after a request, want 1", n)
	}
	peers.Until(t, 10*time.Second, "the sweep to count the expired connection out", func() bool { return swept.idle.direct.Load() == 0 })
}

// TestIdleConnsCountsEachTransportAlone: std's idle connections are
// counted Transport by Transport, so that a request still waiting for its
// connection on one (busy, nothing open) does not hide another's idle one.
func TestIdleConnsCountsEachTransportAlone(t *testing.T) {
	t.Parallel()
	type step struct {
		t          int // which Transport
		open, busy int64
		want       int64 // the server's count after the step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a request on a new connection", []step{{0, 0, 1, 0}, {0, 1, 0, 0}, {0, 0, -1, 1}, {0, -1, 0, 0}}},
		{"a waiting request beside another's idle connection", []step{{0, 1, 0, 1}, {1, 0, 1, 1}, {1, 0, 1, 1}, {1, 1, 0, 1}, {1, 0, -2, 2}}},
		{"a connection closed under its request", []step{{0, 1, 1, 0}, {0, -1, 0, 0}, {1, 1, 0, 1}, {0, 0, -1, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idle := new(idleConns)
			ts := []*backendTransport{{idle: idle}, {idle: idle}}
			for i, s := range tc.steps {
				ts[s.t].countStd(s.open, s.busy)
				if got := idle.std.Load(); got != s.want {
					t.Fatalf("step %d (%+v): std %d, want %d", i, s, got, s.want)
				}
			}
		})
	}
}

// TestDirectableRefusesInvalidFields: appendBodilessHead writes fields as
// they are, so a request with a field http.Transport would refuse (a line
// break, which neither HTTP/2 framer nor net/http's server lets through,
// but the pool must not rely on that) never takes the direct path.
func TestDirectableRefusesInvalidFields(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header http.Header
		want   bool
	}{
		{header: http.Header{"X-Note": {"a"}}, want: true},
		{header: http.Header{"X-Note": {"a\r\nX-Smuggled: 1"}}},
		{header: http.Header{"X-Smuggled: 1\r\nX-Note": {"a"}}},
		{header: http.Header{"Upgrade": {"h2c"}}},
		{header: http.Header{"Connection": {"close"}}},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://www.test/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = tc.header
		if got := directable(req); got != tc.want {
			t.Errorf("directable with %q: %v, want %v", tc.header, got, tc.want)
		}
	}
	post, _ := http.NewRequest(http.MethodPost, "http://www.test/", strings.NewReader("x"))
	if directable(post) {
		t.Error("a POST with a body is directable")
	}
}

// TestAppendBodilessHead: what a backend reads of the head written for a
// bodiless HTTP/2 stream is what the reverse proxy sent for it: the
// method and target (a query net/url cannot parse cleaned as it cleaned
// it), the client's Host, its fields but the hop-by-hop and forwarding
// ones, "Te: trailers" kept, no User-Agent of Go's, and the forwarding
// fields from what the dataplane saw.
func TestAppendBodilessHead(t *testing.T) {
	t.Parallel()
	h := &httpConn{clientIP: "192.0.2.7", proto: "https"}
	fwd := func(host string) http.Header {
		return http.Header{
			"X-Forwarded-For": {"192.0.2.7"}, "X-Forwarded-Host": {host}, "X-Forwarded-Proto": {"https"},
			"X-Real-Ip": {"192.0.2.7"}, "Forwarded": {"for=192.0.2.7;proto=https;host=" + forwardedValue(host)},
		}
	}
	with := func(a, b http.Header) http.Header {
		out := a.Clone()
		for k, v := range b {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		name, method, url, host, target string
		header, want                    http.Header
	}{
		{name: "GET", method: http.MethodGet, url: "http://www.test/a/b?c=d&e", host: "www.test", target: "/a/b?c=d&e",
			header: http.Header{"Accept": {"*/*"}, "Cookie": {"a=1; b=2"}, "User-Agent": {"curl/8"}},
			want:   with(fwd("www.test"), http.Header{"Accept": {"*/*"}, "Cookie": {"a=1; b=2"}, "User-Agent": {"curl/8"}})},
		{name: "values in order, trimmed", method: http.MethodHead, url: "http://h/", host: "h:8443", target: "/",
			header: http.Header{"Accept": {"a", "b", "c"}, "X-Pad": {"  v \t"}},
			want:   with(fwd("h:8443"), http.Header{"Accept": {"a", "b", "c"}, "X-Pad": {"v"}})},
		{name: "forwarding fields of the client's dropped", method: http.MethodGet, url: "http://h/", host: "h", target: "/",
			header: http.Header{"X-Forwarded-For": {"6.6.6.6"}, "X-Real-Ip": {"6.6.6.6"}, "Forwarded": {"for=6.6.6.6"},
				"X-Forwarded-Proto": {"gopher"}, "X-Forwarded-Host": {"evil"}},
			want: fwd("h")},
		{name: "hop-by-hop fields dropped, Te: trailers kept", method: http.MethodGet, url: "http://h/", host: "h", target: "/",
			header: http.Header{"Te": {"gzip, trailers"}, "Keep-Alive": {"300"}, "Proxy-Authorization": {"Basic x"},
				"Http2-Settings": {"AAMAAABkAAQAAP__"}, "Trailer": {"X-Sum"}},
			want: with(fwd("h"), http.Header{"Te": {"trailers"}})},
		{name: "OPTIONS *", method: http.MethodOptions, url: "http://h/", host: "h", target: "*", want: fwd("h")},
		{name: "escaped path", method: http.MethodGet, url: "http://h/a%20b/%2F?q=%41", host: "h", target: "/a%20b/%2F?q=%41", want: fwd("h")},
		{name: "semicolon in the query", method: http.MethodGet, url: "http://h/p?a=1;b=2&c=3", host: "h", target: "/p?c=3", want: fwd("h")},
		{name: "bad escape in the query", method: http.MethodGet, url: "http://h/p?a=%zz&c=3", host: "h", target: "/p?c=3", want: fwd("h")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.target == "*" {
				req.URL = &neturl.URL{Path: "*"}
			}
			req.Host, req.Header = tc.host, tc.header
			if req.Header == nil {
				req.Header = http.Header{}
			}
			head, err := h.appendBodilessHead(nil, req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
			if err != nil {
				t.Fatalf("%q: %v", head, err)
			}
			if got.Method != tc.method || got.RequestURI != tc.target || got.Host != tc.host || got.ContentLength != 0 {
				t.Errorf("read back %s %s Host %s length %d, want %s %s Host %s", got.Method, got.RequestURI, got.Host, got.ContentLength,
					tc.method, tc.target, tc.host)
			}
			if !reflect.DeepEqual(got.Header, tc.want) {
				t.Errorf("fields %v\nwant %v", got.Header, tc.want)
			}
		})
	}
	bad, _ := http.NewRequest(http.MethodGet, "http://h/", nil)
	bad.Host = "a b"
	if _, err := h.appendBodilessHead(nil, bad); err == nil {
		t.Error("a Host with a space was written")
	}
}
