package dataplane

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/portmux/portmux/dataplane/h1"
)

// frontHeadCases are request heads with what appendFrontHead filters:
// hop-by-hop fields and those named by Connection, forwarding fields a
// client made up, HTTP2-Settings, cookies, an absolute target, bodies of
// every framing, repeated and folded fields.
var frontHeadCases = []string{
	"GET / HTTP/1.1\r\nHost: www.test\r\n\r\n",
	"GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n" +
		"Cookie: session=0123456789abcdef\r\nCookie: b=2;c=3\r\nConnection: keep-alive\r\n\r\n",
	"GET http://www.test/abs?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n",
	"POST /form HTTP/1.1\r\nHost: www.test\r\nContent-Length: 3\r\n\r\n",
	"POST /form HTTP/1.1\r\nHost: www.test\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n",
	"POST /up HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nTe: trailers\r\n\r\n",
	"GET /spoof HTTP/1.1\r\nHost: www.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n" +
		"x-real-ip: 8.8.8.8\r\nForwarded: for=1.1.1.1\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n",
	"GET /hop HTTP/1.1\r\nHost: www.test\r\nConnection: X-Secret, keep-alive\r\nConnection: x-other\r\nX-Secret: 1\r\n" +
		"X-Other: 2\r\nX-Kept: 3\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n" +
		"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
	"GET /close HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
	"GET /fold HTTP/1.1\r\nHost: www.test\r\nX-Fold: a\r\n b\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: www.test\r\nUser-Agent:\r\n\r\n",
}

// frontRewrite is the request rewrite every path made before
// appendFrontHead, kept as its oracle: in copied into out, whose fields
// are then set and deleted one by one.
func frontRewrite(h *httpConn, in, out *fasthttp.RequestHeader, t frontTarget, ws bool) {
	in.CopyTo(out)
	out.SetNoDefaultContentType(true) // none is added to a body without one
	out.SetProtocol("HTTP/1.1")
	if t.uri != nil {
		out.SetRequestURIBytes(t.uri)
	}
	out.SetHost(t.host)
	upgrade := string(in.Peek("Upgrade"))
	var stack [256]byte
	list := connectionList(out.PeekAll("Connection"), stack[:0])
	for len(list) > 0 {
		var tok []byte
		if tok, list = nextToken(list); len(tok) > 0 {
			out.DelBytes(tok)
		}
	}
	for _, name := range frontHopHeaders {
		out.Del(name)
	}
	if !ws {
		out.Del(http2Settings)
	}
	if ws {
		out.Set("Connection", "Upgrade")
		out.Set("Upgrade", upgrade)
	}
	hh := h.forHost(t.host)
	out.Set("X-Forwarded-For", h.clientIP)
	out.Set("X-Forwarded-Host", t.host)
	out.Set("X-Forwarded-Proto", h.proto)
	out.Set("X-Real-Ip", h.clientIP)
	out.Set("Forwarded", hh.fwd[0])
}

// oldFrontHead is what the loops sent before appendFrontHead:
// frontRewrite into a second header, its framing set, then AppendBytes.
func oldFrontHead(h *httpConn, in *fasthttp.RequestHeader, t frontTarget, kind h1.Kind, length int64) []byte {
	var out fasthttp.RequestHeader
	frontRewrite(h, in, &out, t, false)
	switch kind {
	case h1.Sized:
		out.SetContentLength(int(length))
	case h1.Chunked:
		out.SetContentLength(-1)
	}
	return out.AppendBytes(nil)
}

// backendView is what a backend reads of a head: net/http's parse, with
// the fields in a canonical map (the order of different names carries no
// meaning, RFC 9110 §5.3) and the body's framing, or why it refuses it.
// With sorted, each name's values are sorted too: frontRewrite's
// deletions can reorder them (testdata/fuzz/FuzzAppendFrontHead/
// 8c26a895e5e8971f: "X-:" then "X-:0" came out "0" first), where
// appendFrontHead keeps the client's order (TestAppendFrontHeadKeepsOrder).
func backendView(head []byte, sorted bool) string {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		return "refused: " + err.Error()
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range req.Header {
			if !yield(k) {
				return
			}
		}
	})
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s host=%q length=%d te=%q\n", req.Method, req.RequestURI, req.Proto, req.Host, req.ContentLength, req.TransferEncoding)
	for _, k := range keys {
		vs := req.Header[k]
		if sorted {
			vs = slices.Sorted(slices.Values(vs))
		}
		fmt.Fprintf(&b, "%s: %q\n", k, vs)
	}
	return b.String()
}

