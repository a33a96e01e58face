package route

import (
	"net/http"

	"github.com/portmux/portmux/dataplane/snapshot"
	"github.com/portmux/portmux/dataplane/sniff"
)

// Request is what routing sees of one HTTP request on a connection served
// in http mode: an HTTP/1.1 request after the connection's first, or an
// HTTP/2 stream. Decide only ever sees a connection's first request; in
// http mode every request is decided again, so that host and pathPrefix
// hold for each of them and not only for the one that opened the
// connection.
type Request struct {
	// Method is the request method; CONNECT is the one method whose empty
	// path stays empty, as the sniffer has it.
	Method string

	// Host is the request's host as it arrived (Host header, :authority,
	// or an absolute-form target's host): any case, with a port or not.
	Host string

	// Path is the decoded path of the target, as net/http's URL.Path.
	Path string

	// WebSocket reports a WebSocket opening handshake
	// (sniff.IsWebSocketUpgrade).
	WebSocket bool
}

// DecideRequest picks the route of one request on a connection in http
// mode: the index of the first route that takes it, or -1.
//
// The rules are Decide's, on what the HTTP sniffer would extract from the
// request: an `http` route takes any request (a WebSocket handshake too, as
// the sniffer's HTTP match does), a `websocket` route takes WebSocket
// handshakes only, and host and pathPrefix are compared on the same
// normalised host and cleaned path. `any` takes every request. The other
// protocols (ssh, tls, openvpn, socks5, bytes, timeout) describe how a
// connection starts and never take a request that follows; a `bytes`
// route, in particular, is not an access rule for HTTP. A Host value that
// is not a host takes no route, as it matches none when sniffed.
//
// The caller serves the request only when the chosen route is an http-mode
// backend: a request whose route is anything else (a tcp-mode backend, a
// tunnel) or none cannot be served on this connection.
func DecideRequest(routes []snapshot.Route, req Request) int {
	host, ok := sniff.RouteHost(req.Host)
	if !ok {
		return -1
	}
	path := req.Path
	if path == "" && req.Method != http.MethodConnect {
		path = "/" // an absolute-form target with an empty path, as sniffed
	}
	info := sniff.Info{Method: req.Method, Host: host, Path: path, WebSocket: req.WebSocket}
	for i := range routes {
		m := &routes[i].Match
		if takesRequest(m.Protocol, req.WebSocket) && constraintsHold(m, &info) {
			return i
		}
	}
	return -1
}

// takesRequest reports whether a route of protocol p can take a request in
// http mode, before its host and path are compared.
func takesRequest(p snapshot.Protocol, webSocket bool) bool {
	switch p {
	case snapshot.HTTP, snapshot.Any:
		return true
	case snapshot.WebSocket:
		return webSocket
	default:
		return false
	}
}
