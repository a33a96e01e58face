package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/test/peers"
)

// TestHTTPModeHTTP2Bodies: bodies and trailers cross http mode's HTTP/2
// front end and the backend pool both ways, larger than the stream and
// connection windows: uploads with and without a declared length (the
// pool's net/http Transport), a 3 MiB download (the direct pool), and
// the backend's trailers.
func TestHTTPModeHTTP2Bodies(t *testing.T) {
	t.Parallel()
	backend := peers.HTTPHandler(t, "echo", func(w http.ResponseWriter, r *http.Request) {
		if n, err := strconv.Atoi(r.URL.Query().Get("download")); err == nil {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(bytes.Repeat([]byte("d"), n))
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		w.Header().Set("Trailer", "X-Sum")
		_, _ = w.Write(body)
		w.Header().Set("X-Sum", hex.EncodeToString(sum[:]))
	})
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	cc := h2Conn(t, m.addr("pub"), "")
	upload := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
	sum := sha256.Sum256(upload)
	for _, tc := range []struct {
		name     string
		body     io.Reader
		length   int64
		download int
	}{
		{name: "upload of 3 MiB, declared", body: bytes.NewReader(upload), length: int64(len(upload))},
		{name: "upload of 3 MiB, undeclared", body: io.MultiReader(bytes.NewReader(upload)), length: -1},
		{name: "download of 3 MiB", download: 3 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, url := http.MethodPost, "http://www.test/echo"
			if tc.download > 0 {
				method, url = http.MethodGet, "http://www.test/get?download="+strconv.Itoa(tc.download)
			}
			req, err := http.NewRequest(method, url, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.length
			res, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
				t.Fatalf("%d HTTP/%d, %v", res.StatusCode, res.ProtoMajor, err)
			}
			if tc.download > 0 {
				if len(got) != tc.download || bytes.Count(got, []byte("d")) != tc.download {
					t.Errorf("downloaded %d bytes, want %d", len(got), tc.download)
				}
				return
			}
			if !bytes.Equal(got, upload) {
				t.Errorf("echoed %d bytes, sent %d", len(got), len(upload))
			}
			if res.Trailer.Get("X-Sum") != hex.EncodeToString(sum[:]) {
				t.Errorf("trailers %v, want the backend's X-Sum", res.Trailer)
			}
		})
	}
}

