package forward

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portmux/portmux/dataplane/panics"
)

// Options tune Pipe. The zero value forwards until both sides close.
type Options struct {
	// IdleTimeout closes the connection when neither direction has carried a
	// byte for this long. Activity is observed at chunk boundaries, so a
	// connection is closed after between IdleTimeout and 2×IdleTimeout of
	// silence. Zero disables it: dead peers are then found only by TCP
	// keepalive.
	IdleTimeout time.Duration

	// BufferPool provides copy buffers (at least 4 KiB). Nil allocates 32 KiB
	// per read, which is only fit for tests.
	BufferPool *sync.Pool

	// StreamBufferPool, when set, provides the buffers of directions that
	// read a stream which is not a TCP socket (TLS). Such a direction holds
	// its buffer while it waits, so it should be small: 16 KiB, the most
	// one read from a TLS connection returns, loses nothing. Nil: BufferPool.
	StreamBufferPool *sync.Pool

	// Parker, when set, takes a direction that has waited for data longer
	// than its threshold off its goroutine, so an idle connection holds no
	// goroutine at all. Nil: each direction keeps a parked goroutine.
	Parker *Parker

	// OnPanic, when set, hears of a panic recovered while copying, before
	// the pipe closes either connection: whoever counts panics has counted
	// it by the time a client sees its connection end. The panic also
	// comes back in Result.Err.
	OnPanic func(*panics.Error)
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

// errIdle ends a direction whose connection was silent for the idle timeout.
var errIdle = errors.New("idle timeout")

// Pipe copies client→backend and backend→client until both directions have
// ended, then closes both connections and returns what it observed.
func Pipe(client, backend net.Conn, opt Options) Result {
	ch := make(chan Result, 1)
	Start(client, backend, opt, func(r Result) { ch <- r })
	return <-ch
}

// Handle is a running pipe.
type Handle struct{ p *pipe }

// Abort ends the pipe as an error would: both connections are closed, and
// done runs once both directions have noticed. Use it rather than closing a
// connection under a running pipe, which would strand a direction parked
// off its goroutine.
func (h Handle) Abort() { h.p.fail(net.ErrClosed) }

// Start is Pipe without the wait: it runs each direction on a new goroutine
// and returns at once. done runs once, on the goroutine that finishes last,
// after both connections are closed.
//
// The two goroutines start with small stacks and stay shallow, so whatever
// the caller's stack grew to while it sniffed and dialled is not held for
// the connection's life; with a Parker, an idle connection holds none.
// (Running one direction on the caller's goroutine instead saved no
// measurable CPU and raised idle memory at 9000 connections from 5.6 to
// 7.9 KB each: the grown stacks lived until the connections parked.)
func Start(client, backend net.Conn, opt Options, done func(Result)) Handle {
	p := &pipe{opt: opt, client: client, backend: backend, done: done}
	p.up = dir{p: p, dst: backend, src: client}
	p.down = dir{p: p, dst: client, src: backend}
	p.touch()
	p.pending.Store(2)
	go p.up.run()
	go p.down.run()
	return Handle{p}
}

type pipe struct {
	opt             Options
	client, backend net.Conn
	done            func(Result)
	up, down        dir
	// pending counts the directions still running; the last one finishes.
	pending atomic.Int32
	// firstErr is the error that ended the pipe; later ones are its echoes
	// (use of a closed connection) and are not reported.
	firstErr atomic.Pointer[error]
	// last is the time of the last observed activity, in UnixNano.
	last atomic.Int64
	// aborted stops directions from parking once the pipe is ending;
	// guarded by the Parker's lock.
	aborted bool
}

// dir is one direction of a pipe. Its fields are owned by whichever
// goroutine runs it; a parked dir belongs to the Parker until woken.
type dir struct {
	p        *pipe
	dst, src net.Conn
	n        int64
	tcpState // platform state: splice mode, parking token
	idle     bool
}

// run copies until the direction ends or is parked. A woken direction runs
// again from where it stopped.
//
// A panic while copying (a bug the bytes reached) ends the pipe as an
// error would, with a *panics.Error in Result.Err: both connections are
// closed and done runs, and the process serves on.
func (d *dir) run() {
	parked, err := d.copyContained()
	if parked {
		return
	}
	if p := panics.Is(err); p != nil && d.p.opt.OnPanic != nil {
		d.p.opt.OnPanic(p)
	}
	d.finish(err)
}

func (d *dir) copyContained() (parked bool, err error) {
	defer panics.Capture(&err)
	return d.copy()
}

func (d *dir) copy() (parked bool, err error) {
	if s, ok := d.src.(*net.TCPConn); ok {
		// From a TCP socket the direction waits without a buffer and can
		// park; into one (t non-nil) it can also splice. Into TLS it cannot.
		t, _ := d.dst.(*net.TCPConn)
		return d.tcp(t, s)
	}
	if s := tlsSocket(d.src); s != nil {
		// From TLS over a TCP socket it can wait without a buffer and park
		// too, once crypto/tls has shown it holds nothing to return.
		return d.tlsStream(s)
	}
	return false, d.buffered()
}

// Prefixed is a connection that returns bytes of its own (read ahead
// while sniffing) before those of the connection it wraps. A TLS stream
// over one parks only once Buffered is 0: until then its socket's
// readiness does not say whether a read would block.
type Prefixed interface {
	// NetConn is the wrapped connection.
	NetConn() net.Conn
	// Buffered is how many bytes Read still returns before NetConn's.
	Buffered() int
}

// tlsSocket returns the TCP socket under src when src is TLS over it,
// directly or through Prefixed layers (a prefix of bytes read ahead, the
// layer that can move TLS off its socket), the only layers whose
// buffering is known; nil otherwise (TLS inside TLS, other wrappers).
func tlsSocket(src net.Conn) *net.TCPConn {
	tc, ok := src.(*tls.Conn)
	if !ok {
		return nil
	}
	under, _ := underPrefixed(tc.NetConn())
	s, _ := under.(*net.TCPConn)
	return s
}

// tlsDrained reports whether nothing sits between src's socket and
// crypto/tls: no bytes are left in any Prefixed layer.
func tlsDrained(src net.Conn) bool {
	_, drained := underPrefixed(src.(*tls.Conn).NetConn())
	return drained
}

// underPrefixed is c without its Prefixed layers, and whether none of
// them holds bytes.
func underPrefixed(c net.Conn) (under net.Conn, drained bool) {
	drained = true
	for {
		pc, ok := c.(Prefixed)
		if !ok {
			return c, drained
		}
		drained = drained && pc.Buffered() == 0
		c = pc.NetConn()
	}
}

// finish ends the direction: a clean end half-closes the other side, an
// error ends the whole pipe. The last direction to finish reports.
func (d *dir) finish(err error) {
	p := d.p
	if err == nil {
		// A clean end is passed on as a half-close, unless the other
		// direction has ended too: then both sockets close right below,
		// and closing sends the same FIN for one system call less.
		if p.pending.Load() > 1 {
			closeWrite(d.dst)
		}
	} else {
		d.idle = errors.Is(err, errIdle)
		p.fail(err)
	}
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

// fail ends the pipe once: parked directions are woken (before their
// sockets close, so the Parker never acts on a reused descriptor), then both
// connections are closed, which ends the running ones.
func (p *pipe) fail(err error) {
	if !p.firstErr.CompareAndSwap(nil, &err) {
		return
	}
	var woken []*dir
	if p.opt.Parker != nil {
		woken = p.opt.Parker.detach(p)
	}
	_ = p.client.Close()
	_ = p.backend.Close()
	for _, d := range woken {
		go d.run()
	}
}

func (p *pipe) touch() { p.last.Store(time.Now().UnixNano()) }

// idleExpired reports whether the pipe has been silent for the idle timeout.
func (p *pipe) idleExpired() bool {
	return p.opt.IdleTimeout > 0 && time.Since(time.Unix(0, p.last.Load())) >= p.opt.IdleTimeout
}

// buffered copies through a pooled buffer, for streams the kernel cannot
// splice (TLS).
func (d *dir) buffered() error {
	p := d.p
	pool := p.opt.StreamBufferPool
	if pool == nil {
		pool = p.opt.BufferPool
	}
	bp := bufFrom(pool)
	defer bufTo(pool, bp)
	buf := *bp
	for {
		if p.opt.IdleTimeout > 0 {
			if err := d.src.SetReadDeadline(time.Now().Add(p.opt.IdleTimeout)); err != nil {
				return err
			}
		}
		n, err := d.src.Read(buf)
		if n > 0 {
			if werr := d.send(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if p.idleExpired() {
					return errIdle
				}
				continue
			}
			return err
		}
	}
}

// send writes b, read from src, to dst, counting what was written and
// noting the activity for the idle timeout.
func (d *dir) send(b []byte) error {
	d.p.touch()
	w, err := d.dst.Write(b)
	d.n += int64(w)
	return err
}

// getBuf takes a copy buffer of at least 4 KiB from BufferPool; putBuf
// gives it back.
func (p *pipe) getBuf() *[]byte   { return bufFrom(p.opt.BufferPool) }
func (p *pipe) putBuf(bp *[]byte) { bufTo(p.opt.BufferPool, bp) }

// bufFrom takes a buffer from pool, or allocates 32 KiB without a pool
// (only fit for tests); bufTo gives it back.
func bufFrom(pool *sync.Pool) *[]byte {
	if pool != nil {
		return pool.Get().(*[]byte)
	}
	b := make([]byte, 32<<10)
	return &b
}

func bufTo(pool *sync.Pool, bp *[]byte) {
	if pool != nil {
		pool.Put(bp)
	}
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
