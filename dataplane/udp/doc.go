// Package udp serves a UDP listener: one socket, a session per client
// address, each session's first datagrams sniffed to choose a route, then
// every datagram relayed both ways, boundaries kept, through a connected
// socket of its own to one endpoint of the route's backend.
//
// What it decides: when a session starts and ends (the listener's and the
// client's caps, the probe timeout, the idle timeout of the session's
// protocol), which datagrams are dropped and why (a QUIC Initial under
// 1200 bytes, RFC 9000 §14.1; no route; over a cap), which endpoint a
// session uses (a hash of the client address: UDP has no failed dial to
// try the next one on), where a reply goes (the client address the session
// heard from last, from the local address the client wrote to), and which
// session a datagram from an unknown address belongs to (a QUIC connection
// ID the session has seen: the client's first DCID, and the server's SCIDs
// read from its long-header packets, RFC 9000 §9).
//
// What it does not decide: which route a session takes (dataplane/route's
// DatagramProber), nor anything of a TCP listener (package dataplane, which
// binds both kinds and owns the metrics' registration).
//
// What it promises:
//   - It never sends a client a byte the backend did not send: replies are
//     the backend's datagrams, one for one, and nothing is ever sent in
//     answer to a client's datagram by the relay itself (no Version
//     Negotiation, no Retry, no ICMP of its own), so it cannot amplify.
//     A run of datagrams a backend sent as one segmented buffer
//     (UDP_SEGMENT) is read whole (UDP_GRO) and sent on whole, for the
//     kernel to cut into the same datagrams (gso_linux.go), as is a run
//     of same-size datagrams to one client in one batch; it is counted
//     as its datagrams. A client's segmented buffer is cut into its
//     datagrams on arrival, each handled as if it came alone.
//   - A session costs, beyond its kernel socket, a few hundred bytes: no
//     goroutine and no buffer of its own once its route is chosen. Two
//     goroutines serve a listener: one reads the listener socket and writes
//     to backends; one waits on every session's backend socket in one epoll
//     set, writes replies, and expires idle sessions.
//   - A datagram of the first flight is held only until the route is known,
//     within the listener's probe timeout and byte cap.
//   - A panic while handling a datagram ends that datagram's session, is
//     counted and logged, and the listener goes on.
//
// UDP has no close: a session ends when its idle timeout passes, when its
// backend refuses (ICMP port unreachable), or when its listener goes (a new
// snapshot without it, or Shutdown). There is nothing to drain.
package udp
