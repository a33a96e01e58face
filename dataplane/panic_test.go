package dataplane_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// panickyListener hands out connections whose Read panics when the bytes
// it returns hold trigger: a stand-in for a bug that a client's bytes
// reach, in a sniffer or a forwarder.
type panickyListener struct {
	net.Listener
	trigger string
}

func (l panickyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &panickyConn{Conn: c, trigger: l.trigger}, nil
}

type panickyConn struct {
	net.Conn
	trigger string
}

func (c *panickyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if strings.Contains(string(b[:n]), c.trigger) {
		panic("bug reached by " + c.trigger)
	}
	return n, err
}

// listenPanicky listens as the dataplane does, through a panickyListener
// with trigger.
func listenPanicky(trigger string) func(context.Context, string) (net.Listener, error) {
	return func(ctx context.Context, address string) (net.Listener, error) {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", address)
		if err != nil {
			return nil, err
		}
		return panickyListener{Listener: ln, trigger: trigger}, nil
	}
}

// TestPanicEndsOnlyItsConnection: a panic while sniffing one connection,
// and one while forwarding another, close those two connections, are
// counted, and every other connection (open before, or new) is served.
func TestPanicEndsOnlyItsConnection(t *testing.T) {
	backend := echoBackend(t)
	m := newMux(t, dataplane.Options{
		Listen: listenPanicky("BOOM"),
	})
	m.apply(snapshotOf(listenerOn("pub", routeTo("ssh", snapshot.SSH, backend.Addr))))
	pub := m.addr("pub")

	before := dial(t, pub)
	roundTrip(t, before, "SSH-2.0-before\r\n")

	sniffed := dial(t, pub) // panics in the probe
	if _, err := sniffed.Write([]byte("SSH-2.0-BOOM\r\n")); err != nil {
		t.Fatal(err)
	}
	forwarded := dial(t, pub) // panics while forwarding
	roundTrip(t, forwarded, "SSH-2.0-forwarded\r\n")
	if _, err := forwarded.Write([]byte("BOOM\n")); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"sniffed": sniffed, "forwarded": forwarded} {
		if err := closedByPeer(c, ioTimeout); err != nil {
			t.Errorf("%s: the connection that panicked was not closed: %v", name, err)
		}
	}

	roundTrip(t, before, "still served\n")
	after := dial(t, pub)
	roundTrip(t, after, "SSH-2.0-after\r\n")

	if n := m.metricSum("portmux_panics_total", nil); n != 2 {
		t.Errorf("portmux_panics_total = %v, want 2", n)
	}
	_ = before.Close()
	_ = after.Close()
	m.waitIdle()
}

// TestPanicInHTTPModeEndsOnlyItsConnection: net/http recovers a panic on
// its connection's goroutine itself; the dataplane counts and logs it like
// any other, and serves the other clients.
func TestPanicInHTTPModeEndsOnlyItsConnection(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.URL.Path)
	}))
	t.Cleanup(web.Close)
	m := newMux(t, dataplane.Options{
		Listen: listenPanicky("BOOM"),
	})
	r := routeTo("web", snapshot.HTTP, strings.TrimPrefix(web.URL, "http://"))
	r.Backend.Mode = snapshot.ModeHTTP
	m.apply(snapshotOf(listenerOn("pub", r)))
	pub := m.addr("pub")

	get := func(c net.Conn, path string) string {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: web.test\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	doomed := dial(t, pub)
	if got := get(doomed, "/first"); got != "hello /first" {
		t.Fatalf("first request: %q", got)
	}
	// The second request's bytes make net/http's read panic.
	if _, err := io.WriteString(doomed, "GET /BOOM HTTP/1.1\r\nHost: web.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := closedByPeer(doomed, ioTimeout); err != nil {
		t.Fatalf("the connection that panicked: %v", err)
	}
	other := dial(t, pub)
	if got := get(other, "/other"); got != "hello /other" {
		t.Fatalf("another client: %q", got)
	}
	if n := m.metricSum("portmux_panics_total", nil); n != 1 {
		t.Errorf("portmux_panics_total = %v, want 1", n)
	}
	_ = other.Close()
	m.waitIdle()
}
