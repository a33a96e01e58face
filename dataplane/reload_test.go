package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane"
	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// A new snapshot never cuts an established connection: it keeps the
// configuration it was accepted with, while new connections see the new
// routes and dropped ports stop accepting.

// expectGreeting dials addr, sends a probe line (so that sniffing routes
// decide at once), and checks which greeting backend answered.
func expectGreeting(t testing.TB, addr, want string) {
	t.Helper()
	c := dial(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, "PROBE\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if got := readLine(t, br, c); got != want {
		t.Fatalf("new connection to %s answered by %q, want %q", addr, got, want)
	}
	if got := readLine(t, br, c); got != "PROBE\n" {
		t.Fatalf("echo = %q", got)
	}
}

func TestReloadUnderLoadLosesNoByte(t *testing.T) {
	t.Parallel()
	const (
		total   = 64 << 20
		reloads = 100
		chunk   = total / reloads
	)
	a := greetingEchoBackend(t, "A\n")
	b := greetingEchoBackend(t, "B\n")

	// Snapshot i alternates the routes and backends of "pub" and adds or
	// removes the listener "extra" every other step.
	snapAt := func(i int) *snapshot.Snapshot {
		var pub snapshot.Listener
		if i%2 == 0 {
			pub = listenerOn("pub", routeTo("any-a", snapshot.Any, a.Addr))
		} else {
			pub = listenerOn("pub",
				routeTo("ssh-a", snapshot.SSH, a.Addr),
				routeTo("tls-a", snapshot.TLS, a.Addr),
				routeTo("any-b", snapshot.Any, b.Addr),
			)
			pub.ProbeTimeout = time.Second
		}
		s := snapshotOf(pub)
		if i%4 < 2 {
			s.Listeners = append(s.Listeners, listenerOn("extra", routeTo("any-b", snapshot.Any, b.Addr)))
		}
		return s
	}
	wantPub := func(i int) string { return map[bool]string{true: "A\n", false: "B\n"}[i%2 == 0] }

	m := startMux(t, snapAt(0))
	c := dial(t, m.addr("pub"))
	greeting := make([]byte, 2)
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c, greeting); err != nil || string(greeting) != "A\n" {
		t.Fatalf("stream greeting %q, %v", greeting, err)
	}
	// The whole stream has ioTimeout per chunk plus slack.
	_ = c.SetDeadline(time.Now().Add(reloads*ioTimeout/10 + time.Minute))

	type result struct {
		n   int64
		sum [sha256.Size]byte
		err error
	}
	abort := make(chan struct{})
	defer close(abort)
	wrote := make(chan struct{})
	proceed := make(chan struct{})
	writeDone := make(chan result, 1)
	go func() {
		// A reproducible pseudo-random stream, checksummed as it goes.
		src := rand.NewChaCha8([32]byte{'p', 'o', 'r', 't', 'm', 'u', 'x'})
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var n int64
		for k := range reloads {
			size := chunk
			if k == reloads-1 {
				size = total - (reloads-1)*chunk
			}
			for size > 0 {
				p := buf[:min(size, len(buf))]
				_, _ = src.Read(p)
				h.Write(p)
				w, err := c.Write(p)
				n += int64(w)
				if err != nil {
					writeDone <- result{n: n, err: fmt.Errorf("write after %d bytes: %w", n, err)}
					return
				}
				size -= len(p)
			}
			// Let the test apply a snapshot while these bytes are in
			// flight, and wait for it.
			select {
			case wrote <- struct{}{}:
			case <-abort:
				return
			}
			select {
			case <-proceed:
			case <-abort:
				return
			}
		}
		err := c.CloseWrite()
		writeDone <- result{n: n, sum: [sha256.Size]byte(h.Sum(nil)), err: err}
	}()
	readDone := make(chan result, 1)
	go func() {
		h := sha256.New()
		n, err := io.Copy(h, c)
		readDone <- result{n: n, sum: [sha256.Size]byte(h.Sum(nil)), err: err}
	}()

	for i := 1; i <= reloads; i++ {
		select {
		case <-wrote:
		case r := <-writeDone:
			t.Fatalf("stream writer stopped before reload %d: %v", i, r.err)
		case r := <-readDone:
			t.Fatalf("stream ended before reload %d after %d bytes: %v", i, r.n, r.err)
		}
		m.apply(snapAt(i))
		// New connections see the new routes at once.
		expectGreeting(t, m.addr("pub"), wantPub(i))
		if i%4 < 2 {
			expectGreeting(t, m.addr("extra"), "B\n")
		} else if m.Addr("extra") != nil {
			t.Fatalf("reload %d: extra still bound at %v", i, m.Addr("extra"))
		}
		proceed <- struct{}{}
	}

	w := <-writeDone
	if w.err != nil {
		t.Fatalf("stream writer: %v", w.err)
	}
	r := <-readDone
	if r.err != nil {
		t.Fatalf("stream cut after %d of %d bytes: %v", r.n, int64(total), r.err)
	}
	if r.n != total || w.n != total {
		t.Fatalf("wrote %d bytes, read back %d, want %d", w.n, r.n, total)
	}
	if !bytes.Equal(r.sum[:], w.sum[:]) {
		t.Fatal("the stream came back with different bytes")
	}
	_ = c.Close()
	m.waitIdle()
}

