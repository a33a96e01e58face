package dataplane

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	"github.com/portmux/portmux/dataplane/h2"
)

// The backend side of an HTTP/2 stream without a body (a GET, HEAD,
// OPTIONS or TRACE that directable accepts), which nearly all HTTP/2
// traffic is: the request head is written straight from the stream's
// request to a connection of the route's direct pool, the response head
// read with fasthttp's parser (as serveFront's are, within the same
// limit) and handed to the stream, and the body streams to the client
// as it comes. httputil.ReverseProxy, which every other stream goes
// through, clones the request and its header map, reads the response
// into another map with net/http's parser and copies it into the
// ResponseWriter's: about a quarter of http mode's CPU per HTTP/2 request
// before this path (`make bench-http`, h2c).

// responseHeads are the parsers of the heads of bodiless streams'
// responses: the ResponseWriter copies what it keeps.
var responseHeads = sync.Pool{New: func() any { return new(fasthttp.ResponseHeader) }}

// proxyBodiless sends r, which directable accepted, to endpoint over
// rc's direct pool and its response back; it returns the request's
// outcome. A pooled connection that fails before the response head (the
// backend closed it while idle) is replaced by a new one and the request
// sent again, as http.Transport does for requests a client may retry.
func (h *httpConn) proxyBodiless(w http.ResponseWriter, r *http.Request, rc *routeConfig, endpoint string) string {
	ctx := r.Context()
	rh := responseHeads.Get().(*fasthttp.ResponseHeader)
	defer responseHeads.Put(rh)
	// A panic mid-exchange (the handler's recover resets the stream)
	// closes the connection in use, giving its slot back.
	var inUse *directConn
	defer func() {
		if inUse != nil {
			inUse.close()
		}
	}()
	for {
		dc, reused, err := rc.transport.direct.get(ctx, endpoint)
		if err != nil {
			return h.fail(w, rc, err)
		}
		inUse = dc
		// A stream the client reset unblocks the connection, which is
		// closed then.
		stop := afterFunc(ctx, dc.cut)
		if err = h.exchangeBodiless(dc, r, w, rh); err == nil {
			inUse = nil
			h.respondBodiless(w, r, dc, stop, rh)
			return RequestProxied
		}
		stop()
		dc.close()
		inUse = nil
		if cerr := ctx.Err(); cerr != nil {
			return h.fail(w, rc, fmt.Errorf("%w: %w", cerr, err))
		}
		if !reused {
			return h.fail(w, rc, err)
		}
	}
}

// afterFunc is context.AfterFunc(ctx, f), without its allocations when
// ctx schedules the call itself (an h2 stream does: the method that
// context.AfterFunc would call through a context of its own).
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

// exchangeBodiless writes r's head on dc and reads the response head into
// rh. Informational responses are passed on to the client as they come,
// but 100 Continue (the request has no body to wait for it) and 101 (an
// error: only a WebSocket handshake may switch protocols, and it never
// comes here).
func (h *httpConn) exchangeBodiless(dc *directConn, r *http.Request, w http.ResponseWriter, rh *fasthttp.ResponseHeader) error {
	bp := requestHeads.Get().(*[]byte)
	head, err := h.appendBodilessHead((*bp)[:0], r)
	if err == nil {
		err = dc.send(head)
	}
	putRequestHead(bp, head)
	if err != nil {
		return fmt.Errorf("writing the request to %s: %w", dc.addr, err)
	}
	return dc.readFinalHead(rh, false, func(code int) error {
		hd := w.Header()
		copyResponseFields(hd, rh, &dc.values)
		w.WriteHeader(code)
		clear(hd) // an informational head's fields are its own
		return nil
	})
}

// respondBodiless passes the response whose head is rh on to the client
// and streams its body; dc goes back to the pool once the body was read
// to its end, or is closed. The backend's trailers follow the body. A
// body the backend cut short resets the stream (http.ErrAbortHandler),
// as the reverse proxy does, so that the client does not take it whole.
func (h *httpConn) respondBodiless(w http.ResponseWriter, r *http.Request, dc *directConn, stop func() bool, rh *fasthttp.ResponseHeader) {
	code := rh.StatusCode()
	cl := rh.ContentLength()
	keep := !rh.ConnectionClose()
	frontStripHop(rh)
	copyResponseFields(w.Header(), rh, &dc.values)
	bodiless := r.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || cl == 0
	if bodiless {
		dc.release(stop, keep)
	}
	// Nothing may panic between the body's making and its closing: the
	// connection would never be given back.
	w.WriteHeader(code)
	if bodiless {
		return
	}
	body := dc.responseBody(stop, keep, cl)
	bp := h.s.copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(w, body, *bp)
	h.s.copyBufs.Put(bp)
	trailers := body.trailers
	_ = body.CloseWithError(err)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	for k, vs := range trailers {
		w.Header()[http.TrailerPrefix+k] = vs
	}
}

