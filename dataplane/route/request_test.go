package route

import (
	"bufio"
	"bytes"
	"net/http"
	"regexp"
	"testing"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/sniff"
)

func TestDecideRequest(t *testing.T) {
	public := snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"public.test"}}
	publicPath := snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"public.test"}, PathPrefix: "/public"}
	admin := snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"admin.test"}}
	wild := snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"*.web.test"}}
	anyHTTP := snapshot.Match{Protocol: snapshot.HTTP}
	ws := snapshot.Match{Protocol: snapshot.WebSocket, Host: []string{"public.test"}, PathPrefix: "/tunnel"}
	anyM := snapshot.Match{Protocol: snapshot.Any}
	tlsM := snapshot.Match{Protocol: snapshot.TLS}
	sshM := snapshot.Match{Protocol: snapshot.SSH}
	timeout := snapshot.Match{Protocol: snapshot.Timeout}
	prefix := snapshot.Match{Protocol: snapshot.Bytes, Prefix: []byte("GET")}
	regex := snapshot.Match{Protocol: snapshot.Bytes, Regex: regexp.MustCompile(`^GET`)}

	get := func(host, path string) Request { return Request{Method: http.MethodGet, Host: host, Path: path} }
	upgrade := func(host, path string) Request {
		return Request{Method: http.MethodGet, Host: host, Path: path, WebSocket: true}
	}
	tests := []struct {
		name   string
		routes []snapshot.Route
		req    Request
		want   int
	}{
		{"the host the first request had", routes(public), get("public.test", "/"), 0},
		{"another host takes no route", routes(public), get("admin.test", "/admin"), -1},
		{"another host takes its own route", routes(public, admin), get("admin.test", "/admin"), 1},
		{"host with port and case", routes(public), get("PUBLIC.test:8443", "/"), 0},
		{"host with trailing dot", routes(public), get("public.test.", "/"), 0},
		{"host with two trailing dots is not a host", routes(public, anyHTTP), get("public.test..", "/"), -1},
		{"IPv6 literal host", routes(public, anyHTTP), get("[2001:db8::1]:80", "/"), 1},
		{"not a host", routes(anyHTTP), get("a b", "/"), -1},
		{"wildcard host", routes(wild), get("www.web.test", "/"), 0},
		{"wildcard is one label", routes(wild), get("a.b.web.test", "/"), -1},
		{"path prefix", routes(publicPath), get("public.test", "/public/x"), 0},
		{"path prefix at a segment boundary", routes(publicPath), get("public.test", "/publicity"), -1},
		{"dot segments cannot leave the prefix", routes(publicPath), get("public.test", "/public/../admin"), -1},
		{"repeated slashes are cleaned", routes(publicPath), get("public.test", "//public//x"), 0},
		{"empty path is /", routes(snapshot.Match{Protocol: snapshot.HTTP, PathPrefix: "/"}), get("a.test", ""), 0},
		{"CONNECT keeps its empty path", routes(snapshot.Match{Protocol: snapshot.HTTP, PathPrefix: "/"}), Request{Method: http.MethodConnect, Host: "a.test:443"}, -1},
		{"first match wins", routes(anyHTTP, public), get("public.test", "/"), 0},
		{"websocket route skips plain requests", routes(ws, anyHTTP), get("public.test", "/tunnel"), 1},
		{"websocket route takes handshakes", routes(ws, anyHTTP), upgrade("public.test", "/tunnel/x"), 0},
		{"websocket route checks its path", routes(ws, anyHTTP), upgrade("public.test", "/other"), 1},
		{"http route takes handshakes too", routes(public, ws), upgrade("public.test", "/tunnel"), 0},
		{"any takes every request", routes(admin, anyM), get("public.test", "/"), 1},
		{"connection-start protocols never take a request", routes(tlsM, sshM, timeout, prefix, regex, public), get("public.test", "/"), 5},
		{"connection-start protocols only: none", routes(tlsM, sshM, timeout, prefix, regex), get("public.test", "/"), -1},
		{"no routes", nil, get("public.test", "/"), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DecideRequest(tt.routes, tt.req); got != tt.want {
				t.Fatalf("DecideRequest(%+v) = %d, want %d", tt.req, got, tt.want)
			}
		})
	}
}

// TestDecideRequestAgreesWithDecide: for routes of the protocols a request
// can take, a connection's first request gets the same route from
// DecideRequest, on the request net/http parsed, as from Decide on its
// bytes. The first request of an http-mode connection is decided twice, so
// the two must agree.
func TestDecideRequestAgreesWithDecide(t *testing.T) {
	table := routes(
		snapshot.Match{Protocol: snapshot.WebSocket, Host: []string{"ws.test"}, PathPrefix: "/tunnel"},
		snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"public.test"}, PathPrefix: "/public"},
		snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"*.web.test"}},
		snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"admin.test"}, PathPrefix: "/api/"},
		snapshot.Match{Protocol: snapshot.WebSocket},
	)
	const wsHeaders = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, raw := range []string{
		"GET /public/x HTTP/1.1\r\nHost: public.test\r\n\r\n",
		"GET /public/../admin HTTP/1.1\r\nHost: public.test\r\n\r\n",
		"GET /public/%2e%2e/admin HTTP/1.1\r\nHost: public.test\r\n\r\n",
		"GET //public/./x HTTP/1.1\r\nHost: PUBLIC.TEST:80\r\n\r\n",
		"GET http://public.test/public HTTP/1.1\r\nHost: other.test\r\n\r\n",
		"GET http://www.web.test HTTP/1.1\r\nHost: www.web.test\r\n\r\n",
		"POST /api/v1 HTTP/1.1\r\nHost: admin.test\r\nContent-Length: 0\r\n\r\n",
		"GET /api HTTP/1.1\r\nHost: admin.test\r\n\r\n",
		"GET /x HTTP/1.0\r\n\r\n",
		"GET /tunnel/a HTTP/1.1\r\nHost: ws.test\r\n" + wsHeaders + "\r\n",
		"GET /tunnel/a HTTP/1.1\r\nHost: ws.test\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
		"GET /elsewhere HTTP/1.1\r\nHost: other.test\r\n" + wsHeaders + "\r\n",
		"GET /public HTTP/1.1\r\nHost: public.test\r\n" + wsHeaders + "\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: public.test\r\n\r\n",
	} {
		want := Decide(table, []byte(raw), true).Route
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader([]byte(raw))))
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		got := DecideRequest(table, Request{Method: req.Method, Host: req.Host, Path: req.URL.Path, WebSocket: sniff.IsWebSocketUpgrade(req)})
		if got != want {
			t.Errorf("%q: DecideRequest %d, Decide %d", raw, got, want)
		}
	}
}

func BenchmarkDecideRequest(b *testing.B) {
	rs := routes(
		snapshot.Match{Protocol: snapshot.SSH},
		snapshot.Match{Protocol: snapshot.WebSocket, Host: []string{"www.bench.test"}, PathPrefix: "/tunnel"},
		snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"api.bench.test"}},
		snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"*.bench.test"}, PathPrefix: "/"},
	)
	req := Request{Method: http.MethodGet, Host: "WWW.bench.test:443", Path: "/static/app.js"}
	b.ReportAllocs()
	for b.Loop() {
		if i := DecideRequest(rs, req); i != 3 {
			b.Fatal(i)
		}
	}
}
