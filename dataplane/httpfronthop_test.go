package dataplane

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// frontStripHopCases are response heads with hop-by-hop fields, fields
// their Connection names, and repeated fields before and after them.
var frontStripHopCases = []string{
	"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Length: 17\r\nConnection: keep-alive\r\nETag: \"1\"\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nLink: <a>\r\nLink: <b>\r\nVary: x\r\nLink: <c>\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nX-A: 1\r\nX-Hop: 2\r\nX-A: 2\r\nKeep-Alive: timeout=5\r\nX-A: 3\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nX-A: 2\r\nTrailer: X-Sum\r\nX-B: 1\r\nX-B: 2\r\n\r\n",
	"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nConnection: close\r\nSet-Cookie: b=2\r\nCache-Control: no-store\r\nCache-Control: private\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nX-a: 1\r\nx-A: 2\r\nX-A: 3\r\n\r\n",
	longHead(40),
}

// longHead is a response head of n fields, past which
// frontStripHopInOrder counts names in a map: repeated in
// turn, with a hop-by-hop field first.
func longHead(n int) string {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n")
	for i := range n {
		fmt.Fprintf(&b, "X-%d: %d\r\n", i%10, i)
	}
	return b.String() + "Content-Length: 0\r\n\r\n"
}

// hopFree is what a client should read of a response head as a
// backend sent it: net/http's reading, without the hop-by-hop fields
// and those Connection names, and without the fields fasthttp writes
// anew (the framing, Date), or why net/http refuses it.
func hopFree(head []byte) string {
	res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	switch {
	case err != nil:
		return "refused: " + err.Error()
	case res.StatusCode < 100:
		return "refused: a status under 100" // readFinalHead's answer
	}
	h := res.Header
	for k := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			// net/http keeps a space before the colon in a response;
			// fasthttp drops it. Neither is strip's business.
			return "refused: field name " + strconv.Quote(k)
		}
	}
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = textproto.TrimString(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for _, name := range append(frontHopHeaders, "Content-Length", "Date") {
		h.Del(name)
	}
	for _, name := range []string{"Server", "Content-Type", "Content-Encoding"} {
		if h.Get(name) == "" {
			h.Del(name) // fasthttp keeps these apart, and only when set
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", res.StatusCode)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		// Trimmed: fasthttp drops the space an empty folded line
		// leaves at a value's end, net/http keeps it.
		fmt.Fprintf(&b, "%s: %q\n", k, slices.Collect(func(yield func(string) bool) {
			for _, v := range h[k] {
				if !yield(strings.TrimSpace(v)) {
					return
				}
			}
		}))
	}
	return b.String()
}

// checkFrontStripHop strips raw, a head fasthttp parsed, and compares
// what a client reads of it with hopFree's reading of raw; it reports
// whether raw was such a head.
func checkFrontStripHop(t *testing.T, raw string) bool {
	t.Helper()
	var h fasthttp.ResponseHeader
	h.SetNoDefaultContentType(true)
	if h.Read(bufio.NewReader(strings.NewReader(raw))) != nil || h.StatusCode() < 100 {
		return false // readFinalHead refuses a status under 100
	}
	want := hopFree([]byte(raw))
	if strings.HasPrefix(want, "refused") {
		return false
	}
	frontStripHop(&h)
	if got := hopFree(h.AppendBytes(nil)); got != want {
		t.Errorf("for %q a client reads\n%s\nwant\n%s", raw, got, want)
	}
	return true
}

// TestFrontStripHop: a response loses its hop-by-hop fields and those
// its Connection names, and nothing else: a repeated field keeps its
// lines in the backend's order (RFC 9110 §5.3).
func TestFrontStripHop(t *testing.T) {
	t.Parallel()
	for _, raw := range frontStripHopCases {
		if !checkFrontStripHop(t, raw) {
			t.Errorf("the case %q is no head both parsers take", raw)
		}
	}
}

// FuzzFrontStripHop: whatever response head fasthttp and net/http both
// take, frontStripHop removes what hopFree does and keeps the rest in
// order.
func FuzzFrontStripHop(f *testing.F) {
	for _, raw := range frontStripHopCases {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		checkFrontStripHop(t, raw)
	})
}
