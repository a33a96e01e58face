package h2_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
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

const ioTimeout = 10 * time.Second

// served is a Server on a loopback listener: every accepted connection
// is served by ServeConn, whose result goes to ended (the first 100).
type served struct {
	addr  string
	ended chan error
}

// serve starts srv on a loopback listener; tune, when set, adjusts each
// accepted socket first. At cleanup the listener is closed and every
// ServeConn must have returned (the test's clients closed first).
func serve(t *testing.T, srv *h2.Server, tune func(*net.TCPConn)) *served {
	t.Helper()
	if *onLoops {
		return serveOnLoops(t, srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &served{addr: ln.Addr().String(), ended: make(chan error, 100)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if tune != nil {
				tune(c.(*net.TCPConn))
			}
			wg.Go(func() {
				err := srv.ServeConn(c)
				select {
				case s.ended <- err:
				default: // nobody asks for more than a few
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(ioTimeout):
			t.Error("ServeConn did not return after its client left")
		}
	})
	return s
}

// client is Go's HTTP/2 client with prior knowledge, one connection.
func client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: 1}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: ioTimeout}
}

// echo answers with what it read: the body, its length and SHA-256, the
// request's trailers, and trailers of its own.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(body)
	w.Header().Set("X-Length", strconv.Itoa(len(body)))
	w.Header().Set("X-Request-Trailer", r.Trailer.Get("X-Req-Sum"))
	w.Header().Set("Trailer", "X-Sum")
	if r.URL.Query().Get("length") != "" {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	w.Header().Set("X-Sum", hex.EncodeToString(sum[:]))
	w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
}

// TestServeConnRequests: requests and responses of every shape a client
// sends through Go's own HTTP/2 client: bodies larger than the stream and
// connection windows both ways (flow control), bodies of unknown length,
// trailers both ways, HEAD.
func TestServeConnRequests(t *testing.T) {
	t.Parallel()
	s := serve(t, &h2.Server{Handler: http.HandlerFunc(echo), StreamWindow: 64 << 10, ConnWindow: 128 << 10}, nil)
	c := client(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB
	for _, tc := range []struct {
		name    string
		method  string
		query   string
		body    []byte
		chunked bool
		trailer bool
	}{
		{name: "GET", method: "GET"},
		{name: "HEAD", method: "HEAD"},
		{name: "POST small", method: "POST", body: []byte("hello")},
		{name: "POST 3 MiB declared", method: "POST", query: "?length=1", body: big},
		{name: "POST 3 MiB chunked", method: "POST", body: big, chunked: true},
		{name: "POST with trailers", method: "POST", body: []byte("abc"), chunked: true, trailer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body) // hides the length
				}
			}
			req, err := http.NewRequest(tc.method, "http://"+s.addr+"/echo"+tc.query, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.trailer {
				req.Trailer = http.Header{"X-Req-Sum": {"42"}}
			}
			res, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			got, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
				t.Fatalf("%s: %d HTTP/%d, %v", tc.name, res.StatusCode, res.ProtoMajor, err)
			}
			if tc.method == "HEAD" {
				if len(got) != 0 {
					t.Errorf("HEAD got a body of %d bytes", len(got))
				}
				return
			}
			sum := sha256.Sum256(tc.body)
			if !bytes.Equal(got, tc.body) || res.Header.Get("X-Length") != strconv.Itoa(len(tc.body)) {
				t.Errorf("echoed %d bytes (X-Length %s), sent %d", len(got), res.Header.Get("X-Length"), len(tc.body))
			}
			if res.Trailer.Get("X-Sum") != hex.EncodeToString(sum[:]) || res.Trailer.Get("X-Late") != "yes" {
				t.Errorf("trailers %v, want X-Sum and X-Late", res.Trailer)
			}
			if tc.trailer && res.Header.Get("X-Request-Trailer") != "42" {
				t.Errorf("the handler saw request trailer %q, want 42", res.Header.Get("X-Request-Trailer"))
			}
		})
	}
}

// raw is a client that writes frames as a test wants them.
type raw struct {
	t  *testing.T
	c  net.Conn
	fr *http2.Framer
}

