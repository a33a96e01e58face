//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// The UDP routes of the contract. A UDP mux listens on the same address
// as the TCP one (another transport, the same port number) and routes a
// session whose first datagram is a DNS query to udp-dns and any other
// session to udp-any. A mux that cannot look into datagrams (nginx's
// stream module) routes udp-any only.
const (
	routeUDPDNS = "udp-dns"
	routeUDPAny = "udp-any"
)

// udpRouteNames is every UDP route, in port order.
var udpRouteNames = []string{routeUDPDNS, routeUDPAny}

// isUDPRoute says whether route is one of udpRouteNames.
func isUDPRoute(route string) bool { return route == routeUDPDNS || route == routeUDPAny }

// udpBackendPort is a UDP route's backend port as an offset from the base
// port: 17011 udp-dns, 17012 udp-any by default.
func udpBackendPort(route string) int {
	switch route {
	case routeUDPDNS:
		return 11
	case routeUDPAny:
		return 12
	}
	panic("unknown UDP route " + route)
}

// udpHello is the first datagram of every session of a route: the
// backend counts the hellos it receives, which is how a run knows how many
// sessions reached each backend (UDP has no accept to count). The DNS one
// is a query for hello.bench.test (type A, class IN, recursion desired);
// the other one matches no protocol a mux recognises.
func udpHello(route string) []byte {
	if route == routeUDPDNS {
		return dnsHello
	}
	return anyHello
}

var (
	anyHello = []byte("MUXLOAD HELLO\n")
	dnsHello = []byte{
		0x6d, 0x78, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		5, 'h', 'e', 'l', 'l', 'o', 5, 'b', 'e', 'n', 'c', 'h', 4, 't', 'e', 's', 't', 0,
		0x00, 0x01, 0x00, 0x01,
	}
)

// maxUDPSize is the largest datagram a scenario sends: every buffer holds
// one whole.
const maxUDPSize = 4096

// udpBatch is how many datagrams the backends and the load's clients read
// or write in one system call (recvmmsg, sendmmsg), so that the load costs
// the box far less than the mux under test.
const udpBatch = 64

// udpSocketBuffer is the receive and send buffer asked for every socket of
// the load (the kernel caps it at net.core.rmem_max and wmem_max).
const udpSocketBuffer = 4 << 20

// udpEcho is a UDP backend: it sends every datagram back to where it came
// from and counts sessions by their hellos, of any route: a session
// misrouted to it counts too.
type udpEcho struct {
	conn *net.UDPConn

	hellos    atomic.Int64 // sessions: hellos less the ones sent again
	datagrams atomic.Int64
	done      chan struct{}
}

// listenUDPEcho starts a UDP echo on addr (port 0 picks one).
func listenUDPEcho(addr string) (*udpEcho, error) {
	la, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("UDP backend: %w", err)
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, fmt.Errorf("UDP backend: %w", err)
	}
	_ = c.SetReadBuffer(udpSocketBuffer)
	_ = c.SetWriteBuffer(udpSocketBuffer)
	e := &udpEcho{conn: c, done: make(chan struct{})}
	go e.serve()
	return e, nil
}

// serve echoes batches of datagrams until the socket is closed. A batch
// the socket cannot take whole is retried from where it stopped; one that
// fails is dropped, as a full buffer would drop it.
func (e *udpEcho) serve() {
	defer close(e.done)
	pc := ipv4.NewPacketConn(e.conn)
	rs, ws := newMessages(udpBatch), make([]ipv4.Message, udpBatch)
	var sessions sessionCounter
	for {
		n, err := pc.ReadBatch(rs, 0)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		var hellos int64
		now := time.Now()
		for i := range n {
			d := rs[i].Buffers[0][:rs[i].N]
			if bytes.Equal(d, anyHello) || bytes.Equal(d, dnsHello) {
				if from, ok := rs[i].Addr.(*net.UDPAddr); ok && sessions.hello(from.AddrPort(), now) {
					hellos++
				}
			}
			ws[i].Buffers, ws[i].Addr = [][]byte{d}, rs[i].Addr
		}
		e.hellos.Add(hellos)
		e.datagrams.Add(int64(n))
		for off := 0; off < n; {
			k, err := pc.WriteBatch(ws[off:n], 0)
			if err != nil {
				break
			}
			off += k
		}
	}
}

