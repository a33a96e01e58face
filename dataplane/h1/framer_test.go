package h1

import (
	"errors"
	"fmt"
	"slices"
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

// taken is what feeding a body to TakeData gave: what Take gives, and
// what data and trailer got, joined, and in how many calls.
type taken struct {
	n                       int
	done                    bool
	err                     error
	data, trailer           string
	dataCalls, trailerCalls int
}

// feed gives parts, in order, to take on f as successive reads from a
// socket would come, stopping where the body ends or fails.
func feed(f *Framer, parts [][]byte, take func(f *Framer, b []byte) (int, bool, error)) (n int, done bool, err error) {
	for _, p := range parts {
		m, d, e := take(f, p)
		n += m
		if e != nil || d {
			return n, d, e
		}
		if m < len(p) { // took less than offered without finishing
			return n, d, errors.New("framer stopped early")
		}
	}
	return n, f.Done(), nil
}

// takeData feeds parts to a new framer of kind k through TakeData. It
// fails t if data or trailer gets an empty slice or one that is not of
// the part given. Each part's capacity must be its length.
func takeData(t *testing.T, k Kind, length int64, parts [][]byte) taken {
	t.Helper()
	var got taken
	var data, trailer strings.Builder
	f := NewFramer(k, length)
	got.n, got.done, got.err = feed(&f, parts, func(f *Framer, b []byte) (int, bool, error) {
		check := func(what string, s []byte) {
			t.Helper()
			// s = b[o:o+len(s)] for the o that leaves it its capacity.
			if o := len(b) - cap(s); len(s) == 0 || o < 0 || o+len(s) > len(b) || &b[o] != &s[0] {
				t.Errorf("%s got %q, not a non-empty slice of %q", what, s, b)
			}
		}
		return f.TakeData(b, func(s []byte) {
			check("data", s)
			data.Write(s)
			got.dataCalls++
		}, func(s []byte) {
			check("trailer", s)
			trailer.Write(s)
			got.trailerCalls++
		})
	})
	got.data, got.trailer = data.String(), trailer.String()
	return got
}

// TestTakeData: whatever the reads a body comes in, TakeData takes what
// Take does and passes the same data and trailer bytes, each run of
// them in as few calls as the reads allow.
func TestTakeData(t *testing.T) {
	const next, whole = "GET /next HTTP/1.1\r\n\r\n", -1
	long := strings.Repeat("0123456789abcdef", 256)
	tests := []struct {
		name   string
		kind   Kind
		length int64
		in     string
		// body is how much of in belongs to the body (whole: all but a
		// trailing next), ended there if done; err the error wrapped, if
		// any; data and trailer what TakeData passes on.
		body          int
		done          bool
		err           error
		data, trailer string
	}{
		{name: "none", kind: None, in: next, body: 0, done: true},
		{name: "sized", kind: Sized, length: 5, in: "hello" + next, body: 5, done: true, data: "hello"},
		{name: "sized waits for the rest", kind: Sized, length: 10, in: "hello", body: 5, data: "hello"},
		{name: "sized zero", kind: Sized, length: 0, in: next, body: 0, done: true},
		{name: "until close", kind: UntilClose, in: "hello" + next, body: len("hello" + next), data: "hello" + next},
		{name: "chunks", kind: Chunked, in: "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n" + next, body: whole, done: true, data: "hello, world"},
		{name: "last chunk only", kind: Chunked, in: "0\r\n\r\n" + next, body: whole, done: true},
		{name: "data that looks like framing", kind: Chunked, in: "4\r\n\r\n0\r\r\n2\r\n\r\n\r\n0\r\n\r\n", body: whole, done: true, data: "\r\n0\r\r\n"},
		{name: "upper-case size and leading zeros", kind: Chunked, in: "000A\r\n0123456789\r\n0\r\n\r\n", body: whole, done: true, data: "0123456789"},
		{name: "extensions", kind: Chunked, in: "5;name=\"va lue\";x\r\nhello\r\n0;end\r\n\r\n" + next, body: whole, done: true, data: "hello"},
		{
			name: "trailer", kind: Chunked, in: "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n" + next,
			body: whole, done: true, data: "abc", trailer: "X-Sum: 1\r\nX-B: 2\r\n",
		},
		{name: "empty trailer value", kind: Chunked, in: "0\r\nY:\r\n\r\n", body: whole, done: true, trailer: "Y:\r\n"},
		{name: "trailer after an extension", kind: Chunked, in: "0;e\r\nA: b\r\n\r\n", body: whole, done: true, trailer: "A: b\r\n"},
		{name: "big chunk", kind: Chunked, in: "1000\r\n" + long + "\r\n0\r\n\r\n", body: whole, done: true, data: long},
		{name: "waits inside data", kind: Chunked, in: "5\r\nhel", body: 6, data: "hel"},
		{name: "waits inside the trailer", kind: Chunked, in: "1\r\nx\r\n0\r\nA: b\r\nC", body: 16, data: "x", trailer: "A: b\r\nC"},
		{name: "waits for the final LF", kind: Chunked, in: "0\r\nA: b\r\n\r", body: 10, trailer: "A: b\r\n"},
		{name: "bad size", kind: Chunked, in: "x\r\n", body: 0, err: ErrMalformed},
		{name: "bad second size", kind: Chunked, in: "3\r\nabc\r\nZ\r\n", body: 8, err: ErrMalformed, data: "abc"},
		{name: "data longer than its size", kind: Chunked, in: "5\r\nhello!\r\n", body: 8, err: ErrMalformed, data: "hello"},
		{name: "bare LF in the trailer", kind: Chunked, in: "1\r\nx\r\n0\r\nX-A: 1\r\nA: b\n\r\n", body: 21, err: ErrMalformed, data: "x", trailer: "X-A: 1\r\nA: b"},
		{name: "forbidden trailer", kind: Chunked, in: "0\r\nX: 1\r\nContent-Length: 5\r\n\r\n", body: 23, err: ErrMalformed, trailer: "X: 1\r\nContent-Length"},
		{name: "trailer starts with a space", kind: Chunked, in: "0\r\n A: b\r\n\r\n", body: 3, err: ErrMalformed},
		{name: "final CR without LF", kind: Chunked, in: "0\r\nA: b\r\n\rX", body: 10, err: ErrMalformed, trailer: "A: b\r\n"},
		{name: "long extension", kind: Chunked, in: "1;" + strings.Repeat("a", MaxChunkLine) + "\r\n", body: MaxChunkLine - 1, err: ErrTooLarge},
		{
			name: "long trailer", kind: Chunked, in: "0\r\nA: " + strings.Repeat("a", MaxTrailer) + "\r\n\r\n",
			body: 3 + MaxTrailer, err: ErrTooLarge, trailer: "A: " + strings.Repeat("a", MaxTrailer-3),
		},
	}
	for _, tt := range tests {
		if tt.body == whole {
			tt.body = len(strings.TrimSuffix(tt.in, next))
		}
		buf := []byte(tt.in)
		part := func(i, j int) []byte { return buf[i:j:j] }
		// The reads to try: all at once, in two at every split, and, for
		// inputs short enough, in three at every pair of splits.
		splits := [][]int{{}}
		for i := range len(buf) + 1 {
			splits = append(splits, []int{i})
			for j := i; len(buf) <= 256 && j <= len(buf); j++ {
				splits = append(splits, []int{i, j})
			}
		}
		var oneRead taken
		for _, cuts := range splits {
			var parts [][]byte
			from := 0
			for _, c := range cuts {
				parts = append(parts, part(from, c))
				from = c
			}
			parts = append(parts, part(from, len(buf)))

			got := takeData(t, tt.kind, tt.length, parts)
			if got.n != tt.body || got.done != tt.done || !errors.Is(got.err, tt.err) || (got.err == nil) != (tt.err == nil) ||
				got.data != tt.data || got.trailer != tt.trailer {
				t.Fatalf("%s (cut at %v): took %d, done %v, err %v, data %q, trailer %q; want %d, %v, %v, %q, %q",
					tt.name, cuts, got.n, got.done, got.err, got.data, got.trailer, tt.body, tt.done, tt.err, tt.data, tt.trailer)
			}
			f := NewFramer(tt.kind, tt.length)
			if n, done, err := feed(&f, parts, (*Framer).Take); n != got.n || done != got.done || fmt.Sprint(err) != fmt.Sprint(got.err) {
				t.Fatalf("%s (cut at %v): Take took %d, done %v, err %v; TakeData %d, %v, %v", tt.name, cuts, n, done, err, got.n, got.done, got.err)
			}
			// A cut splits at most one run in two.
			if len(cuts) == 0 {
				oneRead = got
			} else if got.dataCalls > oneRead.dataCalls+len(cuts) || got.trailerCalls > oneRead.trailerCalls+len(cuts) {
				t.Fatalf("%s (cut at %v): %d calls to data, %d to trailer; %d and %d in one read",
					tt.name, cuts, got.dataCalls, got.trailerCalls, oneRead.dataCalls, oneRead.trailerCalls)
			}
		}
	}
}

// TestTakeDataRuns: each chunk's data within a read, and the trailer's
// field lines within it, come in one call, so that a relay makes one
// HTTP/2 DATA frame of them rather than many.
func TestTakeDataRuns(t *testing.T) {
	in := "3\r\nabc\r\n4;x=y\r\ndefg\r\n1\r\nh\r\n0\r\nA: 1\r\nB: 2\r\n\r\n"
	for _, tt := range []struct {
		read          int
		data, trailer []string
	}{
		{read: len(in), data: []string{"abc", "defg", "h"}, trailer: []string{"A: 1\r\nB: 2\r\n"}},
		{read: 17, data: []string{"abc", "de", "fg", "h"}, trailer: []string{"A: 1", "\r\nB: 2\r\n"}},
	} {
		var data, trailer []string
		f := NewFramer(Chunked, 0)
		for off := 0; off < len(in); off += tt.read {
			_, _, err := f.TakeData([]byte(in[off:min(off+tt.read, len(in))]),
				func(b []byte) { data = append(data, string(b)) },
				func(b []byte) { trailer = append(trailer, string(b)) })
			if err != nil {
				t.Fatal(err)
			}
		}
		if !f.Done() || !slices.Equal(data, tt.data) || !slices.Equal(trailer, tt.trailer) {
			t.Errorf("reads of %d: done %v, data in %q, trailer in %q; want data in %q, trailer in %q",
				tt.read, f.Done(), data, trailer, tt.data, tt.trailer)
		}
	}
}

// TestTakeDataNilTrailer: a relay that has nowhere to put trailers
// (HTTP/1.1 to a client that did not send TE: trailers) drops them.
func TestTakeDataNilTrailer(t *testing.T) {
	in := []byte("2\r\nab\r\n0\r\nA: 1\r\n\r\n")
	var data []byte
	f := NewFramer(Chunked, 0)
	n, done, err := f.TakeData(in, func(b []byte) { data = append(data, b...) }, nil)
	if n != len(in) || !done || err != nil || string(data) != "ab" {
		t.Errorf("took %d of %d, done %v, err %v, data %q", n, len(in), done, err, data)
	}
}

// TestTakeDataDoneTakesNothing: the bytes after a body are the next
// message's, not its data.
func TestTakeDataDoneTakesNothing(t *testing.T) {
	for _, k := range []Kind{None, Sized, Chunked} {
		f := NewFramer(k, 3)
		in := map[Kind]string{None: "", Sized: "abc", Chunked: "3\r\nabc\r\n0\r\n\r\n"}[k]
		if _, done, err := f.Take([]byte(in)); !done || err != nil {
			t.Fatalf("%v: body not done: %v", k, err)
		}
		called := func([]byte) { t.Errorf("%v after its end: a function called", k) }
		if n, done, err := f.TakeData([]byte("GET / HTTP/1.1\r\n"), called, called); n != 0 || !done || err != nil {
			t.Errorf("%v after its end: took %d, done %v, err %v", k, n, done, err)
		}
	}
}

// TestTakeDataAllocs: a relay calls TakeData for every read of every
// body; like Take, it must not allocate.
func TestTakeDataAllocs(t *testing.T) {
	in := []byte("5\r\nhello\r\n7;e=1\r\n, world\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n")
	var data, trailer int
	onData := func(b []byte) { data += len(b) }
	onTrailer := func(b []byte) { trailer += len(b) }
	allocs := testing.AllocsPerRun(100, func() {
		f := NewFramer(Chunked, 0)
		for off := 0; off < len(in); off += 9 {
			if _, _, err := f.TakeData(in[off:min(off+9, len(in))], onData, onTrailer); err != nil {
				t.Fatal(err)
			}
		}
		if !f.Done() {
			t.Fatal("body not done")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per body; want 0", allocs)
	}
	if data != 101*len("hello, world") || trailer != 101*len("X-Sum: 1\r\nX-B: 2\r\n") {
		t.Errorf("passed %d bytes of data and %d of trailer in 101 runs", data, trailer)
	}
}

// TestFramerSkip: a Sized body's bytes passed unread (spliced) count as
// Take's do; Left is 0 for the other kinds, which cannot be skipped.
func TestFramerSkip(t *testing.T) {
	f := NewFramer(Sized, 10)
	if f.Left() != 10 {
		t.Fatalf("Left %d, want 10", f.Left())
	}
	f.Skip(4)
	if n, done, err := f.Take([]byte("abcd")); n != 4 || done || err != nil {
		t.Fatalf("Take after Skip: %d %v %v", n, done, err)
	}
	f.Skip(2)
	if !f.Done() || f.Left() != 0 {
		t.Fatalf("done %v, left %d after the last bytes", f.Done(), f.Left())
	}
	if n, _, _ := f.Take([]byte("next")); n != 0 {
		t.Errorf("took %d bytes of the next message", n)
	}
	for _, k := range []Kind{None, Chunked, UntilClose} {
		g := NewFramer(k, 10)
		if g.Left() != 0 {
			t.Errorf("%v: Left %d", k, g.Left())
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%v: Skip did not panic", k)
				}
			}()
			g.Skip(1)
		}()
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Skip past the body did not panic")
			}
		}()
		g := NewFramer(Sized, 3)
		g.Skip(4)
	}()
}
