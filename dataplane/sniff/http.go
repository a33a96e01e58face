package sniff

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
)

// httpMaxMethodLen bounds the method token so that a stream of token
// characters (base64, a long identifier) is not taken for a request line
// forever. RFC 9110 sets no limit; the longest registered method,
// UPDATEREDIRECTREF, has 17 characters.
const httpMaxMethodLen = 32

// httpVersionPrefix is the start of every HTTP/1.x version (RFC 9112 §2.3).
const httpVersionPrefix = "HTTP/1."

// HTTP2Preface is the client connection preface of HTTP/2 (RFC 9113 §3.4,
// https://www.rfc-editor.org/rfc/rfc9113#section-3.4): what a client that
// negotiated "h2" by ALPN, or knows the server speaks HTTP/2 ("prior
// knowledge"), sends first. It reads as an HTTP/1 request line with the
// reserved method PRI and version HTTP/2.0, and names no host.
const HTTP2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP sniffs an HTTP/1.x request (RFC 9112,
// https://www.rfc-editor.org/rfc/rfc9112), WebSocket opening handshakes
// included, and extracts Method, Host, Path and WebSocket.
//
// The request line is checked byte by byte as it arrives (RFC 9112 §3):
// a method token (RFC 9110 §5.6.2) of at most 32 characters, SP, a
// request-target without spaces or controls, SP, "HTTP/1." and a digit,
// CR LF. Anything else is NoMatch at the first byte that cannot fit, so a
// TLS record (0x16), an OpenVPN length and "SSH-2.0-…" are refused early.
// The HTTP/2 connection preface (HTTP2Preface) is the one other start that
// matches: Method "PRI", Path "*" and no Host, since HTTP/2 carries the host
// in each stream's :authority; the dataplane routes such a connection by
// the TLS server name it came in with. Lines end in CR LF only: a bare CR
// or LF in the request line or header block is NoMatch as soon as it shows
// (so is a hand-typed "GET / HTTP/1.0\n\n"). Match needs the whole header block,
// up to the first CR LF CR LF within MaxBytes, so that Host is known; the
// block is then parsed by net/http's ReadRequest, and a request it refuses
// is NoMatch, as are two Host headers, a Host value that is not a host
// (RFC 9112 §3.2: a server answers such requests 400), and an HTTP/1.1
// request with no host at all (CONNECT excepted). A header block that does
// not end within MaxBytes is NoMatch.
func HTTP(b []byte) (Verdict, Info) {
	return sniffHTTP(b, false)
}

// WebSocket sniffs a WebSocket opening handshake (RFC 6455 §4.1,
// https://www.rfc-editor.org/rfc/rfc6455#section-4.1): an HTTP/1.1 (or later
// 1.x) GET with an Upgrade header holding the token "websocket" and a
// Connection header holding the token "upgrade" (both case-insensitive) and a
// non-empty Sec-WebSocket-Key. Sec-WebSocket-Version is left to the backend,
// which answers 426 to a version it does not speak. A plain HTTP request is
// NoMatch; so is, as soon as the request line shows it, any method but GET
// or HTTP/1.0. Info is HTTP's, with WebSocket true.
func WebSocket(b []byte) (Verdict, Info) {
	return sniffHTTP(b, true)
}

// sniffHTTP is HTTP and WebSocket: one parse, two acceptance rules.
func sniffHTTP(b []byte, webSocketOnly bool) (Verdict, Info) {
	b = clip(b)
	switch {
	case len(b) >= len(HTTP2Preface) && string(b[:len(HTTP2Preface)]) == HTTP2Preface:
		if webSocketOnly {
			return NoMatch, Info{} // no HTTP/1.1 Upgrade in HTTP/2
		}
		return Match, Info{Method: "PRI", Path: "*"}
	case len(b) < len(HTTP2Preface) && strings.HasPrefix(HTTP2Preface, string(b)) && !webSocketOnly:
		// "PRI * HTTP/" may still become either version.
		return NeedMore, Info{}
	}
	method, minor, lineEnd, v := scanRequestLine(b)
	if v != Match {
		return v, Info{}
	}
	if webSocketOnly && (string(method) != http.MethodGet || minor == '0') {
		return NoMatch, Info{}
	}
	// The header block ends at the first empty line; the request line's
	// CR LF can be the first half of the CR LF CR LF.
	i := bytes.Index(b[lineEnd-2:], []byte("\r\n\r\n"))
	blockEnd := len(b)
	if i >= 0 {
		blockEnd = lineEnd - 2 + i + 4
	}
	if hasBareCRorLF(b[:blockEnd], lineEnd) {
		return NoMatch, Info{}
	}
	if i < 0 {
		if len(b) == MaxBytes {
			return NoMatch, Info{}
		}
		return NeedMore, Info{}
	}
	block := b[:blockEnd]
	if webSocketOnly && !containsFold(block[lineEnd:], "websocket") {
		// No Upgrade header can list the token: refuse without parsing,
		// so plain requests cost a WebSocket route no allocation.
		return NoMatch, Info{}
	}
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(block), len(block)))
	if err != nil {
		return NoMatch, Info{}
	}
	host, ok := RouteHost(req.Host)
	if !ok || (host == "" && req.ProtoAtLeast(1, 1) && req.Method != http.MethodConnect) {
		return NoMatch, Info{}
	}
	path := req.URL.Path
	if path == "" && req.Method != http.MethodConnect {
		path = "/" // an absolute-form target with an empty path (RFC 9110 §4.2.3)
	}
	ws := IsWebSocketUpgrade(req)
	if webSocketOnly && !ws {
		return NoMatch, Info{}
	}
	return Match, Info{Method: req.Method, Host: host, Path: path, WebSocket: ws}
}

