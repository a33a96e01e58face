package peers

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// UDPServer is a UDP echo server on a Host: every datagram goes back to
// its sender as it came. It stands in for a UDP service (WireGuard, DNS)
// that tunnels carry datagrams to. Cleanup closes it and waits for its
// goroutine.
type UDPServer struct {
	// Addr is host:port.
	Addr string

	received atomic.Int64
}

// UDPEcho starts a UDPServer on Loopback.
func UDPEcho(t testing.TB) *UDPServer {
	t.Helper()
	return Loopback.UDPEcho(t)
}

// UDPEcho is UDPEcho on h.
func (h Host) UDPEcho(t testing.TB) *UDPServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", h.Addr(0))
	if err != nil {
		t.Fatal(err)
	}
	s := &UDPServer{Addr: pc.LocalAddr().String()}
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
			_, _ = pc.WriteTo(buf[:n], from)
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
