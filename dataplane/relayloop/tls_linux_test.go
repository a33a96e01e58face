package relayloop_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/tlsmem"
	"github.com/portmux/portmux/test/peers"
)

// adoptedTLS is a TLS client connection whose server side did its
// handshake on a goroutine, read firstBytes of plaintext, and was then
// adopted by set for e: the dataplane's TLS path, shortened.
func adoptedTLS(t *testing.T, set *relayloop.Set, e *exchanger, firstRequest string, firstBytes int) *tls.Conn {
	t.Helper()
	return adoptedTLSWith(t, set, e, firstRequest, firstBytes, adoptHooks{})
}

// adoptHooks let a test see the TLS layer adopted (keep) and tune the
// socket before the loop takes it.
type adoptHooks struct {
	keep func(*relayloop.TLS)
	tune func(fd int)
}

// adoptedTLSWith is adoptedTLS with hooks.
func adoptedTLSWith(t *testing.T, set *relayloop.Set, e *exchanger, firstRequest string, firstBytes int, h adoptHooks) *tls.Conn {
	t.Helper()
	cert := peers.CertPair(t, "a.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Client(nc, &tls.Config{ServerName: "a.test", RootCAs: roots})
	t.Cleanup(func() { _ = client.Close() })
	_ = client.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		if err := client.Handshake(); err == nil {
			_, _ = io.WriteString(client, firstRequest)
		}
	}()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	mem := tlsmem.New(raw)
	server := tls.Server(mem, &tls.Config{Certificates: []tls.Certificate{*cert.TLS}})
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	read := make([]byte, firstBytes)
	if _, err := io.ReadFull(server, read); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Time{})
	fd := dupSocket(t, raw)
	_ = raw.Close()
	peer := raw.RemoteAddr().(*net.TCPAddr).AddrPort()
	layer := &relayloop.TLS{Conn: server, Mem: mem}
	if h.keep != nil {
		h.keep(layer)
	}
	if h.tune != nil {
		h.tune(fd)
	}
	mem.Detach(nil, nil)
	if _, err := set.Adopt(fd, peer, handler(func(*relayloop.Conn) relayloop.Session { return e }), layer, read); err != nil {
		t.Fatal(err)
	}
	return client
}

// dupSocket is a descriptor of c's socket of its own.
func dupSocket(t *testing.T, c net.Conn) int {
	t.Helper()
	sc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var derr error
	if err := sc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	return fd
}

func newSet(t *testing.T) *relayloop.Set {
	t.Helper()
	set, err := relayloop.New(relayloop.Options{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = set.Close() })
	return set
}

