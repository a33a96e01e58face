//go:build linux

package forward

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/test/peers"
)

func newParker(t *testing.T) *Parker {
	t.Helper()
	pk, err := NewParker(20 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pk.Close(); err != nil {
			t.Error(err)
		}
	})
	return pk
}

func roundTrip(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(from, msg); err != nil {
		t.Fatal(err)
	}
	_ = to.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
}

func TestIdleDirectionsParkOffTheirGoroutines(t *testing.T) {
	pk := newParker(t)
	client, muxClient, muxBackend, backend := pipeEnds(t)
	done := make(chan Result, 1)
	before := runtime.NumGoroutine()
	Start(muxClient, muxBackend, Options{Parker: pk}, func(r Result) { done <- r })
	roundTrip(t, client, backend, "hello")
	roundTrip(t, backend, client, "world")

	peers.Until(t, 10*time.Second, "both directions parked", func() bool { return pk.Parked() == 2 })
	peers.Until(t, 10*time.Second, "the copy goroutines gone", func() bool { return runtime.NumGoroutine() <= before })

	// Traffic resumes them, in both directions, many times.
	for i := range 20 {
		roundTrip(t, client, backend, fmt.Sprintf("up %d", i))
		roundTrip(t, backend, client, fmt.Sprintf("down %d", i))
		if i%5 == 0 {
			peers.Until(t, 10*time.Second, "parked again", func() bool { return pk.Parked() == 2 })
		}
	}
	// A half-close while parked still reaches the other side.
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(backend); err != nil || len(b) != 0 {
		t.Fatalf("backend after client's half-close: %q, %v", b, err)
	}
	roundTrip(t, backend, client, "still open the other way")
	backend.Close()
	if r := <-done; r.Err != nil || r.Idle {
		t.Fatalf("result %+v", r)
	}
	peers.Until(t, 10*time.Second, "nothing parked", func() bool { return pk.Parked() == 0 })
}

func TestAbortWakesParkedDirections(t *testing.T) {
	pk := newParker(t)
	client, muxClient, muxBackend, _ := pipeEnds(t)
	done := make(chan Result, 1)
	h := Start(muxClient, muxBackend, Options{Parker: pk}, func(r Result) { done <- r })
	peers.Until(t, 10*time.Second, "both directions parked", func() bool { return pk.Parked() == 2 })
	h.Abort()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Abort did not end a parked pipe")
	}
	if pk.Parked() != 0 {
		t.Fatalf("%d directions still parked", pk.Parked())
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read data after Abort")
	}
}

func TestIdleTimeoutEndsParkedPipes(t *testing.T) {
	pk := newParker(t)
	client, backend, done := proxied(t, Options{Parker: pk, IdleTimeout: 200 * time.Millisecond})
	defer client.Close()
	defer backend.Close()
	wantIdle(t, done, 15*time.Second)
}

func TestParkerCloseResumesEverything(t *testing.T) {
	pk, err := NewParker(20 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	client, backend, done := proxied(t, Options{Parker: pk})
	defer client.Close()
	defer backend.Close()
	peers.Until(t, 10*time.Second, "both directions parked", func() bool { return pk.Parked() == 2 })
	if err := pk.Close(); err != nil {
		t.Fatal(err)
	}
	// Back on their goroutines, the directions still carry bytes.
	roundTrip(t, client, backend, "after close")
	client.Close()
	backend.Close()
	<-done
}

func TestManyPipesParkAndWakeConcurrently(t *testing.T) {
	pk := newParker(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, backend, done := proxied(t, Options{Parker: pk})
			defer client.Close()
			defer backend.Close()
			go echo(backend)
			for j := range 10 {
				msg := []byte(fmt.Sprintf("pipe %d msg %d", i, j))
				if _, err := client.Write(msg); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, len(msg))
				_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, msg) {
					t.Errorf("echo %q, %v", got, err)
					return
				}
				time.Sleep(time.Duration(j%3) * 15 * time.Millisecond) // sometimes long enough to park
			}
			client.CloseWrite()
			_, _ = io.ReadAll(client)
			<-done
		}()
	}
	wg.Wait()
	peers.Until(t, 10*time.Second, "nothing parked", func() bool { return pk.Parked() == 0 })
}

