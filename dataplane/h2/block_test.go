package h2

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// outcome is what reading a header block came to, in the terms both
// readers share.
type outcome struct {
	fields    []hpack.HeaderField
	truncated bool
	err       string // "", "stream PROTOCOL_ERROR", "connection COMPRESSION_ERROR"...
}

func outcomeOf(mh *http2.MetaHeadersFrame, err error) outcome {
	var o outcome
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		o.err = "stream " + se.Code.String()
	case errors.As(err, &ce):
		o.err = "connection " + http2.ErrCode(ce).String()
	case err != nil:
		o.err = "other: " + err.Error()
	default:
		o.fields, o.truncated = slices.Clone(mh.Fields), mh.Truncated
	}
	return o
}

// readBoth reads the frames in wire with x/net's Framer decoding the
// header blocks (ReadMetaHeaders) and with a blockReader, both under
// limit, and returns the outcome of each first header block.
func readBoth(t testing.TB, wire []byte, limit uint32) (theirs, ours outcome) {
	t.Helper()
	ref := http2.NewFramer(nil, bytes.NewReader(wire))
	ref.MaxHeaderListSize = limit
	ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	f, err := ref.ReadFrame()
	mh, _ := f.(*http2.MetaHeadersFrame)
	theirs = outcomeOf(mh, err)

	fr := http2.NewFramer(nil, bytes.NewReader(wire))
	fr.MaxHeaderListSize = limit
	f, err = fr.ReadFrame()
	if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
		mh, err = newBlockReader().read(fr, hf)
	} else {
		mh = nil
	}
	ours = outcomeOf(mh, err)
	return theirs, ours
}

// block is a header block of the fields kv, split into HEADERS and
// CONTINUATION frames of at most frag bytes.
func block(frag int, kv ...string) []byte {
	var enc bytes.Buffer
	e := hpack.NewEncoder(&enc)
	for i := 0; i < len(kv); i += 2 {
		_ = e.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return frames(enc.Bytes(), frag)
}

func frames(b []byte, frag int) []byte {
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	first := b[:min(len(b), frag)]
	b = b[len(first):]
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(b) == 0})
	for len(b) > 0 {
		p := b[:min(len(b), frag)]
		b = b[len(p):]
		_ = fr.WriteContinuation(1, len(b) == 0, p)
	}
	return wire.Bytes()
}

// The blockReader comes to what x/net's Framer comes to, block by block:
// the same fields, the same truncation and the same kind of error.
func TestBlockReaderMatchesTheFramer(t *testing.T) {
	req := []string{":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/"}
	with := func(kv ...string) []string { return append(slices.Clone(req), kv...) }
	big := strings.Repeat("v", 3000)
	for _, tc := range []struct {
		name  string
		wire  []byte
		limit uint32
	}{
		{"a request", block(1<<14, with("accept", "*/*", "cookie", "a=1", "cookie", "b=2")...), 1 << 16},
		{"over three frames", block(7, with("x-a", "1", "x-b", "2")...), 1 << 16},
		{"an upper-case name", block(1<<14, with("X-Up", "1")...), 1 << 16},
		{"an invalid value", block(1<<14, with("x-bad", "a\x00b")...), 1 << 16},
		{"an invalid name, then more frames", block(4, with("x bad", "1", "x-more", strings.Repeat("m", 40))...), 1 << 16},
		{"a pseudo-header after a regular one", block(1<<14, "accept", "*/*", ":method", "GET"), 0},
		{"a repeated pseudo-header", block(1<<14, with(":path", "/again")...), 1 << 16},
		{"an unknown pseudo-header", block(1<<14, with(":nope", "1")...), 1 << 16},
		{"request and response pseudo-headers", block(1<<14, with(":status", "200")...), 1 << 16},
		{"past the limit: truncated", block(1<<14, with("x-1", big, "x-2", big)...), 4000},
		{"a trailer field past its own room", block(1<<14, with("trailer", strings.Repeat("a,", 200)+"b")...), 4000},
		{"a fragment far past the room", block(1<<14, with("x-1", big, "x-2", big, "x-3", big)...), 1000},
		{"a block that does not decode", frames([]byte{0xff, 0xff, 0xff, 0xff}, 1<<14), 1 << 16},
		{"an empty block", frames(nil, 1<<14), 1 << 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := tc.limit
			if limit == 0 {
				limit = 1 << 16
			}
			theirs, ours := readBoth(t, tc.wire, limit)
			if fmt.Sprint(theirs) != fmt.Sprint(ours) {
				t.Errorf("x/net: %+v\nours:  %+v", theirs, ours)
			}
		})
	}
}

// FuzzBlockReader: whatever a header block holds, and however it is
// split into frames, the blockReader and x/net's Framer agree.
func FuzzBlockReader(f *testing.F) {
	var enc bytes.Buffer
	e := hpack.NewEncoder(&enc)
	for _, kv := range [][2]string{{":method", "GET"}, {":path", "/"}, {"x-a", "1"}, {"trailer", "a, b"}, {"X-Up", "v"}} {
		_ = e.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	f.Add(enc.Bytes(), uint16(7), uint16(200))
	f.Add([]byte{0x3f, 0xe1, 0x1f}, uint16(1), uint16(64)) // a table size update
	f.Fuzz(func(t *testing.T, b []byte, frag, limit uint16) {
		if frag == 0 {
			frag = 1
		}
		theirs, ours := readBoth(t, frames(b, int(frag)), uint32(limit)+1)
		if fmt.Sprint(theirs) != fmt.Sprint(ours) {
			t.Errorf("x/net: %+v\nours:  %+v", theirs, ours)
		}
	})
}
