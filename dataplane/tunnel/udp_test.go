package tunnel_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/tunnel"
	"github.com/portmux/portmux/test/peers"
)

// serveUDP runs c.ServeUDP on a new loopback socket until the test ends and
// returns a client socket connected to it.
func serveUDP(t testing.TB, c *tunnel.Client, target string) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadBuffer(4 << 20)
	runUntilEnd(t, "ServeUDP", func(ctx context.Context) error { return c.ServeUDP(ctx, pc, target) })
	conn, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// dnsMux is a tunnel endpoint (asking for token, if any) whose one target,
// dns:53, is a UDP echo server, allowed for UDP if udp.
func dnsMux(t *testing.T, token []byte, udp bool) *mux {
	t.Helper()
	up := peers.UDPEcho(t)
	return startMux(t, &snapshot.Tunnel{Token: token, Allow: []snapshot.TunnelTarget{
		target(udp, []string{up.Addr}, "dns:53"),
	}}, nil)
}

// datagram builds datagram seq: its number, then size-4 bytes derived from
// it, so that a datagram cut, merged or mixed up with another is seen.
func datagram(seq uint32, size int) []byte {
	p := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(p, seq)
	for i := 4; i < len(p); i++ {
		p[i] = byte(seq*31 + uint32(i))
	}
	return p
}

func TestUDPTunnelKeepsDatagramBoundaries(t *testing.T) {
	t.Parallel()
	m := dnsMux(t, []byte(testToken), true)
	conn := serveUDP(t, newClient(t, m.url), "dns:53")
	_ = conn.SetReadBuffer(4 << 20)

	// 1000 datagrams of sizes from 4 bytes to 2 KiB, with 32 in flight at
	// once (well within the sockets' buffers: UDP may drop, this path
	// should not).
	const total, window = 1000, 32
	sizes := make([]int, total)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range sizes {
		sizes[i] = 4 + rng.IntN(2<<10)
	}
	sent := make([][]byte, total)
	next := 0
	send := func() {
		sent[next] = datagram(uint32(next), sizes[next])
		if _, err := conn.Write(sent[next]); err != nil {
			t.Fatalf("send %d: %v", next, err)
		}
		next++
	}
	for next < window {
		send()
	}
	buf := make([]byte, 65536)
	got := make([]bool, total)
	for received := 0; received < total; received++ {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d echoes: %v", received, err)
		}
		if n < 4 {
			t.Fatalf("echo of %d bytes", n)
		}
		seq := binary.BigEndian.Uint32(buf)
		if seq >= total || got[seq] || !bytes.Equal(buf[:n], sent[seq]) {
			t.Fatalf("echo %d: %d bytes do not match datagram %d of %d bytes", received, n, seq, len(sent[min(int(seq), total-1)]))
		}
		got[seq] = true
		if next < total {
			send()
		}
	}

	// The largest IPv4 UDP payload, and an empty datagram, alone.
	for _, size := range []int{65507, 0} {
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(i * 7)
		}
		if _, err := conn.Write(p); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], p) {
			t.Fatalf("echo of %d bytes: %d bytes, %v", size, n, err)
		}
	}
}

func TestUDPTunnelRefusesATCPOnlyTarget(t *testing.T) {
	t.Parallel()
	m := dnsMux(t, nil, false)
	c := newClient(t, m.url)
	c.Retries = -1
	conn := serveUDP(t, c, "dns:53")
	_, _ = conn.Write([]byte("anyone?"))
	m.waitTunnels(t, tunnel.OutcomeForbidden, 1)
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 100)); err == nil {
		t.Fatalf("a reply of %d bytes came through a refused tunnel", n)
	}
}

func TestUDPTunnelIdleTimeoutEndsTheSession(t *testing.T) {
	t.Parallel()
	m := dnsMux(t, nil, true)
	c := newClient(t, m.url)
	c.UDPIdleTimeout = 500 * time.Millisecond
	conn := serveUDP(t, c, "dns:53")
	for i := range 2 {
		_, _ = conn.Write([]byte("ping"))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 16)
		if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("echo %d: %q, %v", i, buf[:n], err)
		}
		// The client closes the idle tunnel; the next datagram opens a
		// new one.
		m.waitTunnels(t, tunnel.OutcomeClosed, float64(i+1))
	}
}

// TestUDPTunnelDatagramAtTheIdleCloseIsNotLost: a datagram that comes
// as the client closes its idle tunnel goes over the next one. Sent
// around the idle deadline 60 times, one in 20 never reached the target
// before: taken from the session's queue by the closing tunnel, and
// dropped. A reply slower than the idle timeout is lost with its
// tunnel, as UDP may lose it (a loaded CI runner is that slow), so the
// target counts what reaches it.
func TestUDPTunnelDatagramAtTheIdleCloseIsNotLost(t *testing.T) {
	t.Parallel()
	var reached atomic.Int64
	counter, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() { // an echo that counts
		buf := make([]byte, 64)
		for {
			n, from, err := counter.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			reached.Add(1)
			_, _ = counter.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { _ = counter.Close() })
	m := startMux(t, &snapshot.Tunnel{Allow: []snapshot.TunnelTarget{
		target(true, []string{counter.LocalAddr().String()}, "dns:53"),
	}}, nil)
	c := newClient(t, m.url)
	const idle, sent = 100 * time.Millisecond, 60
	c.UDPIdleTimeout = idle
	conn := serveUDP(t, c, "dns:53")
	buf := make([]byte, 16)
	late := 0
	for i := range sent {
		_, _ = conn.Write([]byte("ping"))
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(buf); err != nil {
			late++
		}
		// From just before the deadline to just after it.
		time.Sleep(idle - 2*time.Millisecond + time.Duration(i%20)*time.Millisecond/2)
	}
	deadline := time.Now().Add(10 * time.Second)
	for reached.Load() < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := reached.Load(); n != sent {
		t.Errorf("%d datagrams of %d reached the target", n, sent)
	}
	t.Logf("%d replies of %d came back within 1s", sent-late, sent)
}
