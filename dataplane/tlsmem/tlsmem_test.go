package tlsmem_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/portmux/portmux/dataplane/tlsmem"
	"github.com/portmux/portmux/test/peers"
)

// pair is a TLS connection over real loopback sockets: a crypto/tls client,
// and a server whose layer is a tlsmem.Conn, handshaken through the
// socket and not yet detached.
type pair struct {
	client *tls.Conn
	raw    net.Conn // the server's socket
	mem    *tlsmem.Conn
	server *tls.Conn
}

func newPair(t *testing.T) *pair {
	t.Helper()
	cert := peers.CertPair(t, "a.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	errc := make(chan error, 1)
	var client *tls.Conn
	go func() {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			errc <- err
			return
		}
		client = tls.Client(nc, &tls.Config{ServerName: "a.test", RootCAs: roots})
		errc <- client.Handshake()
	}()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	mem := tlsmem.New(raw)
	server := tls.Server(mem, &tls.Config{Certificates: []tls.Certificate{*cert.TLS}})
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = raw.Close() })
	return &pair{client: client, raw: raw, mem: mem, server: server}
}

// readDetached reads want bytes of plaintext from the detached server as
// its owner would: crypto/tls first, and the socket, chunk bytes at a
// time, only when it says it needs more.
func (p *pair) readDetached(t *testing.T, want, chunk int) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 64<<10)
	for len(got) < want {
		n, err := p.server.Read(buf)
		got = append(got, buf[:n]...)
		if err == nil {
			continue
		}
		if !errors.Is(err, tlsmem.ErrWouldBlock) {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		room := p.mem.InRoom()
		_ = p.raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := p.raw.Read(room[:min(chunk, len(room))])
		if err != nil {
			t.Fatalf("socket read after %d bytes: %v", len(got), err)
		}
		p.mem.InFilled(m)
	}
	return got
}

// flush sends what the detached server wrote.
func (p *pair) flush(t *testing.T) {
	t.Helper()
	for len(p.mem.Out()) > 0 {
		n, err := p.raw.Write(p.mem.Out())
		if err != nil {
			t.Fatal(err)
		}
		p.mem.OutDone(n)
	}
}

// TestDetached: after the handshake on the socket, records read in any
// pieces, down to a byte at a time, come out whole, and a record that is
// not whole yet leaves the connection usable.
func TestDetached(t *testing.T) {
	for _, chunk := range []int{1, 7, 100, 64 << 10} {
		p := newPair(t)
		p.mem.Detach(nil, nil)
		msg := bytes.Repeat([]byte("hello "), 5000) // two records and a bit
		go func() { _, _ = p.client.Write(msg) }()
		if got := p.readDetached(t, len(msg), chunk); !bytes.Equal(got, msg) {
			t.Fatalf("chunk %d: read %d bytes, not what the client sent (%d)", chunk, len(got), len(msg))
		}
		if _, err := p.server.Write([]byte("world")); err != nil {
			t.Fatal(err)
		}
		if len(p.mem.Out()) == 0 {
			t.Fatal("a write left nothing to send")
		}
		p.flush(t)
		got := make([]byte, 5)
		if _, err := io.ReadFull(p.client, got); err != nil || string(got) != "world" {
			t.Fatalf("client read %q, %v", got, err)
		}
	}
}

// TestDetachUnread: ciphertext already read from the socket when the
// connection moves (a prefix layer's) is read first.
func TestDetachUnread(t *testing.T) {
	p := newPair(t)
	if _, err := p.client.Write([]byte("early bytes")); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 3)
	if _, err := io.ReadFull(p.raw, head); err != nil {
		t.Fatal(err)
	}
	p.mem.Detach(head, nil)
	if p.mem.Buffered() != 3 {
		t.Errorf("Buffered %d after detaching with 3 unread bytes", p.mem.Buffered())
	}
	if got := p.readDetached(t, 11, 64<<10); string(got) != "early bytes" {
		t.Errorf("read %q", got)
	}
}

// TestDetachedClose: closing the TLS connection once detached queues its
// close_notify and leaves the socket to its owner.
func TestDetachedClose(t *testing.T) {
	p := newPair(t)
	p.mem.Detach(nil, nil)
	if err := p.server.Close(); err != nil {
		t.Fatal(err)
	}
	if len(p.mem.Out()) == 0 {
		t.Fatal("no close_notify to send")
	}
	p.flush(t) // the socket is still open
	_ = p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := p.client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("client read %d, %v after close_notify; want EOF", n, err)
	}
}

