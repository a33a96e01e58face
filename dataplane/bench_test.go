package dataplane_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// benchEcho is a backend that echoes every connection until EOF.
func benchEcho(b *testing.B) string {
	b.Helper()
	return peers.NewTCPServer(b, func(c net.Conn) { _, _ = io.Copy(c, c) }).Addr
}

// dialAndSpeak connects to addr and sends first (an SSH client's
// banner, say): the listeners defer an accept until the client speaks
// (TCP_DEFER_ACCEPT).
func dialAndSpeak(b *testing.B, addr string, first []byte) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Write(first); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkConnSSH measures the whole life of one short SSH-routed
// connection through the dataplane: accept, sniff, route, dial, forward the
// banner both ways, close. Compare allocs/op and ns/op before and after a
// change; hack/bench/muxload (make bench-mux) compares with haproxy and sslh.
func BenchmarkConnSSH(b *testing.B) {
	backend := benchEcho(b)
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	snap := &snapshot.Snapshot{Listeners: []snapshot.Listener{{
		Name: "bench/public", Address: "127.0.0.1:0", ProbeTimeout: 3 * time.Second,
		Routes: []snapshot.Route{
			{Name: "ssh", Match: snapshot.Match{Protocol: snapshot.SSH}, Backend: &snapshot.Backend{Name: "ssh", Endpoints: []string{backend}}},
			{Name: "tls-b", Match: snapshot.Match{Protocol: snapshot.TLS, SNI: []string{"b.bench.test"}}, Backend: &snapshot.Backend{Name: "b", Endpoints: []string{backend}}},
			{Name: "any", Match: snapshot.Match{Protocol: snapshot.Any}, Backend: &snapshot.Backend{Name: "any", Endpoints: []string{backend}}},
		},
	}}}
	if errs := srv.Apply(snap); len(errs) > 0 {
		b.Fatal(errs)
	}
	b.Cleanup(func() { _ = srv.Shutdown(b.Context()) })
	addr := srv.Addr("bench/public").String()
	banner := []byte("SSH-2.0-bench\r\n")
	buf := make([]byte, len(banner))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		c := dialAndSpeak(b, addr, banner)
		if _, err := io.ReadFull(bufio.NewReader(c), buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// reportCPU reports, when the returned func runs, the CPU time (user and
// system, of the whole process: client and backend included) per
// iteration as cpu-us/op. Unlike ns/op, which a busy machine stretches,
// it changes only with the work done, so a change to the connection path
// shows even on a shared box.
func reportCPU(b *testing.B) func() {
	start := processCPU(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((processCPU(b)-start).Microseconds())/float64(b.N), "cpu-us/op")
		}
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHTTPModeRequest measures one request on a kept-alive client
// connection through http mode: routing (every request since issue 14),
// the reverse proxy and a pooled backend connection, with the backend in
// the same process. Compare before and after a change.
func BenchmarkHTTPModeRequest(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	}))
	b.Cleanup(backend.Close)
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	web := func(name, host string) snapshot.Route {
		return snapshot.Route{
			Name:    name,
			Match:   snapshot.Match{Protocol: snapshot.HTTP, Host: []string{host}},
			Backend: &snapshot.Backend{Name: name, Endpoints: []string{backend.Listener.Addr().String()}, Mode: snapshot.ModeHTTP},
		}
	}
	snap := &snapshot.Snapshot{Listeners: []snapshot.Listener{{
		Name: "bench/public", Address: "127.0.0.1:0", ProbeTimeout: 3 * time.Second,
		Routes: []snapshot.Route{
			{Name: "ssh", Match: snapshot.Match{Protocol: snapshot.SSH}, Backend: &snapshot.Backend{Name: "ssh", Endpoints: []string{backend.Listener.Addr().String()}}},
			web("api", "api.bench.test"),
			web("www", "www.bench.test"),
		},
	}}}
	if errs := srv.Apply(snap); len(errs) > 0 {
		b.Fatal(errs)
	}
	b.Cleanup(func() { _ = srv.Shutdown(b.Context()) })
	c, err := net.Dial("tcp", srv.Addr("bench/public").String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	br := bufio.NewReader(c)
	req := []byte("GET /page HTTP/1.1\r\nHost: www.bench.test\r\nUser-Agent: bench\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, res.Body); err != nil || res.StatusCode != http.StatusOK {
			b.Fatal(res.Status, err)
		}
		_ = res.Body.Close()
	}
}

