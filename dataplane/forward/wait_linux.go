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
	return newRawReader(pool).readOrWait(raw, limit)
}

// ReadQueued is ReadOrWait without the wait: when nothing is queued it
// returns ErrNothingQueued at once, having held no buffer. A caller that
// expects bytes to be there already (a connection accepted after its
// first bytes, TCP_DEFER_ACCEPT) reads them without arming a deadline,
// which only a wait needs.
func ReadQueued(c *net.TCPConn, pool *sync.Pool, limit int) (*[]byte, int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	r := newRawReader(pool)
	r.noWait = true
	return r.readOrWait(raw, limit)
}

// rawReader reads a socket through its RawConn, taking a buffer only for
// a read that can return data. A direction keeps one for all its reads:
// its callback is bound once, so a read, and a wait, allocate nothing (a
// closure per read cost a connection a dozen allocations).
type rawReader struct {
	pool *sync.Pool // nil: 32 KiB buffers are allocated (tests)
	read func(fd uintptr) bool
	// noWait: an empty queue is ErrNothingQueued, not a wait.
	noWait bool
	// What one call of read is asked and what it found.
	limit int
	bp    *[]byte
	n     int
	err   error
}

func newRawReader(pool *sync.Pool) *rawReader {
	r := &rawReader{pool: pool}
	r.read = r.readFD
	return r
}

// readOrWait reads what raw has queued (at most limit bytes; 0: the whole
// buffer), parking with no buffer held while nothing has arrived. n == 0
// with a nil error means end of stream; the buffer is then already given
// back.
func (r *rawReader) readOrWait(raw syscall.RawConn, limit int) (*[]byte, int, error) {
	r.limit, r.bp, r.n, r.err = limit, nil, 0, nil
	err := raw.Read(r.read)
	if err == nil {
		err = r.err
	}
	bp, n := r.bp, r.n
	r.bp = nil
	if err != nil || n == 0 {
		if bp != nil {
			bufTo(r.pool, bp)
		}
		return nil, 0, err
	}
	return bp, n, nil
}

// readFD is one attempt of readOrWait on the socket fd: false when nothing
// is queued yet, to park in the poller.
func (r *rawReader) readFD(fd uintptr) bool {
	r.bp = bufFrom(r.pool)
	buf := *r.bp
	if r.limit > 0 && r.limit < len(buf) {
		buf = buf[:r.limit]
	}
	var err error
	r.n, err = unix.Read(int(fd), buf)
	switch {
	case err == unix.EAGAIN && r.noWait:
		bufTo(r.pool, r.bp)
		r.bp, r.n, r.err = nil, 0, ErrNothingQueued
	case err == unix.EAGAIN || err == unix.EINTR:
		bufTo(r.pool, r.bp)
		r.bp, r.n = nil, 0
		return false // not yet: park with no buffer held
	case err != nil:
		r.err, r.n = err, 0
	}
	return true
}
