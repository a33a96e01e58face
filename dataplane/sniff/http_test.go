package sniff

import (
	"strings"
	"testing"
)

func TestHTTP(t *testing.T) {
	get := func(host, path string) Info { return Info{Method: "GET", Host: host, Path: path} }
	tests := []sniffCase{
		{"empty", "", NeedMore, Info{}},
		{"method so far", "GE", NeedMore, Info{}},
		{"request line so far", "GET /a HTTP/1.", NeedMore, Info{}},
		{"request line, no headers yet", "GET /a HTTP/1.1\r\n", NeedMore, Info{}},
		{"headers not ended", "GET /a HTTP/1.1\r\nHost: a\r\n", NeedMore, Info{}},
		{"simple", "GET /a/b?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n", Match, get("example.com", "/a/b")},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", Match, get("", "/")},
		{"body after headers", "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", Match,
			Info{Method: "POST", Host: "a", Path: "/up"}},
		{"any token method", "MKCOL /dav/ HTTP/1.1\r\nHost: a\r\n\r\n", Match, Info{Method: "MKCOL", Host: "a", Path: "/dav/"}},
		{"absolute-form wins over Host", "GET http://Target.test/x HTTP/1.1\r\nHost: other\r\n\r\n", Match, get("target.test", "/x")},
		{"absolute-form, empty path", "GET http://target.test HTTP/1.1\r\nHost: target.test\r\n\r\n", Match, get("target.test", "/")},
		{"CONNECT", "CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\n", Match,
			Info{Method: "CONNECT", Host: "db.test", Path: ""}},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Match, Info{Method: "OPTIONS", Host: "a", Path: "*"}},
		{"IPv6 literal with port", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]:443\r\n\r\n", Match, get("2001:db8::1", "/")},
		{"IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", Match, get("::1", "/")},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: a.test.:80\r\n\r\n", Match, get("a.test", "/")},
		// One trailing dot makes a name absolute; more leave an empty
		// label, and routes would compare a host ending in a dot.
		{"two trailing dots", "GET / HTTP/1.1\r\nHost: a.test..\r\n\r\n", NoMatch, Info{}},
		{"dots only", "GET * HTTP/1.1\r\nHost: ..\r\n\r\n", NoMatch, Info{}},
		{"one dot", "GET / HTTP/1.1\r\nHost: .\r\n\r\n", NoMatch, Info{}},
		{"empty port", "GET / HTTP/1.1\r\nHost: a.test:\r\n\r\n", Match, get("a.test", "/")},
		{"decoded path", "GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n", Match, get("a", "/a b")},
		{"bare LF inside headers", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", NoMatch, Info{}},
		{"bare LF hiding a Host", "GET / HTTP/1.1\r\nHost: a\n\nHost: b\r\n\r\n", NoMatch, Info{}},
		{"bare LF, decided before the block ends", "GET / HTTP/1.1\r\nHost: a\nX", NoMatch, Info{}},
		{"CR at the end so far", "GET / HTTP/1.1\r\nHost: a\r", NeedMore, Info{}},
		{"bare LF after the block is body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n\n\n", Match,
			Info{Method: "POST", Host: "a", Path: "/"}},
		{"bare CR inside headers", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", NoMatch, Info{}},

		// Early NoMatch on what cannot be a request line.
		{"TLS record", "\x16\x03\x01", NoMatch, Info{}},
		{"SSH banner", "SSH-2.0-OpenSSH_9.2p1\r\n", NoMatch, Info{}},
		{"SSH banner with comment", "SSH-2.0-OpenSSH_9.2p1 Debian\r\n", NoMatch, Info{}},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Match, Info{Method: "PRI", Path: "*"}},
		{"HTTP/2 preface and SETTINGS", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", Match, Info{Method: "PRI", Path: "*"}},
		{"HTTP/2 preface so far", "PRI * HTTP/2", NeedMore, Info{}},
		{"HTTP/2 preface to its last byte", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r", NeedMore, Info{}},
		{"HTTP/2 preface, wrong tail", "PRI * HTTP/2.0\r\n\r\nSN\r\n\r\n", NoMatch, Info{}},
		{"HTTP/2.0 request line without the preface", "PRI * HTTP/2.0\r\nHost: a\r\n\r\n", NoMatch, Info{}},
		{"PRI as an HTTP/1.1 method", "PRI * HTTP/1.1\r\nHost: a\r\n\r\n", Match, Info{Method: "PRI", Host: "a", Path: "*"}},
		{"leading CRLF", "\r\nGET / HTTP/1.1\r\n", NoMatch, Info{}},
		{"leading space", " GET", NoMatch, Info{}},
		{"empty target", "GET  HTTP/1.1", NoMatch, Info{}},
		{"control in target", "GET /\x01 HTTP/1.1", NoMatch, Info{}},
		{"lower-case version", "GET / http/1.1", NoMatch, Info{}},
		{"no version", "GET /\r\n", NoMatch, Info{}},
		{"version not a digit", "GET / HTTP/1.x", NoMatch, Info{}},
		{"bare LF request line", "GET / HTTP/1.1\n", NoMatch, Info{}},
		{"method too long", strings.Repeat("A", 33), NoMatch, Info{}},
		{"method of 32", strings.Repeat("A", 32), NeedMore, Info{}},

		// Refused once the header block is there.
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", NoMatch, Info{}},
		{"HTTP/1.1 empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", NoMatch, Info{}},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", NoMatch, Info{}},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", NoMatch, Info{}},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", NoMatch, Info{}},
		{"Host bare IPv6", "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", NoMatch, Info{}},
		{"Host bad port", "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", NoMatch, Info{}},
		{"Host only port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", NoMatch, Info{}},
		{"Host unclosed bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", NoMatch, Info{}},
		{"Host junk after bracket", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", NoMatch, Info{}},
		{"bad header line", "GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", NoMatch, Info{}},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", NoMatch, Info{}},
		{"bad Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", NoMatch, Info{}},
		{"bad target", "GET %zz HTTP/1.1\r\nHost: a\r\n\r\n", NoMatch, Info{}},
	}
	runSniffCases(t, HTTP, tests)
}

func TestHTTPHeaderBlockCap(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: a\r\nX: "
	b := []byte(head + strings.Repeat("x", MaxBytes-len(head)-4) + "\r\n\r\n")
	if v, _ := HTTP(b); v != Match {
		t.Fatalf("header block of exactly MaxBytes: got %v, want Match", v)
	}
	b = []byte(head + strings.Repeat("x", MaxBytes-len(head)-3) + "\r\n\r\n")
	if v, _ := HTTP(b); v != NoMatch {
		t.Fatalf("header block of MaxBytes+1: got %v, want NoMatch", v)
	}
	if v, _ := HTTP(b[:MaxBytes-1]); v != NeedMore {
		t.Fatalf("header block so far: got %v, want NeedMore", v)
	}
}

func TestWebSocket(t *testing.T) {
	const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	ws := Info{Method: "GET", Host: "a.test", Path: "/tunnel", WebSocket: true}
	tests := []sniffCase{
		{"RFC 6455 example", "GET /tunnel?x=1 HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + key +
			"Sec-WebSocket-Version: 13\r\n\r\n", Match, ws},
		{"tokens in lists, any case", "GET /tunnel HTTP/1.1\r\nHost: A.test\r\nUpgrade: foo/2, WebSocket\r\nConnection: keep-alive,\tUPGRADE\r\n" + key + "\r\n", Match, ws},
		{"Connection over two lines", "GET /tunnel HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nConnection: upgrade\r\n" + key + "\r\n", Match, ws},
		{"no key", "GET /tunnel HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", NoMatch, Info{}},
		{"empty key", "GET /tunnel HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key:\r\n\r\n", NoMatch, Info{}},
		{"no Connection upgrade", "GET /tunnel HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n" + key + "\r\n", NoMatch, Info{}},
		{"token only as a substring", "GET /tunnel HTTP/1.1\r\nHost: a.test\r\nUpgrade: websockets\r\nConnection: upgrade\r\n" + key + "\r\n", NoMatch, Info{}},
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n", NoMatch, Info{}},
		{"plain GET", "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", NoMatch, Info{}},
		{"POST, decided on the request line", "POST /tunnel HTTP/1.1\r\n", NoMatch, Info{}},
		{"HTTP/1.0, decided on the request line", "GET /tunnel HTTP/1.0\r\n", NoMatch, Info{}},
		{"GET so far", "GET /tunnel HTTP/1.1\r\nHost: a.test\r\n", NeedMore, Info{}},
		{"not HTTP", "\x05\x01\x00", NoMatch, Info{}},
		{"HTTP/2 preface", HTTP2Preface, NoMatch, Info{}},
	}
	runSniffCases(t, WebSocket, tests, func(t *testing.T, tc sniffCase) {
		// HTTP matches every well-formed request, upgrades included,
		// and reports the same upgrade.
		if v, info := HTTP([]byte(tc.in)); v == Match && info.WebSocket != (tc.want == Match) {
			t.Fatalf("HTTP: WebSocket = %v", info.WebSocket)
		}
	})
}
