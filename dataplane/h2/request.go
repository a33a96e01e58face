package h2

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// errMalformed wraps why a request is malformed (RFC 9113 §8.1.1): the
// stream is reset with PROTOCOL_ERROR and no handler sees it.
var errMalformed = errors.New("malformed HTTP/2 request")

// connectionHeaders are the fields that make a message malformed in
// HTTP/2 (RFC 9113 §8.2.2): they describe a hop of HTTP/1.1.
var connectionHeaders = []string{"connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade"}

// Request is the head of a request that opens a stream, checked as a
// handler's *http.Request is (RFC 9113 §8.1.1) but with its fields as
// the client sent them: an Async taker that writes them on to a backend
// needs no header map, whose hashing and canonical names cost more per
// request than the rest of its reading. Its Fields are the server's
// again once Async returns.
type Request struct {
	Method string
	// Host is :authority, or the Host field when there is none.
	Host string
	// URL is :path parsed, or :authority alone for CONNECT; a value, so
	// that the request of an Async taker allocates none (parsePath).
	URL url.URL
	// RequestURI is :path as sent, :authority for CONNECT.
	RequestURI string
	// Fields are the regular fields, names in lower case, in the order
	// the client sent them; a Cookie's crumbs are fields of their own
	// (RFC 9113 §8.2.3).
	Fields []hpack.HeaderField
	// length is the declared Content-Length, -1 when none.
	length int64
}

// newRequest builds the request of a header block that opens a stream,
// or says why it is malformed, as readRequest and Request.http do.
func newRequest(ctx context.Context, fields []hpack.HeaderField, endStream bool, remoteAddr string) (*http.Request, error) {
	r, err := readRequest(fields, endStream)
	if err != nil {
		return nil, err
	}
	return r.http(ctx, endStream, remoteAddr), nil
}

// readRequest reads the head of a header block that opens a stream, or
// says why it is malformed. The Framer has already checked the field
// names and values, the order of pseudo-fields and their duplicates; what
// is left is what HTTP/2 asks of a request. Fields are fields', not a
// copy.
func readRequest(fields []hpack.HeaderField, endStream bool) (Request, error) {
	var scheme, authority, path, host string
	r := Request{length: -1}
	var hostSeen bool
	// Content-Length fields must agree (RFC 9110 §8.6): the first is
	// parsed, the others compared with it.
	var length string
	var lengthSeen, disagree bool
	for i, f := range fields {
		if f.IsPseudo() {
			switch f.Name {
			case ":method":
				r.Method = f.Value
			case ":scheme":
				scheme = f.Value
			case ":authority":
				authority = f.Value
			case ":path":
				path = f.Value
			default: // :status, :protocol (no extended CONNECT here)
				return Request{}, fmt.Errorf("%w: pseudo-header field %s", errMalformed, f.Name)
			}
			continue
		}
		if r.Fields == nil {
			r.Fields = fields[i:] // the Framer puts pseudo-fields first
		}
		if err := checkField(f); err != nil {
			return Request{}, err
		}
		switch f.Name {
		case "host":
			if !hostSeen {
				host, hostSeen = f.Value, true
			}
		case "content-length":
			if !lengthSeen {
				length, lengthSeen = f.Value, true
			} else if f.Value != length {
				disagree = true
			}
		}
	}
	r.Host = authority
	if r.Host == "" {
		r.Host = host
	}
	switch {
	case r.Method == "":
		return Request{}, fmt.Errorf("%w: no :method", errMalformed)
	case !httpguts.ValidHostHeader(r.Host):
		return Request{}, fmt.Errorf("%w: invalid :authority", errMalformed)
	case r.Method == http.MethodConnect:
		// RFC 9113 §8.5: :authority only.
		if scheme != "" || path != "" || authority == "" {
			return Request{}, fmt.Errorf("%w: CONNECT with :scheme or :path, or without :authority", errMalformed)
		}
		r.URL = url.URL{Host: authority}
		r.RequestURI = authority
	default:
		if path == "" || (scheme != "http" && scheme != "https") {
			return Request{}, fmt.Errorf("%w: :path empty or :scheme not http(s)", errMalformed)
		}
		if !validMethod(r.Method) {
			return Request{}, fmt.Errorf("%w: invalid :method", errMalformed)
		}
		u, err := parsePath(path)
		if err != nil && path != "*" {
			return Request{}, fmt.Errorf("%w: :path: %w", errMalformed, err)
		}
		if path == "*" {
			if r.Method != http.MethodOptions {
				return Request{}, fmt.Errorf("%w: :path * for %s", errMalformed, r.Method)
			}
			u = url.URL{Path: "*"}
		}
		r.URL = u
		r.RequestURI = path
	}

	if lengthSeen {
		n, err := strconv.ParseUint(length, 10, 63)
		switch {
		case err != nil:
			return Request{}, fmt.Errorf("%w: content-length %q", errMalformed, length)
		case disagree:
			return Request{}, fmt.Errorf("%w: content-length fields disagree", errMalformed)
		}
		r.length = int64(n)
	}
	if endStream && r.length > 0 {
		return Request{}, fmt.Errorf("%w: content-length %d and no body", errMalformed, r.length)
	}
	return r, nil
}

