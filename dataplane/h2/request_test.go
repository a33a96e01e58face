package h2

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func fields(kv ...string) []hpack.HeaderField {
	var fs []hpack.HeaderField
	for i := 0; i < len(kv); i += 2 {
		fs = append(fs, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return fs
}

var get = []string{":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/x?y=1"}

func with(base []string, kv ...string) []string { return append(append([]string(nil), base...), kv...) }

// TestNewRequest: what a handler sees of a header block, and which blocks
// are malformed (RFC 9113 §8.1.1, §8.2, §8.3) and never reach one.
func TestNewRequest(t *testing.T) {
	for _, tc := range []struct {
		name      string
		kv        []string
		endStream bool
		check     func(*testing.T, *http.Request)
		malformed bool
	}{
		{name: "GET", kv: get, endStream: true, check: func(t *testing.T, r *http.Request) {
			if r.Method != http.MethodGet || r.Host != "a.test" || r.URL.Path != "/x" || r.URL.RawQuery != "y=1" ||
				r.RequestURI != "/x?y=1" || r.ProtoMajor != 2 || r.ContentLength != 0 || r.Body != http.NoBody {
				t.Errorf("got %s %s%s %q major %d length %d", r.Method, r.Host, r.URL, r.RequestURI, r.ProtoMajor, r.ContentLength)
			}
		}},
		{name: "body of declared length", kv: with(get, "content-length", "5"), check: func(t *testing.T, r *http.Request) {
			if r.ContentLength != 5 {
				t.Errorf("ContentLength %d, want 5", r.ContentLength)
			}
		}},
		{name: "body of unknown length", kv: get, check: func(t *testing.T, r *http.Request) {
			if r.ContentLength != -1 {
				t.Errorf("ContentLength %d, want -1", r.ContentLength)
			}
		}},
		{name: "host field when no :authority", kv: []string{":method", "GET", ":scheme", "http", ":path", "/", "host", "h.test"}, endStream: true,
			check: func(t *testing.T, r *http.Request) {
				if r.Host != "h.test" {
					t.Errorf("Host %q, want h.test", r.Host)
				}
			}},
		{name: "repeated names keep their order", kv: with(get, "x-a", "1", "accept", "*/*", "x-a", "2", "x-b", "3"), endStream: true,
			check: func(t *testing.T, r *http.Request) {
				if got := r.Header["X-A"]; len(got) != 2 || got[0] != "1" || got[1] != "2" {
					t.Errorf("X-A %q, want [1 2]", got)
				}
				// Values share a backing array: appending to one
				// field must not change another.
				r.Header["Accept"] = append(r.Header["Accept"], "text/html")
				if got := r.Header["X-B"]; len(got) != 1 || got[0] != "3" {
					t.Errorf("after appending to Accept, X-B is %q, want [3]", got)
				}
				if got := r.Header["Accept"]; len(got) != 2 || got[0] != "*/*" {
					t.Errorf("Accept %q, want [*/* text/html]", got)
				}
			}},
		{name: "cookie crumbs joined", kv: with(get, "cookie", "a=1", "x-y", "z", "cookie", "b=2"), endStream: true,
			check: func(t *testing.T, r *http.Request) {
				if got := r.Header["Cookie"]; len(got) != 1 || got[0] != "a=1; b=2" {
					t.Errorf("Cookie %q, want one field \"a=1; b=2\"", got)
				}
				if r.Header.Get("X-Y") != "z" {
					t.Errorf("X-Y %q", r.Header.Get("X-Y"))
				}
			}},
		{name: "OPTIONS *", kv: []string{":method", "OPTIONS", ":scheme", "http", ":authority", "a", ":path", "*"}, endStream: true,
			check: func(t *testing.T, r *http.Request) {
				if r.URL.Path != "*" {
					t.Errorf("path %q", r.URL.Path)
				}
			}},
		{name: "CONNECT", kv: []string{":method", "CONNECT", ":authority", "b.test:443"}, check: func(t *testing.T, r *http.Request) {
			if r.URL.Host != "b.test:443" || r.RequestURI != "b.test:443" {
				t.Errorf("URL %v, RequestURI %q", r.URL, r.RequestURI)
			}
		}},
		{name: "te: trailers", kv: with(get, "te", "trailers"), endStream: true},
		{name: "no :method", kv: get[2:], malformed: true},
		{name: "no :path", kv: get[:6], malformed: true},
		{name: "scheme not http", kv: []string{":method", "GET", ":scheme", "ftp", ":path", "/"}, malformed: true},
		{name: ":status in a request", kv: with(get, ":status", "200"), malformed: true},
		{name: ":protocol (no extended CONNECT)", kv: with(get, ":protocol", "websocket"), malformed: true},
		{name: "connection field", kv: with(get, "connection", "close"), malformed: true},
		{name: "transfer-encoding", kv: with(get, "transfer-encoding", "chunked"), malformed: true},
		{name: "upgrade", kv: with(get, "upgrade", "h2c"), malformed: true},
		{name: "te other than trailers", kv: with(get, "te", "gzip"), malformed: true},
		{name: "content-length without body", kv: with(get, "content-length", "3"), endStream: true, malformed: true},
		{name: "content-length not a number", kv: with(get, "content-length", "3x"), malformed: true},
		{name: "content-lengths disagree", kv: with(get, "content-length", "3", "content-length", "4"), malformed: true},
		{name: "CONNECT with :path", kv: []string{":method", "CONNECT", ":authority", "b:1", ":path", "/"}, malformed: true},
		{name: "* not OPTIONS", kv: []string{":method", "GET", ":scheme", "http", ":path", "*"}, malformed: true},
		{name: "method not a token", kv: []string{":method", "G T", ":scheme", "http", ":path", "/"}, malformed: true},
		{name: "authority with a space", kv: []string{":method", "GET", ":scheme", "http", ":authority", "a b", ":path", "/"}, malformed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := newRequest(context.Background(), fields(tc.kv...), tc.endStream, "192.0.2.1:5")
			if tc.malformed {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("newRequest: %v, %v; want errMalformed", r, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("newRequest: %v", err)
			}
			if r.RemoteAddr != "192.0.2.1:5" {
				t.Errorf("RemoteAddr %q", r.RemoteAddr)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// TestReadRequest: what an Async taker is offered of a header block:
// the regular fields as the client sent them, in its order, a Cookie's
// crumbs apart, and the Host field standing in for :authority.
func TestReadRequest(t *testing.T) {
	kv := []string{":method", "GET", ":scheme", "https", ":path", "/x%20y?z=1",
		"cookie", "a=1", "host", "h.test", "accept", "*/*", "cookie", "b=2", "host", "other"}
	r, err := readRequest(fields(kv...), true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != http.MethodGet || r.Host != "h.test" || r.URL.Path != "/x y" || r.URL.RawQuery != "z=1" || r.RequestURI != "/x%20y?z=1" {
		t.Errorf("got %s %s %q %q %q", r.Method, r.Host, r.URL.Path, r.URL.RawQuery, r.RequestURI)
	}
	if want := fields(kv[6:]...); !reflect.DeepEqual(r.Fields, want) {
		t.Errorf("fields %v, want %v", r.Fields, want)
	}
	if r, err := readRequest(fields(get...), true); err != nil || r.Fields != nil || r.Host != "a.test" {
		t.Errorf("no regular field: %v, %v; want none and the :authority", r, err)
	}
}

// TestCheckTrailers: trailers carry no pseudo-fields and no hop fields;
// framing and routing fields are dropped.
func TestCheckTrailers(t *testing.T) {
	h, err := checkTrailers(fields("x-sum", "abc", "content-length", "3", "host", "evil"))
	if err != nil || h.Get("X-Sum") != "abc" || h.Get("Content-Length") != "" || h.Get("Host") != "" {
		t.Errorf("checkTrailers: %v, %v; want only X-Sum", h, err)
	}
	for _, kv := range [][]string{{":path", "/"}, {"connection", "close"}} {
		if _, err := checkTrailers(fields(kv...)); !errors.Is(err, errMalformed) {
			t.Errorf("trailers %q: %v, want errMalformed", kv, err)
		}
	}
}

// TestStatusValue: every status is written as its three digits, the
// common ones from constants.
func TestStatusValue(t *testing.T) {
	for code := 100; code <= 999; code++ {
		if got := statusValue(code); got != strconv.Itoa(code) {
			t.Errorf("statusValue(%d) = %q", code, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = statusValue(200) }); n != 0 {
		t.Errorf("%v allocations for 200", n)
	}
}

// TestParsePath: a :path parses as url.ParseRequestURI parses it, and
// the paths most requests have take plainPath, which allocates nothing.
func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path  string
		plain bool
	}{
		{"/", true},
		{"/index.html", true},
		{"/a/b-c_d.e~f/$&+,:;=@", true},
		{"/x?y=1&z=%41+b", true},
		{"/search?q=a/b?c", true},
		{"//double/slash", true},
		{"/a?", true},  // ForceQuery
		{"/a??", true}, // a query of "?"
		{"/a%41", false},
		{"/a!b", false}, // url keeps it in RawPath
		{"/a b", false},
		{"/a#b", false},
		{"/a?b#c", false},
		{"/caf\xc3\xa9", false},
		{"/a\tb", false},
		{"/a?b\x7f", false},
		{"*", false},
		{"a/b", false},
		{"", false},
		{"http://a.test/x", false},
	} {
		want, wantErr := url.ParseRequestURI(tc.path)
		got, err := parsePath(tc.path)
		if (err != nil) != (wantErr != nil) || (err == nil && !sameURL(got, *want)) {
			t.Errorf("parsePath(%q) = %#v, %v; url.ParseRequestURI: %#v, %v", tc.path, got, err, want, wantErr)
		}
		if _, plain := plainPath(tc.path); plain != tc.plain {
			t.Errorf("plainPath(%q) took it: %v, want %v", tc.path, plain, tc.plain)
		}
	}
}

// TestReadRequestAllocatesNothing: reading a GET's head with a plain
// path allocates nothing, as an Async taker on a relay loop gets it.
func TestReadRequestAllocatesNothing(t *testing.T) {
	fs := fields(with(get, "user-agent", "test", "accept", "*/*")...)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := readRequest(fs, true); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations a request", n)
	}
}

// FuzzPlainPath holds plainPath to url.ParseRequestURI's result for
// every path it takes, and parsePath to it for every path.
func FuzzPlainPath(f *testing.F) {
	for _, p := range []string{"/", "/x?y=1", "/a?", "/a??", "/a%41", "/a!b", "//a", "/a#b", "*", "/a?b\x7f"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		want, wantErr := url.ParseRequestURI(path)
		if got, plain := plainPath(path); plain && (wantErr != nil || !sameURL(got, *want)) {
			t.Fatalf("plainPath(%q) = %#v; url.ParseRequestURI: %#v, %v", path, got, want, wantErr)
		}
		got, err := parsePath(path)
		if (err != nil) != (wantErr != nil) || (err == nil && !sameURL(got, *want)) {
			t.Fatalf("parsePath(%q) = %#v, %v; url.ParseRequestURI: %#v, %v", path, got, err, want, wantErr)
		}
	})
}

// sameURL compares two URLs field by field, their user information by
// what it says.
func sameURL(a, b url.URL) bool {
	ua, ub := a.User, b.User
	a.User, b.User = nil, nil
	return a == b && ua.String() == ub.String()
}
