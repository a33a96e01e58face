package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"
)

// HeadEnd returns the length of the head at the start of b, through the
// empty line that ends it, or 0 while b does not hold a whole head yet.
// A line may end with CRLF or a bare LF, as fasthttp's parser and RFC
// 9112 §2.2 accept (the head is sent on rewritten, with CRLFs). Empty
// lines before a request line count as part of its head (§2.2 lets a
// server skip them; some clients send one after a body).
func HeadEnd(b []byte) int {
	skip := 0
	for {
		switch {
		case len(b)-skip >= 2 && b[skip] == '\r' && b[skip+1] == '\n':
			skip += 2
			continue
		case len(b)-skip >= 1 && b[skip] == '\n':
			skip++
			continue
		}
		break
	}
	for i := skip; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1 // past a line's LF: an empty line next ends the head
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
	return 0
}

// ErrStatusUnder100 is a response whose status is under 100, which no
// client may be given.
var ErrStatusUnder100 = errors.New("response status under 100")

// StatusUnder100 reports whether the response that b begins with has a
// status under 100: its status line's first digits, once past the
// protocol (false while b ends in them). fasthttp's parser takes 000
// for a status not set, which it reports as 200; a proxy that believed
// it would turn a backend's garbage into a success.
func StatusUnder100(b []byte) bool {
	_, rest, ok := bytes.Cut(b, []byte(" "))
	if !ok {
		return false
	}
	code, digits := 0, 0
	for _, c := range rest {
		if c < '0' || c > '9' || digits == 3 {
			return digits > 0 && code < 100
		}
		code, digits = code*10+int(c-'0'), digits+1
	}
	return digits == 3 && code < 100
}

// ErrNotHead is returned for bytes that are not exactly one head: the
// caller passes b[:HeadEnd(b)].
var ErrNotHead = errors.New("not one whole message head")

// Heads parses message heads out of bytes a relay has already read,
// with fasthttp's parser, through one reader it reuses for every head.
// Not safe for concurrent use: a relay loop keeps its own.
type Heads struct {
	src bytes.Reader
	br  *bufio.Reader
	// scratch holds a head that does not end with CRLFCRLF, followed by
	// one: fasthttp's parser takes bare-LF lines, but waits for those
	// four bytes before it parses a head at all.
	scratch []byte
	tail    int
}

// NewHeads returns a parser for heads of at most maxHead bytes.
func NewHeads(maxHead int) *Heads {
	p := &Heads{}
	p.br = bufio.NewReaderSize(&p.src, max(maxHead, 16)+len(crlfcrlf))
	return p
}

// Request parses the request head b, all of it, into h. The error names
// what is wrong (the client gets a 400).
func (p *Heads) Request(b []byte, h *fasthttp.RequestHeader) error {
	if err := p.reset(b); err != nil {
		return err
	}
	if err := h.Read(p.br); err != nil {
		return fmt.Errorf("parse request head: %w", err)
	}
	return p.rest()
}

// Response parses the response head b, all of it, into h.
func (p *Heads) Response(b []byte, h *fasthttp.ResponseHeader) error {
	if StatusUnder100(b) {
		return ErrStatusUnder100
	}
	if err := p.reset(b); err != nil {
		return err
	}
	if err := h.Read(p.br); err != nil {
		return fmt.Errorf("parse response head: %w", err)
	}
	return p.rest()
}

func (p *Heads) reset(b []byte) error {
	if len(b) == 0 || HeadEnd(b) != len(b) {
		return ErrNotHead
	}
	if len(b) > p.br.Size()-len(crlfcrlf) {
		return fmt.Errorf("message head of %d bytes, more than %d", len(b), p.br.Size()-len(crlfcrlf))
	}
	p.tail = 0
	if !bytes.HasSuffix(b, crlfcrlf) {
		p.scratch = append(append(p.scratch[:0], b...), crlfcrlf...)
		b, p.tail = p.scratch, len(crlfcrlf)
	}
	p.src.Reset(b)
	p.br.Reset(&p.src)
	return nil
}

var crlfcrlf = []byte("\r\n\r\n")

// rest checks that the parser took all of the head: bytes left over mean
// fasthttp saw a shorter head than HeadEnd did, and the relay would lose
// track of the stream.
func (p *Heads) rest() error {
	if n := p.br.Buffered() + p.src.Len() - p.tail; n != 0 {
		return fmt.Errorf("parse message head: %d bytes after its end", n)
	}
	return nil
}

// RequestBody is how the body of the request h heads is delimited:
// chunked, Content-Length bytes, or none (a request has no body unless
// one of the two says so; fasthttp already refused a second
// Content-Length and any coding but chunked).
func RequestBody(h *fasthttp.RequestHeader) (Kind, int64) {
	switch n := h.ContentLength(); {
	case n == -1:
		return Chunked, 0
	case n > 0:
		return Sized, int64(n)
	}
	return None, 0
}

// ResponseBody is how the body of the response h heads is delimited;
// toHead is true when it answers a HEAD request, which has no body
// whatever its fields say (RFC 9112 §6.3).
func ResponseBody(h *fasthttp.ResponseHeader, toHead bool) (Kind, int64) {
	switch s := h.StatusCode(); {
	case toHead, s < 200, s == fasthttp.StatusNoContent, s == fasthttp.StatusNotModified:
		return None, 0
	}
	switch n := h.ContentLength(); {
	case n == -1:
		return Chunked, 0
	case n == 0:
		return None, 0
	case n > 0:
		return Sized, int64(n)
	}
	return UntilClose, 0
}
