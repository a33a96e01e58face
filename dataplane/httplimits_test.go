package dataplane_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// http mode is bounded: headers, header and idle time, HTTP/2 streams, and
// backend connections, which are pooled by endpoint and take connection
// slots like accepted ones.

// TestHTTPModeHeaderBlockCap: past the sniffed first request, a request's
// header block is capped at 64 KiB (net/http's default is 1 MiB); the
// client gets 431 and the backend never sees the request.
func TestHTTPModeHeaderBlockCap(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	withHeader := func(path string, n int) string {
		return "GET " + path + " HTTP/1.1\r\nHost: www.test\r\nX-Big: " + strings.Repeat("a", n) + "\r\n\r\n"
	}
	if status, _ := exchange(t, c, br, withHeader("/small", 10)); status != 200 {
		t.Fatalf("small header block: %d", status)
	}
	if status, _ := exchange(t, c, br, withHeader("/60k", 60<<10)); status != 200 {
		t.Fatalf("60 KiB header block: %d, want 200 (under the cap)", status)
	}
	// The dataplane hangs up after a 431: only its head is read.
	if res := send(t, c, br, withHeader("/100k", 100<<10)); res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB header block: %d, want 431", res.StatusCode)
	}
	_ = c.Close()
	m.waitIdle()
	if got := paths(web.Requests()); len(got) != 2 || got[1] != "/60k" {
		t.Fatalf("backend saw %q, want /small and /60k", got)
	}
}

// TestHTTPModeHTTP2Settings reads what the dataplane's HTTP/2 server
// advertises to a client: 100 streams at once (not net/http's 250), a
// header list of 64 KiB (and HTTP/2's per-field overhead, not 1 MiB), and
// frames of 16 KiB (not 1 MiB).
func TestHTTPModeHTTP2Settings(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	m := startMux(t, snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	fr := h2Open(t, c)
	got := map[http2.SettingID]uint32{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = sf.ForeachSetting(func(s http2.Setting) error { got[s.ID] = s.Val; return nil })
			break
		}
	}
	_ = c.Close()
	m.waitIdle()
	if v := got[http2.SettingMaxConcurrentStreams]; v != 100 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 100", v)
	}
	// net/http pads the header list size by 32 bytes for each of ten
	// fields (HTTP/2 counts 32 bytes per field, RFC 9113 §6.5.2).
	if v, ok := got[http2.SettingMaxHeaderListSize]; !ok || v < 64<<10 || v > 64<<10+320 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d (sent %v), want 64 KiB and at most 320 more", v, ok)
	}
	if v, ok := got[http2.SettingMaxFrameSize]; ok && v != 16<<10 {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want 16 KiB", v)
	}
}

