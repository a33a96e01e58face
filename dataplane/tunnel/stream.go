package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/portmux/portmux/dataplane/panics"
)

var errTextMessage = errors.New("text message: only binary messages belong to " + Subprotocol)

// Stream is one end of a TCP tunnel: a net.Conn over a WebSocket
// connection that keeps TCP's half-close. Write sends each chunk as one
// binary message; CloseWrite sends the empty message that ends this end's
// half; Read returns io.EOF once the peer's half has ended. Close ends the
// connection with 1000 when both halves ended cleanly, with 4000 (reset)
// otherwise.
//
// While it is open a watchdog pings the peer (see the package
// documentation); a peer found dead closes the connection, and Read and
// Write fail.
//
// Deadlines are not supported: the WebSocket library closes a connection
// whose read is cancelled, so a deadline could not leave it usable. The
// Set*Deadline methods return errors.ErrUnsupported.
type Stream struct {
	c      *websocket.Conn
	live   *liveness
	stopWD func() error

	// Read side, used by one reader at a time.
	r      io.Reader // the message being read, nil between messages
	rn     int       // bytes read of it so far
	rerr   error     // sticky: io.EOF once the peer ended its half
	gotEOF atomic.Bool

	// cw, on the client end, gathers each message into one write.
	cw *coalescer

	// drained is closed when the reader started by drain (once draining
	// is set) has returned; peerErr is the abnormal close it saw.
	draining atomic.Bool
	drained  chan struct{}
	peerErr  atomic.Pointer[error]

	sentEOF   atomic.Bool
	closeOnce sync.Once
	closeErr  error

	local, remote net.Addr
}

// newStream wraps c, whose liveness callbacks report to live, and starts
// its watchdog.
func newStream(c *websocket.Conn, live *liveness, wd *watchdog, local, remote net.Addr) *Stream {
	c.SetReadLimit(-1) // messages are streamed through, never buffered whole
	return &Stream{c: c, live: live, stopWD: wd.start(c), local: local, remote: remote, drained: make(chan struct{})}
}

