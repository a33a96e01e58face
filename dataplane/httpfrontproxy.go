package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/portmux/portmux/dataplane/forward"
	"github.com/portmux/portmux/dataplane/h1"
)

// The backend side of serveFront: a request's head is made by
// appendFrontHead, the relay loops' own, and written with its body on a
// connection of the route's direct pool (which dials with dialBackend,
// so every backend connection holds a connection slot, and bounds its
// idle connections); the response head is read with fasthttp, and the
// body streams to the client as it comes.

// frontHopHeaders are the hop-by-hop fields (RFC 9110 §7.6.1) that
// net/http's reverse proxy removes both ways; Connection first
// (frontDeleteHop reads it before it deletes).
var frontHopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// forward sends the request of ctx to the next endpoint of rc's backend
// and its response back; it returns the request's outcome.
func (h *httpConn) forward(ctx *fasthttp.RequestCtx, fc *frontConn, rc *routeConfig, t frontTarget, ws bool) string {
	endpoint := rc.dialer.Next(rc.Backend.Endpoints)
	if endpoint == "" {
		return h.frontFail(ctx, rc, forward.ErrNoEndpoints)
	}
	req := h.frontRequest(ctx, t, ws)
	defer req.release()
	head := ctx.IsHead()
	pool := rc.transport.direct
	if ws {
		return h.forwardUpgrade(ctx, fc, rc, pool, endpoint, req)
	}
	// A request the backend may get twice (bodiless, idempotent) is sent
	// again on a new connection when a pooled one fails before its
	// response; any other gets a pooled connection only once it is seen
	// still open.
	retryable := req.body == nil && frontIdempotent(ctx)
	// A panic mid-exchange (recovered by serveFrontRequest) closes the
	// connection in use, giving its slot back.
	var inUse *directConn
	defer func() {
		if inUse != nil {
			inUse.close()
		}
	}()
	for {
		dc, reused, err := pool.get(fc.ctx, endpoint)
		if err != nil {
			return h.frontFail(ctx, rc, err)
		}
		inUse = dc
		if reused && !retryable && !dc.open() {
			dc.close()
			continue
		}
		fc.startExchange(dc)
		stop := fc.endExchange
		rh := &ctx.Response.Header
		err = dc.frontExchange(req, rh, fc, ctx.Request.Header.IsHTTP11(), false)
		inUse = nil
		if err == nil {
			h.frontRespond(ctx, dc, stop, head)
			return RequestProxied
		}
		stop()
		dc.close()
		ctx.Response.Reset()
		if cerr := fc.ctx.Err(); cerr != nil {
			return h.frontFail(ctx, rc, fmt.Errorf("%w: %w", cerr, err))
		}
		if fc.hungUp.Load() { // the sweeper cut the exchange
			return h.frontFail(ctx, rc, fmt.Errorf("%w: %w", errClientGone, err))
		}
		if !reused || !retryable {
			return h.frontFail(ctx, rc, err)
		}
	}
}

