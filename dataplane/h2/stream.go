package h2

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response. Its fields are guarded by the
// connection's mu.
//
// A stream is its request's context too (ctx.go): a context.WithCancel,
// the copy of the request that carries it and the context.AfterFunc that
// cuts the backend of a reset stream cost eight allocations per request,
// a fifth of what http mode allocated per HTTP/2 request.
type stream struct {
	sc   *serverConn
	id   uint32
	cond sync.Cond // the handler waits for body bytes or send window

	// The context's state: cancelled once the handler need not go on;
	// done made by the first Done; afters waiting for the cancel, in
	// afterBuf while they fit, numbered from nextAfter.
	cancelled bool
	done      chan struct{}
	afters    []afterFunc
	afterBuf  [1]afterFunc
	nextAfter uint64

	// err is why the stream is over for its handler (reset, connection
	// gone): its writes and body reads return it.
	err error
	// remoteDone: the client ended its side (END_STREAM); localDone: we
	// ended ours.
	remoteDone, localDone bool
	// removed: no longer in sc.streams.
	removed bool

	sendWindow int64
	// waitsForWindow: a write of the response waits for the client to
	// open the stream's or the connection's window.
	waitsForWindow bool
	// recvWindow is what the client may still send on the stream,
	// recvUnacked what it sent that was consumed and not yet given back.
	recvWindow, recvUnacked int64
	// declared is the request's Content-Length (-1: none), received what
	// came of the body.
	declared, received int64
	body               *body
	// w is the handler's ResponseWriter, made with the stream.
	w responseWriter
	// async: Server.Async took the stream, for owner; resume: a write of
	// the owner's waits for room (Owner.Resume).
	async  bool
	owner  Owner
	resume bool
}

// body is a request body in flight: the bytes the client sent that the
// handler has not read, at most the stream's window.
type body struct {
	st  *stream
	buf []byte
	eof bool
	// closed: the handler stopped reading; what arrives is given back at
	// once.
	closed  bool
	trailer http.Header
	req     *http.Request
}

// openStreamLocked opens st (its sc and id set) for a request that
// declares a body of length bytes (-1: none declared), or has none
// (ended). A body's req is the caller's to set.
func (sc *serverConn) openStreamLocked(st *stream, length int64, ended bool) {
	st.remoteDone = ended
	st.sendWindow = sc.initialSend
	st.recvWindow = int64(sc.srv.StreamWindow)
	st.declared = length
	if ended {
		st.declared = 0
	}
	st.cond.L = &sc.mu
	if !ended {
		st.body = &body{st: st}
	}
	if sc.baseDone {
		st.cancelLocked()
	}
	if len(sc.streams) == 0 && sc.idle != nil {
		sc.idle.Stop()
	}
	sc.streams[st.id] = st
}

// removeLocked forgets st: it no longer counts as open.
func (sc *serverConn) removeLocked(st *stream) {
	if st.removed {
		return
	}
	st.removed = true
	st.dropBodyLocked()
	delete(sc.streams, st.id)
	if len(sc.streams) == 0 {
		if sc.goAway && !sc.closing {
			sc.closing = true
			sc.wakeWriter()
		}
		sc.idleLaterLocked()
	}
}

// idleLaterLocked starts the idle timeout once nothing is in flight.
func (sc *serverConn) idleLaterLocked() {
	if len(sc.streams) == 0 && sc.running == 0 && sc.idle != nil && !sc.unwatched {
		sc.idle.Reset(sc.srv.IdleTimeout)
		putOutput(sc.spare)
		sc.spare = nil
		if len(sc.out.b) == 0 {
			putOutput(sc.out.b)
			sc.out.b = nil
		}
	}
}

// failLocked ends st for its handler with err: its context is cancelled,
// and it stops waiting for body bytes or window.
func (st *stream) failLocked(err error) {
	if st.err == nil {
		st.err = err
	}
	st.cancelLocked()
	st.dropBodyLocked()
	st.roomLocked()
	st.sc.space.Broadcast() // its handler may wait for the connection
}

// dropBodyLocked gives what nobody will read of st's body back to the
// connection's window: a stream that ends must not keep its credit.
func (st *stream) dropBodyLocked() {
	if st.body == nil {
		return
	}
	if n := int64(len(st.body.buf)); n > 0 {
		st.sc.consumedLocked(n)
	}
	st.body.buf, st.body.closed = nil, true
}

// endRemoteLocked records the end of the client's side.
func (sc *serverConn) endRemoteLocked(st *stream) {
	st.remoteDone = true
	if st.body != nil {
		st.body.eof = true
		if st.body.trailer != nil {
			st.body.req.Trailer = st.body.trailer
		}
	}
	st.cond.Broadcast()
	if st.localDone {
		sc.removeLocked(st)
	}
}

