package quic

import "encoding/hex"

// MaxConnectionIDLen is the longest connection ID QUIC versions 1 and 2
// allow (RFC 9000 §17.2); a longer one in a long header is refused.
const MaxConnectionIDLen = 20

// ConnectionID is a QUIC connection ID (RFC 9000 §5.1). It is a comparable
// value, not a slice, so that the dataplane can key a map of flows by it
// (to follow a connection whose client address changes, RFC 9000 §9) and
// keep it without aliasing the datagram it came from.
type ConnectionID struct {
	n uint8
	b [MaxConnectionIDLen]byte
}

// connectionID copies b, which the header parser has bounded to
// MaxConnectionIDLen bytes.
func connectionID(b []byte) ConnectionID {
	var c ConnectionID
	c.n = uint8(copy(c.b[:], b))
	return c
}

// Len is the connection ID's length in bytes; 0 is a valid, empty ID (a
// client that does not need one, RFC 9000 §5.1).
func (c ConnectionID) Len() int { return int(c.n) }

// Bytes returns a copy of the connection ID's bytes.
func (c ConnectionID) Bytes() []byte {
	return append([]byte(nil), c.b[:c.n]...)
}

// String is the connection ID in lower-case hex, as qlog and most QUIC
// tools print it, for logs.
func (c ConnectionID) String() string {
	return hex.EncodeToString(c.b[:c.n])
}
