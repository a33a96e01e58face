package dataplane

import (
	"bufio"
	"bytes"
	"net/http"
	neturl "net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2/hpack"

	"github.com/portmux/portmux/dataplane/h2"
)

// nginxHead is a response head as the benchmarks' nginx sends it.
const nginxHead = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 12:00:00 GMT\r\n" +
	"Content-Type: text/plain\r\nContent-Length: 17\r\nConnection: keep-alive\r\n" +
	"Last-Modified: Sat, 05 Dec 2026 11:00:00 GMT\r\nETag: \"6751a3f0-11\"\r\nAccept-Ranges: bytes\r\n\r\n"

func parsedHead(tb testing.TB, head string) *fasthttp.ResponseHeader {
	tb.Helper()
	var rh fasthttp.ResponseHeader
	rh.SetNoDefaultContentType(true)
	if err := rh.Read(bufio.NewReaderSize(strings.NewReader(head), len(head)+16)); err != nil {
		tb.Fatalf("fasthttp cannot read %q: %v", head, err)
	}
	return &rh
}

// TestCopyResponseFields holds the copy of a backend's head into an HTTP/2
// response to net/http's reading of the same head: every field, its
// values in order, whether its name is one the copy interns or not.
func TestCopyResponseFields(t *testing.T) {
	for _, tc := range []struct{ name, head string }{
		{"nginx", nginxHead},
		{"repeated names", "HTTP/1.1 200 OK\r\nLink: </a.css>; rel=preload\r\nX-A: 1\r\n" +
			"Link: </b.js>; rel=preload\r\nX-A: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"},
		{"uncommon names only", "HTTP/1.1 204 No Content\r\nX-Request-Id: abc\r\nX-Empty: \r\nStrict-Transport-Security: max-age=1\r\n\r\n"},
		{"no fields", "HTTP/1.1 200 OK\r\n\r\n"},
		{"long value", "HTTP/1.1 200 OK\r\nContent-Security-Policy: " + strings.Repeat("default-src 'self'; ", 200) + "\r\nContent-Length: 3\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.head)), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := res.Header
			// net/http moves these out of the map; fasthttp keeps them.
			if res.ContentLength >= 0 && strings.Contains(tc.head, "Content-Length") {
				want.Set("Content-Length", res.Header.Get("Content-Length"))
			}
			// Without remembered values, with the values of another
			// head remembered, and with this head's own.
			var last responseValues
			copyResponseFields(http.Header{}, parsedHead(t, otherHead), &last)
			for _, from := range []*responseValues{nil, &last, &last} {
				got := http.Header{}
				copyResponseFields(got, parsedHead(t, tc.head), from)
				delete(got, "Connection")
				delete(want, "Connection")
				if !reflect.DeepEqual(got, want) {
					t.Errorf("copied\n%v\nwant\n%v", got, want)
				}
			}
			got := http.Header{}
			copyResponseFields(got, parsedHead(t, tc.head), &last)
			delete(got, "Connection")
			// A value appended to is the header's own: the next field's
			// value must not change.
			for k := range got {
				got[k] = append(got[k], "added")
			}
			for k, vs := range got {
				if vs[len(vs)-1] != "added" || !reflect.DeepEqual(vs[:len(vs)-1], want[k]) {
					t.Errorf("after appending to every field, %s is %q, want %q and added", k, vs, want[k])
				}
			}
		})
	}
}

// otherHead has the common fields of nginxHead with other values.
const otherHead = "HTTP/1.1 200 OK\r\nServer: Apache\r\nDate: Sat, 05 Dec 2026 12:00:01 GMT\r\n" +
	"Content-Type: text/html\r\nContent-Length: 170\r\nLast-Modified: Sat, 05 Dec 2026 11:00:01 GMT\r\n" +
	"ETag: \"1\"\r\nAccept-Ranges: none\r\nLink: <a>\r\nSet-Cookie: a=1\r\nVary: Accept\r\n\r\n"

// TestCopyResponseFieldsReusesValues: a backend connection's second
// response with the same values allocates none of them again.
func TestCopyResponseFieldsReusesValues(t *testing.T) {
	rh := parsedHead(t, nginxHead)
	hd := http.Header{}
	var last responseValues
	fresh := testing.AllocsPerRun(100, func() {
		clear(hd)
		copyResponseFields(hd, rh, nil)
	})
	copyResponseFields(hd, rh, &last)
	reused := testing.AllocsPerRun(100, func() {
		clear(hd)
		copyResponseFields(hd, rh, &last)
	})
	// nginx's head has eight fields, all common but Connection.
	if fresh-reused != 7 {
		t.Errorf("%v allocations per copy remembering values, %v without: want 7 fewer", reused, fresh)
	}
}

