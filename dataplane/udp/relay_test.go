//go:build linux

package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/portmux/portmux/dataplane/snapshot"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// Relay a test starts is closed by its cleanup, and Close waits for the
// Relay's goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startRelay binds address, serves l on it and closes it at cleanup.
func startRelay(t testing.TB, l snapshot.Listener, opt Options) *Relay {
	t.Helper()
	opt.Log = testr.NewWithInterface(t, testr.Options{Verbosity: 1})
	opt.LogSessions = true
	r, err := Listen(l.Address, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := r.SetListener(&l); err != nil {
		t.Fatal(err)
	}
	return r
}

func listener(routes ...snapshot.Route) snapshot.Listener {
	return snapshot.Listener{Name: "udp", Address: "127.0.0.1:0", Transport: snapshot.UDP, Routes: routes}
}

func routeTo(name string, m snapshot.Match, endpoints ...string) snapshot.Route {
	return snapshot.Route{Name: name, Match: m, Backend: &snapshot.Backend{Name: name, Endpoints: endpoints}}
}

func echo(d []byte) [][]byte { return [][]byte{d} }

// client is a connected UDP socket to addr.
func client(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.UDPConn)
}

// exchange sends d and returns the next datagram back.
func exchange(t testing.TB, c net.Conn, d []byte) []byte {
	t.Helper()
	if _, err := c.Write(d); err != nil {
		t.Fatalf("write: %v", err)
	}
	return receive(t, c)
}

func receive(t testing.TB, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(peers.IOTimeout))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf[:n]
}

func capture(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", dir, "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRelayKeepsBoundaries relays datagrams of every size, the empty one
// and the largest included, both ways, one for one, with batches of 1 and
// of the default.
func TestRelayKeepsBoundaries(t *testing.T) {
	for _, batch := range []int{1, DefaultBatch} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) {
			be := peers.UDPReply(t, echo)
			m := NewMetrics()
			r := startRelay(t, listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr)), Options{Batch: batch, Metrics: m})
			c := client(t, r.Addr().String())
			sizes := []int{1, 0, 100, 1200, 9000, 65507}
			total := 0
			for _, n := range sizes {
				d := bytes.Repeat([]byte{byte(n)}, n)
				if got := exchange(t, c, d); !bytes.Equal(got, d) {
					t.Fatalf("%d bytes came back as %d", n, len(got))
				}
				total += n
			}
			if r.Sessions() != 1 || be.Peers() != 1 {
				t.Errorf("%d sessions, %d backend peers; want 1 and 1", r.Sessions(), be.Peers())
			}
			for _, dir := range []string{"up", "down"} {
				if got := testutil.ToFloat64(m.bytes.WithLabelValues("udp", "any", dir)); got != float64(total) {
					t.Errorf("bytes %s = %v, want %d", dir, got, total)
				}
				if got := testutil.ToFloat64(m.datagrams.WithLabelValues("udp", "any", dir)); got != float64(len(sizes)) {
					t.Errorf("datagrams %s = %v, want %d", dir, got, len(sizes))
				}
			}
		})
	}
}

