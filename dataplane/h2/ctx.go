package h2

import (
	"context"
	"slices"
	"time"
)

// A stream is its request's context: done once the handler need not go
// on (the client reset the stream, the connection ended, the handler
// returned), with the values and deadline of Server.BaseContext, whose
// own cancellation cancels every stream of the connection. Its state is
// guarded by the connection's mu.

var _ context.Context = (*stream)(nil)

// Deadline is BaseContext's.
func (st *stream) Deadline() (time.Time, bool) { return st.sc.srv.BaseContext.Deadline() }

// Value is BaseContext's.
func (st *stream) Value(key any) any { return st.sc.srv.BaseContext.Value(key) }

// Done is made on first use: most handlers never wait on it.
func (st *stream) Done() <-chan struct{} {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	if st.done == nil {
		st.done = make(chan struct{})
		if st.cancelled {
			close(st.done)
		}
	}
	return st.done
}

// Err is context.Canceled once the stream is.
func (st *stream) Err() error {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	if st.cancelled {
		return context.Canceled
	}
	return nil
}

// afterFunc is one function waiting for a stream's cancel, and the
// number its stop finds it by.
type afterFunc struct {
	f  func()
	id uint64
}

// AfterFunc calls f in a goroutine of its own once the stream is
// cancelled, unless stop is called first; stop reports whether it
// stopped f. context.AfterFunc uses it (and so does every context made
// from the stream), and it costs no goroutine while it waits.
func (st *stream) AfterFunc(f func()) (stop func() bool) {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	if st.cancelled {
		go f()
		return func() bool { return false }
	}
	st.nextAfter++
	id := st.nextAfter
	if st.afters == nil {
		st.afters = st.afterBuf[:0]
	}
	st.afters = append(st.afters, afterFunc{f: f, id: id})
	return func() bool {
		st.sc.mu.Lock()
		defer st.sc.mu.Unlock()
		i := slices.IndexFunc(st.afters, func(a afterFunc) bool { return a.id == id })
		if i < 0 {
			return false
		}
		st.afters = slices.Delete(st.afters, i, i+1)
		return true
	}
}

// cancelLocked cancels st's context: Done closes and the functions
// AfterFunc took start.
func (st *stream) cancelLocked() {
	if st.cancelled {
		return
	}
	st.cancelled = true
	if st.done != nil {
		close(st.done)
	}
	for _, a := range st.afters {
		go a.f()
	}
	st.afters = nil
	st.tellOwnerLocked()
}

// tellOwnerLocked tells st's Owner, if any, that st was cancelled, and
// forgets it: Cancel comes at most once.
func (st *stream) tellOwnerLocked() {
	if o := st.owner; o != nil {
		st.owner = nil
		go o.Cancel()
	}
}

// baseCancelled cancels every stream when BaseContext is: the ones open
// now, and those opened later (baseDone).
func (sc *serverConn) baseCancelled() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.baseDone = true
	for _, st := range sc.streams {
		st.cancelLocked()
	}
}
