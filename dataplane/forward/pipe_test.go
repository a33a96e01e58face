package forward

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/test/peers"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return a.(*net.TCPConn), r.c.(*net.TCPConn)
}

// pipeEnds returns two TCP pairs: the client's connection to the mux and
// the mux's to the backend. The test holds the far ends, client and
// backend, which are closed when it ends.
func pipeEnds(t testing.TB) (client, muxClient, muxBackend, backend *net.TCPConn) {
	t.Helper()
	client, muxClient = tcpPair(t)
	muxBackend, backend = tcpPair(t)
	t.Cleanup(func() {
		_ = client.Close()
		_ = backend.Close()
	})
	return client, muxClient, muxBackend, backend
}

// proxied starts Pipe between two TCP pairs and returns the client's and the
// backend's far ends, plus a channel with Pipe's result.
func proxied(t testing.TB, opt Options) (client, backend *net.TCPConn, done <-chan Result) {
	t.Helper()
	client, muxClient, muxBackend, backend := pipeEnds(t)
	ch := make(chan Result, 1)
	go func() { ch <- Pipe(muxClient, muxBackend, opt) }()
	return client, backend, ch
}

// proxiedBuffered is proxied with the client's mux side hidden behind a
// halfCloser: a mux side that is not a *net.TCPConn takes the buffered
// path (as TLS-terminated streams do).
func proxiedBuffered(t testing.TB, opt Options) (client, backend *net.TCPConn, done <-chan Result) {
	t.Helper()
	client, muxClient, muxBackend, backend := pipeEnds(t)
	ch := make(chan Result, 1)
	go func() { ch <- Pipe(halfCloser{muxClient}, muxBackend, opt) }()
	return client, backend, ch
}

// wantIdle waits up to bound for the pipe's result, which must be an idle
// timeout and no error.
func wantIdle(t *testing.T, done <-chan Result, bound time.Duration) {
	t.Helper()
	select {
	case r := <-done:
		if !r.Idle || r.Err != nil {
			t.Fatalf("result = %+v, want idle and no error", r)
		}
	case <-time.After(bound):
		t.Fatal("an idle pipe was never closed")
	}
}

// halfCloser hides *net.TCPConn (so nothing splices) but keeps CloseWrite.
type halfCloser struct{ *net.TCPConn }

func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	closeWrite(c)
}

func TestPipeCarriesEveryByteBothWays(t *testing.T) {
	for _, name := range []string{"splice", "buffered"} {
		t.Run(name, func(t *testing.T) {
			var client, backend net.Conn
			var done <-chan Result
			if name == "splice" {
				client, backend, done = proxied(t, Options{})
			} else {
				client, backend, done = proxiedBuffered(t, Options{})
			}
			go echo(backend)

			payload := make([]byte, 8<<20)
			_, _ = rand.Read(payload)
			if err := peers.EchoBack(client, payload, func() { closeWrite(client) }); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.Err != nil || r.Up != int64(len(payload)) || r.Down != int64(len(payload)) {
				t.Fatalf("result = %+v, want %d bytes each way and no error", r, len(payload))
			}
			client.Close()
			backend.Close()
		})
	}
}

func TestPipeHalfCloseLetsTheAnswerThrough(t *testing.T) {
	client, backend, done := proxied(t, Options{})
	defer client.Close()
	defer backend.Close()
	go func() {
		// The backend answers only after the client has finished sending.
		req, _ := io.ReadAll(backend)
		_, _ = backend.Write(append([]byte("answer to "), req...))
		backend.Close()
	}()
	_, _ = client.Write([]byte("question"))
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "answer to question" {
		t.Fatalf("got %q, %v", got, err)
	}
	if r := <-done; r.Err != nil {
		t.Fatalf("pipe error: %v", r.Err)
	}
}

func TestPipeIdleTimeoutClosesSilentConnections(t *testing.T) {
	client, backend, done := proxied(t, Options{IdleTimeout: 50 * time.Millisecond})
	defer client.Close()
	defer backend.Close()
	wantIdle(t, done, 10*time.Second)
	// The client sees the close.
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read data after idle close")
	}
}

func TestPipeIdleTimeoutSparesOneWayTraffic(t *testing.T) {
	// Only the backend talks (a download): the client→backend direction is
	// silent for three idle periods, and the connection must survive. The
	// backend writes ten times per idle period, so only a scheduler stall of
	// a whole period (on a loaded 2-core CI machine, with -race) could make
	// the connection really idle.
	const idle = 300 * time.Millisecond
	const ticks = 30
	client, backend, done := proxied(t, Options{IdleTimeout: idle})
	defer client.Close()
	defer backend.Close()
	go func() {
		for range ticks {
			_, _ = backend.Write([]byte("tick"))
			time.Sleep(idle / 10)
		}
		backend.Close()
	}()
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != ticks*4 {
		t.Fatalf("got %d bytes, want %d: the connection was cut while active", len(got), ticks*4)
	}
	client.Close()
	<-done
}

