//go:build linux

package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"time"
)

// opTimeout bounds every client connection's whole life in the connection
// scenarios: a mux that stalls one fails it instead of hanging the run.
const opTimeout = 10 * time.Second

// sshBanner is the first line of every SSH-routed connection. Muxes route
// on its "SSH-2.0" prefix; the backend only echoes it.
var sshBanner = []byte("SSH-2.0-muxload\r\n")

// plainProbe matches neither SSH nor TLS and is long enough that every mux
// can decide at once that it is neither.
var plainProbe = []byte("PLAIN muxload probe\r\n")

// tlsLine is what a TLS client sends through its session and reads back.
var tlsLine = []byte("ping muxload\n")

// target says where the client dials: the mux for every route, or with
// direct each route's backend itself (the baseline with no mux).
type target struct {
	mux      string
	direct   bool
	backends *backends
	udp      *udpDialer // every UDP session's socket, dialled on a port no recent session used
}

// addr is where a connection or session for route is dialled.
func (t target) addr(route string) string {
	if t.direct {
		return t.backends.addr(route)
	}
	return t.mux
}

// clientTLS is the TLS client of the contract: Go's defaults (TLS 1.3,
// X25519MLKEM768 key share), no session resumption, no certificate check
// (the backends' certificate is made at start; only the mux's routing is
// under test).
func clientTLS(sni string) *tls.Config {
	return &tls.Config{
		ServerName:             sni,
		InsecureSkipVerify:     true, //nolint:gosec // loopback benchmark against our own self-signed backends
		SessionTicketsDisabled: true,
	}
}

// dial opens a TCP connection to addr with the whole operation bounded by
// opTimeout.
func dial(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, opTimeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	return c, nil
}

// roundTrip writes msg and reads its echo, checking it.
func roundTrip(c io.ReadWriter, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(buf, msg) {
		return fmt.Errorf("echo %q, sent %q", buf, msg)
	}
	return nil
}

// sshConn opens an SSH-routed connection and waits for its banner's echo,
// so the mux holds both legs when it returns.
func sshConn(addr string) (net.Conn, error) {
	c, err := dial(addr)
	if err != nil {
		return nil, err
	}
	if err := roundTrip(c, sshBanner); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// sshOnce is one SSH-routed connection: connect, banner, echo, close.
func sshOnce(addr string) error {
	c, err := sshConn(addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// tlsOnce is one TLS connection through the mux: connect, full handshake
// with the backend for cfg.ServerName, a line and its echo, close.
func tlsOnce(addr string, cfg *tls.Config) error {
	raw, err := dial(addr)
	if err != nil {
		return err
	}
	c := tls.Client(raw, cfg)
	defer func() { _ = c.Close() }()
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	return roundTrip(c, tlsLine)
}

// plainOnce is one connection that is neither SSH nor TLS.
func plainOnce(addr string) error {
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	return roundTrip(c, plainProbe)
}

// routeOp returns one connection of the kind that route must receive.
func (t target) routeOp(route string) func() error {
	addr := t.addr(route)
	switch route {
	case routeSSH:
		return func() error { return sshOnce(addr) }
	case routeTLSA:
		cfg := clientTLS(sniA)
		return func() error { return tlsOnce(addr, cfg) }
	case routeTLSB:
		cfg := clientTLS(sniB)
		return func() error { return tlsOnce(addr, cfg) }
	case routePlain:
		return func() error { return plainOnce(addr) }
	case routeUDPDNS, routeUDPAny:
		return func() error { return udpOnce(t.udp, addr, route) }
	}
	panic("unknown route " + route)
}
