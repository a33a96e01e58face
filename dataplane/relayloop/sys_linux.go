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

func sysRead(fd int, p []byte) (int, error) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

func sysWrite(fd int, p []byte) (int, error) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

func sysSplice(in, out, n int) (int, error) {
	for {
		m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(m), nil
	}
}

// sysClose closes fd once: on Linux the descriptor is gone even when
// close reports EINTR.
func sysClose(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
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