// TestHTTPModeTimeouts: a kept-alive connection with no request is closed
// after the idle timeout (it used to stay open forever), and so is one
// whose next header block does not arrive within the header timeout.
func TestHTTPModeTimeouts(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	m := newMux(t, dataplane.Options{HTTP: dataplane.HTTPLimits{
		IdleTimeout:       200 * time.Millisecond,
		ReadHeaderTimeout: 200 * time.Millisecond,
	}})
	m.apply(snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	for _, tc := range []struct{ name, then string }{
		{"idle after a response", ""},
		{"a header block that stops half way", "GET /next HTTP/1.1\r\nHost: www"},
	} {
		c := dial(t, m.addr("pub"))
		if status, _ := exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 {
			t.Fatalf("%s: first request: %d", tc.name, status)
		}
		if _, err := io.WriteString(c, tc.then); err != nil {
			t.Fatal(err)
		}
		if err := closedByPeer(c, ioTimeout); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		_ = c.Close()
	}
	m.waitIdle()
	if got := paths(web.Requests()); len(got) != 2 {
		t.Errorf("backend saw %q, want the two first requests only", got)
	}
}

// TestHTTPModeBackendPoolKeyedByEndpoint is the finding of issue 14: one
// client connection sending requests with 300 different Host headers left
// one idle backend connection per Host, because the pool was keyed by the
// request's Host. It is keyed by endpoint now: each request goes to the
// next endpoint in turn, and the backend keeps a connection or two.
func TestHTTPModeBackendPoolKeyedByEndpoint(t *testing.T) {
	t.Parallel()
	e1 := peers.HTTPBackend(t, "web")
	e2 := peers.HTTPBackend(t, "web")
	r := httpRoute("web", e1.Addr)
	r.Backend.Endpoints = append(r.Backend.Endpoints, e2.Addr)
	m := startMux(t, snapshotOf(listenerOn("pub", r)))

	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	const n = 300
	for i := range n {
		host := fmt.Sprintf("h%d.test", i)
		if status, body := exchange(t, c, br, "GET /"+host+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); status != 200 || body != "web GET /"+host+"\n" {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
	}
	_ = c.Close()
	m.waitIdle()

	// Round-robin per request: half each. The Host is the client's.
	for i, e := range []*peers.HTTPServer{e1, e2} {
		reqs := e.Requests()
		if len(reqs) != n/2 {
			t.Errorf("endpoint %d saw %d requests, want %d", i, len(reqs), n/2)
		}
		for _, req := range reqs {
			if req.Host != strings.TrimPrefix(req.Path, "/") {
				t.Errorf("endpoint %d: request %s came with Host %q", i, req.Path, req.Host)
				break
			}
		}
		// One pooled connection each; rarely two, when a request wins the
		// race with the connection's return to the pool (see
		// TestHTTPModeKeepAliveBothSides). Keyed by Host it was 150.
		if open := e.OpenConns(); open > 2 {
			t.Errorf("endpoint %d holds %d connections after the client left, want 1 or 2", i, open)
		}
	}
}

// getStreams sends n GETs at once on cc, each on a stream of its own, and
// returns their statuses as they come (0, and an error reported, for a
// stream that failed) and a wait for the last of them.
func getStreams(t testing.TB, cc *http.ClientConn, n int) (statuses chan int, wait func()) {
	statuses = make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			status, _, err := h2Get(t, cc, "www.test", fmt.Sprintf("http://www.test/s%d", i))
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
			statuses <- status
		})
	}
	return statuses, wg.Wait
}

// gateBackend is an HTTP backend whose handler answers only once the
// test opens its gate, and that tracks how many connections it holds at
// once and at most (PeakConns).
type gateBackend struct {
	*peers.HTTPServer
	gate chan struct{}
}

func newGateBackend(t testing.TB) *gateBackend {
	t.Helper()
	b := &gateBackend{gate: make(chan struct{})}
	b.HTTPServer = peers.HTTPHandler(t, "gate", func(w http.ResponseWriter, r *http.Request) {
		<-b.gate
		_, _ = io.WriteString(w, "ok\n")
	})
	t.Cleanup(func() { openOnce(b.gate) }) // before the server's: it waits for the handlers
	return b
}

// openOnce closes a gate unless the test has.
func openOnce(gate chan struct{}) {
	select {
	case <-gate:
	default:
		close(gate)
	}
}

// TestHTTPModeBackendConnectionsTakeSlots is the other finding of issue 14:
// with maxConnections 2, one h2c client with 150 concurrent streams made
// the dataplane open 151 backend connections. A backend connection takes a
// slot of the listener's cap (or the global cap) while it is open: the
// client's connection holds one slot, one backend connection the other,
// and the streams that would need another get 503.
func TestHTTPModeBackendConnectionsTakeSlots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                    string
		listenerCap, serverCaps int
	}{
		{"listener maxConnections 2", 2, 0},
		{"global maxConnections 2", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			backend := newGateBackend(t)
			l := listenerOn("pub", httpRoute("web", backend.Addr))
			l.MaxConnections = tc.listenerCap
			snap := snapshotOf(l)
			snap.MaxConnections = tc.serverCaps
			m := startMux(t, snap)
			pub := m.addr("pub")

			cc := h2Conn(t, pub, "")
			const streams = 150
			statuses, wait := getStreams(t, cc, streams)
			// Every stream but the one holding the backend connection is
			// answered at once; open the gate then (or after ioTimeout,
			// so that a dataplane with no bound still ends the test).
			got := map[int]int{}
			deadline := time.After(ioTimeout)
		answered:
			for got[http.StatusServiceUnavailable]+got[0] < streams-1 {
				select {
				case s := <-statuses:
					got[s]++
				case <-deadline:
					break answered
				}
			}
			close(backend.gate)
			wait()
			close(statuses)
			for s := range statuses {
				got[s]++
			}
			if got[200] != 1 || got[http.StatusServiceUnavailable] != streams-1 {
				t.Errorf("statuses %v, want one 200 and %d 503", got, streams-1)
			}
			if p := backend.PeakConns(); p != 1 {
				t.Errorf("the backend had %d connections at once, want 1", p)
			}
			if n := m.httpRequestCount("pub", dataplane.RequestUnavailable); n != streams-1 {
				t.Errorf("%d requests counted unavailable, want %d", n, streams-1)
			}
			_ = cc.Close()
			m.waitIdle()
			if n := m.metricSum("portmux_http_backend_connections", map[string]string{"listener": "pub"}); n != 1 {
				t.Errorf("portmux_http_backend_connections %v after the client left, want 1 (pooled)", n)
			}

			// The pooled connection still holds its slot; a new client
			// takes the other one and is served through it. On the
			// relay loops, whose pools are their own, the idle
			// connection gives its slot up to the new one instead: the
			// backend may see the old close just after the new open,
			// but the dataplane never holds two.
			if resp := getOnce(t, pub, "www.test", "/again"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
				t.Errorf("a new client after the first left: %q", resp)
			}
			if p, most := backend.PeakConns(), onPath(2, 1); p > most {
				t.Errorf("the backend had %d connections at once, want at most %d", p, most)
			}
			m.waitIdle()
			if n := m.metricSum("portmux_http_backend_connections", map[string]string{"listener": "pub"}); n != 1 {
				t.Errorf("portmux_http_backend_connections %v after the second client left, want 1 (pooled)", n)
			}
		})
	}
}

