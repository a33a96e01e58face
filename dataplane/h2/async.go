package h2

import (
	"context"
	"fmt"
	"net/http"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Streams served without a goroutine (Server.Async). A handler that
// blocks on its backend costs a goroutine's start and a netpoller wake-up
// per request; a proxy whose backend exchanges run on event loops can
// answer a stream from the loop instead, as long as nothing it calls
// blocks: Stream's methods never wait (a write takes what the windows
// and the connection's output let it, and says when to come back), and
// the stream counts against the connection's limits exactly as a
// handler's does until End or Reset.

// Stream is a stream that Server.Async took: its response is written
// through it from any goroutine, one call at a time, and it ends with
// End or Reset, exactly once. The stream is its request's context, as
// for a handler: it is cancelled when the client resets the stream or
// the connection ends, and the writes fail from then on.
type Stream responseWriter

// Owner is what took a stream (Server.Async returned it) and hears of
// it: Resume once a write it could not make may go on, with the
// connection's lock held (it must only signal; it may be called
// spuriously), and Cancel, on a goroutine of its own and at most once,
// when the stream is cancelled before it ended (the client reset it, the
// connection ended). Being told through methods rather than functions
// spares a stream served per request the closures that AfterFunc and a
// wake function cost.
type Owner interface {
	Resume()
	Cancel()
}

// Context is the stream's: done once the client resets it, the
// connection ends, or the stream ends.
func (s *Stream) Context() context.Context { return s.st }

// Header is the response's header, as ResponseWriter's: set before
// WriteHeader; trailers named with http.TrailerPrefix before End.
func (s *Stream) Header() http.Header { return (*responseWriter)(s).Header() }

// WriteHeader is ResponseWriter's: a 1xx head is sent at once, the final
// status is sent with the first body bytes or End.
func (s *Stream) WriteHeader(code int) { (*responseWriter)(s).WriteHeader(code) }

// WriteFields is WriteHeader for a final head already in HTTP/2's form:
// fields with lower-case names, in the order they go out. A proxy that
// has the backend's fields in a list spares the Header map, which cost
// more per response than the rest of the head's handling together. The
// stream keeps fields until End or Reset; the caller must not change
// them before. Fields are checked as Header's are: a connection-specific
// or invalid one is not sent, and a Content-Length that is not a length
// neither. Header still takes the trailers.
func (s *Stream) WriteFields(code int, fields []hpack.HeaderField) {
	w := (*responseWriter)(s)
	if code < 200 || code > 999 {
		panic(fmt.Sprintf("invalid WriteFields code %v", code))
	}
	if w.status != 0 {
		return
	}
	w.status, w.fields, w.length = code, fields, -1
	for _, f := range fields {
		switch f.Name {
		case "content-length":
			if w.length < 0 {
				w.length = parseLength(f.Value)
			}
		case "trailer":
			w.declareTrailers(f.Value)
		}
	}
}

// TryWrite writes as much of p as the stream's and the connection's
// windows and the connection's output take, as DATA frames (with the
// head first, if not yet sent), and returns how much it wrote. When
// that is less than p, the Owner's Resume is called once there may be
// room. The error is the stream's or connection's end, or
// http.ErrContentLength for bytes past the declared length.
func (s *Stream) TryWrite(p []byte) (int, error) {
	w := (*responseWriter)(s)
	if send, err := w.startBody(len(p)); !send {
		if err != nil {
			return 0, err
		}
		return len(p), nil // no body: dropped
	}
	st, sc := w.st, w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	st.waitsForWindow = false
	done := 0
	for {
		if st.err != nil {
			return done, st.err
		}
		if sc.closed {
			return done, errConnClosed
		}
		if !w.headSent {
			// The head goes out at once, as a handler's does: HEADERS
			// are not flow-controlled, and the client learns the status
			// even while its windows hold the body back.
			w.headSent = true
			w.writeHeadLocked(false)
		}
		if done == len(p) {
			return done, nil
		}
		if st.windowShutLocked() || len(sc.out.b) >= maxPendingData {
			if st.windowShutLocked() {
				sc.waitForWindowLocked(st)
			}
			st.resume = true
			return done, nil
		}
		// At most maxPendingData at a time: a client's large frame size
		// must not let one write overfill the output.
		done += w.writeDataLocked(p[done:min(len(p), done+maxPendingData)])
	}
}

// End ends the response: the head with END_STREAM if nothing was sent,
// else the trailers or an empty DATA frame that ends the stream. Its
// last frame is written whatever the connection's output holds (a few
// bytes per stream, at most MaxConcurrentStreams of them).
func (s *Stream) End() {
	w := (*responseWriter)(s)
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	sc := w.st.sc
	sc.mu.Lock()
	w.finishLocked(false)
	sc.streamDoneLocked(w.st)
}

// Reset ends the stream with RST_STREAM (INTERNAL_ERROR), unless it has
// ended: the response was cut short and the client must not take it as
// whole (a backend that closed mid-body).
func (s *Stream) Reset() {
	st, sc := s.st, s.st.sc
	sc.mu.Lock()
	if !st.localDone {
		sc.resetLocked(st.id, http2.ErrCodeInternal)
		st.localDone = true
	}
	sc.streamDoneLocked(st)
}

// streamDoneLocked is the end of a stream's handler, or of its Async
// owner: its context is cancelled and it no longer counts as running.
// It unlocks sc.mu.
func (sc *serverConn) streamDoneLocked(st *stream) {
	st.owner, st.resume = nil, false // its end is no cancel for it
	st.cancelLocked()
	if st.async {
		st.async = false
		sc.asyncOpen--
	}
	sc.running--
	sc.idleLaterLocked()
	sc.mu.Unlock()
	if sc.srv.Admit != nil && sc.srv.Release != nil {
		sc.srv.Release()
	}
	sc.handlers.Done()
}

// roomLocked tells whoever waits to write on st that it may: a handler
// on the stream's cond, an Async owner through Resume.
func (st *stream) roomLocked() {
	st.cond.Broadcast()
	st.resumeLocked()
}

// resumeLocked calls the owner's Resume if a write of its waits.
func (st *stream) resumeLocked() {
	if st.resume && st.owner != nil {
		st.resume = false
		st.owner.Resume()
	}
}

// spaceLocked tells every stream waiting for the connection's window or
// output that there may be room.
func (sc *serverConn) spaceLocked() {
	sc.space.Broadcast()
	if sc.asyncOpen == 0 {
		return
	}
	for _, st := range sc.streams {
		st.resumeLocked()
	}
}
