// Package quic reads a QUIC client's first flight, so that a UDP listener
// can route QUIC by the TLS server name and ALPN of its ClientHello, the way
// dataplane/sniff lets a TCP listener route TLS.
//
// A client's Initial packets are encrypted, but with keys anyone can derive
// from the Destination Connection ID in the packet's header (RFC 9001 §5.2,
// https://www.rfc-editor.org/rfc/rfc9001#section-5.2). The package derives
// them, removes header protection (RFC 9001 §5.4), opens the AEAD (RFC 9001
// §5.3), walks the frames (RFC 9000 §12.4 and §19,
// https://www.rfc-editor.org/rfc/rfc9000), and reassembles the CRYPTO stream
// into the ClientHello, which dataplane/sniff parses into the same Info a
// TLS route matches on. QUIC version 1 (RFC 9000, RFC 9001) and version 2
// (RFC 9369, https://www.rfc-editor.org/rfc/rfc9369) are read; other
// versions are refused.
//
// A ClientHello may not fit in one datagram: a post-quantum key share
// (X25519MLKEM768, 1216 bytes of it) alone makes Go's ClientHello about
// 1.8 KiB, so it spans two datagrams, and clients split and reorder the
// CRYPTO stream on purpose (quic-go and Chrome cut the server_name in two
// and send the halves out of order, so that middleboxes do not ossify on
// it). Assembler keeps the state of one flow across its datagrams, within
// caps on the bytes and the datagrams it takes; Sniff is the one-datagram
// form, with the shape of dataplane/sniff's sniffers.
//
// What it does not do: read from the network, keep a clock, keep flows
// (the dataplane keeps one Assembler per flow and drops it on a decision),
// decrypt anything but a client's Initial packets, or answer the client
// (no Version Negotiation, no Retry).
//
// Everything here runs on datagrams an attacker chose. Nothing panics on
// any input, memory is bounded by Limits, a datagram that is not QUIC is
// refused before any key is derived and without allocating, and the
// caller's datagram is never written to: the bytes are decrypted in a
// buffer of the Assembler, so the datagram can be forwarded as it came.
// The cryptography is the standard library's: crypto/hkdf, crypto/aes and
// crypto/cipher's GCM.
package quic
