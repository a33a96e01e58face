package h1

import (
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestHeadEnd(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"GET / HTTP/1.1\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", 0},
		{"GET / HTTP/1.1\r\n\r\n", 18},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 27},
		{"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22},
		{"\r\n\r\n", 0},
		{"GET / HTTP/1.1\nHost: a\n\nGET", 24},
		{"GET / HTTP/1.1\nHost: a\n\r\n", 25},
		{"GET / HTTP/1.1\r\nHost: a\r\n\n", 26},
		{"\nGET / HTTP/1.1\n\n", 17},
		{"GET / HTTP/1.1\nHost: a\r\n\r", 0},
	}
	for _, tt := range tests {
		if got := HeadEnd([]byte(tt.in)); got != tt.want {
			t.Errorf("HeadEnd(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestRequestHead(t *testing.T) {
	p := NewHeads(4096)
	var h fasthttp.RequestHeader
	tests := []struct {
		name   string
		in     string
		kind   Kind
		length int64
		// err is a part of the error's text; "" for none.
		err string
	}{
		{name: "get", in: "GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n", kind: None},
		{name: "after an empty line", in: "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", kind: None},
		{name: "bare LF", in: "POST / HTTP/1.1\nHost: x\nContent-Length: 2\n\n", kind: Sized, length: 2},
		{name: "sized", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n", kind: Sized, length: 12},
		{name: "empty body", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", kind: None},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", kind: Chunked},
		{name: "chunked wins over a length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", kind: Chunked},
		{name: "two lengths", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", err: "duplicate content-length"},
		{name: "gzip coding", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", err: "transfer-encoding"},
		{name: "negative length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", err: "content-length"},
		{name: "two hosts", in: "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", err: "host"},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", err: "invalid header key"},
		{name: "not a request", in: "\x16\x03\x01\x00\x05hello\r\n\r\n", err: "parse request head"},
		{name: "cut short", in: "GET / HTTP/1.1\r\nHost: x\r\n", err: ErrNotHead.Error()},
		{name: "two heads", in: "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", err: ErrNotHead.Error()},
		{name: "larger than the reader", in: "GET /" + strings.Repeat("a", 4096) + " HTTP/1.1\r\n\r\n", err: "more than 4096"},
	}
	for _, tt := range tests {
		err := p.Request([]byte(tt.in), &h)
		if tt.err != "" {
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tt.err) {
				t.Errorf("%s: err %v, want one saying %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if k, n := RequestBody(&h); k != tt.kind || n != tt.length {
			t.Errorf("%s: body %v %d, want %v %d", tt.name, k, n, tt.kind, tt.length)
		}
	}
	// The parser is reused: a good head after bad ones parses whole.
	if err := p.Request([]byte("PUT /z HTTP/1.1\r\nHost: h\r\n\r\n"), &h); err != nil ||
		string(h.Method()) != "PUT" || string(h.RequestURI()) != "/z" || string(h.Host()) != "h" {
		t.Errorf("after errors: %v, %s %s host %s", err, h.Method(), h.RequestURI(), h.Host())
	}
}

func TestResponseHead(t *testing.T) {
	p := NewHeads(4096)
	var h fasthttp.ResponseHeader
	tests := []struct {
		name   string
		in     string
		toHead bool
		kind   Kind
		length int64
	}{
		{name: "sized", in: "HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n", kind: Sized, length: 17},
		{name: "empty", in: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", kind: None},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", kind: Chunked},
		{name: "until close", in: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", kind: UntilClose},
		{name: "to a HEAD", in: "HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n", toHead: true, kind: None},
		{name: "no content", in: "HTTP/1.1 204 No Content\r\n\r\n", kind: None},
		{name: "not modified with a length", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 17\r\n\r\n", kind: None},
		{name: "continue", in: "HTTP/1.1 100 Continue\r\n\r\n", kind: None},
	}
	for _, tt := range tests {
		if err := p.Response([]byte(tt.in), &h); err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if k, n := ResponseBody(&h, tt.toHead); k != tt.kind || n != tt.length {
			t.Errorf("%s: body %v %d, want %v %d", tt.name, k, n, tt.kind, tt.length)
		}
	}
	if err := p.Response([]byte("SSH-2.0-x\r\n\r\n"), &h); err == nil {
		t.Error("an SSH banner parsed as a response head")
	}
	if err := p.Response([]byte("HTTP/1.1 200 OK\r\n"), &h); !errors.Is(err, ErrNotHead) {
		t.Errorf("half a head: %v, want ErrNotHead", err)
	}
}

// TestStatusUnder100: the status is judged once its digits are read,
// whatever protocol comes before it.
func TestStatusUnder100(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"HTTP/1.1 000 Zero\r\n", true},
		{"HTTP/1.1 099 Odd\r\n", true},
		{"HTTP/1.1 0\r\n", true},
		{"HTTP/1.1 000", true},
		{"HTTP/1.1 00", false}, // undecided: more digits may come
		{"HTTP/1.1 200 OK\r\n", false},
		{"HTTP/1.1 100 Continue\r\n", false},
		{"HTTP/1.1 2", false},
		{"HTTP/1.0 0200 OK\r\n", true}, // three digits are the status
		{"\r\nHTTP/1.1 200 OK\r\n", false},
		{"HTTP/1.1", false},
		{"", false},
	} {
		if got := StatusUnder100([]byte(tc.line)); got != tc.want {
			t.Errorf("StatusUnder100(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}