// countingBuffers lends buffers and counts those not given back.
type countingBuffers struct{ out int }

func (b *countingBuffers) Get(size int) []byte { b.out++; return make([]byte, size) }
func (b *countingBuffers) Put(buf []byte) {
	if buf != nil {
		b.out--
	}
}

// TestIdleHoldsNoBuffer: once everything read was taken and everything
// written was sent, the connection holds none of its owner's buffers.
func TestIdleHoldsNoBuffer(t *testing.T) {
	p := newPair(t)
	var bufs countingBuffers
	p.mem.Detach(nil, &bufs)
	for range 3 {
		go func() { _, _ = p.client.Write([]byte("ping")) }()
		p.readDetached(t, 4, 64<<10)
		if _, err := p.server.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		p.flush(t)
		if _, err := io.ReadFull(p.client, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		if bufs.out != 0 || p.mem.Buffered() != 0 || len(p.mem.Out()) != 0 {
			t.Errorf("idle: %d buffers held, %d bytes buffered, %d to send", bufs.out, p.mem.Buffered(), len(p.mem.Out()))
		}
	}
}

// TestNotDetached: until Detach the layer is the socket.
func TestNotDetached(t *testing.T) {
	p := newPair(t)
	go func() { _, _ = p.client.Write([]byte("direct")) }()
	got := make([]byte, 6)
	_ = p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(p.server, got); err != nil || string(got) != "direct" {
		t.Fatalf("read %q, %v", got, err)
	}
	if p.mem.Detached() || p.mem.NetConn() != p.raw {
		t.Error("the layer is not the socket before Detach")
	}
	if err := p.server.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.raw.Write([]byte("x")); err == nil {
		t.Error("Close before Detach left the socket open")
	}
}

// TestAttach: a detached connection moved back to its socket goes on
// there: what was queued is sent first, and ciphertext read but not yet
// taken is read before the socket.
func TestAttach(t *testing.T) {
	p := newPair(t)
	p.mem.Detach(nil, nil)
	if _, err := p.server.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.client.Write([]byte("half read")); err != nil {
		t.Fatal(err)
	}
	// The owner read a few bytes of the client's record and stopped.
	room := p.mem.InRoom()
	_ = p.raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.ReadFull(p.raw, room[:4])
	if err != nil {
		t.Fatal(err)
	}
	p.mem.InFilled(n)
	_ = p.raw.SetReadDeadline(time.Time{})
	if err := p.mem.Attach(p.raw); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(p.client, got); err != nil || string(got) != "queued" {
		t.Fatalf("client read %q, %v", got, err)
	}
	got = make([]byte, 9)
	_ = p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(p.server, got); err != nil || string(got) != "half read" {
		t.Fatalf("server read %q, %v", got, err)
	}
}

// TestInEOF: the socket's end, once read by the owner, is the TLS
// stream's end (an unexpected one without close_notify).
func TestInEOF(t *testing.T) {
	p := newPair(t)
	p.mem.Detach(nil, nil)
	p.mem.InEOF()
	if _, err := p.server.Read(make([]byte, 1)); err == nil || errors.Is(err, tlsmem.ErrWouldBlock) {
		t.Errorf("read after the socket's end: %v, want an end", err)
	}
}

// TestRebuffer: bytes held in an owner's buffers move to others, and the
// owner gets every one of its own back.
func TestRebuffer(t *testing.T) {
	p := newPair(t)
	var owner countingBuffers
	p.mem.Detach(nil, &owner)
	if _, err := p.server.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	room := p.mem.InRoom()
	p.mem.InFilled(copy(room, "abc"))
	p.mem.OutDone(2)
	out := string(p.mem.Out())
	p.mem.Rebuffer(nil)
	if owner.out != 0 {
		t.Errorf("the owner has %d buffers still out", owner.out)
	}
	if got := string(p.mem.Out()); got != out {
		t.Error("the records to send changed")
	}
	buf := make([]byte, 8)
	n, err := p.mem.Read(buf)
	if err != nil || string(buf[:n]) != "abc" {
		t.Errorf("read %q, %v after Rebuffer", buf[:n], err)
	}
}
