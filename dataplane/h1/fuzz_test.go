package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"
)

// goChunked is where Go's net/http, as a backend behind the relay would,
// ends the chunked body at the start of body: ok is false when it
// refuses the body or runs out of bytes first.
func goChunked(body []byte) (end int, ok bool) {
	const head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	src := bytes.NewReader(append([]byte(head), body...))
	br := bufio.NewReaderSize(src, 64<<10)
	req, err := http.ReadRequest(br)
	if err != nil {
		return 0, false
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return 0, false
	}
	return len(head) + len(body) - br.Buffered() - src.Len() - len(head), true
}

// FuzzChunked checks the chunked scanner against Go's net/http on the
// same bytes, split where the fuzzer likes. What matters to a relay is
// that it never sees a body end elsewhere than the backend does (the
// bytes between would be smuggled as a request of their own):
//   - a body the scanner ends, Go accepts and ends at the same byte;
//   - a body the scanner still waits on, Go does not end either;
//   - one the scanner refuses, Go may take: it is stricter by design.
//
// And the split does not change the answer.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"A;ext=\"q\"\r\n0123456789\r\n0\r\nX-Sum: 1\r\nY: z\r\n\r\n",
		"0\r\n\r\n",
		"5\nhello\n0\n\n",
		"5 \r\nhello\r\n0\r\n\r\n",
		"0\r\nA: b\r\n c\r\n\r\n",
		"0\r\nContent-Length: 1\r\n\r\n",
		"ffffffffffffffff\r\n",
		"1\r\nx\r\n1\r\nx",
	} {
		f.Add([]byte(s), uint16(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, split uint16) {
		whole := NewFramer(Chunked, 0)
		n, done, err := whole.Take(body)
		if n < 0 || n > len(body) {
			t.Fatalf("took %d of %d bytes", n, len(body))
		}

		cut := int(split) % (len(body) + 1)
		parts := NewFramer(Chunked, 0)
		n1, done1, err1 := parts.Take(body[:cut])
		n2, done2, err2 := 0, done1, err1
		if err1 == nil && !done1 {
			n2, done2, err2 = parts.Take(body[cut:])
		}
		if n1+n2 != n || done2 != done || (err2 == nil) != (err == nil) {
			t.Fatalf("split at %d: took %d+%d, done %v, err %v; whole: %d, %v, %v", cut, n1, n2, done2, err2, n, done, err)
		}

		end, goOK := goChunked(body)
		switch {
		case err != nil:
			// Stricter than Go: allowed.
		case done && (!goOK || end != n):
			t.Fatalf("body ends at %d for the relay; Go: end %d, accepted %v", n, end, goOK)
		case !done && goOK:
			t.Fatalf("relay still in the body after %d bytes; Go ended it at %d", n, end)
		}
	})
}

// FuzzRequestHead checks, on any complete head, that parsing never
// panics and that when both fasthttp (the relay's parser) and Go's
// net/http (a backend's) accept it, both frame its body the same way.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	p := NewHeads(8 << 10)
	f.Fuzz(func(t *testing.T, in []byte) {
		end := HeadEnd(in)
		if end == 0 {
			return
		}
		head := in[:end]
		var h fasthttp.RequestHeader
		if err := p.Request(head, &h); err != nil {
			return
		}
		kind, length := RequestBody(&h)
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return
		}
		var goKind Kind
		switch {
		case len(req.TransferEncoding) > 0 && req.TransferEncoding[0] == "chunked":
			goKind = Chunked
		case req.ContentLength > 0:
			goKind = Sized
		}
		if goKind != kind || (kind == Sized && req.ContentLength != length) {
			t.Fatalf("%q: relay frames the body %v %d, Go %v %d", head, kind, length, goKind, req.ContentLength)
		}
	})
}