// scanRequestLine checks the request line as far as b goes and, once it is
// complete, returns the method, the minor version digit and the offset just
// past its CR LF.
func scanRequestLine(b []byte) (method []byte, minor byte, end int, v Verdict) {
	i := 0
	for i < len(b) && isTokenChar(b[i]) {
		i++
		if i > httpMaxMethodLen {
			return nil, 0, 0, NoMatch
		}
	}
	if i == len(b) {
		return nil, 0, 0, NeedMore
	}
	if i == 0 || b[i] != ' ' {
		return nil, 0, 0, NoMatch
	}
	method = b[:i]

	j := i + 1
	for j < len(b) && b[j] > ' ' && b[j] != 0x7f {
		j++
	}
	if j == len(b) {
		return nil, 0, 0, NeedMore
	}
	if j == i+1 || b[j] != ' ' {
		return nil, 0, 0, NoMatch
	}

	rest := b[j+1:]
	if v := prefixVerdict(rest, httpVersionPrefix); v != Match {
		return nil, 0, 0, v
	}
	rest = rest[len(httpVersionPrefix):]
	if len(rest) == 0 {
		return nil, 0, 0, NeedMore
	}
	minor = rest[0]
	if minor < '0' || minor > '9' {
		return nil, 0, 0, NoMatch
	}
	if v := prefixVerdict(rest[1:], "\r\n"); v != Match {
		return nil, 0, 0, v
	}
	return method, minor, j + 1 + len(httpVersionPrefix) + 1 + 2, Match
}

// isTokenChar reports a tchar of RFC 9110 §5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// RouteHost turns a Host value (uri-host [":" port], RFC 9112 §3.2) into the
// host name routes compare: no port, no IPv6 brackets, no trailing dot, lower
// case. It refuses values that are not a host, as a server would. It is
// exported so that the requests after a connection's first (http mode) are
// routed by the same host as the first.
func RouteHost(h string) (string, bool) {
	if h == "" {
		return "", true
	}
	for i := 0; i < len(h); i++ {
		if !isHostChar(h[i]) {
			return "", false
		}
	}
	port := ""
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", false
		}
		h, port = h[1:end], h[end+1:]
		if port != "" && port[0] != ':' {
			return "", false
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		h, port = h[:i], h[i:]
	}
	if port != "" {
		for _, c := range []byte(port[1:]) {
			if c < '0' || c > '9' {
				return "", false // also refuses a bare IPv6 address
			}
		}
	}
	// One trailing dot makes a name absolute; a second leaves an empty
	// label, which no host has.
	h = strings.TrimSuffix(h, ".")
	if h == "" || strings.HasSuffix(h, ".") || strings.ContainsAny(h, "[]") {
		return "", false
	}
	return strings.ToLower(h), true
}

// isHostChar reports the bytes of an RFC 3986 host and port: unreserved,
// sub-delims, ':', '[', ']' and '%' (pct-encoding and IPv6 zone ids).
func isHostChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:[]%", c) >= 0
}

// IsWebSocketUpgrade applies RFC 6455 §4.1 (client requirements 2, 5, 6, 7)
// to a parsed request. It is exported so that http mode tells a WebSocket
// handshake from other requests as the sniffer does.
func IsWebSocketUpgrade(req *http.Request) bool {
	return req.Method == http.MethodGet && req.ProtoAtLeast(1, 1) &&
		hasToken(req.Header["Upgrade"], "websocket") &&
		hasToken(req.Header["Connection"], "upgrade") &&
		len(req.Header["Sec-Websocket-Key"]) > 0 && req.Header["Sec-Websocket-Key"][0] != ""
}

// hasToken reports whether a comma-separated header (RFC 9110 §5.6.1), over
// all its field lines, lists token, compared case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.Trim(item, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// hasBareCRorLF reports a CR or LF from b[from:] on that is not part of a
// CR LF pair; a CR that ends b may still be. net/http takes a bare LF as a
// line end (RFC 9112 §2.2 allows it); a backend that does not would read the
// header lines, Host among them, differently from the router, so such
// requests are refused, and as soon as the byte shows.
func hasBareCRorLF(b []byte, from int) bool {
	for i := from; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 < len(b) && b[i+1] != '\n' {
				return true
			}
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				return true
			}
		}
	}
	return false
}

// containsFold reports whether b contains the lower-case ASCII word,
// ignoring case, without allocating.
func containsFold(b []byte, word string) bool {
	for i := 0; i+len(word) <= len(b); i++ {
		if b[i]|0x20 == word[0] && strings.EqualFold(string(b[i:i+len(word)]), word) {
			return true
		}
	}
	return false
}
