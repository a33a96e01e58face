package forward

import (
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// waitReadable parks until the socket behind raw has data or has reached end
// of stream, without reading it and without holding a buffer. It returns how
// many bytes are queued; 0 means EOF. The read deadline of the connection
// applies.
func waitReadable(raw syscall.RawConn) (int, error) {
	var (
		avail int
		opErr error
		one   [1]byte
	)
	err := raw.Read(func(fd uintptr) bool {
		// Under load data is usually queued: one ioctl answers. Only an
		// empty queue needs the peek, to tell "nothing yet" from EOF.
		if q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil && q > 0 {
			avail = q
			return true
		}
		n, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // not yet: the poller parks us until readable
		case err != nil:
			opErr = err
			return true
		case n == 0:
			avail = 0 // orderly shutdown by the peer
			return true
		}
		avail = 1 // data arrived between the ioctl and the peek
		return true
	})
	if err != nil {
		return 0, err
	}
	return avail, opErr
}

// WaitReadable parks until c has data queued or has reached end of stream,
// holding no buffer while it waits, and reports how many bytes are queued
// (0 at end of stream). c's read deadline applies. It lets a caller take a
// buffer only once a client has actually sent something.
func WaitReadable(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	return waitReadable(raw)
}

// ReadOrWait reads what c has queued (at most limit bytes; 0: the whole
// buffer) into a buffer from pool, parking in the poller without any buffer
// while nothing has arrived. n == 0 with a nil error means end of stream;
// the buffer is then already back in the pool. c's read deadline applies.
// It lets a silent client cost no buffer, and a client that has already
// spoken cost one system call instead of a peek and a read.
func ReadOrWait(c *net.TCPConn, pool *sync.Pool, limit int) (*[]byte, int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	return readOrWait(raw, func() *[]byte { return pool.Get().(*[]byte) }, func(bp *[]byte) { pool.Put(bp) }, limit)
}

// readOrWait is ReadOrWait on a raw connection with any buffer source.
func readOrWait(raw syscall.RawConn, get func() *[]byte, put func(*[]byte), limit int) (*[]byte, int, error) {
	var (
		bp    *[]byte
		n     int
		opErr error
	)
	err := raw.Read(func(fd uintptr) bool {
		bp = get()
		buf := *bp
		if limit > 0 && limit < len(buf) {
			buf = buf[:limit]
		}
		var rerr error
		n, rerr = unix.Read(int(fd), buf)
		switch {
		case rerr == unix.EAGAIN || rerr == unix.EINTR:
			put(bp)
			bp = nil
			return false // not yet: park with no buffer held
		case rerr != nil:
			opErr, n = rerr, 0
		}
		return true
	})
	if err == nil {
		err = opErr
	}
	if err != nil || n == 0 {
		if bp != nil {
			put(bp)
		}
		return nil, 0, err
	}
	return bp, n, nil
}