// frontIdempotent reports a method the client may retry (RFC 9110
// §9.2.2) that carries no body by convention.
func frontIdempotent(ctx *fasthttp.RequestCtx) bool {
	switch string(ctx.Method()) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// frontRequest is a request as its backend gets it: the head
// appendFrontHead made, and the client's body (nil: none), framed as
// kind and length say.
type frontRequest struct {
	head   []byte
	body   io.Reader
	kind   h1.Kind
	length int64
	// bufs are the pooled buffers of head and of appendFrontHead's
	// scratch, which they hold.
	bufs [2]*[]byte
}

// frontRequest makes the request the backend gets for the one of ctx,
// in buffers release gives back.
func (h *httpConn) frontRequest(ctx *fasthttp.RequestCtx, t frontTarget, ws bool) frontRequest {
	in := &ctx.Request.Header
	var req frontRequest
	if body := ctx.Request.BodyStream(); body != nil {
		req.body = &clientBody{r: body}
	}
	req.kind, req.length = h1.RequestBody(in)
	var upgrade []byte
	if ws {
		upgrade = in.Peek("Upgrade")
	}
	req.bufs = [2]*[]byte{requestHeads.Get().(*[]byte), requestHeads.Get().(*[]byte)}
	var scratch []byte
	req.head, scratch = appendFrontHead((*req.bufs[0])[:0], (*req.bufs[1])[:0], h, in, t, req.kind, req.length, upgrade)
	*req.bufs[0], *req.bufs[1] = req.head, scratch
	return req
}

// release gives r's buffers back to their pool.
func (r *frontRequest) release() {
	for _, b := range r.bufs {
		putRequestHead(b, *b)
	}
}

// appendFrontHead appends the head the backend gets for in: HTTP/1.1,
// the client's Host kept, the hop-by-hop fields and those Connection
// names removed, X-Forwarded-For, -Proto, -Host, X-Real-IP and
// Forwarded set from what the dataplane saw, as net/http's reverse
// proxy did. A WebSocket handshake keeps its upgrade (the client's
// Upgrade value, nil for any other request).
//
// The head is in's own as fasthttp writes it (its cookies as the client
// wrote them), filtered line by line, so that a field's lines keep their
// order (fasthttp's Del moves the last field into the place of the one
// it deletes). The body is framed as kind and length say
// (h1.RequestBody), and the forwarding fields come last. scratch is
// where in's head is written first; it is returned for reuse. On a
// browser's head the former rewrite, a copy of in with its fields set
// and deleted one by one, took 720 ns before AppendBytes
// (BenchmarkFrontRewrite); this takes 451 ns with the bytes
// (BenchmarkFrontHead).
func appendFrontHead(dst, scratch []byte, h *httpConn, in *fasthttp.RequestHeader, t frontTarget, kind h1.Kind, length int64, upgrade []byte) (head, scratchOut []byte) {
	in.SetNoDefaultContentType(true) // none is added to a body without one
	raw := in.AppendBytes(scratch[:0])
	var stack [256]byte
	conn := connectionList(in.PeekAll("Connection"), stack[:0])
	dst = append(append(dst, in.Method()...), ' ')
	if t.uri != nil {
		dst = append(dst, t.uri...)
	} else {
		dst = append(dst, in.RequestURI()...)
	}
	dst = append(append(append(dst, " HTTP/1.1\r\nHost: "...), t.host...), "\r\n"...)
	switch kind {
	case h1.Sized:
		dst = strconv.AppendInt(append(dst, "Content-Length: "...), length, 10)
		dst = append(dst, "\r\n"...)
	case h1.Chunked:
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	if upgrade != nil {
		dst = append(append(append(dst, "Connection: Upgrade\r\nUpgrade: "...), upgrade...), "\r\n"...)
	}
	_, rest, _ := bytes.Cut(raw, []byte("\n")) // the request line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok || frontHeadDrops(name, conn, kind) {
			continue // the empty line at the end, or a field dropped
		}
		dst = append(append(dst, line...), '\n')
	}
	return append(h.appendForwarding(dst, t.host), "\r\n"...), raw
}

// frontHeadDrops reports whether appendFrontHead leaves out the client's
// field name: Host and the body's framing, written anew; the hop-by-hop
// fields and those the Connection list conn names; HTTP2-Settings; and
// the forwarding fields, which never come from a client.
func frontHeadDrops(name, conn []byte, kind h1.Kind) bool {
	switch {
	case hopBit(name) != 0, asciiEqualFold(name, "Host"), asciiEqualFold(name, http2Settings):
		return true
	case asciiEqualFold(name, "Content-Length"):
		return kind != h1.None
	}
	for _, f := range forwardingFields {
		if asciiEqualFold(name, f) {
			return true
		}
	}
	for list := conn; len(list) > 0; {
		var tok []byte
		if tok, list = nextToken(list); len(tok) > 0 && bytes.EqualFold(tok, name) {
			return true
		}
	}
	return false
}

// forwardingFields are the fields the dataplane sets on every request
// it forwards.
var forwardingFields = [...]string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Forwarded"}

func asciiEqualFold(b []byte, s string) bool {
	return len(b) == len(s) && strings.EqualFold(string(b), s)
}