// http is r as a handler gets it, carrying ctx; its Body is the
// caller's to set but when endStream says there is none. ContentLength
// is the declared length (-1 when none), 0 when there is no body.
func (r *Request) http(ctx context.Context, endStream bool, remoteAddr string) *http.Request {
	header := make(http.Header, len(r.Fields))
	// The values of names seen once share one backing array, as
	// net/textproto's reader does: one allocation, not one per field.
	var vals []string
	var cookies []string
	for _, f := range r.Fields {
		if f.Name == "cookie" {
			// RFC 9113 §8.2.3: the crumbs of one Cookie field, which an
			// HTTP/1.1 backend must get as one.
			cookies = append(cookies, f.Value)
			continue
		}
		key := textproto.CanonicalMIMEHeaderKey(f.Name)
		if vs, ok := header[key]; ok {
			header[key] = append(vs, f.Value)
			continue
		}
		if len(vals) == 0 {
			vals = make([]string, len(r.Fields))
		}
		vals[0] = f.Value
		header[key] = vals[:1:1]
		vals = vals[1:]
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	u := r.URL // a handler's request has its own, as net/http's do
	req := http.Request{
		Method:        r.Method,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		RemoteAddr:    remoteAddr,
		Host:          r.Host,
		URL:           &u,
		RequestURI:    r.RequestURI,
		ContentLength: r.length,
	}
	if endStream {
		req.ContentLength = 0
		req.Body = http.NoBody
	}
	// Built on the stack: WithContext's copy and the URL are the
	// allocations.
	return req.WithContext(ctx)
}

// parsePath is url.ParseRequestURI for a :path, without the allocation
// of a URL for the paths most requests have (plainPath): that URL was
// 144 of the 1,230 bytes, and one of the five allocations, of an h2c
// request carried on a relay loop.
func parsePath(path string) (url.URL, error) {
	if u, ok := plainPath(path); ok {
		return u, nil
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return url.URL{}, err
	}
	return *u, nil
}

// plainPath parses path as url.ParseRequestURI does when it is an
// absolute path of characters a URL's path keeps as they are (letters,
// digits, -._~ and $&+,/:;=@: nothing to unescape, no RawPath), perhaps
// followed by a query of visible ASCII but '#'; false for any other,
// which url parses (FuzzPlainPath holds the two to the same result).
func plainPath(path string) (url.URL, bool) {
	if path == "" || path[0] != '/' {
		return url.URL{}, false
	}
	for i := 1; i < len(path); i++ {
		c := path[i]
		if c == '?' {
			q := path[i+1:]
			for j := range len(q) {
				if q[j] <= ' ' || q[j] >= 0x7f || q[j] == '#' {
					return url.URL{}, false
				}
			}
			return url.URL{Path: path[:i], RawQuery: q, ForceQuery: q == ""}, true
		}
		if !keptInPath(c) {
			return url.URL{}, false
		}
	}
	return url.URL{Path: path}, true
}

// keptInPath reports whether net/url leaves c as it is in a path (its
// shouldEscape for a path: RFC 3986's unreserved characters and the
// reserved ones but '?').
func keptInPath(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~$&+,/:;=@", c) >= 0
}

// checkField refuses what HTTP/2 forbids in a request's regular fields.
func checkField(f hpack.HeaderField) error {
	for _, h := range connectionHeaders {
		if f.Name == h {
			return fmt.Errorf("%w: connection-specific field %q", errMalformed, f.Name)
		}
	}
	if f.Name == "te" && f.Value != "trailers" {
		return fmt.Errorf("%w: te other than trailers", errMalformed)
	}
	return nil
}

// checkTrailers refuses pseudo-fields and forbidden fields in a trailer
// section, and returns it as a header.
func checkTrailers(fields []hpack.HeaderField) (http.Header, error) {
	h := make(http.Header, len(fields))
	for _, f := range fields {
		if f.IsPseudo() {
			return nil, fmt.Errorf("%w: pseudo-header field %s in trailers", errMalformed, f.Name)
		}
		if err := checkField(f); err != nil {
			return nil, err
		}
		key := textproto.CanonicalMIMEHeaderKey(f.Name)
		if !httpguts.ValidTrailerHeader(key) {
			continue // framing and routing fields have no place in trailers
		}
		h[key] = append(h[key], f.Value)
	}
	return h, nil
}

// validMethod: a method is a token (RFC 9110 §9.1).
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return m != ""
}
