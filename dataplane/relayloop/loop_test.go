//go:build linux

package relayloop_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/test/peers"
)

// session is a Session whose decision is a function, and whose end is a
// channel.
type session struct {
	decide  func(b []byte, end relayloop.End) relayloop.Verdict
	handOff func(fd int, read []byte)
	done    chan relayloop.Result
	ends    []relayloop.End
}

func (s *session) Decide(b []byte, end relayloop.End) relayloop.Verdict {
	s.ends = append(s.ends, end)
	return s.decide(b, end)
}
func (s *session) HandOff(fd int, read []byte) { s.handOff(fd, read) }
func (s *session) Done(r relayloop.Result)     { s.done <- r }

type handler func(c *relayloop.Conn) relayloop.Session

func (h handler) Accepted(c *relayloop.Conn) relayloop.Session { return h(c) }

// serve starts a Set accepting on a new listener with h, and returns the
// listener's address.
func serve(t testing.TB, opt relayloop.Options, h relayloop.Handler) (string, *relayloop.Set) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	set, err := relayloop.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	a, err := set.Accept(ln.(*net.TCPListener), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		_ = ln.Close()
		_ = set.Close()
	})
	return ln.Addr().String(), set
}

// echo is a backend that answers each connection with a prefix and then
// echoes it until the client ends its stream.
func echo(t *testing.T, prefix string) netip.AddrPort {
	t.Helper()
	srv := peers.NewTCPServer(t, func(c net.Conn) {
		_, _ = io.WriteString(c, prefix)
		_, _ = io.Copy(c, c)
	})
	return netip.MustParseAddrPort(srv.Addr)
}

// closedPort is an address nobody listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	_ = ln.Close()
	return ap
}

// forwardAfter forwards once n bytes have arrived, to t.
func forwardAfter(n int, target *relayloop.Target) *session {
	return &session{
		done: make(chan relayloop.Result, 1),
		decide: func(b []byte, end relayloop.End) relayloop.Verdict {
			if len(b) < n && end <= relayloop.Reading {
				return relayloop.Verdict{Wait: true, Limit: 1024, Deadline: time.Now().Add(5 * time.Second)}
			}
			return relayloop.Verdict{Forward: target}
		},
	}
}

func waitDone(t *testing.T, s *session) relayloop.Result {
	t.Helper()
	return waitResult(t, s.done)
}

// waitResult is the Result a Session's Done sends on done.
func waitResult(t *testing.T, done <-chan relayloop.Result) relayloop.Result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Done was not called")
		return relayloop.Result{}
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// The client's first bytes, read while deciding, reach the backend ahead of
// the rest; the answer comes back; a half-close passes through both ways
// and Done counts every byte.
func TestForwardCarriesBothWaysAndHalfCloses(t *testing.T) {
	be := echo(t, "hi:")
	s := forwardAfter(5, &relayloop.Target{Endpoints: []netip.AddrPort{be}, Header: []byte("H|")})
	addr, _ := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	if _, err := io.WriteString(c, "hel"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // two reads while deciding
	if _, err := io.WriteString(c, "lo world"); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "hi:H|hello world"; string(got) != want {
		t.Fatalf("client read %q, want %q", got, want)
	}
	r := waitDone(t, s)
	if !r.Dialed || r.Endpoint != be || r.Err != nil || r.DialErr != nil {
		t.Fatalf("result %+v", r)
	}
	if r.Up != int64(len("hello world")) || r.Down != int64(len(got)) {
		t.Fatalf("up %d down %d, want %d and %d", r.Up, r.Down, len("hello world"), len(got))
	}
}

// A route that needs no bytes forwards at Start, before the client speaks:
// the backend speaks first.
func TestForwardAtStart(t *testing.T) {
	be := echo(t, "SSH-2.0-backend\r\n")
	s := forwardAfter(0, &relayloop.Target{Endpoints: []netip.AddrPort{be}})
	addr, _ := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "SSH-2.0-backend\r\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	_ = c.Close()
	waitDone(t, s)
	if len(s.ends) != 1 || s.ends[0] != relayloop.Start {
		t.Fatalf("asked %v, want only Start", s.ends)
	}
}

// A dead endpoint costs one failed attempt: the next one takes the
// connection. When every endpoint fails, the error names each.
func TestDialMovesOnAndReportsEveryFailure(t *testing.T) {
	dead, be := closedPort(t), echo(t, "ok:")
	var current atomic.Pointer[session]
	s := forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{dead, be}})
	current.Store(s)
	addr, _ := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return current.Load() }))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "x")
	_ = c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "ok:x" {
		t.Fatalf("read %q", got)
	}
	if r := waitDone(t, s); r.Endpoint != be {
		t.Fatalf("endpoint %v, want %v", r.Endpoint, be)
	}

	dead2 := closedPort(t)
	s = forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{dead, dead2}, First: 1})
	current.Store(s)
	c = dial(t, addr)
	_, _ = io.WriteString(c, "x")
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Fatalf("read %q from a connection no backend took", got)
	}
	r := waitDone(t, s)
	if r.Dialed || r.DialErr == nil || !strings.Contains(r.DialErr.Error(), dead.String()) || !strings.Contains(r.DialErr.Error(), dead2.String()) {
		t.Fatalf("result %+v", r)
	}
}