// frontExchange writes req and reads the response head into rh. Informational
// responses are passed on to the client (to an HTTP/1.1 one, as net/http
// did), except 100 Continue, which fasthttp sent it already; a 101 is an
// error unless upgrade.
func (c *directConn) frontExchange(req frontRequest, rh *fasthttp.ResponseHeader, client net.Conn, http11, upgrade bool) error {
	if err := c.writeRequest(req); err != nil {
		return fmt.Errorf("writing the request to %s: %w", c.addr, err)
	}
	return c.readFinalHead(rh, upgrade, func(int) error {
		if !http11 {
			return nil
		}
		if _, err := client.Write(rh.Header()); err != nil {
			return fmt.Errorf("passing an informational response on: %w", err)
		}
		return nil
	})
}

// writeRequest writes req's head and body, chunked anew when it came
// chunked: what fasthttp's server gives of it is the data.
func (c *directConn) writeRequest(req frontRequest) error {
	if req.body == nil {
		// Nothing follows the head: sent so that the wait for the
		// response begins before it, and the first read finds it.
		return c.send(req.head)
	}
	if _, err := c.bw.Write(req.head); err != nil {
		return err
	}
	if req.body != nil {
		switch req.kind {
		case h1.Sized:
			if _, err := io.CopyN(c.bw, req.body, req.length); err != nil {
				return fmt.Errorf("the request's body: %w", err)
			}
		case h1.Chunked:
			cw := httputil.NewChunkedWriter(c.bw)
			if _, err := io.Copy(cw, req.body); err != nil {
				return fmt.Errorf("the request's body: %w", err)
			}
			if err := cw.Close(); err != nil {
				return err
			}
			if _, err := c.bw.WriteString("\r\n"); err != nil { // no trailers
				return err
			}
		}
	}
	return c.bw.Flush()
}

// readFinalHead reads response heads into rh until the final one, or a
// 101 when upgrade (else a 101 is an error), and hands each
// informational one in between but 100 Continue to informational, whose
// error ends the exchange. A status under 100, which fasthttp's parser
// takes ("099") and no client may be given (a ResponseWriter panics on
// it), is an error.
func (c *directConn) readFinalHead(rh *fasthttp.ResponseHeader, upgrade bool, informational func(code int) error) error {
	for range 100 {
		if err := c.readHead(rh); err != nil {
			return err
		}
		switch code := rh.StatusCode(); {
		case code < 100:
			return fmt.Errorf("%s answered with status %d", c.addr, code)
		case code == fasthttp.StatusSwitchingProtocols && !upgrade:
			return fmt.Errorf("%s switched protocols unasked", c.addr)
		case code == fasthttp.StatusSwitchingProtocols:
			return nil
		case code == fasthttp.StatusContinue:
		case code < 200:
			if err := informational(code); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return fmt.Errorf("%s sent too many informational responses", c.addr)
}

// errResponseHeadTooLarge: a backend's response head past
// HTTPLimits.MaxHeaderBytes, which the client gets as a 502.
var errResponseHeadTooLarge = errors.New("backend's response head too large")

// readHead reads a response head into rh. The connection's reader holds
// 4 KiB, which fasthttp's parser needs the whole head to fit in: for a
// backend whose heads are larger (long Set-Cookie or CSP fields) it grows
// once to the pool's maxHead, which then bounds them.
func (c *directConn) readHead(rh *fasthttp.ResponseHeader) error {
	// The status line's start, as read with the rest of the head.
	if _, err := c.br.Peek(len("HTTP/1.1 200")); err == nil {
		if line, _ := c.br.Peek(c.br.Buffered()); h1.StatusUnder100(line) {
			return fmt.Errorf("reading the response from %s: %w", c.addr, h1.ErrStatusUnder100)
		}
	}
	for {
		rh.Reset()
		rh.SetNoDefaultContentType(true)
		err := rh.Read(c.br)
		if err == nil {
			return nil
		}
		// Declared here, the target escapes only on the way to an error.
		var small *fasthttp.ErrSmallBuffer
		switch {
		case !errors.As(err, &small):
			return fmt.Errorf("reading the response from %s: %w", c.addr, err)
		case c.br.Size() >= c.p.maxHead:
			return fmt.Errorf("reading the response from %s: %w (more than %d bytes)", c.addr, errResponseHeadTooLarge, c.p.maxHead)
		}
		// What was read stays first: the parser consumed none of it.
		pending, _ := c.br.Peek(c.br.Buffered())
		c.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(pending)), c.Conn), c.p.maxHead)
	}
}