// TestRelayRoutesByProtocol routes real first datagrams of each protocol
// to its own backend, on one port, and each session keeps its backend.
func TestRelayRoutesByProtocol(t *testing.T) {
	tag := func(name string) func([]byte) [][]byte {
		return func(d []byte) [][]byte { return [][]byte{append([]byte(name+":"), d[:4]...)} }
	}
	quicBE, wgBE, ovpnBE, dnsBE := peers.UDPReply(t, tag("quic")), peers.UDPReply(t, tag("wg")), peers.UDPReply(t, tag("ovpn")), peers.UDPReply(t, tag("dns"))
	r := startRelay(t, listener(
		routeTo("quic", snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"*.example.test"}}, quicBE.Addr),
		routeTo("wg", snapshot.Match{Protocol: snapshot.WireGuard}, wgBE.Addr),
		routeTo("ovpn", snapshot.Match{Protocol: snapshot.OpenVPN}, ovpnBE.Addr),
		routeTo("dns", snapshot.Match{Protocol: snapshot.DNS}, dnsBE.Addr),
	), Options{})
	for _, tc := range []struct {
		name    string
		first   [][]byte
		backend string
	}{
		{"quic", [][]byte{capture(t, "quic", "corpus/quic-go_v1_x25519.0.bin")}, "quic"},
		{"quic over two datagrams", [][]byte{capture(t, "quic", "corpus/quic-go_v1_pq.0.bin"), capture(t, "quic", "corpus/quic-go_v1_pq.1.bin")}, "quic"},
		{"wireguard", [][]byte{capture(t, "sniff", "udp/wireguard_initiation_wireguard-go.bin")}, "wg"},
		{"openvpn", [][]byte{capture(t, "sniff", "udp/openvpn_udp_hard_reset_v2.bin")}, "ovpn"},
		{"dns", [][]byte{capture(t, "sniff", "udp/dns_query_dig.bin")}, "dns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := client(t, r.Addr().String())
			for _, d := range tc.first {
				if _, err := c.Write(d); err != nil {
					t.Fatal(err)
				}
			}
			for i, d := range tc.first {
				got := receive(t, c)
				if want := tc.backend + ":" + string(d[:4]); string(got) != want {
					t.Fatalf("reply %d = %q, want %q", i, got, want)
				}
			}
			// Later datagrams follow the session, whatever they hold.
			if got := exchange(t, c, []byte("more")); string(got) != tc.backend+":more" {
				t.Fatalf("later datagram answered by %q", got)
			}
		})
	}
}

// TestRelayDrops: a short QUIC Initial, garbage no route takes, and the
// caps drop datagrams without a session, without an answer, and count
// them.
func TestRelayDrops(t *testing.T) {
	be := peers.UDPReply(t, echo)
	m := NewMetrics()
	l := listener(
		routeTo("quic", snapshot.Match{Protocol: snapshot.QUIC}, be.Addr),
		routeTo("dns", snapshot.Match{Protocol: snapshot.DNS}, be.Addr),
	)
	l.MaxConnections = 2
	r := startRelay(t, l, Options{Metrics: m})
	initial := capture(t, "quic", "corpus/quic-go_v1_x25519.0.bin")
	dns := capture(t, "sniff", "udp/dns_query_dig.bin")
	drops := func(reason string) float64 { return testutil.ToFloat64(m.drops.WithLabelValues("udp", reason)) }

	c := client(t, r.Addr().String())
	for _, d := range [][]byte{initial[:1199], initial[:40], []byte("garbage"), {}} {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	// The DNS query comes after them on the same socket: once it is
	// answered, they were all read.
	if got := exchange(t, c, dns); !bytes.Equal(got, dns) {
		t.Fatalf("DNS answer %q", got)
	}
	if got := be.Received(); got != 1 {
		t.Errorf("the backend received %d datagrams, want the DNS query only", got)
	}
	if drops(DropShortInitial) != 2 || drops(DropNoRoute) != 2 {
		t.Errorf("drops: short_initial %v, no_route %v; want 2 and 2", drops(DropShortInitial), drops(DropNoRoute))
	}
	c2 := client(t, r.Addr().String())
	if got := exchange(t, c2, initial); !bytes.Equal(got, initial) {
		t.Fatal("the QUIC session was not relayed")
	}
	// Within a QUIC session, a short Initial is dropped too.
	if _, err := c2.Write(initial[:1000]); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, c2, initial); !bytes.Equal(got, initial) {
		t.Fatal("the QUIC session stopped")
	}
	// Two sessions: the listener is full.
	c3 := client(t, r.Addr().String())
	if _, err := c3.Write(dns); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, peers.IOTimeout, "the third client's drop", func() bool { return drops(DropSessionLimit) == 1 })
	if r.Sessions() != 2 {
		t.Errorf("%d sessions, want 2", r.Sessions())
	}
	if got := be.Received(); got != 3 {
		t.Errorf("the backend received %d datagrams, want 3", got)
	}
	if drops(DropShortInitial) != 3 {
		t.Errorf("short_initial drops %v, want 3", drops(DropShortInitial))
	}
}

// TestRelayClientLimit: one client address holds at most
// maxConnectionsPerClient sessions, however many ports it uses.
func TestRelayClientLimit(t *testing.T) {
	be := peers.UDPReply(t, echo)
	m := NewMetrics()
	l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr))
	l.MaxConnectionsPerClient = 3
	r := startRelay(t, l, Options{Metrics: m})
	for i := range 5 {
		c := client(t, r.Addr().String())
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	peers.Until(t, peers.IOTimeout, "two drops", func() bool {
		return testutil.ToFloat64(m.drops.WithLabelValues("udp", DropClientLimit)) == 2
	})
	if r.Sessions() != 3 {
		t.Errorf("%d sessions, want 3", r.Sessions())
	}
}

