package h2_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portmux/portmux/dataplane/h2"
)

// asyncOwner answers the streams it takes from a goroutine of its own
// that never blocks in the server, as an event loop would: it writes
// with TryWrite and, when that comes up short, waits for the wake.
// /size/N answers N bytes (with Content-Length when ?length is set, and
// a trailer when ?trailer is), /hold waits for release or the stream's
// end, and anything else is left to the Handler.
type asyncOwner struct {
	release chan struct{}
	holding atomic.Int32
	peak    atomic.Int32
	// wg counts the streams taken; mu orders its Adds before wait's
	// Wait for the race detector, which sees no order in what the test
	// learns through a socket the relay loops write with raw system
	// calls (Go's own I/O tells it; -relay-loops).
	mu   sync.Mutex
	wg   sync.WaitGroup
	errs chan error // write errors of streams that ended early
}

func newAsyncOwner() *asyncOwner {
	return &asyncOwner{release: make(chan struct{}), errs: make(chan error, 100)}
}

// streamOwner is the Owner of one stream asyncOwner took: Resume
// signals wake, Cancel closes cancelled.
type streamOwner struct {
	wake      chan struct{}
	cancelled chan struct{}
}

func newStreamOwner() *streamOwner {
	return &streamOwner{wake: make(chan struct{}, 1), cancelled: make(chan struct{})}
}

func (so *streamOwner) Resume() {
	select {
	case so.wake <- struct{}{}:
	default:
	}
}

func (so *streamOwner) Cancel() { close(so.cancelled) }

func (o *asyncOwner) take(s *h2.Stream, r h2.Request) h2.Owner {
	size, sized := strings.CutPrefix(r.URL.Path, "/size/")
	if !sized && r.URL.Path != "/hold" {
		return nil
	}
	so := newStreamOwner()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.wg.Go(func() {
		if !sized {
			n := o.holding.Add(1)
			for p := o.peak.Load(); n > p && !o.peak.CompareAndSwap(p, n); p = o.peak.Load() {
			}
			select {
			case <-o.release:
			case <-so.cancelled:
			}
			o.holding.Add(-1)
			s.WriteHeader(http.StatusNoContent)
			s.End()
			return
		}
		n, _ := strconv.Atoi(size)
		body := bytes.Repeat([]byte("0123456789"), n/10+1)[:n]
		q := r.URL.Query()
		if q.Has("fields") {
			fields := []hpack.HeaderField{{Name: "x-path", Value: "async"}}
			if q.Has("length") {
				fields = append(fields, hpack.HeaderField{Name: "content-length", Value: size})
			}
			if q.Has("trailer") {
				fields = append(fields, hpack.HeaderField{Name: "trailer", Value: "X-Sum"})
			}
			s.WriteFields(http.StatusOK, fields)
		} else {
			s.Header().Set("X-Path", "async")
			if q.Has("length") {
				s.Header().Set("Content-Length", size)
			}
			if q.Has("trailer") {
				s.Header().Set("Trailer", "X-Sum")
			}
			s.WriteHeader(http.StatusOK)
		}
		for len(body) > 0 {
			w, err := s.TryWrite(body)
			body = body[w:]
			if err != nil {
				o.errs <- err
				s.Reset()
				return
			}
			if len(body) > 0 {
				select {
				case <-so.wake:
				case <-so.cancelled:
				}
			}
		}
		if q.Has("trailer") {
			s.Header().Set("X-Sum", size)
		}
		s.End()
	})
	return so
}

// wait waits for the streams taken to end.
func (o *asyncOwner) wait() {
	o.mu.Lock()
	o.mu.Unlock() //nolint:staticcheck // an empty section: the order is the point
	o.wg.Wait()
}

func viaHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Path", "handler")
	echo(w, r)
}