// benchHTTPBackend answers every request on its connections with the same
// 17-byte response, reading heads without parsing them, so that a
// benchmark's allocations are the dataplane's and its client's.
func benchHTTPBackend(b *testing.B) string {
	b.Helper()
	resp := []byte("HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\nhello from bench\n")
	return peers.NewTCPServer(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if !bytes.Equal(line, []byte("\r\n")) {
				continue
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	}).Addr
}

// BenchmarkHTTPModeHTTP2Request measures one bodiless stream on a kept-
// alive h2c connection through http mode: package h2's server, routing,
// the direct backend pool and the response's frames. The backend sends a
// fixed response. hack/bench-http.sh compares the whole with haproxy.
func BenchmarkHTTPModeHTTP2Request(b *testing.B) {
	backend := benchHTTPBackend(b)
	srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
	snap := &snapshot.Snapshot{Listeners: []snapshot.Listener{{
		Name: "bench/public", Address: "127.0.0.1:0", ProbeTimeout: 3 * time.Second,
		Routes: []snapshot.Route{{
			Name:    "www",
			Match:   snapshot.Match{Protocol: snapshot.HTTP},
			Backend: &snapshot.Backend{Name: "www", Endpoints: []string{backend}, Mode: snapshot.ModeHTTP},
		}},
	}}}
	if errs := srv.Apply(snap); len(errs) > 0 {
		b.Fatal(errs)
	}
	b.Cleanup(func() { _ = srv.Shutdown(b.Context()) })
	cc := h2Conn(b, srv.Addr("bench/public").String(), "")
	req, err := http.NewRequest(http.MethodGet, "http://www.bench.test/page", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := cc.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, res.Body); err != nil || res.StatusCode != http.StatusOK {
			b.Fatal(res.Status, err)
		}
		_ = res.Body.Close()
	}
}

// BenchmarkRefusedAtGlobalCap measures a connection refused at the global
// cap (--max-connections) with nothing idle to give way, beside listeners
// more in http mode: at the global cap any listener's idle backend
// connection may give way (evictor), so the cost of finding none is what
// a client that fills the cap makes every later connection cost.
func BenchmarkRefusedAtGlobalCap(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			var lim syscall.Rlimit
			if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n)+256 {
				b.Skipf("%d listeners need as many descriptors; the limit is %d", n, lim.Cur)
			}
			backend := benchEcho(b)
			listeners := []snapshot.Listener{listenerOn("full", routeTo("ssh", snapshot.SSH, backend))}
			for i := range n - 1 {
				listeners = append(listeners, listenerOn(fmt.Sprintf("web-%d", i), httpRoute("web", backend)))
			}
			snap := snapshotOf(listeners...)
			snap.MaxConnections = 1
			srv := dataplane.NewServer(dataplane.Options{Log: logr.Discard()})
			if errs := srv.Apply(snap); len(errs) > 0 {
				b.Fatal(errs)
			}
			b.Cleanup(func() { _ = srv.Shutdown(b.Context()) })
			addr := srv.Addr("full").String()
			banner := []byte("SSH-2.0-bench\r\n")
			holder := dialAndSpeak(b, addr, banner)
			defer holder.Close()
			buf := make([]byte, 1)
			if _, err := io.ReadFull(holder, buf); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				c := dialAndSpeak(b, addr, banner)
				if _, err := c.Read(buf); err == nil {
					b.Fatal("a connection past the global cap was served")
				}
				c.Close()
			}
		})
	}
}