// A silent client is asked about at the deadline with what it sent
// (nothing), and the Session's decision holds: here, close.
func TestProbeDeadline(t *testing.T) {
	var deadline time.Time
	s := &session{done: make(chan relayloop.Result, 1)}
	s.decide = func(_ []byte, end relayloop.End) relayloop.Verdict {
		if end == relayloop.Start {
			deadline = time.Now().Add(100 * time.Millisecond)
		}
		if end <= relayloop.Reading {
			return relayloop.Verdict{Wait: true, Limit: 16, Deadline: deadline}
		}
		return relayloop.Verdict{}
	}
	addr, _ := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
		t.Fatalf("read %q, %v: want a close", got, err)
	}
	waitDone(t, s)
	if last := s.ends[len(s.ends)-1]; last != relayloop.Timeout {
		t.Fatalf("asked %v, want Timeout last", s.ends)
	}
	if time.Now().Before(deadline) {
		t.Fatal("closed before the deadline")
	}
}

// A client that sends more than the limit is decided when the limit is
// reached, with exactly the limit's bytes.
func TestProbeLimit(t *testing.T) {
	var seen []byte
	s := &session{done: make(chan relayloop.Result, 1)}
	s.decide = func(b []byte, end relayloop.End) relayloop.Verdict {
		if end <= relayloop.Reading {
			return relayloop.Verdict{Wait: true, Limit: 8, Deadline: time.Now().Add(5 * time.Second)}
		}
		seen = append(seen, b...)
		return relayloop.Verdict{}
	}
	addr, _ := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "0123456789abcdef")
	_, _ = io.ReadAll(c)
	waitDone(t, s)
	if string(seen) != "01234567" || s.ends[len(s.ends)-1] != relayloop.Full {
		t.Fatalf("decided on %q after %v", seen, s.ends)
	}
}

// A handed-off connection leaves the loop with the bytes read so far; the
// rest of its stream is the new owner's to read.
func TestHandOff(t *testing.T) {
	got := make(chan string, 1)
	s := &session{done: make(chan relayloop.Result, 1)}
	s.decide = func(b []byte, end relayloop.End) relayloop.Verdict {
		if len(b) < 3 {
			return relayloop.Verdict{Wait: true, Limit: 64, Deadline: time.Now().Add(5 * time.Second)}
		}
		return relayloop.Verdict{HandOff: true}
	}
	s.handOff = func(fd int, read []byte) {
		first := string(read)
		go func() {
			f := os.NewFile(uintptr(fd), "handed off")
			nc, err := net.FileConn(f)
			_ = f.Close()
			if err != nil {
				got <- err.Error()
				return
			}
			defer nc.Close()
			_, _ = io.WriteString(nc, "owner\n")
			rest, _ := io.ReadAll(nc)
			got <- first + "|" + string(rest)
		}()
	}
	addr, _ := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "abc")
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "owner\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	_, _ = io.WriteString(c, "def")
	_ = c.CloseWrite()
	if g := <-got; g != "abc|def" {
		t.Fatalf("new owner read %q", g)
	}
	select {
	case r := <-s.done:
		t.Fatalf("Done called for a handed-off connection: %+v", r)
	default:
	}
}