// TestAppendEndToEndFields holds the fields a loop-served stream's head
// takes from the backend's, without stripping it, to copyResponseFields'
// header of the head once stripped: the same fields, the values of each
// in the same order, with lower-case names, whether values are
// remembered or not. They come in the order the backend sent them (a
// strip by deletes moves fields of other names), and the backend's
// head is left as it was.
func TestAppendEndToEndFields(t *testing.T) {
	for _, raw := range append(frontStripHopCases, nginxHead,
		"HTTP/1.1 200 OK\r\nLink: </a.css>; rel=preload\r\nX-A: 1\r\nLink: </b.js>; rel=preload\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nX-Request-Id: abc\r\nX-Empty: \r\nStrict-Transport-Security: max-age=1\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: Content-Length, Server\r\nServer: x\r\nContent-Length: 017\r\n\r\n") {
		var last responseValues
		for _, from := range []*responseValues{nil, &last, &last} { // values remembered the third time
			if !checkEndToEndFields(t, raw, from) {
				t.Errorf("fasthttp does not read the case %q", raw)
			}
		}
	}
	for i, name := range commonResponseNames {
		if _, j, ok := commonResponseKey([]byte(http.CanonicalHeaderKey(name))); !ok || j != i {
			t.Errorf("commonResponseNames[%d] is %q, which commonResponseKey gives %d, %v", i, name, j, ok)
		}
	}
}

// checkEndToEndFields compares appendEndToEndFields with a strip and
// copyResponseFields for raw, and reports whether fasthttp read it.
func checkEndToEndFields(t *testing.T, raw string, last *responseValues) bool {
	t.Helper()
	var rh fasthttp.ResponseHeader
	rh.SetNoDefaultContentType(true)
	if rh.Read(bufio.NewReaderSize(strings.NewReader(raw), len(raw)+16)) != nil {
		return false
	}
	before := string(rh.AppendBytes(nil))
	var sent []string
	for k := range rh.All() {
		sent = append(sent, strings.ToLower(string(k)))
	}
	fields := appendEndToEndFields(nil, &rh, last)
	if after := string(rh.AppendBytes(nil)); after != before {
		t.Errorf("%q: the head became %q", raw, after)
	}
	frontStripHop(&rh)
	stripped := http.Header{}
	copyResponseFields(stripped, &rh, nil)
	want := map[string][]string{}
	for k, vs := range stripped {
		want[strings.ToLower(k)] = vs
	}
	got := map[string][]string{}
	for _, f := range fields {
		if f.Name != strings.ToLower(f.Name) {
			t.Errorf("%q: name %q is not lower case", raw, f.Name)
		}
		got[f.Name] = append(got[f.Name], f.Value)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%q: fields\n%v\nwant\n%v", raw, got, want)
	}
	for _, f := range fields { // a subsequence of what the backend sent
		i := slices.Index(sent, f.Name)
		if i < 0 {
			t.Errorf("%q: field %s out of the backend's order %v", raw, f.Name, sent)
			break
		}
		sent = sent[i+1:]
	}
	return true
}

// TestAppendEndToEndFieldsAllocatesNothing: nginx's head costs no
// allocation once its values are remembered.
func TestAppendEndToEndFieldsAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled values at random: allocations are counted without it")
	}
	rh := parsedHead(t, nginxHead)
	var last responseValues
	fields := appendEndToEndFields(nil, rh, &last)
	if n := testing.AllocsPerRun(100, func() { fields = appendEndToEndFields(fields[:0], rh, &last) }); n != 0 {
		t.Errorf("%v allocations per head, want none", n)
	}
}

// FuzzAppendEndToEndFields: whatever head fasthttp reads, its fields go
// to a stream as they would once stripped.
func FuzzAppendEndToEndFields(f *testing.F) {
	for _, raw := range frontStripHopCases {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) { checkEndToEndFields(t, raw, nil) })
}

// BenchmarkCopyResponseFields is the copy of every bodiless HTTP/2
// stream's response head (nginx's) into its ResponseWriter's header.
func BenchmarkCopyResponseFields(b *testing.B) {
	rh := parsedHead(b, nginxHead)
	hd := http.Header{}
	var last responseValues
	b.ReportAllocs()
	for b.Loop() {
		clear(hd)
		copyResponseFields(hd, rh, &last)
	}
}

// BenchmarkAppendEndToEndFields is the head of every loop-served HTTP/2
// stream (nginx's), against the strip it replaced: each run copies the
// parsed head first, as the strip edits it.
func BenchmarkAppendEndToEndFields(b *testing.B) {
	parsed := parsedHead(b, nginxHead)
	for _, bc := range []struct {
		name   string
		fields func(dst []hpack.HeaderField, rh *fasthttp.ResponseHeader, last *responseValues) []hpack.HeaderField
	}{
		{"skipped", appendEndToEndFields},
		{"stripped", func(dst []hpack.HeaderField, rh *fasthttp.ResponseHeader, last *responseValues) []hpack.HeaderField {
			frontStripHop(rh)
			return appendEndToEndFields(dst, rh, last)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var rh fasthttp.ResponseHeader
			var last responseValues
			var fields []hpack.HeaderField
			b.ReportAllocs()
			for b.Loop() {
				parsed.CopyTo(&rh)
				fields = bc.fields(fields[:0], &rh, &last)
			}
		})
	}
}

