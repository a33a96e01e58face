package dataplane_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// Clients that misbehave cost the dataplane a timer, are closed on time and
// delay nobody else. Bounds are generous (probe timeout + 5s): these tests
// assert that something happens, never how fast.

func TestSilentClientTakesTimeoutRoute(t *testing.T) {
	t.Parallel()
	const banner = "SSH-2.0-ServerSpeaksFirst\r\n"
	speaker := greetingEchoBackend(t, banner)
	other := echoBackend(t)
	l := listenerOn("pub",
		routeTo("tls", snapshot.TLS, other.Addr),
		routeTo("silent", snapshot.Timeout, speaker.Addr),
		routeTo("any", snapshot.Any, other.Addr),
	)
	l.ProbeTimeout = 200 * time.Millisecond
	m := startMux(t, snapshotOf(l))

	c := dial(t, m.addr("pub"))
	br := bufio.NewReader(c)
	// The client says nothing and waits for the server's banner.
	if got := readLine(t, br, c); got != banner {
		t.Fatalf("silent client received %q, want the banner %q", got, banner)
	}
	// Then the connection is an ordinary forwarded one.
	roundTrip(t, c, "hello\n")
	if n := other.Accepted(); n != 0 {
		t.Fatalf("the tls/any backend got %d connections", n)
	}
	m.hangUp(c)
}

// halfClientHello is the first 40 bytes of curl's real ClientHello: a TLS
// record that never completes.
func halfClientHello(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("sniff", "testdata", "corpus", "tls13_clienthello_curl.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 40 || b[0] != 0x16 {
		t.Fatalf("corpus ClientHello is not a TLS record (%d bytes)", len(b))
	}
	return b[:40]
}

