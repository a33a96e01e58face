package dataplane

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/textproto"

	"github.com/valyala/fasthttp"

	"github.com/portmux/portmux/dataplane/h1"
	"github.com/portmux/portmux/dataplane/h2"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/route"
)

// HTTP/2 streams on the relay loops. A stream without a body that
// proxyBodiless would carry, to a route whose endpoints are addresses,
// is taken from the HTTP/2 server (h2.Server.Async) as its HEADERS
// frame is read: its request head goes to a relay loop, which sends it
// over a backend connection of the pool the loops' HTTP/1.1 exchanges
// share and passes the response to the stream as it comes
// (relayloop.CallSink), with no goroutine or netpoller wake-up of its
// own. The head, the response's rewriting and the outcomes are
// proxyBodiless's (appendBodilessHead, frontStripHop,
// copyResponseFields, failure), so a client cannot tell the paths
// apart. Every other stream, and every stream where there are no loops,
// runs on a goroutine as before.

// loopStreams serves one HTTP/2 connection's streams on a relay loop.
// Its calls all run on one loop (its Caller's), which is what lets its
// response values be shared by them without a lock.
type loopStreams struct {
	h       *httpConn
	caller  *relayloop.Caller
	slots   loopSlots
	maxHead int
	values  responseValues // the loop's alone
	// batch holds the streams taken since the reader last waited for
	// the client: their calls start together (flush), from starts.
	batch  []*loopStream
	starts []*relayloop.Call
}

// loopStreamsOf returns what carries h's HTTP/2 streams on a relay loop
// (caller's, or the least busy one's when nil), nil when there are no
// relay loops.
func (h *httpConn) loopStreamsOf(caller *relayloop.Caller) *loopStreams {
	s, c := h.s, h.c
	if s.loops == nil {
		return nil
	}
	if caller == nil {
		caller = s.loops.Caller()
	}
	return &loopStreams{
		h:       h,
		caller:  caller,
		slots:   c.loopSlots(),
		maxHead: s.opt.HTTP.withDefaults(s.opt.IdleTimeout).MaxHeaderBytes,
	}
}

// flush starts the calls taken since the last flush, in one round of
// their loop: the h2.Server's ReadIdle.
//
// A stream the client reset in the same read that opened it (rapid
// reset) does not start: the reset reaches its call through a goroutine
// (the stream's context) and would come after the start, once the call
// had taken a backend connection and sent the request, only to close
// it. Its Abort, on its way, ends the call unstarted.
func (ls *loopStreams) flush() {
	for _, sk := range ls.batch {
		if sk.st.Context().Err() == nil {
			ls.starts = append(ls.starts, sk.call)
		}
	}
	ls.caller.Start(ls.starts...)
	clear(ls.batch)
	clear(ls.starts)
	ls.batch, ls.starts = ls.batch[:0], ls.starts[:0]
}

// loopStream is one stream carried by a relay loop: the call's Sink,
// and the stream's h2.Owner.
type loopStream struct {
	ls *loopStreams
	st *h2.Stream
	// headMethod: the request is a HEAD, whose response has no body.
	headMethod bool
	rc         *routeConfig
	call       *relayloop.Call
	w          *loopHTTPWork
	target     relayloop.Target
	headDone   bool // the final response's head went to the stream
	// head is the request's head, made in hb (requestHeads): the call
	// reads it until it ends (a retry sends it again).
	hb   *[]byte
	head []byte
}

// take carries r on a loop when proxyBodiless would carry it, and
// returns the stream's Owner if it did, nil if the handler is to: a
// request without a body (the only ones Async is offered) of a method
// directable takes. What else directable refuses, an Upgrade or
// Connection field or an invalid one, makes an HTTP/2 request
// malformed, and it never gets here.
func (ls *loopStreams) take(st *h2.Stream, r h2.Request) h2.Owner {
	h := ls.h
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return nil
	}
	rc := h.routeOf(route.Request{Method: r.Method, Host: r.Host, Path: r.URL.Path})
	if rc == nil || rc.httpEndpoints == nil || len(*rc.httpEndpoints) == 0 {
		return nil // answered by the handler, as it answers them
	}
	hb := requestHeads.Get().(*[]byte)
	head, err := h.appendStreamHead((*hb)[:0], r)
	if err != nil || !h.handlers.enter() {
		putRequestHead(hb, head)
		return nil
	}
	eps := *rc.httpEndpoints
	sk := &loopStream{ls: ls, st: st, headMethod: r.Method == http.MethodHead, rc: rc, w: loopHTTPWorks.Get().(*loopHTTPWork), hb: hb, head: head}
	sk.target = rc.loopTarget(eps, ls.slots)
	sk.call = ls.caller.NewCall(relayloop.CallRequest{
		Head:    head,
		Target:  &sk.target,
		Retry:   true, // directable: GET, HEAD, OPTIONS, TRACE
		MaxHead: ls.maxHead,
		Sink:    sk,
	})
	ls.batch = append(ls.batch, sk)
	return sk
}

