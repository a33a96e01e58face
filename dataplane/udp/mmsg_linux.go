package udp

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsg is the headers of one recvmmsg or sendmmsg on a connected,
// non-blocking socket: no addresses, no control messages, one buffer per
// datagram. It lets a session's backend socket move several datagrams per
// system call. Owned by one goroutine.
type mmsg struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

func newMmsg(n int) *mmsg {
	return &mmsg{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n)}
}

// set points the headers at bufs, at most as many as the headers.
func (m *mmsg) set(bufs [][]byte) {
	for i, b := range bufs {
		m.iovs[i].Base = unsafe.SliceData(b) // an empty datagram has no b[0]
		m.iovs[i].SetLen(len(b))
		m.hdrs[i] = unix.Mmsghdr{}
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
}

// setGroups points the headers at bufs, groups[k] of them after one
// another in the k-th: one message made of several buffers.
func (m *mmsg) setGroups(bufs [][]byte, groups []int) {
	off := 0
	for k, g := range groups {
		for j := off; j < off+g; j++ {
			m.iovs[j].Base = unsafe.SliceData(bufs[j])
			m.iovs[j].SetLen(len(bufs[j]))
		}
		m.hdrs[k] = unix.Mmsghdr{}
		m.hdrs[k].Hdr.Iov = &m.iovs[off]
		m.hdrs[k].Hdr.SetIovlen(g)
		off += g
	}
}

// clear drops the references to the buffers and control messages.
func (m *mmsg) clear(n int) {
	for i := range n {
		m.iovs[i].Base = nil
		m.hdrs[i].Hdr.Control = nil
	}
}

// recv reads up to len(bufs) datagrams from fd, with their control
// messages into oobs when not nil; n(i) is the length of the i-th,
// oobn(i) of its control messages. EAGAIN when there is none.
func (m *mmsg) recv(fd int, bufs, oobs [][]byte) (int, error) {
	m.set(bufs)
	if oobs != nil {
		for i := range bufs {
			m.hdrs[i].Hdr.Control = &oobs[i][0]
			m.hdrs[i].Hdr.SetControllen(len(oobs[i]))
		}
	}
	defer m.clear(len(bufs))
	return m.call(unix.SYS_RECVMMSG, fd, len(bufs))
}

// send writes bufs to fd, as many as the socket takes; the first that
// fails is the error, with the count of those before it.
func (m *mmsg) send(fd int, bufs [][]byte) (int, error) {
	m.set(bufs)
	defer m.clear(len(bufs))
	return m.call(unix.SYS_SENDMMSG, fd, len(bufs))
}

// sendGroups writes bufs to fd, groups[k] of them as the k-th message,
// with the control message oobs[k] (nil: none); as send, in messages.
func (m *mmsg) sendGroups(fd int, bufs [][]byte, groups []int, oobs [][]byte) (int, error) {
	m.setGroups(bufs, groups)
	for k, oob := range oobs {
		if len(oob) > 0 {
			m.hdrs[k].Hdr.Control = &oob[0]
			m.hdrs[k].Hdr.SetControllen(len(oob))
		}
	}
	defer m.clear(len(bufs))
	return m.call(unix.SYS_SENDMMSG, fd, len(groups))
}

func (m *mmsg) call(trap uintptr, fd, n int) (int, error) {
	for {
		// Raw: the socket never blocks, and a call the runtime saw
		// entering the kernel would, once past sysmon's 20 µs (a
		// loopback send runs the receiver's stack too), hand this
		// goroutine's P to another thread and wake one for it.
		r, _, errno := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		runtime.KeepAlive(m)
		if errno == 0 {
			return int(r), nil
		}
		if !errors.Is(errno, unix.EINTR) {
			return 0, errno
		}
	}
}

// n is the length of the i-th datagram of the last recv.
func (m *mmsg) n(i int) int { return int(m.hdrs[i].Len) }

// addrMmsg is the headers of one recvmmsg or sendmmsg on the listener
// socket: an address and control messages per datagram. It replaces the
// x/net batch API there, which allocates an address per datagram read
// and enters the kernel through calls the runtime must watch. Owned by
// one goroutine.
type addrMmsg struct {
	mmsg
	names []unix.RawSockaddrInet6 // room for either family
	v6    bool                    // the socket's family
}

func newAddrMmsg(n int, v6 bool) *addrMmsg {
	return &addrMmsg{mmsg: *newMmsg(n), names: make([]unix.RawSockaddrInet6, n), v6: v6}
}

// setNames points the headers at the names and at oobs (nil: none).
func (m *addrMmsg) setNames(n int, oobs [][]byte) {
	for i := range n {
		h := &m.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		if !m.v6 {
			h.Namelen = unix.SizeofSockaddrInet4
		}
		if oobs != nil && len(oobs[i]) > 0 {
			h.Control = &oobs[i][0]
			h.SetControllen(len(oobs[i]))
		}
	}
}

// recvFrom reads up to len(bufs) datagrams from the non-blocking fd, with
// the control messages (pktinfo) into oobs when not nil.
func (m *addrMmsg) recvFrom(fd int, bufs, oobs [][]byte) (int, error) {
	m.set(bufs)
	m.setNames(len(bufs), oobs)
	defer m.clearNames(len(bufs))
	return m.call(unix.SYS_RECVMMSG, fd, len(bufs))
}

// from is the sender of the i-th datagram of the last recvFrom: an IPv4
// address on an IPv4 socket, as Go's net reports it.
func (m *addrMmsg) from(i int) netip.AddrPort {
	sa := &m.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// oobn is the length of the control messages of the i-th datagram.
func (m *mmsg) oobn(i int) int { return int(m.hdrs[i].Hdr.Controllen) }

// sendTo writes bufs[i] to tos[i] from the local address oobs[i] names
// (nil: the socket's), as many as the socket takes; the first that fails
// is the error, with the count of those before it. With groups, the k-th
// message is groups[k] buffers of bufs, to tos[k] with oobs[k].
func (m *addrMmsg) sendTo(fd int, bufs [][]byte, groups []int, tos []netip.AddrPort, oobs [][]byte) (int, error) {
	msgs := len(bufs)
	if groups != nil {
		msgs = len(groups)
		m.setGroups(bufs, groups)
	} else {
		m.set(bufs)
	}
	for i, to := range tos[:msgs] {
		p := (*[2]byte)(unsafe.Pointer(&m.names[i].Port))
		p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
		if m.v6 {
			m.names[i].Family = unix.AF_INET6
			m.names[i].Addr = to.Addr().As16()
			m.names[i].Scope_id = zoneIndex(to.Addr().Zone())
		} else {
			sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&m.names[i]))
			sa4.Family = unix.AF_INET
			sa4.Addr = to.Addr().Unmap().As4()
		}
	}
	m.setNames(msgs, oobs)
	defer m.clearNames(len(bufs))
	return m.call(unix.SYS_SENDMMSG, fd, msgs)
}

func (m *addrMmsg) clearNames(n int) { m.clear(n) }

// zoneIndex is the interface index of an IPv6 zone: the number from
// addrMmsg.from, or an interface's name.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}