// TestHTTPModeFullListenerKeepsOthersIdle: a listener at its cap frees a
// slot for a request by closing one of its own idle backend connections,
// never another listener's, whose slots are not the ones it lacks. On the
// relay loops a request at the cap used to close every idle connection of
// the Set, so one tenant held at its cap cost every other tenant its
// kept-alive backend connections, request after request.
func TestHTTPModeFullListenerKeepsOthersIdle(t *testing.T) {
	t.Parallel()
	gated, other := newGateBackend(t), peers.HTTPBackend(t, "other")
	full := listenerOn("full", httpRoute("web", gated.Addr))
	full.MaxConnections = 2
	m := startMux(t, snapshotOf(full, listenerOn("other", httpRoute("web", other.Addr))))

	// The other tenant leaves one kept-alive connection in the pool.
	if resp := getOnce(t, m.addr("other"), "www.test", "/"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("the other listener: %q", resp)
	}
	m.waitIdle()
	otherPooled := map[string]string{"listener": "other"}
	if n := m.metricSum("portmux_http_backend_connections", otherPooled); n != 1 {
		t.Fatalf("portmux_http_backend_connections{listener=other} %v, want 1 (pooled)", n)
	}

	// On the full listener the client's connection and one stream's
	// backend connection take both slots; the other streams find none.
	cc := h2Conn(t, m.addr("full"), "")
	const streams = 5
	statuses, wait := getStreams(t, cc, streams)
	for range streams - 1 {
		select {
		case s := <-statuses:
			if s != http.StatusServiceUnavailable {
				t.Errorf("a stream over the cap got %d, want 503", s)
			}
		case <-time.After(ioTimeout):
			t.Fatal("the streams over the cap were not answered")
		}
	}
	if n := m.metricSum("portmux_http_backend_connections", otherPooled); n != 1 {
		t.Errorf("portmux_http_backend_connections{listener=other} %v after the full listener's requests, want 1: "+
			"its idle connection does not hold the full listener's slots", n)
	}
	if open := other.OpenConns(); open != 1 {
		t.Errorf("the other backend holds %d connections, want 1", open)
	}
	close(gated.gate)
	wait()
	if s := <-statuses; s != http.StatusOK {
		t.Errorf("the stream holding the backend got %d, want 200", s)
	}
	_ = cc.Close()
}

