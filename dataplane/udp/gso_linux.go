package udp

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Generic segmentation offload for UDP, where a backend sends with it.
//
// A backend that writes a run of datagrams as one buffer with UDP_SEGMENT
// (quic-go on Linux, for a bulk download) makes one packet through the
// stack instead of several. With UDP_GRO set on the session's backend
// socket the kernel hands that buffer to the relay whole, with the
// segment size in a control message, instead of cutting it up; the relay
// sends it on to the client the same way, as one buffer with UDP_SEGMENT,
// and the kernel cuts it into the backend's datagrams, boundaries and
// bytes unchanged, on the way out. Datagrams a backend sent one by one
// (on loopback; a device with GRO may coalesce them the same way) and
// that one flush sends to one client, one size but the last, are joined
// into such a buffer too (joinRun).
//
// The other way, the same: the listener socket has UDP_GRO, so a client's
// segmented buffer (quic-go uploading) is read whole and cut into its
// datagrams, each handled alone (sniffed, routed, counted); a session's
// run of them goes to its backend as one segmented message again
// (joinLen). See BenchmarkRelayDownload and BenchmarkRelayUpload for what
// each step buys.

// groSpace is the control message room of a read from a backend socket:
// UDP_GRO's segment size, an int.
var groSpace = unix.CmsgSpace(4)

// segmentSpace is the room of UDP_SEGMENT's control message, a uint16.
var segmentSpace = unix.CmsgSpace(2)

// enableGRO asks the kernel to deliver the backend's segmented sends on fd
// whole. A kernel without UDP_GRO (before 5.0) refuses; the socket then
// reads datagrams one by one, as before.
func enableGRO(fd int) bool {
	return unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
}

// gsoSupported reports whether the kernel takes UDP_SEGMENT on fd, as
// quic-go finds out: a kernel that knows the option answers getsockopt.
func gsoSupported(fd int) bool {
	_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	return err == nil
}

// groSegment is the segment size of a buffer read with UDP_GRO, from its
// control messages: 0 when it is one datagram.
func groSegment(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// segments is the count of datagrams in a buffer of n bytes cut every seg
// bytes, the last one shorter or equal: 1 for seg 0 (one datagram), and
// for the empty datagram.
func segments(n, seg int) int {
	if seg <= 0 || n <= seg {
		return 1
	}
	return (n + seg - 1) / seg
}

// segment is the i-th datagram of buffer b cut every seg bytes.
func segment(b []byte, seg, i int) []byte {
	if seg <= 0 {
		return b
	}
	return b[i*seg : min((i+1)*seg, len(b))]
}

// appendSegment appends UDP_SEGMENT's control message for segments of seg
// bytes.
func appendSegment(b []byte, seg int) []byte {
	start := len(b)
	b = append(b, make([]byte, segmentSpace)...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[start+unix.CmsgLen(0):], uint16(seg))
	return b
}

// gsoBroken reports whether a send with UDP_SEGMENT failed because the
// route's device cannot segment (EIO: no checksum offload, udp(7)), so
// no send should carry it again. Any other error of such a send (EINVAL:
// a segment over the path's MTU) concerns that buffer only; either way
// its datagrams are sent again one by one.
func gsoBroken(err error) bool { return errors.Is(err, unix.EIO) }
