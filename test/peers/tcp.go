package peers

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// TCPServer is a TCP server on a Host that serves every connection with
// a handler and counts them: the backend routes and tunnels are pointed
// at, so a test sees what arrived, and that nothing did when something
// must be refused. Cleanup closes the listener and every open connection
// and waits for the handlers.
type TCPServer struct {
	// Addr is where it listens: host:Port.
	Addr string
	Port int

	accepted atomic.Int64
	ln       net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// NewTCPServer starts a TCPServer on Loopback; handle runs on its own
// goroutine for each connection, which is closed when handle returns.
func NewTCPServer(t testing.TB, handle func(net.Conn)) *TCPServer {
	t.Helper()
	return Loopback.TCPServer(t, handle)
}

// TCPServer is NewTCPServer on h.
func (h Host) TCPServer(t testing.TB, handle func(net.Conn)) *TCPServer {
	t.Helper()
	return h.TCPServerOn(t, 0, handle)
}

// TCPServerOn is TCPServer on a given port (0: one the kernel picks).
func (h Host) TCPServerOn(t testing.TB, port int, handle func(net.Conn)) *TCPServer {
	t.Helper()
	ln, err := net.Listen("tcp", h.Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	s := &TCPServer{Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// Accepted is how many connections it has accepted so far.
func (s *TCPServer) Accepted() int64 { return s.accepted.Load() }

// Echo is a handler that writes back what it reads until the client
// closes.
func Echo(c net.Conn) { _, _ = io.Copy(c, c) }

// EchoBack writes payload to rw from another goroutine, then half-closes
// it with closeWrite, reads rw to its end and says how the echo differs
// from what it sent.
func EchoBack(rw io.ReadWriter, payload []byte, closeWrite func()) error {
	go func() {
		_, _ = rw.Write(payload)
		closeWrite()
	}()
	got, err := io.ReadAll(rw)
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo differs: got %d bytes, want %d", len(got), len(payload))
	}
	return nil
}
