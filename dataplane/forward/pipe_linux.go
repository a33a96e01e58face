package forward

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// smallRead is how much one direction reads through user space before it
// switches to splice: interactive traffic (keystrokes, handshakes, short
// requests) costs one read and one write, and only bulk transfers pay for
// splice's pipe and its extra system calls.
const smallRead = 4 << 10

// tcpState is a TCP direction's state that survives parking.
type tcpState struct {
	raw syscall.RawConn
	// token identifies the direction while it is parked (0: not parked).
	token uint64
	// bulk: the last read filled the buffer, so splice what is queued.
	bulk bool
	// expired: the Parker woke the direction because the idle timeout
	// passed.
	expired bool
	// deadline: a read deadline is set on src.
	deadline bool
	// keepalive: src has TCP keepalive (set when it first parks).
	keepalive bool
	// drained: a TLS direction's last read timed out without data, so
	// crypto/tls holds nothing it could return until its socket has more.
	drained bool
}

// tcp forwards from a TCP socket. While it waits it holds no buffer: each
// wake-up takes a pooled buffer for one non-blocking read and gives it back
// before waiting again. When dst is a TCP socket too, a read that fills the
// small buffer means a bulk transfer, which continues with splice (no copy
// through user space) for as long as chunks stay large; a nil dst (the
// other side is TLS) always copies, a whole pooled buffer at a time. A wait
// longer than the Parker's threshold parks the direction off its goroutine.
func (d *dir) tcp(dst, src *net.TCPConn) (parked bool, err error) {
	p := d.p
	if d.raw == nil {
		if d.raw, err = src.SyscallConn(); err != nil {
			return false, err
		}
	}
	lr := io.LimitedReader{R: src}
	rr := newRawReader(p.opt.BufferPool)
	for {
		if d.expired {
			return false, errIdle
		}
		if err := d.armDeadline(src); err != nil {
			return false, err
		}
		if !d.bulk {
			limit := smallRead
			if dst == nil {
				limit = 0 // no splice to switch to: read all there is
			}
			bp, n, err := rr.readOrWait(d.raw, limit)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if parked, err := d.waited(); parked || err != nil {
						return parked, err
					}
					continue
				}
				return false, err
			}
			if n == 0 {
				return false, nil // EOF
			}
			werr := d.send((*bp)[:n])
			p.putBuf(bp)
			if werr != nil {
				return false, werr
			}
			if dst == nil {
				d.bulk = n == len(*bp)
			} else {
				d.bulk = n == smallRead
			}
			continue
		}
		if dst == nil {
			// Bulk into TLS: blocking reads through one held buffer for as
			// long as they come back full, one deadline for all of them.
			if eof, err := d.bulkCopy(src); err != nil || eof {
				return false, err
			}
			continue
		}
		avail, err := waitReadable(d.raw)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if p.idleExpired() {
					return false, errIdle
				}
				d.bulk = false // park from the plain-read state
				continue
			}
			return false, err
		}
		if avail == 0 {
			return false, nil // EOF
		}
		if avail < smallRead {
			d.bulk = false // a small chunk: back to plain reads
			continue
		}
		lr.N = int64(avail)
		n, err := dst.ReadFrom(&lr)
		d.n += n
		if n > 0 {
			p.touch()
		}
		if err != nil {
			// The read deadline armed for the wait also bounds splice's
			// reads: a slow receiver can hold the transfer past it. Splice
			// only reads into an empty pipe, so nothing is lost: go on.
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if p.idleExpired() {
					return false, errIdle
				}
				continue
			}
			return false, err
		}
		if n == 0 {
			return false, nil // EOF raced with the ioctl
		}
	}
}

// waited handles a wait for data that reached its deadline with nothing
// read: past the idle timeout the direction ends (errIdle); otherwise it
// parks if it can (parked), or waits again (neither).
func (d *dir) waited() (parked bool, err error) {
	if d.p.idleExpired() {
		return false, errIdle
	}
	if pk := d.p.opt.Parker; pk != nil && pk.park(d) {
		return true, nil
	}
	return false, nil
}