// A socket gets TCP keepalive when its direction first parks, so owners can
// accept and dial without it and short connections skip the system calls.
func TestParkedSocketsGetKeepAlive(t *testing.T) {
	pk := newParker(t)
	pair := func() (*net.TCPConn, *net.TCPConn) {
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d := net.Dialer{KeepAlive: -1}
		a, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		b, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return a.(*net.TCPConn), b.(*net.TCPConn)
	}
	keepAlive := func(c *net.TCPConn) int {
		raw, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		_ = raw.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
		return v
	}
	client, muxClient := pair()
	muxBackend, backend := pair()
	defer client.Close()
	defer backend.Close()
	if keepAlive(muxClient) != 0 || keepAlive(muxBackend) != 0 {
		t.Fatal("test sockets start with keepalive on")
	}
	done := make(chan Result, 1)
	Start(muxClient, muxBackend, Options{Parker: pk}, func(r Result) { done <- r })
	peers.Until(t, 10*time.Second, "both directions parked", func() bool { return pk.Parked() == 2 })
	if keepAlive(muxClient) != 1 || keepAlive(muxBackend) != 1 {
		t.Fatalf("keepalive after parking: client side %d, backend side %d", keepAlive(muxClient), keepAlive(muxBackend))
	}
	client.Close()
	backend.Close()
	<-done
}

// A bulk transfer to a slow receiver holds splice longer than the parking
// threshold (the read deadline): the stream must go on, whole.
func TestBulkToASlowReceiverOutlastsTheThreshold(t *testing.T) {
	pk := newParker(t)
	client, backend, done := proxied(t, Options{Parker: pk, BufferPool: &sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}})
	defer client.Close()
	defer backend.Close()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	go func() {
		_, _ = client.Write(payload)
		_ = client.CloseWrite()
	}()
	var got bytes.Buffer
	buf := make([]byte, 256<<10)
	// Let the mux's receive queue fill (more than a splice pipe holds)
	// before reading, then read slower than the 20ms threshold.
	time.Sleep(300 * time.Millisecond)
	for {
		time.Sleep(30 * time.Millisecond)
		n, err := backend.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !bytes.Equal(got.Bytes(), payload) {
		t.Fatalf("received %d of %d bytes", got.Len(), len(payload))
	}
	backend.Close()
	if r := <-done; r.Err != nil {
		t.Fatalf("pipe error: %v", r.Err)
	}
}

