package udp

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// pktinfo is the control message that makes a reply leave from src: IP_PKTINFO's
// ipi_spec_dst on an IPv4 socket, IPV6_PKTINFO's address on an IPv6 one,
// where src may be an IPv4-mapped address (a dual-stack socket answering
// an IPv4 client; Linux takes it, x/net's ControlMessage leaves it out).
// The interface index stays 0: the kernel routes the reply.
func pktinfo(v6 bool, src netip.Addr) []byte {
	level, typ, size := unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo
	if v6 {
		level, typ, size = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo
	}
	b := make([]byte, unix.CmsgSpace(size))
	// struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type (int).
	if unix.SizeofCmsghdr == 16 {
		binary.NativeEndian.PutUint64(b, uint64(unix.CmsgLen(size)))
		binary.NativeEndian.PutUint32(b[8:], uint32(level))
		binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(unix.CmsgLen(size)))
		binary.NativeEndian.PutUint32(b[4:], uint32(level))
		binary.NativeEndian.PutUint32(b[8:], uint32(typ))
	}
	data := b[unix.CmsgLen(0):]
	if v6 {
		// struct in6_pktinfo: ipi6_addr, ipi6_ifindex.
		a := src.As16()
		copy(data, a[:])
	} else {
		// struct in_pktinfo: ipi_ifindex, ipi_spec_dst, ipi_addr.
		a := src.Unmap().As4()
		copy(data[4:], a[:])
	}
	return b
}
