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

// newRequest builds the request of a header block that opens a stream,
// or says why it is malformed. The Framer has already checked the field
// names and values, the order of pseudo-fields and their duplicates; what
// is left is what HTTP/2 asks of a request. The request carries ctx;
// its Body is the caller's to set but when endStream says there is none.
// ContentLength is the declared length (-1 when none), 0 when there is no
// body.
func newRequest(ctx context.Context, fields []hpack.HeaderField, endStream bool, remoteAddr string) (*http.Request, error) {
	var method, scheme, authority, path string
	header := make(http.Header, len(fields))
	// The values of names seen once share one backing array, as
	// net/textproto's reader does: one allocation, not one per field.
	var vals []string
	var cookies []string
	for _, f := range fields {
		if f.IsPseudo() {
			switch f.Name {
			case ":method":
				method = f.Value
			case ":scheme":
				scheme = f.Value
			case ":authority":
				authority = f.Value
			case ":path":
				path = f.Value
			default: // :status, :protocol (no extended CONNECT here)
				return nil, fmt.Errorf("%w: pseudo-header field %s", errMalformed, f.Name)
			}
			continue
		}
		if err := checkField(f); err != nil {
			return nil, err
		}
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
			vals = make([]string, len(fields))
		}
		vals[0] = f.Value
		header[key] = vals[:1:1]
		vals = vals[1:]
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}

	r := http.Request{
		Method:     method,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     header,
		RemoteAddr: remoteAddr,
		Host:       authority,
	}
	if r.Host == "" {
		r.Host = header.Get("Host")
	}
	switch {
	case method == "":
		return nil, fmt.Errorf("%w: no :method", errMalformed)
	case !httpguts.ValidHostHeader(r.Host):
		return nil, fmt.Errorf("%w: invalid :authority", errMalformed)
	case method == http.MethodConnect:
		// RFC 9113 §8.5: :authority only.
		if scheme != "" || path != "" || authority == "" {
			return nil, fmt.Errorf("%w: CONNECT with :scheme or :path, or without :authority", errMalformed)
		}
		r.URL = &url.URL{Host: authority}
		r.RequestURI = authority
	default:
		if path == "" || (scheme != "http" && scheme != "https") {
			return nil, fmt.Errorf("%w: :path empty or :scheme not http(s)", errMalformed)
		}
		if !validMethod(method) {
			return nil, fmt.Errorf("%w: invalid :method", errMalformed)
		}
		u, err := url.ParseRequestURI(path)
		if err != nil && path != "*" {
			return nil, fmt.Errorf("%w: :path: %w", errMalformed, err)
		}
		if path == "*" {
			if method != http.MethodOptions {
				return nil, fmt.Errorf("%w: :path * for %s", errMalformed, method)
			}
			u = &url.URL{Path: "*"}
		}
		r.URL = u
		r.RequestURI = path
	}

	length, err := contentLength(header)
	switch {
	case err != nil:
		return nil, err
	case endStream && length > 0:
		return nil, fmt.Errorf("%w: content-length %d and no body", errMalformed, length)
	case endStream:
		r.ContentLength = 0
		r.Body = http.NoBody
	default:
		r.ContentLength = length
	}
	// Built on the stack: WithContext's copy is the one allocation.
	return r.WithContext(ctx), nil
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

// contentLength is the declared length of a request's body, -1 when none
// is declared. Repeated fields must agree (RFC 9110 §8.6).
func contentLength(h http.Header) (int64, error) {
	vs := h["Content-Length"]
	if len(vs) == 0 {
		return -1, nil
	}
	n, err := strconv.ParseUint(vs[0], 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%w: content-length %q", errMalformed, vs[0])
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return 0, fmt.Errorf("%w: content-length fields disagree", errMalformed)
		}
	}
	return int64(n), nil
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
