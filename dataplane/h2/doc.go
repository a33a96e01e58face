// Package h2 serves HTTP/2 connections to an http.Handler: the front end
// of http mode for clients that speak HTTP/2 (h2 by ALPN after TLS
// termination, or h2c with prior knowledge).
//
// Why not net/http's server: it hands every frame it writes to a goroutine
// of its own and flushes each one with a system call, so that on a
// connection carrying many small responses it spent four times haproxy's
// CPU per request, a quarter of it in write(2). Here the frames of all of
// a connection's streams go into one buffer, and one writer per
// connection sends whatever has accumulated with one write: while it is
// in the system call, the next responses gather behind it. On the reading
// side x/net's Framer checks frames and its HPACK decoder the header
// blocks, bounded by the header list size, but the client's bytes are
// pushed to them as they come and handed over a whole frame (or header
// block) at a time, so that reading never waits inside the Framer; this
// package keeps the state machine of RFC 9113 (streams, flow
// control both ways, settings) and what a server facing the internet must
// refuse:
//
//   - streams past MaxConcurrentStreams are refused (REFUSED_STREAM), and
//     a stream counts against the limit until its handler has returned,
//     not when the client resets it: resetting streams as fast as they
//     are opened ("rapid reset", CVE-2023-44487) starts no more handlers
//     than the limit, and a client whose reset streams keep their
//     handlers busy past twice the limit is told ENHANCE_YOUR_CALM, as
//     is one that has reset more than twice the limit of its streams
//     before their responses ended and more than half of all it opened
//     (handlers that stop at once never pile up, but each started work
//     the client never waited for);
//   - header blocks, CONTINUATION frames included, are bounded by
//     MaxHeaderListSize while they are decoded (an oversized one gets
//     431; a flood of CONTINUATION frames past it ends the connection),
//     and a block is held until it ends only up to twice that size
//     (past it, the connection ends: a block of HPACK table-size updates
//     decodes to nothing and would otherwise never end);
//   - request bodies are held only within the flow-control windows this
//     server advertises (StreamWindow per stream, ConnWindow per
//     connection), and a client that sends past them is a
//     FLOW_CONTROL_ERROR;
//   - control frames that the client makes the server answer (PING,
//     SETTINGS, RST_STREAM) while not reading the answers end the
//     connection once MaxPendingControl bytes of them wait;
//   - a connection without streams closes after IdleTimeout, one that
//     sends no preface within PrefaceTimeout is closed (one whose first
//     bytes are not the preface at once), and one whose
//     client stops reading is closed after WriteTimeout, as is one whose
//     client reads but opens no flow-control window for a response that
//     waits for one (GOAWAY ENHANCE_YOUR_CALM): the clock stops whenever
//     a window it opens lets a waiting response go on.
//
// A request without a body may also be answered without a goroutine
// (Server.Async): its taker is offered the request's fields as the
// client sent them (Request), with no header map built, writes the
// response through a Stream whose writes never wait, from an event loop
// that carries the backend exchange (the dataplane's relay loops), and
// hears through its Owner when to come back and when the client reset
// the stream; ReadIdle lets it start the streams a client sent together
// in one go. Such a stream counts against the limits above exactly as a
// handler's.
//
// A connection can also be served without goroutines of its own
// (Server.NewConn, Conn): its owner pushes the client's bytes and takes
// the output, as an event loop does (relayloop.Verdict.Serve); every
// test that serves connections runs that way too (-relay-loops).
//
// What it does not do: server push, priorities (PRIORITY frames are
// checked and ignored, as RFC 9113 lets a server), extended CONNECT
// (RFC 8441) and h2c upgrades from HTTP/1.1.
package h2