// A connection silent both ways for its idle timeout is closed and
// reported idle; one that keeps talking is not.
func TestIdleTimeout(t *testing.T) {
	be := echo(t, "")
	s := forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{be}, IdleTimeout: 300 * time.Millisecond})
	addr, _ := serve(t, relayloop.Options{KeepAliveAfter: 50 * time.Millisecond}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	// Busy for twice the timeout: still open.
	buf := make([]byte, 1)
	for range 12 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("closed while busy: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	if r := waitDone(t, s); !r.Idle || r.Err != nil {
		t.Fatalf("result %+v, want idle", r)
	}
}

// TestEndedConnectionsHoldNoTimers: a connection's timer goes with it.
// A relayed connection that outlives KeepAliveAfter arms its idle timeout,
// an hour by default, and one still probing arms its probe's deadline.
// Those timers used to stay in the loop's heap until they fell due,
// holding the ended connection (and waking the loop to drop it): a client
// that opened and closed connections could make a loop hold an hour's
// worth of them, beyond any limit on open connections.
func TestEndedConnectionsHoldNoTimers(t *testing.T) {
	const relayed, probing = 20, 5
	be := echo(t, "")
	target := &relayloop.Target{Endpoints: []netip.AddrPort{be}, IdleTimeout: time.Hour}
	done := make(chan relayloop.Result, relayed+probing)
	addr, set := serve(t, relayloop.Options{Loops: 2, KeepAliveAfter: 10 * time.Millisecond},
		handler(func(*relayloop.Conn) relayloop.Session {
			s := forwardAfter(1, target)
			s.done = done
			return s
		}))
	var conns []*net.TCPConn
	for range relayed {
		c := dial(t, addr)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for range probing {
		conns = append(conns, dial(t, addr))
	}
	time.Sleep(50 * time.Millisecond) // past KeepAliveAfter: the idle timeouts are armed
	if n := relayloop.PendingTimers(set); n < relayed+probing {
		t.Fatalf("%d timers pending for %d open connections", n, relayed+probing)
	}
	for _, c := range conns {
		_ = c.Close()
	}
	for range relayed + probing {
		waitResult(t, done)
	}
	if n := relayloop.PendingTimers(set); n != 0 {
		t.Errorf("%d timers pending after every connection ended, want 0", n)
	}
}

// Abort and Close end what the loops carry, with ErrClosed.
func TestAbortAndClose(t *testing.T) {
	be := echo(t, "")
	var conns atomic.Pointer[relayloop.Conn]
	var current atomic.Pointer[session]
	s := forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{be}})
	current.Store(s)
	addr, set := serve(t, relayloop.Options{}, handler(func(c *relayloop.Conn) relayloop.Session {
		conns.Store(c)
		return current.Load()
	}))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "x")
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	conns.Load().Abort()
	if r := waitDone(t, s); !errors.Is(r.Err, relayloop.ErrClosed) {
		t.Fatalf("aborted: %+v", r)
	}

	s2 := forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{be}})
	current.Store(s2)
	c = dial(t, addr)
	_, _ = io.WriteString(c, "y")
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	_ = set.Close()
	if r := waitDone(t, s2); !errors.Is(r.Err, relayloop.ErrClosed) {
		t.Fatalf("closed: %+v", r)
	}
}

// A panic in a Session ends its connection, is reported, and the loop
// serves the next connection.
func TestPanicEndsOneConnection(t *testing.T) {
	be := echo(t, "ok:")
	var panicked atomic.Int32
	var n atomic.Int32
	ok := forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{be}})
	bad := &session{done: make(chan relayloop.Result, 1), decide: func([]byte, relayloop.End) relayloop.Verdict { panic("sniffer bug") }}
	addr, _ := serve(t, relayloop.Options{Loops: 1, OnPanic: func(*panics.Error) { panicked.Add(1) }},
		handler(func(*relayloop.Conn) relayloop.Session {
			if n.Add(1) == 1 {
				return bad
			}
			return ok
		}))
	c := dial(t, addr)
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Fatalf("read %q", got)
	}
	if r := waitDone(t, bad); panics.Is(r.Err) == nil {
		t.Fatalf("result %+v, want the panic", r)
	}
	if panicked.Load() != 0 {
		t.Fatalf("OnPanic heard %d panics that Done reported", panicked.Load())
	}
	c = dial(t, addr)
	_, _ = io.WriteString(c, "x")
	_ = c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "ok:x" {
		t.Fatalf("next connection read %q", got)
	}
}

