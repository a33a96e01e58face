package relayloop

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/h1"
	"github.com/portmux/portmux/dataplane/panics"
)

// Caller starts calls (CallRequest) on one loop of a Set: a caller
// whose requests come from one connection keeps them on one loop, so
// that their backend connections stay in that loop's epoll set and its
// round writes their heads one after the other.
type Caller struct{ l *loop }

// Caller returns a Caller on the least busy loop.
func (s *Set) Caller() *Caller { return &Caller{l: s.leastBusy()} }

// Caller returns a Caller on the connection's own loop: the calls of a
// connection the loop serves (Verdict.Serve) run in the same rounds as
// its reads and writes.
func (c *Conn) Caller() *Caller { return &Caller{l: c.l} }

// Call is a request in flight on a loop.
type Call struct {
	l   *loop
	req CallRequest // its MaxHead defaulted

	started  bool // on the loop
	ended    bool
	slot     int // its index in loop.inFlight while started and not ended
	attempt  int
	dialErrs []error
	be       *backend
	upQ      []byte // the head's bytes not yet written
	sent     bool   // the head was written whole
	respHead
	gotResp  bool // a byte came from the backend
	headDone bool // the final response's head was taken
	bodyDone bool // the response's last byte was read
	reuse    bool
	resp     h1.Framer
	// pending holds body data the Sink did not take; paused: the call
	// waits for Resume.
	pending []byte
	paused  bool
	trailer []byte
	// since: the start of the wait a timeout counts from (a dial, the
	// head sent); last: the loop's clock at the last byte read.
	since, last int64
	due         int64 // when the call times out (0: never), see sweepCalls
	res         ExchangeResult
}

// NewCall makes the call of req on the Caller's loop; Caller.Start
// sends it. Made apart from its start so that the Sink can hold the Call
// (to Resume it) before any of its methods runs, and so that calls made
// together start together.
func (cr *Caller) NewCall(req CallRequest) *Call {
	k := &Call{l: cr.l, req: req}
	k.req.MaxHead = Exchange{MaxHead: req.MaxHead}.withDefaults().MaxHead
	return k
}

// Start sends the calls' requests from the Caller's loop, in one
// round: their heads reach their backends one after the other, as the
// loop's own exchanges' do (loop.deferWrite), rather than each on a
// wake-up of its own. Each Sink hears of its response and end. Once the
// Set is closed, each call ends at once with ErrClosed, its Sink's Ended
// called on the caller's goroutine.
func (cr *Caller) Start(calls ...*Call) {
	if len(calls) == 0 {
		return
	}
	if !postAll(cr.l, calls) {
		for _, k := range calls {
			k.end(ErrClosed)
		}
	}
}

// run starts k: a Call is its own command (Caller.Start).
func (k *Call) run() { k.start() }

// Abort ends the call with err if it has not ended (the caller's stream
// was reset, say); its backend connection is closed, not pooled.
func (k *Call) Abort(err error) {
	k.l.post(func() {
		if !k.ended {
			k.l.guardCall(k, func() { k.end(err) })
		}
	})
}

// Resume has a call the Sink stopped offer the rest of its body again.
func (k *Call) Resume() {
	k.l.post(func() {
		if k.ended || !k.paused {
			return
		}
		k.paused = false
		k.l.guardCall(k, k.pump)
	})
}

// start runs on the loop: the call takes a backend connection and goes,
// unless it was aborted first.
func (k *Call) start() {
	l := k.l
	if k.ended {
		return
	}
	k.started = true
	l.calls.Add(1)
	k.slot = len(l.inFlight)
	l.inFlight = append(l.inFlight, k)
	k.since, k.last = l.clock, l.clock
	l.guardCall(k, func() {
		k.acquire(false)
		k.pump()
	})
}

// acquire gives the call a backend connection; fresh skips the pool.
func (k *Call) acquire(fresh bool) {
	b, reused, err := k.l.backendFor(k.req.Target, &k.attempt, &k.dialErrs, fresh, k.req.Retry)
	if err != nil {
		k.end(err)
		return
	}
	b.call.Store(k)
	k.be = b
	k.res.Endpoint, k.res.Reused = b.ep, reused
	k.upQ, k.sent, k.gotResp = k.req.Head, false, false
	k.res.Up = 0
	if !reused {
		k.since = k.l.clock
	}
}

// backendReady handles an event of the call's backend connection.
func (k *Call) backendReady(b *backend, events uint32) {
	if k.ended || k.be != b {
		return
	}
	ready, err := b.finishConnect(events)
	if err != nil {
		k.l.closeOwn(b)
		k.be = nil
		k.dialErrs = append(k.dialErrs, err)
		k.acquire(true)
	} else if !ready {
		return
	}
	k.pump()
}

// pump moves the call on as far as the backend and the Sink allow, then
// sets its timer for what it waits on.
func (k *Call) pump() {
	for !k.ended && k.step() {
	}
	if !k.ended {
		k.schedule()
	}
}