// TestAdoptTLS: a TLS connection adopted after its handshake is carried
// as exchanges, its first request's bytes read on the goroutine
// included: keep-alive requests with and without bodies, a response
// and a request of a megabyte (many records, the socket full both ways),
// and at the end close_notify before the socket's end.
func TestAdoptTLS(t *testing.T) {
	be, conns := httpBackend(t, echoHandler)
	set := newSet(t)
	e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	first := "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
	client := adoptedTLS(t, set, e, first, 7) // the loop reads the rest
	br := bufio.NewReader(client)
	if resp, body := readResponse(t, br, false); resp.StatusCode != http.StatusOK || body != "GET /first loop=yes body=" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for _, tt := range []struct{ raw, want string }{
		{"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "POST /b loop=yes body=hello"},
		{"GET /d/chunked HTTP/1.1\r\nHost: x\r\n\r\n", "GET /d/chunked loop=yes body="},
		{"HEAD /e HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		{"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + big, "POST /big loop=yes body=" + big},
		{"GET /answer HTTP/1.1\r\nHost: x\r\n\r\n", "nope"},
	} {
		done := make(chan error, 1)
		go func() { _, err := io.WriteString(client, tt.raw); done <- err }()
		resp, body := readResponse(t, br, strings.HasPrefix(tt.raw, "HEAD"))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if body != tt.want {
			t.Errorf("%.40q: %d, %d bytes (%.60q), want %d", tt.raw, resp.StatusCode, len(body), body, len(tt.want))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
	// Connection: close from the exchanger's /close: the answer, then
	// close_notify, then the end.
	if _, err := io.WriteString(client, "GET /close HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, body := readResponse(t, br, false); body != "GET /close loop=yes body=" {
		t.Errorf("/close: %q", body)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after /close: %d, %v; want io.EOF (close_notify)", n, err)
	}
	if r := e.wait(t); r.Err != nil {
		t.Errorf("Done: %v", r.Err)
	}
}

// TestAdoptTLSHandOff: a request the loop does not carry hands the
// connection back with its TLS layer, which goes on over the socket
// from where the loop left it.
func TestAdoptTLSHandOff(t *testing.T) {
	be, _ := httpBackend(t, echoHandler)
	set := newSet(t)
	e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	type handed struct {
		fd   int
		read []byte
	}
	got := make(chan handed, 1)
	e.handOff = func(fd int, read []byte) { got <- handed{fd, append([]byte(nil), read...)} }
	var layer *relayloop.TLS
	first := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	client := adoptedTLSKeep(t, set, e, first, &layer)
	br := bufio.NewReader(client)
	if _, body := readResponse(t, br, false); body != "GET /a loop=yes body=" {
		t.Fatalf("first: %q", body)
	}
	if _, err := io.WriteString(client, "GET /handoff HTTP/1.1\r\nHost: x\r\n\r\nGET /next"); err != nil {
		t.Fatal(err)
	}
	var h handed
	select {
	case h = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no hand-off")
	}
	f := os.NewFile(uintptr(h.fd), "")
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := layer.Mem.Attach(nc); err != nil {
		t.Fatal(err)
	}
	// The handed-off request, then what followed it, read on the
	// goroutine through the same TLS connection.
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	want := "GET /handoff HTTP/1.1\r\nHost: x\r\n\r\nGET /next"
	rest := make([]byte, len(want)-len(h.read))
	if _, err := io.ReadFull(layer.Conn, rest); err != nil {
		t.Fatal(err)
	}
	if string(h.read)+string(rest) != want {
		t.Errorf("handed off %q, then read %q; want %q", h.read, rest, want)
	}
	if _, err := io.WriteString(layer.Conn, "HTTP/1.1 204 No Content\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("answer on the goroutine: %v, %v", resp, err)
	}
}

// adoptedTLSKeep is adoptedTLS that also returns the layer, for a
// hand-off's receiver.
func adoptedTLSKeep(t *testing.T, set *relayloop.Set, e *exchanger, first string, layer **relayloop.TLS) *tls.Conn {
	t.Helper()
	var kept *relayloop.TLS
	client := adoptedTLSWith(t, set, e, first, len(first), adoptHooks{keep: func(l *relayloop.TLS) { kept = l }})
	*layer = kept
	return client
}

// TestAdoptTLSSmallSocket: a response through a socket that takes less
// than a record at a time arrives whole: the records the socket did not
// take wait for its next edge, the last ones after the exchange is over
// included.
func TestAdoptTLSSmallSocket(t *testing.T) {
	const size = 1 << 20
	be, _ := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(bytes.Repeat([]byte{'x'}, size))
	})
	set := newSet(t)
	e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	req := "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
	client := adoptedTLSWith(t, set, e, req, len(req), adoptHooks{tune: func(fd int) {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
			t.Fatal(err)
		}
	}})
	br := bufio.NewReader(client)
	for i := range 3 {
		if i > 0 {
			if _, err := io.WriteString(client, req); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != size {
			t.Fatalf("response %d: read %d of %d bytes: %v", i, n, size, err)
		}
	}
}

// TestAdoptTLSClientLeaves: a client that closes while its response is
// awaited ends the exchange (the backend's work is for nobody), and one
// that shuts its side after pipelining a second request still gets the
// first answer, the second request reaching the backend before the
// client counts as gone, as in clear: under TLS both send bytes before
// their end (close_notify), so only decrypting them tells the two apart.
func TestAdoptTLSClientLeaves(t *testing.T) {
	var second atomic.Int64
	be, _ := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/second" {
			second.Add(1)
		}
		time.Sleep(300 * time.Millisecond)
		echoHandler(w, r)
	})
	set := newSet(t)

	e := newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	req := "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
	client := adoptedTLS(t, set, e, req, len(req))
	time.Sleep(50 * time.Millisecond)
	_ = client.Close()
	if r := e.wait(t); !errors.Is(r.Err, relayloop.ErrClientLeft) {
		t.Errorf("Done: %v, want the client gone", r.Err)
	}

	e = newExchanger(&relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "p"})
	client = adoptedTLS(t, set, e, req, len(req))
	if _, err := io.WriteString(client, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// close_notify, then the socket's end (crypto/tls sends only the
	// first).
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := client.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, body := readResponse(t, bufio.NewReader(client), false); body != "GET /slow loop=yes body=" {
		t.Errorf("first answer %q", body)
	}
	if r := e.wait(t); !errors.Is(r.Err, relayloop.ErrClientLeft) {
		t.Errorf("Done: %v, want the client gone", r.Err)
	}
	// The backend reads what was sent before the cut in its own time.
	peers.Until(t, 10*time.Second, "/second to reach the backend", func() bool { return second.Load() == 1 })
}