// TestShutdownDrainsHTTP2Connections: Shutdown tells an HTTP/2 client to
// go (GOAWAY) rather than waiting out its idle timeout (60 s) or cutting
// it: a connection kept alive after a request ends at once, and Shutdown
// returns without having to cut anything.
func TestShutdownDrainsHTTP2Connections(t *testing.T) {
	t.Parallel()
	backend := peers.HTTPBackend(t, "web")
	m := newMux(t, dataplane.Options{})
	m.apply(snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	cc := h2Conn(t, m.addr("pub"), "")
	if status, _, err := h2Get(t, cc, "www.test", "http://www.test/"); err != nil || status != http.StatusOK {
		t.Fatalf("GET: %d, %v", status, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v: the idle HTTP/2 connection was not drained", err)
	}
	if _, _, err := h2Get(t, cc, "www.test", "http://www.test/"); err == nil {
		t.Error("a request after Shutdown was served")
	}
}

// TestReloadDroppedPortDrainsHTTP2: an HTTP/2 connection accepted on a
// port that a reload drops is told to go (GOAWAY) and ends, instead of
// living on under the routes of a port that no longer exists; the port
// that stays keeps its HTTP/2 connections.
func TestReloadDroppedPortDrainsHTTP2(t *testing.T) {
	t.Parallel()
	backend := peers.HTTPBackend(t, "web")
	keep := listenerOn("keep", httpRoute("web", backend.Addr))
	drop := listenerOn("drop", httpRoute("web", backend.Addr))
	m := startMux(t, snapshotOf(keep, drop))
	kept, dropped := h2Conn(t, m.addr("keep"), ""), h2Conn(t, m.addr("drop"), "")
	for _, cc := range []*http.ClientConn{kept, dropped} {
		if status, _, err := h2Get(t, cc, "www.test", "http://www.test/"); err != nil || status != http.StatusOK {
			t.Fatalf("GET before the reload: %d, %v", status, err)
		}
	}
	m.apply(snapshotOf(keep))
	peers.Until(t, ioTimeout, "the dropped port's HTTP/2 connection to end", func() bool {
		_, _, err := h2Get(t, dropped, "www.test", "http://www.test/")
		return err != nil
	})
	if status, _, err := h2Get(t, kept, "www.test", "http://www.test/"); err != nil || status != http.StatusOK {
		t.Errorf("GET on the kept port's connection after the reload: %d, %v", status, err)
	}
}

// TestHTTPModeLargeResponseHeads: a backend's response head of 20 KiB
// (long Set-Cookie and Content-Security-Policy fields, as real sites
// send) reaches the client whole on every front end: HTTP/1.1 in clear,
// HTTP/1.1 and HTTP/2 after TLS, h2c. One larger than the header limit
// (64 KiB) is a bad gateway on each, never a hang or a crash.
func TestHTTPModeLargeResponseHeads(t *testing.T) {
	t.Parallel()
	cookie := strings.Repeat("c", 4<<10)
	backend := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		n := 4
		if r.URL.Path == "/huge" {
			n = 20
		}
		for i := range n {
			w.Header().Add("Set-Cookie", fmt.Sprintf("k%d=%s", i, cookie))
		}
		_, _ = io.WriteString(w, "ok")
	})
	cert := peers.CertPair(t, "www.test")
	m := startMux(t, snapshotOf(
		listenerOn("plain", httpRoute("web", backend.Addr)),
		terminating("tls", tlsOf([]string{"h2", "http/1.1"}, cert), httpRoute("web", backend.Addr)),
	))
	h1, _ := muxClient(t, m.addr("plain"), false)
	h1tls, _ := muxClient(t, m.addr("tls"), false)
	h2tls, _ := muxClient(t, m.addr("tls"), true)
	h2c := h2Conn(t, m.addr("plain"), "")
	for _, tc := range []struct {
		name string
		do   func(path string) (*http.Response, error)
		want int
	}{
		{name: "HTTP/1.1", do: func(p string) (*http.Response, error) { return h1.Get("http://www.test" + p) }, want: 1},
		{name: "HTTP/1.1 over TLS", do: func(p string) (*http.Response, error) { return h1tls.Get("https://www.test" + p) }, want: 1},
		{name: "HTTP/2 over TLS", do: func(p string) (*http.Response, error) { return h2tls.Get("https://www.test" + p) }, want: 2},
		{name: "h2c", do: func(p string) (*http.Response, error) {
			req, err := http.NewRequest(http.MethodGet, "http://www.test"+p, nil)
			if err != nil {
				return nil, err
			}
			return h2c.RoundTrip(req)
		}, want: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.do("/large")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK || string(body) != "ok" || res.ProtoMajor != tc.want {
				t.Fatalf("%d HTTP/%d %q, %v", res.StatusCode, res.ProtoMajor, body, err)
			}
			if got := res.Header.Values("Set-Cookie"); len(got) != 4 || got[3] != "k3="+cookie {
				t.Errorf("%d Set-Cookie fields came through, want 4 whole", len(got))
			}
			res, err = tc.do("/huge")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("a response head of 80 KiB: %d, want 502", res.StatusCode)
			}
		})
	}
}

// h2Do sends a bodiless request on cc and reads the whole response.
func h2Do(t testing.TB, cc *http.ClientConn, method, url string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cc.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res, string(body), err
}

