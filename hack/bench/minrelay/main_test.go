package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"github.com/portmux/portmux/test/peers"
)

// TestChainCarriesBytesIntact sends random bytes through two relays in
// series, in each of the modes the tunnel benchmark chains, to an echo
// server and reads them back: masking at both hops must cancel out, TLS
// between the hops must be spoken by both, and nothing may be lost at odd
// read boundaries.
func TestChainCarriesBytesIntact(t *testing.T) {
	cert := peers.CertPair(t, "127.0.0.1")
	serverTLS := &tls.Config{Certificates: []tls.Certificate{*cert.TLS}}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	for _, m := range []struct{ near, far mode }{
		{},
		{mode{mask: true}, mode{mask: true}},
		{mode{mask: true, copy: true}, mode{mask: true, copy: true}},
		{mode{targetTLS: clientTLS}, mode{listenTLS: serverTLS}},
	} {
		echo := peers.NewTCPServer(t, func(c net.Conn) { _, _ = io.Copy(c, c); _ = c.(*net.TCPConn).CloseWrite() })
		far, near := listen(t), listen(t)
		go serve(far, echo.Addr, m.far)
		go serve(near, far.Addr().String(), m.near)

		c, err := net.Dial("tcp", near.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 3<<20+7) // several buffers, and a tail under eight bytes
		_, _ = rand.Read(want)
		go func() { _, _ = c.Write(want); _ = c.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(c)
		_ = c.Close()
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%+v: read back %d bytes that differ from the %d sent", m, len(got), len(want))
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// TestUDPRelayKeepsSessionsApart relays datagrams of two clients to a UDP
// echo: each gets its own back, boundaries kept.
func TestUDPRelayKeepsSessionsApart(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = echo.Close() }()
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	go serveUDP(pc, echo.LocalAddr().(*net.UDPAddr))
	for _, msg := range []string{"first client", "second"} {
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != msg {
				t.Fatalf("echo %q, %v; sent %q", buf[:n], err, msg)
			}
		}
		_ = c.Close()
	}
}
