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

var errIdle = errors.New("no datagram for the idle timeout")

// liveness is what one end knows of its peer, for the watchdog. Its
// methods are safe for concurrent use.
type liveness struct {
	// heard is the time (UnixNano) anything last arrived from the peer: a
	// data message, a ping or a pong.
	heard atomic.Int64
	// data is the time (UnixNano) a datagram last went either way, for the
	// UDP idle timeout.
	data atomic.Int64
	// busy is true while nobody reads the connection (before the first
	// read, and while the reader hands data to a slow consumer): pongs
	// cannot arrive, and the peer is not to blame.
	busy atomic.Bool
	// dead is set once the watchdog has found the peer dead.
	dead atomic.Bool
	// writing counts data writes in progress.
	writing atomic.Int32
	// pinged is set once the peer has sent a ping: it keeps its own
	// keepalive, so its silence means something even while we cannot ping.
	pinged atomic.Bool
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
	l.busy.Store(true)
	return l
}

func (l *liveness) markHeard() { l.heard.Store(time.Now().UnixNano()) }
func (l *liveness) markData()  { l.data.Store(time.Now().UnixNano()) }

func since(t *atomic.Int64) time.Duration { return time.Duration(time.Now().UnixNano() - t.Load()) }

// onPing and onPong count control frames as signs of life.
func (l *liveness) onPing(context.Context, []byte) bool {
	l.markHeard()
	l.pinged.Store(true)
	return l.canWriteControl()
}

func (l *liveness) onPong(context.Context, []byte) { l.markHeard() }

// watchdog pings the peer and enforces the UDP idle timeout for one
// connection.
type watchdog struct {
	// interval between pings; zero or negative: no pings.
	interval time.Duration
	// timeout for each pong.
	timeout time.Duration
	// idle closes the connection after this long without a datagram; zero:
	// never.
	idle time.Duration
	live *liveness
}

// run watches c until ctx is done or the peer is found dead or idle. In
// those two cases it closes c and returns ErrDeadPeer or errIdle;
// otherwise nil.
//
// Pings go out on a fixed schedule, each waiting for its pong in its own
// goroutine, so that a peer that cannot answer still sees our pings every
// interval (they are its evidence that we are alive).
func (w *watchdog) run(ctx context.Context, c *websocket.Conn) error {
	if w.interval <= 0 && w.idle <= 0 {
		<-ctx.Done()
		return nil
	}
	maxPings := 1
	if w.interval > 0 {
		maxPings += int(w.timeout / w.interval)
	}
	results := make(chan error, maxPings)
	pending := 0
	var pings sync.WaitGroup
	defer pings.Wait() // each ends at its timeout, or at once when ctx is done
	pctx, cancelPings := context.WithCancel(ctx)
	defer cancelPings()

	dead := func() error {
		w.live.dead.Store(true)
		_ = c.CloseNow()
		return ErrDeadPeer
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	nextPing := time.Now().Add(w.interval)
	for {
		wake := nextPing
		if w.interval <= 0 {
			wake = time.Now().Add(time.Hour)
		}
		if w.idle > 0 {
			if d := time.Unix(0, w.live.data.Load()).Add(w.idle); d.Before(wake) {
				wake = d
			}
		}
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return nil
		case err := <-results:
			pending--
			if err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) && w.silent() {
				return dead()
			}
			continue
		case <-timer.C:
		}
		if w.idle > 0 && since(&w.live.data) >= w.idle {
			_ = c.Close(CloseIdle, "idle")
			return errIdle
		}
		if w.interval <= 0 || time.Now().Before(nextPing) {
			continue
		}
		nextPing = time.Now().Add(w.interval)
		switch {
		case !w.live.canWriteControl():
			// We cannot ask. A peer that keeps its own keepalive shows it
			// is alive by pinging us; one that does not may just be busy.
			if w.live.pinged.Load() && w.silent() {
				return dead()
			}
		case pending < maxPings:
			pending++
			pings.Add(1)
			go func() {
				defer pings.Done()
				ctx, cancel := context.WithTimeout(pctx, w.timeout)
				defer cancel()
				results <- c.Ping(ctx)
			}()
		}
	}
}

// silent reports whether the peer is to blame for its silence: we are
// reading (else its answers could not arrive) and nothing at all has come
// from it for an interval plus the pong timeout.
func (w *watchdog) silent() bool {
	return !w.live.busy.Load() && since(&w.live.heard) >= w.interval+w.timeout
}

// start runs the watchdog in a goroutine; the returned function stops it
// and returns its result (the same on every call). It must be called.
func (w *watchdog) start(c *websocket.Conn) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, c) }()
	return sync.OnceValue(func() error {
		cancel()
		return <-done
	})
}