func TestMisbehavingClientsClosedOnTimeOthersServed(t *testing.T) {
	t.Parallel()
	const probeTimeout = 500 * time.Millisecond
	const bound = probeTimeout + 5*time.Second
	backend := echoBackend(t)
	// No timeout or any route: a client that does not finish a protocol
	// has nowhere to go and must be closed.
	l := listenerOn("pub",
		routeTo("ssh", snapshot.SSH, backend.Addr),
		routeTo("tls", snapshot.TLS, backend.Addr),
		routeTo("http", snapshot.HTTP, backend.Addr),
	)
	l.ProbeTimeout = probeTimeout
	m := startMux(t, snapshotOf(l))
	pub := m.addr("pub")

	garbage := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	garbage[0] = 0xff // neither "SSH-", a TLS record nor an HTTP token

	// trickle sends body one byte every interval until stop or an error.
	trickle := func(body string, interval time.Duration) func(w io.Writer, stop <-chan struct{}) {
		return func(w io.Writer, stop <-chan struct{}) {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i = (i + 1) % len(body) {
				if _, err := w.Write([]byte{body[i]}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}
	}
	// An HTTP request line that never ends: the HTTP route keeps asking
	// for more.
	slowRequest := "GET /" + strings.Repeat("a", 1000)

	type misbehaving struct {
		name  string
		first []byte // sent at once
		// slow, when set, keeps writing until the client is closed.
		slow func(w io.Writer, stop <-chan struct{})
	}
	cases := []misbehaving{
		{name: "garbage", first: garbage},
		{name: "half-clienthello", first: halfClientHello(t)},
		{name: "silent"},
		{name: "slowloris-1B/s", slow: trickle(slowRequest, time.Second)},
		// Faster than the probe timeout: the probe deadline is absolute,
		// not renewed by each byte.
		{name: "slowloris-20B/s", slow: trickle(slowRequest, 50*time.Millisecond)},
	}

	var wg sync.WaitGroup
	errs := make([]error, len(cases))
	started := make(chan struct{}, len(cases))
	for i, tc := range cases {
		c := dial(t, pub)
		wg.Add(1)
		go func() {
			defer wg.Done()
			stop := make(chan struct{})
			var writer sync.WaitGroup
			if len(tc.first) > 0 {
				if _, err := c.Write(tc.first); err != nil {
					errs[i] = err
					started <- struct{}{}
					return
				}
			}
			if tc.slow != nil {
				writer.Add(1)
				go func() { defer writer.Done(); tc.slow(c, stop) }()
			}
			started <- struct{}{}
			err := closedByPeer(c, bound)
			close(stop)
			writer.Wait()
			if err != nil {
				errs[i] = err
			}
		}()
	}
	for range cases {
		<-started
	}

	// While they hang on, a well-behaved client is served.
	good := dial(t, pub)
	roundTrip(t, good, "SSH-2.0-WellBehaved\r\n")
	roundTrip(t, good, "more bytes after the banner\n")
	_ = good.CloseWrite()
	if err := closedByPeer(good, ioTimeout); err != nil {
		t.Fatalf("well-behaved client: %v", err)
	}

	wg.Wait()
	for i, tc := range cases {
		if errs[i] != nil {
			t.Errorf("%s: not closed by the dataplane within %v: %v", tc.name, bound, errs[i])
		}
	}
	if n := backend.Accepted(); n != 1 {
		t.Errorf("backend accepted %d connections, want only the well-behaved one", n)
	}
	m.waitIdle()
}

func TestMaxConnectionsRejectsTheThird(t *testing.T) {
	t.Parallel()
	backend, l := echoListener(t)
	l.MaxConnections = 2
	m := startMux(t, snapshotOf(l))
	pub := m.addr("pub")

	c1, c2 := dial(t, pub), dial(t, pub)
	// A round trip proves each one was accepted and counted.
	roundTrip(t, c1, "one\n")
	roundTrip(t, c2, "two\n")

	c3 := dial(t, pub) // the kernel accepts; the dataplane closes it
	if err := closedByPeer(c3, ioTimeout); err != nil {
		t.Fatalf("third connection: %v", err)
	}
	roundTrip(t, c1, "one still works\n")
	roundTrip(t, c2, "two still works\n")
	if n := backend.Accepted(); n != 2 {
		t.Fatalf("backend accepted %d connections, want 2", n)
	}

	// A freed slot is taken again.
	_ = c1.Close()
	peers.Until(t, ioTimeout, "the first connection to be released", func() bool { return m.ActiveConnections() == 1 })
	c4 := dial(t, pub)
	roundTrip(t, c4, "four\n")
	roundTrip(t, c2, "two after four\n")

	_ = c2.Close()
	_ = c4.Close()
	m.waitIdle()
}

func TestShutdownDrainsOpenConnections(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	m := startMux(t, snapshotOf(listenerOn("pub", routeTo("any", snapshot.Any, backend.Addr))))
	pub := m.addr("pub")
	c := dial(t, pub)
	roundTrip(t, c, "before shutdown\n")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- m.Shutdown(ctx)
	}()

	// The port stops accepting...
	peers.Until(t, ioTimeout, "the listener to close", func() bool {
		nc, err := net.DialTimeout("tcp", pub, time.Second)
		if err != nil {
			return true
		}
		_ = nc.Close()
		return false
	})
	// ...while the open connection keeps flowing, and holds Shutdown.
	for i := range 5 {
		roundTrip(t, c, "during shutdown "+string(rune('0'+i))+"\n")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a connection was open", err)
	default:
	}

	_ = c.CloseWrite()
	if err := closedByPeer(c, ioTimeout); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown after the last connection closed: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
	if n := m.ActiveConnections(); n != 0 {
		t.Fatalf("%d connections active after Shutdown", n)
	}
}

func TestShutdownDeadlineCutsConnections(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	m := startMux(t, snapshotOf(listenerOn("pub", routeTo("any", snapshot.Any, backend.Addr))))
	c := dial(t, m.addr("pub"))
	roundTrip(t, c, "open\n")

	done := m.shutdownWithin(200 * time.Millisecond)
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return after its deadline")
	}
	// The client sees its connection cut.
	if err := closedByPeer(c, ioTimeout); err != nil {
		t.Fatalf("connection after Shutdown's deadline: %v", err)
	}
	if n := m.ActiveConnections(); n != 0 {
		t.Fatalf("%d connections active after Shutdown", n)
	}
}

