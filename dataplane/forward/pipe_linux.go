package forward

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// smallRead is how much one direction reads through user space before it
// switches to splice: interactive traffic (keystrokes, handshakes, short
// requests) costs one read and one write, and only bulk transfers pay for
// splice's pipe and its extra system calls.
const smallRead = 4 << 10

// tcp forwards between two TCP sockets. While parked it holds no buffer:
// each wake-up takes a pooled buffer for one non-blocking read, and gives it
// back before parking again. A read that fills the buffer means a bulk
// transfer, which continues with splice (no copy through user space) for as
// long as chunks stay large.
func (p *pipe) tcp(dst, src *net.TCPConn) (int64, error) {
	raw, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	bulk := false
	lr := io.LimitedReader{R: src}
	for {
		if err := p.armDeadline(src); err != nil {
			return total, err
		}
		if !bulk {
			bp, n, err := p.readOrWait(raw)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && !p.idleExpired() {
					continue // the other direction was active
				}
				return total, err
			}
			if n == 0 {
				return total, nil // EOF
			}
			p.touch()
			w, werr := dst.Write((*bp)[:n])
			p.putBuf(bp)
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			bulk = n == smallRead
			continue
		}
		avail, err := waitReadable(raw)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !p.idleExpired() {
				continue
			}
			return total, err
		}
		if avail == 0 {
			return total, nil // EOF
		}
		if avail < smallRead {
			bulk = false // a small chunk: back to plain reads
			continue
		}
		lr.N = int64(avail)
		n, err := dst.ReadFrom(&lr)
		total += n
		if n > 0 {
			p.touch()
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil // EOF raced with the ioctl
		}
	}
}

// readOrWait reads at most smallRead bytes without blocking, parking in the
// poller (with no buffer held) until there is something to read. n == 0
// means end of stream.
func (p *pipe) readOrWait(raw syscall.RawConn) (*[]byte, int, error) {
	var (
		bp    *[]byte
		n     int
		opErr error
	)
	err := raw.Read(func(fd uintptr) bool {
		bp = p.getBuf()
		var err error
		n, err = unix.Read(int(fd), (*bp)[:smallRead])
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			p.putBuf(bp)
			bp = nil
			return false
		case err != nil:
			opErr = err
			n = 0
		}
		return true
	})
	if err == nil {
		err = opErr
	}
	if err != nil || n == 0 {
		if bp != nil {
			p.putBuf(bp)
		}
		return nil, 0, err
	}
	return bp, n, nil
}
