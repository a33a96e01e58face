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
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 404 \r\nTrailer: X-Sum\r\nX-A: 1\r\nX-A: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
	// More names in Connection than frontStripHopInOrder compares one by
	// one, in any case, and one of them a field fasthttp keeps apart.
	"HTTP/1.1 200 OK\r\nConnection: T0, t1, T2, T3, T4, T5, T6, T7, T8, t9, set-cookie\r\n" +
		"T1: x\r\nX-A: 1\r\nT9: y\r\nSet-Cookie: a=1\r\nX-A: 2\r\nT0: z\r\n\r\n",
	longHead(40),
}

// longHead is a response head of n fields: repeated in turn,
// with a hop-by-hop field first.
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
	var inOrder fasthttp.ResponseHeader
	var present uint16
	for k := range h.All() {
		present |= hopBit(k)
	}
	h.CopyTo(&inOrder)
	frontStripHop(&h)
	if got := hopFree(h.AppendBytes(nil)); got != want {
		t.Errorf("for %q a client reads\n%s\nwant\n%s", raw, got, want)
	}
	// The in-order strip, whether or not a name repeats.
	stripHop(&inOrder, present, true)
	if got := hopFree(inOrder.AppendBytes(nil)); got != want {
		t.Errorf("stripped in order, for %q a client reads\n%s\nwant\n%s", raw, got, want)
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

// TestFrontStripHopKeepsTheFraming: a stripped response keeps the
// status line and the body length the backend sent, as the callers that
// read them after the strip expect (the relay loops write a response to
// HEAD with the length it had), and closes no connection: the client's
// is the proxy's to keep or close.
func TestFrontStripHopKeepsTheFraming(t *testing.T) {
	t.Parallel()
	for _, raw := range frontStripHopCases {
		if !checkStripFraming(t, raw) {
			t.Errorf("fasthttp does not read the case %q", raw)
		}
	}
}

// checkStripFraming strips raw with frontStripHop and in order, and
// compares their status lines and framing with the backend's; it
// reports whether fasthttp read raw.
func checkStripFraming(t *testing.T, raw string) bool {
	t.Helper()
	var parsed fasthttp.ResponseHeader
	parsed.SetNoDefaultContentType(true)
	if parsed.Read(bufio.NewReader(strings.NewReader(raw))) != nil {
		return false
	}
	var present uint16
	for k := range parsed.All() {
		present |= hopBit(k)
	}
	framing := func(h *fasthttp.ResponseHeader, closing bool) string {
		return fmt.Sprintf("%s %d %q length %d HTTP/1.1 %t close %t",
			h.Protocol(), h.StatusCode(), h.StatusMessage(), h.ContentLength(), h.IsHTTP11(), closing)
	}
	want := framing(&parsed, false)
	for name, strip := range map[string]func(h *fasthttp.ResponseHeader){
		"frontStripHop": frontStripHop,
		"in order":      func(h *fasthttp.ResponseHeader) { stripHop(h, present, true) },
	} {
		var h fasthttp.ResponseHeader
		parsed.CopyTo(&h)
		strip(&h)
		if got := framing(&h, h.ConnectionClose()); got != want {
			t.Errorf("%q, %s: %s, want %s", raw, name, got, want)
		}
	}
	return true
}

// FuzzFrontStripHop: whatever response head fasthttp and net/http both
// take, frontStripHop removes what hopFree does and keeps the rest in
// order; whatever head fasthttp takes, stripping it in order keeps its
// framing.
func FuzzFrontStripHop(f *testing.F) {
	for _, raw := range frontStripHopCases {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		checkFrontStripHop(t, raw)
		checkStripFraming(t, raw)
	})
}