// endLocalLocked records the end of our side. A client still sending a
// body it no longer needs to is told to stop (RFC 9113 §8.1).
func (sc *serverConn) endLocalLocked(st *stream) {
	st.localDone = true
	if st.remoteDone {
		sc.removeLocked(st)
		return
	}
	if st.err == nil && !sc.closed {
		_ = sc.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
	}
	st.failLocked(errors.New("http2: response complete"))
	sc.removeLocked(st)
}

// Read reads the request body as the client sends it, and gives what it
// read back to the client's windows.
func (b *body) Read(p []byte) (int, error) {
	st := b.st
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for len(b.buf) == 0 && !b.eof && st.err == nil {
		st.cond.Wait()
	}
	if len(b.buf) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		return 0, st.err
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil // the next DATA frame starts a new array
	}
	st.giveBackLocked(int64(n))
	return n, nil
}

// giveBackLocked returns n bytes the client sent on st to its windows:
// the connection's, and the stream's while the client may still send on
// it, each with a WINDOW_UPDATE once a quarter of the window is owed.
func (st *stream) giveBackLocked(n int64) {
	sc := st.sc
	sc.consumedLocked(n)
	if st.remoteDone || st.err != nil || sc.closed {
		return
	}
	st.recvUnacked += n
	if st.recvUnacked >= int64(sc.srv.StreamWindow)/4 {
		_ = sc.wfr.WriteWindowUpdate(st.id, uint32(st.recvUnacked)) //nolint:gosec // at most the window
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
		sc.wakeWriter()
	}
}

// Close stops reading: what the client sends of the body from now on is
// discarded.
func (b *body) Close() error {
	st := b.st
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	st.dropBodyLocked()
	return nil
}

// runHandler serves st's request and ends the stream. A panic resets
// the stream and is logged, unless it is http.ErrAbortHandler (a proxy
// that lost its backend mid-response).
func (sc *serverConn) runHandler(st *stream, req *http.Request) {
	w := &st.w
	defer func() {
		p := recover()
		sc.mu.Lock()
		if p != nil {
			if p != http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				sc.logf("http2: panic serving %s: %v\n%s", sc.remoteAddr, p, debug.Stack())
			}
			if !st.localDone {
				sc.resetLocked(st.id, http2.ErrCodeInternal)
				st.localDone = true
			}
		} else {
			w.finishLocked(true)
		}
		sc.streamDoneLocked(st)
	}()
	sc.srv.Handler.ServeHTTP(w, req)
}

// responseWriter is a stream's http.ResponseWriter. The response head is
// sent with the first byte of the body, or with the end of the stream
// when there is none (one HEADERS frame with END_STREAM).
type responseWriter struct {
	st *stream
	// head: the request's method is HEAD, whose response has no body.
	head   bool
	header http.Header
	// fields, when set (Stream.WriteFields), are the final head's fields
	// in place of header's.
	fields []hpack.HeaderField
	// status is the final status, 0 until WriteHeader; headSent once its
	// HEADERS frame is written.
	status   int
	headSent bool
	// length is the declared Content-Length (-1: none), written what went
	// out of the body.
	length, written int64
	trailers        []string
}

// Header is made on first use: a stream answered with WriteFields (the
// relay loops') never needs one.
func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// WriteHeader records the status; an informational one (1xx but 101,
// which HTTP/2 has not) is sent at once.
func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.status != 0 {
		return
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			return
		}
		sc := w.st.sc
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if w.st.err == nil && !sc.closed {
			sc.writeHeadLocked(w.st.id, code, w.header, false)
			sc.wakeWriter()
		}
		return
	}
	w.status = code
	w.length = -1
	if cl := w.header.Get("Content-Length"); cl != "" {
		if w.length = parseLength(cl); w.length < 0 {
			w.header.Del("Content-Length")
		}
	}
	for _, v := range w.header["Trailer"] {
		w.declareTrailers(v)
	}
}

// parseLength is a Content-Length's value, -1 when it is not a length.
func parseLength(v string) int64 {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return n
	}
	return -1
}

// declareTrailers records the names a Trailer field's value v declares.
func (w *responseWriter) declareTrailers(v string) {
	for _, k := range strings.Split(v, ",") {
		if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
			w.trailers = append(w.trailers, k)
		}
	}
}

