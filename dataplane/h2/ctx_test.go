package h2_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portmux/portmux/dataplane/h2"
)

type ctxKey struct{}

// heldCtx is a handler that hands its request's context to the test and
// holds the request until the context is done (or release, for a
// handler that returns while the stream is fine).
type heldCtx struct {
	got     chan context.Context
	release chan struct{}
}

func (h *heldCtx) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	h.got <- ctx
	select {
	case <-ctx.Done():
	case <-h.release:
		w.WriteHeader(http.StatusNoContent)
	}
}

// TestRequestContext: a request's context has the base context's values,
// is not done while its stream is live, and is done, with
// context.Canceled, once the stream is over whichever way it ends. What
// waits on it (Done, context.AfterFunc, a context made from it) hears it;
// an AfterFunc stopped in time never runs.
func TestRequestContext(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		end  func(r *raw, h *heldCtx, cancelBase context.CancelFunc)
	}{
		{"client resets the stream", func(r *raw, _ *heldCtx, _ context.CancelFunc) {
			if err := r.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
				t.Error(err)
			}
		}},
		{"client closes the connection", func(r *raw, _ *heldCtx, _ context.CancelFunc) { _ = r.c.Close() }},
		{"base context cancelled", func(_ *raw, _ *heldCtx, cancelBase context.CancelFunc) { cancelBase() }},
		{"handler returns", func(_ *raw, h *heldCtx, _ context.CancelFunc) { close(h.release) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, cancelBase := context.WithCancel(context.WithValue(t.Context(), ctxKey{}, "base value"))
			defer cancelBase()
			h := &heldCtx{got: make(chan context.Context, 1), release: make(chan struct{})}
			s := serve(t, &h2.Server{Handler: h, BaseContext: base}, nil)
			r := dialRaw(t, s.addr)
			r.headers(1, true, "/held")
			var ctx context.Context
			select {
			case ctx = <-h.got:
			case <-time.After(ioTimeout):
				t.Fatal("the handler never ran")
			}
			if v := ctx.Value(ctxKey{}); v != "base value" {
				t.Errorf("Value = %v, want the base context's", v)
			}
			if err := ctx.Err(); err != nil {
				t.Fatalf("Err = %v while the stream is live", err)
			}
			var ran, stoppedRan atomic.Bool
			fired := make(chan struct{})
			context.AfterFunc(ctx, func() { ran.Store(true); close(fired) })
			stop := context.AfterFunc(ctx, func() { stoppedRan.Store(true) })
			child, cancelChild := context.WithCancel(ctx)
			defer cancelChild()
			if !stop() {
				t.Error("stop of a waiting AfterFunc reported false")
			}

			tc.end(r, h, cancelBase)
			for what, ch := range map[string]<-chan struct{}{"Done": ctx.Done(), "AfterFunc": fired, "a child's Done": child.Done()} {
				select {
				case <-ch:
				case <-time.After(ioTimeout):
					t.Fatalf("%s not done after the stream ended", what)
				}
			}
			if err := ctx.Err(); !errors.Is(err, context.Canceled) {
				t.Errorf("Err = %v, want context.Canceled", err)
			}
			if stop() {
				t.Error("stop after the cancel reported true")
			}
			time.Sleep(10 * time.Millisecond) // a stopped func would have run by now
			if !ran.Load() || stoppedRan.Load() {
				t.Errorf("AfterFunc ran: %v, stopped one ran: %v", ran.Load(), stoppedRan.Load())
			}
			late := make(chan struct{})
			context.AfterFunc(ctx, func() { close(late) })
			select {
			case <-late:
			case <-time.After(ioTimeout):
				t.Fatal("an AfterFunc registered after the cancel never ran")
			}
		})
	}
}
