package dataplane

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/portmux/portmux/dataplane/h1"
)

// BenchmarkFrontStripHop is the response rewrite of every request in
// http mode, on a head as nginx sends it, on one that repeats a field
// after its Connection (frontStripHopInOrder), and on long ones.
func BenchmarkFrontStripHop(b *testing.B) {
	for _, bc := range []struct{ name, head string }{
		{"nginx", "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 12:00:00 GMT\r\n" +
			"Content-Type: text/plain\r\nContent-Length: 17\r\nConnection: keep-alive\r\n" +
			"Last-Modified: Sat, 05 Dec 2026 11:00:00 GMT\r\nETag: \"6751a3f0-11\"\r\nAccept-Ranges: bytes\r\n\r\n"},
		{"repeated", "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 12:00:00 GMT\r\n" +
			"Content-Type: text/html\r\nContent-Length: 17\r\nConnection: keep-alive\r\n" +
			"Link: </app.css>; rel=preload\r\nLink: </app.js>; rel=preload\r\nCache-Control: no-cache\r\n\r\n"},
		// A backend's head near the 64 KiB limit: one name on 6,000
		// lines, and 3,000 names on two lines each.
		{"6000 lines, one name", longResponse(6000, func(int) string { return "X-A" })},
		{"6000 lines, 3000 names", longResponse(6000, func(i int) string { return "X-" + strconv.Itoa(i/2) })},
		// Connection names 4,000 fields, among 2,000 lines of 1,000
		// names: each name a field of its own to delete.
		{"Connection names 4000", strings.Replace(longResponse(2000, func(i int) string { return "X-" + strconv.Itoa(i/2) }),
			"keep-alive", connectionNames(4000)+"keep-alive", 1)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var parsed, h fasthttp.ResponseHeader
			if err := parsed.Read(bufio.NewReaderSize(strings.NewReader(bc.head), len(bc.head))); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				parsed.CopyTo(&h)
				frontStripHop(&h)
			}
		})
	}
}

// BenchmarkFrontRewrite is the request rewrite every path made before
// appendFrontHead (frontRewrite, now the oracle of its tests), on a
// browser's head.
func BenchmarkFrontRewrite(b *testing.B) {
	head := []byte("GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n" +
		"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Referer: https://www.example.com/\r\nCookie: session=0123456789abcdef\r\nConnection: keep-alive\r\n\r\n")
	var in, out fasthttp.RequestHeader
	if err := in.Read(bufioOf(head)); err != nil {
		b.Fatal(err)
	}
	h := &httpConn{clientIP: "192.0.2.1", proto: "http"}
	t, _, _ := frontTargetOfHeader(&in)
	b.ReportAllocs()
	for b.Loop() {
		frontRewrite(h, &in, &out, t, false)
	}
}

// longResponse is a response head of n fields after a Connection, the
// i-th named name(i).
func longResponse(n int, name func(i int) string) string {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n")
	for i := range n {
		b.WriteString(name(i) + ": 1\r\n")
	}
	return b.String() + "Content-Length: 0\r\n\r\n"
}

// connectionNames is the names x-0 to x-(n-1), each followed by a comma.
func connectionNames(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("x-" + strconv.Itoa(i) + ", ")
	}
	return b.String()
}

func bufioOf(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// BenchmarkFrontHead is what the relay loops do of the same head:
// appendFrontHead, the rewrite and the bytes the backend gets.
func BenchmarkFrontHead(b *testing.B) {
	head := []byte("GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n" +
		"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Referer: https://www.example.com/\r\nCookie: session=0123456789abcdef\r\nConnection: keep-alive\r\n\r\n")
	var in fasthttp.RequestHeader
	if err := in.Read(bufioOf(head)); err != nil {
		b.Fatal(err)
	}
	h := &httpConn{clientIP: "192.0.2.1", proto: "http"}
	t, _, _ := frontTargetOfHeader(&in)
	var dst, scratch []byte
	b.ReportAllocs()
	for b.Loop() {
		dst, scratch = appendFrontHead(dst[:0], scratch, h, &in, t, h1.None, 0, nil)
	}
}
