package h2

import (
	"runtime"
	"sync"
	"time"
)

// outBuf is where frames are written: Framer's Write appends to it, and
// the writer takes it whole.
type outBuf struct{ b []byte }

func (o *outBuf) Write(p []byte) (int, error) {
	if o.b == nil {
		o.b = getOutput()
	}
	o.b = append(o.b, p...)
	return len(p), nil
}

// outputSize is the size of the output buffers connections share
// (outputs): enough for the heads and small bodies of a round of
// streams.
const outputSize = 4 << 10

// outputs are output buffers for connections with nothing in flight. A
// connection gives its buffers back whenever its last stream ends, so
// that an idle one holds none; one whose client sends a request at a
// time gets there after every response, and growing a new buffer each
// time cost an allocation or two a request. Each is an array, whose
// pointer the pool holds without one.
var outputs = sync.Pool{New: func() any { return new([outputSize]byte) }}

// getOutput is an empty buffer from outputs.
func getOutput() []byte { return outputs.Get().(*[outputSize]byte)[:0] }

// putOutput gives b back to outputs if it is one of theirs: one that
// grew past outputSize is another array, and left to the collector.
func putOutput(b []byte) {
	if cap(b) == outputSize {
		outputs.Put((*[outputSize]byte)(b[:outputSize]))
	}
}

// keptOutput is the largest output buffer the writer keeps between
// writes; a larger one (a burst of bodies) is dropped, and so is any
// once the connection is idle, so that an idle connection holds little.
const keptOutput = 32 << 10

// wakeWriter tells the writer there is output. sc.mu is held.
func (sc *serverConn) wakeWriter() {
	if sc.flush != nil {
		if !sc.flushAsked {
			sc.flushAsked = true
			sc.flush()
		}
		return
	}
	if sc.writerIdle {
		sc.wcond.Signal()
	}
}

// writeLoop sends the connection's output: everything appended since its
// last write, in one write. Frames appended while it writes wait for the
// next one, which is how a connection's streams share system calls. It
// closes the socket and returns once the connection is closing and its
// output is sent, or a write fails or times out.
func (sc *serverConn) writeLoop() {
	defer close(sc.writerDone)
	for {
		sc.mu.Lock()
		for len(sc.out.b) == 0 && !sc.closing {
			sc.writerIdle = true
			sc.wcond.Wait()
			sc.writerIdle = false
		}
		if len(sc.out.b) < maxPendingData && len(sc.streams) > 1 && !sc.closing {
			// Other streams' handlers may be runnable with their
			// responses in hand: let them append before this write
			// rather than after it.
			sc.mu.Unlock()
			runtime.Gosched()
			sc.mu.Lock()
		}
		if len(sc.out.b) == 0 || sc.closed { // closing, everything sent
			sc.closed = true
			sc.failAllLocked(errConnClosed)
			sc.mu.Unlock()
			_ = sc.nc.Close()
			return
		}
		buf := sc.takeOutputLocked()
		sc.mu.Unlock()

		_ = sc.nc.SetWriteDeadline(time.Now().Add(sc.srv.WriteTimeout))
		_, err := sc.nc.Write(buf)
		if err != nil {
			sc.mu.Lock()
			sc.closedLocked(err)
			sc.mu.Unlock()
			_ = sc.nc.Close() // the reader stops
			return
		}
		sc.mu.Lock()
		sc.sentLocked(buf)
		sc.mu.Unlock()
	}
}

// takeOutputLocked takes what was appended since the last write, for
// one write, and starts the next output in the spare buffer, if any.
func (sc *serverConn) takeOutputLocked() []byte {
	buf := sc.out.b
	sc.out.b, sc.spare = sc.spare[:0], nil
	sc.spaceLocked()
	return buf
}

// sentLocked takes buf back once it is written, as the spare for the
// next output while streams are in flight; an idle connection keeps none
// (putOutput).
func (sc *serverConn) sentLocked(buf []byte) {
	if cap(buf) <= keptOutput && (len(sc.streams) > 0 || sc.running > 0) {
		sc.spare = buf[:0]
		return
	}
	putOutput(buf)
}

// closedLocked records that the socket is closed or unusable (err:
// why, nil for an orderly end): every stream fails, and nothing more is
// sent.
func (sc *serverConn) closedLocked(err error) {
	if sc.err == nil {
		sc.err = err
	}
	sc.closed, sc.closing, sc.goAway = true, true, true
	sc.failAllLocked(errConnClosed)
	sc.out.b, sc.spare, sc.lent = nil, nil, nil
}
