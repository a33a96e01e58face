package dataplane

import (
	"bufio"
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"testing"

	"github.com/portmux/portmux/dataplane/h1"
)

// readTrailersCases are trailer sections as a backend sends them after
// its last chunk, and what follows them on the connection.
var readTrailersCases = []struct {
	name, in, want string
	err            error
}{
	{name: "none", in: "\r\nHTTP/1.1 200 OK\r\n", want: "map[]"},
	{name: "bare LF", in: "X-Sum: 42\nX-Sum: 43\n\nnext", want: "map[X-Sum:[42 43]]"},
	{name: "two", in: "X-Sum: 42\r\nX-Many: a\r\nX-Many: b\r\n\r\nnext", want: "map[X-Many:[a b] X-Sum:[42]]"},
	{name: "at the limit", in: "X-Big: " + strings.Repeat("a", h1.MaxTrailer-len("X-Big: \r\n\r\n")) + "\r\n\r\n", want: "len 1"},
	{name: "past the limit", in: "X-Big: " + strings.Repeat("a", h1.MaxTrailer-len("X-Big: \r\n\r\n")+1) + "\r\n\r\n", err: errTrailersTooLarge},
	{name: "endless line", in: "X-Big: " + strings.Repeat("a", 1<<20), err: errTrailersTooLarge},
	{name: "endless lines", in: strings.Repeat("X-A: 1\r\n", 1<<16), err: errTrailersTooLarge},
	{name: "cut short", in: "X-Sum: 42\r\n", err: errTrailerCut},
	{name: "no colon", in: "X-Sum 42\r\n\r\n", err: errTrailerMalformed},
}

var (
	errTrailerCut       = errors.New("cut short")
	errTrailerMalformed = errors.New("malformed")
)

// TestReadTrailers: a trailer section is read to its empty line and no
// further, within h1.MaxTrailer bytes.
func TestReadTrailers(t *testing.T) {
	t.Parallel()
	for _, tc := range readTrailersCases {
		br := bufio.NewReader(strings.NewReader(tc.in))
		tr, err := readTrailers(br)
		switch {
		case tc.err == errTrailersTooLarge && !errors.Is(err, errTrailersTooLarge),
			tc.err == errTrailerCut && err == nil,
			tc.err == errTrailerMalformed && err == nil:
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		case tc.err == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err == nil && tc.want == "len 1" && len(tr) != 1,
			tc.err == nil && tc.want != "len 1" && fmt.Sprint(map[string][]string(tr)) != tc.want:
			t.Errorf("%s: %v, want %s", tc.name, tr, tc.want)
		}
		if rest, _ := br.Peek(br.Buffered()); tc.err == nil && strings.HasSuffix(tc.in, "next") && string(rest) != "next" {
			t.Errorf("%s: %q left for the next response, want %q", tc.name, rest, "next")
		}
	}
}

// FuzzReadTrailers: whatever a backend sends, readTrailers reads no more
// than h1.MaxTrailer bytes and a buffer, and what it takes is what
// net/http's reader takes of the same section.
func FuzzReadTrailers(f *testing.F) {
	for _, tc := range readTrailersCases {
		if len(tc.in) < 8<<10 {
			f.Add(tc.in)
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		sr := strings.NewReader(in)
		br := bufio.NewReaderSize(sr, 64) // lines longer than it are read in parts
		tr, err := readTrailers(br)
		consumed := len(in) - br.Buffered() - sr.Len()
		if consumed > h1.MaxTrailer+64 {
			t.Fatalf("%d bytes read for a trailer section", consumed)
		}
		if err != nil {
			return
		}
		want, werr := textproto.NewReader(bufio.NewReader(strings.NewReader(in[:consumed]))).ReadMIMEHeader()
		if werr != nil || len(want)+len(tr) > 0 && fmt.Sprint(want) != fmt.Sprint(tr) {
			t.Fatalf("%q: %v, net/http's reader: %v %v", in[:consumed], tr, want, werr)
		}
	})
}