// step makes one move; it reports whether another may follow.
func (k *Call) step() bool {
	if k.paused {
		return false
	}
	if len(k.pending) > 0 {
		n := k.req.Sink.Data(k.pending)
		k.res.Down += int64(n)
		if k.pending = k.pending[n:]; len(k.pending) > 0 {
			k.paused = true
			return false
		}
		k.l.putBuffer(k.pending[:0])
		k.pending = nil
	}
	if k.bodyDone {
		k.end(nil)
		return false
	}
	b := k.be
	if b == nil || b.connecting {
		return false
	}
	if len(k.upQ) > 0 {
		if !b.w {
			return false
		}
		n, err := sysWrite(b.fd, k.upQ)
		switch {
		case errors.Is(err, unix.EAGAIN):
			b.w = false
			return false
		case err != nil:
			return k.backendFailed(os.NewSyscallError("write", err))
		}
		k.upQ = k.upQ[n:]
		k.res.Up += int64(n)
		if len(k.upQ) == 0 {
			k.sent, k.since = true, k.l.clock
		}
		return true
	}
	if !k.headDone && k.roff < k.rn {
		if end := headEnd(k.rbuf[k.roff:k.rn], k.req.MaxHead); end > 0 {
			return k.response(end)
		}
	}
	if !b.r {
		return false
	}
	if !k.headDone {
		return k.readHead(b)
	}
	return k.readBody(b)
}

// readHead reads the backend's bytes until a response head is whole.
func (k *Call) readHead(b *backend) bool {
	n, err := k.fill(k.l, b, k.req.MaxHead)
	if err != nil {
		return k.backendFailed(err)
	}
	if n == 0 {
		return false
	}
	k.gotResp = true
	k.last = k.l.clock
	return true
}

// response takes the head that is the first end bytes read.
func (k *Call) response(end int) bool {
	st, err := k.req.Sink.Response(k.rbuf[k.roff : k.roff+end])
	if err != nil {
		return k.backendFailed(err)
	}
	k.roff += end
	if st.Interim {
		return true
	}
	k.headDone = true
	k.reuse = !st.Close && st.Body != h1.UntilClose
	k.resp = h1.NewFramer(st.Body, st.Length)
	rest := k.rbuf[k.roff:k.rn]
	n, done, err := k.resp.TakeData(rest, k.deliver, k.addTrailer)
	if err != nil {
		return k.backendFailed(fmt.Errorf("response body: %w", err))
	}
	if n < len(rest) {
		k.reuse = false // bytes after the response
	}
	k.dropHead(k.l)
	if done {
		k.bodyEnded()
	}
	return true
}

// readBody reads the response's body and offers its data to the Sink.
func (k *Call) readBody(b *backend) bool {
	buf := k.l.copyBuf
	n, err := b.read(buf)
	switch {
	case errors.Is(err, io.EOF):
		if k.resp.Kind() == h1.UntilClose {
			k.reuse = false
			k.bodyEnded()
			return true
		}
		return k.backendFailed(fmt.Errorf("backend closed in a response body: %w", ErrBackendClosed))
	case err != nil:
		return k.backendFailed(err)
	case n == 0:
		return false
	}
	k.last = k.l.clock
	m, done, err := k.resp.TakeData(buf[:n], k.deliver, k.addTrailer)
	if err != nil {
		return k.backendFailed(fmt.Errorf("response body: %w", err))
	}
	if m < n {
		k.reuse = false // bytes after the response: not a peer to trust again
	}
	if done {
		k.bodyEnded()
	}
	return true
}

// deliver offers p, body data just read, to the Sink; what it does not
// take waits in pending, as does everything after it.
func (k *Call) deliver(p []byte) {
	if !k.paused {
		n := k.req.Sink.Data(p)
		k.res.Down += int64(n)
		if p = p[n:]; len(p) == 0 {
			return
		}
		k.paused = true
	}
	if k.pending == nil {
		k.pending = k.l.getBuffer(max(len(p), firstHeadBuffer))[:0]
	}
	k.pending = append(k.pending, p...)
}

// addTrailer keeps the trailer section's field lines (at most
// h1.MaxTrailer bytes: the framer refuses more).
func (k *Call) addTrailer(p []byte) { k.trailer = append(k.trailer, p...) }

// bodyEnded: the response's last byte was read. The backend connection
// is done with, even while the Sink has data still to take.
func (k *Call) bodyEnded() {
	k.bodyDone = true
	if b := k.be; b != nil {
		k.be = nil
		k.release(b, k.reuse)
	}
}

// release gives b back to the pool when it may carry another request,
// else closes it.
func (k *Call) release(b *backend, reuse bool) {
	b.call.Store(nil)
	if reuse && b.poolable() {
		k.l.putIdle(b)
		return
	}
	k.l.closeOwn(b)
}