// frontRespond makes the response of ctx from the head rh the backend
// sent on dc, and streams its body: dc goes back to the pool once the
// body was read to its end, unless the backend closes it.
func (h *httpConn) frontRespond(ctx *fasthttp.RequestCtx, dc *directConn, stop func() bool, head bool) {
	res := &ctx.Response
	code := res.Header.StatusCode()
	cl := res.Header.ContentLength()
	keep := !res.Header.ConnectionClose()
	frontStripHop(&res.Header)
	switch {
	case head || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified:
		res.SkipBody = true
		if cl >= 0 {
			res.Header.SetContentLength(cl)
		}
		dc.release(stop, keep)
	case cl == 0:
		res.Header.SetContentLength(0)
		dc.release(stop, keep)
	case cl > 0:
		res.SetBodyStream(dc.responseBody(stop, keep, cl), cl)
	default: // chunked, or to the end of the connection
		h.frontStream(ctx, dc.responseBody(stop, keep, cl))
	}
}

// responseBody is the body of the response whose head was just read on
// c, cl long as fasthttp's parser gives it (-1: chunked; -2 or less: up
// to the end of the connection, which cannot be kept then); it releases
// c once closed (frontBody).
func (c *directConn) responseBody(stop func() bool, keep bool, cl int) *frontBody {
	switch {
	case cl >= 0:
		return newFrontBody(c.br, c, stop, keep, int64(cl), nil)
	case cl == -1:
		return newFrontBody(httputil.NewChunkedReader(c.br), c, stop, keep, -1, c.br)
	default:
		return newFrontBody(c.br, c, stop, false, -1, nil)
	}
}

// frontStream sends a body of unknown length: chunked to an HTTP/1.1
// client; to an HTTP/1.0 one, which cannot read chunks (and fasthttp
// would send them), as the bytes up to the end of the connection, which
// is closed after it, as net/http did.
func (h *httpConn) frontStream(ctx *fasthttp.RequestCtx, body *frontBody) {
	if ctx.Request.Header.IsHTTP11() {
		body.to = &ctx.Response.Header
		ctx.Response.SetBodyStream(body, -1)
		return
	}
	fc := ctx.Conn().(*frontConn)
	res := &ctx.Response
	res.Header.SetContentLength(-2) // neither Content-Length nor chunked
	res.Header.SetConnectionClose()
	if len(res.Header.Peek("Date")) == 0 {
		res.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	head := append([]byte(nil), res.Header.Header()...)
	res.Reset()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer close(fc.relayed)
		_, err := c.Write(head)
		if err == nil {
			_, err = io.Copy(c, body)
		}
		_ = body.CloseWithError(err)
	})
}

// frontStripHop removes the hop-by-hop fields of a response, and those
// its Connection lists. fasthttp's Del moves the header's last field
// into the place of the one it deletes, which can put a repeated field's
// lines out of order (RFC 9110 §5.3: their order is their value); a
// response that repeats a name is stripped by frontStripHopInOrder. The
// response keeps its body length, and no longer closes a connection:
// the client's is the proxy's to keep or close (its callers read
// whether the backend's closes before).
func frontStripHop(h *fasthttp.ResponseHeader) {
	var present uint16
	var names, repeated uint64
	for k := range h.All() {
		if asciiEqualFold(k, "Set-Cookie") {
			continue // kept apart, never moved
		}
		present |= hopBit(k)
		b := nameBit(k)
		repeated |= names & b
		names |= b
	}
	stripHop(h, present, repeated != 0)
}

// stripHop is frontStripHop once it looked at h's fields: present says
// which hop-by-hop fields h has (hopBit), inOrder that a name may repeat.
func stripHop(h *fasthttp.ResponseHeader, present uint16, inOrder bool) {
	if present != 0 {
		cl := h.ContentLength()
		if inOrder {
			frontStripHopInOrder(h, present)
		} else {
			frontDeleteHop(h, present)
		}
		keepLength(h, cl)
	}
	h.ResetConnectionClose()
}