func TestProxyHeaderFollowedByMoreThanMaxProbeBytes(t *testing.T) {
	t.Parallel()
	// The PROXY header is read through a buffer, which takes the bytes the
	// client sent after it too. However small MaxProbeBytes is, none of
	// them may be lost.
	backend := echoBackend(t)
	other := echoBackend(t)
	l := listenerOn("pub",
		routeTo("http", snapshot.HTTP, other.Addr), // undecided until the probe ends
		routeTo("any", snapshot.Any, backend.Addr),
	)
	l.ProxyProtocol = trustingLocalhost()
	l.MaxProbeBytes = 32
	m := startMux(t, snapshotOf(l))
	c := dial(t, m.addr("pub"))

	payload := "GET /" + strings.Repeat("a", 100)
	if _, err := io.WriteString(c, "PROXY TCP4 203.0.113.7 127.0.0.1 4444 443\r\n"+payload); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v (got %d bytes)", err, len(got))
	}
	if string(got) != payload {
		t.Fatalf("backend echoed %d bytes %q, want the %d bytes sent after the PROXY header", len(got), got, len(payload))
	}
	m.waitIdle()
}

func TestShutdownDeadlineCutsConnectionsStillDialling(t *testing.T) {
	t.Parallel()
	r := routeTo("any", snapshot.Any, peers.BlackholeAddr(t))
	r.Backend.DialTimeout = 30 * time.Second
	m := startMux(t, snapshotOf(listenerOn("pub", r)))
	c := dial(t, m.addr("pub"))
	// Seen by the kernel, not by a counter: an active connection may not
	// have reached its dial yet, and a Shutdown then closes it unseen.
	backend := r.Backend.Endpoints[0]
	peers.Until(t, ioTimeout, "the connection to be dialling its backend", func() bool { return peers.SynSentTo(t, backend) == 1 })

	done := m.shutdownWithin(200 * time.Millisecond)
	// Shutdown may not wait out a backend's dial timeout once its own
	// deadline has passed (the bound is generous, the dial timeout larger).
	select {
	case err := <-done:
		if err == nil && m.metricSum("portmux_dial_errors_total", nil) > 0 {
			// Seen in CI on a loaded machine: the kernel answered the
			// full backlog after all and the dial failed by itself, so
			// there was nothing left to cut.
			t.Skip("the blackhole backend refused the dial instead of dropping it")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
		}
	case <-time.After(ioTimeout):
		t.Errorf("Shutdown still waiting %v after its deadline: a backend dial is not cancelled", ioTimeout)
		<-done // let the dial time out, so nothing leaks
	}
	if err := closedByPeer(c, ioTimeout); err != nil {
		t.Fatal(err)
	}
}

// gatedListener hands out each accepted connection only once the test opens
// the gate, and reports when it is closed.
type gatedListener struct {
	net.Listener
	taken  chan struct{} // a connection is held at the gate
	gate   chan struct{}
	closed chan struct{}
	once   sync.Once
}

func (g *gatedListener) Accept() (net.Conn, error) {
	c, err := g.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g.taken <- struct{}{}
	<-g.gate
	return c, nil
}

func (g *gatedListener) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Listener.Close()
}

func TestActiveGaugeBalancedWhenShutdownRacesAccept(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	gl := &gatedListener{taken: make(chan struct{}, 1), gate: make(chan struct{}), closed: make(chan struct{})}
	m := newMux(t, dataplane.Options{
		Listen: func(ctx context.Context, _ string) (net.Listener, error) {
			var lc net.ListenConfig
			ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
			gl.Listener = ln
			return gl, err
		},
	})
	m.apply(snapshotOf(listenerOn("pub", routeTo("any", snapshot.Any, backend.Addr))))
	c := dial(t, m.addr("pub"))
	<-gl.taken // accepted by the kernel and the listener, not yet by the dataplane

	done := make(chan error, 1)
	go func() { done <- m.Shutdown(context.Background()) }()
	<-gl.closed    // Shutdown has stopped the server...
	close(gl.gate) // ...when the accept loop gets the connection
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := closedByPeer(c, ioTimeout); err != nil {
		t.Fatal(err)
	}
	if n := m.ActiveConnections(); n != 0 {
		t.Fatalf("ActiveConnections = %d after Shutdown", n)
	}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "portmux_active_connections" {
			continue
		}
		for _, metric := range f.GetMetric() {
			if v := metric.GetGauge().GetValue(); v != 0 {
				t.Errorf("portmux_active_connections%v = %v after Shutdown, want 0", metric.GetLabel(), v)
			}
		}
	}
}