// helloWindow is how long after a hello another hello from the same
// address is the same session's, sent again because the echo was slow (a
// client waits at most 4 s, helloTimeouts, before it sends again). It is
// no longer than any mux keeps a session after its last datagram
// (portmux's shortest idle timeout, DNS's, is 5 s; nginx's and sslh's are
// 60 s), so the port cannot yet be another session's.
const helloWindow = 5 * time.Second

// sessionCounter tells a session's first hello from one sent again: a
// probe whose echo took longer than a second sends its hello twice, and
// the late copy, counted, would land in the next run as a session the
// mux misrouted.
type sessionCounter struct {
	last      map[netip.AddrPort]time.Time // when each address last sent a hello
	lastPrune time.Time
}

// hello records a hello from addr at now and says whether it opens a new
// session.
func (s *sessionCounter) hello(addr netip.AddrPort, now time.Time) bool {
	if s.last == nil {
		s.last = make(map[netip.AddrPort]time.Time)
	}
	if now.Sub(s.lastPrune) >= helloWindow {
		for a, at := range s.last {
			if now.Sub(at) >= helloWindow {
				delete(s.last, a)
			}
		}
		s.lastPrune = now
	}
	at, seen := s.last[addr]
	s.last[addr] = now
	return !seen || now.Sub(at) >= helloWindow
}

// newMessages is n messages of one maxUDPSize buffer each.
func newMessages(n int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, maxUDPSize)}
	}
	return ms
}

// addr is where the echo listens.
func (e *udpEcho) addr() string { return e.conn.LocalAddr().String() }

// close stops the echo.
func (e *udpEcho) close() {
	_ = e.conn.Close()
	<-e.done
}

// helloTimeouts are the waits for a hello's echo: a hello lost to a full
// buffer is sent again, at most len(helloTimeouts) times in all.
var helloTimeouts = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}

// udpSession opens a session of route at addr: a connected socket whose
// hello was echoed, so the mux holds the session and its backend socket
// when it returns. The socket comes from d, so its port is no recent
// session's. tries is how many hellos were sent.
func udpSession(d *udpDialer, addr, route string) (c *net.UDPConn, tries int, err error) {
	if c, err = d.dial(addr); err != nil {
		return nil, 0, err
	}
	hello := udpHello(route)
	buf := make([]byte, maxUDPSize)
	for _, wait := range helloTimeouts {
		tries++
		if _, err = c.Write(hello); err != nil {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		var n int
		if n, err = c.Read(buf); err == nil {
			if !bytes.Equal(buf[:n], hello) {
				err = fmt.Errorf("echo of the hello is %q", buf[:n])
				break
			}
			_ = c.SetReadDeadline(time.Time{})
			return c, tries, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			break // refused: nothing listens
		}
	}
	_ = c.Close()
	return nil, tries, fmt.Errorf("hello: %w", err)
}

// udpOnce is one session of route: hello, echo, close.
func udpOnce(d *udpDialer, addr, route string) error {
	c, _, err := udpSession(d, addr, route)
	if err != nil {
		return err
	}
	return c.Close()
}

// openUDPSessions opens n sessions of route at addr, batch at a time,
// bounded by timeout, and returns them with what was tried and how long
// each took to set up.
func openUDPSessions(d *udpDialer, addr, route string, n, batch int, timeout time.Duration) (conns []*net.UDPConn, lat []time.Duration, c clientCount, err error) {
	type session struct {
		conn *net.UDPConn
		took time.Duration
	}
	var tries atomic.Int64
	opened, err := openBatched(n, batch, timeout, "session", func() (session, error) {
		t0 := time.Now()
		s, k, err := udpSession(d, addr, route)
		tries.Add(int64(k))
		return session{s, time.Since(t0)}, err
	})
	for _, s := range opened {
		conns, lat = append(conns, s.conn), append(lat, s.took)
	}
	return conns, lat, clientCount{attempts: tries.Load(), succeeded: int64(len(opened))}, err
}

// closeAll closes every session.
func closeAll(conns []*net.UDPConn) {
	for _, c := range conns {
		_ = c.Close()
	}
}