// checkFrontHead compares the two rewrites of raw, a head fasthttp
// parsed, and reports whether raw was one.
func checkFrontHead(t *testing.T, raw string) bool {
	t.Helper()
	var in fasthttp.RequestHeader
	if in.Read(bufio.NewReader(bytes.NewReader([]byte(raw)))) != nil {
		return false
	}
	target, _, ok := frontTargetOfHeader(&in)
	if !ok {
		return false
	}
	kind, length := h1.RequestBody(&in)
	if kind == h1.UntilClose {
		return false
	}
	h := &httpConn{clientIP: "192.0.2.1", proto: "http"}
	want := oldFrontHead(h, &in, target, kind, length)
	got, _ := appendFrontHead(nil, nil, h, &in, target, kind, length, nil)
	if g, w := backendView(got, true), backendView(want, true); g != w {
		t.Errorf("for %q a backend reads\n%s\nwant (frontRewrite's)\n%s", raw, g, w)
	}
	return true
}

// TestAppendFrontHead: the head the relay loops send a backend means to
// it what frontRewrite's did, field for field.
func TestAppendFrontHead(t *testing.T) {
	t.Parallel()
	for _, raw := range frontHeadCases {
		if !checkFrontHead(t, raw) {
			t.Errorf("fasthttp refused the case %q", raw)
		}
		var in fasthttp.RequestHeader
		_ = in.Read(bufio.NewReader(bytes.NewReader([]byte(raw))))
		target, _, _ := frontTargetOfHeader(&in)
		kind, length := h1.RequestBody(&in)
		head, _ := appendFrontHead(nil, nil, &httpConn{clientIP: "192.0.2.1", proto: "http"}, &in, target, kind, length, nil)
		if v := backendView(head, false); strings.HasPrefix(v, "refused") {
			t.Errorf("for %q a backend %s", raw, v)
		}
	}
}

// FuzzAppendFrontHead: whatever head fasthttp parses, appendFrontHead's
// rewrite means what frontRewrite's did.
func FuzzAppendFrontHead(f *testing.F) {
	for _, raw := range frontHeadCases {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		checkFrontHead(t, raw)
	})
}

// TestAppendFrontHeadKeepsOrder: the values of one name reach the backend
// in the client's order (RFC 9110 §5.3), whatever else the head holds.
func TestAppendFrontHeadKeepsOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw, name string
		want      []string
	}{
		// Found by FuzzAppendFrontHead: frontRewrite sent "0" first.
		{"0 / HTTP/0.0\n00000:\nConneCtion:\nX-:\nX-:0\r\n\r\n", "X-", []string{"", "0"}},
		{"GET / HTTP/1.1\r\nHost: www.test\r\nConnection: x-drop\r\nX-Drop: 1\r\nX-Order: a\r\nX-Order: \r\nX-Order: c\r\n\r\n", "X-Order", []string{"a", "", "c"}},
	} {
		var in fasthttp.RequestHeader
		if err := in.Read(bufio.NewReader(bytes.NewReader([]byte(tc.raw)))); err != nil {
			t.Fatalf("fasthttp refused %q: %v", tc.raw, err)
		}
		target, _, _ := frontTargetOfHeader(&in)
		kind, length := h1.RequestBody(&in)
		head, _ := appendFrontHead(nil, nil, &httpConn{clientIP: "192.0.2.1", proto: "http"}, &in, target, kind, length, nil)
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("a backend cannot read %q: %v", head, err)
		}
		if got := req.Header[tc.name]; !slices.Equal(got, tc.want) {
			t.Errorf("for %q the backend reads %s: %q, want %q", tc.raw, tc.name, got, tc.want)
		}
	}
}