// TestAsyncStreams: streams taken by Async are answered from outside the
// server's goroutines, through the same flow control as a handler's
// (bodies past the stream and connection windows), with Content-Length,
// trailers and HEAD, from a Header map or from WriteFields' list; requests with a body and paths the owner declines
// go to the Handler, on the same connection.
func TestAsyncStreams(t *testing.T) {
	t.Parallel()
	o := newAsyncOwner()
	s := serve(t, &h2.Server{Handler: http.HandlerFunc(viaHandler), Async: o.take}, nil)
	c := client(t)
	var wg sync.WaitGroup
	for _, path := range []string{
		"/size/0", "/size/17", "/size/100000?length", "/size/3000000", "/size/2000000?length&trailer", "/size/5?trailer",
		"/size/0?fields", "/size/17?fields&length", "/size/100000?fields&length", "/size/2000000?fields&length&trailer", "/size/5?fields&trailer",
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			wg.Go(func() {
				req, _ := http.NewRequest(method, "http://"+s.addr+path, nil)
				resp, err := c.Do(req)
				if err != nil {
					t.Errorf("%s %s: %v", method, path, err)
					return
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Errorf("%s %s: reading: %v", method, path, err)
					return
				}
				n, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(path, "?")[0], "/size/"))
				want := n
				if method == http.MethodHead {
					want = 0
				}
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Path") != "async" || len(body) != want {
					t.Errorf("%s %s: %d %q, %d bytes, want 200 from async with %d", method, path, resp.StatusCode, resp.Header.Get("X-Path"), len(body), want)
				}
				if len(body) > 0 && !bytes.Equal(body, bytes.Repeat([]byte("0123456789"), n/10+1)[:n]) {
					t.Errorf("%s %s: the body differs", method, path)
				}
				if strings.Contains(path, "trailer") && method == http.MethodGet && resp.Trailer.Get("X-Sum") != strconv.Itoa(n) {
					t.Errorf("%s %s: trailer %v", method, path, resp.Trailer)
				}
			})
		}
	}
	wg.Go(func() {
		resp, err := c.Post("http://"+s.addr+"/size/5", "text/plain", strings.NewReader("a body"))
		if err != nil {
			t.Errorf("POST: %v", err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.Header.Get("X-Path") != "handler" || string(body) != "a body" {
			t.Errorf("POST: %q %q, want the handler's echo", resp.Header.Get("X-Path"), body)
		}
	})
	wg.Wait()
	o.wait()
}

// TestWriteFieldsChecksFields: WriteFields sends what a client takes and
// nothing it would refuse: fields of an HTTP/1.1 hop, names that are not
// lower case or not tokens, values with control bytes, and a
// Content-Length that is not a length (the body then ends with the
// stream) are left out, and the rest arrive in the order given.
func TestWriteFieldsChecksFields(t *testing.T) {
	t.Parallel()
	take := func(s *h2.Stream, r h2.Request) h2.Owner {
		go func() {
			s.WriteFields(http.StatusAccepted, []hpack.HeaderField{
				{Name: "x-first", Value: "1"},
				{Name: "connection", Value: "close"},
				{Name: "transfer-encoding", Value: "chunked"},
				{Name: "keep-alive", Value: "timeout=5"},
				{Name: "X-Upper", Value: "1"},
				{Name: "bad name", Value: "1"},
				{Name: "x-nul", Value: "a\x00b"},
				{Name: "content-length", Value: "seven"},
				{Name: "x-multi", Value: "a"},
				{Name: "x-multi", Value: "b"},
			})
			_, _ = s.TryWrite([]byte("body"))
			s.End()
		}()
		return newStreamOwner()
	}
	s := serve(t, &h2.Server{Handler: http.HandlerFunc(viaHandler), Async: take}, nil)
	resp, err := client(t).Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "body" || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%d %q %v, want 202 and the body", resp.StatusCode, body, err)
	}
	want := http.Header{"X-First": {"1"}, "X-Multi": {"a", "b"}}
	if fmt.Sprint(resp.Header) != fmt.Sprint(want) {
		t.Errorf("header %v, want %v", resp.Header, want)
	}
	if resp.ContentLength != -1 {
		t.Errorf("content length %d, want none", resp.ContentLength)
	}
}

