package h1

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkRequestHead is what a relay pays per request to find and
// parse a browser-sized head: it must not allocate once warm.
func BenchmarkRequestHead(b *testing.B) {
	head := []byte("GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n" +
		"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Referer: https://www.example.com/\r\nCookie: session=0123456789abcdef\r\nConnection: keep-alive\r\n\r\n")
	p := NewHeads(8 << 10)
	var h fasthttp.RequestHeader
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		n := HeadEnd(head)
		if err := p.Request(head[:n], &h); err != nil {
			b.Fatal(err)
		}
		if k, _ := RequestBody(&h); k != None {
			b.Fatal(k)
		}
	}
}

// BenchmarkFramerChunked follows a 64 KiB chunked body in 4 KiB chunks,
// read 16 KiB at a time: the scanner must cost next to nothing beside
// the copy it saves.
func BenchmarkFramerChunked(b *testing.B) {
	chunk := "1000\r\n" + strings.Repeat("x", 4096) + "\r\n"
	body := []byte(strings.Repeat(chunk, 16) + "0\r\n\r\n")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewFramer(Chunked, 0)
		for off := 0; off < len(body); {
			n, done, err := f.Take(body[off:min(off+16<<10, len(body))])
			if err != nil {
				b.Fatal(err)
			}
			off += n
			if done {
				break
			}
		}
	}
}

// BenchmarkFramerSmallChunks follows a body of 16-byte chunks with a
// trailer, read 4 KiB at a time: the worst case for the scanner, which
// walks chunk lines byte by byte, and where a change to its loop shows.
func BenchmarkFramerSmallChunks(b *testing.B) {
	body := []byte(strings.Repeat("10\r\n"+strings.Repeat("x", 16)+"\r\n", 1024) + "0\r\nX-Sum: 1\r\n\r\n")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewFramer(Chunked, 0)
		for off := 0; off < len(body); {
			n, done, err := f.Take(body[off:min(off+4<<10, len(body))])
			if err != nil {
				b.Fatal(err)
			}
			off += n
			if done {
				break
			}
		}
	}
}

// BenchmarkFramerTakeData is BenchmarkFramerSmallChunks de-chunking, as
// a relay to HTTP/2 does: the runs cost a call each, not a copy.
func BenchmarkFramerTakeData(b *testing.B) {
	body := []byte(strings.Repeat("10\r\n"+strings.Repeat("x", 16)+"\r\n", 1024) + "0\r\nX-Sum: 1\r\n\r\n")
	var data, trailer int
	onData := func(p []byte) { data += len(p) }
	onTrailer := func(p []byte) { trailer += len(p) }
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewFramer(Chunked, 0)
		for off := 0; off < len(body); {
			n, done, err := f.TakeData(body[off:min(off+4<<10, len(body))], onData, onTrailer)
			if err != nil {
				b.Fatal(err)
			}
			off += n
			if done {
				break
			}
		}
	}
	if data%(16*1024) != 0 || trailer%len("X-Sum: 1\r\n") != 0 {
		b.Fatalf("passed %d bytes of data and %d of trailer", data, trailer)
	}
}
