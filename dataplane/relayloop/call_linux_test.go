package relayloop_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/portmux/portmux/dataplane/h1"
	"github.com/portmux/portmux/dataplane/panics"
	"github.com/portmux/portmux/dataplane/relayloop"
)

// callSink collects a call's response as an HTTP/2 stream would: the
// status of each head, the body's data and the trailer. take, if set,
// bounds what each Data takes (the rest waits for Resume).
type callSink struct {
	mu       sync.Mutex
	statuses []int
	body     bytes.Buffer
	take     int
	paused   chan struct{} // a Data took less than offered
	result   relayloop.ExchangeResult
	trailer  string
	ended    chan struct{}
	panicIn  string // "Response" or "Data": panic there
	heads    *h1.Heads
}

func newCallSink() *callSink {
	return &callSink{ended: make(chan struct{}), paused: make(chan struct{}, 1), heads: h1.NewHeads(64 << 10)}
}

func (s *callSink) Response(head []byte) (relayloop.Step, error) {
	if s.panicIn == "Response" {
		panic("sink panics in Response")
	}
	var rh fasthttp.ResponseHeader
	if err := s.heads.Response(head, &rh); err != nil {
		return relayloop.Step{}, err
	}
	s.mu.Lock()
	s.statuses = append(s.statuses, rh.StatusCode())
	s.mu.Unlock()
	if rh.StatusCode() < 200 {
		return relayloop.Step{Interim: true}, nil
	}
	kind, n := h1.ResponseBody(&rh, false)
	return relayloop.Step{Body: kind, Length: n, Close: rh.ConnectionClose()}, nil
}

func (s *callSink) Data(p []byte) int {
	if s.panicIn == "Data" {
		panic("sink panics in Data")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	if s.take > 0 && n > s.take {
		n = s.take
		select {
		case s.paused <- struct{}{}:
		default:
		}
	}
	s.body.Write(p[:n])
	return n
}

func (s *callSink) Ended(x relayloop.ExchangeResult, trailer []byte) {
	s.mu.Lock()
	s.result, s.trailer = x, string(trailer)
	s.mu.Unlock()
	close(s.ended)
}

// wait waits for the call's end.
func (s *callSink) wait(t *testing.T) relayloop.ExchangeResult {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not end")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

func callSet(t *testing.T) *relayloop.Set {
	t.Helper()
	set, err := relayloop.New(relayloop.Options{Loops: 1})
	if err != nil {
		t.Skipf("no relay loops here: %v", err)
	}
	t.Cleanup(func() { _ = set.Close() })
	return set
}

func call(t *testing.T, cr *relayloop.Caller, req relayloop.CallRequest) *relayloop.Call {
	t.Helper()
	k := cr.NewCall(req)
	cr.Start(k)
	return k
}

func get(path string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: backend\r\nX-Loop: call\r\n\r\n")
}

func TestCallKeepAlive(t *testing.T) {
	ep, conns := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/trailer" {
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part two")
			w.Header().Set("X-Sum", "42")
			return
		}
		if r.URL.Path == "/continue" {
			w.WriteHeader(http.StatusEarlyHints)
		}
		echoHandler(w, r)
	})
	set := callSet(t)
	cr := set.Caller()
	target := &relayloop.Target{Endpoints: []netip.AddrPort{ep}, Pool: "web"}
	cases := []struct {
		path, body, trailer string
		statuses            []int
	}{
		{"/sized", "GET /sized loop=call body=", "", []int{200}},
		{"/x/chunked", "GET /x/chunked loop=call body=", "", []int{200}},
		{"/trailer", "part one, part two", "X-Sum: 42\r\n", []int{200}},
		{"/continue", "GET /continue loop=call body=", "", []int{103, 200}},
	}
	for i, tc := range cases {
		s := newCallSink()
		call(t, cr, relayloop.CallRequest{Head: get(tc.path), Target: target, Sink: s})
		x := s.wait(t)
		if x.Err != nil {
			t.Fatalf("%s: %v", tc.path, x.Err)
		}
		if got := s.body.String(); got != tc.body {
			t.Errorf("%s: body %q, want %q", tc.path, got, tc.body)
		}
		if s.trailer != tc.trailer {
			t.Errorf("%s: trailer %q, want %q", tc.path, s.trailer, tc.trailer)
		}
		if fmt.Sprint(s.statuses) != fmt.Sprint(tc.statuses) {
			t.Errorf("%s: heads %v, want %v", tc.path, s.statuses, tc.statuses)
		}
		if x.Reused != (i > 0) || x.Endpoint != ep || x.Up != int64(len(get(tc.path))) || x.Down != int64(len(tc.body)) {
			t.Errorf("%s: result %+v", tc.path, x)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the backend saw %d connections, want 1 kept alive", n)
	}
	waitStats(t, set, relayloop.Stats{Backends: 1, Idle: 1})
}

