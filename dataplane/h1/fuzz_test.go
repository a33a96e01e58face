package h1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// goChunked is where Go's net/http, as a backend behind the relay would,
// ends the chunked body at the start of body, and the data and trailer
// fields it reads from it: ok is false when it refuses the body or runs
// out of bytes first.
func goChunked(body []byte) (end int, data []byte, trailer http.Header, ok bool) {
	const head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	src := bytes.NewReader(append([]byte(head), body...))
	br := bufio.NewReaderSize(src, 64<<10)
	req, err := http.ReadRequest(br)
	if err != nil {
		return 0, nil, nil, false
	}
	if data, err = io.ReadAll(req.Body); err != nil {
		return 0, nil, nil, false
	}
	return len(head) + len(body) - br.Buffered() - src.Len() - len(head), data, req.Trailer, true
}

// parseTrailer reads trailer field lines as net/http reads a trailer
// section, whose final empty line they lack.
func parseTrailer(lines []byte) (http.Header, error) {
	r := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(lines), strings.NewReader("\r\n"))))
	h, err := r.ReadMIMEHeader()
	return http.Header(h), err
}

// dechunk is TakeData on b, with what data and trailer got joined; it
// fails t on a call with an empty slice.
func dechunk(t *testing.T, f *Framer, b []byte) (data, trailer []byte, n int, done bool, err error) {
	n, done, err = f.TakeData(b, func(s []byte) {
		if len(s) == 0 {
			t.Fatal("data called with nothing")
		}
		data = append(data, s...)
	}, func(s []byte) {
		if len(s) == 0 {
			t.Fatal("trailer called with nothing")
		}
		trailer = append(trailer, s...)
	})
	return data, trailer, n, done, err
}

// FuzzChunked checks the chunked scanner against Go's net/http on the
// same bytes, split where the fuzzer likes. What matters to a relay is
// that it never sees a body end elsewhere than the backend does (the
// bytes between would be smuggled as a request of their own):
//   - a body the scanner ends, Go accepts and ends at the same byte;
//   - a body the scanner still waits on, Go does not end either;
//   - one the scanner refuses, Go may take: it is stricter by design.
//
// And the split does not change the answer. TakeData answers as Take
// does, and what it passes as data and trailer is what Go reads from a
// body both accept: a relay de-chunking with it (HTTP/1.1 to HTTP/2)
// sends what a Go backend would have received.
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
		"3\r\n\r\n0\r\n0\r\nx-a:  1 \r\nX-A:2\r\nb:\t\r\n\r\n",
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

		dwhole := NewFramer(Chunked, 0)
		data, trailer, dn, ddone, derr := dechunk(t, &dwhole, body)
		if dn != n || ddone != done || fmt.Sprint(derr) != fmt.Sprint(err) {
			t.Fatalf("TakeData took %d, done %v, err %v; Take %d, %v, %v", dn, ddone, derr, n, done, err)
		}
		dparts := NewFramer(Chunked, 0)
		data1, trailer1, dn1, ddone1, derr1 := dechunk(t, &dparts, body[:cut])
		dn2, derr2, data2, trailer2 := 0, derr1, []byte(nil), []byte(nil)
		if derr1 == nil && !ddone1 {
			data2, trailer2, dn2, _, derr2 = dechunk(t, &dparts, body[cut:])
		}
		data1, trailer1 = append(data1, data2...), append(trailer1, trailer2...)
		if dn1+dn2 != n || fmt.Sprint(derr2) != fmt.Sprint(err) || !bytes.Equal(data1, data) || !bytes.Equal(trailer1, trailer) {
			t.Fatalf("TakeData split at %d: took %d+%d, err %v, data %q, trailer %q; whole: %d, %v, %q, %q",
				cut, dn1, dn2, derr2, data1, trailer1, n, err, data, trailer)
		}
		if len(data)+len(trailer) > n {
			t.Fatalf("passed %d bytes of data and %d of trailer out of %d taken", len(data), len(trailer), n)
		}

		end, goData, goTrailer, goOK := goChunked(body)
		switch {
		case err != nil:
			// Stricter than Go: allowed.
		case done && (!goOK || end != n):
			t.Fatalf("body ends at %d for the relay; Go: end %d, accepted %v", n, end, goOK)
		case !done && goOK:
			t.Fatalf("relay still in the body after %d bytes; Go ended it at %d", n, end)
		}
		if !done {
			return
		}
		if !bytes.Equal(data, goData) {
			t.Fatalf("data %q; Go read %q", data, goData)
		}
		// The trailer is the field lines between the last chunk's line
		// and the final CRLF, as they came.
		if !bytes.HasSuffix(body[:n], append(slices.Clip(trailer), "\r\n"...)) || body[n-len(trailer)-3] != '\n' {
			t.Fatalf("trailer %q is not the end of %q before its final CRLF", trailer, body[:n])
		}
		fields, perr := parseTrailer(trailer)
		if perr != nil || !maps.EqualFunc(fields, goTrailer, slices.Equal) {
			t.Fatalf("trailer %q reads as %q (err %v); Go read %q", trailer, fields, perr, goTrailer)
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