// TestRelaySessionsNeverPassTheCap: the session count, which the
// sessions gauge shows, never reads above maxConnections, not even for
// the instant a refused client is being turned away.
func TestRelaySessionsNeverPassTheCap(t *testing.T) {
	be := peers.UDPReply(t, echo)
	l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr))
	l.MaxConnections = 1
	r := startRelay(t, l, Options{Metrics: NewMetrics()})
	exchange(t, client(t, r.Addr().String()), []byte("a"))
	lc, other := r.cfg.Load(), netip.MustParseAddrPort("192.0.2.1:4000")
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200000 && !stop.Load(); i++ {
			if s, why := r.admit(lc, other, 0); s != nil || why != DropSessionLimit {
				t.Errorf("admitted past the cap: %v, %q", s != nil, why)
				return
			}
		}
	}()
	defer func() { stop.Store(true); <-done }()
	for {
		select {
		case <-done:
			return
		default:
		}
		if n := r.Sessions(); n > 1 {
			t.Errorf("%d sessions read over a cap of 1", n)
			return
		}
	}
}

// TestRelayIdleTimeout: a session ends after its route's idle timeout, and
// the client's next datagram starts a new one.
func TestRelayIdleTimeout(t *testing.T) {
	be := peers.UDPReply(t, echo)
	m := NewMetrics()
	rt := routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr)
	rt.IdleTimeout = 50 * time.Millisecond
	r := startRelay(t, listener(rt), Options{Metrics: m, SweepInterval: 10 * time.Millisecond})
	c := client(t, r.Addr().String())
	exchange(t, c, []byte("a"))
	peers.Until(t, peers.IOTimeout, "the session to idle out", func() bool { return r.Sessions() == 0 })
	if got := testutil.ToFloat64(m.sessionsTotal.WithLabelValues("udp", "any", "any", OutcomeIdleTimeout)); got != 1 {
		t.Errorf("idle_timeout sessions = %v", got)
	}
	exchange(t, c, []byte("b"))
	if r.Sessions() != 1 || be.Peers() != 2 {
		t.Errorf("%d sessions, %d backend sockets; want 1 and 2", r.Sessions(), be.Peers())
	}
}

// TestRelayProbeTimeout: half a ClientHello is held until the probe ends,
// then the next route (any) takes the session with what was held.
func TestRelayProbeTimeout(t *testing.T) {
	be := peers.UDPReply(t, echo)
	l := listener(
		routeTo("quic", snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"nowhere.test"}}, be.Addr),
		routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr),
	)
	l.ProbeTimeout = 50 * time.Millisecond
	r := startRelay(t, l, Options{SweepInterval: 10 * time.Millisecond})
	half := capture(t, "quic", "corpus/quic-go_v1_pq.0.bin")
	c := client(t, r.Addr().String())
	if got := exchange(t, c, half); !bytes.Equal(got, half) {
		t.Fatal("the held datagram was not relayed")
	}
}

// TestRelayNoRouteAfterProbe: a session whose held datagrams match no
// route by the probe's end is ended, and nothing reached a backend.
func TestRelayNoRouteAfterProbe(t *testing.T) {
	be := peers.UDPReply(t, echo)
	m := NewMetrics()
	l := listener(routeTo("quic", snapshot.Match{Protocol: snapshot.QUIC}, be.Addr))
	l.ProbeTimeout = 20 * time.Millisecond
	r := startRelay(t, l, Options{Metrics: m, SweepInterval: 10 * time.Millisecond})
	c := client(t, r.Addr().String())
	if _, err := c.Write(capture(t, "quic", "corpus/quic-go_v1_pq.0.bin")); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, peers.IOTimeout, "the session to end", func() bool {
		return testutil.ToFloat64(m.sessionsTotal.WithLabelValues("udp", "", "", OutcomeNoRoute)) == 1
	})
	if r.Sessions() != 0 || be.Received() != 0 {
		t.Errorf("%d sessions, backend received %d", r.Sessions(), be.Received())
	}
}

