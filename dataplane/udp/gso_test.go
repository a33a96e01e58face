//go:build linux

package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/test/peers"
)

// receiveBurst reads the answer to q and fails unless every datagram
// came whole, in order, with the bytes the backend sent.
func receiveBurst(t *testing.T, c net.Conn, q burstRequest) (dgrams, total int) {
	t.Helper()
	for i, size := range q.sizes() {
		got := receive(t, c)
		want := burstDatagram(make([]byte, size), i)
		if !bytes.Equal(got, want) {
			t.Fatalf("datagram %d: %d bytes (index %x...), want %d bytes (index %x...)", i, len(got), got[:min(4, len(got))], size, want[:min(4, len(want))])
		}
		total += size
		dgrams++
	}
	return dgrams, total
}

// TestRelayKeepsSegmentedBoundaries: runs of datagrams, each run's last
// one shorter, that a backend sends as one buffer with UDP_SEGMENT or
// one by one with sendmmsg, reach the client as the same datagrams, byte
// for byte, and the metrics count datagrams, not buffers: over IPv4 and
// IPv6, with batches of 1 and of the default, with segmentation offload
// (the relay reads the buffers whole, and joins runs of datagrams) and
// without (the kernel cuts them first).
func TestRelayKeepsSegmentedBoundaries(t *testing.T) {
	q := burstRequest{count: 23, size: 1000, last: 317, seg: 10}
	// A listener on a wildcard address sends each reply with the local
	// address its client wrote to (pktinfo) beside the segment size; ""
	// is a dual-stack socket answering an IPv4 client.
	for _, hosts := range [][2]string{{"127.0.0.1", "127.0.0.1"}, {"::1", "::1"}, {"0.0.0.0", "127.0.0.1"}, {"::", "::1"}, {"", "127.0.0.1"}} {
		listen, host := hosts[0], hosts[1]
		for _, batch := range []int{1, DefaultBatch, 32} {
			for _, tc := range []struct{ backendGSO, gso bool }{{true, true}, {true, false}, {false, true}} {
				t.Run(fmt.Sprintf("%s/batch %d/backend gso %v/gso %v", listen, batch, tc.backendGSO, tc.gso), func(t *testing.T) {
					gso := tc.gso
					be := burstBackend(t, net.JoinHostPort(host, "0"), tc.backendGSO)
					m := NewMetrics()
					l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be))
					l.Address = net.JoinHostPort(listen, "0")
					r := startRelay(t, l, Options{Batch: batch, Metrics: m, noGSO: !gso})
					if r.gso.Load() != gso {
						t.Fatalf("segmentation offload %v, want %v: this kernel has no UDP_SEGMENT", r.gso.Load(), gso)
					}
					_, port, _ := net.SplitHostPort(r.Addr().String())
					c := client(t, net.JoinHostPort(host, port))
					var dgrams, total int
					for range 3 {
						if _, err := c.Write(q.marshal()); err != nil {
							t.Fatal(err)
						}
						n, b := receiveBurst(t, c, q)
						dgrams, total = dgrams+n, total+b
					}
					if got := testutil.ToFloat64(m.datagrams.WithLabelValues("udp", "any", "down")); got != float64(dgrams) {
						t.Errorf("datagrams down = %v, want %d", got, dgrams)
					}
					if got := testutil.ToFloat64(m.bytes.WithLabelValues("udp", "any", "down")); got != float64(total) {
						t.Errorf("bytes down = %v, want %d", got, total)
					}
					if got := testutil.ToFloat64(m.drops.WithLabelValues("udp", DropClientWrite)); got != 0 {
						t.Errorf("%v replies dropped", got)
					}
				})
			}
		}
	}
}

