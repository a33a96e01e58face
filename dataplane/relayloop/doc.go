// Package relayloop carries TCP connections on raw descriptors from epoll
// loops, one per core: it accepts, reads a connection's first bytes, asks
// the connection's owner what they mean, connects to a backend without
// blocking and splices both ways, all from the loop, with no goroutine,
// netpoller registration or timer of the runtime per connection.
//
// Why: every connection Go's net package carries costs a goroutine (two
// once forwarding), the netpoller's registration of both sockets, deadline
// timers and the scheduler's wake-ups between them. On the 2-core
// benchmark box that floor was 168 µs of CPU per routed SSH connection for
// the least a Go relay can do (accept, dial, io.Copy both ways), against
// haproxy's 138, and a one-loop epoll relay measured 119. This package is
// the connection path of the dataplane's tcp-mode routes on Linux; the
// rest of the dataplane (TLS termination, http mode, tunnels, PROXY
// headers from a balancer) takes a connection over from the loop with the
// bytes read so far (Verdict.HandOff) and runs as before.
//
// A connection can also be carried as HTTP/1.1 exchanges
// (Verdict.Exchange): the loop reads each request's head, asks the
// Session's Exchanger where it goes and what head the backend gets,
// sends it and its body (framed by package h1) over a backend connection
// kept alive in a pool the loops share, and moves the response back the
// same way: through the loop's copy buffer, or, for a body of known
// length with at least 64 KiB to come to a client in clear, spliced
// through a pipe without a copy. Between exchanges an idle client holds
// no buffer.
//
// A request that did not come on one of the loop's connections, an
// HTTP/2 stream's, can be sent the same way (CallRequest): the loop
// takes a backend connection of the same pool, sends the head, and
// hands the response to the caller's CallSink as it comes, pausing while
// the sink cannot take more.
//
// A connection can also be spoken by its owner on the loop
// (Verdict.Serve, a Server): the loop hands it the client's bytes as they
// come and writes what it has to send as the client takes it, so that a
// protocol with streams of its own (HTTP/2) is served without a
// goroutine reading and another writing each connection.
//
// The decision stays with the owner: a Handler admits each connection and
// a Session is asked, with the bytes read so far, what to do (wait for
// more, forward to endpoints, hand the connection off, or close it). The
// loop calls them on its own goroutine, so they must not block.
//
// A loop is shared fairly: a connection moves a bounded number of bytes
// a turn (128 KiB a forwarded direction, 64 KiB an exchange, a served
// connection's read budget), then the loop comes back to it at the end of
// the round (Conn.later), after the other connections' events; until
// then its own events are only noted, so it moves once a round. A burst
// of new clients is split evenly between the loops (acceptLimit).
//
// Every connection a loop holds costs a record of about 200 bytes, its two
// sockets and, only while bytes wait for a slow reader or a large
// response body comes, a pipe. A client
// kept for HTTP has TCP keepalive from the start, and a forwarded
// connection's sockets get it after KeepAliveAfter, as the forward
// package's Parker gives them.
package relayloop