// TestShutdownWhileClientsArrive: a connection accepted while Shutdown
// starts is either refused or waited for. A clean-clone CI run once
// caught the accept path counting its handler in after the check that
// the server was open, outside the lock (the race detector's "Add
// concurrently with Wait", in a tunnel test's cleanup): Shutdown's wait
// could return before it. The window is a few instructions wide; this
// test did not hit it in 500 runs, and stays as the shutdown-under-load
// check it also is.
func TestShutdownWhileClientsArrive(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	m := newMux(t, dataplane.Options{})
	m.apply(snapshotOf(listenerOn("pub", routeTo("any", snapshot.Any, backend.Addr))))
	addr := m.addr("pub")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, ioTimeout)
				if err != nil {
					continue // refused once the listener closed
				}
				_, _ = c.Write([]byte("x"))
				_ = c.Close()
			}
		})
	}
	time.Sleep(20 * time.Millisecond) // clients arriving
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	err := m.Shutdown(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := m.ActiveConnections(); n != 0 {
		t.Errorf("ActiveConnections = %d after Shutdown", n)
	}
}

// slowHTTPBackend is an HTTP server whose handler answers once the test
// releases it, and that counts the connections open to it (OpenConns).
type slowHTTPBackend struct {
	*peers.HTTPServer
	entered chan struct{}
	release chan struct{}
}

func newSlowHTTPBackend(t testing.TB) *slowHTTPBackend {
	t.Helper()
	b := &slowHTTPBackend{entered: make(chan struct{}, 16), release: make(chan struct{})}
	b.HTTPServer = peers.HTTPHandler(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		b.entered <- struct{}{}
		<-b.release
		_, _ = io.WriteString(w, "ok\n")
	})
	t.Cleanup(func() { openOnce(b.release) }) // before the server's: it waits for the handlers
	return b
}

// getOnce sends one HTTP/1.1 request with Connection: close on a new
// connection to addr and returns the whole response.
func getOnce(t testing.TB, addr, host, path string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return string(resp)
}

func httpModeRoute(addr string) snapshot.Route {
	r := routeTo("web", snapshot.HTTP, addr)
	r.Backend.Mode = snapshot.ModeHTTP
	return r
}

func TestShutdownClosesPooledHTTPBackendConnections(t *testing.T) {
	t.Parallel()
	backend := newSlowHTTPBackend(t)
	close(backend.release) // answer at once
	m := startMux(t, snapshotOf(listenerOn("pub", httpModeRoute(backend.Addr))))
	if resp := getOnce(t, m.addr("pub"), "www.test", "/"); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("response %q", resp)
	}
	m.waitIdle()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The http-mode backend's keep-alive pool is the server's: after
	// Shutdown no connection to the backend (and no goroutine serving one)
	// may be left.
	peers.Until(t, ioTimeout, "Shutdown to close the pooled backend connections", func() bool { return backend.OpenConns() == 0 })
}

// TestDribbledRegexMatchForwarded: a client that sends its bytes one per
// write still reaches the regex route they match, with every byte
// replayed (the probe skips looks to stay linear, never the decision).
func TestDribbledRegexMatchForwarded(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	r := routeTo("magic", snapshot.Bytes, backend.Addr)
	r.Match.Regex = regexp.MustCompile(`magic[0-9]`)
	m := startMux(t, snapshotOf(listenerOn("pub", r)))
	c := dial(t, m.addr("pub"))
	msg := strings.Repeat("x", 3000) + "magic7"
	for i := range len(msg) {
		if _, err := c.Write([]byte{msg[i]}); err != nil {
			t.Fatalf("write byte %d: %v", i, err)
		}
	}
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %v (%d bytes, want the %d sent)", err, len(got), len(msg))
	}
	m.hangUp(c)
}

// TestRouteIdleTimeoutClosesSilentConnections: a route's idleTimeout
// closes the connections it forwards once nothing passed either way for
// that long, with its own outcome.
func TestRouteIdleTimeoutClosesSilentConnections(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	short := routeTo("ssh", snapshot.SSH, backend.Addr)
	short.IdleTimeout = 300 * time.Millisecond
	m := startMux(t, snapshotOf(listenerOn("pub", short, routeTo("any", snapshot.Any, backend.Addr))))
	pub := m.addr("pub")

	c := dial(t, pub)
	roundTrip(t, c, "SSH-2.0-idle\r\n")
	if err := closedByPeer(c, ioTimeout); err != nil {
		t.Fatalf("silent connection: %v", err)
	}
	peers.Until(t, ioTimeout, "an idle_timeout outcome", func() bool {
		return m.outcomeCount("pub", dataplane.OutcomeIdleTimeout) == 1
	})
	m.waitIdle()
}
