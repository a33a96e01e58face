package dataplane_test

import (
	"bytes"
	"io"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Open starts HTTP/2 as a client on rw: the preface and a SETTINGS frame
// of settings. The tests that frame by hand do so to send what x/net's
// client never would (a withheld window, a short body, streams reset in
// the read that opened them) or to leave nothing pooled behind; the framer
// it returns writes to and reads from rw and decodes header blocks.
func h2Open(t testing.TB, rw io.ReadWriter, settings ...http2.Setting) *http2.Framer {
	t.Helper()
	if _, err := io.WriteString(rw, http2.ClientPreface); err != nil {
		t.Fatalf("writing HTTP/2's preface: %v", err)
	}
	fr := http2.NewFramer(rw, rw)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(settings...); err != nil {
		t.Fatalf("writing SETTINGS: %v", err)
	}
	return fr
}

// h2Block encodes a header block of name, value pairs, pseudo-fields
// first as HTTP/2 wants them.
func h2Block(kv ...string) []byte {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := 0; i+1 < len(kv); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return block.Bytes()
}
