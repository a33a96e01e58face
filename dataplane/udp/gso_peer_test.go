//go:build linux

package udp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// burstRequest asks a burstBackend for count datagrams, sent seg per
// system call; each call's last datagram has last bytes, the others size.
type burstRequest struct {
	count, size, last, seg int
}

func (q burstRequest) marshal() []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint32(b, uint32(q.count))
	binary.BigEndian.PutUint16(b[4:], uint16(q.size))
	binary.BigEndian.PutUint16(b[6:], uint16(q.last))
	binary.BigEndian.PutUint16(b[8:], uint16(q.seg))
	return b
}

func parseBurstRequest(b []byte) (burstRequest, bool) {
	if len(b) != 10 {
		return burstRequest{}, false
	}
	return burstRequest{
		count: int(binary.BigEndian.Uint32(b)), size: int(binary.BigEndian.Uint16(b[4:])),
		last: int(binary.BigEndian.Uint16(b[6:])), seg: int(binary.BigEndian.Uint16(b[8:])),
	}, true
}

// burstSizes is the size of every datagram a request is answered with, in
// order.
func (q burstRequest) sizes() []int {
	var out []int
	for sent := 0; sent < q.count; {
		n := min(q.seg, q.count-sent)
		for i := range n {
			if i == n-1 {
				out = append(out, q.last)
			} else {
				out = append(out, q.size)
			}
		}
		sent += n
	}
	return out
}

// burstDatagram is the content of the i-th datagram of an answer: its
// index, then bytes that differ from one datagram to the next, so a
// datagram cut, merged or reordered shows.
func burstDatagram(b []byte, i int) []byte {
	for k := range b {
		b[k] = byte(i*7 + k)
	}
	if len(b) >= 4 {
		binary.BigEndian.PutUint32(b, uint32(i))
	}
	return b
}

// burstBackend is a UDP server on addr ("127.0.0.1:0", "[::1]:0") that
// answers each burstRequest with its datagrams, each system call's
// datagrams written as one buffer with UDP_SEGMENT when gso (as quic-go
// sends on Linux), with sendmmsg otherwise. It returns its address.
func burstBackend(t testing.TB, addr string, gso bool) string {
	t.Helper()
	return serveUDP(t, addr, func(conn *net.UDPConn) {
		req := make([]byte, 64)
		buf := make([]byte, 65535)
		pc := ipv4.NewPacketConn(conn)
		var ms []ipv4.Message
		for {
			n, from, err := conn.ReadFromUDPAddrPort(req)
			if err != nil {
				return
			}
			q, ok := parseBurstRequest(req[:n])
			if !ok {
				continue
			}
			sizes := q.sizes()
			for i := 0; i < len(sizes); {
				n := min(q.seg, len(sizes)-i)
				if gso {
					off := 0
					for k := range n {
						off += len(burstDatagram(buf[off:off+sizes[i+k]], i+k))
					}
					_, _, err = conn.WriteMsgUDPAddrPort(buf[:off], udpSegment(uint16(q.size)), from)
				} else {
					ms = ms[:0]
					off := 0
					for k := range n {
						d := burstDatagram(buf[off:off+sizes[i+k]], i+k)
						off += len(d)
						ms = append(ms, ipv4.Message{Buffers: [][]byte{d}, Addr: net.UDPAddrFromAddrPort(from)})
					}
					for len(ms) > 0 && err == nil {
						var sent int
						sent, err = pc.WriteBatch(ms, 0)
						ms = ms[sent:]
					}
				}
				if errors.Is(err, net.ErrClosed) {
					return
				}
				i += n
			}
		}
	})
}

// serveUDP binds addr with socket buffers for bursts and runs serve on
// the socket until the test ends; it returns the bound address.
func serveUDP(t testing.TB, addr string, serve func(*net.UDPConn)) string {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(conn)
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return conn.LocalAddr().String()
}

// udpSegment is the control message of a send with UDP_SEGMENT.
func udpSegment(size uint16) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return b
}

// sendSegmented writes ds to the connected c as one buffer with
// UDP_SEGMENT of the first one's size (all but the last of that size).
func sendSegmented(t testing.TB, c *net.UDPConn, ds [][]byte) {
	t.Helper()
	var buf []byte
	for _, d := range ds {
		buf = append(buf, d...)
	}
	if _, _, err := c.WriteMsgUDPAddrPort(buf, udpSegment(uint16(len(ds[0]))), netip.AddrPort{}); err != nil {
		t.Fatalf("send with UDP_SEGMENT: %v", err)
	}
}

// ackSink is a UDP server on 127.0.0.1 that answers every ackEvery
// datagrams from one peer with a datagram of one byte: what a bulk upload
// needs to keep a window in flight. It returns its address.
func ackSink(t testing.TB, ackEvery int) string {
	t.Helper()
	return serveUDP(t, "127.0.0.1:0", func(conn *net.UDPConn) {
		pc := ipv4.NewPacketConn(conn)
		ms := make([]ipv4.Message, 64)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		counts := map[string]int{}
		for {
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				return
			}
			for _, m := range ms[:n] {
				k := m.Addr.String()
				counts[k]++
				if counts[k]%ackEvery == 0 {
					_, _ = conn.WriteTo([]byte{1}, m.Addr)
				}
			}
		}
	})
}
