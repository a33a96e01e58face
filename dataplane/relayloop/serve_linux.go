package relayloop

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// defaultWriteTimeout is Serving.WriteTimeout's zero value.
const defaultWriteTimeout = int64(2 * time.Minute)

// errWriteTimeout ends a served connection whose client took none of its
// output for Serving.WriteTimeout.
var errWriteTimeout = errors.New("relayloop: the client took no output within the write timeout")

// serving is the state of a connection a Server speaks on the loop.
type serving struct {
	srv     Server
	timeout int64
	// out is what Output gave that the client has not taken yet;
	// closeAfter: Output said to close once it is sent.
	out        []byte
	closeAfter bool
	// inEnded: nothing more is read (the client's end, a read error,
	// or Input's error: then failed is set and the connection closes
	// once Output has nothing more).
	inEnded bool
	failed  error
	// last is the loop's clock when the client last took bytes; armed:
	// the write timeout's timer is set.
	last  int64
	armed bool
}

// startServe hands the connection to its Server (Verdict.Serve), with
// the bytes read while deciding.
func (c *Conn) startServe(o *Serving) {
	srv, ok := c.s.(Server)
	if !ok {
		c.finish(fmt.Errorf("relayloop: Verdict.Serve for a %T, which is not a Server", c.s))
		return
	}
	sv := &serving{srv: srv, timeout: defaultWriteTimeout, last: c.l.clock}
	if o.WriteTimeout > 0 {
		sv.timeout = int64(o.WriteTimeout)
	}
	c.sv = sv
	c.state = stateServe
	c.keepClientAlive()
	c.l.disarm(c) // a probe's deadline is void
	buf := c.buf[:c.n]
	c.buf, c.n = nil, 0
	if len(buf) > 0 {
		c.input(buf)
	}
	c.l.putBuffer(buf)
	c.serve()
}

// input hands b to the Server; an error stops the reading.
func (c *Conn) input(b []byte) {
	c.up.n += int64(len(b))
	if err := c.sv.srv.Input(b); err != nil {
		c.sv.inEnded, c.sv.failed = true, err
	}
}

// serveReadBudget is how much of a served connection the loop reads in
// one go: past it, the rest waits until the round's other connections
// had their turn (Conn.later), or a client that sends faster than its
// Server takes its bytes would keep the loop to itself.
const serveReadBudget = 64 << 10

// serve reads what the client sent and hands it to the Server, then
// writes what the Server has to send, each as far as the socket lets it.
func (c *Conn) serve() {
	sv := c.sv
	read := 0
	for c.state == stateServe && !sv.inEnded && c.cR {
		if read >= serveReadBudget {
			c.later()
			break
		}
		b := c.l.getBuffer(copyChunk)
		n, err := c.clientRead(b)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		case err != nil:
			sv.inEnded = true
			sv.srv.InputEnded(os.NewSyscallError("read", err))
		case n == 0:
			sv.inEnded = true
			sv.srv.InputEnded(nil)
		default:
			read += n
			c.input(b[:n])
		}
		c.l.putBuffer(b)
	}
	if c.state == stateServe {
		c.serveOut()
	}
}

// serveOut writes the Server's output as far as the client takes it,
// asking for more (Output) whenever what it had is sent, and closes the
// connection when the Server said to or failed.
func (c *Conn) serveOut() {
	sv := c.sv
	for c.state == stateServe {
		if c.clientPending() { // TLS records the socket did not take yet
			if !c.cW {
				c.waitWrite()
				return
			}
			if err := c.clientFlush(); err != nil {
				if errors.Is(err, unix.EAGAIN) {
					c.waitWrite()
					return
				}
				c.finish(os.NewSyscallError("write", err))
				return
			}
			sv.last = c.l.clock
			continue
		}
		if len(sv.out) == 0 {
			if sv.closeAfter {
				c.finish(sv.failed)
				return
			}
			sv.out, sv.closeAfter = sv.srv.Output()
			if len(sv.out) == 0 {
				if sv.closeAfter || sv.failed != nil {
					c.finish(sv.failed)
				}
				return
			}
		}
		if !c.cW {
			c.waitWrite()
			return
		}
		n, err := c.clientWrite(sv.out)
		if n > 0 {
			sv.out = sv.out[n:]
			c.down.n += int64(n)
			sv.last = c.l.clock
		}
		switch {
		case err == nil, errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			c.waitWrite()
			return
		default:
			c.finish(os.NewSyscallError("write", err))
			return
		}
	}
}

// waitWrite waits for the client to take more (the next EPOLLOUT edge),
// at most the write timeout.
func (c *Conn) waitWrite() {
	if !c.sv.armed {
		c.sv.armed = true
		c.l.arm(c, c.l.clock+c.sv.timeout)
	}
}

// expiredServe ends the connection if its output waited past the write
// timeout since the client last took any.
func (c *Conn) expiredServe() {
	sv := c.sv
	sv.armed = false
	if len(sv.out) == 0 && !c.clientPending() {
		return
	}
	if c.l.clock-sv.last >= sv.timeout {
		c.fail(errWriteTimeout)
		return
	}
	sv.armed = true
	c.l.arm(c, sv.last+sv.timeout)
}

// Flush has the loop take the Server's output (Output) soon, from any
// goroutine: what the connection has to send was made away from the loop
// (a handler on a goroutine of its own).
func (c *Conn) Flush() { c.l.post(c.takeOutput) }

// Flusher returns Flush as a function that posts a command made once: a
// Server that flushes once a response or more costs no allocation a
// flush (Flush's method value and its command cost two).
func (c *Conn) Flusher() func() {
	take := c.takeOutput
	return func() { c.l.post(take) }
}

// takeOutput is Flush's command.
func (c *Conn) takeOutput() {
	if c.state == stateServe {
		c.l.guard(c, c.serveOut)
	}
}

// FlushFromLoop is Flush for the loop's own goroutine (a call's sink, a
// Server's method): the output is taken once the loop has handled the
// events of this round, with the other connections' output, and never
// within the caller's call, so that a Server may call it holding its
// own locks.
func (c *Conn) FlushFromLoop() {
	if !c.l.deferWrite(c) {
		c.Flush()
	}
}
