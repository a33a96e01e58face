package dataplane_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane"
)

// TestPanicInHTTPModeHandlerEndsOnlyItsConnection: a panic in the
// handler of a request (here, while its body streams to the backend) is
// recovered, counted and logged; its connection is closed and the other
// clients are served, as net/http did.
func TestPanicInHTTPModeHandlerEndsOnlyItsConnection(t *testing.T) {
	headers := make(chan struct{}, 1)
	backend := requestServer(t, func(c net.Conn, _ *bufio.Reader, req *http.Request, _ int) bool {
		if req.Method == http.MethodPost {
			headers <- struct{}{}
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return false
		}
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		return err == nil
	})
	m := newMux(t, dataplane.Options{Listen: listenPanicky("BOOM")})
	m.apply(snapshotOf(listenerOn("pub", httpRoute("web", backend.Addr))))
	pub := m.addr("pub")

	doomed := dial(t, pub)
	if status, body := exchange(t, doomed, bufio.NewReader(doomed), "GET /first HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 || body != "ok\n" {
		t.Fatalf("first request: %d %q", status, body)
	}
	// The body's first part reaches the backend before the rest, which
	// makes the handler's read of it panic.
	if _, err := io.WriteString(doomed, "POST /up HTTP/1.1\r\nHost: www.test\r\nContent-Length: 20004\r\n\r\n"+strings.Repeat("a", 10000)); err != nil {
		t.Fatal(err)
	}
	<-headers
	if _, err := io.WriteString(doomed, "BOOM"+strings.Repeat("b", 10000)); err != nil {
		t.Fatal(err)
	}
	if err := closedByPeer(doomed, ioTimeout); err != nil {
		t.Fatalf("the connection that panicked: %v", err)
	}
	other := dial(t, pub)
	if status, body := exchange(t, other, bufio.NewReader(other), "GET /other HTTP/1.1\r\nHost: www.test\r\n\r\n"); status != 200 || body != "ok\n" {
		t.Errorf("another client: %d %q", status, body)
	}
	if n := m.metricSum("portmux_panics_total", nil); n != 1 {
		t.Errorf("portmux_panics_total = %v, want 1", n)
	}
	_ = other.Close()
	m.waitIdle()
	// The backend connection of the request that panicked was closed:
	// only the one pooled for /other is left.
	if n := m.metricSum("portmux_http_backend_connections", map[string]string{"listener": "pub"}); n != 1 {
		t.Errorf("portmux_http_backend_connections %v after the panic, want 1", n)
	}
}