// A slow reader holds the backend back (the bytes wait in a pipe, not in
// memory of ours) and gets every byte, in order.
func TestSlowReaderGetsEveryByte(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<21) // 32 MiB: more than loopback sockets buffer
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// Read what the client sent first: a socket closed with unread
		// bytes resets the connection, and a reset may drop bytes in
		// flight.
		_, _ = io.ReadFull(c, make([]byte, 1))
		_, _ = c.Write(payload)
		_ = c.Close()
	}()
	s := forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{ln.Addr().(*net.TCPAddr).AddrPort()}})
	addr, set := serve(t, relayloop.Options{}, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "x")
	// Unread, the backend's bytes back up into a pipe, which the loops
	// count.
	peers.Eventually(t, 5*time.Second, "a pipe held for the slow reader", func() error {
		if st := set.Stats(); st.Pipes != 1 || st.Conns != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	h := sha256.New()
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := c.Read(buf)
		h.Write(buf[:n])
		total += n
		if err != nil {
			break
		}
		if total < 1<<20 {
			time.Sleep(time.Millisecond)
		}
	}
	if want := sha256.Sum256(payload); !bytes.Equal(h.Sum(nil), want[:]) || total != len(payload) {
		t.Fatalf("read %d bytes, mismatched or short of %d", total, len(payload))
	}
	_ = c.CloseWrite() // the connection ends when both directions have
	if r := waitDone(t, s); r.Down != int64(len(payload)) {
		t.Fatalf("down %d", r.Down)
	}
	if st := set.Stats(); st.Pipes != 0 || st.Conns != 0 {
		t.Fatalf("after the end the loops hold %+v", st)
	}
}

// TestTransferTakesTurns: a direction that used its budget stops and its
// loop comes back to it in a later round, though no socket event says
// there is more (edge-triggered, none will). With a budget of 4 KiB,
// thousands of turns: 32 MiB down and 8 MiB up at once, on one loop,
// arrive whole, and the connection ends.
func TestTransferTakesTurns(t *testing.T) {
	down := bytes.Repeat([]byte("0123456789abcdef"), 1<<21)
	up := bytes.Repeat([]byte("fedcba9876543210"), 1<<19)
	gotUp := make(chan [sha256.Size]byte, 1)
	be := rawBackend(t, func(c net.Conn) {
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			_, _ = c.Write(down)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		b, _ := io.ReadAll(c)
		gotUp <- sha256.Sum256(b)
		<-wrote // closed before, the socket would cut the download short
	})
	s := forwardAfter(1, &relayloop.Target{Endpoints: []netip.AddrPort{be}})
	opt := relayloop.WithMoveBudget(relayloop.Options{Loops: 1}, 4<<10)
	addr, _ := serve(t, opt, handler(func(*relayloop.Conn) relayloop.Session { return s }))
	c := dial(t, addr)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		_, _ = c.Write(up)
		_ = c.CloseWrite()
	}()
	b, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(b, down) {
		t.Fatalf("read %d bytes (%v), want the %d sent", len(b), err, len(down))
	}
	if got := <-gotUp; got != sha256.Sum256(up) {
		t.Fatal("the backend got other bytes than the client sent")
	}
	if r := waitDone(t, s); r.Err != nil || r.Up != int64(len(up)) || r.Down != int64(len(down)) {
		t.Fatalf("result %+v", r)
	}
}

