package h2

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// blockReader decodes header blocks: the HEADERS frame the Framer read
// and the CONTINUATION frames that follow it (which consume has made
// sure are in the input). x/net's Framer does this when given a decoder
// (ReadMetaHeaders), but allocates for every block a frame, a closure
// with its state and a field slice that grows field by field, a fifth of
// what a request allocated here; a blockReader is the connection's, and
// its frame and fields are reused from block to block. It checks what
// the Framer checks, and answers with the same errors:
//
//   - a field value that is not a valid header value, a field name that
//     is not lower-case token characters, or a pseudo-header after a
//     regular field: a stream error (PROTOCOL_ERROR), and a connection
//     error if the block goes on in a CONTINUATION frame;
//   - fields past the header list limit: the block is marked Truncated
//     (answered 431) and no more fields are kept; a fragment more than
//     twice the room left is a connection error, as is a block that does
//     not decode (COMPRESSION_ERROR);
//   - pseudo-headers that are unknown, repeated, or mix a request's and
//     a response's: a stream error.
type blockReader struct {
	dec *hpack.Decoder
	// meta is the block read last, valid until the next one is read;
	// its Fields reuse one array.
	meta http2.MetaHeadersFrame
	// The block being read: what its fields may still take, of the
	// header list and of the trailer names the "trailer" field declares,
	// whether a regular field came, and its first invalid field.
	headersRoom, trailersRoom uint32
	sawRegular                bool
	invalid                   error
}

// keptFields is the most fields a blockReader keeps room for between
// blocks: a block with more gets an array of its own.
const keptFields = 32

func newBlockReader() *blockReader {
	b := &blockReader{}
	b.dec = hpack.NewDecoder(4096, b.emit)
	return b
}

// read decodes the header block that hf begins, reading its
// CONTINUATION frames from fr, whose header list limit it applies.
func (b *blockReader) read(fr *http2.Framer, hf *http2.HeadersFrame) (*http2.MetaHeadersFrame, error) {
	limit := fr.MaxHeaderListSize
	if cap(b.meta.Fields) > keptFields {
		b.meta.Fields = nil
	}
	b.meta = http2.MetaHeadersFrame{HeadersFrame: hf, Fields: b.meta.Fields[:0]}
	b.headersRoom, b.trailersRoom = limit, limit
	b.sawRegular, b.invalid = false, nil
	b.dec.SetEmitEnabled(true)
	b.dec.SetMaxStringLength(int(limit))
	frag, ended := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for {
		// A fragment far past the room left is not decoded: the block
		// would be refused anyway.
		if int64(len(frag)) > 2*int64(b.headersRoom+b.trailersRoom) {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// Once a field is invalid, sizes are no longer counted: the
		// block must not go on.
		if b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := b.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf, ok := f.(*http2.ContinuationFrame)
		if !ok { // the Framer checks the order; this is a bug
			return nil, fmt.Errorf("http2: a %v frame inside a header block", f.Header().Type)
		}
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	if err := checkPseudos(b.meta.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &b.meta, nil
}

// emit takes one decoded field.
func (b *blockReader) emit(f hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		// The value stays out of the error: it may be a secret.
		b.invalid = fmt.Errorf("invalid header field value for %q", f.Name)
	}
	if strings.HasPrefix(f.Name, ":") {
		if b.sawRegular {
			b.invalid = errPseudoAfterRegular
		}
	} else {
		b.sawRegular = true
		if !validFieldName(f.Name) {
			b.invalid = fmt.Errorf("invalid header field name %q", f.Name)
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false)
		return
	}
	room, size := &b.headersRoom, f.Size()
	if f.Name == "trailer" {
		// Each name it declares counts as a field of its own.
		n := uint32(strings.Count(f.Value, ",") + 1)
		room, size = &b.trailersRoom, uint32(len(f.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *room {
		b.dec.SetEmitEnabled(false)
		b.meta.Truncated = true
		b.headersRoom, b.trailersRoom = 0, 0
		return
	}
	*room -= size
	b.meta.Fields = append(b.meta.Fields, f)
}

var errPseudoAfterRegular = errors.New("pseudo header field after regular")

// validFieldName reports whether name is a header field name as HTTP/2
// sends it: token characters, none upper-case.
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos refuses pseudo-headers that are unknown, repeated, or
// mix a request's and a response's.
func checkPseudos(pseudo []hpack.HeaderField) error {
	var request, response bool
	for i, f := range pseudo {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", f.Name)
		}
		for _, g := range pseudo[:i] {
			if f.Name == g.Name {
				return fmt.Errorf("duplicate pseudo-header %q", f.Name)
			}
		}
	}
	if request && response {
		return errors.New("mix of request and response pseudo headers")
	}
	return nil
}
