package h1

import (
	"errors"
	"strings"
	"testing"
)

// take feeds b to a new framer of kind k in pieces of at most step bytes
// (0: all at once), as reads from a socket would come.
func take(k Kind, length int64, b string, step int) (n int, done bool, err error) {
	f := NewFramer(k, length)
	for n < len(b) {
		end := len(b)
		if step > 0 {
			end = min(n+step, len(b))
		}
		start := n
		m, d, e := f.Take([]byte(b[start:end]))
		n += m
		if e != nil || d {
			return n, d, e
		}
		if m < end-start { // took less than offered without finishing
			return n, d, errors.New("framer stopped early")
		}
	}
	return n, f.Done(), nil
}

func TestFramer(t *testing.T) {
	const next, whole = "GET /next HTTP/1.1\r\n\r\n", -1
	tests := []struct {
		name   string
		kind   Kind
		length int64
		in     string
		// body is how much of in belongs to the body (whole: all but a
		// trailing next); done whether it ends there; err the error
		// wrapped, if any.
		body int
		done bool
		err  error
	}{
		{name: "none takes nothing", kind: None, in: next, body: 0, done: true},
		{name: "sized stops at its length", kind: Sized, length: 5, in: "hello" + next, body: 5, done: true},
		{name: "sized waits for the rest", kind: Sized, length: 10, in: "hello", body: 5},
		{name: "sized zero", kind: Sized, length: 0, in: next, body: 0, done: true},
		{name: "until close takes everything", kind: UntilClose, in: "hello" + next, body: len("hello" + next)},
		{name: "chunks", kind: Chunked, in: "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n" + next, body: whole, done: true},
		{name: "upper-case size and leading zeros", kind: Chunked, in: "000A\r\n0123456789\r\n0\r\n\r\n" + next, body: whole, done: true},
		{name: "extension", kind: Chunked, in: "5;name=\"va lue\";x\r\nhello\r\n0;end\r\n\r\n" + next, body: whole, done: true},
		{name: "trailer", kind: Chunked, in: "1\r\nx\r\n0\r\nX-Sum: 12\r\nY:\r\n\r\n" + next, body: whole, done: true},
		{name: "last chunk only", kind: Chunked, in: "0\r\n\r\n", body: 5, done: true},
		{name: "waits inside data", kind: Chunked, in: "5\r\nhel", body: 6},
		{name: "waits for the final CRLF", kind: Chunked, in: "0\r\n\r", body: 4},
		{name: "bare LF after size", kind: Chunked, in: "5\nhello\r\n0\r\n\r\n", body: 1, err: ErrMalformed},
		{name: "space after size", kind: Chunked, in: "5 \r\nhello\r\n0\r\n\r\n", body: 1, err: ErrMalformed},
		{name: "no size", kind: Chunked, in: "\r\nhello", body: 0, err: ErrMalformed},
		{name: "sign", kind: Chunked, in: "-5\r\n", body: 0, err: ErrMalformed},
		{name: "0x prefix", kind: Chunked, in: "0x5\r\n", body: 1, err: ErrMalformed},
		{name: "too many digits", kind: Chunked, in: "1000000000000000\r\n", body: 15, err: ErrMalformed},
		{name: "data longer than its size", kind: Chunked, in: "5\r\nhello!\r\n", body: 8, err: ErrMalformed},
		{name: "data CR without LF", kind: Chunked, in: "5\r\nhello\r0\r\n", body: 9, err: ErrMalformed},
		{name: "control byte in extension", kind: Chunked, in: "5;a\x00\r\n", body: 3, err: ErrMalformed},
		{name: "CR inside extension", kind: Chunked, in: "5;a\rb\r\n", body: 4, err: ErrMalformed},
		{name: "trailer without colon", kind: Chunked, in: "0\r\nX-Sum\r\n\r\n", body: 8, err: ErrMalformed},
		{name: "trailer with empty name", kind: Chunked, in: "0\r\n: v\r\n\r\n", body: 3, err: ErrMalformed},
		{name: "trailer folded", kind: Chunked, in: "0\r\nA: b\r\n c\r\n\r\n", body: 9, err: ErrMalformed},
		{name: "trailer space before colon", kind: Chunked, in: "0\r\nA : b\r\n\r\n", body: 4, err: ErrMalformed},
		{name: "trailer bare LF", kind: Chunked, in: "0\r\nA: b\n\r\n", body: 7, err: ErrMalformed},
		{name: "trailer content-length", kind: Chunked, in: "0\r\nContent-Length: 5\r\n\r\n", body: 17, err: ErrMalformed},
		{name: "trailer transfer-encoding", kind: Chunked, in: "0\r\ntransfer-ENCODING: chunked\r\n\r\n", body: 20, err: ErrMalformed},
		{name: "trailer host", kind: Chunked, in: "0\r\nHost: evil\r\n\r\n", body: 7, err: ErrMalformed},
		{name: "trailer longer than a forbidden name", kind: Chunked, in: "0\r\nContent-Length-Extra: 5\r\n\r\n", body: whole, done: true},
		{name: "final CR without LF", kind: Chunked, in: "0\r\n\rX", body: 4, err: ErrMalformed},
		{name: "long extension", kind: Chunked, in: "1;" + strings.Repeat("a", MaxChunkLine) + "\r\n", body: MaxChunkLine - 1, err: ErrTooLarge},
		{name: "extension at the limit", kind: Chunked, in: "1;" + strings.Repeat("a", MaxChunkLine-5) + "\r\nx\r\n0\r\n\r\n", body: whole, done: true},
		{name: "long trailer", kind: Chunked, in: "0\r\nA: " + strings.Repeat("a", MaxTrailer) + "\r\n\r\n", body: 3 + MaxTrailer, err: ErrTooLarge},
	}
	for _, tt := range tests {
		if tt.body == whole {
			tt.body = len(strings.TrimSuffix(tt.in, next))
		}
		for _, step := range []int{0, 1, 3} {
			n, done, err := take(tt.kind, tt.length, tt.in, step)
			if n != tt.body || done != tt.done || !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Errorf("%s (reads of %d): took %d, done %v, err %v; want %d, %v, %v",
					tt.name, step, n, done, err, tt.body, tt.done, tt.err)
			}
		}
	}
}