// Read reads the peer's stream.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if err := s.awaitMessage(); err != nil {
			return 0, err
		}
		n, err := s.readMessage(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// awaitMessage waits, holding no buffer, until a message has begun (or
// the stream has ended).
func (s *Stream) awaitMessage() error {
	if s.rerr != nil {
		return s.rerr
	}
	if s.r != nil {
		return nil
	}
	s.live.startRead()
	typ, r, err := s.c.Reader(context.Background())
	if err != nil {
		s.rerr = s.readError(err)
		return s.rerr
	}
	s.live.markHeard()
	// Until the next read nobody reads the connection: pongs wait.
	s.live.endRead()
	if typ != websocket.MessageBinary {
		_ = s.c.Close(websocket.StatusUnsupportedData, "binary messages only")
		s.rerr = errTextMessage
		return s.rerr
	}
	s.r, s.rn = r, 0
	return nil
}

// readMessage reads from the message awaitMessage found. It returns 0 and
// no error when that message has ended (and s.r is nil again), and io.EOF
// when it was the empty message that ends the peer's half.
func (s *Stream) readMessage(p []byte) (int, error) {
	if s.r == nil {
		return 0, s.rerr
	}
	s.live.startRead()
	n, err := s.r.Read(p)
	s.rn += n
	if n > 0 {
		s.live.markHeard()
		s.live.markData()
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		s.r = nil
		if s.rn == 0 {
			// The empty message: the peer's half has ended. Keep reading
			// control frames (pings, pongs, the close) in the background;
			// a data message now is a protocol error.
			s.rerr = io.EOF
			s.gotEOF.Store(true)
			s.drain()
			return 0, io.EOF
		}
	default:
		s.rerr = s.readError(err)
		return n, s.rerr
	}
	s.live.endRead()
	return n, nil
}

// drain reads on after the peer's half has ended, so that pings, pongs
// and the close are still handled, and keeps why the peer closed. A data
// message now is a protocol error.
func (s *Stream) drain() {
	s.draining.Store(true)
	go func() {
		defer close(s.drained)
		err := panics.Run(func() error {
			for {
				_, _, err := s.c.Reader(context.Background())
				if err != nil {
					return s.readError(err)
				}
				_ = s.c.Close(websocket.StatusProtocolError, "data after the end of the stream")
			}
		})
		if panics.Is(err) != nil {
			_ = s.c.CloseNow()
		}
		if !errors.Is(err, io.EOF) {
			s.peerErr.Store(&err)
		}
	}()
}

// closedBy returns why the peer ended the connection when it did so
// abnormally (a reset, going away) or the keepalive found it dead; nil
// otherwise.
func (s *Stream) closedBy() error {
	if s.live.dead.Load() {
		return ErrDeadPeer
	}
	if e := s.peerErr.Load(); e != nil {
		return *e
	}
	var re *ResetError
	if s.rerr != nil && errors.As(s.rerr, &re) {
		return re
	}
	return nil
}

// readError turns the error that ended the message stream into what Read
// returns: ErrDeadPeer when the keepalive closed the connection; a close
// frame before the empty message is a reset, except a plain 1000, which
// clients that do not half-close send to end.
func (s *Stream) readError(err error) error {
	if s.live.dead.Load() {
		return ErrDeadPeer
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		if ce.Code == websocket.StatusNormalClosure {
			return io.EOF
		}
		return &ResetError{Code: ce.Code, Reason: ce.Reason}
	}
	return err
}

// Write sends p as one binary message. An empty p sends nothing (an empty
// message would end the stream; that is CloseWrite).
func (s *Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.sentEOF.Load() {
		return 0, net.ErrClosed
	}
	s.live.markData()
	err := s.writeMessage(p)
	if err != nil {
		if s.live.dead.Load() {
			return 0, ErrDeadPeer
		}
		return 0, err
	}
	return len(p), nil
}

// CloseWrite ends this end's half of the stream: the peer reads EOF and
// half-closes its side. Reading goes on.
func (s *Stream) CloseWrite() error {
	if s.sentEOF.Swap(true) {
		return nil
	}
	return s.writeMessage(nil)
}

// writeMessage sends p as one binary message.
func (s *Stream) writeMessage(p []byte) error { return writeBinary(s.c, s.live, s.cw, p) }

// writeBinary sends p as one binary message on c. While it writes, live
// holds the keepalive's pings and pongs back (a control frame behind a
// blocked write would time out and close the connection); on the client
// end cw gathers the message into one write.
func writeBinary(c *websocket.Conn, live *liveness, cw *coalescer, p []byte) error {
	live.writing.Add(1)
	defer live.writing.Add(-1)
	if cw == nil {
		return c.Write(context.Background(), websocket.MessageBinary, p)
	}
	cw.begin(len(p))
	err := c.Write(context.Background(), websocket.MessageBinary, p)
	if ferr := cw.end(); err == nil {
		err = ferr
	}
	return err
}

// Close ends the connection: with 1000 when both halves ended cleanly,
// otherwise with 4000 so that the peer resets its side. It stops the
// watchdog and returns once the WebSocket connection is closed.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		code, reason := websocket.StatusNormalClosure, ""
		if !s.sentEOF.Load() || !s.gotEOF.Load() {
			code, reason = CloseReset, "stream reset"
		}
		err := s.c.Close(code, reason)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = err
		}
		s.closed()
	})
	return s.closeErr
}

// closed stops the watchdog and waits for the drain reader, once the
// connection is closed.
func (s *Stream) closed() {
	_ = s.stopWD()
	if s.draining.Load() {
		<-s.drained
	}
}

// closeGoingAway ends the connection with 1001, for an end that shuts down.
func (s *Stream) closeGoingAway() {
	s.closeOnce.Do(func() {
		goingAway(s.c)
		s.closed()
	})
}

// goingAway closes c with 1001 (going away): this end shuts down on
// purpose, and the peer may reconnect.
func goingAway(c *websocket.Conn) { _ = c.Close(websocket.StatusGoingAway, "shutting down") }

// deadPeer reports whether the watchdog closed the connection because the
// peer stopped answering. Valid after Close.
func (s *Stream) deadPeer() bool { return errors.Is(s.stopWD(), ErrDeadPeer) }

// idled reports whether the watchdog closed the connection for its idle
// timeout.
func (s *Stream) idled() bool { return errors.Is(s.stopWD(), errIdle) }

// LocalAddr is the local address of the WebSocket connection, when known.
func (s *Stream) LocalAddr() net.Addr { return s.local }

// RemoteAddr is the peer's address, when known.
func (s *Stream) RemoteAddr() net.Addr { return s.remote }

// SetDeadline is not supported (see Stream).
func (s *Stream) SetDeadline(time.Time) error { return errors.ErrUnsupported }

// SetReadDeadline is not supported (see Stream).
func (s *Stream) SetReadDeadline(time.Time) error { return errors.ErrUnsupported }

// SetWriteDeadline is not supported (see Stream).
func (s *Stream) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }

// addr is a net.Addr for ends whose socket address is unknown (the client
// end of a connection made through net/http).
type addr struct{ network, s string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.s }

var (
	_ net.Conn                        = (*Stream)(nil)
	_ interface{ CloseWrite() error } = (*Stream)(nil)
)