// A Sink that takes little at a time stops the call, which reads no more
// until Resume; the body arrives whole, in order.
func TestCallWaitsForTheSink(t *testing.T) {
	want := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	ep, _ := httpBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			for i := 0; i < len(want); i += 100 << 10 {
				_, _ = io.WriteString(w, want[i:min(i+100<<10, len(want))])
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(want)))
		_, _ = io.WriteString(w, want)
	})
	set := callSet(t)
	cr := set.Caller()
	for _, path := range []string{"/sized", "/chunked"} {
		s := newCallSink()
		s.take = 1000
		k := call(t, cr, relayloop.CallRequest{Head: get(path), Target: &relayloop.Target{Endpoints: []netip.AddrPort{ep}, Pool: "web"}, Sink: s})
		resumes := 0
	loop:
		for {
			select {
			case <-s.paused:
				resumes++
				k.Resume()
			case <-s.ended:
				break loop
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: stuck after %d bytes", path, s.body.Len())
			}
		}
		x := s.wait(t)
		if x.Err != nil || s.body.String() != want {
			t.Fatalf("%s: %v, %d bytes (want %d)", path, x.Err, s.body.Len(), len(want))
		}
		if resumes < 10 {
			t.Errorf("%s: the sink stopped the call %d times only", path, resumes)
		}
	}
}