// dialRaw connects, sends the preface and empty SETTINGS, and reads the
// server's SETTINGS.
func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := &raw{t: t, c: c, fr: http2.NewFramer(c, c)}

	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	r.until(func(f http2.Frame) bool { sf, ok := f.(*http2.SettingsFrame); return ok && !sf.IsAck() })
	return r
}

// headers opens stream id with a GET of path (and extra fields).
func (r *raw) headers(id uint32, end bool, path string, extra ...string) {
	r.t.Helper()
	if err := r.tryHeaders(id, end, path, extra...); err != nil {
		r.t.Fatal(err)
	}
}

// tryHeaders is headers for a goroutine other than the test's.
func (r *raw) tryHeaders(id uint32, end bool, path string, extra ...string) error {
	block := newBlockWriter().block(append([]string{":method", "GET", ":scheme", "http", ":authority", "h.test", ":path", path}, extra...)...)
	first := block[:min(len(block), 16<<10)]
	block = block[len(first):]
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}); err != nil {
		return fmt.Errorf("HEADERS: %w", err)
	}
	for len(block) > 0 {
		frag := block[:min(len(block), 16<<10)]
		block = block[len(frag):]
		if err := r.fr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			return fmt.Errorf("CONTINUATION: %w", err)
		}
	}
	return nil
}

// until reads frames until want returns true, and returns that frame; it
// fails the test at EOF or after ioTimeout.
func (r *raw) until(want func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("reading frames: %v", err)
		}
		if want(f) {
			return f
		}
	}
}

// status reads until the response head of stream id, and returns its
// status, or the code of a RST_STREAM for it.
func (r *raw) status(id uint32) (status string, reset http2.ErrCode) {
	r.t.Helper()
	f := r.until(func(f http2.Frame) bool {
		return f.Header().StreamID == id && (isHeaders(f) || isReset(f))
	})
	if rs, ok := f.(*http2.RSTStreamFrame); ok {
		return "", rs.ErrCode
	}
	return f.(*http2.MetaHeadersFrame).PseudoValue("status"), 0
}

func isHeaders(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }
func isReset(f http2.Frame) bool   { _, ok := f.(*http2.RSTStreamFrame); return ok }

// goAway reads until GOAWAY and returns its code.
func (r *raw) goAway() http2.ErrCode {
	r.t.Helper()
	f := r.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	return f.(*http2.GoAwayFrame).ErrCode
}

// closed reads until the server closes the connection, and fails the
// test if it does not within ioTimeout.
func (r *raw) closed() {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.Copy(io.Discard, r.c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatal("the server did not close the connection")
		}
	}
}

// gate is a handler that holds every request until it is opened (or the
// request's context ends, when it heeds it), and counts those it holds.
type gate struct {
	open    chan struct{}
	heed    bool
	holding atomic.Int32
	peak    atomic.Int32
}

func newGate(heed bool) *gate { return &gate{open: make(chan struct{}), heed: heed} }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := g.holding.Add(1)
	defer g.holding.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	if g.heed {
		select {
		case <-g.open:
		case <-r.Context().Done():
			return
		}
	} else {
		<-g.open
	}
	_, _ = io.WriteString(w, "done")
}

// TestConcurrentStreamsRefused: past MaxConcurrentStreams a stream is
// refused (REFUSED_STREAM, which a client may retry), and those within
// are served.
func TestConcurrentStreamsRefused(t *testing.T) {
	t.Parallel()
	g := newGate(false)
	s := serve(t, &h2.Server{Handler: g, MaxConcurrentStreams: 2}, nil)
	r := dialRaw(t, s.addr)
	r.headers(1, true, "/a")
	r.headers(3, true, "/b")
	r.headers(5, true, "/c")
	if _, code := r.status(5); code != http2.ErrCodeRefusedStream {
		t.Fatalf("third stream: reset %v, want REFUSED_STREAM", code)
	}
	close(g.open)
	// Both are answered, in either order, and end.
	ended := map[uint32]bool{}
	for len(ended) < 2 {
		f := r.until(func(f http2.Frame) bool { return f.Header().Flags.Has(http2.FlagDataEndStream) || isReset(f) })
		if isReset(f) {
			t.Fatalf("stream %d reset: %v", f.Header().StreamID, f)
		}
		ended[f.Header().StreamID] = true
	}
	// Once they are done, a new stream is served.
	r.headers(7, true, "/d")
	if st, code := r.status(7); st != "200" {
		t.Errorf("stream 7 after the first two ended: %q %v, want 200", st, code)
	}
}