// copyResponseFields adds the fields of rh to hd. fasthttp gives them
// with canonical names; those of common fields are the package's
// constants, not a string allocated per response, and their values are
// taken from last, the values of the responses before on the same
// backend connection, when they are the same (Server, Content-Type,
// Accept-Ranges nearly always are; Date for a second), else stored
// there; nil keeps none. The values of names hd lacks share one backing
// array, as net/textproto's reader does. Each value is a string of its
// own, never a slice of a larger one: the HPACK encoder keeps the values
// it indexes, and a slice would keep the whole head.
func copyResponseFields(hd http.Header, rh *fasthttp.ResponseHeader, last *responseValues) {
	var vals []string
	for k, v := range rh.All() {
		v = trimOWS(v)
		key, i, common := commonResponseKey(k)
		var val string
		switch {
		case !common:
			key, val = string(k), string(v)
		case last == nil:
			val = string(v)
		default:
			val = last.value(i, v)
		}
		if vs, ok := hd[key]; ok {
			hd[key] = append(vs, val)
			continue
		}
		if len(vals) == 0 {
			vals = make([]string, rh.Len())
		}
		vals[0] = val
		hd[key] = vals[:1:1]
		vals = vals[1:]
	}
}

// appendEndToEndFields appends the fields of rh, as frontStripHop would
// leave them, to dst in HTTP/2's form, for h2.Stream.WriteFields: in
// fasthttp's order (the fields it keeps apart first, then the
// backend's), names in lower case (the common ones commonResponseNames'
// constants), values taken from last as copyResponseFields takes them
// (nil keeps none). rh is not edited: the hop-by-hop fields and those
// its Connection names are skipped as they come. A loop-served stream
// writes its head once and drops rh, and the strip, which deletes
// fields or parses the head anew when a name repeats, was most of the
// cost of passing a response on (nginx's Connection: keep-alive is
// enough to make it run).
func appendEndToEndFields(dst []hpack.HeaderField, rh *fasthttp.ResponseHeader, last *responseValues) []hpack.HeaderField {
	var w *hopStrip
	if conn := rh.PeekAll(fasthttp.HeaderConnection); len(conn) > 0 {
		w = hopStrips.Get().(*hopStrip)
		defer w.put()
		w.list = connectionList(conn, w.list[:0])
		w.setTokens()
	}
	for k, v := range rh.All() {
		if hopBit(k) != 0 {
			continue
		}
		v = trimOWS(v)
		_, i, common := commonResponseKey(k)
		if w != nil && w.named(k) {
			if i != commonContentLength {
				continue
			}
			// keepLength gives a stripped response its length back,
			// written anew.
			var num [20]byte
			v = strconv.AppendInt(num[:0], int64(rh.ContentLength()), 10)
		}
		switch {
		case common && last != nil:
			dst = append(dst, hpack.HeaderField{Name: commonResponseNames[i], Value: last.value(i, v)})
		case common:
			dst = append(dst, hpack.HeaderField{Name: commonResponseNames[i], Value: string(v)})
		default:
			dst = append(dst, hpack.HeaderField{Name: lowerName(k), Value: string(v)})
		}
	}
	return dst
}

// trimOWS is a field value without the whitespace around it, which is
// not part of it (RFC 9110 §5.5) and which HTTP/2 forbids at either end
// (RFC 9113 §8.2.1). fasthttp trims a value on its own line but keeps
// the space an obsolete line folding leaves ("8:0\r\n \r\n" gives "0 ").
func trimOWS(v []byte) []byte {
	return bytes.Trim(v, " \t")
}