// keepLength gives h, stripped, the body length cl it had before, which
// the callers that read it after the strip expect (a response to HEAD
// keeps its length or its chunking), whatever Connection named.
func keepLength(h *fasthttp.ResponseHeader, cl int) {
	if h.ContentLength() != cl {
		// SetContentLength leaves a bodiless status's length alone.
		code := h.StatusCode()
		h.SetStatusCode(fasthttp.StatusOK)
		h.SetContentLength(cl)
		h.SetStatusCode(code)
		if cl == -1 {
			// Chunking added Transfer-Encoding as the last field:
			// deleting it moves no other.
			h.Del(fasthttp.HeaderTransferEncoding)
		}
	}
}

// nameBit is a bit of 64 for a field name, the same for names that
// differ only in case: a cheap test that no name repeats, which false
// positives only slow down.
func nameBit(k []byte) uint64 {
	if len(k) == 0 {
		return 1
	}
	return 1 << ((uint(len(k)) + 7*uint(k[0]|0x20) + 31*uint(k[len(k)-1]|0x20)) & 63)
}

// frontDeleteHop deletes the hop-by-hop fields of h, those present
// says (bits of hopBit) and those its Connection lists.
func frontDeleteHop(h *fasthttp.ResponseHeader, present uint16) {
	if present&1 != 0 {
		var stack [256]byte
		list := connectionList(h.PeekAll("Connection"), stack[:0])
		for len(list) > 0 {
			var tok []byte
			if tok, list = nextToken(list); len(tok) > 0 {
				h.DelBytes(tok)
			}
		}
	}
	for i, name := range frontHopHeaders {
		if present&(1<<i) != 0 {
			h.Del(name)
		}
	}
}

// frontStripHopInOrder is frontDeleteHop for a response that may repeat
// a name. Deleting moves fields, and every Del scans the whole header, so
// h is not edited: it is parsed anew from a head written from its own
// fields, less the hop-by-hop ones, in the order it holds them. That
// costs time linear in the size of the head, whatever a backend puts in
// it (BenchmarkFrontStripHop: 3,000 names of two lines each took 55 ms
// when each name was deleted and added back). The head it writes has no
// Transfer-Encoding: frontStripHop gives h its length back.
func frontStripHopInOrder(h *fasthttp.ResponseHeader, present uint16) {
	w := hopStrips.Get().(*hopStrip)
	defer w.put()
	w.list = w.list[:0]
	if present&1 != 0 {
		w.list = connectionList(h.PeekAll("Connection"), w.list)
	}
	w.setTokens()
	b := append(w.head[:0], h.Protocol()...)
	code := h.StatusCode() // three digits, as the parser took them
	b = append(b, ' ', byte('0'+code/100%10), byte('0'+code/10%10), byte('0'+code%10))
	if msg := h.StatusMessage(); len(msg) > 0 {
		b = append(append(b, ' '), msg...)
	}
	b = append(b, "\r\n"...)
	for k, v := range h.All() {
		if hopBit(k) == 0 && !w.named(k) {
			b = append(append(append(append(b, k...), ": "...), v...), "\r\n"...)
		}
	}
	w.head = append(b, "\r\n"...)
	t := &w.parsed
	t.Reset()
	t.SetNoDefaultContentType(true) // as every reader of a response here
	if err := t.Read(w.reader()); err != nil {
		// fasthttp refused a head written from its own fields: the hop
		// fields go all the same, if out of order.
		frontDeleteHop(h, present)
		return
	}
	t.CopyTo(h)
}

// hopStrip is frontStripHopInOrder's work: the head it writes, the
// parser it reads it with, and the names Connection lists.
type hopStrip struct {
	head   []byte
	rd     bytes.Reader
	br     *bufio.Reader
	parsed fasthttp.ResponseHeader
	// list is the Connection fields' values (connectionList), and few
	// its names; many holds them in lower case when there are more than
	// maxFewTokens, and lower is where a field's name is lowered.
	list, lower []byte
	few         [][]byte
	many        map[string]struct{}
}

