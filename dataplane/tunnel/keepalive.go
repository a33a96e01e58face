package tunnel

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// ErrDeadPeer is what reads and writes return once the keepalive has
// found the peer dead and closed the connection.
var ErrDeadPeer = errors.New("tunnel peer did not answer keepalive pings")

var errIdle = errors.New("nothing carried for the idle timeout")

// liveness is what one end knows of its peer, for the watchdog. Its
// methods are safe for concurrent use.
type liveness struct {
	// heard is the time (UnixNano) anything last arrived from the peer: a
	// data message, a ping or a pong.
	heard atomic.Int64
	// data is the time (UnixNano) data last went either way, for the idle
	// timeout.
	data atomic.Int64
	// reading is the time (UnixNano) the reader began waiting for the
	// peer, or 0 while nobody reads the connection (before the first read,
	// and while the reader hands data to a slow consumer): then pongs
	// cannot arrive, and the peer is not to blame.
	reading atomic.Int64
	// dead is set once the watchdog has found the peer dead.
	dead atomic.Bool
	// writing counts data writes in progress.
	writing atomic.Int32
	// pinged is set once the peer has sent a ping: it keeps its own
	// keepalive, so its silence means something even while we cannot ping.
	pinged atomic.Bool
	// mu orders the idle close against data going out: once the
	// watchdog has judged the connection idle (idled), nothing is sent
	// on it, so that nothing is lost to the close (a datagram refused
	// so goes over the session's next tunnel). Without it a datagram
	// sent just after the verdict went out ahead of the close, and its
	// reply came back to a closed tunnel.
	mu    sync.Mutex
	idled bool
	// room, when set, reports whether the socket's send buffer has room
	// for a control frame (see socketRoom). It is set before the
	// connection is read or watched.
	room func() bool
}

// canWriteControl reports whether a ping or pong can be written now
// without blocking. The WebSocket library closes the connection when a
// control frame cannot be written within its deadline (5s for a pong, the
// pong timeout for a ping), so a peer that stops reading for a while (a
// slow consumer behind it) would lose its tunnel to the first ping. While
// the send buffer is full, or a data write is blocked, no control frame is
// written: the peer shows it is alive by its own pings and data instead.
func (l *liveness) canWriteControl() bool {
	if l.writing.Load() > 0 {
		return false
	}
	if l.room != nil {
		return l.room()
	}
	return true
}