// bodyAllowed: HEAD and 204 and 304 responses have no body.
func (w *responseWriter) bodyAllowed() bool {
	return !w.head && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

// Write sends p as DATA frames, within the stream's and the connection's
// send windows and the client's frame size; it waits for window when
// there is none.
func (w *responseWriter) Write(p []byte) (int, error) {
	if send, err := w.startBody(len(p)); !send {
		if err != nil {
			return 0, err
		}
		return len(p), nil // no body: dropped
	}
	st, sc := w.st, w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if err := w.sendHeadLocked(); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		for st.err == nil && !sc.closed &&
			(st.windowShutLocked() || len(sc.out.b) >= maxPendingData) {
			if st.windowShutLocked() {
				sc.waitForWindowLocked(st)
			}
			if st.sendWindow <= 0 {
				st.cond.Wait()
			} else {
				sc.space.Wait()
			}
		}
		st.waitsForWindow = false
		if st.err != nil {
			return done, st.err
		}
		if sc.closed {
			return done, errConnClosed
		}
		done += w.writeDataLocked(p[done:])
	}
	return done, nil
}

// startBody begins a write of n body bytes: the status defaults to 200,
// and send is false when the bytes are not to be sent, with the error
// for bytes past the declared length, or none for a response that has
// no body (whose bytes are dropped).
func (w *responseWriter) startBody(n int) (send bool, err error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return false, nil
	}
	if w.length >= 0 && w.written+int64(n) > w.length {
		return false, http.ErrContentLength
	}
	return true, nil
}

// writeDataLocked writes one DATA frame of p's first bytes, as many as
// the stream's and the connection's windows and the client's frame size
// let it (at least one: the caller saw both windows open), and returns
// how many.
func (w *responseWriter) writeDataLocked(p []byte) int {
	st, sc := w.st, w.st.sc
	n := min(int64(len(p)), st.sendWindow, sc.sendWindow, int64(sc.peerFrame))
	w.written += n
	// The last byte of a declared length ends the stream, unless
	// trailers follow.
	end := w.length >= 0 && w.written == w.length && len(w.trailers) == 0 && !w.hasPrefixTrailers()
	_ = sc.wfr.WriteData(st.id, end, p[:n])
	st.sendWindow -= n
	sc.sendWindow -= n
	if end {
		sc.endLocalLocked(st)
	}
	sc.wakeWriter()
	return int(n)
}

// Flush sends the head if it is not yet sent; body bytes are handed to
// the connection's writer as they are written.
func (w *responseWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	sc := w.st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if w.sendHeadLocked() == nil {
		sc.wakeWriter()
	}
}

// waitRoomLocked waits until the connection's output has room for more
// than control frames, and says why the stream cannot write when it
// cannot.
func (st *stream) waitRoomLocked() error {
	sc := st.sc
	for st.err == nil && !sc.closed && len(sc.out.b) >= maxPendingData {
		sc.space.Wait()
	}
	if st.err != nil {
		return st.err
	}
	if sc.closed {
		return errConnClosed
	}
	return nil
}

// sendHeadLocked writes the response head once, without END_STREAM.
func (w *responseWriter) sendHeadLocked() error {
	st := w.st
	if err := st.waitRoomLocked(); err != nil {
		return err
	}
	if !w.headSent && !st.localDone {
		w.headSent = true
		w.writeHeadLocked(false)
	}
	return nil
}

// finishLocked ends the stream after the handler returned: the head with
// END_STREAM if nothing was sent, else trailers or an empty DATA frame
// with END_STREAM. wait: for room in the connection's output first.
func (w *responseWriter) finishLocked(wait bool) {
	st, sc := w.st, w.st.sc
	if st.localDone || st.err != nil || sc.closed {
		if !st.localDone {
			st.localDone = true
			sc.removeLocked(st)
		}
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if wait && st.waitRoomLocked() != nil {
		if !st.localDone {
			st.localDone = true
			sc.removeLocked(st)
		}
		return
	}
	trailer := w.trailerFields()
	switch {
	case !w.headSent && len(trailer) == 0:
		w.headSent = true
		w.writeHeadLocked(true)
	case len(trailer) > 0:
		if !w.headSent {
			w.headSent = true
			w.writeHeadLocked(false)
		}
		sc.writeFieldsLocked(st.id, trailer, true)
	default:
		_ = sc.wfr.WriteData(st.id, true, nil)
	}
	sc.endLocalLocked(st)
	sc.wakeWriter()
}

func (w *responseWriter) hasPrefixTrailers() bool {
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// trailerFields are the trailers the handler set: those it declared in
// Trailer before the head, and those it named with http.TrailerPrefix.
func (w *responseWriter) trailerFields() [][2]string {
	var out [][2]string
	add := func(k string, vs []string) {
		if !httpguts.ValidTrailerHeader(k) {
			return
		}
		for _, v := range vs {
			out = append(out, [2]string{strings.ToLower(k), v})
		}
	}
	for _, k := range w.trailers {
		add(k, w.header[k])
	}
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(http.CanonicalHeaderKey(name), vs)
		}
	}
	return out
}