var hopStrips = sync.Pool{New: func() any { return new(hopStrip) }}

// maxFewTokens is how many names of a Connection field are compared one
// by one with each field's; past it they go into a set, so that a
// backend's 10,000 names against its 3,000 fields cost no more than
// reading them.
const maxFewTokens = 8

// setTokens cuts w.list into the names it lists.
func (w *hopStrip) setTokens() {
	w.few, w.many = w.few[:0], nil
	for list := w.list; len(list) > 0; {
		var tok []byte
		if tok, list = nextToken(list); len(tok) > 0 {
			w.few = append(w.few, tok)
		}
	}
	if len(w.few) > maxFewTokens {
		w.many = make(map[string]struct{}, len(w.few))
		for _, tok := range w.few {
			w.many[string(w.lowered(tok))] = struct{}{}
		}
	}
}

// named reports whether Connection lists the field name k, in any case.
func (w *hopStrip) named(k []byte) bool {
	if w.many != nil {
		_, ok := w.many[string(w.lowered(k))]
		return ok
	}
	for _, tok := range w.few {
		if bytes.EqualFold(tok, k) {
			return true
		}
	}
	return false
}

// lowered is k in lower case, in w.lower.
func (w *hopStrip) lowered(k []byte) []byte {
	w.lower = append(w.lower[:0], k...)
	for i, c := range w.lower {
		if 'A' <= c && c <= 'Z' {
			w.lower[i] = c + 'a' - 'A'
		}
	}
	return w.lower
}

// reader returns a reader of w.head whose buffer holds it whole, as
// fasthttp's parser needs.
func (w *hopStrip) reader() *bufio.Reader {
	w.rd.Reset(w.head)
	if w.br == nil {
		w.br = bufio.NewReaderSize(&w.rd, 4<<10)
	}
	if w.br.Size() < len(w.head) {
		return bufio.NewReaderSize(&w.rd, len(w.head))
	}
	w.br.Reset(&w.rd)
	return w.br
}

// put gives w back to hopStrips, unless a long head made it grow.
func (w *hopStrip) put() {
	w.many = nil
	if cap(w.head) > maxPooledHead || cap(w.list) > maxPooledHead || cap(w.few) > 256 {
		return
	}
	hopStrips.Put(w)
}

// http2Settings is a request's HTTP2-Settings field, which goes with an
// h2c upgrade and is removed with it.
const http2Settings = "Http2-Settings"

// hopBit is the bit of field k among frontHopHeaders, 0 for any other
// field. frontStripHop looks at a response's fields once and deletes
// only those present: each Del scans every field (BenchmarkFrontStripHop:
// 350 to 210 ns a response, and no allocation left).
func hopBit(k []byte) uint16 {
	for i, name := range frontHopHeaders {
		if len(k) == len(name) && strings.EqualFold(string(k), name) {
			return 1 << i
		}
	}
	return 0
}

// connectionList copies the values of the Connection fields into buf,
// each followed by a comma: deleting fields moves the bytes PeekAll
// points at.
func connectionList(values [][]byte, buf []byte) []byte {
	for _, v := range values {
		buf = append(append(buf, v...), ',')
	}
	return buf
}

// nextToken cuts the first comma-separated token off list, trimmed.
func nextToken(list []byte) (tok, rest []byte) {
	tok, rest, _ = bytes.Cut(list, []byte(","))
	return bytes.Trim(tok, " \t"), rest
}

// frontBody is a response body as the server writes it to the client: on
// close, its connection goes back to the pool when it was read to its
// end, else it is closed.
type frontBody struct {
	r    io.Reader
	c    *directConn
	stop func() bool
	keep bool
	eof  bool
	// released: c went back to the pool as the body's end was read,
	// before its last bytes reach the client (who may send its next
	// request as soon as they do).
	released bool
	// remain is what is left of a body of known length, -1 otherwise.
	remain int64
	// trailer, for a chunked body, reads the trailer section past the
	// last chunk, which ends the message; trailers holds what it read.
	trailer  *bufio.Reader
	trailers textproto.MIMEHeader
	// to, when set, is the response fasthttp's server sends this body
	// in, chunked: the trailers are added to it as they are read, and
	// it writes them after the last chunk.
	to *fasthttp.ResponseHeader
}