func TestReloadDroppedPortDrains(t *testing.T) {
	t.Parallel()
	backend, pub := echoListener(t)
	extra := listenerOn("extra", routeTo("any", snapshot.Any, backend.Addr))
	m := startMux(t, snapshotOf(pub, extra))
	extraAddr := m.addr("extra")
	c := dial(t, extraAddr)
	roundTrip(t, c, "before the reload\n")

	m.apply(snapshotOf(pub))
	// Apply has closed the socket by the time it returns.
	if nc, err := net.DialTimeout("tcp", extraAddr, ioTimeout); err == nil {
		_ = nc.Close()
		t.Fatalf("the dropped port %s still accepts", extraAddr)
	}
	if a := m.Addr("extra"); a != nil {
		t.Fatalf("Addr(extra) = %v after it was dropped", a)
	}
	// The connection it had keeps working, and so does the kept port.
	for i := range 3 {
		roundTrip(t, c, fmt.Sprintf("after the reload %d\n", i))
	}
	pc := dial(t, m.addr("pub"))
	roundTrip(t, pc, "pub still serves\n")
	_ = pc.Close()
	if n := m.ActiveConnections(); n < 1 {
		t.Fatalf("ActiveConnections = %d with the drained connection open", n)
	}

	m.hangUp(c)

	// Declared again, the listener binds a new port and serves.
	m.apply(snapshotOf(pub, extra))
	c2 := dial(t, m.addr("extra"))
	roundTrip(t, c2, "extra is back\n")
	_ = c2.Close()
	m.waitIdle()
}

func TestReloadRoutesApplyToNewConnectionsOnly(t *testing.T) {
	t.Parallel()
	a := greetingEchoBackend(t, "A\n")
	b := greetingEchoBackend(t, "B\n")
	toA := listenerOn("pub", routeTo("ssh", snapshot.SSH, a.Addr), routeTo("any", snapshot.Any, a.Addr))
	toB := listenerOn("pub", routeTo("ssh", snapshot.SSH, b.Addr), routeTo("any", snapshot.Any, b.Addr))
	m := startMux(t, snapshotOf(toA))
	pub := m.addr("pub")

	// c1 is forwarded to A.
	c1 := dial(t, pub)
	br1 := bufio.NewReader(c1)
	if _, err := io.WriteString(c1, "SSH-2.0-one\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, br1, c1); got != "A\n" {
		t.Fatalf("c1 answered by %q, want A", got)
	}
	// c2 is accepted but still in its probe (the ssh route waits for
	// bytes) when the routes change.
	c2 := dial(t, pub)
	peers.Until(t, ioTimeout, "c2 to be accepted", func() bool { return m.ActiveConnections() == 2 })

	m.apply(snapshotOf(toB))
	expectGreeting(t, pub, "B\n")

	// c2 keeps the configuration it was accepted with.
	if _, err := io.WriteString(c2, "SSH-2.0-two\r\n"); err != nil {
		t.Fatal(err)
	}
	br2 := bufio.NewReader(c2)
	if got := readLine(t, br2, c2); got != "A\n" {
		t.Fatalf("c2, accepted before the reload, answered by %q, want A", got)
	}
	// c1 still flows to A.
	if got := readLine(t, br1, c1); got != "SSH-2.0-one\r\n" {
		t.Fatalf("c1 echo %q", got)
	}
	if _, err := io.WriteString(c1, "after the reload\n"); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, br1, c1); got != "after the reload\n" {
		t.Fatalf("c1 echo after the reload %q", got)
	}
	if na, nb := a.Accepted(), b.Accepted(); na != 2 || nb != 1 {
		t.Fatalf("A accepted %d, B %d; want 2 and 1", na, nb)
	}
	_ = c1.Close()
	_ = c2.Close()
	m.waitIdle()
}

// loopbackListen is an Options.Listen that binds 127.0.0.1:0 whatever
// address the snapshot names, so tests can use fixed addresses without
// taking real ports. onBind, when set, runs after each bind, inside Apply.
func loopbackListen(onBind func(n int, ln net.Listener)) func(context.Context, string) (net.Listener, error) {
	var calls atomic.Int64
	return func(ctx context.Context, _ string) (net.Listener, error) {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
		if err == nil && onBind != nil {
			onBind(int(calls.Add(1)), ln)
		}
		return ln, err
	}
}

