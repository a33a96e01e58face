package main

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// udpIdle ends a UDP session that carried nothing back for this long.
const udpIdle = time.Minute

// maxDatagram holds any UDP payload whole.
const maxDatagram = 65535

// serveUDP is the least a Go UDP relay can do (-udp): a connected socket
// to target per client address, and per session a goroutine that copies
// the target's datagrams back to the client, ending after udpIdle without
// one. One datagram per system call, through Go's net package: no
// batching, no sniffing, no caps. It returns when pc is closed.
func serveUDP(pc *net.UDPConn, target *net.UDPAddr) {
	var mu sync.Mutex
	sessions := map[netip.AddrPort]*net.UDPConn{}
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			mu.Lock()
			for _, c := range sessions {
				_ = c.Close()
			}
			mu.Unlock()
			return
		}
		if err != nil {
			continue
		}
		mu.Lock()
		c := sessions[from]
		mu.Unlock()
		if c == nil {
			if c, err = net.DialUDP("udp", nil, target); err != nil {
				continue
			}
			mu.Lock()
			sessions[from] = c
			mu.Unlock()
			go func() {
				back(pc, c, from)
				mu.Lock()
				delete(sessions, from)
				mu.Unlock()
				_ = c.Close()
			}()
		}
		_, _ = c.Write(buf[:n])
	}
}

// back copies the target's datagrams on c to the client at to until c
// fails or is idle for udpIdle.
func back(pc, c *net.UDPConn, to netip.AddrPort) {
	buf := make([]byte, maxDatagram)
	for {
		_ = c.SetReadDeadline(time.Now().Add(udpIdle))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], to); err != nil {
			return
		}
	}
}
