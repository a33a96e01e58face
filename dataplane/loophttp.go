package dataplane

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2/hpack"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/h1"
	"github.com/portmux/portmux/dataplane/relayloop"
	"github.com/portmux/portmux/dataplane/route"
)

// HTTP/1.1 in http mode on the relay loops: a cleartext connection whose
// first request goes to an http-mode route with address endpoints is
// carried by its loop as exchanges (relayloop.Exchanger), with no
// goroutine, netpoller wake-up or timer per request. Each request is
// routed and rewritten as serveFront does it (the same routeOf,
// frontTargetOf, appendFrontHead and frontStripHop), so a client cannot tell
// the two paths apart. What the loop path does not carry goes to
// serveFront with the connection, between two requests (HandOff):
// HTTP/1.0, upgrades (WebSocket, h2c), Expect: 100-continue, a request
// with both Content-Length and Transfer-Encoding, a route whose backend
// names a host. TLS, and cleartext behind a PROXY header, reach the
// loops once the handshake or the header and the first request's sniff
// are done on a goroutine (loopadopt.go). An HTTP/2 connection is served
// by its loop too (loophttp2.go), and the backend exchanges of its
// streams without a body go to the loops (h2loop.go).

// loopHTTP is what a connection carried as exchanges keeps between
// requests: nothing that grows with a request.
type loopHTTP struct {
	hc    *httpConn
	slots loopSlots
	opt   relayloop.Exchange
	// The request in flight: its route (nil when answered here), whether
	// it was counted, and what its response needs.
	rc      *routeConfig
	counted bool
	toHead  bool
	// respErr is why Response refused the backend's head.
	respErr error
	target  relayloop.Target
	// w holds the parsers and buffers of the request in flight, taken
	// from loopHTTPWork at its head and given back at its end.
	w *loopHTTPWork
}

// loopHTTPWork is a request's parsing state: pooled, so that an idle
// connection holds none of it.
type loopHTTPWork struct {
	heads *h1.Heads
	req   fasthttp.RequestHeader
	resp  fasthttp.ResponseHeader
	uri   fasthttp.URI
	buf   []byte
	// scratch is where appendFrontHead writes the client's head first.
	scratch []byte
	// fields are an HTTP/2 stream's response fields
	// (appendEndToEndFields), held until the stream ends.
	fields []hpack.HeaderField
}

var loopHTTPWorks = sync.Pool{New: func() any {
	return &loopHTTPWork{heads: h1.NewHeads(DefaultHTTPMaxHeaderBytes)}
}}

// loopHTTPRoute reports whether the relay loops carry a connection that
// rc took from its first bytes sniffed: a cleartext HTTP/1.1 request to
// an http-mode route whose endpoints are addresses.
func loopHTTPRoute(rc *routeConfig, sniffed []byte) bool {
	return rc.transport != nil && rc.httpEndpoints != nil && !wantsHTTP2("", sniffed)
}

// loopHTTP2Route reports whether a relay loop serves a connection that
// rc took as HTTP/2 (ALPN, or the preface sniffed): any http-mode route,
// whatever its endpoints, since each stream chooses its own path.
func loopHTTP2Route(rc *routeConfig, alpn string, sniffed []byte) bool {
	return rc.transport != nil && wantsHTTP2(alpn, sniffed)
}

// startHTTP turns the loop session into an exchanger for rc's route.
func (ls *loopSession) startHTTP(rc *routeConfig) relayloop.Verdict {
	c := ls.c
	s := c.s
	lim := s.opt.HTTP.withDefaults(s.opt.IdleTimeout)
	if rc.IdleTimeout > 0 {
		lim.IdleTimeout = rc.IdleTimeout
	}
	c.reportRoute(rc)
	c.rep.backend = rc.Backend.Name
	ls.http = &loopHTTP{
		hc:    newHTTPConn(c, c.lc),
		slots: c.loopSlots(),
		opt: relayloop.Exchange{
			MaxHead:     lim.MaxHeaderBytes,
			HeadTimeout: lim.ReadHeaderTimeout,
			IdleTimeout: lim.IdleTimeout,
		},
	}
	ls.route = rc
	return relayloop.Verdict{Exchange: &ls.http.opt}
}

