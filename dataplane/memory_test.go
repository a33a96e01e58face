package dataplane_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// TestEndedConnectionsLeaveNoMemory: what a connection held is free once
// it ends, on every path (forwarded, ended while probing or for want of
// a route, TLS passed through or terminated, HTTP/1.1 and HTTP/2 in
// clear and over TLS, HTTP clients that leave mid-head or before the
// answer, UDP sessions), not when a timer it armed would have fallen
// due. The relay loops once kept an ended connection (its Session, a
// kilobyte and more) in their timer heap until its probe deadline, dial
// timeout or idle timeout came: an hour, for one that had lived past
// 100 ms. A client opening and closing connections could make the
// dataplane hold as many as it liked, beyond every connection limit.
//
// Connections go one at a time (the next once the dataplane let go of
// the last), after a warm-up of as many that fills what the dataplane
// keeps on purpose (the loops' buffer free lists, the backend pool, the
// metrics' series); the live heap is compared after a collection.
func TestEndedConnectionsLeaveNoMemory(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(web.Close)
	webAddr := strings.TrimPrefix(web.URL, "http://")
	backend := echoBackend(t)
	cert := peers.CertPair(t, "a.test")
	tlsBackend := peers.NewTCPServer(t, func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert.TLS}})
		_, _ = io.Copy(tc, tc)
		_ = tc.Close()
	}).Addr

	srv := dataplane.NewServer(dataplane.Options{
		RelayLoops: *relayLoops,
		Log:        logr.Discard(), // a line a connection would be memory too
		Metrics:    dataplane.NewMetrics(prometheus.NewRegistry()),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	snap := snapshotOf(
		listenerOn("tcp", routeTo("any", snapshot.Any, backend.Addr)),
		listenerOn("web", httpRoute("web", webAddr)),
		listenerOn("pass", passTLS("pass", tlsBackend, "a.test")),
		terminating("tcptls", tlsOf(nil, cert), routeTo("any", snapshot.Any, backend.Addr)),
		terminating("webtls", tlsOf([]string{"h2", "http/1.1"}, cert), httpRoute("web", webAddr)),
	)
	if errs := srv.Apply(snap); len(errs) > 0 {
		t.Fatalf("Apply: %v", errs)
	}

	paths := []struct {
		name, listener string
		n              int // connections measured, after as many to warm up
		conn           func(t *testing.T, c net.Conn)
	}{
		{"forwarded", "tcp", 2000, sshEcho},
		{"left while probing", "pass", 2000, func(t *testing.T, c net.Conn) {
			if _, err := c.Write([]byte{0x16, 0x03, 0x01}); err != nil { // half a record header
				t.Fatal(err)
			}
		}},
		{"no route", "pass", 2000, func(t *testing.T, c net.Conn) {
			if _, err := io.WriteString(c, "SSH-2.0-x\r\n"); err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, c); err != nil { // the dataplane closes it
				t.Fatal(err)
			}
		}},
		{"TLS passed through", "pass", 500, func(t *testing.T, c net.Conn) {
			sshEcho(t, tls.Client(c, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true}))
		}},
		{"TLS terminated, forwarded", "tcptls", 500, func(t *testing.T, c net.Conn) {
			sshEcho(t, tls.Client(c, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true}))
		}},
		{"http", "web", 2000, getOn},
		{"http, left mid-head", "web", 2000, func(t *testing.T, c net.Conn) {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Half: "); err != nil {
				t.Fatal(err)
			}
		}},
		{"http, left before the answer", "web", 2000, func(t *testing.T, c net.Conn) {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}},
		{"h2c", "web", 2000, func(t *testing.T, c net.Conn) { h2GetOn(t, c, "http") }},
		{"h2c, stream reset", "web", 2000, func(t *testing.T, c net.Conn) {
			fr := h2Start(t, c, "http")
			if err := fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
				t.Fatal(err)
			}
		}},
		{"http over TLS", "webtls", 500, func(t *testing.T, c net.Conn) {
			getOn(t, tls.Client(c, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}))
		}},
		{"h2 over TLS", "webtls", 500, func(t *testing.T, c net.Conn) {
			h2GetOn(t, tls.Client(c, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, NextProtos: []string{"h2"}}), "https")
		}},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			addr := srv.Addr(p.listener).String()
			run := func(count int) {
				for range count {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					_ = c.SetDeadline(time.Now().Add(ioTimeout))
					p.conn(t, c)
					_ = c.Close()
					waitEnded(t, srv)
				}
			}
			run(p.n)
			peers.HeldAfter(t, p.n, heldLimit, "connections", run)
		})
	}

	// UDP: a session per client socket, one datagram each way, ended by
	// its idle timeout (UDP has no close).
	t.Run("udp", func(t *testing.T) {
		const n = 500
		r := routeTo("udp", snapshot.Any, plainUDPEcho(t))
		r.IdleTimeout = 50 * time.Millisecond
		if errs := srv.Apply(snapshotOf(append(snap.Listeners, udpListenerOn("udp", r))...)); len(errs) > 0 {
			t.Fatalf("Apply: %v", errs)
		}
		addr := srv.Addr("udp").String()
		run := func(count int) {
			for range count {
				c, err := net.Dial("udp", addr)
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(ioTimeout))
				if _, err := c.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Read(make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				_ = c.Close()
			}
			peers.Until(t, ioTimeout, "every UDP session to end", func() bool { return srv.UDPSessions() == 0 })
		}
		// Sessions outlive their client's socket by the idle timeout,
		// so many are open at once: the warm-up opens as many, for the
		// session table to reach the size the measured run needs (a Go
		// map keeps its buckets after deletes).
		run(n)
		peers.HeldAfter(t, n, heldLimit, "UDP sessions", run)
	})
}