func TestCallFailures(t *testing.T) {
	silent := rawBackend(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	closes := rawBackend(t, func(c net.Conn) {
		_, _ = bufio.NewReader(c).ReadString('\n')
		_ = c.Close()
	})
	garbage := rawBackend(t, func(c net.Conn) {
		_, _ = bufio.NewReader(c).ReadString('\n')
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
		_ = c.Close()
	})
	set := callSet(t)
	cr := set.Caller()
	cases := []struct {
		name    string
		ep      netip.AddrPort
		timeout time.Duration
		want    error
	}{
		{"refused", closedPort(t), 0, errors.New("connect")},
		{"closed before a response", closes, 0, relayloop.ErrBackendClosed},
		{"body cut short", garbage, 0, relayloop.ErrBackendClosed},
		{"no response in time", silent, 50 * time.Millisecond, relayloop.ErrResponseTimeout},
	}
	for _, tc := range cases {
		s := newCallSink()
		call(t, cr, relayloop.CallRequest{
			Head: get("/"), Target: &relayloop.Target{Endpoints: []netip.AddrPort{tc.ep}, Pool: tc.name},
			ResponseTimeout: tc.timeout, Sink: s,
		})
		x := s.wait(t)
		if x.Err == nil || (!errors.Is(x.Err, tc.want) && !strings.Contains(x.Err.Error(), tc.want.Error())) {
			t.Errorf("%s: %v, want %v", tc.name, x.Err, tc.want)
		}
	}
	waitStats(t, set, relayloop.Stats{})
}

// Calls that time out together all end, each once, and the ones beside
// them that are answered are not disturbed: a sweep ends many calls of
// the loop's in-flight list at once.
func TestCallsTimeOutTogether(t *testing.T) {
	silent := rawBackend(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	answers, _ := httpBackend(t, echoHandler)
	set := callSet(t)
	cr := set.Caller()
	var quiet, answered []*callSink
	var calls []*relayloop.Call
	for i := range 24 {
		s := newCallSink()
		ep, timeout := answers, time.Duration(0)
		if i%3 != 0 {
			ep, timeout = silent, 50*time.Millisecond
			quiet = append(quiet, s)
		} else {
			answered = append(answered, s)
		}
		calls = append(calls, cr.NewCall(relayloop.CallRequest{
			Head: get(fmt.Sprintf("/%d", i)), Target: &relayloop.Target{Endpoints: []netip.AddrPort{ep}, Pool: "p"},
			ResponseTimeout: timeout, Sink: s,
		}))
	}
	cr.Start(calls...)
	for i, s := range quiet {
		if x := s.wait(t); !errors.Is(x.Err, relayloop.ErrResponseTimeout) {
			t.Errorf("silent call %d: %v, want %v", i, x.Err, relayloop.ErrResponseTimeout)
		}
	}
	for i, s := range answered {
		if x := s.wait(t); x.Err != nil {
			t.Errorf("answered call %d: %v", i, x.Err)
		}
	}
	waitStats(t, set, relayloop.Stats{Backends: int64(len(answered)), Idle: int64(len(answered))})
}

// Abort ends a call waiting for its response, and its backend connection
// closes rather than carry a response nobody wants.
func TestCallAbort(t *testing.T) {
	gone := make(chan struct{})
	silent := rawBackend(t, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c)
		close(gone)
	})
	set := callSet(t)
	s := newCallSink()
	k := call(t, set.Caller(), relayloop.CallRequest{Head: get("/"), Target: &relayloop.Target{Endpoints: []netip.AddrPort{silent}, Pool: "p"}, Sink: s})
	waitStats(t, set, relayloop.Stats{Backends: 1, Calls: 1})
	reset := errors.New("stream reset")
	k.Abort(reset)
	if x := s.wait(t); !errors.Is(x.Err, reset) {
		t.Errorf("ended with %v, want the abort's error", x.Err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend connection stayed open")
	}
	k.Abort(reset) // after the end: nothing
	waitStats(t, set, relayloop.Stats{})
}

// A pooled connection the backend closed while idle is replaced for a
// request that may be retried; one that may not fails.
func TestCallRetry(t *testing.T) {
	var n int
	var mu sync.Mutex
	once := rawBackend(t, func(c net.Conn) {
		mu.Lock()
		n++
		mu.Unlock()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_ = c.Close() // without Connection: close: the pool keeps it
	})
	set := callSet(t)
	cr := set.Caller()
	target := &relayloop.Target{Endpoints: []netip.AddrPort{once}, Pool: "p"}
	for i, retry := range []bool{false, true} {
		s := newCallSink()
		call(t, cr, relayloop.CallRequest{Head: get("/"), Target: target, Retry: true, Sink: s})
		if x := s.wait(t); x.Err != nil || s.body.String() != "ok" {
			t.Fatalf("first call: %v %q", x.Err, s.body.String())
		}
		time.Sleep(50 * time.Millisecond) // the close reaches the pooled connection
		s = newCallSink()
		call(t, cr, relayloop.CallRequest{Head: get("/"), Target: target, Retry: retry, Sink: s})
		x := s.wait(t)
		if retry && (x.Err != nil || s.body.String() != "ok") {
			t.Errorf("retried call %d: %v %q", i, x.Err, s.body.String())
		}
		if !retry && x.Err == nil && x.Reused {
			t.Errorf("call %d went on a closed pooled connection and succeeded?", i)
		}
	}
}

func TestCallsEndWithTheSet(t *testing.T) {
	silent := rawBackend(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	set, err := relayloop.New(relayloop.Options{Loops: 2})
	if err != nil {
		t.Skipf("no relay loops here: %v", err)
	}
	var sinks []*callSink
	for range 4 {
		s := newCallSink()
		sinks = append(sinks, s)
		call(t, set.Caller(), relayloop.CallRequest{Head: get("/"), Target: &relayloop.Target{Endpoints: []netip.AddrPort{silent}}, Sink: s})
	}
	waitStats(t, set, relayloop.Stats{Backends: 4, Calls: 4})
	_ = set.Close()
	for _, s := range sinks {
		if x := s.wait(t); !errors.Is(x.Err, relayloop.ErrClosed) {
			t.Errorf("ended with %v, want ErrClosed", x.Err)
		}
	}
	late := newCallSink()
	cr := set.Caller()
	cr.Start(cr.NewCall(relayloop.CallRequest{Head: get("/"), Sink: late}))
	if x := late.wait(t); !errors.Is(x.Err, relayloop.ErrClosed) {
		t.Errorf("a call on a closed set: %v", x.Err)
	}
}

func TestCallSinkPanics(t *testing.T) {
	ep, _ := httpBackend(t, echoHandler)
	set := callSet(t)
	for _, where := range []string{"Response", "Data"} {
		s := newCallSink()
		s.panicIn = where
		call(t, set.Caller(), relayloop.CallRequest{Head: get("/"), Target: &relayloop.Target{Endpoints: []netip.AddrPort{ep}, Pool: "p"}, Sink: s})
		var p *panics.Error
		if x := s.wait(t); !errors.As(x.Err, &p) {
			t.Errorf("%s: ended with %v, want the panic", where, x.Err)
		}
	}
	waitStats(t, set, relayloop.Stats{})
}

// rawBackend accepts connections and runs serve on each.
func rawBackend(t *testing.T, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// Calls started together are sent in one round of their loop, each on a
// backend connection of its own, and each gets its own response.
func TestCallsStartTogether(t *testing.T) {
	ep, conns := httpBackend(t, echoHandler)
	set := callSet(t)
	cr := set.Caller()
	target := &relayloop.Target{Endpoints: []netip.AddrPort{ep}, Pool: "web"}
	var calls []*relayloop.Call
	var sinks []*callSink
	for i := range 16 {
		s := newCallSink()
		sinks = append(sinks, s)
		calls = append(calls, cr.NewCall(relayloop.CallRequest{Head: get(fmt.Sprintf("/%d", i)), Target: target, Sink: s}))
	}
	cr.Start(calls...)
	for i, s := range sinks {
		if x := s.wait(t); x.Err != nil || s.body.String() != fmt.Sprintf("GET /%d loop=call body=", i) {
			t.Errorf("call %d: %v %q", i, x.Err, s.body.String())
		}
	}
	if n := conns.Load(); n != 16 {
		t.Errorf("the backend saw %d connections for 16 requests at once, want 16", n)
	}
	waitStats(t, set, relayloop.Stats{Backends: 16, Idle: 16})
}

// TestCallBodyThenJunk: bytes a backend sends after a response whose
// body ended at the last byte of a full read (no event will come for
// them) never answer the next call: its connection is not pooled.
func TestCallBodyThenJunk(t *testing.T) {
	body := bytes.Repeat([]byte("b"), 16<<10)    // the loop's copy buffer, exactly
	be, conns := junkBackend(t, body, len(body)) // the head is read alone
	set := callSet(t)
	cr := set.Caller()
	target := &relayloop.Target{Endpoints: []netip.AddrPort{be}, Pool: "web"}
	for i, want := range []string{string(body), "good"} {
		s := newCallSink()
		call(t, cr, relayloop.CallRequest{Head: get("/"), Target: target, Retry: true, Sink: s})
		if x := s.wait(t); x.Err != nil || s.body.String() != want {
			t.Errorf("call %d: %v, %d bytes %.8q, want %.8q", i, x.Err, s.body.Len(), s.body.String(), want)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2: the first is not to be trusted again", n)
	}
}

// TestCallResponseHeadLimit: a call fails for a response head longer
// than its MaxHead, 64 KiB when it names none, and takes one within it.
func TestCallResponseHeadLimit(t *testing.T) {
	backend := func(size int) netip.AddrPort {
		return rawBackend(t, func(c net.Conn) {
			_, _ = bufio.NewReader(c).ReadString('\n')
			pad := strings.Repeat("x", size)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Pad: "+pad+"\r\nContent-Length: 2\r\n\r\nok")
		})
	}
	set := callSet(t)
	cr := set.Caller()
	for _, tc := range []struct {
		maxHead, pad int
		ok           bool
	}{
		{0, 60 << 10, true},
		{0, 70 << 10, false},
		{1 << 10, 900, true},
		{1 << 10, 2 << 10, false},
	} {
		s := newCallSink()
		call(t, cr, relayloop.CallRequest{
			Head: get("/"), Target: &relayloop.Target{Endpoints: []netip.AddrPort{backend(tc.pad)}},
			MaxHead: tc.maxHead, Sink: s,
		})
		x := s.wait(t)
		s.mu.Lock()
		body := s.body.String()
		s.mu.Unlock()
		if ok := x.Err == nil && body == "ok"; ok != tc.ok {
			t.Errorf("MaxHead %d, a head with %d bytes of field: error %v, body %q; want it taken: %v", tc.maxHead, tc.pad, x.Err, body, tc.ok)
		}
		if !tc.ok && (x.Err == nil || !strings.Contains(x.Err.Error(), "too large")) {
			t.Errorf("MaxHead %d, %d bytes: %v, want a head too large", tc.maxHead, tc.pad, x.Err)
		}
	}
	waitStats(t, set, relayloop.Stats{})
}