// TestPanicInATurnEndsOneConnection: the turn a loop comes back for is
// guarded as an event is. A transfer that takes many turns ends in one
// of them, most often, and its Session's Done panics there: OnPanic
// hears of it, and the loop goes on serving.
func TestPanicInATurnEndsOneConnection(t *testing.T) {
	down := bytes.Repeat([]byte("x"), 1<<20)
	be := rawBackend(t, func(c net.Conn) {
		_, _ = io.ReadFull(c, make([]byte, 1))
		_, _ = c.Write(down)
	})
	target := &relayloop.Target{Endpoints: []netip.AddrPort{be}}
	var panicked atomic.Int32
	var n atomic.Int32
	bad := forwardAfter(1, target)
	bad.done = nil // Done panics instead
	opt := relayloop.WithMoveBudget(relayloop.Options{Loops: 1, OnPanic: func(*panics.Error) { panicked.Add(1) }}, 4<<10)
	addr, _ := serve(t, opt, handler(func(*relayloop.Conn) relayloop.Session {
		if n.Add(1) == 1 {
			return panicky{bad}
		}
		return forwardAfter(1, target)
	}))
	for range 2 {
		c := dial(t, addr)
		_, _ = io.WriteString(c, "x")
		_ = c.CloseWrite()
		if got, err := io.ReadAll(c); len(got) != len(down) || err != nil {
			t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(down))
		}
	}
	if panicked.Load() != 1 {
		t.Fatalf("OnPanic heard %d panics, want the one from Done", panicked.Load())
	}
}

// panicky is a Session whose Done panics.
type panicky struct{ *session }

func (panicky) Done(relayloop.Result) { panic("Done bug") }

// After Stop no loop accepts from the listener: a connection made then
// waits in its backlog, for whoever accepts next.
func TestStopLeavesTheListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	set, err := relayloop.New(relayloop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	var accepted atomic.Int32
	a, err := set.Accept(ln.(*net.TCPListener), handler(func(*relayloop.Conn) relayloop.Session {
		accepted.Add(1)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, ln.Addr().String())
	peers.Eventually(t, 5*time.Second, "the loop accepts", func() error {
		if accepted.Load() == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	_ = c.Close()
	a.Stop()
	dial(t, ln.Addr().String())
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	got, err := ln.Accept()
	if err != nil {
		t.Fatalf("the connection made after Stop is not in the backlog: %v", err)
	}
	_ = got.Close()
	if accepted.Load() != 1 {
		t.Fatalf("the loops accepted %d connections, want 1", accepted.Load())
	}
}

// Out of descriptors, a loop leaves the listener alone for a while
// rather than spin on it (it stays readable), and accepts what waited
// once descriptors are free again.
func TestOutOfDescriptorsBacksOff(t *testing.T) {
	var failures atomic.Int32
	log := funcr.New(func(_, args string) {
		if strings.Contains(args, "accept failed") {
			failures.Add(1)
		}
	}, funcr.Options{})
	var accepted atomic.Int32
	addr, _ := serve(t, relayloop.Options{Loops: 1, Log: log}, handler(func(*relayloop.Conn) relayloop.Session {
		accepted.Add(1)
		return nil
	}))
	ap := netip.MustParseAddrPort(addr)
	// The clients' sockets are made first: under the lowered limit only
	// the loop's accept needs a new descriptor.
	var clients []int
	for range 3 {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, fd)
		defer unix.Close(fd)
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// The limit bounds descriptor numbers: fill every free number below
	// the highest in use, then allow none above.
	var filler []int
	defer func() {
		for _, fd := range filler {
			_ = unix.Close(fd)
		}
	}()
	highest := 0
	if entries, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range entries {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				highest = max(highest, n)
			}
		}
	}
	for {
		fd, err := unix.Dup(0)
		if err != nil {
			t.Fatal(err)
		}
		filler = append(filler, fd)
		if fd >= highest {
			break
		}
	}
	low := old
	low.Cur = uint64(filler[len(filler)-1] + 1)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower the open-file limit: %v", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
		}
	}
	defer restore()
	for _, fd := range clients {
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
			t.Fatal(err)
		}
	}
	peers.Eventually(t, 5*time.Second, "an accept failing", func() error {
		if failures.Load() == 0 {
			return errors.New("no failure yet")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	// 5+10+20+40+80+160 ms: at most about 7 attempts in this time; a loop
	// spinning on the readable listener makes thousands.
	if n := failures.Load(); n > 20 {
		t.Fatalf("%d failed accepts in 300 ms: the loop spins", n)
	}
	if accepted.Load() != 0 {
		t.Fatalf("%d connections accepted without a descriptor", accepted.Load())
	}
	restore()
	peers.Eventually(t, 5*time.Second, "the waiting connections accepted", func() error {
		if n := accepted.Load(); n != 3 {
			return fmt.Errorf("%d of 3 accepted", n)
		}
		return nil
	})
}
