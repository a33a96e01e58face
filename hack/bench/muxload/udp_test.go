//go:build linux

package main

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestUDPEchoCountsSessions checks that a backend counts sessions, not
// hellos: a hello sent again because its echo was slow comes from the same
// session and must not count twice, or a probe's late retransmission
// lands in the next run's counts as a misrouted session.
func TestUDPEchoCountsSessions(t *testing.T) {
	e, err := listenUDPEcho("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	dial := func() *net.UDPConn {
		ra, err := net.ResolveUDPAddr("udp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.DialUDP("udp", nil, ra)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := dial(), dial()
	for _, send := range []struct {
		c   *net.UDPConn
		msg []byte
	}{{a, dnsHello}, {a, dnsHello}, {a, []byte("data")}, {b, anyHello}, {a, dnsHello}, {b, anyHello}} {
		if err := udpRoundTrip(send.c, send.msg); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.hellos.Load(); got != 2 {
		t.Errorf("two sessions sent 5 hellos between them; the backend counted %d sessions, want 2", got)
	}
	if got := e.datagrams.Load(); got != 6 {
		t.Errorf("%d datagrams counted, want 6", got)
	}
}

// TestSessionCounter checks the window: a hello from an address that sent
// one less than helloWindow ago is the same session; one after is a new
// session on a reused port.
func TestSessionCounter(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.1:1000")
	b := netip.MustParseAddrPort("127.0.0.1:1001")
	t0 := time.Unix(1000, 0)
	var s sessionCounter
	for _, c := range []struct {
		what string
		at   time.Duration
		addr string
		want bool
	}{
		{"first hello", 0, "a", true},
		{"sent again after a second", time.Second, "a", false},
		{"another address", time.Second, "b", true},
		{"sent again after four seconds more", 5 * time.Second, "a", false},
		{"b reused by a new session after the window", time.Second + helloWindow, "b", true},
		{"a reused long after", time.Hour, "a", true},
	} {
		addr := a
		if c.addr == "b" {
			addr = b
		}
		if got := s.hello(addr, t0.Add(c.at)); got != c.want {
			t.Errorf("%s: new session %v, want %v", c.what, got, c.want)
		}
	}
}