func TestPipeResetEndsBothDirections(t *testing.T) {
	client, backend, done := proxied(t, Options{})
	defer client.Close()
	_ = backend.SetLinger(0) // close sends RST
	backend.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("pipe did not end after the backend reset")
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil || errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("client read after backend reset: %v", err)
	}
}

func TestDialerSpreadsAndSkipsDeadEndpoints(t *testing.T) {
	var lns []net.Listener
	var addrs []string
	var mu sync.Mutex
	hits := map[string]int{}
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				hits[ln.Addr().String()]++
				mu.Unlock()
				c.Close()
			}
		}()
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	// A dead endpoint: a port that was bound and released refuses at once.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	d := &Dialer{Timeout: 2 * time.Second}
	eps := []string{addrs[0], deadAddr, addrs[1]}
	for range 30 {
		c, ep, err := d.Dial(context.Background(), eps)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if ep == deadAddr {
			t.Fatal("reported the dead endpoint as used")
		}
		c.Close()
	}
	if _, _, err := d.Dial(context.Background(), []string{deadAddr}); err == nil {
		t.Fatal("dial to only a dead endpoint succeeded")
	}
	if _, _, err := d.Dial(context.Background(), nil); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("no endpoints: err = %v", err)
	}
	time.Sleep(50 * time.Millisecond) // let the accept loops count
	mu.Lock()
	defer mu.Unlock()
	if hits[addrs[0]] < 10 || hits[addrs[1]] < 10 {
		t.Fatalf("connections not spread: %v", hits)
	}
}

func BenchmarkPipeSplice(b *testing.B) { benchPipe(b, true) }

func BenchmarkPipeBuffered(b *testing.B) { benchPipe(b, false) }

func benchPipe(b *testing.B, splice bool) {
	var client, backend net.Conn
	var done <-chan Result
	if splice {
		client, backend, done = proxied(b, Options{})
	} else {
		client, backend, done = proxiedBuffered(b, Options{})
	}
	go func() { _, _ = io.Copy(io.Discard, backend); backend.Close() }()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	client.Close()
	<-done
}

// panicky panics when it reads a byte sequence, as a bug that a client's
// bytes reach would.
type panicky struct {
	halfCloser
	trigger string
}

func (p panicky) Read(b []byte) (int, error) {
	n, err := p.halfCloser.Read(b)
	if strings.Contains(string(b[:n]), p.trigger) {
		panic("bug reached by " + p.trigger)
	}
	return n, err
}

// TestPipePanicEndsOnlyItsConnection: a panic while copying one direction
// ends the pipe with the panic as its error, closes both connections, and
// the process goes on (the test binary would die otherwise).
func TestPipePanicEndsOnlyItsConnection(t *testing.T) {
	for _, where := range []string{"client", "backend"} {
		t.Run(where, func(t *testing.T) {
			client, muxClient, muxBackend, backend := pipeEnds(t)
			var cc, bc net.Conn = halfCloser{muxClient}, halfCloser{muxBackend}
			if where == "client" {
				cc = panicky{halfCloser{muxClient}, "BOOM"}
			} else {
				bc = panicky{halfCloser{muxBackend}, "BOOM"}
			}
			ch := make(chan Result, 1)
			heard := make(chan struct{})
			go func() { ch <- Pipe(cc, bc, Options{OnPanic: func(*panics.Error) { close(heard) }}) }()

			// Bytes flow until the trigger.
			if _, err := client.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 5)
			_ = backend.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(backend, got); err != nil {
				t.Fatalf("before the panic: %v", err)
			}
			sender := client
			if where == "backend" {
				sender = backend
			}
			if _, err := sender.Write([]byte("BOOM")); err != nil {
				t.Fatal(err)
			}
			// The client's connection ends only once OnPanic has run.
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, client); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client side not closed: %v", err)
			}
			select {
			case <-heard:
			default:
				t.Fatal("the client saw its connection end before OnPanic heard of the panic")
			}
			var r Result
			select {
			case r = <-ch:
			case <-time.After(10 * time.Second):
				t.Fatal("pipe did not end after the panic")
			}
			p := panics.Is(r.Err)
			if p == nil || !strings.Contains(fmt.Sprint(p.Value), "BOOM") {
				t.Fatalf("Result.Err = %v, want the recovered panic", r.Err)
			}
			for name, c := range map[string]*net.TCPConn{"client": client, "backend": backend} {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s side not closed: %v", name, err)
				}
			}
		})
	}
}