// A TLS-terminated connection (the client side decrypted here) cannot
// splice, but both its directions park when idle: backend→client reads a
// plain TCP socket, and client→backend parks on the socket under the TLS
// once a read has timed out with nothing decrypted. Each wakes to carry
// its side's bytes, and a half-close while parked still gets through.
func TestIdleTLSDirectionsPark(t *testing.T) {
	pk := newParker(t)
	before := runtime.NumGoroutine()
	tlsClient, backend, done := tlsPipe(t, Options{Parker: pk})
	defer backend.Close()
	defer tlsClient.Close()
	roundTrip(t, tlsClient, backend, "hello")
	roundTrip(t, backend, tlsClient, "world")

	peers.Until(t, 10*time.Second, "both directions parked", func() bool { return pk.Parked() == 2 })
	peers.Until(t, 10*time.Second, "the copy goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
	for i := range 5 {
		roundTrip(t, backend, tlsClient, fmt.Sprintf("down %d", i))
		roundTrip(t, tlsClient, backend, fmt.Sprintf("up %d", i))
		peers.Until(t, 10*time.Second, "parked again", func() bool { return pk.Parked() == 2 })
	}
	// close_notify and FIN from the parked client side: the backend sees
	// its end of stream and can still answer.
	if err := tlsClient.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(backend); err != nil || len(b) != 0 {
		t.Fatalf("backend after the client's half-close: %q, %v", b, err)
	}
	roundTrip(t, backend, tlsClient, "still open the other way")
	backend.Close()
	if r := <-done; r.Err != nil || r.Idle {
		t.Fatalf("result %+v", r)
	}
	peers.Until(t, 10*time.Second, "nothing parked", func() bool { return pk.Parked() == 0 })
}

// TLS records that arrive in pieces, with pauses past the Parker's
// threshold inside a record (crypto/tls then holds a partial record while
// the direction parks), and many records at once (it then holds whole
// records the socket no longer shows): every byte reaches the backend, in
// order.
func TestTLSRecordsSplitAcrossParkingArriveIntact(t *testing.T) {
	pk := newParker(t)
	client, muxClient, muxBackend, backend := pipeEnds(t)
	cert := peers.CertPair(t, "mux.test")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	slow := &slowWriter{TCPConn: client}
	tlsClient := tls.Client(slow, &tls.Config{ServerName: "mux.test", RootCAs: roots})
	defer tlsClient.Close()
	tlsMux := tls.Server(muxClient, &tls.Config{Certificates: []tls.Certificate{*cert.TLS}})
	done := make(chan Result, 1)
	Start(tlsMux, muxBackend, Options{Parker: pk}, func(r Result) { done <- r })
	if err := tlsClient.Handshake(); err != nil {
		t.Fatal(err)
	}

	var want bytes.Buffer
	write := func(msg string) {
		t.Helper()
		want.WriteString(msg)
		if _, err := io.WriteString(tlsClient, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Split records: 3 bytes of the header, a pause, the rest.
	slow.split.Store(true)
	for i := range 4 {
		write(fmt.Sprintf("split record %d;", i))
	}
	slow.split.Store(false)
	// Many records in one write, after the direction parked.
	peers.Until(t, 10*time.Second, "parked", func() bool { return pk.Parked() == 2 })
	slow.hold.Store(true) // collect every record tlsClient writes, send them at once
	for i := range 200 {
		write(fmt.Sprintf("batched record %d;", i))
	}
	if err := slow.flush(); err != nil {
		t.Fatal(err)
	}
	if err := tlsClient.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(backend)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("backend got %q\nwant %q", got, want.Bytes())
	}
	backend.Close()
	if r := <-done; r.Err != nil {
		t.Fatalf("result %+v", r)
	}
}

// slowWriter is a TLS client's socket that, when split is set, sends each
// write (a TLS record) in two pieces 60 ms apart, past the Parker's
// threshold; while hold is set it keeps the writes until flush.
type slowWriter struct {
	*net.TCPConn
	split, hold atomic.Bool
	held        []byte
}

func (w *slowWriter) Write(b []byte) (int, error) {
	switch {
	case w.hold.Load():
		w.held = append(w.held, b...)
		return len(b), nil
	case w.split.Load() && len(b) > 3:
		if _, err := w.TCPConn.Write(b[:3]); err != nil {
			return 0, err
		}
		time.Sleep(60 * time.Millisecond)
		n, err := w.TCPConn.Write(b[3:])
		return n + 3, err
	}
	return w.TCPConn.Write(b)
}

func (w *slowWriter) flush() error {
	w.hold.Store(false)
	_, err := w.TCPConn.Write(w.held)
	return err
}

// The idle timeout ends a TLS-terminated pipe whose directions are both
// parked.
func TestIdleTimeoutEndsParkedTLSPipes(t *testing.T) {
	pk := newParker(t)
	client, muxClient, muxBackend, backend := pipeEnds(t)
	// Handshake first, as the dataplane does: the idle timeout counts
	// from the pipe's start.
	srv, cli := tlsConfigs(t)
	tlsClient, tlsMux := handshaken(t, client, muxClient, srv, cli)
	defer tlsClient.Close()
	done := make(chan Result, 1)
	Start(tlsMux, muxBackend, Options{Parker: pk, IdleTimeout: 500 * time.Millisecond}, func(r Result) { done <- r })
	roundTrip(t, tlsClient, backend, "hello")
	wantIdle(t, done, 15*time.Second)
	_ = tlsClient.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tlsClient.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read data after the idle close")
	}
}

// Bulk from the backend into a TLS client switches to full-buffer reads and
// back, around idle pauses where it parks: every byte arrives, in order.
func TestBulkIntoTLSSurvivesPausesAndParking(t *testing.T) {
	pk := newParker(t)
	bufs := &sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	recs := &sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
	tlsClient, backend, done := tlsPipe(t, Options{Parker: pk, BufferPool: bufs, StreamBufferPool: recs})
	defer tlsClient.Close()

	payload := make([]byte, 8<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		for i, chunk := range [][]byte{payload[:3<<20], payload[3<<20 : 3<<20+100], payload[3<<20+100:]} {
			if i > 0 {
				time.Sleep(60 * time.Millisecond) // past the Parker's threshold
			}
			if _, err := backend.Write(chunk); err != nil {
				return
			}
		}
		_ = backend.CloseWrite()
	}()
	got, err := io.ReadAll(tlsClient)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("client got %d bytes, not the %d sent", len(got), len(payload))
	}
	_ = tlsClient.Close()
	if r := <-done; r.Down != int64(len(payload)) {
		t.Fatalf("result %+v, want %d bytes down", r, len(payload))
	}
	backend.Close()
}