// backendFailed handles a backend connection that failed: a pooled one
// that turned out closed before any byte of a response is replaced by a
// new one for a request that may be retried; otherwise the call ends.
func (k *Call) backendFailed(err error) bool {
	k.l.closeOwn(k.be)
	k.be = nil
	if k.req.Retry && k.res.Reused && !k.gotResp {
		k.req.Retry = false
		k.attempt--
		k.acquire(true)
		return !k.ended
	}
	k.end(err)
	return false
}

// end ends the call, once, and tells the Sink.
func (k *Call) end(err error) {
	if k.ended {
		return
	}
	k.ended = true
	l := k.l
	if k.started {
		l.dropInFlight(k)
		l.calls.Add(-1)
	}
	if b := k.be; b != nil {
		k.be = nil
		k.release(b, false)
	}
	k.dropHead(l)
	if k.pending != nil {
		l.putBuffer(k.pending[:0])
		k.pending = nil
	}
	k.upQ = nil
	k.res.Err = err
	k.req.Sink.Ended(k.res, k.trailer)
}

// schedule sets the call's timer for what it waits on: a dial, the
// response's head, the next byte of its body. A call the Sink stopped
// waits without one: the Sink's own timeouts abort it.
func (k *Call) schedule() {
	var due int64
	t := k.req.Target
	switch {
	case k.paused:
	case k.be != nil && k.be.connecting:
		d := t.DialTimeout
		if d <= 0 {
			d = defaultDialTimeout
		}
		due = k.since + int64(d)
	default:
		if k.sent && !k.headDone && k.req.ResponseTimeout > 0 {
			due = k.since + int64(k.req.ResponseTimeout)
		}
		if t.IdleTimeout > 0 {
			if idle := max(k.last, k.since) + int64(t.IdleTimeout); due == 0 || idle < due {
				due = idle
			}
		}
	}
	k.due = due
	if l := k.l; due != 0 && (l.callSweepAt == 0 || due < l.callSweepAt) {
		l.armCallSweep(due)
	}
}

// armCallSweep has the loop look at its calls' timeouts at its clock's
// time at.
//
// Why not a timer per call: a call lasts a fraction of a millisecond and
// its idle timeout is a minute, so a timer per call would keep every
// call of the last minute alive in the loop's heap (at 20k requests/s a
// million of them, and the collector marking them all). The loop keeps
// one sweep instead, at the earliest due time it was told of.
func (l *loop) armCallSweep(at int64) {
	if l.sweepCallsFn == nil {
		l.sweepCallsFn = l.sweepCalls
	}
	l.callSweepAt = at
	l.after(at, l.sweepCallsFn)
}

// dropInFlight takes the ended k out of l.inFlight: the last call takes
// its slot.
func (l *loop) dropInFlight(k *Call) {
	last := len(l.inFlight) - 1
	moved := l.inFlight[last]
	l.inFlight[k.slot], moved.slot = moved, k.slot
	l.inFlight[last] = nil
	l.inFlight = l.inFlight[:last]
}

// sweepCalls expires the calls whose timeout has come, and sweeps again
// at the earliest one left.
func (l *loop) sweepCalls() {
	if l.callSweepAt > l.clock {
		return // an earlier sweep's timer; the next one is armed
	}
	l.callSweepAt = 0
	var due []*Call // apart: expiring a call ends it, which moves another
	for _, k := range l.inFlight {
		if k.due != 0 && k.due <= l.clock {
			due = append(due, k)
		}
	}
	for _, k := range due {
		if !k.ended {
			l.guardCall(k, k.expired)
		}
	}
	next := int64(0)
	for _, k := range l.inFlight {
		if k.due != 0 && (next == 0 || k.due < next) {
			next = k.due
		}
	}
	if next != 0 && (l.callSweepAt == 0 || next < l.callSweepAt) {
		l.armCallSweep(next)
	}
}

// expired handles the call's timeout, which has come.
func (k *Call) expired() {
	switch {
	case k.be != nil && k.be.connecting:
		ep := k.be.ep
		k.l.closeOwn(k.be)
		k.be = nil
		k.dialErrs = append(k.dialErrs, fmt.Errorf("dial tcp %s: %w", ep, os.ErrDeadlineExceeded))
		k.acquire(true)
	case k.sent && !k.headDone && k.req.ResponseTimeout > 0 && k.l.clock >= k.since+int64(k.req.ResponseTimeout):
		k.end(ErrResponseTimeout)
		return
	default:
		k.end(errIdle)
		return
	}
	k.pump()
}

// guardCall runs f for k, turning a panic into k's failure.
func (l *loop) guardCall(k *Call, f func()) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		p := &panics.Error{Value: v, Stack: debug.Stack()}
		if !k.ended {
			defer func() {
				if recover() != nil && l.set.opt.OnPanic != nil {
					l.set.opt.OnPanic(p) // from Ended itself
				}
			}()
			k.end(p)
			return
		}
		if l.set.opt.OnPanic != nil {
			l.set.opt.OnPanic(p)
		}
	}()
	f()
}