// Request routes and rewrites one request (serveFrontRequest and
// forward on the loop).
func (ls *loopSession) Request(head []byte) relayloop.Step {
	lh := ls.http
	if lh.w == nil {
		lh.w = loopHTTPWorks.Get().(*loopHTTPWork)
	}
	w := lh.w
	lh.rc, lh.counted = nil, false
	w.req.Reset()
	if err := w.heads.Request(head, &w.req); err != nil {
		ls.c.s.log.V(1).Info("HTTP server", "listener", ls.c.rep.listener, "client", ls.c.rep.client, "message", err.Error())
		return lh.plain(fasthttp.StatusBadRequest, "400 Bad Request", true)
	}
	req := &w.req
	// What fasthttp's server checks before its handler runs: no
	// userinfo in Host, a target and Host that parse as a URI.
	if bytes.IndexByte(req.Host(), '@') >= 0 || w.uri.Parse(req.Host(), req.RequestURI()) != nil {
		return lh.plain(fasthttp.StatusBadRequest, "400 Bad Request", true)
	}
	t, bad, ok := frontTargetOfHeader(req)
	if !ok {
		return lh.plain(fasthttp.StatusBadRequest, "400 Bad Request"+bad, true)
	}
	ws := frontIsWebSocket(req)
	rc := lh.hc.routeOf(route.Request{Method: string(req.Method()), Host: t.host, Path: t.path, WebSocket: ws})
	kind, length := h1.RequestBody(req)
	if rc == nil {
		lh.hc.count(nil, RequestMisdirected)
		lh.counted = true
		return withBody(lh.plain(fasthttp.StatusMisdirectedRequest, "no route for this request on this connection", false), kind, length)
	}
	// The loop leaves to serveFront what it does not carry; the request
	// is routed first, so that the connection stays in http mode (a
	// request no http-mode route takes got its 421 above).
	if ws || !req.IsHTTP11() || len(req.Peek("Expect")) > 0 || req.ConnectionClose() && kind == h1.Chunked || rc.httpEndpoints == nil {
		return ls.handOffHTTP()
	}
	lh.rc = rc
	eps := *rc.httpEndpoints
	if len(eps) == 0 {
		_, outcome := lh.hc.failure(rc, forward.ErrNoEndpoints)
		lh.count(outcome)
		return withBody(lh.status(fasthttp.StatusBadGateway, false), kind, length)
	}
	lh.toHead = req.IsHead()
	w.buf, w.scratch = appendFrontHead(w.buf[:0], w.scratch, lh.hc, req, t, kind, length, nil)
	lh.target = rc.loopTarget(eps, lh.slots)
	m := req.Method()
	retry := kind == h1.None && (string(m) == "GET" || string(m) == "HEAD" || string(m) == "OPTIONS" || string(m) == "TRACE")
	return relayloop.Step{Head: w.buf, Body: kind, Length: length, Target: &lh.target, Retry: retry, Close: req.ConnectionClose()}
}

// loopTarget is where a request to rc's endpoints eps goes from the
// relay loops (an exchange's or an HTTP/2 stream's call): the next
// endpoint in turn, over the loops' pool kept per route transport, each
// new backend connection taking a slot from slots.
func (rc *routeConfig) loopTarget(eps []netip.AddrPort, slots loopSlots) relayloop.Target {
	return relayloop.Target{
		Endpoints:   eps,
		First:       rc.dialer.Turn(len(eps)),
		DialTimeout: rc.Backend.DialTimeout,
		IdleTimeout: rc.idle,
		Pool:        rc.transport,
		Slot:        slots.take,
		Slots:       slots.b,
		MaxIdle:     httpMaxIdleConnsPerEndpoint,
		PoolIdle:    httpBackendIdleTimeout,
	}
}

// loopSlots is what the backend connections the relay loops dial for a
// client connection's requests take their slots from (relayloop.Target's
// Slot and Slots), made once per connection.
type loopSlots struct {
	take func(loops relayloop.Evictor) (func(), bool)
	b    *boundListener
}

// loopSlots is c's loopSlots: its listener's and the global cap, at
// which the loop that asks evicts (backendSlotEvicting).
func (c *conn) loopSlots() loopSlots {
	return loopSlots{take: c.loopSlot, b: c.bound}
}

// loopSlot is the slot a backend connection the relay loops dial for c's
// requests takes.
func (c *conn) loopSlot(loops relayloop.Evictor) (func(), bool) {
	return c.s.backendSlotEvicting(c.bound, c.lc, c.cfg, loops)
}

// handOffHTTP gives the connection to serveFront before the request in
// hand, with a new probe deadline for the bytes it reads again.
func (ls *loopSession) handOffHTTP() relayloop.Step {
	ls.probeEnd = ls.c.lc.probeDeadline()
	ls.releaseWork()
	return relayloop.Step{HandOff: true}
}

// Response rewrites the backend's response head as frontRespond does.
func (ls *loopSession) Response(head []byte) relayloop.Step {
	lh := ls.http
	w := lh.w
	res := &w.resp
	res.Reset()
	res.SetNoDefaultContentType(true)
	if err := w.heads.Response(head, res); err != nil {
		lh.respErr = err
		return relayloop.Step{}
	}
	code := res.StatusCode()
	switch {
	case code == fasthttp.StatusSwitchingProtocols:
		lh.respErr = errors.New("the backend switched protocols unasked")
		return relayloop.Step{}
	case code == fasthttp.StatusContinue:
		return relayloop.Step{Interim: true} // dropped, as serveFront does
	case code < 200:
		w.buf = res.AppendBytes(w.buf[:0])
		return relayloop.Step{Head: w.buf, Interim: true}
	}
	kind, length := h1.ResponseBody(res, lh.toHead)
	cl := res.ContentLength()
	keep := !res.ConnectionClose()
	frontStripHop(res)
	switch kind {
	case h1.Sized:
		res.SetContentLength(int(length))
	case h1.Chunked:
		res.SetContentLength(-1)
	case h1.UntilClose:
		res.SetContentLength(-2) // and Connection: close
	case h1.None:
		if cl >= 0 {
			res.SetContentLength(cl)
		}
	}
	w.buf = res.AppendBytes(w.buf[:0])
	return relayloop.Step{Head: w.buf, Body: kind, Length: length, Close: !keep}
}