// tlsPipe starts a pipe whose client side is TLS terminated here, as a
// TLS listener's forwarded connections are, and returns the TLS client,
// the backend's end and where the pipe reports.
func tlsPipe(t *testing.T, opt Options) (*tls.Conn, *net.TCPConn, <-chan Result) {
	t.Helper()
	client, muxClient, muxBackend, backend := pipeEnds(t)
	cert := peers.CertPair(t, "mux.test")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	tlsClient := tls.Client(client, &tls.Config{ServerName: "mux.test", RootCAs: roots})
	tlsMux := tls.Server(muxClient, &tls.Config{Certificates: []tls.Certificate{*cert.TLS}})
	done := make(chan Result, 1)
	Start(tlsMux, muxBackend, opt, func(r Result) { done <- r })
	return tlsClient, backend, done
}

// BenchmarkParkedMemory reports what an idle forwarded connection costs in
// this process once both its directions are parked, beyond its sockets
// (and the TLS state of a handshake done before forwarding, as the
// dataplane does): the pipe, its parking, and what its goroutines and
// buffers leave behind. heap-B/conn is live heap, stack-B/conn goroutine
// stacks, both after a collection.
func BenchmarkParkedMemory(b *testing.B) {
	b.Run("tcp", func(b *testing.B) { benchParked(b, false) })
	b.Run("tls", func(b *testing.B) { benchParked(b, true) })
}