// TestRelaySplitsWhenSegmentingFails: when the kernel refuses a send with
// UDP_SEGMENT to the client (here: the listener socket sends without UDP
// checksums, SO_NO_CHECK, which segmentation needs; a device without
// checksum offload refuses with EIO the same way), the buffer's datagrams
// go one by one, whole; and once offload is off (after EIO), buffers read
// whole from a backend socket are cut by the relay.
func TestRelaySplitsWhenSegmentingFails(t *testing.T) {
	q := burstRequest{count: 9, size: 1200, last: 1, seg: 4}
	for _, batch := range []int{1, DefaultBatch} {
		for _, backendGSO := range []bool{true, false} {
			t.Run(fmt.Sprintf("batch %d/backend gso %v", batch, backendGSO), func(t *testing.T) {
				be := burstBackend(t, "127.0.0.1:0", backendGSO)
				m := NewMetrics()
				r := startRelay(t, listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be)), Options{Batch: batch, Metrics: m})
				c := client(t, r.Addr().String())
				if _, err := c.Write(q.marshal()); err != nil {
					t.Fatal(err)
				}
				receiveBurst(t, c, q)
				if err := r.raw.Control(func(fd uintptr) {
					if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1); err != nil {
						t.Fatal(err)
					}
				}); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write(q.marshal()); err != nil {
					t.Fatal(err)
				}
				receiveBurst(t, c, q)
				if !r.gso.Load() {
					t.Error("offload turned off by an error other than EIO")
				}
				r.gso.Store(false) // as after EIO
				if _, err := c.Write(q.marshal()); err != nil {
					t.Fatal(err)
				}
				receiveBurst(t, c, q)
				if got := testutil.ToFloat64(m.datagrams.WithLabelValues("udp", "any", "down")); got != 3*float64(q.count) {
					t.Errorf("datagrams down = %v, want %d", got, 3*q.count)
				}
				if got := testutil.ToFloat64(m.drops.WithLabelValues("udp", DropClientWrite)); got != 0 {
					t.Errorf("%v replies dropped", got)
				}
			})
		}
	}
}