// lowerName is k in lower case, in one allocation.
func lowerName(k []byte) string {
	var b strings.Builder
	b.Grow(len(k))
	for _, c := range k {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// responseValues holds the last value of each common field
// (commonResponseKey) that a backend connection's responses carried.
// A backend sends the same values again and again, and each one reused
// is an allocation less per response (seven of nginx's eight fields).
type responseValues [commonResponseFields]string

// value is v as a string, the one held for field i when it is equal.
func (last *responseValues) value(i int, v []byte) string {
	if last[i] != string(v) { // compared without a conversion
		last[i] = string(v)
	}
	return last[i]
}

// commonResponseFields is how many names commonResponseKey knows.
const commonResponseFields = 15

// commonContentLength is Content-Length's index among them.
const commonContentLength = 4

// commonResponseNames are commonResponseKey's names as HTTP/2 writes
// them, by index.
var commonResponseNames = [commonResponseFields]string{
	"accept-ranges", "age", "cache-control", "content-encoding", "content-length", "content-type", "date",
	"etag", "expires", "last-modified", "link", "location", "server", "set-cookie", "vary",
}

// commonResponseKey is the package's constant for the canonical name k of
// a field most responses carry, and its index below
// commonResponseFields. A switch, which Go compiles to compares of
// lengths and bytes, costs a fraction of a map's hashing here.
func commonResponseKey(k []byte) (string, int, bool) {
	switch string(k) {
	case "Accept-Ranges":
		return "Accept-Ranges", 0, true
	case "Age":
		return "Age", 1, true
	case "Cache-Control":
		return "Cache-Control", 2, true
	case "Content-Encoding":
		return "Content-Encoding", 3, true
	case "Content-Length":
		return "Content-Length", 4, true
	case "Content-Type":
		return "Content-Type", 5, true
	case "Date":
		return "Date", 6, true
	case "Etag":
		return "Etag", 7, true
	case "Expires":
		return "Expires", 8, true
	case "Last-Modified":
		return "Last-Modified", 9, true
	case "Link":
		return "Link", 10, true
	case "Location":
		return "Location", 11, true
	case "Server":
		return "Server", 12, true
	case "Set-Cookie":
		return "Set-Cookie", 13, true
	case "Vary":
		return "Vary", 14, true
	}
	return "", 0, false
}

// bodilessSkipped are the request fields appendBodilessHead does not
// pass on: Host and User-Agent, written apart; the hop-by-hop fields (Te
// is written again when it asks for trailers; directable keeps requests
// with Connection or Upgrade off this path); HTTP2-Settings; and the
// forwarding fields, which the dataplane sets itself and never takes from
// a client. A bodiless request has no Content-Length to send.
var bodilessSkipped = func() map[string]bool {
	m := map[string]bool{
		"Host": true, "User-Agent": true, "Content-Length": true, http2Settings: true,
	}
	for _, k := range frontHopHeaders {
		m[k] = true
	}
	for _, k := range forwardingFields {
		m[k] = true
	}
	return m
}()

// appendBodilessHead appends the HTTP/1.1 head the backend gets for r,
// as the reverse proxy and Request.Write made it (httpConn.rewrite): the
// client's Host kept; its User-Agent, or none (never Go's); hop-by-hop
// fields removed but "Te: trailers"; the query cleaned of what net/url
// cannot parse (a ';' separator, a bad escape), so that the backend
// never splits it otherwise than the dataplane did; and the forwarding
// fields from what the dataplane saw. Fields are written in the map's
// order (RFC 9110 §5.3: only each name's values keep theirs, and do);
// Request.Write sorts them first, which cost 8 % of http mode's CPU.
func (h *httpConn) appendBodilessHead(b []byte, r *http.Request) ([]byte, error) {
	b, err := appendRequestLine(b, r.Method, r.Host, r.URL)
	if err != nil {
		return b, err
	}
	if ua := r.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		b = appendField(b, "User-Agent", ua[0])
	}
	for k, vs := range r.Header {
		if bodilessSkipped[k] {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		b = append(b, "Te: trailers\r\n"...)
	}
	return append(h.appendForwarding(b, r.Host), "\r\n"...), nil
}

// appendStreamHead is appendBodilessHead for the request of an HTTP/2
// stream a relay loop carries, from its fields as the client sent them
// (h2.Request): the same head but for the order of the fields, which is
// the client's. Their names are lower case and valid (the h2 Framer
// checked them) and are written in canonical form; a Cookie's crumbs are
// joined in one field, as net/http's server joins them; a Te field can
// only say trailers (h2 refuses any other value); and Connection and
// Upgrade never get this far (a malformed HTTP/2 request).
func (h *httpConn) appendStreamHead(b []byte, r h2.Request) ([]byte, error) {
	b, err := appendRequestLine(b, r.Method, r.Host, &r.URL)
	if err != nil {
		return b, err
	}
	for _, f := range r.Fields {
		if f.Name == "user-agent" {
			if f.Value != "" {
				b = appendField(b, "User-Agent", f.Value)
			}
			break
		}
	}
	var cookies, te bool
	for _, f := range r.Fields {
		switch {
		case f.Name == "cookie":
			cookies = true
		case f.Name == "te":
			te = true
		case !streamSkipped[f.Name]:
			b = appendFieldValue(fasthttp.AppendNormalizedHeaderKey(b, f.Name), f.Value)
		}
	}
	if cookies {
		b = append(b, "Cookie: "...)
		start, sep := len(b), ""
		for _, f := range r.Fields {
			if f.Name == "cookie" {
				b = append(append(b, sep...), f.Value...)
				sep = "; "
			}
		}
		b = append(b[:start], textproto.TrimBytes(b[start:])...) // as appendField trims the joined value
		b = append(b, "\r\n"...)
	}
	if te {
		b = append(b, "Te: trailers\r\n"...)
	}
	return append(h.appendForwarding(b, r.Host), "\r\n"...), nil
}

// streamSkipped is bodilessSkipped in HTTP/2's lower case.
var streamSkipped = func() map[string]bool {
	m := make(map[string]bool, len(bodilessSkipped))
	for k := range bodilessSkipped {
		m[strings.ToLower(k)] = true
	}
	return m
}()

// appendRequestLine appends the request line to a backend and its Host
// field: the client's method, its target with the query cleaned
// (cleanQuery) and its Host.
func appendRequestLine(b []byte, method, host string, u *url.URL) ([]byte, error) {
	if !httpguts.ValidHostHeader(host) {
		return b, fmt.Errorf("invalid Host %q", host)
	}
	target := u.RequestURI()
	if q := u.RawQuery; q != "" {
		if clean := cleanQuery(q); clean != q {
			c := *u
			c.RawQuery = clean
			target = c.RequestURI()
		}
	}
	b = append(append(append(b, method...), ' '), target...)
	return append(append(append(b, " HTTP/1.1\r\nHost: "...), host...), "\r\n"...), nil
}

// appendForwarding appends the forwarding fields of a request to host,
// from what the dataplane saw of its client (forwardingFields, in order).
func (h *httpConn) appendForwarding(b []byte, host string) []byte {
	b = appendField(b, "X-Forwarded-For", h.clientIP)
	b = appendField(b, "X-Forwarded-Host", host)
	b = appendField(b, "X-Forwarded-Proto", h.proto)
	b = appendField(b, "X-Real-Ip", h.clientIP)
	return appendField(b, "Forwarded", h.forHost(host).fwd[0])
}

// appendField appends one field line, its value trimmed of surrounding
// whitespace as textproto does.
func appendField(b []byte, k, v string) []byte {
	return appendFieldValue(append(b, k...), v)
}

// appendFieldValue ends a field line whose name b ends with: v, trimmed.
func appendFieldValue(b []byte, v string) []byte {
	return append(append(append(b, ": "...), textproto.TrimString(v)...), "\r\n"...)
}

// requestHeads are the buffers the heads of requests to backends are made
// in.
var requestHeads = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledHead is the largest buffer requestHeads keeps: a rare large
// head is not held on to.
const maxPooledHead = 64 << 10

// putRequestHead gives bp back to requestHeads with b's array, the head
// made in it, unless b grew past maxPooledHead.
func putRequestHead(bp *[]byte, b []byte) {
	if cap(b) <= maxPooledHead {
		*bp = b[:0]
		requestHeads.Put(bp)
	}
}

// cleanQuery is q as the reverse proxy sends it: unchanged when net/url
// parses it the way every backend would, else re-encoded from what
// url.ParseQuery kept (it drops a pair with a ';' or a bad escape).
func cleanQuery(q string) string {
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
