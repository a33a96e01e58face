package relayloop

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls a loop makes on its connections' sockets, raw: every
// socket is non-blocking, so none of them waits, and the runtime need
// not be told of them (x/sys/unix's wrappers tell it, for calls that may
// block: the monitor thread then takes the processor of a call that
// lasts a tick, as connect and close over loopback often do, and wakes a
// thread to run it). A signal (the runtime's preemption) interrupts none
// of them for good: Go's handlers restart read, write and splice, and
// the ones that report EINTR are retried or, for close, left alone.

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// sysRead and sysWrite are recv and send on a socket: the socket calls
// skip the file layer's position lock and checks that read and write go
// through (about 2 % of a proxied request's CPU), and MSG_NOSIGNAL spares
// the runtime a SIGPIPE for a peer gone.
func sysRead(fd int, p []byte) (int, error) {
	return sysRetry(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), 0, 0, 0)
}

func sysWrite(fd int, p []byte) (int, error) {
	return sysRetry(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
}

func sysSplice(in, out, n int) (int, error) {
	return sysRetry(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
}

// sysRetry makes the system call trap, again while it reports EINTR,
// and returns its count.
func sysRetry(trap, a1, a2, a3, a4, a5, a6 uintptr) (int, error) {
	for {
		n, _, e := unix.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// sysClose closes fd once: on Linux the descriptor is gone even when
// close reports EINTR.
func sysClose(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// sysQuiet reports a connected socket with nothing to read and no end
// of file or error pending: a pooled connection still waiting for a
// request. One byte is peeked, never taken.
func sysQuiet(fd int) bool {
	var b [1]byte
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e == unix.EAGAIN
}

// sysYield lets the kernel run another thread that waits for this core,
// if one does, before this one goes on.
func sysYield() {
	_, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
}

func sysShutdownWrite(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
}

// sysConnect starts connecting fd to ap; EINPROGRESS is the usual
// answer, and EINTR means the same for a non-blocking socket.
func sysConnect(fd int, ap netip.AddrPort) error {
	var (
		ptr  unsafe.Pointer
		size uintptr
		in4  unix.RawSockaddrInet4
		in6  unix.RawSockaddrInet6
	)
	port := (*[2]byte)(unsafe.Pointer(&in4.Port))
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		in4.Family = unix.AF_INET
		in4.Addr = a.Unmap().As4()
		ptr, size = unsafe.Pointer(&in4), unix.SizeofSockaddrInet4
	} else {
		in6.Family = unix.AF_INET6
		in6.Addr = a.As16()
		port = (*[2]byte)(unsafe.Pointer(&in6.Port))
		ptr, size = unsafe.Pointer(&in6), unix.SizeofSockaddrInet6
	}
	port[0], port[1] = byte(ap.Port()>>8), byte(ap.Port())
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(ptr), size)
	if e == unix.EINTR {
		e = unix.EINPROGRESS
	}
	return errnoErr(e)
}

// sysEpollCtl adds, modifies or removes fd in the set epfd.
func sysEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

// sysEpollPoll takes the events ready in epfd without waiting (a zero
// timeout: the loop waits in the runtime's poller, never here). A loop
// that polls with the runtime's wrapper wakes the runtime's monitor
// thread from its idle sleep on every round, to no use.
func sysEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	return sysRetry(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
}

// sysSocket makes a non-blocking, close-on-exec TCP socket of family.
func sysSocket(family int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// sysSetsockoptInt sets an integer socket option.
func sysSetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	return errnoErr(e)
}

// sysGetsockoptInt reads an integer socket option.
func sysGetsockoptInt(fd, level, opt int) (int, error) {
	var v int32
	size := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}