// TestJoinRun: which replies go as one segmented message.
func TestJoinRun(t *testing.T) {
	a, b := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:1")
	pkA, pkB := pktinfo(false, netip.MustParseAddr("127.0.0.1")), pktinfo(false, netip.MustParseAddr("127.0.0.2"))
	type reply struct {
		size, seg int
		to        netip.AddrPort
		pk        []byte
	}
	r := func(size int) reply { return reply{size: size, to: a, pk: pkA} }
	big := make([]reply, 70)
	for i := range big {
		big[i] = r(100)
	}
	for _, tc := range []struct {
		name    string
		replies []reply
		want    int
	}{
		{"one", []reply{r(1200)}, 1},
		{"same size", []reply{r(1200), r(1200), r(1200)}, 3},
		{"last shorter", []reply{r(1200), r(1200), r(10), r(1200)}, 3},
		{"first shorter", []reply{r(10), r(1200)}, 1},
		{"longer after", []reply{r(1200), r(1201)}, 1},
		{"empty first", []reply{r(0), r(0)}, 1},
		{"empty after", []reply{r(1200), r(0)}, 1},
		{"segmented first", []reply{{size: 2400, seg: 1200, to: a, pk: pkA}, r(1200)}, 1},
		{"segmented after", []reply{r(1200), {size: 2400, seg: 1200, to: a, pk: pkA}}, 1},
		{"other client", []reply{r(1200), r(1200), {size: 1200, to: b, pk: pkA}}, 2},
		{"other local address", []reply{r(1200), {size: 1200, to: a, pk: pkB}}, 1},
		{"same local address, other slice", []reply{r(1200), {size: 1200, to: a, pk: append([]byte{}, pkA...)}}, 2},
		{"segment cap", big, maxSplit},
		{"length cap", []reply{r(30000), r(30000), r(30000)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := newReplies(len(tc.replies), false)
			for _, rp := range tc.replies {
				out.add(rp.size, rp.seg, rp.to, rp.pk, nil)
			}
			if got := joinRun(out, 0); got != tc.want {
				t.Errorf("joinRun = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestGROSegment(t *testing.T) {
	gro := func(size uint32) []byte {
		b := make([]byte, groSpace)
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_GRO
		h.SetLen(unix.CmsgLen(4))
		binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], size)
		return b
	}
	other := pktinfo(false, netip.MustParseAddr("127.0.0.1"))
	for _, tc := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"gro", gro(1200), 1200},
		{"after pktinfo", append(append([]byte{}, other...), gro(1350)...), 1350},
		{"pktinfo only", other, 0},
		{"truncated header", gro(1200)[:8], 0},
		{"length past the end", gro(1200)[:unix.CmsgLen(4)-1], 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := groSegment(tc.oob); got != tc.want {
				t.Errorf("groSegment = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSegments(t *testing.T) {
	for _, tc := range []struct {
		n, seg int
		want   []int // sizes
	}{
		{0, 0, []int{0}},
		{1200, 0, []int{1200}},
		{1200, 1200, []int{1200}},
		{1000, 1200, []int{1000}},
		{2400, 1200, []int{1200, 1200}},
		{2401, 1200, []int{1200, 1200, 1}},
		{3500, 1000, []int{1000, 1000, 1000, 500}},
	} {
		b := make([]byte, tc.n)
		var got []int
		for i := range segments(tc.n, tc.seg) {
			got = append(got, len(segment(b, tc.seg, i)))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%d bytes every %d: %v, want %v", tc.n, tc.seg, got, tc.want)
		}
	}
}

func TestGSOBroken(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{unix.EIO, true},
		{fmt.Errorf("sendmmsg: %w", unix.EIO), true},
		{unix.EINVAL, false},
		{unix.EMSGSIZE, false},
		{unix.ENOBUFS, false},
	} {
		if got := gsoBroken(tc.err); got != tc.want {
			t.Errorf("gsoBroken(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestRelayCutsClientSegments: a client that sends runs of datagrams as
// one buffer with UDP_SEGMENT, its first flight included, reaches the
// backend with the same datagrams, each one relayed and counted alone:
// over IPv4 and IPv6, batches of 1 and of the default, with GRO on the
// listener socket (the relay cuts the buffer) and without (the kernel
// does).
func TestRelayCutsClientSegments(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, batch := range []int{1, DefaultBatch} {
			for _, gro := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/batch %d/gro %v", host, batch, gro), func(t *testing.T) {
					be := peers.Host(host).UDPReply(t, echo)
					m := NewMetrics()
					l := listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr))
					l.Address = net.JoinHostPort(host, "0")
					r := startRelay(t, l, Options{Batch: batch, Metrics: m, noListenGRO: !gro})
					if r.listenGRO != gro {
						t.Fatalf("listener GRO %v, want %v", r.listenGRO, gro)
					}
					c := client(t, r.Addr().String())
					var sent [][]byte
					for round := range 3 {
						var ds [][]byte
						for i := range 7 {
							size := 1000
							if i == 6 {
								size = 1 + round
							}
							ds = append(ds, burstDatagram(make([]byte, size), len(sent)+i))
						}
						sendSegmented(t, c, ds)
						for _, d := range ds {
							if got := receive(t, c); !bytes.Equal(got, d) {
								t.Fatalf("datagram %x... of %d bytes came back as %d bytes (%x...)", d[:4], len(d), len(got), got[:min(4, len(got))])
							}
						}
						sent = append(sent, ds...)
					}
					if got := testutil.ToFloat64(m.datagrams.WithLabelValues("udp", "any", "up")); got != float64(len(sent)) {
						t.Errorf("datagrams up = %v, want %d", got, len(sent))
					}
					if r.Sessions() != 1 {
						t.Errorf("%d sessions, want 1", r.Sessions())
					}
				})
			}
		}
	}
}

// TestRelayUpFallsBack: when the kernel refuses a segmented send to the
// backend (here: the session's backend socket sends without UDP
// checksums, SO_NO_CHECK), a client's segmented buffer still reaches the
// backend as its datagrams, one per message.
func TestRelayUpFallsBack(t *testing.T) {
	be := peers.UDPReply(t, echo)
	m := NewMetrics()
	r := startRelay(t, listener(routeTo("any", snapshot.Match{Protocol: snapshot.Any}, be.Addr)), Options{Metrics: m})
	c := client(t, r.Addr().String())
	exchange(t, c, []byte("hello"))
	s := r.lookup(addrPortOf(c.LocalAddr()))
	if s == nil {
		t.Fatal("no session")
	}
	s.mu.Lock()
	err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var ds [][]byte
	for i := range 5 {
		ds = append(ds, burstDatagram(make([]byte, 1100-100*(i/4)), i))
	}
	sendSegmented(t, c, ds)
	for _, d := range ds {
		if got := receive(t, c); !bytes.Equal(got, d) {
			t.Fatalf("datagram %x... of %d bytes came back as %d bytes", d[:4], len(d), len(got))
		}
	}
	if got := testutil.ToFloat64(m.datagrams.WithLabelValues("udp", "any", "up")); got != 6 {
		t.Errorf("datagrams up = %v, want 6", got)
	}
	if got := testutil.ToFloat64(m.drops.WithLabelValues("udp", DropBackendWrite)); got != 0 {
		t.Errorf("%v datagrams dropped", got)
	}
}