// TestAdmitRefusesStreams: a stream that Admit refuses is answered 503
// with Retry-After and starts no handler; an admitted one gives back
// what it took once its handler is done, and the next stream is served.
func TestAdmitRefusesStreams(t *testing.T) {
	t.Parallel()
	g := newGate(false)
	var held, released atomic.Int64
	admit := func() bool {
		if held.Load()-released.Load() >= 1 {
			return false
		}
		held.Add(1)
		return true
	}
	s := serve(t, &h2.Server{Handler: g, Admit: admit, Release: func() { released.Add(1) }}, nil)
	r := dialRaw(t, s.addr)
	r.headers(1, true, "/a")
	r.headers(3, false, "/b") // a body would follow: refused too
	f := r.until(func(f http2.Frame) bool { return f.Header().StreamID == 3 && isHeaders(f) })
	mh := f.(*http2.MetaHeadersFrame)
	if st := mh.PseudoValue("status"); st != "503" || !mh.StreamEnded() {
		t.Fatalf("stream 3: status %q (ended %v), want 503 and its end", st, mh.StreamEnded())
	}
	if v := fieldValue(mh, "retry-after"); v != "1" {
		t.Errorf("stream 3: retry-after %q, want 1", v)
	}
	close(g.open)
	if st, code := r.status(1); st != "200" {
		t.Fatalf("stream 1: %q %v, want 200", st, code)
	}
	if n := g.peak.Load(); n != 1 {
		t.Errorf("%d handlers ran at once, want the admitted stream's only", n)
	}
	deadline := time.Now().Add(ioTimeout)
	for released.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := released.Load(); n != 1 {
		t.Fatalf("released %d times after stream 1 ended, want once", n)
	}
	r.headers(5, true, "/c")
	if st, code := r.status(5); st != "200" {
		t.Errorf("stream 5 after stream 1 ended: %q %v, want 200", st, code)
	}
}

