// Package h1 finds the boundaries of HTTP/1.1 messages in bytes a relay
// forwards as they arrive: where a head ends, how its body is delimited,
// and where a chunked body ends and which of its bytes are data, without
// copying the body.
//
// Why: a proxy that carries keep-alive connections on epoll loops (the
// relayloop package) cannot hand each message to a blocking parser, and
// must not buffer bodies; it needs to know, for each read, how many of
// the bytes still belong to the message in flight. Heads are parsed by
// fasthttp's header parser (Heads), which already enforces the framing
// rules that stop request smuggling (one Content-Length, no
// Transfer-Encoding beside it, only chunked or identity); what no
// library offers is a chunked-body scanner that passes bytes through,
// which is Framer. A relay that turns HTTP/1.1 bodies into HTTP/2 DATA
// frames gets the data from the same pass (Framer.TakeData): a second
// parser to de-chunk could end the body elsewhere than the framing did.
//
// Everything here is pure: no I/O, no allocation per message once warm,
// and every input (garbage, half a chunk line, a body cut anywhere) ends
// in an answer or an error, never a panic. The scanner is stricter than
// RFC 9112 lets a recipient be (CRLF only, no whitespace around a chunk
// size, no framing fields in trailers): whatever it accepts, Go's
// net/http accepts too, ending it at the same byte with the same data
// and trailer fields, which the fuzz test checks.
package h1
