package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// dialFrom connects to addr from the local address from (any 127.x
// address is local on Linux) and closes the connection at cleanup.
func dialFrom(t testing.TB, from, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// limitMux serves one listener with per-client limits in front of an echo
// backend, on a clock the test moves.
func limitMux(t *testing.T, l snapshot.Listener) (*testMux, *atomic.Int64) {
	t.Helper()
	var now atomic.Int64 // nanoseconds after a fixed instant
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newMux(t, dataplane.Options{
		Now: func() time.Time { return base.Add(time.Duration(now.Load())) },
	})
	m.apply(snapshotOf(l))
	return m, &now
}

// TestPerClientConnectionCap: one address cannot hold more than its share
// of a listener (slot hogging): past maxConnectionsPerClient its new
// connections are closed and counted, while other clients are served.
func TestPerClientConnectionCap(t *testing.T) {
	t.Parallel()
	_, l := echoListener(t)
	l.MaxConnections = 4
	l.MaxConnectionsPerClient = 2
	m, _ := limitMux(t, l)
	pub := m.addr("pub")

	hog := []*net.TCPConn{dialFrom(t, "127.0.0.2", pub), dialFrom(t, "127.0.0.2", pub)}
	for i, c := range hog {
		roundTrip(t, c, fmt.Sprintf("hog %d\n", i))
	}
	third := dialFrom(t, "127.0.0.2", pub)
	if err := closedByPeer(third, ioTimeout); err != nil {
		t.Fatalf("the hog's third connection: %v", err)
	}
	// The listener has room for others.
	other := dialFrom(t, "127.0.0.3", pub)
	roundTrip(t, other, "another client\n")
	if n := m.outcomeCount("pub", dataplane.OutcomeClientLimit); n != 1 {
		t.Errorf("client_limit outcomes = %d, want 1", n)
	}
	if n := m.metricSum("portmux_clients", map[string]string{"listener": "pub"}); n != 2 {
		t.Errorf("portmux_clients = %v, want the hog and the other client", n)
	}

	// A connection the hog closes frees its slot.
	_ = hog[0].Close()
	peers.Until(t, ioTimeout, "the hog's connection to be released", func() bool { return m.ActiveConnections() == 2 })
	again := dialFrom(t, "127.0.0.2", pub)
	roundTrip(t, again, "hog again\n")

	for _, c := range []*net.TCPConn{hog[1], other, again} {
		_ = c.Close()
	}
	m.waitIdle()
}

// TestPerClientRateLimit: a client opens a burst of twice its rate, then
// one connection per 1/rate; another client has its own budget.
func TestPerClientRateLimit(t *testing.T) {
	t.Parallel()
	_, l := echoListener(t)
	l.MaxConnectionRatePerClient = 2
	m, now := limitMux(t, l)
	pub := m.addr("pub")

	burst := func(from string, n int) {
		t.Helper()
		for range n {
			c := dialFrom(t, from, pub)
			roundTrip(t, c, "within the burst\n")
			_ = c.Close()
		}
	}
	burst("127.0.0.2", 4) // the burst: twice the rate
	if err := closedByPeer(dialFrom(t, "127.0.0.2", pub), ioTimeout); err != nil {
		t.Fatalf("fifth connection within the same instant: %v", err)
	}
	burst("127.0.0.3", 4)                  // another client's budget is its own
	now.Add(int64(500 * time.Millisecond)) // one token back
	burst("127.0.0.2", 1)                  // ... and only one
	if err := closedByPeer(dialFrom(t, "127.0.0.2", pub), ioTimeout); err != nil {
		t.Fatalf("second connection after half a second: %v", err)
	}
	if n := m.outcomeCount("pub", dataplane.OutcomeClientLimit); n != 2 {
		t.Errorf("client_limit outcomes = %d, want 2", n)
	}
	m.waitIdle()
}

// TestPerClientLimitUsesTheProxyHeader: behind a PROXY sender the client
// is the header's source, not the balancer that connects.
func TestPerClientLimitUsesTheProxyHeader(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	l := proxyListener("pub", 2*time.Second, routeTo("any", snapshot.Any, backend.Addr))
	l.MaxConnectionsPerClient = 1
	m, _ := limitMux(t, l)
	pub := m.addr("pub")

	withHeader := func(src string) *net.TCPConn {
		c := dial(t, pub)
		if _, err := fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 40000 443\r\n", src); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := withHeader("203.0.113.1"), withHeader("203.0.113.2")
	roundTrip(t, a, "client one\n")
	roundTrip(t, b, "client two, same balancer\n")
	again := withHeader("203.0.113.1")
	if err := closedByPeer(again, ioTimeout); err != nil {
		t.Fatalf("client one's second connection: %v", err)
	}
	if n := m.outcomeCount("pub", dataplane.OutcomeClientLimit); n != 1 {
		t.Errorf("client_limit outcomes = %d, want 1", n)
	}
	_ = a.Close()
	_ = b.Close()
	m.waitIdle()
}

// TestPerClientStreamCap: a client's HTTP/2 streams in flight, over all
// its connections, are capped as its connections are. Each may hold a
// backend connection, one of the listener's slots: at a hundred streams
// a connection, one client within its connection cap could otherwise
// take every slot (a stalled reader keeps them for the write timeout).
// Past the cap a stream is answered 503 at once and counted; the
// listener keeps room for other clients, and the client's next streams
// go through once those in flight end.
func TestPerClientStreamCap(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var holding, most atomic.Int64
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			n := holding.Add(1)
			defer holding.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	})
	l := listenerOn("pub", httpRoute("web", web.Addr))
	l.MaxConnections = 8 // the hog's connection and 7 backend connections
	l.MaxConnectionsPerClient = 2
	m, _ := limitMux(t, l)
	pub := m.addr("pub")

	hog := dialFrom(t, "127.0.0.2", pub)
	_ = hog.SetDeadline(time.Now().Add(ioTimeout))
	fr := h2Open(t, hog)
	get := func(id uint32, path string) {
		t.Helper()
		block := h2Block(":method", "GET", ":scheme", "http", ":authority", "www.test", ":path", path)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	// statuses reads the answers' heads until it has n of them.
	statuses := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for seen := 0; seen < n; {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("after %v: %v", got, err)
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				got[f.PseudoValue("status")]++
				seen++
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				t.Fatalf("%v after %v", f, got)
			}
		}
		return got
	}
	const streams = 10
	for i := range uint32(streams) {
		get(1+2*i, "/hold")
	}
	if got := statuses(streams - 2); got["503"] != streams-2 {
		t.Fatalf("answers before any request ended: %v, want %d × 503", got, streams-2)
	}
	peers.Until(t, ioTimeout, "two requests to reach the backend", func() bool { return holding.Load() == 2 })
	if n := m.httpRequestCount("pub", dataplane.RequestClientLimit); n != streams-2 {
		t.Errorf("%d requests counted over the client limit, want %d", n, streams-2)
	}

	// Another client is served: the hog holds 3 of the listener's 8 slots.
	other := dialFrom(t, "127.0.0.3", pub)
	_ = other.SetDeadline(time.Now().Add(ioTimeout))
	if status, _ := exchange(t, other, bufio.NewReader(other), "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != http.StatusOK {
		t.Errorf("another client's request: status %d, want 200", status)
	}

	close(release)
	if got := statuses(2); got["200"] != 2 {
		t.Fatalf("the requests in flight ended with %v, want 2 × 200", got)
	}
	// Their share is back: the hog's next stream goes through.
	get(1+2*streams, "/")
	if got := statuses(1); got["200"] != 1 {
		t.Fatalf("a stream after the others ended: %v, want 200", got)
	}
	if n := most.Load(); n != 2 {
		t.Errorf("the backend held %d of the client's requests at once, want 2", n)
	}
	_ = hog.Close()
	_ = other.Close()
	m.waitIdle()
}
