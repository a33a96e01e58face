package h1

import (
	"errors"
	"fmt"

	"golang.org/x/net/http/httpguts"
)

// Kind is how a message's body is delimited on the wire (RFC 9112 §6.3).
type Kind uint8

const (
	// None means the message has no body (a request with neither
	// Content-Length nor Transfer-Encoding; a response to HEAD; a 1xx,
	// 204 or 304 response).
	None Kind = iota
	// Sized means Content-Length bytes follow the head.
	Sized
	// Chunked means the chunked transfer coding, up to the last chunk and the
	// trailer section's empty line.
	Chunked
	// UntilClose means a response body that ends when the server closes the
	// connection; that connection cannot be kept alive.
	UntilClose
)

// String names the kind for logs and test failures.
func (k Kind) String() string {
	switch k {
	case None:
		return "none"
	case Sized:
		return "sized"
	case Chunked:
		return "chunked"
	case UntilClose:
		return "until-close"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Limits of what a chunked body may carry besides its data. They bound
// what a client can make a relay hold and parse for nothing, and sit
// below Go's net/http's own, so a backend written in Go never refuses
// what passed here.
const (
	// MaxChunkLine is the longest chunk-size line, extensions and CRLF
	// included (Go's is 4 KiB; real senders use a few bytes).
	MaxChunkLine = 1024
	// MaxTrailer is the longest trailer section, its empty line included.
	MaxTrailer = 4 << 10
	// maxSizeDigits keeps a chunk's size well inside an int64.
	maxSizeDigits = 15
	// Non-data bytes are free up to freeOverhead per chunk plus twice
	// the chunk's data; past maxExcess unpaid ones the body is refused
	// (many tiny chunks with long extensions cost a parser much and
	// carry nothing).
	freeOverhead = 16
	maxExcess    = 16 << 10
)

// ErrMalformed is wrapped by every error a Framer returns for bytes that
// are not a valid chunked body; ErrTooLarge by those for a limit passed.
var (
	ErrMalformed = errors.New("malformed chunked body")
	ErrTooLarge  = errors.New("chunked body has too much besides data")
)

// state is where a chunked body's scanner stands.
type state uint8

const (
	sSize         state = iota // before a chunk size's first digit
	sSizeDigits                // in a chunk size
	sExtension                 // after ';', up to CR
	sSizeLF                    // after the chunk line's CR
	sData                      // in a chunk's data
	sDataCR                    // after the data, before its CR
	sDataLF                    // after the data's CR
	sTrailerLine               // at the start of a trailer line (or the final CRLF)
	sTrailerName               // in a trailer field's name
	sTrailerValue              // after the colon, up to CR
	sTrailerLF                 // after a trailer field's CR
	sEndLF                     // after the final CR
	sDone
)

// Framer follows one message's body as its bytes pass, so that a relay
// knows which of the bytes it read belong to the message in flight and
// which start the next one. The zero value is a body of kind None.
type Framer struct {
	kind  Kind
	state state
	// left is what is left of a sized body or of a chunk's data; while
	// reading a chunk size, the size so far.
	left int64
	// line counts the bytes of the chunk line or trailer line so far;
	// trailer those of the whole trailer section.
	line, trailer int
	excess        int64
	// name holds the first bytes of a trailer field's name, enough to
	// tell the framing and routing fields, which are refused there.
	name    [len("transfer-encoding")]byte
	nameLen int
}

// NewFramer starts following a body of kind k; length is a Sized body's
// Content-Length and is ignored otherwise.
func NewFramer(k Kind, length int64) Framer {
	f := Framer{kind: k}
	switch {
	case k == Sized && length > 0:
		f.left = length
	case k == Sized, k == None:
		f.state = sDone
	}
	return f
}

// Kind is the kind of body being followed.
func (f *Framer) Kind() Kind { return f.kind }

// Done reports that the body's last byte went through Take.
func (f *Framer) Done() bool { return f.state == sDone }

// Left is how many bytes of a Sized body are still to come; 0 for any
// other kind, and once done.
func (f *Framer) Left() int64 {
	if f.kind != Sized || f.state == sDone {
		return 0
	}
	return f.left
}

// Skip passes n bytes of a Sized body that a relay moved without
// reading them (spliced); n is at most Left.
func (f *Framer) Skip(n int64) {
	if f.kind != Sized || n > f.Left() || n < 0 {
		panic(fmt.Sprintf("h1: Skip(%d) of a %v body with %d left", n, f.kind, f.Left()))
	}
	f.left -= n
	if f.left == 0 {
		f.state = sDone
	}
}

// Take reports how many bytes at the start of b belong to the body, and
// whether the body ends with them. Once done, it takes nothing: the rest
// of b belongs to the next message. An UntilClose body never ends (its
// sender's EOF does). On an error, the n bytes before the one at fault
// were valid; the body cannot be relayed further.
func (f *Framer) Take(b []byte) (n int, done bool, err error) {
	switch f.kind {
	case Sized:
		if f.state == sDone {
			return 0, true, nil
		}
		n = len(b)
		if int64(n) >= f.left {
			n = int(f.left)
			f.state = sDone
		}
		f.left -= int64(n)
		return n, f.state == sDone, nil
	case Chunked:
		n, _, _, err = f.chunks(b, 0, false)
		return n, err == nil && f.state == sDone, err
	case UntilClose:
		return len(b), false, nil
	}
	return 0, true, nil
}

// TakeData is Take, and also passes the body's data among the bytes
// taken to data, in order, in one or more calls (for a Sized or
// UntilClose body, the bytes taken; for a chunked body, each chunk's
// data, without chunk lines or CRLFs), and the bytes of a chunked
// body's trailer section (its field lines with their CRLFs, not the
// final empty line) to trailer, in one or more calls, split wherever
// b was split. Slices are of b, valid during the call only. trailer may
// be nil (trailers are dropped).
//
// It exists for a relay that turns an HTTP/1.1 body into HTTP/2 DATA
// frames: de-chunking with the scanner that frames the body, rather
// than with a second parser, leaves no room for the two to disagree
// about where the data or the body ends. Each call gets a whole run of
// b, so that a chunk's data becomes one frame, not one per byte; no
// call gets an empty slice. On an error, what was passed stays passed
// (the data and trailer bytes among the n valid ones): by then a relay
// may have sent it on, and must reset the stream rather than end it.
func (f *Framer) TakeData(b []byte, data, trailer func([]byte)) (n int, done bool, err error) {
	if f.kind != Chunked {
		n, done, err = f.Take(b)
		if n > 0 {
			data(b[:n])
		}
		return n, done, err
	}
	for {
		var r run
		var from int
		n, r, from, err = f.chunks(b, n, true)
		switch {
		case r == dataRun:
			data(b[from:n])
		case r == trailerRun && trailer != nil:
			trailer(b[from:n])
		}
		if r == noRun || err != nil {
			return n, err == nil && f.state == sDone, err
		}
	}
}

// run is what the bytes chunks stopped after are, for TakeData.
type run uint8

const (
	noRun      run = iota
	dataRun        // a chunk's data
	trailerRun     // trailer field lines, with their CRLFs
)

// chunks scans a chunked body (RFC 9112 §7.1) from b[i:]:
//
//	chunked-body = *chunk last-chunk trailer-section CRLF
//	chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//	last-chunk   = 1*("0") [ chunk-ext ] CRLF
//
// Only the bytes of lines are looked at one by one; chunk data is
// skipped whole. With runs set, it stops after each run of data or of
// trailer field lines, b[from:n], for TakeData to pass on. Returning
// runs rather than calling TakeData's functions keeps calls out of
// Take's loop and b from escaping, so Take costs what it did.
func (f *Framer) chunks(b []byte, i int, runs bool) (n int, r run, from int, err error) {
	for i < len(b) {
		switch {
		case f.state == sData:
			from = i
			k := len(b) - i
			if int64(k) >= f.left {
				k = int(f.left)
				f.state = sDataCR
			}
			f.left -= int64(k)
			i += k
			if runs {
				return i, dataRun, from, nil
			}
		case f.state < sTrailerLine:
			if err := f.step(b[i]); err != nil {
				return i, noRun, 0, err
			}
			i++
		case f.state == sDone:
			return i, noRun, 0, nil
		case f.state == sEndLF, f.state == sTrailerLine && b[i] == '\r':
			// The final empty line: no field's bytes.
			if err := f.trailerStep(b[i]); err != nil {
				return i, noRun, 0, err
			}
			i++
		default:
			from = i
			i, err = f.fields(b, i)
			if runs && i > from {
				return i, trailerRun, from, err
			}
			if err != nil {
				return i, noRun, 0, err
			}
		}
	}
	return i, noRun, 0, nil
}

// fields takes trailer field lines from b[i:], up to the end of b, an
// error or the final empty line, so that chunks gets them as one run.
func (f *Framer) fields(b []byte, i int) (int, error) {
	for ; i < len(b); i++ {
		if f.state == sTrailerLine && b[i] == '\r' {
			break
		}
		if err := f.trailerStep(b[i]); err != nil {
			return i, err
		}
	}
	return i, nil
}

// step takes one byte of a chunk line or of a chunk's CRLF.
func (f *Framer) step(c byte) error {
	switch f.state {
	case sSize, sSizeDigits:
		f.line++
		if d, ok := hexDigit(c); ok {
			if f.line > maxSizeDigits {
				return fmt.Errorf("%w: chunk size has more than %d digits", ErrMalformed, maxSizeDigits)
			}
			f.left = f.left<<4 | int64(d)
			f.state = sSizeDigits
			return nil
		}
		if f.state == sSize {
			return fmt.Errorf("%w: chunk line does not start with a hex size", ErrMalformed)
		}
		switch c {
		case ';':
			f.state = sExtension
			return nil
		case '\r':
			f.state = sSizeLF
			return nil
		}
		return fmt.Errorf("%w: %q after a chunk size", ErrMalformed, c)
	case sExtension:
		f.line++
		if f.line > MaxChunkLine-1 { // room for the LF
			return fmt.Errorf("%w: chunk line longer than %d bytes", ErrTooLarge, MaxChunkLine)
		}
		if c == '\r' {
			f.state = sSizeLF
			return nil
		}
		if !fieldByte(c) {
			return fmt.Errorf("%w: control byte %q in a chunk extension", ErrMalformed, c)
		}
		return nil
	case sSizeLF:
		if c != '\n' {
			return fmt.Errorf("%w: chunk line's CR not followed by LF", ErrMalformed)
		}
		f.excess += int64(f.line+1) + 2 - freeOverhead - 2*f.left
		f.excess = max(f.excess, 0)
		if f.excess > maxExcess {
			return fmt.Errorf("%w: more than %d bytes of chunk lines beyond the data's worth", ErrTooLarge, maxExcess)
		}
		f.line = 0
		if f.left == 0 {
			f.state = sTrailerLine
			return nil
		}
		f.state = sData
		return nil
	case sDataCR:
		if c != '\r' {
			return fmt.Errorf("%w: chunk data not followed by CRLF", ErrMalformed)
		}
		f.state = sDataLF
		return nil
	case sDataLF:
		if c != '\n' {
			return fmt.Errorf("%w: chunk data not followed by CRLF", ErrMalformed)
		}
		f.state = sSize
		return nil
	}
	return fmt.Errorf("h1: framer in state %d", f.state) // unreachable
}

// trailerStep takes one byte of the trailer section.
func (f *Framer) trailerStep(c byte) error {
	f.trailer++
	if f.trailer > MaxTrailer {
		return fmt.Errorf("%w: trailer section longer than %d bytes", ErrTooLarge, MaxTrailer)
	}
	switch f.state {
	case sTrailerLine:
		if c == '\r' {
			f.state = sEndLF
			return nil
		}
		f.nameLen = 0
		f.state = sTrailerName
		fallthrough
	case sTrailerName:
		if c == ':' {
			if f.nameLen == 0 {
				return fmt.Errorf("%w: trailer field with an empty name", ErrMalformed)
			}
			if name := f.name[:min(f.nameLen, len(f.name))]; f.nameLen == len(name) && forbiddenTrailer(name) {
				return fmt.Errorf("%w: trailer field %q is not allowed", ErrMalformed, string(name))
			}
			f.state = sTrailerValue
			return nil
		}
		if !httpguts.IsTokenRune(rune(c)) {
			return fmt.Errorf("%w: byte %q in a trailer field's name", ErrMalformed, c)
		}
		if f.nameLen < len(f.name) {
			f.name[f.nameLen] = lower(c)
		}
		f.nameLen++
		return nil
	case sTrailerValue:
		if c == '\r' {
			f.state = sTrailerLF
			return nil
		}
		if !fieldByte(c) {
			return fmt.Errorf("%w: control byte %q in a trailer field's value", ErrMalformed, c)
		}
		return nil
	case sTrailerLF, sEndLF:
		if c != '\n' {
			return fmt.Errorf("%w: trailer line's CR not followed by LF", ErrMalformed)
		}
		if f.state == sEndLF {
			f.state = sDone
			return nil
		}
		f.state = sTrailerLine
		return nil
	}
	return fmt.Errorf("h1: framer in state %d", f.state) // unreachable
}

// forbiddenTrailer reports a trailer field that would change how the
// message is framed, routed or handled (RFC 9110 §6.5.1): a recipient
// that merged it into the head would see another message than the relay
// did. name is lower case.
func forbiddenTrailer(name []byte) bool {
	switch string(name) {
	case "content-length", "transfer-encoding", "host", "trailer", "content-type", "connection":
		return true
	}
	return false
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// fieldByte reports a byte allowed in a field value or chunk extension:
// visible characters, space, tab and obs-text, no other control.
func fieldByte(c byte) bool {
	return c == '\t' || (c >= ' ' && c != 0x7f)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