// TestHTTPModeIdleGivesItsSlotOnEveryPath: at the listener's cap, a
// request that needs a new backend connection gets the slot of one of
// the listener's idle ones, whichever pool holds it: the relay loops'
// (bodiless requests on Linux) or the goroutines' (requests with a body,
// and every request without loops). Two endpoints taken in turn make
// every request need a connection the one before left idle elsewhere.
// Before, only the loops evicted: a request on a goroutine got 503.
func TestHTTPModeIdleGivesItsSlotOnEveryPath(t *testing.T) {
	t.Parallel()
	a, b := peers.HTTPBackend(t, "a"), peers.HTTPBackend(t, "b")
	web := httpRoute("web", a.Addr)
	web.Backend.Endpoints = append(web.Backend.Endpoints, b.Addr)
	l := listenerOn("pub", web)
	l.MaxConnections = 2 // the client's connection and one backend connection
	m := startMux(t, snapshotOf(l))

	cc := h2Conn(t, m.addr("pub"), "")
	defer cc.Close()
	for i := range 6 {
		method, body := http.MethodGet, io.Reader(nil)
		if i%2 == 1 {
			method, body = http.MethodPost, strings.NewReader("a body")
		}
		req, err := http.NewRequest(method, fmt.Sprintf("http://www.test/r%d", i), body)
		if err != nil {
			t.Fatal(err)
		}
		status, got, err := peers.StatusBody(cc.RoundTrip(req))
		if err != nil || status != http.StatusOK {
			t.Errorf("request %d (%s): %d %q %v, want 200 through an idle connection's slot", i, method, status, got, err)
		}
	}
	if n := m.httpRequestCount("pub", dataplane.RequestUnavailable); n != 0 {
		t.Errorf("%d requests counted unavailable, want 0", n)
	}
}

// keepAlive leaves one idle backend connection of listener name's in
// the pool, its client gone: a bodiless HTTP/1.1 request's (the loops'
// or a direct pool's), or an HTTP/2 POST's (net/http's Transport).
func keepAlive(t testing.TB, m *testMux, name string, post bool) {
	t.Helper()
	addr := m.addr(name)
	if post {
		cc := h2Conn(t, addr, "")
		status, body, err := h2Post(t, cc, "http://www.test/post", "a body")
		_ = cc.Close()
		if err != nil || status != http.StatusOK {
			t.Fatalf("POST on %s: %d %q %v", name, status, body, err)
		}
	} else if resp := getOnce(t, addr, "www.test", "/"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("GET on %s: %q", name, resp)
	}
	m.waitIdle()
}

// pooledOn is listener's portmux_http_backend_connections: its open
// backend connections, idle ones included.
func pooledOn(m *testMux, listener string) float64 {
	return m.metricSum("portmux_http_backend_connections", map[string]string{"listener": listener})
}

// TestIdleBackendGivesItsSlotToANewClient: a listener at its cap
// because http mode keeps backend connections alive admits a new client
// in the slot of one of them, as a request would get it: on a port that
// carries SSH beside the web, the cache must not turn SSH users away.
// Once nothing is idle, the cap refuses as before.
func TestIdleBackendGivesItsSlotToANewClient(t *testing.T) {
	t.Parallel()
	web, ssh := peers.HTTPBackend(t, "web"), echoBackend(t)
	l := listenerOn("pub", routeTo("ssh", snapshot.SSH, ssh.Addr), httpRoute("web", web.Addr))
	l.MaxConnections = 3
	m := startMux(t, snapshotOf(l))
	pub := m.addr("pub")

	// Two kept-alive backend connections, the GET's client gone before
	// the POST, which is thus not at the cap.
	keepAlive(t, m, "pub", false)
	keepAlive(t, m, "pub", true)
	if n := pooledOn(m, "pub"); n != 2 {
		t.Fatalf("portmux_http_backend_connections %v, want 2 (pooled)", n)
	}

	// Three SSH users: the first takes the free slot, the next two the
	// idle connections'.
	for i := range 3 {
		c := dial(t, pub)
		defer c.Close()
		roundTrip(t, c, fmt.Sprintf("SSH-2.0-user%d\r\n", i))
	}
	if n := pooledOn(m, "pub"); n != 0 {
		t.Errorf("portmux_http_backend_connections %v with three SSH users, want 0", n)
	}
	if n := m.outcomeCount("pub", dataplane.OutcomeRejected); n != 0 {
		t.Errorf("%d connections rejected, want 0", n)
	}
	// A fourth finds the cap full of users, nothing to evict.
	c := dial(t, pub)
	defer c.Close()
	if err := closedByPeer(c, ioTimeout); err != nil {
		t.Errorf("a fourth SSH user at the cap: %v", err)
	}
	peers.Until(t, ioTimeout, "the fourth to be counted rejected", func() bool { return m.outcomeCount("pub", dataplane.OutcomeRejected) == 1 })
}