// plainUDPEcho is a UDP echo that keeps nothing of its clients
// (peers.UDPEcho remembers every source address, the dataplane's socket
// of each session), and returns its address.
func plainUDPEcho(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		_ = pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// heldLimit is the most the live heap may grow by per ended connection:
// noise, far below what any connection holds. The relay loops' dead
// timers held 1.2 KB and more.
const heldLimit = 100

// waitEnded waits until srv holds no connection. Each connection of the
// test ends before the next starts: a dataplane that lags behind its
// client would hold several at once, growing what it keeps on purpose
// (the loops' buffer free lists) past what the warm-up grew.
func waitEnded(t *testing.T, srv *dataplane.Server) {
	deadline := time.Now().Add(ioTimeout)
	for srv.ActiveConnections() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the dataplane still holds %d connections", srv.ActiveConnections())
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// sshEcho sends an SSH client's first line on c and reads it back from
// the echo behind.
func sshEcho(t *testing.T, c net.Conn) { roundTrip(t, c, "SSH-2.0-x\r\n") }

// getOn sends a GET on c and reads its answer, which must be 200.
func getOn(t *testing.T, c net.Conn) {
	if status, _ := exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); status != http.StatusOK {
		t.Fatalf("status %d, want 200", status)
	}
}

// h2GetOn sends GET / as HTTP/2's first stream on c and reads its
// answer, which must be 200. Frames by hand: x/net's client keeps a
// connection used for one request in its pool for 5 s after it closed,
// which would count as the dataplane's memory.
func h2GetOn(t *testing.T, c net.Conn, scheme string) {
	fr := h2Start(t, c, scheme)
	status := ""
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after status %q: %v", status, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
		if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream) {
			break
		}
	}
	if status != "200" {
		t.Fatalf("status %q, want 200", status)
	}
}

// h2Start opens HTTP/2 on c and sends GET / as its first stream.
func h2Start(t *testing.T, c net.Conn, scheme string) *http2.Framer {
	fr := h2Open(t, c)
	get := h2Block(":method", "GET", ":scheme", scheme, ":authority", "a", ":path", "/")
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	return fr
}