// fieldValue is the value of a regular field of a header block, "" when
// it has none.
func fieldValue(mh *http2.MetaHeadersFrame, name string) string {
	for _, f := range mh.RegularFields() {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// openAndReset opens n streams and resets each at once (rapid reset),
// pausing every pair; it stops at the first write that fails. It runs
// on a goroutine of its own.
func (r *raw) openAndReset(n int, pause time.Duration) {
	for id := uint32(1); id < uint32(2*n); id += 2 {
		if r.tryHeaders(id, true, "/x") != nil || r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			return
		}
		time.Sleep(pause)
	}
}

// TestRapidResetBounded: a client that resets every stream right after
// opening it (CVE-2023-44487) starts no more handlers at once than twice
// MaxConcurrentStreams, even when handlers are slow to notice, and is
// told ENHANCE_YOUR_CALM.
func TestRapidResetBounded(t *testing.T) {
	t.Parallel()
	g := newGate(false) // ignores the reset: the worst case
	s := serve(t, &h2.Server{Handler: g, MaxConcurrentStreams: 4}, nil)
	r := dialRaw(t, s.addr)
	go r.openAndReset(1000, 0)
	if code := r.goAway(); code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
	if p := g.peak.Load(); p > 8 {
		t.Errorf("%d handlers held at once, want at most 8 (twice MaxConcurrentStreams)", p)
	}
	close(g.open)
	r.closed()
}

// TestRapidResetOfQuickStreamsBounded: handlers that stop as soon as
// their stream is reset never pile up, so the bound above never trips,
// yet each reset stream started work (a backend request) the client
// never waited for. A client that has reset more than twice
// MaxConcurrentStreams of its streams before their responses ended, and
// more than half of all it opened, is told ENHANCE_YOUR_CALM. (The
// client paces its pairs so that handlers never overlap: the bound on
// running handlers must not be what stops it.)
func TestRapidResetOfQuickStreamsBounded(t *testing.T) {
	t.Parallel()
	g := newGate(true)
	s := serve(t, &h2.Server{Handler: g, MaxConcurrentStreams: 4}, nil)
	r := dialRaw(t, s.addr)
	go r.openAndReset(200, 5*time.Millisecond)
	if code := r.goAway(); code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
	close(g.open)
	r.closed()
}

// A client that cancels some of its streams, as a browser leaving a page
// does, is not mistaken for one that resets them all: with most of its
// streams answered, its cancelled ones may pass the count.
func TestCancelledStreamsAmongAnsweredOnes(t *testing.T) {
	t.Parallel()
	g := newGate(true)
	close(g.open) // every stream is answered at once
	s := serve(t, &h2.Server{Handler: g, MaxConcurrentStreams: 4}, nil)
	r := dialRaw(t, s.addr)
	id := uint32(1)
	for range 30 { // three answered, one reset: 90 and 30 in all
		for range 3 {
			r.headers(id, true, "/ok")
			r.until(func(f http2.Frame) bool {
				return f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream)
			})
			id += 2
		}
		r.headers(id, true, "/cancel")
		if err := r.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
		id += 2
	}
	r.headers(id, true, "/last")
	f := r.until(func(f http2.Frame) bool {
		_, away := f.(*http2.GoAwayFrame)
		return away || f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream)
	})
	if ga, ok := f.(*http2.GoAwayFrame); ok {
		t.Errorf("GOAWAY %v after 30 cancelled streams among 90 answered", ga.ErrCode)
	}
}

// TestHeaderListTooLarge: a header block past MaxHeaderListSize gets 431
// and reaches no handler; the connection goes on.
func TestHeaderListTooLarge(t *testing.T) {
	t.Parallel()
	var seen atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { seen.Add(1) })
	s := serve(t, &h2.Server{Handler: h, MaxHeaderListSize: 8 << 10}, nil)
	r := dialRaw(t, s.addr)
	// Three fields of 4 KiB: each within the limit, together past it.
	// (One field longer than the whole limit is a COMPRESSION_ERROR of
	// the decoder, which ends the connection.)
	field := strings.Repeat("a", 4<<10)
	r.headers(1, true, "/big", "x-a", field, "x-b", field, "x-c", field)
	if st, code := r.status(1); st != "431" {
		t.Fatalf("12 KiB of fields: status %q reset %v, want 431", st, code)
	}
	r.headers(3, true, "/small", "x-small", field)
	if st, _ := r.status(3); st != "200" || seen.Load() != 1 {
		t.Errorf("one 4 KiB field after: %q, %d handled; want 200 and 1", st, seen.Load())
	}
}

// TestControlFloodEndsConnection: a client that makes the server answer
// (PING) and never reads the answers is disconnected once
// MaxPendingControl bytes of them wait: it cannot make the server buffer
// without bound. (A pipe, not TCP: socket buffers on loopback would
// hold megabytes of answers first, and two peers that both stop reading
// stall TCP on its zero-window probes.)
func TestControlFloodEndsConnection(t *testing.T) {
	t.Parallel()
	srv := &h2.Server{Handler: http.HandlerFunc(echo), MaxPendingControl: 16 << 10}
	client, server := net.Pipe()
	defer client.Close()
	ended := make(chan error, 1)
	go func() { ended <- srv.ServeConn(server) }()
	var flood bytes.Buffer
	fr := http2.NewFramer(&flood, nil)
	_, _ = io.WriteString(&flood, http2.ClientPreface)
	_ = fr.WriteSettings()
	for i := range 100_000 { // 1.7 MB of PINGs
		_ = fr.WritePing(false, [8]byte{byte(i)})
	}
	_ = client.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, werr := client.Write(flood.Bytes())
	if werr == nil {
		t.Fatal("the server took 100,000 PINGs without their answers being read")
	}
	var ne net.Error
	if errors.As(werr, &ne) && ne.Timeout() {
		t.Fatalf("the server stopped reading but kept the connection: %v", werr)
	}
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "ENHANCE_YOUR_CALM") {
			t.Errorf("ServeConn: %v, want an ENHANCE_YOUR_CALM connection error", err)
		}
	case <-time.After(ioTimeout):
		t.Error("ServeConn did not return")
	}
}