// TestGlobalCapTakesAnyListenersIdle: at the global maxConnections, the
// idle backend connections any listener keeps alive give their slots up
// to a new client or a request of another listener. They hold slots of
// the cap that is full, and they are a cache: before, only the full
// listener's own idle connections gave way, so one tenant's kept-alive
// pool, up to 1,024 connections a route, could turn away every other
// tenant's clients for as long as it stayed idle.
func TestGlobalCapTakesAnyListenersIdle(t *testing.T) {
	t.Parallel()
	t.Run("new clients", func(t *testing.T) {
		t.Parallel()
		web, ssh := peers.HTTPBackend(t, "web"), echoBackend(t)
		snap := snapshotOf(listenerOn("web", httpRoute("web", web.Addr)), listenerOn("ssh", routeTo("ssh", snapshot.SSH, ssh.Addr)))
		snap.MaxConnections = 3
		m := startMux(t, snap)
		keepAlive(t, m, "web", false)
		keepAlive(t, m, "web", true)
		if n := pooledOn(m, "web"); n != 2 {
			t.Fatalf("portmux_http_backend_connections{listener=web} %v, want 2 (pooled)", n)
		}

		// Three SSH users on the other listener: the first takes the free
		// slot, the next two the web listener's idle connections'.
		for i := range 3 {
			c := dial(t, m.addr("ssh"))
			defer c.Close()
			roundTrip(t, c, fmt.Sprintf("SSH-2.0-user%d\r\n", i))
		}
		if n := pooledOn(m, "web"); n != 0 {
			t.Errorf("portmux_http_backend_connections{listener=web} %v with three SSH users, want 0", n)
		}
		if n := m.outcomeCount("ssh", dataplane.OutcomeRejected); n != 0 {
			t.Errorf("%d connections rejected, want 0", n)
		}
		// A fourth finds the cap full of users, nothing to evict.
		c := dial(t, m.addr("ssh"))
		defer c.Close()
		if err := closedByPeer(c, ioTimeout); err != nil {
			t.Errorf("a fourth SSH user at the cap: %v", err)
		}
		peers.Until(t, ioTimeout, "the fourth to be counted rejected", func() bool { return m.outcomeCount("ssh", dataplane.OutcomeRejected) == 1 })
	})

	for _, tc := range []struct {
		name string
		post bool
	}{
		{"an HTTP/1.1 GET", false},
		{"an HTTP/2 POST", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := peers.HTTPBackend(t, "a"), peers.HTTPBackend(t, "b")
			snap := snapshotOf(listenerOn("a", httpRoute("a", a.Addr)), listenerOn("b", httpRoute("b", b.Addr)))
			snap.MaxConnections = 2
			m := startMux(t, snap)
			keepAlive(t, m, "a", false)
			if n := pooledOn(m, "a"); n != 1 {
				t.Fatalf("portmux_http_backend_connections{listener=a} %v, want 1 (pooled)", n)
			}
			// b's client takes the last slot; its request needs another,
			// which a's idle connection holds.
			keepAlive(t, m, "b", tc.post)
			if n := m.httpRequestCount("b", dataplane.RequestUnavailable); n != 0 {
				t.Errorf("%d requests counted unavailable, want 0", n)
			}
			m.waitIdle()
			if n, m := pooledOn(m, "a"), pooledOn(m, "b"); n != 0 || m != 1 {
				t.Errorf("pooled backend connections: a %v, b %v; want 0 and 1", n, m)
			}
		})
	}
}

// TestHTTPModeLoopsIdleGoBeforeTransports: at the cap one idle
// connection gives its slot up, before net/http's Transport is asked to
// close all of its idle connections together. A request on a relay loop
// used to ask its Slot, which went to the Transports, before the loops
// looked at their own idle connections.
func TestHTTPModeLoopsIdleGoBeforeTransports(t *testing.T) {
	t.Parallel()
	a, b := peers.HTTPBackend(t, "a"), peers.HTTPBackend(t, "b")
	l := listenerOn("pub", httpRoute("a", a.Addr, "a.test"), httpRoute("b", b.Addr))
	l.MaxConnections = 3
	m := startMux(t, snapshotOf(l))
	pub := m.addr("pub")

	// An idle connection to a, from a bodiless GET (the loops' pool, or
	// a direct pool without loops), and one to b, from an HTTP/2 POST
	// (the Transport's).
	if resp := getOnce(t, pub, "a.test", "/"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("GET a: %q", resp)
	}
	m.waitIdle()
	cc := h2Conn(t, pub, "")
	if status, body, err := h2Post(t, cc, "http://b.test/post", "a body"); err != nil || status != http.StatusOK {
		t.Fatalf("POST b: %d %q %v", status, body, err)
	}
	_ = cc.Close()
	m.waitIdle()

	// A GET to b at the cap needs a new connection: a's idle one gives
	// its slot, and the Transport keeps its own.
	if resp := getOnce(t, pub, "b.test", "/again"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("GET b at the cap: %q", resp)
	}
	peers.Until(t, ioTimeout, "a's idle connection to close", func() bool { return a.OpenConns() == 0 })
	if n := b.OpenConns(); n != 2 {
		t.Errorf("b has %d connections open, want 2: the Transport's idle one and the GET's", n)
	}
}