// Resume and Cancel make the stream's carrier its h2.Owner: a write the
// stream could not take goes on, and a stream the client reset ends
// its call, closing its backend connection.
func (sk *loopStream) Resume() { sk.call.Resume() }
func (sk *loopStream) Cancel() { sk.call.Abort(context.Canceled) }

// Response passes the backend's response head on to the stream, as
// exchangeBodiless and respondBodiless do.
func (sk *loopStream) Response(head []byte) (relayloop.Step, error) {
	res := &sk.w.resp
	res.Reset()
	res.SetNoDefaultContentType(true)
	if err := sk.w.heads.Response(head, res); err != nil {
		return relayloop.Step{}, err
	}
	code := res.StatusCode()
	switch {
	case code == fasthttp.StatusSwitchingProtocols:
		return relayloop.Step{}, errors.New("the backend switched protocols unasked")
	case code == fasthttp.StatusContinue:
		return relayloop.Step{Interim: true}, nil // the request has no body to wait for it
	case code < 200:
		hd := sk.st.Header()
		copyResponseFields(hd, res, &sk.ls.values)
		sk.st.WriteHeader(code)
		clear(hd) // an informational head's fields are its own
		return relayloop.Step{Interim: true}, nil
	}
	kind, length := h1.ResponseBody(res, sk.headMethod)
	keep := !res.ConnectionClose()
	sk.w.fields = appendEndToEndFields(sk.w.fields[:0], res, &sk.ls.values)
	sk.st.WriteFields(code, sk.w.fields)
	sk.headDone = true
	return relayloop.Step{Body: kind, Length: length, Close: !keep}, nil
}

// Data writes body bytes to the stream as far as its windows let it.
func (sk *loopStream) Data(p []byte) int {
	n, err := sk.st.TryWrite(p)
	if err != nil {
		sk.call.Abort(err) // the stream is gone; the call stops here
		return 0
	}
	return n
}

// Ended ends the stream and counts its request: whole, cut short after
// its head (reset, as the reverse proxy does, so that the client does
// not take it whole), or failed before (the status failure gives).
func (sk *loopStream) Ended(x relayloop.ExchangeResult, trailer []byte) {
	h, rc := sk.ls.h, sk.rc
	rc.up.Add(float64(x.Up))
	rc.down.Add(float64(x.Down))
	switch {
	case x.Err == nil:
		if len(trailer) > 0 {
			addTrailerLines(sk.st.Header(), trailer)
		}
		sk.st.End()
		h.count(rc, RequestProxied)
	case sk.headDone:
		sk.st.Reset()
		h.count(rc, RequestProxied)
	default:
		err := x.Err
		if errors.Is(err, relayloop.ErrNoSlot) {
			err = errNoBackendSlot
		}
		status, outcome := h.failure(rc, err)
		sk.st.WriteHeader(status)
		sk.st.End()
		h.count(rc, outcome)
	}
	h.handlers.leave()
	clear(sk.w.fields)
	loopHTTPWorks.Put(sk.w)
	putRequestHead(sk.hb, sk.head)
	sk.w, sk.hb, sk.head = nil, nil, nil
}

// addTrailerLines adds the field lines of a chunked body's trailer section
// (which h1.Framer checked) to hd as trailers, under
// http.TrailerPrefix.
func addTrailerLines(hd http.Header, trailer []byte) {
	for len(trailer) > 0 {
		line, rest, _ := bytes.Cut(trailer, []byte("\n"))
		trailer = rest
		name, value, ok := bytes.Cut(bytes.TrimSuffix(line, []byte("\r")), []byte(":"))
		if !ok {
			continue
		}
		k := http.TrailerPrefix + textproto.CanonicalMIMEHeaderKey(string(name))
		hd[k] = append(hd[k], textproto.TrimString(string(value)))
	}
}