// TestTimeouts: a connection with nothing in flight is closed after
// IdleTimeout (with GOAWAY), one that sends no preface after
// PrefaceTimeout, and one whose client stops reading a response after
// WriteTimeout; in each case ServeConn returns, and the handler too.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	short := 200 * time.Millisecond
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		s := serve(t, &h2.Server{Handler: http.HandlerFunc(echo), IdleTimeout: short}, nil)
		r := dialRaw(t, s.addr)
		r.headers(1, true, "/")
		if st, _ := r.status(1); st != "200" {
			t.Fatalf("status %q", st)
		}
		if code := r.goAway(); code != http2.ErrCodeNo {
			t.Errorf("GOAWAY %v, want NO_ERROR", code)
		}
		r.closed()
	})
	t.Run("preface", func(t *testing.T) {
		t.Parallel()
		s := serve(t, &h2.Server{Handler: http.HandlerFunc(echo), PrefaceTimeout: short}, nil)
		c, err := net.DialTimeout("tcp", s.addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		(&raw{t: t, c: c}).closed()
	})
	t.Run("write", func(t *testing.T) {
		t.Parallel()
		returned := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			chunk := make([]byte, 64<<10)
			var err error
			for i := 0; i < 1000 && err == nil; i++ { // 64 MiB
				_, err = w.Write(chunk)
			}
			returned <- err
		})
		s := serve(t, &h2.Server{Handler: h, WriteTimeout: short},
			func(c *net.TCPConn) { _ = c.SetWriteBuffer(4 << 10) })
		r := dialRaw(t, s.addr)
		_ = r.c.(*net.TCPConn).SetReadBuffer(4 << 10)
		_ = r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		_ = r.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		r.headers(1, true, "/big")
		// The client reads nothing more.
		select {
		case err := <-returned:
			if err == nil {
				t.Error("the handler wrote 64 MiB to a client that reads nothing")
			}
		case <-time.After(ioTimeout):
			t.Fatal("the handler is still writing to a client that stopped reading")
		}
		select {
		case <-s.ended:
		case <-time.After(ioTimeout):
			t.Error("ServeConn did not return")
		}
	})
}

// TestHandlerPanic: a panicking handler costs its stream (INTERNAL_ERROR)
// and a log line with "panic serving", not the connection;
// http.ErrAbortHandler is not logged.
func TestHandlerPanic(t *testing.T) {
	t.Parallel()
	var logged bytes.Buffer
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/abort":
			panic(http.ErrAbortHandler)
		}
		_, _ = io.WriteString(w, "ok")
	})
	s := serve(t, &h2.Server{Handler: h, ErrorLog: log.New(lockedWriter{&mu, &logged}, "", 0)}, nil)
	r := dialRaw(t, s.addr)
	for i, tc := range []struct {
		path   string
		reset  http2.ErrCode
		status string
	}{
		{"/panic", http2.ErrCodeInternal, ""},
		{"/abort", http2.ErrCodeInternal, ""},
		{"/ok", 0, "200"},
	} {
		id := uint32(2*i + 1)
		r.headers(id, true, tc.path)
		if st, code := r.status(id); st != tc.status || code != tc.reset {
			t.Errorf("%s: status %q reset %v, want %q %v", tc.path, st, code, tc.status, tc.reset)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logged.String(), "panic serving"); n != 1 || !strings.Contains(logged.String(), "boom") {
		t.Errorf("log %q: want one \"panic serving\" line, for boom", logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestCancelReachesHandler: a stream the client resets cancels its
// request's context, and the connection serves the next one.
func TestCancelReachesHandler(t *testing.T) {
	t.Parallel()
	g := newGate(true)
	s := serve(t, &h2.Server{Handler: g}, nil)
	c := client(t)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/held", nil)
		res, err := c.Do(req)
		if err == nil {
			_ = res.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, func() bool { return g.holding.Load() == 1 })
	cancel()
	waitFor(t, func() bool { return g.holding.Load() == 0 })
	if err := <-errc; err == nil {
		t.Error("a cancelled request got a response")
	}
	close(g.open)
	res, err := c.Get("http://" + s.addr + "/next")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("next request: %d", res.StatusCode)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(ioTimeout); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
	}
}

// BenchmarkServeConn: one connection, 8 streams in flight, a 17-byte
// response each: the server's own cost per request, without a proxy
// behind it.
func BenchmarkServeConn(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "17")
		_, _ = io.WriteString(w, "hello from bench\n")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	srv := &h2.Server{Handler: h}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = srv.ServeConn(c) }()
		}
	}()
	tr := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: 1}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	url := fmt.Sprintf("http://%s/", ln.Addr())
	b.SetParallelism(4) // 8 streams on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}
	})
}

