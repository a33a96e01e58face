//go:build linux

package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portmux/portmux/hack/internal/harness"
)

// The routes of the scenario contract. Every mux under test routes
// SSH to the ssh backend, TLS by SNI to tls-b or tls-a (b listed first in
// every config, so the mux must compare names, not take the first TLS
// route) and anything else to plain.
const (
	routeSSH   = "ssh"
	routeTLSA  = "tls-a"
	routeTLSB  = "tls-b"
	routePlain = "plain"
)

// routeNames is every route in the contract, in port order.
var routeNames = []string{routeSSH, routeTLSA, routePlain, routeTLSB}

// The server names the TLS backends stand for.
const (
	sniA = "a.bench.test"
	sniB = "b.bench.test"
)

// backendPort is each route's backend port as an offset from the base
// port: 17001 SSH, 17002 TLS a, 17003 plain, 17004 TLS b by default.
func backendPort(route string) int {
	switch route {
	case routeSSH:
		return 1
	case routeTLSA:
		return 2
	case routePlain:
		return 3
	case routeTLSB:
		return 4
	}
	panic("unknown route " + route)
}

// handshakeTimeout bounds a backend's TLS handshake, so a client that
// never finishes one cannot hold a goroutine past the run.
const handshakeTimeout = 10 * time.Second

// echoServer is one backend: it echoes every byte of every connection it
// accepts, over TLS when tlsConfig is set, and counts what it accepted, so
// the client can tell which backend each of its connections reached.
type echoServer struct {
	ln        net.Listener
	tlsConfig *tls.Config

	accepted atomic.Int64
	active   atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// listenEcho starts an echo server on addr (port 0 picks one).
func listenEcho(addr string, tlsConfig *tls.Config) (*echoServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	s := &echoServer{ln: ln, tlsConfig: tlsConfig, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// acceptLoop serves every connection until the listener is closed.
func (s *echoServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(5 * time.Millisecond) // out of descriptors: do not spin
			continue
		}
		// Counted before the first byte is echoed: by the time a client
		// holds its echo the count includes its connection.
		s.accepted.Add(1)
		s.active.Add(1)
		s.track(c, true)
		s.wg.Add(1)
		go s.serve(c)
	}
}

// track adds or removes c from the set Close closes.
func (s *echoServer) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// serve echoes c until the client half-closes, then closes.
func (s *echoServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer s.active.Add(-1)
	defer s.track(c, false)
	defer func() { _ = c.Close() }()
	if s.tlsConfig == nil {
		echoPlain(c.(*net.TCPConn))
		return
	}
	tc := tls.Server(c, s.tlsConfig)
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	buf := make([]byte, 32<<10)
	_, _ = io.CopyBuffer(tc, tc, buf)
}

// smallEcho is the buffer a plain echo starts with: enough for banners
// and probes, and all an idle connection holds.
const smallEcho = 4 << 10

// echoPlain echoes c through a small buffer while the client sends
// little, and hands over to splice once a read fills the buffer: a
// throughput stream then costs the machine no copy through user space.
// Splicing from the start would be simpler, but Go holds a pipe (two
// descriptors) for as long as a splice waits, so 9000 idle connections
// would need 27000 descriptors in the backends alone.
func echoPlain(c *net.TCPConn) {
	defer func() { _ = c.CloseWrite() }()
	buf := make([]byte, smallEcho)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		if n == len(buf) {
			_, _ = io.Copy(c, c) // TCP to TCP: splice
			return
		}
	}
}

// addr is where the server listens.
func (s *echoServer) addr() string { return s.ln.Addr().String() }

// close stops accepting, closes every connection and waits for them.
func (s *echoServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// backends are the four TCP echo servers of the contract and its two UDP
// echoes.
type backends struct {
	byRoute map[string]*echoServer
	udp     map[string]*udpEcho
}

// startBackends starts the backends on 127.0.0.1 at basePort+1..4 (TCP)
// and basePort+11..12 (UDP), or on ports the kernel picks when basePort is
// 0 (tests).
func startBackends(basePort int) (*backends, error) {
	cert, _, err := harness.SelfSigned(sniA, sniB)
	if err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	b := &backends{byRoute: map[string]*echoServer{}, udp: map[string]*udpEcho{}}
	for _, r := range routeNames {
		port := 0
		if basePort != 0 {
			port = basePort + backendPort(r)
		}
		var cfg *tls.Config
		if r == routeTLSA || r == routeTLSB {
			cfg = tlsConfig
		}
		s, err := listenEcho(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cfg)
		if err != nil {
			b.close()
			return nil, fmt.Errorf("%s %w", r, err)
		}
		b.byRoute[r] = s
	}
	for _, r := range udpRouteNames {
		port := 0
		if basePort != 0 {
			port = basePort + udpBackendPort(r)
		}
		e, err := listenUDPEcho(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			b.close()
			return nil, fmt.Errorf("%s %w", r, err)
		}
		b.udp[r] = e
	}
	return b, nil
}

// addr is where route's backend listens.
func (b *backends) addr(route string) string {
	if isUDPRoute(route) {
		return b.udp[route].addr()
	}
	return b.byRoute[route].addr()
}

// counts is how many connections each TCP backend has accepted so far,
// and how many sessions each UDP backend has seen (hellos received).
func (b *backends) counts() map[string]int64 {
	m := make(map[string]int64, len(b.byRoute)+len(b.udp))
	for r, s := range b.byRoute {
		m[r] = s.accepted.Load()
	}
	for r, e := range b.udp {
		m[r] = e.hellos.Load()
	}
	return m
}

// active is how many connections the backends hold open now.
func (b *backends) active() int64 {
	var n int64
	for _, s := range b.byRoute {
		n += s.active.Load()
	}
	return n
}

// drain waits until the backends hold no connection, at most timeout: a
// mux that was just stopped may leave its backend legs closing.
func (b *backends) drain(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for b.active() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// close stops every backend.
func (b *backends) close() {
	for _, s := range b.byRoute {
		s.close()
	}
	for _, e := range b.udp {
		e.close()
	}
}