// TestRelayPktinfo: on a wildcard address, replies leave from the address
// the client wrote to (127.0.0.2 here, not the 127.0.0.1 the kernel would
// pick): a connected client socket takes only replies from where it sent.
func TestRelayPktinfo(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		for _, batch := range []int{1, DefaultBatch} {
			t.Run(fmt.Sprintf("%s batch %d", addr, batch), func(t *testing.T) {
				be := peers.UDPReply(t, echo)
				l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr))
				l.Address = addr
				r := startRelay(t, l, Options{Batch: batch})
				port := r.Addr().(*net.UDPAddr).Port
				for _, dst := range []string{"127.0.0.2", "127.0.0.1"} {
					c := client(t, net.JoinHostPort(dst, fmt.Sprint(port)))
					if got := exchange(t, c, []byte(dst)); string(got) != dst {
						t.Fatalf("got %q", got)
					}
				}
			})
		}
	}
}

// quicServerBackend stands in for a QUIC server: it answers each datagram
// with a long-header packet whose SCID is its connection ID, then the
// datagram, so the relay learns the ID as it would from a real server.
func quicServerBackend(t testing.TB, scid []byte) *peers.UDPServer {
	hdr := []byte{0xe0, 0, 0, 0, 1, 0, byte(len(scid))} // Handshake, v1, empty DCID
	hdr = append(hdr, scid...)
	hdr = append(hdr, 0x40, 24) // Length 24, two-byte varint
	pkt := append(hdr, make([]byte, 24)...)
	return peers.UDPReply(t, func(d []byte) [][]byte { return [][]byte{pkt, d} })
}

// TestRelayFollowsConnectionID: a datagram from a new client address that
// carries a connection ID the server gave goes to the same session and
// backend socket, and replies go to the new address.
func TestRelayFollowsConnectionID(t *testing.T) {
	scid := []byte{0x5e, 0x4e, 0x3e, 0x2e, 0x1e, 0x0e, 0xfe, 0xee}
	be := quicServerBackend(t, scid)
	r := startRelay(t, listener(routeTo("quic", snapshot.Match{Protocol: snapshot.QUIC}, be.Addr)), Options{})
	initial := capture(t, "quic", "corpus/quic-go_v1_x25519.0.bin")
	c := client(t, r.Addr().String())
	if _, err := c.Write(initial); err != nil {
		t.Fatal(err)
	}
	receive(t, c) // the server's long header
	receive(t, c) // the Initial, echoed

	short := append(append([]byte{0x41}, scid...), bytes.Repeat([]byte{7}, 30)...)
	moved := client(t, r.Addr().String())
	if _, err := moved.Write(short); err != nil {
		t.Fatal(err)
	}
	receive(t, moved)
	if got := receive(t, moved); !bytes.Equal(got, short) {
		t.Fatalf("the moved client got %x", got)
	}
	if r.Sessions() != 1 || be.Peers() != 1 {
		t.Errorf("%d sessions, %d backend sockets; want 1 and 1", r.Sessions(), be.Peers())
	}
	// An unknown ID from a third address starts nothing (short headers
	// match no route).
	other := client(t, r.Addr().String())
	if _, err := other.Write(append(append([]byte{0x41}, 1, 2, 3, 4, 5, 6, 7, 8), short[9:]...)); err != nil {
		t.Fatal(err)
	}
	// The client's first DCID (its Initial retransmitted) finds it too.
	third := client(t, r.Addr().String())
	if _, err := third.Write(initial); err != nil {
		t.Fatal(err)
	}
	receive(t, third)
	if r.Sessions() != 1 || be.Peers() != 1 {
		t.Errorf("%d sessions, %d backend sockets; want 1 and 1", r.Sessions(), be.Peers())
	}
}

