// Package tunnel carries TCP streams and UDP datagrams over WebSocket
// connections: the server end (Handler, an http.Handler the dataplane serves
// on a route with the tunnel action) and the client end (Client, behind
// `portmux tunnel`).
//
// It decides who may reach what: a client names a target, and the Handler
// dials it only when the name is in the tunnel's allow list, for the
// protocol the list allows, and only after the bearer token (when the
// tunnel has one) is right. It never resolves names of its own: endpoints
// come from the snapshot. It does not decide which connections reach the
// Handler (the route's match does), nor does it terminate TLS (the listener
// does).
//
// # Wire format, version portmux.tunnel.v1
//
// The opening handshake is a WebSocket one (RFC 6455 §4.1,
// https://www.rfc-editor.org/rfc/rfc6455#section-4.1), a GET on any path the
// route matches, with two query parameters:
//
//	GET /tunnel?target=sshd%3A22&protocol=tcp HTTP/1.1
//	Host: edge.example.com
//	Upgrade: websocket
//	Connection: Upgrade
//	Sec-WebSocket-Key: …
//	Sec-WebSocket-Version: 13
//	Sec-WebSocket-Protocol: portmux.tunnel.v1
//	Authorization: Bearer <token>
//
// What the request carries:
//
//   - target (required): a name from the allow list, "service:port" with the
//     port by number or by name ("sshd:22", "sshd:ssh"), or an allowed
//     address ("127.0.0.1:22", "[::1]:22").
//   - protocol: "tcp" (the default) or "udp".
//   - Authorization: "Bearer" and the token (RFC 6750 §2.1), required when
//     the tunnel has one. It is never taken from the URL, so it stays out of
//     access logs.
//   - Sec-WebSocket-Protocol (RFC 6455 §1.9): the client offers
//     portmux.tunnel.v1 and the server echoes it. A client that offers none
//     is served the same format.
//
// Every refusal happens before the upgrade and before anything is dialled,
// as a plain HTTP response with a one-line text body and "Connection:
// close":
//
//	400 Bad Request          no target, an unknown protocol, or not a valid
//	                         WebSocket handshake (426 for a missing Upgrade,
//	                         405 for a method other than GET)
//	401 Unauthorized         the token is missing or wrong (with
//	                         WWW-Authenticate: Bearer)
//	403 Forbidden            the target is not in the allow list, the list
//	                         allows it only for the other protocol, or the
//	                         request comes from a browser page of another
//	                         origin (RFC 6455 §10.2)
//	502 Bad Gateway          the target was allowed but no endpoint answered
//	503 Service Unavailable  the tunnel's token Secret is missing: every
//	                         client is refused until it exists
//
// The token is checked first, so a client without it learns nothing about
// the allow list.
//
// After the upgrade (101 Switching Protocols) only binary data frames are
// used (RFC 6455 §5.6); a text message is a protocol error and closes the
// connection with 1003.
//
// TCP: the messages carry the byte stream in order; message boundaries mean
// nothing. An empty binary message ends the sender's half of the stream,
// like a TCP FIN: the receiver half-closes the connection it forwards to and
// keeps sending its own half until it ends it the same way. Once both halves
// have ended, the connection is closed with 1000 (Normal Closure, RFC 6455
// §7.4.1). A 1000 that comes before the empty message also ends the
// sender's half (WebSocket clients that cannot half-close end that way); a
// close with any other code aborts the stream like a TCP reset. An end
// whose side failed (its connection was reset, a write failed) closes with
// 4000 (stream reset).
//
// UDP: one binary message is one datagram, both ways, boundaries kept; an
// empty message is an empty datagram. The server uses one upstream socket per
// WebSocket connection, so the target sees one source address per tunnel
// and its replies come back on the same connection. Messages over 65535
// bytes close the connection with 1009. A tunnel that carries no datagram
// for the idle timeout (default 60s) is closed with 4001 (idle).
//
// Keepalive: each end sends a ping (RFC 6455 §5.5.2) every interval
// (default 20s), on schedule whether or not earlier ones were answered, and
// expects each pong within the pong timeout (default 10s). An end takes
// its peer for dead when a ping fails and nothing at all (data, ping or
// pong) has come from the peer for an interval plus the timeout while the
// end was reading all that time; it then closes the connection without a
// handshake. A dead peer is found within two intervals plus the timeout of
// the end's last read. Pings and pongs also keep idle NAT and proxy
// mappings open.
//
// Control frames are written only when they cannot block: no data write in
// progress and, where the socket can be asked (Linux), its send buffer less
// than a quarter full. The WebSocket library closes a connection whose
// control frame misses its deadline, so a ping or pong queued behind a
// peer that does not read (a slow consumer behind it) would cut a live
// tunnel. Such a peer gets no pings or pongs until it reads again, and
// shows that it is alive with its own pings.
//
// Shutdown: an end that is going away (a client stopped by SIGINT, SIGTERM
// or SIGHUP, which ssh sends its ProxyCommand) closes with 1001 (Going
// Away); the stream is cut, and the server counts the tunnel as closed.
package tunnel