// TestAsyncStreamsCountAsRunning: a stream Async took counts against
// MaxConcurrentStreams until it ends, as a handler's does, and one the
// client resets while its owner waits for window sees its writes fail
// and its context end.
func TestAsyncStreamsCountAsRunning(t *testing.T) {
	t.Parallel()
	o := newAsyncOwner()
	s := serve(t, &h2.Server{Handler: http.HandlerFunc(viaHandler), Async: o.take, MaxConcurrentStreams: 2}, nil)
	r := dialRaw(t, s.addr)
	r.headers(1, true, "/hold")
	r.headers(3, true, "/size/1000000") // more than the client's windows
	r.headers(5, true, "/hold")
	// Stream 5's reset and stream 3's head, in either order: stream 3's
	// owner writes from a goroutine of its own.
	var refused http2.ErrCode
	var status3 string
	r.until(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == 5 {
				refused = f.ErrCode
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 3 {
				status3 = f.PseudoValue("status")
			}
		}
		return refused != 0 && status3 != ""
	})
	if refused != http2.ErrCodeRefusedStream || status3 != "200" {
		t.Fatalf("third stream reset %v, want REFUSED_STREAM; stream 3: %q", refused, status3)
	}
	// Stream 3's owner waits for window the client never gives; the
	// client resets it.
	if err := r.fr.WriteRSTStream(3, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-o.errs:
		if err == nil {
			t.Error("the reset stream's write did not fail")
		}
	case <-time.After(ioTimeout):
		t.Fatal("the reset stream's owner was not woken")
	}
	close(o.release)
	if st, _ := r.status(1); st != "204" {
		t.Errorf("stream 1: %q, want 204", st)
	}
	// Both ended: a new stream is served, once the connection's window,
	// which stream 3 used up, is given back.
	if err := r.fr.WriteWindowUpdate(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	r.headers(7, true, "/size/3")
	if st, code := r.status(7); st != "200" {
		t.Errorf("stream 7: %q %v", st, code)
	}
	o.wait()
	if p := o.peak.Load(); p != 1 {
		t.Errorf("%d streams held at once, want 1", p)
	}
}

// TestReadIdleBatches: ReadIdle is called once the frames the client
// sent together are handled, before the server waits for more, so a
// taker that starts its streams' work then starts them together; and
// once more when the connection ends, so that nothing taken is left
// unstarted.
func TestReadIdleBatches(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		pending []func()
		batches []int
	)
	srv := &h2.Server{
		Handler: http.HandlerFunc(viaHandler),
		Async: func(s *h2.Stream, r h2.Request) h2.Owner {
			mu.Lock()
			defer mu.Unlock()
			pending = append(pending, func() {
				s.WriteHeader(http.StatusNoContent)
				s.End()
			})
			return newStreamOwner()
		},
		ReadIdle: func() {
			mu.Lock()
			run := pending
			pending = nil
			if len(run) > 0 {
				batches = append(batches, len(run))
			}
			mu.Unlock()
			for _, f := range run {
				f()
			}
		},
	}
	s := serve(t, srv, nil)
	r := dialRaw(t, s.addr)
	// Three requests in one write, then one more.
	var buf bytes.Buffer
	w := &raw{t: t, c: r.c, fr: http2.NewFramer(&buf, nil)}
	for _, id := range []uint32{1, 3, 5} {
		w.headers(id, true, "/")
	}
	if _, err := r.c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{1, 3, 5} {
		if st, code := r.status(id); st != "204" {
			t.Fatalf("stream %d: %q %v", id, st, code)
		}
	}
	r.headers(7, true, "/")
	if st, code := r.status(7); st != "204" {
		t.Fatalf("stream 7: %q %v", st, code)
	}
	mu.Lock()
	got := fmt.Sprint(batches)
	mu.Unlock()
	if got != "[3 1]" {
		t.Errorf("batches %s, want [3 1]", got)
	}
	// A stream taken just before the connection ends is still started.
	buf.Reset()
	w.headers(9, true, "/")
	_ = w.fr.WriteRSTStream(11, http2.ErrCodeCancel) // an idle stream: a connection error
	if _, err := r.c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	r.closed()
	// The last ReadIdle runs as the reading ends, which the writer's
	// close of the socket after GOAWAY need not wait for.
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pending) == 0
	})
}

// TestAsyncOwnerCancel: the Owner of a stream the client resets hears
// Cancel; the Owner of a stream that ended does not.
func TestAsyncOwnerCancel(t *testing.T) {
	t.Parallel()
	owners := make(chan *streamOwner, 2)
	take := func(s *h2.Stream, r h2.Request) h2.Owner {
		so := newStreamOwner()
		owners <- so
		go func() {
			if r.URL.Path != "/now" {
				<-so.cancelled
			}
			s.WriteHeader(http.StatusNoContent)
			s.End()
		}()
		return so
	}
	s := serve(t, &h2.Server{Handler: http.HandlerFunc(viaHandler), Async: take}, nil)
	r := dialRaw(t, s.addr)
	r.headers(1, true, "/now")
	if st, _ := r.status(1); st != "204" {
		t.Fatalf("stream 1: %q, want 204", st)
	}
	ended := <-owners
	r.headers(3, true, "/wait")
	waiting := <-owners
	if err := r.fr.WriteRSTStream(3, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waiting.cancelled:
	case <-time.After(ioTimeout):
		t.Fatal("the owner of the reset stream was not told")
	}
	select {
	case <-ended.cancelled:
		t.Error("the owner of a stream that ended was told it was cancelled")
	default:
	}
}