func benchParked(b *testing.B, useTLS bool) {
	const n = 500 // 2000 sockets; the dead goroutines' cached stacks, a bounded cost, spread thin
	pk, err := NewParker(20 * time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	defer pk.Close()
	bufs := &sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	recs := &sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
	opt := Options{BufferPool: bufs, StreamBufferPool: recs, Parker: pk, IdleTimeout: time.Hour}
	var srvCfg, cliCfg *tls.Config
	if useTLS {
		srvCfg, cliCfg = tlsConfigs(b)
	}
	settled := func() runtime.MemStats {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC() // and the pools' victims
		runtime.ReadMemStats(&ms)
		return ms
	}
	var heap, stack int64
	conns := 0
	for b.Loop() {
		type ends struct {
			client, backend net.Conn
			muxClient       net.Conn
			muxBackend      *net.TCPConn
		}
		all := make([]ends, n)
		for i := range all {
			client, muxClient := tcpPair(b)
			muxBackend, backend := tcpPair(b)
			e := ends{client: client, backend: backend, muxClient: muxClient, muxBackend: muxBackend}
			if useTLS {
				e.client, e.muxClient = handshaken(b, client, muxClient, srvCfg, cliCfg)
			}
			all[i] = e
		}
		before := settled()
		done := make(chan Result, n)
		for _, e := range all {
			Start(e.muxClient, e.muxBackend, opt, func(r Result) { done <- r })
		}
		msg, got := []byte("ping"), make([]byte, 4)
		for _, e := range all {
			for _, rw := range [][2]net.Conn{{e.client, e.backend}, {e.backend, e.client}} {
				if _, err := rw[0].Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(rw[1], got); err != nil {
					b.Fatal(err)
				}
			}
		}
		for pk.Parked() < 2*n {
			time.Sleep(5 * time.Millisecond)
		}
		after := settled()
		heap += int64(after.HeapAlloc) - int64(before.HeapAlloc)
		stack += int64(after.StackInuse) - int64(before.StackInuse)
		conns += n
		for _, e := range all {
			_ = e.client.Close()
			_ = e.backend.Close()
		}
		for range n {
			<-done
		}
	}
	b.ReportMetric(float64(heap)/float64(conns), "heap-B/conn")
	b.ReportMetric(float64(stack)/float64(conns), "stack-B/conn")
}

func TestReleaseAfterABurst(t *testing.T) {
	for _, tc := range []struct {
		name    string
		grown   int
		settled bool
		since   time.Duration
		want    bool
	}{
		{"a few more parked", releaseAfter - 1, true, time.Hour, false},
		{"burst over", releaseAfter, true, releaseQuiet, true},
		{"burst over, just released", releaseAfter, true, releaseQuiet - time.Millisecond, false},
		{"still growing", 5000, false, releaseEvery - time.Millisecond, false},
		{"growing for long", 5000, false, releaseEvery, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := release(tc.grown, tc.settled, tc.since); got != tc.want {
				t.Fatalf("release(%d, %v, %v) = %v, want %v", tc.grown, tc.settled, tc.since, got, tc.want)
			}
		})
	}
}

// tlsConfigs returns a server configuration with a certificate for
// mux.test and a client configuration that trusts it.
func tlsConfigs(t testing.TB) (srv, cli *tls.Config) {
	t.Helper()
	cert := peers.CertPair(t, "mux.test")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return &tls.Config{Certificates: []tls.Certificate{*cert.TLS}}, &tls.Config{ServerName: "mux.test", RootCAs: roots}
}

// handshaken completes a TLS handshake between client and the mux's end
// of its connection, as the dataplane does before it forwards.
func handshaken(t testing.TB, client, muxClient net.Conn, srv, cli *tls.Config) (*tls.Conn, *tls.Conn) {
	t.Helper()
	tc, ts := tls.Client(client, cli), tls.Server(muxClient, srv)
	errc := make(chan error, 1)
	go func() { errc <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return tc, ts
}

// A Parker waiting for events must not hold a processor in a system call:
// the goroutines queued on that processor would wait for the runtime's
// monitor to take it back, up to 10 ms (a relay loop was seen waiting
// 9.7 ms behind the Parker's epoll_wait under load). It waits in Go's
// poller instead, where a goroutine dump shows it as "IO wait".
func TestParkerWaitsInGosPoller(t *testing.T) {
	newParker(t)
	var last string
	buf := make([]byte, 1<<20)
	for range 200 {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if !strings.Contains(g, "forward.(*Parker).loop") {
				continue
			}
			head, _, _ := strings.Cut(g, "\n")
			last = head
			if strings.Contains(head, "[IO wait") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the parker's goroutine never waited in the poller; last seen as %q", last)
}
