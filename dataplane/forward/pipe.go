package forward

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune Pipe. The zero value forwards until both sides close.
type Options struct {
	// IdleTimeout closes the connection when neither direction has carried a
	// byte for this long. Activity is observed at chunk boundaries, so a
	// connection is closed after between IdleTimeout and 2×IdleTimeout of
	// silence. Zero disables it: dead peers are then found only by TCP
	// keepalive.
	IdleTimeout time.Duration

	// BufferPool provides copy buffers for the directions that cannot splice
	// (TLS-terminated streams). Nil allocates 32 KiB per such direction.
	BufferPool *sync.Pool
}

// Result is what Pipe observed.
type Result struct {
	// Up counts bytes from client to backend, Down from backend to client.
	// Bytes written before Pipe (sniffed bytes, PROXY headers) are not
	// included.
	Up, Down int64

	// Err is the first error that was not a clean end of stream, or nil.
	Err error

	// Idle is true when the idle timeout ended the connection.
	Idle bool
}

// Pipe copies client→backend and backend→client until both directions have
// ended, then closes both connections and returns what it observed.
func Pipe(client, backend net.Conn, opt Options) Result {
	ch := make(chan Result, 1)
	Start(client, backend, opt, func(r Result) { ch <- r })
	return <-ch
}

// Start is Pipe without the wait: it runs each direction on a new goroutine
// and returns at once. done runs once, on the goroutine that finishes last,
// after both connections are closed.
//
// The two goroutines start with small stacks and stay shallow, so an idle
// forwarded connection costs two small parked stacks, whatever the caller's
// stack grew to while it sniffed and dialled.
func Start(client, backend net.Conn, opt Options, done func(Result)) {
	p := &pipe{opt: opt, client: client, backend: backend, done: done}
	p.touch()
	p.pending.Store(2)
	go p.run(&p.up, backend, client)
	go p.run(&p.down, client, backend)
}

// run copies one direction and, if it is the last to end, finishes the pipe.
func (p *pipe) run(res *dirResult, dst, src net.Conn) {
	*res = p.copy(dst, src)
	if p.pending.Add(-1) != 0 {
		return
	}
	_ = p.client.Close()
	_ = p.backend.Close()
	r := Result{Up: p.up.n, Down: p.down.n, Idle: p.up.idle || p.down.idle}
	if e := p.firstErr.Load(); e != nil && !r.Idle {
		r.Err = *e
	}
	p.done(r)
}

type pipe struct {
	opt             Options
	client, backend net.Conn
	done            func(Result)
	// up and down are each written by their own goroutine; pending orders
	// those writes before the last goroutine reads both.
	up, down dirResult
	pending  atomic.Int32
	// firstErr is the error that ended the pipe; later ones are its echoes
	// (use of a closed connection) and are not reported.
	firstErr atomic.Pointer[error]
	// last is the time of the last observed activity, in UnixNano.
	last atomic.Int64
}

type dirResult struct {
	n    int64
	err  error
	idle bool
}

func (p *pipe) touch() { p.last.Store(time.Now().UnixNano()) }

// idleExpired reports whether the pipe has been silent for the idle timeout.
func (p *pipe) idleExpired() bool {
	return time.Since(time.Unix(0, p.last.Load())) >= p.opt.IdleTimeout
}

// copy moves src→dst until src ends, then half-closes dst. On error it closes
// both connections so the other direction ends too.
func (p *pipe) copy(dst, src net.Conn) dirResult {
	var r dirResult
	var err error
	if s, ok := src.(*net.TCPConn); ok {
		if d, ok := dst.(*net.TCPConn); ok {
			r.n, err = p.tcp(d, s)
		} else {
			r.n, err = p.buffered(dst, src)
		}
	} else {
		r.n, err = p.buffered(dst, src)
	}
	if err == nil {
		closeWrite(dst)
		return r
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		r.idle = true
	}
	r.err = err
	if p.firstErr.CompareAndSwap(nil, &err) {
		// An error in one direction ends the other too.
		_ = p.client.Close()
		_ = p.backend.Close()
	}
	return r
}

// buffered copies through a pooled buffer, for streams the kernel cannot
// splice (TLS).
func (p *pipe) buffered(dst io.Writer, src net.Conn) (int64, error) {
	bp := p.getBuf()
	defer p.putBuf(bp)
	buf := *bp
	var total int64
	for {
		if err := p.armDeadline(src); err != nil {
			return total, err
		}
		n, err := src.Read(buf)
		if n > 0 {
			p.touch()
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && !p.idleExpired() {
				continue
			}
			return total, err
		}
	}
}

// getBuf takes a copy buffer of at least 4 KiB from the pool (or allocates
// one without a pool); putBuf gives it back.
func (p *pipe) getBuf() *[]byte {
	if p.opt.BufferPool != nil {
		return p.opt.BufferPool.Get().(*[]byte)
	}
	b := make([]byte, 32<<10)
	return &b
}

func (p *pipe) putBuf(bp *[]byte) {
	if p.opt.BufferPool != nil {
		p.opt.BufferPool.Put(bp)
	}
}

func (p *pipe) armDeadline(c net.Conn) error {
	if p.opt.IdleTimeout <= 0 {
		return nil
	}
	return c.SetReadDeadline(time.Now().Add(p.opt.IdleTimeout))
}

// closeWrite half-closes c, or closes it when it cannot half-close.
func closeWrite(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		if hc.CloseWrite() == nil {
			return
		}
	}
	_ = c.Close()
}