var frontBodies = sync.Pool{New: func() any { return new(frontBody) }}

func newFrontBody(r io.Reader, c *directConn, stop func() bool, keep bool, remain int64, trailer *bufio.Reader) *frontBody {
	b := frontBodies.Get().(*frontBody)
	*b = frontBody{r: r, c: c, stop: stop, keep: keep, remain: remain, trailer: trailer}
	return b
}

func (b *frontBody) Read(p []byte) (int, error) {
	if b.released {
		return 0, io.EOF // the connection serves another request now
	}
	n, err := b.read(p)
	if b.eof && b.keep && !b.released && b.c != nil {
		b.released = true
		b.c.release(b.stop, true)
	}
	return n, err
}

func (b *frontBody) read(p []byte) (int, error) {
	if b.r == nil || b.remain == 0 {
		b.eof = b.r != nil
		return 0, io.EOF
	}
	if b.remain > 0 && int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.r.Read(p)
	if b.remain > 0 {
		b.remain -= int64(n)
		if b.remain == 0 && err == nil {
			b.eof = true
			return n, io.EOF
		}
	}
	if errors.Is(err, io.EOF) {
		if b.remain > 0 {
			return n, io.ErrUnexpectedEOF
		}
		if b.trailer != nil {
			// The connection serves the next request once they are read.
			// HTTP/2 streams pass them on, and so does fasthttp's server
			// with to.
			trailers, terr := readTrailers(b.trailer)
			if terr != nil {
				b.keep = false // and the rest unread
			}
			b.trailers = trailers
			if b.to != nil {
				addTrailers(b.to, trailers)
			}
		}
		b.eof = true
	}
	return n, err
}

// errTrailersTooLarge is a trailer section past h1.MaxTrailer.
var errTrailersTooLarge = errors.New("trailer section too large")

// readTrailers reads the trailer section of a chunked body from br, its
// empty line included, within h1.MaxTrailer bytes: the relay loops'
// limit, past which a backend's endless section would be held whole.
func readTrailers(br *bufio.Reader) (textproto.MIMEHeader, error) {
	var stack [512]byte
	raw := stack[:0]
	for start := 0; ; {
		part, err := br.ReadSlice('\n')
		if len(raw)+len(part) > h1.MaxTrailer {
			return nil, fmt.Errorf("%w: more than %d bytes", errTrailersTooLarge, h1.MaxTrailer)
		}
		raw = append(raw, part...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue // a line longer than br's buffer
		case err != nil:
			return nil, fmt.Errorf("reading the trailer section: %w", err)
		}
		if line := raw[start:]; len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			break
		}
		start = len(raw)
	}
	if len(raw) <= 2 {
		return nil, nil // none: the common case
	}
	return textproto.NewReader(bufio.NewReaderSize(bytes.NewReader(raw), len(raw))).ReadMIMEHeader()
}

// addTrailers adds the trailer fields tr to h; a field that may not be a
// trailer (RFC 9110 §6.5.1: framing, routing, authentication...) is
// left out, as fasthttp refuses to send it.
func addTrailers(h *fasthttp.ResponseHeader, tr textproto.MIMEHeader) {
	for k, vs := range tr {
		if h.AddTrailer(k) != nil {
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}

// CloseWithError releases the connection (the server calls it once the
// body was written, or failed to be).
func (b *frontBody) CloseWithError(err error) error {
	if b.c == nil {
		return nil
	}
	if !b.released {
		b.c.release(b.stop, b.keep && b.eof && err == nil)
	}
	*b = frontBody{}
	frontBodies.Put(b)
	return nil
}

// rawConnOf is the socket under c (a TCP connection), nil when there is
// none to watch.
func rawConnOf(c net.Conn) syscall.RawConn {
	sys, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sys.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// open reports whether the backend has not closed c while it was idle:
// a request that cannot be sent twice is sent on it only then. A peek
// that would block says open; end of stream, an error or unasked bytes
// say it is not.
func (c *directConn) open() bool {
	if c.raw == nil {
		return true
	}
	alive := true
	var buf [1]byte
	_ = c.raw.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		alive = n < 0 && (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK))
		return true
	})
	return alive
}

