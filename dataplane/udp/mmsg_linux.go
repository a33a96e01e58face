package udp

import (
	"errors"
	"runtime"
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

// set points the headers at bufs, which are not empty and at most as
// many as the headers.
func (m *mmsg) set(bufs [][]byte) {
	for i, b := range bufs {
		m.iovs[i].Base = &b[0]
		m.iovs[i].SetLen(len(b))
		m.hdrs[i] = unix.Mmsghdr{}
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
}

// clear drops the references to the buffers.
func (m *mmsg) clear(n int) {
	for i := range n {
		m.iovs[i].Base = nil
	}
}

// recv reads up to len(bufs) datagrams from fd; n(i) is the length of the
// i-th. EAGAIN when there is none.
func (m *mmsg) recv(fd int, bufs [][]byte) (int, error) {
	m.set(bufs)
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