// TestAppendStreamHead: the head a loop-served HTTP/2 stream's request
// gets, from its fields as the client sent them, is the head
// appendBodilessHead makes of the request a handler would get (its
// header map, a Cookie's crumbs joined), read back field by field; and
// its fields come in the client's order.
func TestAppendStreamHead(t *testing.T) {
	t.Parallel()
	h := &httpConn{clientIP: "192.0.2.7", proto: "https"}
	for _, tc := range []struct {
		name, method, host, path string
		fields                   []string
	}{
		{name: "curl", method: http.MethodGet, host: "www.test", path: "/a/b?c=d&e",
			fields: []string{"user-agent", "curl/8", "accept", "*/*"}},
		{name: "browser", method: http.MethodGet, host: "www.test:8443", path: "/",
			fields: []string{"accept", "text/html", "accept-encoding", "gzip, br", "sec-ch-ua-mobile", "?0",
				"cookie", "a=1", "accept-language", "en", "cookie", "b=2", "user-agent", "Mozilla/5.0"}},
		{name: "values in order, trimmed", method: http.MethodHead, host: "h", path: "/",
			fields: []string{"x-a", "1", "accept", "a", "x-a", " 2\t", "accept", "b"}},
		{name: "crumbs trimmed as one value", method: http.MethodGet, host: "h", path: "/",
			fields: []string{"cookie", " a=1 ", "cookie", " b=2 "}},
		{name: "empty user-agent", method: http.MethodGet, host: "h", path: "/",
			fields: []string{"user-agent", "", "user-agent", "second"}},
		{name: "forwarding and hop fields dropped, te kept", method: http.MethodGet, host: "h", path: "/",
			fields: []string{"x-forwarded-for", "6.6.6.6", "forwarded", "for=6.6.6.6", "x-real-ip", "6.6.6.6",
				"te", "trailers", "proxy-authorization", "Basic x", "trailer", "x-sum", "host", "other", "x-b", "1"}},
		{name: "OPTIONS *", method: http.MethodOptions, host: "h", path: "*"},
		{name: "query cleaned", method: http.MethodGet, host: "h", path: "/p?a=1;b=2&c=%zz&d=4"},
		{name: "escaped path", method: http.MethodTrace, host: "h", path: "/a%20b/%2F?q=%41"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &neturl.URL{Path: "*"}
			if tc.path != "*" {
				var err error
				if u, err = neturl.ParseRequestURI(tc.path); err != nil {
					t.Fatal(err)
				}
			}
			r := h2.Request{Method: tc.method, Host: tc.host, URL: *u, RequestURI: tc.path}
			req := &http.Request{Method: tc.method, Host: tc.host, URL: u, RequestURI: tc.path, Header: http.Header{}}
			var crumbs, order []string
			for i := 0; i < len(tc.fields); i += 2 {
				name, value := tc.fields[i], tc.fields[i+1]
				r.Fields = append(r.Fields, hpack.HeaderField{Name: name, Value: value})
				if name == "cookie" {
					crumbs = append(crumbs, value)
					continue
				}
				req.Header.Add(name, value)
				if !streamSkipped[name] && !slices.Contains(order, name) {
					order = append(order, name)
				}
			}
			if crumbs != nil {
				req.Header.Set("Cookie", strings.Join(crumbs, "; "))
			}
			got, err := h.appendStreamHead(nil, r)
			if err != nil {
				t.Fatal(err)
			}
			want, err := h.appendBodilessHead(nil, req)
			if err != nil {
				t.Fatal(err)
			}
			gotReq, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(got)))
			if err != nil {
				t.Fatalf("%q: %v", got, err)
			}
			wantReq, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(want)))
			if err != nil {
				t.Fatalf("%q: %v", want, err)
			}
			if gotReq.Method != wantReq.Method || gotReq.RequestURI != wantReq.RequestURI || gotReq.Host != wantReq.Host ||
				!reflect.DeepEqual(gotReq.Header, wantReq.Header) {
				t.Errorf("head\n%s\nwant, in any order,\n%s", got, want)
			}
			var sent []string // the client's fields, in the order written
			for line := range strings.SplitSeq(string(got), "\r\n") {
				name, _, _ := strings.Cut(line, ":")
				if name = strings.ToLower(name); slices.Contains(order, name) && !slices.Contains(sent, name) {
					sent = append(sent, name)
				}
			}
			if !slices.Equal(sent, order) {
				t.Errorf("fields written in the order %v, want the client's %v", sent, order)
			}
		})
	}
	if _, err := h.appendStreamHead(nil, h2.Request{Method: http.MethodGet, Host: "a b", URL: neturl.URL{Path: "/"}}); err == nil {
		t.Error("a Host with a space was written")
	}
}