// TestHTTPModeHTTP2BodilessStreams: the streams that go to the backend
// without the reverse proxy (GET, HEAD, OPTIONS, TRACE with no body) get
// what it gave them: 103 Early Hints before the response, bodiless
// responses (HEAD, 204, 304) and chunked ones with trailers, one backend
// connection reused for all; a pooled connection the backend closed is
// replaced and the request sent again; a body the backend cuts short is
// an error to the client, not a short body taken whole.
func TestHTTPModeHTTP2BodilessStreams(t *testing.T) {
	t.Parallel()
	t.Run("responses of every kind on one backend connection", func(t *testing.T) {
		t.Parallel()
		web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/hints":
				w.Header().Set("Link", "</s.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
				_, _ = io.WriteString(w, "hinted")
			case "/none":
				w.WriteHeader(http.StatusNoContent)
			case "/same":
				w.WriteHeader(http.StatusNotModified)
			case "/chunked":
				w.Header().Set("Trailer", "X-Sum")
				_, _ = io.WriteString(w, "part1\n")
				w.(http.Flusher).Flush()
				_, _ = io.WriteString(w, "part2\n")
				w.Header().Set("X-Sum", "42")
			default:
				_, _ = io.WriteString(w, "web "+r.Method+" "+r.URL.Path)
			}
		})
		m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
		cc := h2Conn(t, m.addr("pub"), "")
		var hints []int
		req, _ := http.NewRequest(http.MethodGet, "http://www.test/hints", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				if h.Get("Link") == "</s.css>; rel=preload" {
					hints = append(hints, code)
				}
				return nil
			},
		}))
		res, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "hinted" || !slices.Equal(hints, []int{http.StatusEarlyHints}) {
			t.Errorf("GET /hints: %d %q, informational %v, want 200 \"hinted\" after a 103 with its Link", res.StatusCode, body, hints)
		}
		for _, tc := range []struct{ method, path, want string }{
			{http.MethodGet, "/none", "204 "},
			{http.MethodGet, "/same", "304 "},
			{http.MethodHead, "/head", "200 "},
			{http.MethodOptions, "/opt", "200 web OPTIONS /opt"},
			{http.MethodGet, "/chunked", "200 part1\npart2\n X-Sum=42"},
		} {
			res, body, err := h2Do(t, cc, tc.method, "http://www.test"+tc.path)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			got := fmt.Sprintf("%d %s", res.StatusCode, body)
			if v := res.Trailer.Get("X-Sum"); v != "" {
				got += " X-Sum=" + v
			}
			if got != tc.want {
				t.Errorf("%s %s: %q, want %q", tc.method, tc.path, got, tc.want)
			}
		}
		if n := distinct(web.Requests(), func(r peers.Request) string { return r.RemoteAddr }); n != 1 {
			t.Errorf("the backend saw %d connections for 6 requests one after another, want 1", n)
		}
	})
	t.Run("many connections at once, each stream its own answer", func(t *testing.T) {
		t.Parallel()
		// Connections go quiet between bursts and give their output
		// buffers back, and others take them: no response may carry
		// another's bytes.
		web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, strings.Repeat(r.URL.Path, 1+len(r.URL.Path)%7))
		})
		m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
		var wg sync.WaitGroup
		for conn := range 6 {
			cc := h2Conn(t, m.addr("pub"), "")
			wg.Go(func() {
				for burst := range 10 {
					var streams sync.WaitGroup
					for stream := range 8 {
						streams.Go(func() {
							path := fmt.Sprintf("/c%d/b%d/s%d", conn, burst, stream)
							res, body, err := h2Do(t, cc, http.MethodGet, "http://www.test"+path)
							if want := strings.Repeat(path, 1+len(path)%7); err != nil || res.StatusCode != http.StatusOK || body != want {
								t.Errorf("GET %s: %v %q, want %q", path, err, body, want)
							}
						})
					}
					streams.Wait()
				}
			})
		}
		wg.Wait()
	})
	t.Run("a pooled connection the backend closed", func(t *testing.T) {
		t.Parallel()
		closed := make(chan struct{}, 8)
		backend := peers.NewTCPServer(t, func(c net.Conn) {
			defer func() { closed <- struct{}{} }()
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
			peers.CloseWriteAcked(t, c.(*net.TCPConn))
		})
		m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
		cc := h2Conn(t, m.addr("pub"), "")
		for i := range 3 {
			if res, body, err := h2Do(t, cc, http.MethodGet, "http://www.test/"); err != nil || res.StatusCode != http.StatusOK || body != "ok\n" {
				t.Fatalf("request %d: %v %q, %v", i, res, body, err)
			}
			select {
			case <-closed:
			case <-time.After(ioTimeout):
				t.Fatalf("request %d: the backend's connection did not close", i)
			}
		}
	})
	t.Run("a status code HTTP has not", func(t *testing.T) {
		t.Parallel()
		backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int) bool {
			_, err := io.WriteString(c, "HTTP/1.1 099 Odd\r\nContent-Length: 5\r\n\r\nhello")
			return err == nil
		})
		m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
		cc := h2Conn(t, m.addr("pub"), "")
		for i := range 2 {
			if res, body, err := h2Do(t, cc, http.MethodGet, "http://www.test/"); err != nil || res.StatusCode != http.StatusBadGateway {
				t.Errorf("request %d: %v %q, %v; want 502", i, res, body, err)
			}
		}
		peers.Until(t, ioTimeout, "the backend connections to close", func() bool {
			return m.metricSum("portmux_http_backend_connections", map[string]string{"listener": "pub"}) == 0
		})
		if n := m.metricSum("portmux_panics_total", nil); n != 0 {
			t.Errorf("%v panics", n)
		}
	})
	t.Run("a body cut short", func(t *testing.T) {
		t.Parallel()
		backend := peers.NewTCPServer(t, func(c net.Conn) {
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
			_ = c.Close()
		})
		m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
		cc := h2Conn(t, m.addr("pub"), "")
		if _, body, err := h2Do(t, cc, http.MethodGet, "http://www.test/"); err == nil {
			t.Errorf("a body of 9 bytes out of 100 was taken whole: %q", body)
		}
		// The reset is the stream's: the next stream on the connection is
		// served (and cut short the same way).
		if _, _, err := h2Do(t, cc, http.MethodGet, "http://www.test/"); err == nil || !strings.Contains(err.Error(), "stream error") {
			t.Errorf("the next stream: %v, want a stream error of its own", err)
		}
	})
}