// frontFail answers a request the backend did not, and returns its
// outcome.
func (h *httpConn) frontFail(ctx *fasthttp.RequestCtx, rc *routeConfig, err error) string {
	status, outcome := h.failure(rc, err)
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	return outcome
}

// forwardUpgrade sends a WebSocket handshake on a new backend connection.
// A 101 hands the client connection over (fasthttp's Hijack) to a relay
// of both streams; any other answer is passed on and the backend
// connection closed after it.
func (h *httpConn) forwardUpgrade(ctx *fasthttp.RequestCtx, fc *frontConn, rc *routeConfig, pool *directPool, endpoint string, req frontRequest) string {
	nc, err := pool.dial(fc.ctx, endpoint)
	if err != nil {
		return h.frontFail(ctx, rc, err)
	}
	// Counted apart from the pool: it never goes back to it.
	dc := newDirectConn(nc, pool, endpoint)
	stop := context.AfterFunc(fc.ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
	rh := &ctx.Response.Header
	if err := dc.frontExchange(req, rh, fc, true, true); err != nil {
		stop()
		_ = nc.Close()
		ctx.Response.Reset()
		return h.frontFail(ctx, rc, err)
	}
	if rh.StatusCode() != fasthttp.StatusSwitchingProtocols {
		done := func() bool { stop(); return false } // never pooled
		h.frontRespondClosing(ctx, dc, done)
		return RequestProxied
	}
	stop()
	_ = nc.SetDeadline(time.Time{})
	head := append([]byte(nil), rh.Header()...)
	ctx.Response.Reset()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		defer close(fc.relayed)
		defer func() { _ = nc.Close() }()
		if _, err := client.Write(head); err != nil {
			return
		}
		relay(client, nc, dc.br)
	})
	return RequestProxied
}

// frontRespondClosing passes on a response whose connection is not
// pooled, closing it after the body.
func (h *httpConn) frontRespondClosing(ctx *fasthttp.RequestCtx, dc *directConn, stop func() bool) {
	// release closes a connection not kept; closing one the pool never
	// counted would uncount another, so it is closed here instead.
	res := &ctx.Response
	cl := res.Header.ContentLength()
	frontStripHop(&res.Header)
	closer := &closeOnEOF{c: dc.Conn, stop: stop}
	switch {
	case cl == 0 || res.Header.StatusCode() == fasthttp.StatusNoContent || res.Header.StatusCode() == fasthttp.StatusNotModified:
		_ = closer.CloseWithError(nil)
	case cl > 0:
		closer.r = io.LimitReader(dc.br, int64(cl))
		res.SetBodyStream(closer, cl)
	case cl == -1:
		closer.r = httputil.NewChunkedReader(dc.br)
		closer.trailer, closer.to = dc.br, &res.Header
		res.SetBodyStream(closer, -1)
	default:
		closer.r = dc.br
		res.SetBodyStream(closer, -1)
	}
}

// closeOnEOF is a body whose connection is closed once written.
type closeOnEOF struct {
	r    io.Reader
	c    net.Conn
	stop func() bool
	// trailer, for a chunked body, reads the trailer section past the
	// last chunk into to, the response fasthttp's server is writing, as
	// frontBody does.
	trailer *bufio.Reader
	to      *fasthttp.ResponseHeader
}

func (b *closeOnEOF) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) && b.trailer != nil {
		if trailers, terr := readTrailers(b.trailer); terr == nil {
			addTrailers(b.to, trailers)
		}
		b.trailer = nil
	}
	return n, err
}

// CloseWithError closes the connection.
func (b *closeOnEOF) CloseWithError(error) error {
	b.stop()
	return b.c.Close()
}

// relay carries bytes both ways between an upgraded client connection
// and its backend connection (backendReader holds what was read past the
// 101) until either side ends; then both are closed.
func relay(client, backend net.Conn, backendReader io.Reader) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(backend, client)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, backendReader)
		done <- struct{}{}
	}()
	<-done
	_ = client.Close()
	_ = backend.Close()
	<-done
}