// writeStatusLocked answers a stream with a status and no body.
func (sc *serverConn) writeStatusLocked(id uint32, status int) {
	sc.writeHeadLocked(id, status, nil, true)
}

// statusValue is the :status value of code: the common ones without
// an allocation (HPACK's static table holds seven of them).
func statusValue(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 206:
		return "206"
	case 301:
		return "301"
	case 302:
		return "302"
	case 304:
		return "304"
	case 400:
		return "400"
	case 404:
		return "404"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(code)
}

// writeHeadLocked encodes and writes a response head.
func (sc *serverConn) writeHeadLocked(id uint32, status int, h http.Header, end bool) {
	sc.hbuf.Reset()
	_ = sc.henc.WriteField(hpackField(":status", statusValue(status)))
	for k, vs := range h {
		if !writableField(k) {
			continue
		}
		name := lowerKey(k)
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			_ = sc.henc.WriteField(hpackField(name, v))
		}
	}
	sc.writeBlockLocked(id, end)
}

// writeHeadLocked writes the final head: from fields when WriteFields
// gave them, else from the header.
func (w *responseWriter) writeHeadLocked(end bool) {
	if w.fields == nil {
		w.st.sc.writeHeadLocked(w.st.id, w.status, w.header, end)
		return
	}
	sc := w.st.sc
	sc.hbuf.Reset()
	_ = sc.henc.WriteField(hpackField(":status", statusValue(w.status)))
	for _, f := range w.fields {
		if !writableName(f.Name) || !httpguts.ValidHeaderFieldValue(f.Value) ||
			(f.Name == "content-length" && (w.length < 0 || parseLength(f.Value) != w.length)) {
			continue
		}
		_ = sc.henc.WriteField(f)
	}
	sc.writeBlockLocked(w.st.id, end)
}

// writeFieldsLocked encodes and writes a trailer section.
func (sc *serverConn) writeFieldsLocked(id uint32, fields [][2]string, end bool) {
	sc.hbuf.Reset()
	for _, f := range fields {
		_ = sc.henc.WriteField(hpackField(f[0], f[1]))
	}
	sc.writeBlockLocked(id, end)
}

// writeBlockLocked writes the header block in hbuf as HEADERS and as many
// CONTINUATION frames as the client's frame size asks for.
func (sc *serverConn) writeBlockLocked(id uint32, end bool) {
	block := sc.hbuf.Bytes()
	frag := block[:min(len(block), int(sc.peerFrame))]
	block = block[len(frag):]
	_ = sc.wfr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0,
	})
	for len(block) > 0 {
		frag = block[:min(len(block), int(sc.peerFrame))]
		block = block[len(frag):]
		_ = sc.wfr.WriteContinuation(id, len(block) == 0, frag)
	}
}

// writableField: the fields of an HTTP/1.1 hop have no place in HTTP/2
// (RFC 9113 §8.2.2); neither have the trailer names of net/http's
// convention.
func writableField(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade":
		return false
	}
	return !strings.HasPrefix(k, http.TrailerPrefix) && httpguts.ValidHeaderFieldName(k)
}

// writableName is writableField for a name in HTTP/2's form: lower
// case, which the client would refuse any other way (RFC 9113 §8.2.1).
func writableName(name string) bool {
	switch name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return false
	}
	for i := range len(name) {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return httpguts.ValidHeaderFieldName(name)
}

func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}

// lowerKey is the HTTP/2 name of a canonical header key: lower case, and
// without allocating for the fields responses usually carry.
func lowerKey(k string) string {
	if v, ok := commonLower[k]; ok {
		return v
	}
	return strings.ToLower(k)
}

// commonLower maps the canonical keys of common response fields to their
// HTTP/2 names. It is never modified.
var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept-Ranges", "Access-Control-Allow-Origin", "Age", "Allow", "Alt-Svc",
		"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Location", "Content-Range", "Content-Security-Policy",
		"Content-Type", "Date", "Etag", "Expires", "Last-Modified", "Link", "Location",
		"Referrer-Policy", "Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Trailer", "Vary", "Via", "Www-Authenticate", "X-Content-Type-Options", "X-Frame-Options",
	} {
		m[k] = strings.ToLower(k)
	}
	return m
}()
