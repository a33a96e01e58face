package quic

import "errors"

// Why a datagram or a flow was refused. They are values, compared with
// errors.Is, so the dataplane can count each reason ("dropped: short
// initial") without parsing strings. They are never wrapped: refusing a
// datagram allocates nothing.
var (
	// ErrNotLongHeader: the datagram does not start with a long header
	// (RFC 9000 §17.2: the first bit is set), so it is not a client's first
	// flight of any QUIC version. Most datagrams of other protocols end
	// here.
	ErrNotLongHeader = errors.New("quic: not a long header packet")
	// ErrUnknownVersion: a long header of a version this package does not
	// read (neither 1 nor 2), Version Negotiation (version 0) included.
	ErrUnknownVersion = errors.New("quic: unknown version")
	// ErrNotInitial: the flow starts with a long header packet a client
	// never starts with (Handshake, Retry).
	ErrNotInitial = errors.New("quic: first packet is not an Initial")
	// ErrShortInitial: an Initial packet in a datagram under 1200 bytes,
	// which a server must discard (RFC 9000 §14.1). Reported apart from
	// the other refusals so the dataplane can count it.
	ErrShortInitial = errors.New("quic: Initial packet in a datagram under 1200 bytes")
	// ErrMalformed: a long header or a frame that does not parse: a field
	// running past the datagram, a connection ID over 20 bytes, a Length
	// too short for header protection's sample, a cleared fixed bit
	// without a token (RFC 9287 §3), reserved bits set (RFC 9000 §17.2),
	// an empty payload (RFC 9000 §12.4), an ACK range below zero.
	ErrMalformed = errors.New("quic: malformed packet")
	// ErrDecrypt: an Initial packet whose AEAD tag does not verify with the
	// keys of its Destination Connection ID (RFC 9001 §5.3): forged,
	// corrupted, or encrypted with another version's keys.
	ErrDecrypt = errors.New("quic: Initial packet does not decrypt")
	// ErrFrame: a frame a client's Initial packet may not carry (RFC 9000
	// §12.4, Table 3), a frame type encoded in more bytes than needed
	// (RFC 9000 §12.4), or CONNECTION_CLOSE: a flight that closes its own
	// connection is not one to route.
	ErrFrame = errors.New("quic: frame not allowed in a client's Initial packet")
	// ErrCryptoConflict: CRYPTO frames that carry different bytes for the
	// same offset (RFC 9000 §19.6 allows treating it as a
	// PROTOCOL_VIOLATION). Refused because a router reading one copy and a
	// server reading the other would see two ClientHellos.
	ErrCryptoConflict = errors.New("quic: CRYPTO frames disagree on the same offset")
	// ErrTooLarge: CRYPTO data past Limits.MaxHelloBytes, or a ClientHello
	// that announces a length over it.
	ErrTooLarge = errors.New("quic: ClientHello over the size limit")
	// ErrTooManyDatagrams: more datagrams than Limits.MaxDatagrams without
	// a complete ClientHello.
	ErrTooManyDatagrams = errors.New("quic: too many datagrams without a complete ClientHello")
	// ErrClientHello: the Initial CRYPTO stream is not exactly one
	// well-formed ClientHello offering TLS 1.3 (RFC 9001 §4.2, §4.3): it
	// starts with another handshake message, carries bytes past the
	// ClientHello's end, or dataplane/sniff does not parse it.
	ErrClientHello = errors.New("quic: CRYPTO stream is not a valid ClientHello")
	// ErrOtherConnection: an Initial packet of another connection than the
	// flow's first (another Destination or Source Connection ID, or
	// version) in a later datagram; it is dropped, the flow goes on.
	ErrOtherConnection = errors.New("quic: Initial packet of another connection")
)
