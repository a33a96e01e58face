package h2

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// Conn is an HTTP/2 connection served without goroutines of its own: its
// owner pushes what the client sends (Input, InputEnded) and sends what
// Output gives, as an event loop does (the dataplane's relay loops,
// relayloop.Server). ServeConn spends a goroutine reading, which wakes
// for every burst of frames and then reads again to find nothing, and
// another writing; a loop that serves many connections reads each when
// epoll says it has bytes and writes each once per round. Streams are
// served as ServeConn serves them (Handler goroutines, Async), with the
// same limits; WriteTimeout is the owner's to enforce, the other
// timeouts are the Conn's.
//
// Input, InputEnded and Output are called by the owner one at a time,
// Output after every Input and InputEnded (so these never ask for it);
// Closed once, when the connection is gone.
type Conn struct{ sc *serverConn }

// NewConn starts serving a connection from remoteAddr. flush is called,
// with the connection's lock held (so it must only signal), when there is
// output to take and Output was not called since; abort when the
// connection must close at once (no preface within PrefaceTimeout, a
// client that makes the server answer frames it does not read). The
// server's SETTINGS are the first output.
func (s *Server) NewConn(remoteAddr string, flush, abort func()) *Conn {
	cfg := s.withDefaults()
	sc := newConnState(&cfg, remoteAddr)
	sc.flush, sc.abort = flush, abort
	sc.writeSettings()
	preface := time.AfterFunc(cfg.PrefaceTimeout, func() {
		sc.mu.Lock()
		late := sc.idle == nil && !sc.closed // started() sets idle
		if late && sc.err == nil {
			sc.err = fmt.Errorf("reading the client preface: %w", os.ErrDeadlineExceeded)
		}
		sc.mu.Unlock()
		if late {
			abort()
		}
	})
	sc.stops = append(sc.stops, preface.Stop)
	return &Conn{sc: sc}
}

// Input processes b, bytes the client sent, valid during the call only:
// every frame it completes. An error ends the connection: its streams
// fail, and Output gives what is left to send (a GOAWAY) and says close.
//
// Frames are read from b in place; only a frame b leaves unfinished is
// copied, and an idle connection holds no input buffer.
func (c *Conn) Input(b []byte) error {
	sc := c.sc
	sc.outputFollows()
	var err error
	borrowed := len(sc.in.buffered()) == 0
	if borrowed {
		sc.in.b, sc.in.off = b, 0
		err = sc.consume()
	} else {
		for len(b) > 0 && err == nil {
			n := copy(sc.in.space(), b)
			sc.in.commit(n)
			b = b[n:]
			err = sc.consume()
		}
	}
	switch rest := sc.in.buffered(); {
	case len(rest) == 0:
		sc.in.b, sc.in.off = nil, 0
	case borrowed:
		sc.in.b, sc.in.off = append(make([]byte, 0, max(inputSize, len(rest))), rest...), 0
	}
	if err != nil {
		c.end(err)
		return err
	}
	return nil
}

// InputEnded says the client ended its stream (err nil) or reading it
// failed: the connection ends as ServeConn's does when its read fails.
func (c *Conn) InputEnded(err error) {
	if err == nil {
		err = io.EOF
	}
	c.sc.outputFollows()
	c.end(c.sc.readEnd(err))
}

// end stops the connection's streams and has Output close it once what
// is queued is sent.
func (c *Conn) end(err error) {
	sc := c.sc
	sc.mu.Lock()
	sc.endLocked(err)
	sc.mu.Unlock()
	if sc.srv.ReadIdle != nil {
		sc.srv.ReadIdle() // the last batch
	}
}

// outputFollows records that the owner calls Output once the call in
// progress returns: what the call appends needs no flush of its own.
func (sc *serverConn) outputFollows() {
	sc.mu.Lock()
	sc.flushAsked = true
	sc.mu.Unlock()
}

// Output returns what there is to send, nil for nothing yet, and whether
// the connection closes once it is sent. The bytes are the owner's until
// it calls Output again.
func (c *Conn) Output() ([]byte, bool) {
	sc := c.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.flushAsked = false
	if sent := sc.lent; sent != nil {
		sc.lent = nil
		sc.sentLocked(sent)
	}
	if sc.closed {
		return nil, true
	}
	if len(sc.out.b) == 0 {
		return nil, sc.closing
	}
	buf := sc.takeOutputLocked()
	sc.lent = buf
	return buf, sc.closing
}

// Closed tells the connection that its owner closed it (err: why, nil
// for an orderly end): its streams fail, its timers stop, and handlers
// still running see their writes fail.
func (c *Conn) Closed(err error) {
	sc := c.sc
	sc.mu.Lock()
	sc.closedLocked(err)
	sc.mu.Unlock()
	sc.stopped()
}

// Err is why the connection ended, as ServeConn returns it: nil for an
// orderly end (the client closed it, GOAWAY, idle).
func (c *Conn) Err() error {
	c.sc.mu.Lock()
	err := c.sc.err
	c.sc.mu.Unlock()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