// TestHTTPModeBusyTransportKeepsItsConnection: a request at the cap with
// nothing idle to evict gets its 503 and leaves net/http's Transport
// alone. Asking the Transport to close its idle connections, when it
// had none, used to close its busy one too as soon as its request
// ended: each request refused at the cap cost the next one a new dial.
func TestHTTPModeBusyTransportKeepsItsConnection(t *testing.T) {
	t.Parallel()
	backend := newGateBackend(t)
	l := listenerOn("pub", httpRoute("web", backend.Addr))
	l.MaxConnections = 2 // the client's connection and one backend connection
	m := startMux(t, snapshotOf(l))
	cc := h2Conn(t, m.addr("pub"), "")
	defer cc.Close()

	first := make(chan int, 1)
	go func() {
		status, _, _ := h2Post(t, cc, "http://www.test/first", "a body")
		first <- status
	}()
	peers.Until(t, ioTimeout, "the first POST at the backend", func() bool { return len(backend.Requests()) == 1 })
	if status, _, err := h2Post(t, cc, "http://www.test/second", "a body"); err != nil || status != http.StatusServiceUnavailable {
		t.Errorf("a POST at the cap: %d %v, want 503", status, err)
	}
	close(backend.gate)
	if status := <-first; status != http.StatusOK {
		t.Fatalf("the first POST: %d", status)
	}
	if status, _, err := h2Post(t, cc, "http://www.test/third", "a body"); err != nil || status != http.StatusOK {
		t.Fatalf("the third POST: %d %v", status, err)
	}
	reqs := backend.Requests()
	if len(reqs) != 2 || reqs[0].RemoteAddr != reqs[1].RemoteAddr {
		t.Errorf("the backend saw %+v, want the first and third POSTs on one connection", reqs)
	}
}

// TestHTTPModeRouteIdleTimeout: the idleTimeout of the route a
// connection's first request chose is its keep-alive idle time.
func TestHTTPModeRouteIdleTimeout(t *testing.T) {
	t.Parallel()
	web := peers.HTTPBackend(t, "web")
	r := httpRoute("web", web.Addr)
	r.IdleTimeout = 300 * time.Millisecond
	m := startMux(t, snapshotOf(listenerOn("pub", r)))
	c := dial(t, m.addr("pub"))
	if status, _ := exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 {
		t.Fatalf("first request: %d", status)
	}
	if err := closedByPeer(c, ioTimeout); err != nil {
		t.Fatalf("idle kept-alive connection: %v", err)
	}
	m.waitIdle()
}

// TestHTTPModeHTTP2WithheldWindow: an HTTP/2 client that reads its
// socket but opens no flow-control window for a response held that
// response's stream, and the backend connection streaming it, for as
// long as it liked. After the write timeout it gets GOAWAY
// ENHANCE_YOUR_CALM, the connection closes and so does the backend's.
func TestHTTPModeHTTP2WithheldWindow(t *testing.T) {
	t.Parallel()
	web := peers.HTTPHandler(t, "web", func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("b"), 64<<10)
		for i := 0; i < 64 && r.Context().Err() == nil; i++ { // 4 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	m := newMux(t, dataplane.Options{HTTP: dataplane.HTTPLimits{WriteTimeout: 300 * time.Millisecond}})
	m.apply(snapshotOf(listenerOn("pub", httpRoute("web", web.Addr))))
	c := dial(t, m.addr("pub"))
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	fr := h2Open(t, c, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	get := h2Block(":method", "GET", ":scheme", "http", ":authority", "www.test", ":path", "/big")
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, ioTimeout, "the request to reach the backend", func() bool { return web.OpenConns() == 1 })
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			break
		}
	}
	for { // what follows GOAWAY (a reset of the stream), then the end
		if _, err := fr.ReadFrame(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the connection stayed open after GOAWAY")
			}
			break
		}
	}
	peers.Until(t, ioTimeout, "the backend connection to close", func() bool { return web.OpenConns() == 0 })
	m.waitIdle()
}
