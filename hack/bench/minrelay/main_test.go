package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"

	"github.com/portmux/portmux/test/peers"
)

// TestChainCarriesBytesIntact sends random bytes through two relays in
// series, in each of the modes the tunnel benchmark chains, to an echo
// server and reads them back: masking at both hops must cancel out, and
// nothing may be lost at odd read boundaries.
func TestChainCarriesBytesIntact(t *testing.T) {
	for _, m := range []mode{{}, {mask: true}, {mask: true, copy: true}} {
		echo := peers.NewTCPServer(t, func(c net.Conn) { _, _ = io.Copy(c, c); _ = c.(*net.TCPConn).CloseWrite() })
		far, near := listen(t), listen(t)
		go serve(far, echo.Addr, m)
		go serve(near, far.Addr().String(), m)

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
