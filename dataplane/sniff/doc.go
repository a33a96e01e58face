// Package sniff decides, from the first bytes a client sends, whether a
// connection speaks a given protocol, and extracts what routes match on.
//
// Each sniffer is a pure function of the bytes seen so far: it answers
// Match, NoMatch or NeedMore (these bytes could still become the protocol),
// plus an Info with the protocol's routing fields. Verdicts are stable: once
// a prefix of the stream gives Match or NoMatch, every longer prefix gives the
// same answer and the same Info (SSH's SSHVersion may still grow until its
// line ends), so the caller may ask again after each read and stop at the
// first decisive answer. No sniffer reads past MaxBytes, and
// given MaxBytes bytes all but Regex decide.
//
// What it decides, and from which spec:
//   - SSH: the client identification string, RFC 4253 §4.2
//     (https://www.rfc-editor.org/rfc/rfc4253#section-4.2).
//   - TLS: the ClientHello, reassembled from as many records as it spans,
//     RFC 8446 §4.1.2 and §5.1 (https://www.rfc-editor.org/rfc/rfc8446),
//     with server_name from RFC 6066 §3
//     (https://www.rfc-editor.org/rfc/rfc6066#section-3) and ALPN from RFC
//     7301 (https://www.rfc-editor.org/rfc/rfc7301), parsed with cryptobyte.
//   - HTTP/1.x: the request line and header block, RFC 9112
//     (https://www.rfc-editor.org/rfc/rfc9112), parsed with net/http.
//   - WebSocket: the opening handshake, RFC 6455 §4.1
//     (https://www.rfc-editor.org/rfc/rfc6455#section-4.1).
//   - OpenVPN over TCP: the client's hard-reset packet, as OpenVPN's source
//     defines it (ssl_pkt.h, reliable.c, ps.c).
//   - SOCKS5: the client greeting, RFC 1928 §3
//     (https://www.rfc-editor.org/rfc/rfc1928#section-3).
//   - bytes and any: a literal prefix, a regular expression, anything.
//
// What it does not do: read from the network, wait, keep a deadline, hold
// state between calls or between connections, or choose among protocols.
// The dataplane reads a connection's first bytes (at most MaxBytes, until
// the probe timeout) and replays them to the backend; dataplane/route asks
// each route's sniffer in order, spacing its looks so that a client's
// dribbled bytes cost CPU linear in them, and treats NeedMore at the end of
// the probe as NoMatch; `timeout` is decided by the clock alone. Nothing here decrypts: TLS is sniffed from the clear-text
// ClientHello, and sniffing inside TLS is done on the terminated stream.
//
// The sniffers run for every connection, so refusing another protocol's
// first flight allocates nothing, and a Match allocates only the Info it
// returns, except for HTTP and WebSocket: net/http's parser builds a request
// (about a dozen allocations), also for a request it has to parse to refuse.
package sniff