// Failed answers a request that failed before its response began.
func (ls *loopSession) Failed(err error) []byte {
	lh := ls.http
	var st relayloop.Step
	switch {
	case errors.Is(err, relayloop.ErrHeadTimeout):
		return nil // serveFront closes the connection too
	case errors.Is(err, relayloop.ErrHeadTooLarge):
		st = lh.plain(fasthttp.StatusRequestHeaderFieldsTooLarge, "431 Request Header Fields Too Large", true)
	case errors.Is(err, h1.ErrMalformed), errors.Is(err, h1.ErrTooLarge):
		st = lh.plain(fasthttp.StatusBadRequest, "400 Bad Request", true)
	case errors.Is(err, relayloop.ErrNoSlot):
		st = lh.status(fasthttp.StatusServiceUnavailable, true)
	default:
		st = lh.status(fasthttp.StatusBadGateway, true)
	}
	return st.Head
}

// Ended counts a request and its bytes, and lets go of its buffers.
func (ls *loopSession) Ended(x relayloop.ExchangeResult) {
	lh := ls.http
	if rc := lh.rc; rc != nil {
		rc.up.Add(float64(x.Up))
		rc.down.Add(float64(x.Down))
		if !lh.counted {
			err := x.Err
			if err == nil && lh.respErr != nil {
				err = lh.respErr
			}
			switch {
			case x.Err == nil, x.Down > 0:
				lh.count(RequestProxied)
			case errors.Is(err, relayloop.ErrNoSlot):
				_, outcome := lh.hc.failure(rc, errNoBackendSlot)
				lh.count(outcome)
			default:
				_, outcome := lh.hc.failure(rc, err)
				lh.count(outcome)
			}
		}
	}
	lh.rc, lh.respErr = nil, nil
	ls.releaseWork()
}

func (ls *loopSession) releaseWork() {
	if w := ls.http.w; w != nil {
		ls.http.w = nil
		if cap(w.buf) > 64<<10 {
			w.buf = nil
		}
		if cap(w.scratch) > 64<<10 {
			w.scratch = nil
		}
		loopHTTPWorks.Put(w)
	}
}

func (lh *loopHTTP) count(outcome string) {
	lh.counted = true
	lh.hc.count(lh.rc, outcome)
}

// plain is frontPlainError's answer: status, msg as a text body, and
// Connection: close when closing.
func (lh *loopHTTP) plain(status int, msg string, closing bool) relayloop.Step {
	w := lh.work()
	body := msg + "\n"
	w.resp.Reset()
	w.resp.SetStatusCode(status)
	w.resp.Set("Content-Type", "text/plain; charset=utf-8")
	w.resp.Set("X-Content-Type-Options", "nosniff")
	w.resp.SetContentLength(len(body))
	if closing {
		w.resp.SetConnectionClose()
	}
	w.buf = append(w.resp.AppendBytes(w.buf[:0]), body...)
	return relayloop.Step{Head: w.buf, Close: closing}
}

// status is frontFail's answer: the status alone.
func (lh *loopHTTP) status(status int, closing bool) relayloop.Step {
	w := lh.work()
	w.resp.Reset()
	w.resp.SetStatusCode(status)
	w.resp.SetContentLength(0)
	if closing {
		w.resp.SetConnectionClose()
	}
	w.buf = w.resp.AppendBytes(w.buf[:0])
	return relayloop.Step{Head: w.buf, Close: closing}
}

// withBody is st answering a request whose body is framed so: the loop
// reads it and drops it.
func withBody(st relayloop.Step, kind h1.Kind, length int64) relayloop.Step {
	st.Body, st.Length = kind, length
	return st
}

func (lh *loopHTTP) work() *loopHTTPWork {
	if lh.w == nil {
		lh.w = loopHTTPWorks.Get().(*loopHTTPWork)
	}
	return lh.w
}

// doneHTTP ends a connection the loops carried as exchanges.
func (ls *loopSession) doneHTTP(r relayloop.Result) {
	c := ls.c
	ls.releaseWork()
	c.rep.up, c.rep.down = r.Up, r.Down
	c.rep.outcome = OutcomeHTTP
	if r.Err != nil && !errors.Is(r.Err, relayloop.ErrClosed) && !isClosedConn(r.Err) {
		c.rep.err = r.Err
	}
	c.end()
}