// TestRelayNeverAmplifies: whatever clients send, they receive exactly the
// backend's datagrams: a backend that answers nothing makes the relay
// answer nothing, and one that answers half gets half through.
func TestRelayNeverAmplifies(t *testing.T) {
	var sent atomic.Int64
	be := peers.UDPReply(t, func(d []byte) [][]byte {
		if len(d) > 0 && d[0]%2 == 0 {
			sent.Add(int64(len(d) / 2))
			return [][]byte{d[:len(d)/2]}
		}
		return nil
	})
	r := startRelay(t, listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr)), Options{})
	c := client(t, r.Addr().String())
	var got int64
	for i := range 20 {
		d := bytes.Repeat([]byte{byte(i)}, 100+i)
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			got += int64(len(receive(t, c)))
		}
	}
	peers.Until(t, peers.IOTimeout, "the backend to read everything", func() bool { return be.Received() == 20 })
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.Read(make([]byte, 100)); err == nil {
		t.Fatalf("an extra datagram of %d bytes", n)
	}
	if got != sent.Load() {
		t.Errorf("the client received %d bytes, the backend sent %d", got, sent.Load())
	}
}

// TestRelayHostile sends what an attacker would: truncated and forged
// Initials, unknown versions, random bytes, from many source ports.
// Nothing crashes, the session cap holds, and the state goes when the
// sessions idle out.
func TestRelayHostile(t *testing.T) {
	be := peers.UDPReply(t, func([]byte) [][]byte { return nil })
	m := NewMetrics()
	l := listener(
		routeTo("quic", snapshot.Match{Protocol: snapshot.QUIC, SNI: []string{"a.test"}}, be.Addr),
		routeTo("dns", snapshot.Match{Protocol: snapshot.DNS}, be.Addr),
		routeTo("bytes", snapshot.Match{Protocol: snapshot.Bytes, Prefix: []byte{0xff}}, be.Addr),
	)
	l.MaxConnections = 50
	l.ProbeTimeout = 20 * time.Millisecond
	l.Routes[2].IdleTimeout = 20 * time.Millisecond
	r := startRelay(t, l, Options{Metrics: m, SweepInterval: 10 * time.Millisecond})
	initial := capture(t, "quic", "corpus/quic-go_v1_pq.0.bin")
	forged := bytes.Clone(initial)
	forged[len(forged)-1] ^= 1
	wrongVersion := bytes.Clone(initial)
	binary.BigEndian.PutUint32(wrongVersion[1:], 0x1a2a3a4a)
	hostile := [][]byte{initial[:7], initial[:1199], forged, wrongVersion, initial, {0xc0}, {0xff, 1, 2}, make([]byte, 1500)}
	seed := uint32(1)
	for i := range 400 {
		c := client(t, r.Addr().String())
		d := hostile[i%len(hostile)]
		if i%5 == 4 {
			d = make([]byte, 1+i%1300)
			for j := range d {
				seed = seed*1664525 + 1013904223
				d[j] = byte(seed >> 24)
			}
		}
		_, _ = c.Write(d)
		if r.Sessions() > 50 {
			t.Fatalf("%d sessions over a cap of 50", r.Sessions())
		}
		_ = c.Close()
	}
	peers.Until(t, peers.IOTimeout, "every session to end", func() bool { return r.Sessions() == 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byAddr) != 0 || len(r.byToken) != 0 || len(r.byCID) != 0 {
		t.Errorf("state left: %d addresses, %d tokens, %d IDs", len(r.byAddr), len(r.byToken), len(r.byCID))
	}
}

// TestRelayCloseEndsSessions: Close ends every session (there is nothing
// to drain in UDP) and leaves no goroutine (TestMain checks).
func TestRelayCloseEndsSessions(t *testing.T) {
	be := peers.UDPReply(t, echo)
	m := NewMetrics()
	l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr))
	r, err := Listen(l.Address, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetListener(&l); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		exchange(t, client(t, r.Addr().String()), []byte("x"))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.sessionsTotal.WithLabelValues("udp", "any", "any", OutcomeClosed)); got != 3 {
		t.Errorf("closed sessions = %v, want 3", got)
	}
	if r.Sessions() != 0 {
		t.Errorf("%d sessions after Close", r.Sessions())
	}
}

// TestRelayBackendRefuses: a backend that is not there (ICMP port
// unreachable) ends the session as refused.
func TestRelayBackendRefuses(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := pc.LocalAddr().String()
	_ = pc.Close()
	m := NewMetrics()
	r := startRelay(t, listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, gone)), Options{Metrics: m})
	c := client(t, r.Addr().String())
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatal(err)
	}
	peers.Until(t, peers.IOTimeout, "the session to end refused", func() bool {
		return testutil.ToFloat64(m.sessionsTotal.WithLabelValues("udp", "any", "any", OutcomeRefused)) == 1
	})
}