// bulkCopy copies from src through one pooled buffer while every read fills
// it, then returns to waiting without a buffer (d.bulk false). The deadline
// armed before it bounds the whole run: when it passes, the run ends and
// the caller re-arms it. It reports whether src reached its end of stream.
func (d *dir) bulkCopy(src *net.TCPConn) (bool, error) {
	p := d.p
	bp := p.getBuf()
	defer p.putBuf(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := d.send(buf[:n]); werr != nil {
				return false, werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return true, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			d.bulk = false
			return false, nil
		case err != nil:
			return false, err
		case n < len(buf):
			d.bulk = false
			return false, nil
		}
	}
}

// armDeadline bounds the next wait by the Parker's threshold and the idle
// timeout, whichever comes first; with neither, reads have no deadline.
func (d *dir) armDeadline(src *net.TCPConn) error {
	var wait time.Duration
	if pk := d.p.opt.Parker; pk != nil {
		wait = pk.threshold
	}
	if it := d.p.opt.IdleTimeout; it > 0 && (wait == 0 || it < wait) {
		wait = it
	}
	if wait == 0 {
		if d.deadline {
			d.deadline = false
			return src.SetReadDeadline(time.Time{})
		}
		return nil
	}
	d.deadline = true
	return src.SetReadDeadline(time.Now().Add(wait))
}

// tlsStream forwards from a TLS stream over the TCP socket sock. crypto/tls
// keeps bytes it has read from the socket and not yet returned (the rest
// of a record, records read ahead), so the socket's readiness alone does
// not say whether a read would block: the direction reads through a
// pooled buffer, with a deadline of the Parker's threshold. A read that
// times out without data is what tells: crypto/tls has found nothing it
// could decrypt and waits for the socket (a timeout leaves its state
// intact, see (*tls.Conn).Read). From then on, until the socket is
// readable, the direction waits on the socket without a buffer, and parks
// off its goroutine like a TCP one. A Prefixed layer under the TLS must be
// empty too.
func (d *dir) tlsStream(sock *net.TCPConn) (parked bool, err error) {
	p := d.p
	if d.raw == nil {
		if d.raw, err = sock.SyscallConn(); err != nil {
			return false, err
		}
	}
	if tc := d.src.(*tls.Conn); !tc.ConnectionState().HandshakeComplete {
		// A handshake is not resumed after a timeout: it gets the idle
		// timeout, not the Parker's threshold. (The dataplane completes
		// it before forwarding; a caller may leave it to the first read.)
		var end time.Time
		if it := p.opt.IdleTimeout; it > 0 {
			end = time.Now().Add(it)
		}
		d.deadline = true
		if err := sock.SetReadDeadline(end); err != nil {
			return false, err
		}
		if err := tc.Handshake(); err != nil {
			return false, err
		}
	}
	pool := p.opt.StreamBufferPool
	if pool == nil {
		pool = p.opt.BufferPool
	}
	for {
		if d.expired {
			return false, errIdle
		}
		if err := d.armDeadline(sock); err != nil {
			return false, err
		}
		if d.drained {
			if _, err := waitReadable(d.raw); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if parked, err := d.waited(); parked || err != nil {
						return parked, err
					}
					continue
				}
				return false, err
			}
			// Readable, or at its end: crypto/tls reads it next.
			d.drained = false
		}
		bp := bufFrom(pool)
		n, err := d.src.Read(*bp)
		var werr error
		if n > 0 {
			werr = d.send((*bp)[:n])
		}
		bufTo(pool, bp)
		switch {
		case werr != nil:
			return false, werr
		case err == nil:
		case errors.Is(err, io.EOF):
			return false, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if p.idleExpired() {
				return false, errIdle
			}
			d.drained = n == 0 && tlsDrained(d.src)
		default:
			return false, err
		}
	}
}