// TestUnreadBodyGivesCreditBack: a handler that returns without reading
// the body gives the client's connection window back, so that bodies the
// handlers do not read never starve the connection. Ten 60 KiB bodies go
// through a 128 KiB connection window, each read one byte of.
func TestUnreadBodyGivesCreditBack(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = r.Body.Read(make([]byte, 1))
		_, _ = io.WriteString(w, "ok")
	})
	s := serve(t, &h2.Server{Handler: h, StreamWindow: 64 << 10, ConnWindow: 128 << 10}, nil)
	r := dialRaw(t, s.addr)
	body := make([]byte, 60<<10)
	for i := range 10 {
		id := uint32(2*i + 1)
		r.headers(id, false, "/up")
		for b := body; len(b) > 0; b = b[min(len(b), 16<<10):] {
			chunk := b[:min(len(b), 16<<10)]
			if err := r.fr.WriteData(id, len(chunk) == len(b), chunk); err != nil {
				t.Fatal(err)
			}
		}
		// Until the response's end: the handler has returned then, and
		// its unread body was given back in the same critical section.
		// (Its head alone can come before, and a busy box let the next
		// bodies overrun the window in a CI run.)
		f := r.until(func(f http2.Frame) bool {
			_, away := f.(*http2.GoAwayFrame)
			return away || (f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream))
		})
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("body %d: GOAWAY %v: the connection window was not given back", i+1, ga.ErrCode)
		}
	}
}

// TestDrain: once Drain is done the client gets GOAWAY without error
// naming the last stream served; that stream still gets its response, a
// stream opened after is left unanswered (the client may retry it
// elsewhere), and the connection closes once the stream in flight ends.
func TestDrain(t *testing.T) {
	t.Parallel()
	g := newGate(false)
	drain, startDrain := context.WithCancel(t.Context())
	defer startDrain()
	s := serve(t, &h2.Server{Handler: g, Drain: drain}, nil)
	r := dialRaw(t, s.addr)
	r.headers(1, true, "/held")
	waitFor(t, func() bool { return g.holding.Load() == 1 })
	startDrain()
	f := r.until(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if f.ErrCode != http2.ErrCodeNo || f.LastStreamID != 1 {
		t.Errorf("GOAWAY %v last stream %d, want NO_ERROR and 1", f.ErrCode, f.LastStreamID)
	}
	r.headers(3, true, "/late")
	close(g.open)
	var late bool
	end := r.until(func(f http2.Frame) bool {
		late = late || f.Header().StreamID == 3
		return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
	})
	if _, ok := end.(*http2.DataFrame); !ok {
		t.Errorf("stream 1 ended with %v, want its body", end)
	}
	r.closed()
	if late || g.peak.Load() != 1 {
		t.Errorf("stream 3, opened after GOAWAY, was answered (%v) or handled (peak %d)", late, g.peak.Load())
	}
}

// TestClientGoAway: a client's GOAWAY ends nothing at once (h2spec
// 3.8/1): a PING sent after it is answered, and the connection closes
// when the client closes its side. Closing on the GOAWAY itself reset
// the connection whenever the PING was still unread in the socket, which
// h2spec saw as "connection reset by peer" once in a CI run.
func TestClientGoAway(t *testing.T) {
	t.Parallel()
	s := serve(t, &h2.Server{Handler: http.HandlerFunc(echo)}, nil)
	r := dialRaw(t, s.addr)
	if err := r.fr.WriteGoAway(0, http2.ErrCodeNo, nil); err != nil {
		t.Fatal(err)
	}
	// The PING comes well after the GOAWAY, as from a client that pings
	// to see the connection out: a server that closes on the GOAWAY has
	// closed by then.
	time.Sleep(100 * time.Millisecond)
	if err := r.fr.WritePing(false, [8]byte{'p', 'o', 'r', 't', 'm', 'u', 'x', '!'}); err != nil {
		t.Fatal(err)
	}
	f := r.until(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() })
	if got := f.(*http2.PingFrame).Data; string(got[:]) != "portmux!" {
		t.Errorf("PING ack carries %q", got)
	}
	_ = r.c.(*net.TCPConn).CloseWrite()
	r.closed()
	select {
	case err := <-s.ended:
		if err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Error("ServeConn did not return after the client closed")
	}
}