// tcpConnOf finds the TCP connection under c, through TLS and wrappers
// that expose what they wrap with NetConn.
func tcpConnOf(c net.Conn) *net.TCPConn {
	for range 8 {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

func newLiveness() *liveness {
	l := &liveness{}
	now := time.Now().UnixNano()
	l.heard.Store(now)
	l.data.Store(now)
	return l
}

func (l *liveness) markHeard() { l.heard.Store(time.Now().UnixNano()) }

// startRead and endRead bracket every read from the connection.
func (l *liveness) startRead() { l.reading.Store(time.Now().UnixNano()) }
func (l *liveness) endRead()   { l.reading.Store(0) }
func (l *liveness) markData()  { l.data.Store(time.Now().UnixNano()) }

// sendData marks data going out, or reports errIdle once the watchdog
// has closed the connection as idle.
func (l *liveness) sendData() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.idled {
		return errIdle
	}
	l.markData()
	return nil
}

// judgeIdle reports whether nothing was carried for idle and no write
// is blocked (a slow peer is not idleness); from a true answer on,
// sendData refuses.
func (l *liveness) judgeIdle(idle time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idled = since(&l.data) >= idle && l.writing.Load() == 0
	return l.idled
}

func since(t *atomic.Int64) time.Duration { return time.Duration(time.Now().UnixNano() - t.Load()) }

// onPing and onPong count control frames as signs of life.
func (l *liveness) onPing(context.Context, []byte) bool {
	l.markHeard()
	l.pinged.Store(true)
	return l.canWriteControl()
}

func (l *liveness) onPong(context.Context, []byte) { l.markHeard() }

// watchdog pings the peer and enforces the UDP idle timeout for one
// connection. It runs on a timer: an idle tunnel costs no goroutine, and
// each ping waits for its pong on a short-lived one.
type watchdog struct {
	// interval between pings; zero or negative: no pings.
	interval time.Duration
	// timeout for each pong.
	timeout time.Duration
	// idle closes the connection after this long without a datagram; zero:
	// never.
	idle time.Duration
	live *liveness

	c        *websocket.Conn
	ctx      context.Context // cancelled by stop: ends pending pings
	cancel   context.CancelFunc
	mu       sync.Mutex // guards the fields below, held while a tick runs
	timer    *time.Timer
	stopped  bool
	nextPing time.Time
	pending  int // pings waiting for their pong
	maxPings int
	pings    sync.WaitGroup
	// verdict is ErrDeadPeer or errIdle once the watchdog has closed the
	// connection.
	verdict atomic.Pointer[error]
}

// start watches c until the returned function is called; that function
// stops the watchdog, waits for its pings, and returns ErrDeadPeer or
// errIdle when the watchdog closed the connection (the same on every
// call). It must be called.
//
// Pings go out on a fixed schedule, each waiting for its pong on its own,
// so that a peer that cannot answer still sees our pings every interval
// (they are its evidence that we are alive).
func (w *watchdog) start(c *websocket.Conn) (stop func() error) {
	if w.interval <= 0 && w.idle <= 0 {
		return func() error { return nil }
	}
	w.c = c
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.maxPings = 1
	if w.interval > 0 {
		w.maxPings += int(w.timeout / w.interval)
	}
	w.mu.Lock()
	w.nextPing = time.Now().Add(w.interval)
	w.timer = time.AfterFunc(w.untilWake(), w.tick)
	w.mu.Unlock()
	return sync.OnceValue(func() error {
		w.mu.Lock()
		w.stopped = true
		w.timer.Stop()
		w.mu.Unlock()
		w.cancel()
		w.pings.Wait()
		if e := w.verdict.Load(); e != nil {
			return *e
		}
		return nil
	})
}

// untilWake is the time to the next ping or idle deadline. w.mu is held.
func (w *watchdog) untilWake() time.Duration {
	wake := time.Now().Add(time.Hour)
	if w.interval > 0 {
		wake = w.nextPing
	}
	if w.idle > 0 {
		if d := time.Unix(0, w.live.data.Load()).Add(w.idle); d.Before(wake) {
			wake = d
		}
	}
	return time.Until(wake)
}

func (w *watchdog) tick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.verdict.Load() != nil {
		return
	}
	if w.idle > 0 && w.live.judgeIdle(w.idle) {
		e := errIdle
		w.verdict.Store(&e)
		_ = w.c.Close(CloseIdle, "idle")
		return
	}
	if w.interval > 0 && !time.Now().Before(w.nextPing) {
		w.nextPing = time.Now().Add(w.interval)
		switch {
		case !w.live.canWriteControl():
			// We cannot ask. A peer that keeps its own keepalive shows it
			// is alive by pinging us; one that does not may just be busy.
			if w.live.pinged.Load() && w.silent() {
				w.dead()
				return
			}
		case w.pending < w.maxPings:
			w.pending++
			w.pings.Add(1)
			go w.ping()
		}
	}
	w.timer.Reset(w.untilWake())
}

// ping sends one ping and judges the peer if no pong comes.
func (w *watchdog) ping() {
	defer w.pings.Done()
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	err := w.c.Ping(ctx)
	cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending--
	if err != nil && !w.stopped && w.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) &&
		w.verdict.Load() == nil && w.silent() {
		w.dead()
	}
}

// dead closes the connection of a peer found dead. w.mu is held.
func (w *watchdog) dead() {
	w.live.dead.Store(true)
	e := ErrDeadPeer
	w.verdict.Store(&e)
	_ = w.c.CloseNow()
}

// silent reports whether the peer is to blame for its silence: nothing at
// all has come from it for an interval plus the pong timeout, and all that
// time we were reading (else its answers could not arrive: a reader that
// was stuck on a slow consumer and has just come back has not yet seen
// what waits in the socket).
func (w *watchdog) silent() bool {
	window := w.interval + w.timeout
	if since(&w.live.heard) < window {
		return false
	}
	start := w.live.reading.Load()
	return start != 0 && time.Duration(time.Now().UnixNano()-start) >= window
}
