package peers

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// UDPServer is a UDP server on a Host that answers each datagram to its
// sender. UDPEcho sends every datagram back as it came, standing in for a
// UDP service (WireGuard, DNS) that tunnels carry datagrams to; UDPReply
// answers with what a function says. Cleanup closes it and waits for its
// goroutine.
type UDPServer struct {
	// Addr is host:port.
	Addr string

	received atomic.Int64
	mu       sync.Mutex
	peers    map[string]bool
}

// UDPEcho starts a UDPServer on Loopback that echoes every datagram.
func UDPEcho(t testing.TB) *UDPServer {
	t.Helper()
	return Loopback.UDPEcho(t)
}

// UDPEcho is UDPEcho on h.
func (h Host) UDPEcho(t testing.TB) *UDPServer {
	t.Helper()
	return h.UDPReply(t, func(d []byte) [][]byte { return [][]byte{d} })
}

// UDPReply starts a UDPServer on Loopback that answers each datagram with
// the datagrams reply returns for it (none: no answer). reply gets its own
// copy of the datagram.
func UDPReply(t testing.TB, reply func([]byte) [][]byte) *UDPServer {
	t.Helper()
	return Loopback.UDPReply(t, reply)
}

// UDPReply is UDPReply on h.
func (h Host) UDPReply(t testing.TB, reply func([]byte) [][]byte) *UDPServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", h.Addr(0))
	if err != nil {
		t.Fatal(err)
	}
	// Room for a burst: a test sending thousands of datagrams at once
	// measures the code under test, not the kernel's default buffer.
	_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20)
	s := &UDPServer{Addr: pc.LocalAddr().String(), peers: map[string]bool{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // e.g. ICMP port unreachable from an earlier reply
			}
			s.received.Add(1)
			s.mu.Lock()
			s.peers[from.String()] = true
			s.mu.Unlock()
			for _, d := range reply(bytes.Clone(buf[:n])) {
				_, _ = pc.WriteTo(d, from)
			}
		}
	}()
	t.Cleanup(func() {
		_ = pc.Close()
		wg.Wait()
	})
	return s
}

// Received is how many datagrams it has received so far.
func (s *UDPServer) Received() int64 { return s.received.Load() }

// Peers is how many distinct source addresses it has received from.
func (s *UDPServer) Peers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}