// A client that opens no flow-control window holds what the server has
// for it (a handler, its backend connection, the body it fetched) as one
// that stops reading does: after WriteTimeout without a window granted,
// the connection gets GOAWAY ENHANCE_YOUR_CALM and closes, and the
// writers see their writes fail. A client that opens window, however
// slowly, is not cut off, whatever the whole response takes.
func TestWithheldWindow(t *testing.T) {
	t.Parallel()
	writer := func(errs chan<- error) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, err := w.Write(bytes.Repeat([]byte("w"), 1000))
			errs <- err
		})
	}
	for _, tc := range []struct {
		name  string
		path  string
		async bool
	}{
		{"handler", "/", false},
		{"async", "/size/1000", true},
	} {
		// open serves the response of tc's path, by a handler that sends
		// its write's error on errs or by an async owner, and asks for it
		// from a client whose windows are 0.
		open := func(t *testing.T, writeTimeout time.Duration, errs chan<- error) (*raw, *asyncOwner) {
			o := newAsyncOwner()
			srv := &h2.Server{Handler: writer(errs), WriteTimeout: writeTimeout}
			if tc.async {
				srv.Async = o.take
			}
			r := dialRaw(t, serve(t, srv, nil).addr)
			if err := r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
				t.Fatal(err)
			}
			r.headers(1, true, tc.path)
			return r, o
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			handlerErr := make(chan error, 1)
			r, o := open(t, 300*time.Millisecond, handlerErr)
			// The head goes out at once: HEADERS are not flow-controlled.
			if st, _ := r.status(1); st != "200" {
				t.Fatalf("status %q", st)
			}
			if code := r.goAway(); code != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
			}
			r.closed()
			var err error
			if tc.async {
				o.wait()
				err = <-o.errs
			} else {
				err = <-handlerErr
			}
			if err == nil {
				t.Error("the response's write succeeded with no window open")
			}
		})
		t.Run(tc.name+", window opened slowly", func(t *testing.T) {
			t.Parallel()
			r, o := open(t, time.Second, make(chan error, 1))
			// Five grants of 200 bytes, 300 ms apart: 1.5 s in all, past
			// WriteTimeout, with the window never withheld for that long.
			got := 0
			for range 5 {
				time.Sleep(300 * time.Millisecond)
				_ = r.fr.WriteWindowUpdate(0, 200)
				_ = r.fr.WriteWindowUpdate(1, 200)
				f := r.until(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok || isReset(f) })
				d, ok := f.(*http2.DataFrame)
				if !ok {
					t.Fatalf("stream reset after %d bytes", got)
				}
				got += len(d.Data())
			}
			if got != 1000 {
				t.Errorf("got %d bytes of 1000", got)
			}
			if tc.async {
				o.wait()
			}
		})
	}
}