// TestFramerOverhead: many small chunks with long extensions carry
// little and cost the relay a byte-by-byte scan; past the allowance the
// body is refused, while the same chunks without extensions pass.
func TestFramerOverhead(t *testing.T) {
	noisy := strings.Repeat("1;"+strings.Repeat("e", 200)+"\r\nx\r\n", 200) + "0\r\n\r\n"
	n, done, err := take(Chunked, 0, noisy, 0)
	if !errors.Is(err, ErrTooLarge) || done {
		t.Fatalf("200 one-byte chunks with 200-byte extensions: took %d, done %v, err %v; want ErrTooLarge", n, done, err)
	}
	if n > 2*maxExcess {
		t.Errorf("refused only after %d bytes; want fewer than %d", n, 2*maxExcess)
	}
	quiet := strings.Repeat("1\r\nx\r\n", 10000) + "0\r\n\r\n"
	if n, done, err := take(Chunked, 0, quiet, 7); err != nil || !done || n != len(quiet) {
		t.Errorf("10000 one-byte chunks: took %d of %d, done %v, err %v", n, len(quiet), done, err)
	}
}

// TestFramerDoneTakesNothing: the bytes after a body belong to the next
// message, however many times the relay asks.
func TestFramerDoneTakesNothing(t *testing.T) {
	for _, k := range []Kind{None, Sized, Chunked} {
		f := NewFramer(k, 3)
		in := map[Kind]string{None: "", Sized: "abc", Chunked: "3\r\nabc\r\n0\r\n\r\n"}[k]
		if _, done, err := f.Take([]byte(in)); !done || err != nil {
			t.Fatalf("%v: body not done: %v", k, err)
		}
		for range 2 {
			if n, done, err := f.Take([]byte("GET / HTTP/1.1\r\n")); n != 0 || !done || err != nil {
				t.Errorf("%v after its end: took %d, done %v, err %v", k, n, done, err)
			}
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{None: "none", Sized: "sized", Chunked: "chunked", UntilClose: "until-close", 9: "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}