func TestApplyReportsListenersSharingAnAddress(t *testing.T) {
	t.Parallel()
	backend := echoBackend(t)
	m := newMux(t, dataplane.Options{Listen: loopbackListen(nil)})
	a := listenerOn("a", routeTo("any", snapshot.Any, backend.Addr))
	b := listenerOn("b", routeTo("any", snapshot.Any, backend.Addr))
	a.Address, b.Address = "127.0.0.1:7001", "127.0.0.1:7001"
	errs := m.Apply(snapshotOf(a, b))
	bound := 0
	for _, name := range []string{"a", "b"} {
		if m.Addr(name) != nil {
			bound++
		}
	}
	// One of them can have the port; the other must be reported, as a
	// bind error is, not silently left unserved.
	if bound+len(errs) != 2 {
		t.Fatalf("two listeners on one address: %d bound, errors %v; the other is neither served nor reported", bound, errs)
	}
}

func TestNewListenerServesItsFirstConnection(t *testing.T) {
	t.Parallel()
	backend := greetingEchoBackend(t, "hello\n")
	var (
		first   string   // address of the first socket Apply bound
		early   net.Conn // a client of it, connected while Apply still runs
		got     []byte   // what early read during Apply
		readErr error
	)
	// Apply binds two new listeners. While it binds the second, a client
	// connects to the first, whose accept loop already runs. (Apply calls
	// Listen on the test goroutine: no locking needed.)
	m := newMux(t, dataplane.Options{Listen: loopbackListen(func(n int, ln net.Listener) {
		if n == 1 {
			first = ln.Addr().String()
			return
		}
		c, err := net.DialTimeout("tcp", first, ioTimeout)
		if err != nil {
			readErr = err
			return
		}
		early = c
		// Give the accept loop a moment to take it, and see whether it is
		// dropped. A greeting or nothing yet are both fine.
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 16)
		k, err := c.Read(buf)
		got = buf[:k]
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			readErr = err
		}
	})})
	m.apply(snapshotOf(
		listenerOn("a", routeTo("any", snapshot.Any, backend.Addr)),
		listenerOn("b", routeTo("any", snapshot.Any, backend.Addr)),
	))
	if early == nil {
		t.Fatalf("could not connect during Apply: %v", readErr)
	}
	t.Cleanup(func() { _ = early.Close() })
	if readErr != nil {
		t.Fatalf("a connection accepted while Apply was binding was closed unserved: %v (read %q)", readErr, got)
	}
	rest := make([]byte, len("hello\n")-len(got))
	_ = early.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(early, rest); err != nil {
		t.Fatalf("the early connection was not served: %v", err)
	}
	if s := string(got) + string(rest); s != "hello\n" {
		t.Fatalf("early connection read %q", s)
	}
	_ = early.Close()
	m.waitIdle()
}

func TestReloadClosesPooledHTTPConnectionsOfTheOldConfig(t *testing.T) {
	t.Parallel()
	backend := newSlowHTTPBackend(t)
	snap := snapshotOf(listenerOn("pub", httpModeRoute(backend.Addr)))
	m := startMux(t, snap)
	pub := m.addr("pub")

	resp := make(chan string, 1)
	go func() {
		c, err := net.DialTimeout("tcp", pub, ioTimeout)
		if err != nil {
			resp <- err.Error()
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		b, _ := io.ReadAll(c)
		resp <- string(b)
	}()
	<-backend.entered
	// A reload while the request is in flight: the old configuration is
	// retired, but its pool gets the backend connection back afterwards.
	m.apply(snapshotOf(listenerOn("pub", httpModeRoute(backend.Addr))))
	close(backend.release)
	if r := <-resp; !strings.HasPrefix(r, "HTTP/1.1 200") {
		t.Fatalf("response %q", r)
	}
	m.waitIdle()
	peers.Until(t, ioTimeout, "the retired configuration's pooled backend connection to be closed", func() bool { return backend.OpenConns() == 0 })
}

func TestApplyKeepsServingWhenASnapshotIsInvalid(t *testing.T) {
	t.Parallel()
	a := greetingEchoBackend(t, "A\n")
	b := greetingEchoBackend(t, "B\n")
	m := startMux(t, snapshotOf(listenerOn("pub", routeTo("any", snapshot.Any, a.Addr))))
	pub := m.addr("pub")
	expectGreeting(t, pub, "A\n")

	// A producer's bug: a route with two actions. Serving it would pick
	// one of them silently.
	bad := listenerOn("pub", routeTo("any", snapshot.Any, b.Addr))
	bad.Routes[0].Listener = "inner"
	errs := m.Apply(snapshotOf(bad))
	if errs["pub"] == nil || !strings.Contains(errs["pub"].Error(), "exactly one") {
		t.Fatalf("Apply of a route with two actions returned %v, want an error for listener pub naming the broken rule", errs)
	}
	expectGreeting(t, pub, "A\n")
}
